"""The seasons under one output root: which model each used, and a one-line summary of each.

A season is a folder `<output>/<name>/` holding a `pipeline_state.json` or run manifests
(`slamgeo.pipeline.state`). `latest_model` finds the newest model trained by another season
(for `model: {reuse: latest}`); `model_season` says which season's model a configuration
uses; `list_seasons` summarises every season (`slamgeo seasons OUTPUT_ROOT`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from slamgeo import schema
from slamgeo.errors import InputError, SlamgeoError
from slamgeo.io import storage
from slamgeo.pipeline.config import PipelineConfig
from slamgeo.pipeline.state import read_manifest, read_state

NO_DRIFT = "-"  # the drift verdict, not computed yet


@dataclass(frozen=True)
class TrainedModel:
    """A model trained by a season: the season's name, the checkpoint folder, when training ended."""

    season: str
    checkpoint: storage.Location
    finished: str


@dataclass
class SeasonRow:
    """One season as `slamgeo seasons` shows it. Dates are ISO days (None: no cube yet); `oa`
    and `kappa` are the parcel-level scores of `parcels/metrics.json` (None: none)."""

    season: str
    first: str | None = None
    last: str | None = None
    model_season: str | None = None
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    oa: float | None = None
    kappa: float | None = None
    drift: str = NO_DRIFT

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """The row as one line of text; "-" for what is not known."""
        from slamgeo.pipeline.state import STEPS

        steps = f"{len(self.done)}/{len(STEPS)} steps done"
        if self.failed:
            steps += f", failed: {','.join(self.failed)}"
        if self.interrupted:
            steps += f", interrupted: {','.join(self.interrupted)}"
        score = "-" if self.oa is None else f"{self.oa:.3f}"
        kappa = "-" if self.kappa is None else f"{self.kappa:.3f}"
        return (
            f"{self.season}  {self.first or '-'} .. {self.last or '-'}  model {self.model_season or '-'}  "
            f"{steps}  OA {score}  kappa {kappa}  drift {self.drift}"
        )


def season_dirs(root: storage.Location) -> dict[str, storage.Location]:
    """The season folders right below `root` (name -> location), in name order: those holding
    a state file or a manifests folder. Nothing when `root` is missing."""
    if not storage.isdir(root):
        return {}
    fs, path = storage.filesystem(root)
    out = {}
    for entry in sorted(fs.ls(path, detail=False)):
        name = str(entry).rstrip("/").rsplit("/", 1)[-1]
        loc = storage.join(root, name)
        if name.startswith(".") or not storage.isdir(loc):
            continue
        if storage.exists(storage.join(loc, schema.STATE_FILE)) or storage.isdir(
            storage.join(loc, schema.MANIFESTS_DIR)
        ):
            out[name] = loc
    return out


def _trained(season: str, folder: storage.Location) -> TrainedModel | None:
    """The model `season` trained itself (not one it reused), when its state records the
    train step as done and the checkpoint is there."""
    try:
        state = read_state(storage.join(folder, schema.STATE_FILE))
    except SlamgeoError:  # a damaged state file: that season's model is not offered
        return None
    train = state["steps"].get("train", {})
    checkpoint = storage.join(folder, schema.MODEL_DIR)
    if train.get("status") != "done" or "reused" in train.get("info", {}):
        return None
    if not storage.exists(storage.join(checkpoint, schema.MODEL_MARKER)):
        return None
    return TrainedModel(season, checkpoint, str(train.get("finished") or ""))


def latest_model(root: storage.Location, *, before: str | None = None) -> TrainedModel | None:
    """The model most recently trained (by the train step's end time) by a season under
    `root` whose name sorts before `before` (an earlier season: a re-run of 2018 keeps the
    model of 2017 when 2019 has trained one since); None when there is none."""
    found = [
        m for name, loc in season_dirs(root).items() if (before is None or name < before) and (m := _trained(name, loc))
    ]
    return max(found, key=lambda m: (m.finished, m.season)) if found else None


def with_reused_model(cfg: PipelineConfig) -> tuple[PipelineConfig, TrainedModel | None]:
    """`cfg` with `model.reuse: latest` resolved: `model.checkpoint` set to the newest model
    of another season under `cfg.output` (`reuse` kept, saying where it came from), and that
    model; `cfg` unchanged and None when there is none (the season trains its own) or when
    `reuse` is not set."""
    if cfg.model.reuse != "latest" or cfg.model.retrain == "always":
        return cfg, None
    root = storage.location(cfg.output)
    found = latest_model(root, before=cfg.season.name)
    if found is None or _drifted_from(cfg, root, found.season):
        return cfg, None
    model = cfg.model.model_copy(update={"checkpoint": str(found.checkpoint)})
    return cfg.model_copy(update={"model": model}), found


def _drifted_from(cfg: PipelineConfig, root: storage.Location, season: str) -> bool:
    """Whether `retrain: auto` and the season's drift.json says it drifted from `season`'s
    model (the season then keeps training its own on every later run)."""
    from slamgeo.pipeline.drift import read_drift

    if cfg.model.retrain != "auto":
        return False
    drift = read_drift(storage.join(root, cfg.season.name))
    return drift is not None and drift["verdict"] == "retrain" and drift.get("reference_season") == season


def retrain_on_drift(
    cfg: PipelineConfig, reused: TrainedModel | None, folder: storage.Location
) -> PipelineConfig | None:
    """After a run that reused `reused`: the configuration that trains the season's own model
    when `retrain: auto` and the drift step said "retrain", else None."""
    if reused is None or not _drifted_from(cfg, storage.parent(folder), reused.season):
        return None
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"checkpoint": None})})


def checkpoint_season(checkpoint: storage.Location, root: storage.Location) -> str | None:
    """The season whose model folder `checkpoint` is (`<root>/<season>/model`), else None."""
    ck = storage.location(checkpoint)
    if storage.name(ck) != schema.MODEL_DIR:
        return None
    season = storage.parent(ck)
    return storage.name(season) if storage.same_location(storage.parent(season), root) else None


def model_season(cfg: PipelineConfig) -> str | None:
    """The season whose model `cfg` uses: its own when it trains, the season of a reused
    checkpoint under the same output root; None for a checkpoint from elsewhere."""
    if not cfg.model.checkpoint:
        return cfg.season.name
    return checkpoint_season(cfg.model.checkpoint, storage.location(cfg.output))


def report_title(cfg: PipelineConfig) -> str:
    """The report's title: the season, and the season of its model when it is another's."""
    title = f"slamgeo season {cfg.season.name}"
    used = model_season(cfg)
    if used != cfg.season.name:
        title += f" (model of season {used})" if used else " (a reused model)"
    return title


def _cube_dates(folder: storage.Location) -> tuple[str | None, str | None]:
    import xarray as xr

    cube = storage.join(folder, schema.CUBE_STORE)
    if not storage.exists(cube):
        return None, None
    try:
        with xr.open_zarr(str(cube)) as ds:
            times = ds["time"].values
    except (OSError, ValueError, KeyError):  # unreadable or half-written: dates unknown
        return None, None
    if times.size == 0:
        return None, None
    return str(times.min())[:10], str(times.max())[:10]


def _scores(folder: storage.Location) -> tuple[float | None, float | None]:
    metrics = storage.join(folder, schema.PARCELS_DIR, schema.PARCELS_MARKER)
    try:
        scores = json.loads(storage.read_bytes(metrics)).get("parcels", {})
    except (FileNotFoundError, ValueError, AttributeError):
        return None, None
    oa, kappa = scores.get("overall_accuracy"), scores.get("kappa")
    return (
        float(oa) if isinstance(oa, (int, float)) else None,
        float(kappa) if isinstance(kappa, (int, float)) else None,
    )


def season_row(name: str, folder: storage.Location, root: storage.Location) -> SeasonRow:
    """The summary of one season folder: its state, its latest manifest, its cube, scores and
    drift verdict."""
    from slamgeo.pipeline.drift import read_drift
    from slamgeo.pipeline.state import STEPS

    steps = read_state(storage.join(folder, schema.STATE_FILE))["steps"]
    row = SeasonRow(name)
    row.done = [s for s in STEPS if steps.get(s, {}).get("status") == "done"]
    row.failed = [s for s in STEPS if steps.get(s, {}).get("status") == "failed"]
    row.interrupted = [s for s in STEPS if steps.get(s, {}).get("status") in ("interrupted", "running")]
    manifests = storage.glob(storage.join(folder, schema.MANIFESTS_DIR), "run-*.json")
    if manifests:
        manifest = read_manifest(manifests[-1])  # the names sort by start time
        row.model_season = manifest.model_season
    if row.model_season is None:
        info = steps.get("train", {}).get("info", {})
        if "reused" in info:
            row.model_season = checkpoint_season(info["reused"], root)
        elif steps.get("train", {}).get("status") == "done":
            row.model_season = name
    row.first, row.last = _cube_dates(folder)
    row.oa, row.kappa = _scores(folder)
    drift = read_drift(folder)
    if drift is not None:
        row.drift = f"{drift['verdict']} (vs {drift.get('reference_season')})"
    return row


def list_seasons(root: storage.Location) -> list[SeasonRow]:
    """One row per season under `root`, in name order; `InputError` when `root` is not there."""
    root = storage.location(root)
    if not storage.exists(root):
        raise InputError(f"{root}: no such output folder; give the `output` of a season configuration")
    return [season_row(name, loc, root) for name, loc in season_dirs(root).items()]


__all__ = [
    "SeasonRow",
    "TrainedModel",
    "checkpoint_season",
    "latest_model",
    "list_seasons",
    "model_season",
    "report_title",
    "retrain_on_drift",
    "season_dirs",
    "with_reused_model",
]
