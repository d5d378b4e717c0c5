"""Train the CAE on a cube: a stratified sample of valid pixels, MSE, Adam, early stopping.

`train` draws its sample with `slamgeo.io.sample.sample_series` (lazy, stratified over the
cube's chunks), standardises per band, trains with a fixed seed (bit-reproducible on CPU),
keeps the weights of the best validation epoch, and returns (and optionally saves) a
`TrainedModel`.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import xarray as xr
from torch.nn import functional as F

from slamgeo._version import __version__
from slamgeo.errors import ConfigError, InputError
from slamgeo.io.cube import BANDS, validate_cube
from slamgeo.io.provenance import dataset_fingerprint, versions
from slamgeo.io.sample import sample_series
from slamgeo.method.checkpoint import TrainedModel, check_writable, dates_meta, finalise_meta, load_model, save_model
from slamgeo.method.model import CAE, CAEConfig, min_times
from slamgeo.progress import Progress, progress_bar
from slamgeo.schema import (
    TRAIN_BATCH_SIZE,
    TRAIN_LR,
    TRAIN_MAX_EPOCHS,
    TRAIN_MIN_DATES,
    TRAIN_PATIENCE,
    TRAIN_SAMPLE_SIZE,
    TRAIN_VAL_FRACTION,
)


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA if available else CPU; 'cuda' (or 'cuda:1') must be available."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}")
    return dev


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Intra-op CPU threads for the duration (None: leave torch's setting); restored on exit."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _reproducible(seed: int, dev: torch.device) -> Iterator[None]:
    """Seeded torch RNGs and, on CPU, deterministic algorithms; the caller's state is restored."""
    devices = [dev.index or 0] if dev.type == "cuda" else []
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if dev.type == "cpu":
            torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic)


def _mse(model: CAE, x: torch.Tensor, batch_size: int, bf16: bool) -> float:
    """Mean squared reconstruction error over all of `x` `(N, C, T)`, in batches, no gradients."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size]
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=bf16):
                _, rec = model(xb)
            total += F.mse_loss(rec.float(), xb, reduction="sum").double()
    return float(total) / x.numel()


def check_series_length(n_times: int, n_blocks: int, *, cube: str = "the cube") -> None:
    """Raise `InputError` when series of `n_times` dates are too short for a CAE with
    `n_blocks` pooling blocks (`min_times`): one line naming `cube`, the dates found, the
    minimum, and what to do (more dates; fewer pooling blocks where that helps)."""
    need = min_times(n_blocks)
    if n_times >= need:
        return
    found = f"{cube}: {n_times} date{'' if n_times == 1 else 's'} found"
    if n_times < TRAIN_MIN_DATES:
        raise InputError(
            f"{found}; training needs at least {need} dates (no architecture trains on fewer than {TRAIN_MIN_DATES}); "
            "ingest more acquisitions: a longer season or more input files (slamgeo ingest --start/--end, "
            "season.start/season.end in a pipeline configuration)"
        )
    fits = int(math.log2(n_times))
    raise InputError(
        f"{found}; the model's {n_blocks} pooling blocks need at least {need} dates; ingest at least {need} "
        f"dates, or use at most {fits} pooling blocks (arch channels and kernels of {fits} entries each, "
        f"e.g. train(arch={{'channels': [...], 'kernels': [...]}}))"
    )


def _arch(arch: dict | None, n_bands: int, n_times: int, *, cube: str = "the cube") -> CAEConfig:
    arch = dict(arch or {})
    for key, value in (("n_bands", n_bands), ("n_times", n_times)):
        if key in arch and int(arch.pop(key)) != value:
            raise ConfigError(f"arch: {key} comes from the cube ({value}); do not set it to another value")
    channels = arch.get("channels", CAEConfig.channels)
    if isinstance(channels, (list, tuple)) and channels:  # else CAEConfig says what is wrong
        check_series_length(n_times, len(channels), cube=cube)
    try:
        return CAEConfig.from_dict({"n_bands": n_bands, "n_times": n_times, **arch})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"arch {arch}: {exc}") from None


def _check_settings(sample_size, val_fraction, max_epochs, patience, batch_size, lr) -> None:
    problems = []
    if sample_size < 2:
        problems.append(f"sample_size must be >= 2, got {sample_size}")
    if not 0 < val_fraction < 1:
        problems.append(f"val_fraction must be in (0, 1), got {val_fraction}")
    if max_epochs < 1:
        problems.append(f"max_epochs must be >= 1, got {max_epochs}")
    if patience < 1:
        problems.append(f"patience must be >= 1, got {patience}")
    if batch_size < 1:
        problems.append(f"batch_size must be >= 1, got {batch_size}")
    if not lr > 0:
        problems.append(f"lr must be > 0, got {lr}")
    if problems:
        raise ConfigError("; ".join(problems))


def train(
    ds: xr.Dataset,
    *,
    out_dir=None,
    overwrite: bool = False,
    inputs: Sequence[str] = (),
    sample_size: int = TRAIN_SAMPLE_SIZE,
    val_fraction: float = TRAIN_VAL_FRACTION,
    max_epochs: int = TRAIN_MAX_EPOCHS,
    patience: int = TRAIN_PATIENCE,
    batch_size: int = TRAIN_BATCH_SIZE,
    lr: float = TRAIN_LR,
    seed: int = 0,
    device: str = "auto",
    bf16: bool = False,
    gap_fill: bool = False,
    arch: dict | None = None,
    bands: Sequence[str] = BANDS,
    threads: int | None = None,
    progress: bool | Progress = True,
    sample: np.ndarray | None = None,
) -> TrainedModel:
    """Train a CAE on `sample_size` pixels of the cube `ds` and return it (saved to `out_dir` if given).

    Loss: MSE between the standardised input `(N, C, T)` and its reconstruction (per-band
    statistics of the training part, in dB, stored with the model). Adam with `lr`, mini-batches
    of `batch_size` shuffled by a seeded generator; after each epoch the loss on the held-out
    `val_fraction` decides early stopping (`patience` epochs without improvement) and the best
    epoch's weights are kept. `device`: 'auto' (CUDA if available), 'cpu', 'cuda'. `bf16`:
    bfloat16 autocast for the forward pass. `arch`: overrides for `CAEConfig`. `threads`: torch
    CPU threads while training (None: torch's setting); small models train much faster on one
    thread when the cores are shared. With the same seed (and thread count), two CPU runs give
    identical weights. `inputs`: the locations `ds` was read from, which `out_dir` must neither
    be nor hold (`slamgeo.method.checkpoint.check_writable`); the first names the cube in errors.
    A cube with fewer dates than the architecture takes (8 for the default) is refused with
    `InputError` before anything is read (`check_series_length`). `sample`: the `(N, C, T)`
    float32 dB sample when it was drawn elsewhere (on a cluster's workers), which must be
    `sample_series(ds, sample_size, seed=seed, gap_fill=gap_fill, bands=bands)`; None: drawn here.
    `progress`: show the epochs (`slamgeo.progress.progress_bar`), or the display to update
    once per epoch with the losses as postfix (a task on a worker passes one that reports to
    the driver).
    """
    _check_settings(sample_size, val_fraction, max_epochs, patience, batch_size, lr)
    bands = tuple(bands)
    validate_cube(ds, bands=bands)
    cfg = _arch(arch, len(bands), ds.sizes["time"], cube=str(inputs[0]) if inputs else "the cube")
    dev = resolve_device(device)
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1 or None, got {threads}")
    if out_dir is not None:
        check_writable(out_dir, overwrite=overwrite, inputs=inputs)

    if sample is None:
        x = sample_series(ds, sample_size, seed=seed, gap_fill=gap_fill, bands=bands)
    else:
        x = np.ascontiguousarray(sample, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (len(bands), ds.sizes["time"]) or len(x) > sample_size:
            raise ConfigError(
                f"sample of shape {x.shape}: expected at most {sample_size} series of {len(bands)} bands x "
                f"{ds.sizes['time']} dates"
            )
    n_val = max(1, int(round(val_fraction * len(x))))
    if len(x) - n_val < 1:
        raise InputError(
            f"found only {len(x)} usable pixel(s) (no NaN{', after gap filling' if gap_fill else ''}) "
            f"in the cube; need at least 2 to train and validate"
        )
    split = np.random.default_rng([seed, 2]).permutation(len(x))
    x_tr, x_va = x[split[n_val:]], x[split[:n_val]]
    mean = x_tr.mean(axis=(0, 2), dtype=np.float64)
    std = x_tr.std(axis=(0, 2), dtype=np.float64)
    if not np.all(std > 0):
        raise InputError(f"band(s) {[b for b, s in zip(bands, std) if not s > 0]} are constant in the sample")
    z_tr = ((x_tr - mean[None, :, None]) / std[None, :, None]).astype(np.float32)
    z_va = ((x_va - mean[None, :, None]) / std[None, :, None]).astype(np.float32)
    baseline = float(np.mean((z_va - z_tr.mean(axis=0, dtype=np.float64)) ** 2))  # per-date mean predictor

    t_tr, t_va = torch.from_numpy(z_tr).to(dev), torch.from_numpy(z_va).to(dev)
    n_tr = len(t_tr)
    losses_tr: list[float] = []
    losses_va: list[float] = []
    best, best_epoch, best_state, bad, diverged = math.inf, -1, None, 0, False
    with _torch_threads(threads), _reproducible(seed, dev):
        n_threads = torch.get_num_threads()
        model = CAE(cfg).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        # one display for the epochs (a bar per batch would be hundreds of lines in a log file):
        # a bar on a terminal, a plain line now and then in a log (`slamgeo.progress.progress_bar`)
        epochs = (
            progress if not isinstance(progress, bool) else progress_bar(max_epochs, "train", "epoch", enabled=progress)
        )
        for epoch in range(max_epochs):
            model.train()
            perm = torch.randperm(n_tr, generator=gen).to(dev)
            total = torch.zeros((), dtype=torch.float64, device=dev)
            for i in range(0, n_tr, batch_size):
                xb = t_tr[perm[i : i + batch_size]]
                with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16):
                    _, rec = model(xb)
                loss = F.mse_loss(rec.float(), xb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach().double() * xb.shape[0]
            losses_tr.append(float(total) / n_tr)
            losses_va.append(_mse(model, t_va, max(batch_size, 8192), bf16))
            if not (math.isfinite(losses_tr[-1]) and math.isfinite(losses_va[-1])):
                diverged = True
                break
            if losses_va[-1] < best:
                best, best_epoch, bad = losses_va[-1], epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
            epochs.set_postfix(train=f"{losses_tr[-1]:.4f}", val=f"{losses_va[-1]:.4f}", best=f"{best:.4f}")
            epochs.update(1)
            if bad >= patience:
                break
        epochs.close()
    if best_state is None:
        raise InputError(f"training diverged at the first epoch (loss {losses_tr[-1]}); try a smaller lr than {lr}")
    model.load_state_dict(best_state)
    model.eval()

    meta = {
        "bands": list(bands),
        **dates_meta(ds["time"].values),
        "normalisation": {
            "mean": mean.tolist(),
            "std": std.tolist(),
            "units": "dB",
            "computed_on": "training part of the sample, per band over pixels and dates",
        },
        "gap_fill": bool(gap_fill),
        "seed": int(seed),
        "training": {
            "sample_size": int(sample_size),
            "n_sampled": int(len(x)),
            "n_train": int(n_tr),
            "n_val": int(n_val),
            "val_fraction": float(val_fraction),
            "max_epochs": int(max_epochs),
            "patience": int(patience),
            "batch_size": int(batch_size),
            "lr": float(lr),
            "optimizer": "Adam",
            "loss": "mse (standardised units)",
            "device": str(dev),
            "cpu_threads": n_threads,
            "precision": "bfloat16 autocast" if bf16 else "float32",
            "epochs_run": len(losses_tr),
            "best_epoch": best_epoch + 1,
            "stopped_early": len(losses_tr) < max_epochs and not diverged,
            "diverged": diverged,
            "sampling": "stratified over spatial chunks, proportional to chunk size",
        },
        "losses": {
            "train": losses_tr,
            "val": losses_va,
            "best_val": best,
            "baseline_val_per_date_mean": baseline,
        },
        "data_fingerprint": hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest(),
        **_provenance(ds),
    }
    if out_dir is not None:
        save_model(model, meta, out_dir, overwrite=overwrite, inputs=inputs)
        return load_model(out_dir, device=str(dev))
    full, blob = finalise_meta(model, meta)
    return TrainedModel(model=model, meta=full, checksum=hashlib.sha256(blob).hexdigest())


def _provenance(ds: xr.Dataset) -> dict:
    return {"package_version": __version__, "cube_fingerprint": dataset_fingerprint(ds), "versions": versions()}


__all__ = ["check_series_length", "resolve_device", "train"]
