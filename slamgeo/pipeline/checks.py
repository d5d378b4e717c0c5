"""Checks of a season configuration against its inputs, made before the first step runs.

What the configuration file alone cannot tell (`slamgeo.pipeline.config` validates that) but a
glance at the inputs can: the season window's dates, a reused checkpoint that is not there, a
parcels file that is missing or lacks its id or class column, and class names in `report.pairs`
and `report.class_groups` that are not classes of the parcels (the parcels file's class column,
or the classes of the synthetic scene's parcels). Each refusal is a `ConfigError` naming the
key, the name found, and what is known, before hours of ingesting and training. The labels of
a table input are coordinates of its cube: `check_cube_classes` checks them once it is ingested,
before training.
"""

from __future__ import annotations

from pathlib import Path

from slamgeo import schema
from slamgeo.errors import ConfigError
from slamgeo.io import storage
from slamgeo.pipeline.config import PipelineConfig

_PARQUET_SUFFIXES = (".parquet", ".geoparquet", ".pq")
_SHOWN_CLASSES = 40  # class names listed in a message, at most


def check_inputs(cfg: PipelineConfig) -> None:
    """Raise `ConfigError` for a configuration its inputs contradict (module doc); reads only
    the parcels file's attribute table (no geometry) and, for a synthetic scene, its layout."""
    _check_season(cfg)
    _check_checkpoint(cfg)
    classes = _parcel_classes(cfg)
    if classes is not None:
        _check_class_names(cfg, *classes)


def check_cube_classes(cfg: PipelineConfig, cube: storage.Location) -> None:
    """For a sample-form input (a table) without a parcels file: the class names of
    `report.class_groups` against the labels of the ingested `cube` (its coordinate
    `parcels.class_column`; nothing is checked when it has none, the parcels step says so)."""
    if not (cfg.report.enabled and cfg.report.class_groups) or cfg.parcels.path or cfg.input.kind == "synthetic":
        return
    from slamgeo.io.cube import open_cube

    ds = open_cube(str(cube))
    col = cfg.parcels.class_column
    if col not in ds.coords:
        return
    values = ds[col].values.ravel().tolist()
    known = sorted({str(v) for v in values if v is not None and str(v) not in ("", "nan", "None")})
    _check_class_names(cfg, known, f"the labels of the input (coordinate {col!r} of {cube})")


def _check_season(cfg: PipelineConfig) -> None:
    import pandas as pd

    when = {}
    for key in ("start", "end"):
        value = getattr(cfg.season, key)
        if value is None:
            continue
        try:
            when[key] = pd.Timestamp(value)
        except (ValueError, TypeError):
            raise ConfigError(f"season.{key}: {value!r} is not a date (expected YYYY-MM-DD)") from None
    if len(when) == 2 and when["start"] > when["end"]:
        raise ConfigError(f"season.start {cfg.season.start} is after season.end {cfg.season.end}")
    if cfg.report.enabled and cfg.report.date is not None:
        try:
            ok = not pd.isna(pd.to_datetime(cfg.report.date, format="ISO8601"))
        except (ValueError, TypeError):
            ok = False
        if not ok:
            raise ConfigError(f"report.date: {cfg.report.date!r} is not a date (expected YYYY-MM-DD)")


def _check_checkpoint(cfg: PipelineConfig) -> None:
    path = cfg.model.checkpoint
    if path and not storage.exists(storage.join(storage.location(path), schema.MODEL_MARKER)):
        raise ConfigError(
            f"model.checkpoint: {path}: no slamgeo checkpoint here (no {schema.MODEL_MARKER}); "
            "give the model folder of a training run (<output>/<season>/model)"
        )


def _parcel_classes(cfg: PipelineConfig) -> tuple[list[str], str] | None:
    """The class names of the run's parcels and where they come from; None when no class name
    needs checking. A parcels file is checked (there, readable, with both columns) always."""
    p = cfg.parcels
    names_given = cfg.report.enabled and bool(cfg.report.pairs or cfg.report.class_groups)
    if p.path:
        columns, values = _read_class_column(p.path, p.class_column, read_values=names_given)
        for key, col in (("parcels.id_column", p.id_column), ("parcels.class_column", p.class_column)):
            if col not in columns:
                raise ConfigError(f"{key}: {col!r} is not a column of {p.path}; its columns are {columns}")
        return (values, f"the parcels' classes (column {p.class_column!r} of {p.path})") if names_given else None
    if names_given and cfg.input.kind == "synthetic":
        from slamgeo.synth import scene_classes

        s = cfg.input.synthetic
        classes = scene_classes(size=s.size, seed=s.seed)
        return classes, f"the classes of the synthetic scene's parcels (input.synthetic size {s.size}, seed {s.seed})"
    return None


def _read_class_column(path: str, column: str, *, read_values: bool) -> tuple[list[str], list[str]]:
    """The attribute columns of a parcels file (GeoPackage, shapefile, GeoParquet; a path or a
    URL) and, with `read_values`, the distinct non-blank values of `column` as text, sorted."""
    loc = storage.location(path)
    if not storage.exists(loc):
        raise ConfigError(f"parcels.path: {path}: no parcel file here")
    parquet = Path(storage.name(loc)).suffix.lower() in _PARQUET_SUFFIXES
    try:
        if parquet:
            import pyarrow.parquet as pq

            with storage.open_input(loc) as f:
                columns = [c for c in pq.read_schema(f).names if c != "geometry"]
                values = (
                    pq.read_table(f, columns=[column]).column(column).to_pylist()
                    if read_values and column in columns
                    else []
                )
        else:
            import pyogrio

            src = str(loc) if not storage.is_url(loc) else storage.read_bytes(loc)
            columns = [str(c) for c in pyogrio.read_info(src)["fields"]]
            values = []
            if read_values and column in columns:
                df = pyogrio.read_dataframe(src, columns=[column], read_geometry=False)
                values = df[column].tolist()
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyogrio/pyarrow raise many types; say which file
        raise ConfigError(
            f"parcels.path: {path}: cannot read parcels as GeoPackage, shapefile or GeoParquet ({exc})"
        ) from None
    names = sorted({str(v) for v in values if v is not None and str(v) not in ("", "nan", "None")})
    return columns, names


def _check_class_names(cfg: PipelineConfig, known: list[str], where: str) -> None:
    r = cfg.report
    problems = []
    for i, pair in enumerate(r.pairs or []):
        problems += [f"report.pairs[{i}]: unknown class {c!r}" for c in pair if c not in known]
    for group, names in (r.class_groups or {}).items():
        problems += [f"report.class_groups.{group}: unknown class {c!r}" for c in names if c not in known]
    if problems:
        shown = known[:_SHOWN_CLASSES]
        more = f" and {len(known) - len(shown)} more" if len(known) > len(shown) else ""
        listed = f"{shown}{more}" if known else "none"
        raise ConfigError(f"{'; '.join(problems)}; {where} are {listed}")


__all__ = ["check_cube_classes", "check_inputs"]
