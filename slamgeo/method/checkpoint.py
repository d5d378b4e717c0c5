"""A model checkpoint you can trust: `MODEL_DIR/model.safetensors` + `MODEL_DIR/model.json`.

The weights are safetensors (they load without unpickling code). The JSON holds everything
needed to use the model on another cube: architecture, band names, date grid, normalisation
statistics, training settings, seed, losses, versions, a data fingerprint, and the sha256 of
the weights file, which `load_model` checks before loading anything. The fields that change the
model's meaning (architecture, bands, dates, normalisation, gap filling, the weights' record)
each have their sha256 in `metadata_sha256`, also checked on load: bands swapped by hand in the
JSON are refused, naming the field. A checkpoint without `metadata_sha256` (written by an older
slamgeo) loads with a warning that its metadata is not verified.

`MODEL_DIR` may be a local folder or an fsspec URL (`s3://bucket/model`). The JSON is the
checkpoint's commit record: on object storage it is written after the weights (and removed
first on overwrite), so a half-written checkpoint has no JSON, or a JSON whose sha256 does not
match the weights, and `load_model` refuses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from pydantic import ConfigDict, field_validator
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from slamgeo.errors import CheckpointError, InputError
from slamgeo.io import storage
from slamgeo.io.records import IsoDate, Record, check_record
from slamgeo.method.model import CAE, CAEConfig
from slamgeo.schema import MODEL_MARKER, WEIGHTS_FILE  # the marker (model.json) is written last

FORMAT = "slamgeo-cae"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "architecture", "bands", "dates", "normalisation", "weights")
# The metadata that changes what the model means (and the weights' record): each has its sha256
# in `metadata_sha256`, checked on load. Training settings, losses and versions are not in it.
PROTECTED_KEYS = (
    "format",
    "format_version",
    "architecture",
    "bands",
    "dates",
    "day_of_year",
    "normalisation",
    "gap_fill",
    "weights",
)
METADATA_CHECKSUMS = "metadata_sha256"
DAMAGED_ADVICE = "; restore the file, or train the model again (slamgeo train)"


class CheckpointArchitecture(Record):
    """`architecture`: the `CAEConfig` fields (left out: their defaults); no others."""

    model_config = ConfigDict(extra="forbid")

    n_bands: int = CAEConfig.n_bands
    n_times: int = CAEConfig.n_times
    embed_dim: int = CAEConfig.embed_dim
    channels: list[int] = list(CAEConfig.channels)
    kernels: list[int] = list(CAEConfig.kernels)
    hidden: list[int] = list(CAEConfig.hidden)


class CheckpointNormalisation(Record):
    """`normalisation`: per-band mean and standard deviation `(C,)`, dB."""

    mean: list[float]
    std: list[float]
    units: str | None = None
    computed_on: str | None = None


class CheckpointWeights(Record):
    """`weights`: the weights file (a plain name inside the checkpoint folder) and its sha256."""

    file: str = WEIGHTS_FILE
    format: str | None = None
    sha256: str

    @field_validator("file")
    @classmethod
    def _inside_the_checkpoint(cls, v: str) -> str:
        if not v or "/" in v or "\\" in v or v in (".", ".."):
            raise ValueError(f"expected a file name inside the checkpoint folder, found {v!r}")
        return v


class CheckpointMeta(Record):
    """The shape of `model.json`, checked on every read (`read_meta`) and before every write
    (`finalise_meta`). Fields not listed here are kept as they are."""

    format: str
    format_version: int
    architecture: CheckpointArchitecture
    bands: list[str]
    dates: list[IsoDate]
    day_of_year: list[int] | None = None
    normalisation: CheckpointNormalisation
    gap_fill: bool = False
    weights: CheckpointWeights
    metadata_sha256: dict[str, str] | None = None
    seed: int | None = None
    training: dict | None = None
    losses: dict | None = None
    data_fingerprint: str | None = None
    package_version: str | None = None
    cube_fingerprint: str | None = None
    versions: dict[str, str] | None = None


def weights_bytes(model: CAE) -> bytes:
    """The safetensors serialisation of `model`'s state dict (CPU, contiguous)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    # One metadata key only: safetensors keeps the header metadata in a hash map, so with two
    # keys their order (and the file's sha256) changes from one process to the next.
    return st_save(state, metadata={"format": "pt"})


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class TrainedModel:
    """A CAE in eval mode with its metadata; what `train` returns and `load_model` gives back."""

    model: CAE
    meta: dict
    checksum: str  # sha256 of the safetensors weights

    @property
    def config(self) -> CAEConfig:
        return self.model.cfg

    @property
    def bands(self) -> tuple[str, ...]:
        return tuple(self.meta["bands"])

    @property
    def dates(self) -> np.ndarray:
        """The training date grid, `(T,)` datetime64[ns]."""
        return np.asarray(self.meta["dates"], dtype="datetime64[ns]")

    @property
    def day_of_year(self) -> np.ndarray:
        return np.asarray(self.meta.get("day_of_year") or _day_of_year(self.dates), dtype=np.int16)

    @property
    def mean(self) -> np.ndarray:
        """Per-band mean `(C,)` in dB."""
        return np.asarray(self.meta["normalisation"]["mean"], dtype=np.float32)

    @property
    def std(self) -> np.ndarray:
        """Per-band standard deviation `(C,)` in dB."""
        return np.asarray(self.meta["normalisation"]["std"], dtype=np.float32)

    @property
    def gap_fill(self) -> bool:
        return bool(self.meta.get("gap_fill", False))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def standardise(self, x_db: np.ndarray) -> np.ndarray:
        """`(N, C, T)` dB -> float32 standardised with the stored per-band statistics."""
        x = np.asarray(x_db, dtype=np.float32)
        if x.ndim != 3 or x.shape[1] != len(self.bands):
            raise InputError(
                f"expected series of shape (N, {len(self.bands)}, T) for bands {self.bands}, got {x.shape}"
            )
        return ((x - self.mean[None, :, None]) / self.std[None, :, None]).astype(np.float32)

    def embed(self, x_db: np.ndarray, *, batch_size: int = 8192) -> np.ndarray:
        """`(N, C, T)` dB (no NaN) -> embeddings `(N, D)` float32, in batches, without gradients."""
        x = self.standardise(x_db)
        if x.shape[2] != self.config.n_times:
            raise InputError(f"expected {self.config.n_times} dates, got series with {x.shape[2]}")
        out = np.empty((x.shape[0], self.config.embed_dim), dtype=np.float32)
        with torch.inference_mode():
            for i in range(0, x.shape[0], batch_size):
                xb = torch.from_numpy(x[i : i + batch_size]).to(self.device)
                out[i : i + batch_size] = self.model.encoder(xb).float().cpu().numpy()
        return out

    def check_cube(self, ds: xr.Dataset) -> None:
        """Raise `CheckpointError` if `ds` lacks a band or has another number of dates than the
        model; warn (UserWarning) if it has the same number of dates but other dates."""
        missing = [b for b in self.bands if b not in ds.data_vars]
        if missing:
            raise CheckpointError(
                f"the cube lacks band(s) {missing} the model was trained on "
                f"(model bands {list(self.bands)}, cube variables {sorted(map(str, ds.data_vars))})"
            )
        if "time" not in ds.dims:
            raise CheckpointError(f"the cube has no 'time' dimension (dims {tuple(ds.dims)})")
        n_cube, n_model = ds.sizes["time"], self.config.n_times
        d = self.dates
        span = f"{str(d[0])[:10]} .. {str(d[-1])[:10]}" if d.size else "?"
        if n_cube != n_model:
            raise CheckpointError(
                f"the cube has {n_cube} dates, the model expects {n_model} (trained on {span}); "
                "resample the cube to the model's date grid"
            )
        cube_dates = np.asarray(ds["time"].values, dtype="datetime64[ns]")
        if not np.array_equal(cube_dates, d):
            shift = np.abs((cube_dates - d) / np.timedelta64(1, "D"))
            doy_shift = np.abs(_day_of_year(cube_dates).astype(int) - self.day_of_year.astype(int))
            doy_shift = np.minimum(doy_shift, 366 - doy_shift)
            warnings.warn(
                f"the cube's dates differ from the model's ({span}): largest shift {shift.max():.0f} days, "
                f"largest day-of-year shift {doy_shift.max()} days; using the model by date index",
                UserWarning,
                stacklevel=2,
            )

    def to(self, device: str | torch.device) -> TrainedModel:
        """A copy on `device` (the original is left where it is)."""
        model = CAE(self.config)
        model.load_state_dict(self.model.state_dict())
        return dataclasses.replace(self, model=model.to(device).eval())


def _day_of_year(dates: np.ndarray) -> np.ndarray:
    d = np.asarray(dates, dtype="datetime64[D]")
    return (d - d.astype("datetime64[Y]")).astype(np.int64).astype(np.int16) + 1


def dates_meta(dates: np.ndarray) -> dict[str, list]:
    """The date grid as JSON: ISO dates and day of year."""
    d = np.asarray(dates, dtype="datetime64[ns]")
    return {"dates": [str(v)[:19] for v in d.astype("datetime64[s]")], "day_of_year": _day_of_year(d).tolist()}


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def check_writable(
    out_dir: str | Path, *, overwrite: bool = False, inputs: Sequence[str | Path] = ()
) -> storage.Location:
    """Raise unless `out_dir` can be (over)written: absent, empty, or, with `overwrite`, a
    slamgeo checkpoint holding nothing else and none of `inputs` (`storage.claim_output`).
    Lets a long training run fail before it starts. Returns `out_dir` as a location (a `Path`,
    or the URL)."""
    out = storage.location(out_dir)
    storage.claim_output(out, storage.CHECKPOINT, overwrite=overwrite, inputs=inputs)
    return out


def finalise_meta(model: CAE, meta: dict) -> tuple[dict, bytes]:
    """The full checkpoint metadata and the weights bytes: `meta` plus format, the model's
    architecture and the weights' sha256. Checks that `meta` fits the model."""
    lacking = [k for k in ("bands", "dates", "normalisation") if k not in meta]
    if lacking:
        raise CheckpointError(f"metadata to save lacks {lacking}")
    arch = model.cfg.to_dict()
    if "architecture" in meta and CAEConfig.from_dict(meta["architecture"]) != model.cfg:
        raise CheckpointError(f"metadata architecture {meta['architecture']} differs from the model's {arch}")
    _check_meta_consistency(meta, model.cfg, MODEL_MARKER)
    blob = weights_bytes(model)
    full = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **meta,
        "architecture": arch,
        "weights": {"file": WEIGHTS_FILE, "format": "safetensors", "sha256": sha256_hex(blob)},
    }
    # through JSON and back, so that what is returned is exactly what a later load reads
    full = json.loads(json.dumps(full, default=_json_default, allow_nan=False))
    full[METADATA_CHECKSUMS] = metadata_checksums(full)
    check_record(full, CheckpointMeta, f"metadata to save ({MODEL_MARKER})", error=CheckpointError)
    return full, blob


def _canonical_json(value: Any) -> bytes:
    """One byte string per JSON value: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def metadata_checksums(meta: dict) -> dict[str, str]:
    """sha256 (hex) of the canonical JSON of each of `PROTECTED_KEYS` in `meta` (null when
    absent), by key: what `load_model` checks, so that bands, dates, normalisation statistics
    or the architecture changed in the JSON are refused."""
    return {k: sha256_hex(_canonical_json(meta.get(k))) for k in PROTECTED_KEYS}


def _check_metadata_checksums(meta: dict, where: str | Path) -> None:
    """Raise `CheckpointError` naming the first protected field whose sha256 differs from the
    one recorded; warn for a checkpoint without checksums (written by an older slamgeo)."""
    recorded = meta.get(METADATA_CHECKSUMS)
    if recorded is None:
        warnings.warn(
            f"{where}: no {METADATA_CHECKSUMS} (a checkpoint written by an older slamgeo): its bands, dates "
            "and normalisation statistics are not verified",
            UserWarning,
            stacklevel=3,
        )
        return
    if not isinstance(recorded, dict):
        raise CheckpointError(f"{where}: {METADATA_CHECKSUMS} must be an object of sha256 by field")
    actual = metadata_checksums(meta)
    changed = [k for k in PROTECTED_KEYS if recorded.get(k) != actual[k]]
    if changed:
        raise CheckpointError(
            f"{where}: metadata altered: field(s) {changed} do not match their sha256 recorded in "
            f"{METADATA_CHECKSUMS}; the checkpoint's meaning is not what it was trained with"
        )


def save_model(
    model: CAE, meta: dict, out_dir: str | Path, *, overwrite: bool = False, inputs: Sequence[str | Path] = ()
) -> storage.Location:
    """Write `out_dir/model.safetensors` and `out_dir/model.json`; returns `out_dir` (a `Path`,
    or the URL).

    Both files are written into a staging folder and published together (`storage.staged_folder`):
    a local `out_dir` is replaced by a rename, so a reader never sees half a checkpoint; on
    object storage the JSON is removed first and uploaded last (see the module doc). The
    architecture and the sha256 of the weights are written into the JSON from the model itself.
    An existing `out_dir` is replaced only with `overwrite=True`, and only if it is empty or a
    checkpoint that holds nothing else and none of `inputs` (`check_writable`).
    """
    out = check_writable(out_dir, overwrite=overwrite, inputs=inputs)
    full, blob = finalise_meta(model, meta)
    text = json.dumps(full, indent=2, allow_nan=False)
    with storage.staged_folder(out, storage.CHECKPOINT) as tmp:
        (tmp / WEIGHTS_FILE).write_bytes(blob)
        (tmp / MODEL_MARKER).write_text(text + "\n")
    return out


def read_meta(model_dir: str | Path) -> dict:
    """The checkpoint's JSON metadata as written, checked against `CheckpointMeta`: the keys
    every checkpoint has, the format, and the type of every known field (one line naming the
    file and the field, as `CheckpointError`)."""
    path = storage.join(model_dir, MODEL_MARKER)
    if not storage.isdir(model_dir):
        raise CheckpointError(f"{model_dir}: no checkpoint directory here")
    try:
        meta = json.loads(storage.read_text(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: metadata file missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable metadata, not JSON ({exc}){DAMAGED_ADVICE}") from None
    if not isinstance(meta, dict):
        check_record(meta, CheckpointMeta, path, error=CheckpointError, advice=DAMAGED_ADVICE)
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: metadata lacks {missing}{DAMAGED_ADVICE}")
    if meta["format"] != FORMAT or meta["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format {meta['format']!r} version {meta['format_version']!r}, "
            f"expected {FORMAT!r} version {FORMAT_VERSION}"
        )
    check_record(meta, CheckpointMeta, path, error=CheckpointError, advice=DAMAGED_ADVICE)
    return meta


def _check_meta_consistency(meta: dict, cfg: CAEConfig, where: str | Path) -> None:
    n_b, n_d = len(meta["bands"]), len(meta["dates"])
    norm = meta["normalisation"]
    problems = []
    if n_b != cfg.n_bands:
        problems.append(f"{n_b} band names for n_bands={cfg.n_bands}")
    if n_d != cfg.n_times:
        problems.append(f"{n_d} dates for n_times={cfg.n_times}")
    for k in ("mean", "std"):
        if len(norm.get(k, ())) != cfg.n_bands:
            problems.append(f"normalisation {k} has {len(norm.get(k, ()))} values for {cfg.n_bands} bands")
    if not problems and not all(s > 0 and np.isfinite(s) for s in norm["std"]):
        problems.append(f"normalisation std must be positive and finite, found {norm['std']}")
    if problems:
        raise CheckpointError(f"{where}: metadata is inconsistent: " + "; ".join(problems))


def load_model(model_dir: str | Path, *, device: str = "cpu") -> TrainedModel:
    """Load and check a checkpoint; the model comes back in eval mode on `device`.

    Raises `CheckpointError` for a missing or unreadable JSON, a missing weights file, weights
    whose sha256 differs from the one recorded, weights whose names or shapes do not match
    the architecture in the metadata, and protected metadata fields whose sha256 differs from
    the one recorded in `metadata_sha256` (`PROTECTED_KEYS`).
    """
    model_dir = storage.location(model_dir)
    meta = read_meta(model_dir)
    wfile = storage.join(model_dir, meta["weights"].get("file", WEIGHTS_FILE))
    meta_file = storage.join(model_dir, MODEL_MARKER)
    try:
        blob = storage.read_bytes(wfile)
    except FileNotFoundError:
        raise CheckpointError(f"{wfile}: weights file missing") from None
    checksum = sha256_hex(blob)
    recorded = meta["weights"].get("sha256")
    if checksum != recorded:
        raise CheckpointError(
            f"{wfile}: weights altered: sha256 {checksum[:16]}... differs from {str(recorded)[:16]}... "
            f"recorded in {MODEL_MARKER}"
        )
    try:
        cfg = CAEConfig.from_dict(meta["architecture"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{meta_file}: invalid architecture {meta['architecture']}: {exc}") from None
    _check_meta_consistency(meta, cfg, meta_file)
    try:
        state = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{wfile}: not a readable safetensors file ({exc})") from None
    model = CAE(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    diffs = [f"missing {k}" for k in expected if k not in found]
    diffs += [f"unexpected {k}" for k in found if k not in expected]
    diffs += [
        f"{k}: shape {found[k]} in file, {expected[k]} for the architecture"
        for k in expected
        if k in found and found[k] != expected[k]
    ]
    if diffs:
        more = f" (and {len(diffs) - 5} more)" if len(diffs) > 5 else ""
        raise CheckpointError(
            f"{wfile}: weights do not match the architecture in {MODEL_MARKER} {cfg.to_dict()}: "
            + "; ".join(diffs[:5])
            + more
        )
    model.load_state_dict(state, strict=True)
    model.eval()
    _check_metadata_checksums(meta, meta_file)
    return TrainedModel(model=model.to(device), meta=meta, checksum=checksum)


__all__ = [
    "CheckpointMeta",
    "TrainedModel",
    "check_writable",
    "dates_meta",
    "finalise_meta",
    "load_model",
    "metadata_checksums",
    "read_meta",
    "save_model",
    "weights_bytes",
]
