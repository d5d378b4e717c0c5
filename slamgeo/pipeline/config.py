"""The season pipeline's configuration: YAML, loaded safely, validated with pydantic.

Unknown keys and wrong types are errors that name the offending key (`ConfigError`).
Defaults are the library's (`slamgeo.schema`), so a key left out means what the command line
and the Python functions do by default.
Paths may be local or fsspec URLs (`s3://bucket/prefix`); relative paths are taken relative
to the configuration file, which may itself be a local file or a URL.
`{season}` in any string value is filled in by `load_config(..., season=...)` (`slamgeo run
--season`) before validation, so one file serves every season; `{{` and `}}` are literal braces.
"""

from __future__ import annotations

import posixpath
import string
from pathlib import Path
from typing import Literal, cast

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from slamgeo import schema
from slamgeo.errors import ConfigError
from slamgeo.io import storage
from slamgeo.io.readers import READERS

# Former section names: refused with a message naming the section to use instead.
RENAMED_KEYS = {"cluster": "dask: (the Dask scheduler and workers; k-Means settings are under kmeans:)"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticInput(_Strict):
    """Generate a synthetic Sentinel-1 scene and ingest its GeoTIFFs (the embedded default)."""

    size: int = Field(256, ge=32, le=8192)
    seed: int = 0
    n_dates: int = Field(61, ge=8)
    start: str = "2017-01-03"
    step_days: int = Field(6, ge=1)
    missing_dates: int = Field(0, ge=0)
    irregular: bool = False
    rain_events: int = Field(0, ge=0)
    # write the scene as a Sentinel-1 archive (COG items in two UTM zones, two slices per
    # pass, descending passes too) and ingest it through the STAC loader
    archive: bool = False
    # drift from one season to the next (`slamgeo.synth.make_scene`): every crop's calendar
    # moved by whole days, later when positive; the classes' shares of the parcels (class name
    # -> weight, 1 for a class left out)
    calendar_shift_days: int = Field(0, ge=-schema.CALENDAR_SHIFT_MAX_DAYS, le=schema.CALENDAR_SHIFT_MAX_DAYS)
    crop_mix: dict[str, float] = Field(default_factory=dict)

    @field_validator("crop_mix")
    @classmethod
    def _known_classes(cls, v: dict[str, float]) -> dict[str, float]:
        if v:  # the generator's classes, loaded only when a mix is given
            from slamgeo.synth.crops import check_crop_mix

            try:
                check_crop_mix(v)
            except ValueError as exc:  # InputError: the message, for the key's error
                raise ValueError(str(exc).removeprefix("crop_mix: ")) from None
        return v

    @model_serializer(mode="wrap")
    def _drift_when_set(self, handler: SerializerFunctionWrapHandler) -> dict:
        """The drift options are left out of the dump (which the ingest step fingerprints)
        while they are at their defaults, so a scene without drift keeps its fingerprint."""
        out = handler(self)
        for key in _DRIFT_OPTIONS:
            if key in out and not out[key]:
                del out[key]
        return out

    def scene_options(self) -> dict:
        """The keyword arguments of `slamgeo.synth.make_scene` for this scene (all but `archive`)."""
        return {k: getattr(self, k) for k in type(self).model_fields if k != "archive"}


_DRIFT_OPTIONS = ("calendar_shift_days", "crop_mix")


SYNTHETIC = "synthetic"  # the input kind that draws a scene and ingests it; the others are readers


class InputConfig(_Strict):
    """Where the Sentinel-1 stack comes from, and the grid rasters are loaded onto.

    kind: "synthetic" (draw a scene, `synthetic`, and ingest it), or the name of a reader of
    `slamgeo.io.readers.READERS` (geotiff, stac, stac-api, cube, table, scene) that `paths`
    must be for (checked when the ingest step runs). kind "stac-api": `paths` holds one
    `stac+https://HOST/PATH`, searched for `collection`, `datetime` and `bbox`, signed with
    `sign`. For rasters (geotiff, stac, stac-api, scene, synthetic archive): `crs`,
    `resolution` (m), `bbox` (lon0, lat0, lon1, lat1) or `like` (a parcels file), `orbit`,
    `relative_orbits`, `resampling`; unset means the library's defaults.
    """

    kind: str = SYNTHETIC
    paths: list[str] = Field(default_factory=list)
    synthetic: SyntheticInput = SyntheticInput()
    crs: str | None = None
    resolution: float | None = Field(None, gt=0)
    bbox: tuple[float, float, float, float] | None = None
    like: str | None = None
    orbit: Literal["ascending", "descending"] | None = None
    relative_orbits: list[int] = Field(default_factory=list)
    resampling: Literal["bilinear", "nearest"] = "bilinear"
    # guards of the loader (refuse a grid of more pixels per date / more tiles); they never
    # change the cube, so they are left out of the dump the ingest step fingerprints
    max_pixels: int | None = Field(None, ge=1, exclude=True)
    max_blocks: int | None = Field(None, ge=1, exclude=True)
    collection: str | None = None
    datetime: str | None = None
    sign: str | None = None

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v != SYNTHETIC and v not in READERS:
            raise ValueError(f"unknown input kind {v!r}; the kinds are {', '.join([SYNTHETIC, *READERS])}")
        return v

    @model_validator(mode="after")
    def _paths_given(self) -> InputConfig:
        if self.kind != "synthetic" and not self.paths:
            raise ValueError(f"input.paths is required for input.kind={self.kind!r}")
        if self.kind == "stac-api" and (len(self.paths) != 1 or not self.paths[0].startswith("stac+")):
            raise ValueError("input.kind='stac-api' takes one path, the API as stac+https://HOST/PATH")
        if self.kind == "stac-api" and not self.collection:
            raise ValueError("input.collection is required for input.kind='stac-api' (for example sentinel-1-rtc)")
        searching = (self.collection, self.datetime, self.sign)
        if self.kind != "stac-api" and any(v is not None for v in searching):
            raise ValueError("input.collection, datetime and sign apply to input.kind='stac-api' only")
        if self.bbox is not None and self.like is not None:
            raise ValueError("give input.bbox or input.like, not both")
        return self

    def grid(self) -> dict:
        """The loader's keyword options (`slamgeo.load`), unset ones left out."""
        keys = ("crs", "resolution", "bbox", "like", "orbit", "resampling", "max_pixels", "max_blocks")
        out = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        if self.relative_orbits:
            out["relative_orbits"] = list(self.relative_orbits)
        if self.kind == "stac-api":
            out.update({k: getattr(self, k) for k in ("collection", "datetime", "sign") if getattr(self, k)})
        return out


class ParcelsConfig(_Strict):
    path: str | None = None  # None with synthetic input: the scene's own parcels
    id_column: str = schema.ID_COLUMN
    class_column: str = schema.CLASS_COLUMN
    all_touched: bool = False
    vote: schema.VoteUnit = schema.VOTE
    test_fraction: float = Field(schema.TEST_FRACTION, ge=0.0, lt=1.0)
    seed: int = 0


class DaskConfig(_Strict):
    """The Dask cluster of a run: an existing scheduler's address, or a LocalCluster's size.

    `gpu_resources`: explain's tasks (its blocks and the reference map) ask for the Dask
    resource GPU=1, so they run only on workers started with `--resources GPU=1` (as `slamgeo
    explain --gpu`); each such worker uses CUDA when it sees a device, else its CPU. A
    LocalCluster gives its workers that resource. Results do not depend on it (not in the
    explain step's fingerprint). `slamgeo run --scheduler` and `--gpu-resources` override both.

    `wait_for_workers`: with a scheduler, the seconds it is given to have a worker (one with
    the resource GPU under `gpu_resources`) before the run stops with an error; `slamgeo run
    --wait-for-workers` overrides it."""

    scheduler: str | None = None
    n_workers: int | None = Field(None, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    gpu_resources: bool = False
    wait_for_workers: float = Field(schema.WAIT_FOR_WORKERS, ge=0)

    @field_validator("scheduler")
    @classmethod
    def _scheduler_address(cls, v: str | None) -> str | None:
        from slamgeo.jobs.runtime import check_scheduler_address

        return v if v is None else check_scheduler_address(v, where="")


class TrainConfig(_Strict):
    sample_size: int = Field(schema.TRAIN_SAMPLE_SIZE, ge=100)
    val_fraction: float = Field(schema.TRAIN_VAL_FRACTION, gt=0, lt=1)
    max_epochs: int = Field(schema.TRAIN_MAX_EPOCHS, ge=1)
    patience: int = Field(schema.TRAIN_PATIENCE, ge=1)
    batch_size: int = Field(schema.TRAIN_BATCH_SIZE, ge=1)
    lr: float = Field(schema.TRAIN_LR, gt=0)
    seed: int = 0
    embed_dim: int = Field(schema.EMBED_DIM, ge=1)
    gap_fill: bool = False
    device: str = "auto"
    threads: int | None = Field(None, ge=1)  # torch CPU threads while training; None: torch's default


class ModelConfig(_Strict):
    """`checkpoint`: reuse this model instead of training. `reuse: latest`: reuse the newest
    model trained by another season under the same `output` (`slamgeo.pipeline.seasons`),
    or train when there is none. `retrain`: whether a season that reuses a model trains its own
    instead: "auto" when the season's drift from the model's season says so
    (`slamgeo.jobs.drift.season_drift`), "never", or "always"."""

    checkpoint: str | None = None
    reuse: Literal["latest"] | None = None
    retrain: schema.Retrain = schema.RETRAIN
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if self.reuse is not None and self.checkpoint is not None:
            raise ValueError("give model.reuse or model.checkpoint, not both")
        return self


class GradSlamConfig(_Strict):
    scale: schema.Scale | None = None  # None: library default
    layers: list[str] | None = None
    batch_size: int = Field(schema.EXPLAIN_BATCH_SIZE, ge=1)
    importance_dtype: schema.ImportanceDtype = schema.IMPORTANCE_DTYPE
    max_gap_days: float = Field(schema.MAX_GAP_DAYS, gt=0)  # season resampling onto a reused model's dates


class KMeansConfig(_Strict):
    k: int = Field(schema.KMEANS_K, ge=2)
    seed: int = 0
    sample_size: int = Field(schema.KMEANS_SAMPLE_SIZE, ge=100)


class SeasonConfig(_Strict):
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    start: str | None = None
    end: str | None = None

    @field_validator("name")
    @classmethod
    def _inside_output(cls, v: str) -> str:
        if v.strip(".") == "":
            raise ValueError(f"{v!r} would put the season's outputs outside `output`; use a name such as 2017")
        return v


class ReportConfig(_Strict):
    enabled: bool = True
    class_groups: dict[str, list[str]] | None = None
    date: str | None = None  # date of the importance map; None: the most important date
    # class pairs explained by the direction between their mean embeddings, besides the
    # `confused_pairs` most confused pairs of the confusion matrix
    pairs: list[tuple[str, str]] | None = None
    confused_pairs: int = Field(schema.CONFUSED_PAIRS, ge=0)

    @field_validator("pairs")
    @classmethod
    def _two_classes(cls, v: list[tuple[str, str]] | None) -> list[tuple[str, str]] | None:
        for a, b in v or []:
            if a == b:
                raise ValueError(f"{a!r} paired with itself; a pair needs two different classes")
        return v


class PipelineConfig(_Strict):
    season: SeasonConfig
    output: str
    input: InputConfig = InputConfig()
    parcels: ParcelsConfig = ParcelsConfig()
    chunk: int = Field(schema.CHUNK, ge=16)
    dask: DaskConfig = DaskConfig()
    model: ModelConfig = ModelConfig()
    gradslam: GradSlamConfig = GradSlamConfig()
    kmeans: KMeansConfig = KMeansConfig()
    report: ReportConfig = ReportConfig()

    @field_validator("output")
    @classmethod
    def _output_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("output must be a path or URL")
        return v

    @model_validator(mode="after")
    def _classes_have_parcels(self) -> PipelineConfig:
        """Class names in the report need labelled parcels: a parcels file, or the synthetic
        scene's; `class_groups` may also name the labels of a table (or sample-form cube) input."""
        labelled = self.parcels.path is not None or self.input.kind == "synthetic"
        named = [
            f"report.{k}"
            for k in ("pairs", "class_groups")
            if getattr(self.report, k)
            and not (labelled or (k == "class_groups" and self.input.kind in ("table", "cube")))
        ]
        if self.report.enabled and named:
            raise ValueError(
                f"{' and '.join(named)} name classes of labelled parcels, and there are none: set parcels.path "
                "(a parcels file with the class column parcels.class_column)"
            )
        return self


def _resolve(base: storage.Location, p: str | None) -> str | None:
    """`p` relative to the folder `base` (a local folder or a URL); absolute paths and URLs as they are."""
    if p is None or storage.is_url(p) or Path(p).is_absolute():
        return p
    if storage.is_url(base):
        scheme, _, rest = str(base).partition("://")
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, p))}"
    return str((Path(base) / p).resolve())


def fill_season(raw: object, season: str | None, *, where: str = "configuration", key: str = "") -> object:
    """`raw` (a configuration mapping, as YAML gives it) with `{season}` in every string value
    replaced by `season`, and `{{` / `}}` by literal braces; keys are left as they are. Any
    other placeholder, or `{season}` while `season` is None, is a `ConfigError` naming the key."""
    if isinstance(raw, dict):
        return {k: fill_season(v, season, where=where, key=f"{key}.{k}" if key else str(k)) for k, v in raw.items()}
    if isinstance(raw, list):
        return [fill_season(v, season, where=where, key=f"{key}.{i}") for i, v in enumerate(raw)]
    if not isinstance(raw, str):
        return raw
    try:
        pieces = list(string.Formatter().parse(raw))
    except ValueError as exc:  # a lone brace
        raise ConfigError(f"{where}: {key}: {exc} in {raw!r} (write {{{{ and }}}} for literal braces)") from None
    parts = []
    for text, field, spec, conversion in pieces:
        parts.append(text)
        if field is None:
            continue
        if field != "season" or spec or conversion:
            raise ConfigError(
                f"{where}: {key}: unknown placeholder {{{field}}} in {raw!r}; "
                "the one placeholder is {season} (write {{ and }} for literal braces)"
            )
        if season is None:
            raise ConfigError(f"{where}: {key}: {raw!r} holds {{season}}; give the season (slamgeo run --season 2024)")
        parts.append(season)
    return "".join(parts)


def load_config(path: str | Path, *, overrides: dict | None = None, season: str | None = None) -> PipelineConfig:
    """Read a YAML configuration (safe loader; a local file or an fsspec URL) and validate it;
    relative paths are resolved against the file's folder. Raises `ConfigError` naming the
    offending keys.

    `season` (for example "2024") fills `{season}` in every string value before validation
    (`fill_season`), so one file serves every season, and is `season.name` unless the file
    sets one. `overrides` (top-level keys) are taken as they are, after the filling."""
    path = storage.location(path)
    try:
        raw = yaml.safe_load(storage.read_text(path))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: configuration file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(raw).__name__}")
    raw = cast(dict, fill_season(raw, None if season is None else str(season), where=str(path)))
    if season is not None:
        section = raw.get("season")
        if section is None:
            raw["season"] = {"name": str(season)}
        elif isinstance(section, dict) and "name" not in section:
            raw["season"] = {**section, "name": str(season)}
    for k, v in (overrides or {}).items():
        raw[k] = v
    cfg = parse_config(raw, where=str(path))
    base = storage.parent(path) if storage.is_url(path) else Path(path).resolve().parent
    upd: dict = {"output": _resolve(base, cfg.output)}
    upd["input"] = cfg.input.model_copy(
        update={"paths": [_resolve(base, p) for p in cfg.input.paths], "like": _resolve(base, cfg.input.like)}
    )
    upd["parcels"] = cfg.parcels.model_copy(update={"path": _resolve(base, cfg.parcels.path)})
    upd["model"] = cfg.model.model_copy(update={"checkpoint": _resolve(base, cfg.model.checkpoint)})
    return cfg.model_copy(update=upd)


def parse_config(raw: dict, *, where: str = "configuration") -> PipelineConfig:
    """Validate a configuration mapping; errors name each offending key path."""
    renamed = [f"{old}: renamed to {new}" for old, new in RENAMED_KEYS.items() if old in raw]
    if renamed:
        raise ConfigError(f"{where}: " + "; ".join(renamed))
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            if err["type"] == "value_error" and "error" in err.get("ctx", {}):
                msg = str(err["ctx"]["error"])  # our own message, without pydantic's "Value error, "
            problems.append(f"{key}: {msg}" if key else msg)
        raise ConfigError(f"{where}: " + "; ".join(problems)) from None


__all__ = ["PipelineConfig", "fill_season", "load_config", "parse_config"]
