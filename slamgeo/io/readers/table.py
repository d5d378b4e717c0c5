"""The reader of a long Parquet table of per-parcel or per-point series (WorldCereal style), one row
per (`sample_id`, `timestamp`) -> a `(time, sample)` cube in dB with the labels as coordinates.

Band columns `S1-SIGMA0-VV`/`VH` (or `VV`/`VH`): uint16 digital numbers, or float linear power.
The WorldCereal legend `crop_type_class_mappings.csv` next to the table names the labels. The
table is read through fsspec, into memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr

from slamgeo.errors import InputError
from slamgeo.io import storage
from slamgeo.io.cube import BANDS, chunk_cube, linear_to_db, validate_cube
from slamgeo.io.readers._common import BAND_ALIASES, _dates_text, _one_line, _suffix, dn_to_db, select_time
from slamgeo.schema import CHUNK

if TYPE_CHECKING:
    from slamgeo.io.readers import ReadRequest

SUMMARY = "a long Parquet table (.parquet) of per-parcel or per-point series"
TABLE_SUFFIXES = (".parquet", ".pq", ".geoparquet")
LEGEND_FILE = "crop_type_class_mappings.csv"


def _legend(path: storage.Location) -> pd.DataFrame | None:
    """The WorldCereal legend next to the table, indexed by integer `ewoc_code`, or None."""
    csv = storage.join(storage.parent(path), LEGEND_FILE)
    if not storage.exists(csv):
        return None
    legend = pd.read_csv(str(csv), sep=";", encoding="utf-8-sig", dtype=str)
    legend["ewoc_code"] = legend["ewoc_code"].str.replace("-", "", regex=False).astype(np.int64)
    return legend.set_index("ewoc_code")


def _find_column(columns: Sequence[str], pol: str, where: str) -> str:
    for name in BAND_ALIASES[pol]:
        if name in columns:
            return name
    raise InputError(f"{where}: missing polarisation {pol} (looked for columns {list(BAND_ALIASES[pol])})")


def _table_timestamps(values: pd.Series, where: str) -> pd.Series:
    """The `timestamp` column as datetimes; `InputError` naming the first value that is empty
    or not a date."""
    if values.isna().any():
        raise InputError(f"{where}: column 'timestamp' has {int(values.isna().sum())} empty value(s)")
    try:
        return pd.to_datetime(values)
    except (ValueError, TypeError, OverflowError) as exc:
        for v in pd.unique(values):
            try:
                pd.Timestamp(v)
            except (ValueError, TypeError, OverflowError):
                raise InputError(f"{where}: column 'timestamp': {v!r} is not a date (expected YYYY-MM-DD)") from exc
        raise InputError(f"{where}: column 'timestamp' cannot be read as dates ({_one_line(exc)})") from exc


def _check_band_column(raw: pd.Series, col: str, where: str) -> None:
    """A band column must hold numbers (uint16 DN or float linear power); float linear power
    that is mostly negative on a date is dB read as linear power. Index: (time, sample)."""
    if not pd.api.types.is_numeric_dtype(raw.dtype) or pd.api.types.is_bool_dtype(raw.dtype):
        first = raw.dropna().iloc[0] if raw.notna().any() else None
        raise InputError(
            f"{where}: column {col!r} holds {raw.dtype} values such as {first!r}; expected numbers "
            "(uint16 digital numbers or float linear power)"
        )
    if pd.api.types.is_integer_dtype(raw.dtype):
        return
    values = raw[np.isfinite(raw.to_numpy(dtype=np.float64)) & (raw != 0)]
    negative = (values < 0).groupby(level=0).mean()
    bad = negative.index[negative.to_numpy() > 0.5].to_numpy()
    if bad.size:
        raise InputError(
            f"{where}: column {col!r} is mostly negative on {_dates_text(bad, np.arange(bad.size))}: values look "
            "like dB already; float columns are read as linear power (uint16 columns as digital numbers)"
        )


def open_table(
    path: str | Path,
    *,
    start: str | None = None,
    end: str | None = None,
    chunk: int = CHUNK,
) -> xr.Dataset:
    """A long Parquet table, one row per (`sample_id`, `timestamp`) -> cube `(time, sample)`.

    `S1-SIGMA0-VV`/`VH` (or `VV`/`VH`) as uint16 DN become dB (float columns are read as linear
    power); a sample without a row for a date gets NaN. Samples are sorted by `sample_id`.
    Coordinates on `sample`: `label` (`ewoc_code`), `lon`, `lat` when present, and
    `label_name`, `level_2`, `level_3` from `crop_type_class_mappings.csv` when it sits next to
    the table. The table is read into memory: a table of point series is small next to rasters.
    """
    import pyarrow.parquet as pq

    path = storage.location(path)
    where = str(path)
    try:
        with storage.open_input(path) as f:
            columns = pq.read_schema(f).names
    except Exception as exc:  # noqa: BLE001  (pyarrow raises ArrowInvalid, OSError, ...)
        raise InputError(f"{where}: cannot be read as a Parquet table ({_one_line(exc)})") from exc
    for col in ("sample_id", "timestamp"):
        if col not in columns:
            raise InputError(f"{where}: missing column {col!r}")
    bands = {pol: _find_column(columns, pol, where) for pol in BANDS}
    extra = [c for c in ("ewoc_code", "lon", "lat") if c in columns]
    df = pd.read_parquet(str(path), columns=["sample_id", "timestamp", *bands.values(), *extra])
    df["timestamp"] = _table_timestamps(df["timestamp"], where)
    if df["timestamp"].dt.tz is not None:
        df["timestamp"] = df["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None)
    df["sample_id"] = df["sample_id"].astype(str)
    if df.empty:
        raise InputError(f"{where}: the table has no rows")
    dup = df.duplicated(["sample_id", "timestamp"])
    if dup.any():
        row = df[dup].iloc[0]
        raise InputError(f"{where}: duplicated date {str(row['timestamp'])[:10]} for sample {row['sample_id']}")

    series = df.set_index(["timestamp", "sample_id"]).rename_axis(["time", "sample"])
    values = {}
    for pol, col in bands.items():
        raw = series[col]
        _check_band_column(raw, col, where)
        integer = pd.api.types.is_integer_dtype(raw.dtype)
        conv = dn_to_db(raw.to_numpy(dtype=np.float64)) if integer else linear_to_db(raw.to_numpy())
        values[pol] = pd.Series(conv, index=series.index)
    grid = pd.DataFrame(values).to_xarray()  # (time, sample); absent pairs -> NaN
    ds = xr.Dataset(
        {
            pol: (
                ("time", "sample"),
                grid[pol].values.astype(np.float32),
                {"units": "dB", "long_name": f"Sentinel-1 {pol} backscatter"},
            )
            for pol in BANDS
        },
        coords={
            "time": grid["time"].values.astype("datetime64[ns]"),
            "sample": grid["sample"].values.astype(str),
        },
    )
    per_sample = df.groupby("sample_id", sort=True)
    if "ewoc_code" in df:
        n_codes = per_sample["ewoc_code"].nunique()
        if (n_codes > 1).any():
            bad = n_codes[n_codes > 1].index[0]
            raise InputError(f"{where}: sample {bad} has several ewoc_code labels")
        label = per_sample["ewoc_code"].first().reindex(ds["sample"].values)
        ds = ds.assign_coords(label=("sample", label.to_numpy(dtype=np.int64)))
        legend = _legend(path)
        if legend is not None:
            for coord, col in (("label_name", "label_full"), ("level_2", "level_2"), ("level_3", "level_3")):
                names = legend[col].reindex(label.to_numpy()).fillna("").to_numpy(dtype=str)
                ds = ds.assign_coords({coord: ("sample", names)})
    # an integer id per sample (1-based, in `sample` order): per-parcel stages key on integers
    ds = ds.assign_coords(parcel_id=("sample", np.arange(1, ds.sizes["sample"] + 1, dtype=np.int64)))
    for c in ("lon", "lat"):
        if c in df:
            ds = ds.assign_coords({c: ("sample", per_sample[c].first().reindex(ds["sample"].values).to_numpy())})
    if "lon" in ds.coords:
        ds["lon"].attrs = {"units": "degrees_east", "crs": "EPSG:4326"}
        ds["lat"].attrs = {"units": "degrees_north", "crs": "EPSG:4326"}
    ds = select_time(ds.sortby("time"), start, end, where=where)
    return chunk_cube(validate_cube(ds, where=where), chunk)


def can_open(source: storage.Location) -> bool:
    return _suffix(source) in TABLE_SUFFIXES and storage.isfile(source)


def open(sources: Sequence[storage.Location], request: ReadRequest) -> xr.Dataset:
    """The `(time, sample)` cube of the one table of `sources` (`open_table`)."""
    return open_table(sources[0], chunk=request.chunk, start=request.start, end=request.end)


__all__ = ["LEGEND_FILE", "TABLE_SUFFIXES", "can_open", "open", "open_table"]
