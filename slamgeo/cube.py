"""The cube contract of DESIGN.md, in one place.

A cube is an `xarray.Dataset` with float32 dB variables `VV`, `VH` on dims `(time, y, x)`
(gridded) or `(time, sample)` (a table of parcels or points, labels as coordinates), `time`
sorted and unique, the CRS as a CF grid mapping (`spatial_ref`, written by rioxarray) for the
gridded form, NaN for no data, the whole time axis in one chunk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from slamgeo.errors import InputError

BANDS: tuple[str, ...] = ("VV", "VH")
DEFAULT_CHUNK = 512
GRID_DIMS: tuple[str, str] = ("y", "x")
SAMPLE_DIMS: tuple[str] = ("sample",)


def spatial_dims(ds: xr.Dataset | xr.DataArray) -> tuple[str, ...]:
    """The non-time dims of a cube: `("y", "x")` for a grid, `("sample",)` for a table."""
    dims = tuple(d for d in ds.dims if d != "time")
    if set(dims) == set(GRID_DIMS):
        return GRID_DIMS
    if dims == SAMPLE_DIMS:
        return SAMPLE_DIMS
    raise InputError(f"cube dims must be (time, y, x) or (time, sample), found {tuple(ds.dims)}")


def is_gridded(ds: xr.Dataset | xr.DataArray) -> bool:
    return spatial_dims(ds) == GRID_DIMS


def validate_cube(ds: xr.Dataset, *, where: str = "cube", bands: Sequence[str] = BANDS) -> xr.Dataset:
    """Check the contract; raise `InputError` naming what is wrong and where. Returns `ds`."""
    missing = [b for b in bands if b not in ds.data_vars]
    if missing:
        raise InputError(f"{where}: missing band variable(s) {missing}; found {sorted(map(str, ds.data_vars))}")
    if "time" not in ds.dims:
        raise InputError(f"{where}: no 'time' dimension; dims are {tuple(ds.dims)}")
    sdims = spatial_dims(ds)
    for b in bands:
        da = ds[b]
        if da.dims != ("time", *sdims):
            raise InputError(f"{where}: variable {b} has dims {da.dims}, expected {('time', *sdims)}")
        if da.dtype != np.float32:
            raise InputError(f"{where}: variable {b} has dtype {da.dtype}, expected float32 dB")
    t = ds["time"].values
    if not np.issubdtype(t.dtype, np.datetime64):
        raise InputError(f"{where}: time coordinate has dtype {t.dtype}, expected datetime64")
    if t.size == 0:
        raise InputError(f"{where}: the time axis is empty")
    if np.unique(t).size != t.size:
        dup = sorted({str(v)[:10] for v, c in zip(*np.unique(t, return_counts=True)) if c > 1})
        raise InputError(f"{where}: duplicated dates {dup}")
    if np.any(np.diff(t) < np.timedelta64(0, "ns")):
        raise InputError(f"{where}: time coordinate is not sorted")
    if sdims == GRID_DIMS and ds.rio.crs is None:
        raise InputError(f"{where}: no CRS (expected a CF grid mapping 'spatial_ref')")
    return ds


def make_cube(
    bands_db: Mapping[str, np.ndarray],
    time: Sequence | np.ndarray,
    *,
    y: np.ndarray | None = None,
    x: np.ndarray | None = None,
    crs: str | int | None = None,
    sample: np.ndarray | None = None,
    sample_coords: Mapping[str, np.ndarray] | None = None,
    chunk: int = DEFAULT_CHUNK,
    attrs: Mapping | None = None,
) -> xr.Dataset:
    """Build a contract cube from dB arrays `(T, ny, nx)` (grid) or `(T, n)` (with `sample`).

    The result is chunked with the whole time axis in one chunk and spatial tiles of `chunk`.
    """
    time = np.asarray(time, dtype="datetime64[ns]")
    if sample is None:
        if y is None or x is None or crs is None:
            raise ValueError("a gridded cube needs y, x and crs")
        coords: dict = {"time": time, "y": np.asarray(y), "x": np.asarray(x)}
        dims: tuple[str, ...] = ("time", "y", "x")
    else:
        coords = {"time": time, "sample": np.asarray(sample)}
        for k, v in (sample_coords or {}).items():
            coords[k] = ("sample", np.asarray(v))
        dims = ("time", "sample")
    ds = xr.Dataset(
        {b: (dims, np.asarray(a, dtype=np.float32), {"units": "dB", "long_name": f"Sentinel-1 {b} backscatter"})
         for b, a in bands_db.items()},
        coords=coords,
        attrs=dict(attrs or {}),
    )
    if sample is None:
        ds = ds.rio.write_crs(crs)
        ds = ds.rio.write_transform(ds.rio.transform(recalc=True))
    return chunk_cube(ds, chunk)


def chunk_cube(ds: xr.Dataset, chunk: int = DEFAULT_CHUNK) -> xr.Dataset:
    """Rechunk to the contract: the whole time axis in one chunk, spatial tiles of `chunk`."""
    sdims = spatial_dims(ds)
    return ds.chunk({"time": -1, **{d: chunk for d in sdims}})


def open_cube(path: str, *, bands: Sequence[str] = BANDS, **storage_options) -> xr.Dataset:
    """Open a cube Zarr store lazily (with its CRS coordinate) and check the contract."""
    try:
        ds = xr.open_zarr(path, decode_coords="all", storage_options=storage_options or None)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no Zarr store here ({exc})") from exc
    return validate_cube(ds, where=str(path), bands=bands)


def db_to_linear(db: np.ndarray) -> np.ndarray:
    """dB -> linear power."""
    return np.power(10.0, np.asarray(db) / 10.0)


def linear_to_db(power: np.ndarray) -> np.ndarray:
    """Linear power -> float32 dB; zero, negative and non-finite power become NaN."""
    p = np.asarray(power, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where((p > 0) & np.isfinite(p), 10.0 * np.log10(np.where(p > 0, p, 1.0)), np.nan)
    return out.astype(np.float32)


__all__ = [
    "BANDS",
    "DEFAULT_CHUNK",
    "chunk_cube",
    "db_to_linear",
    "is_gridded",
    "linear_to_db",
    "make_cube",
    "open_cube",
    "spatial_dims",
    "validate_cube",
]
