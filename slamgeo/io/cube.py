"""The cube contract of docs/design.md, in one place.

A cube is an `xarray.Dataset` with float32 dB variables `VV`, `VH` on dims `(time, y, x)`
(gridded) or `(time, sample)` (a table of parcels or points, labels as coordinates), `time`
sorted and unique, the CRS as a CF grid mapping (`spatial_ref`, written by rioxarray) for the
gridded form, NaN for no data, the whole time axis in one chunk.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, cast

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

from slamgeo.errors import ConfigError, InputError
from slamgeo.schema import BANDS, CHUNK, COMPLETE_ATTR, GRID_DIMS, SAMPLE_DIMS, ZARR_FORMAT, ZARR_FORMATS


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
    chunk: int = CHUNK,
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
        {
            b: (dims, np.asarray(a, dtype=np.float32), {"units": "dB", "long_name": f"Sentinel-1 {b} backscatter"})
            for b, a in bands_db.items()
        },
        coords=coords,
        attrs=dict(attrs or {}),
    )
    if sample is None:
        # inplace: the default (copy) deep-copies the data arrays, twice
        ds.rio.write_crs(crs, inplace=True)
        ds.rio.write_transform(ds.rio.transform(recalc=True), inplace=True)
    return chunk_cube(ds, chunk)


def chunk_cube(ds: xr.Dataset, chunk: int = CHUNK) -> xr.Dataset:
    """Rechunk to the contract: the whole time axis in one chunk, spatial tiles of `chunk`."""
    sdims = spatial_dims(ds)
    return ds.chunk({"time": -1, **{d: chunk for d in sdims}})


def open_cube(path: str | Path, *, bands: Sequence[str] = BANDS, **storage_options) -> xr.Dataset:
    """Open a cube Zarr store (a local path or an fsspec URL) lazily, with its CRS coordinate,
    and check the contract; a store marked incomplete (`slamgeo_complete` false) is refused."""
    try:
        ds = xr.open_zarr(str(path), decode_coords="all", storage_options=storage_options or None)
    except FileNotFoundError as exc:  # zarr's GroupNotFoundError is one
        raise InputError(f"{path}: no Zarr store here ({exc})") from exc
    if COMPLETE_ATTR in ds.attrs and not ds.attrs[COMPLETE_ATTR]:
        raise InputError(f"{path}: incomplete cube ({COMPLETE_ATTR} is false); run slamgeo ingest again")
    ds = load_coords(ds)
    return validate_cube(ds, where=str(path), bands=bands)


def db_to_linear(db: np.ndarray) -> np.ndarray:
    """dB -> linear power."""
    return np.power(10.0, np.asarray(db) / 10.0)


def linear_to_db(power: np.ndarray, *, nodata: float | None = None) -> np.ndarray:
    """Linear power -> float32 dB (`10 log10` in float64, rounded once to float32); zero,
    negative and non-finite power become NaN, and so does a positive no-data value `nodata`
    (where the input equals it in its own type; a non-positive one already does).

    An array of two or more dims `(T, ...)` is converted one slice of the first axis (a date)
    at a time through float64 scratch buffers of one slice that are reused: besides the output
    nothing of the block's size is allocated, so no fresh pages are faulted in per date (a new
    float64 temporary per date costs more than the logarithm)."""
    p = np.asarray(power)
    masked = nodata is not None and math.isfinite(nodata) and nodata > 0
    if p.ndim < 2 or p.size == 0 or p.dtype.kind != "f" or p.dtype.itemsize > 8:
        out = _linear_to_db(p)
        if masked:
            out[np.asarray(p == np.asarray(nodata).astype(p.dtype))] = np.nan
        return out
    out = np.empty(p.shape, np.float32)
    work = np.empty(p.shape[1:], np.float64)
    bad = np.empty(p.shape[1:], bool)
    hit = np.empty(p.shape[1:], bool) if masked else None
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for i in range(p.shape[0]):
            # float32/float64 -> float64 is exact, so log10 computes what it would on p.astype(float64)
            np.log10(p[i], out=work, dtype=np.float64)
            np.multiply(work, 10.0, out=out[i], casting="same_kind")  # in float64, then one rounding
            # valid power (> 0, finite) gives a finite dB value; 0 gives -inf, negative and NaN
            # give NaN, +inf gives +inf: the non-finite results are the invalid pixels
            np.isfinite(out[i], out=bad)
            np.logical_not(bad, out=bad)
            if hit is not None:
                np.equal(p[i], p.dtype.type(nodata), out=hit)  # as the reader wrote it, in the band's type
                np.logical_or(bad, hit, out=bad)
            np.copyto(out[i], np.float32(np.nan), where=bad)
    return out


def _linear_to_db(power: np.ndarray) -> np.ndarray:
    """`linear_to_db`'s formula on a whole array at once (any dtype, any number of dims)."""
    p = np.asarray(power, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where((p > 0) & np.isfinite(p), 10.0 * np.log10(np.where(p > 0, p, 1.0)), np.nan)
    return out.astype(np.float32)


# --- writing -------------------------------------------------------------------------------


def is_complete(path: str | Path) -> bool:
    """True if the Zarr store at `path` (a local path or an fsspec URL) was finished: its root
    attribute `slamgeo_complete` is true. A store without it, or with it false, is incomplete."""
    import zarr

    try:
        return bool(zarr.open_group(str(path), mode="r").attrs.get(COMPLETE_ATTR, False))
    except (FileNotFoundError, ValueError, KeyError, zarr.errors.GroupNotFoundError):
        return False


def _for_zarr(ds: xr.Dataset) -> xr.Dataset:
    """Drop encodings inherited from the source (NetCDF compression, GeoTIFF dtype, ...) and
    set Zarr chunks equal to the Dask chunks; band variables keep their CF grid mapping."""
    gridded = is_gridded(ds)
    # Fixed-width unicode has no Zarr format 3 data type; variable-length strings do (both
    # formats). String coordinates are labels (1-D, small): load them so none is a Dask object array.
    strings = {k: c.compute().astype(object) for k, c in ds.coords.items() if c.dtype.kind == "U"}
    ds = ds.assign_coords(strings).copy()
    for name, var in ds.variables.items():
        enc: dict = {}
        if var.chunks is not None:
            enc["chunks"] = tuple(c[0] for c in var.chunks)
        if gridded and name in ds.data_vars:
            # GDAL and rioxarray find the CRS through this attribute; losing it loses the CRS.
            enc["grid_mapping"] = "spatial_ref"
            var.attrs.pop("grid_mapping", None)
        var.encoding = enc
    return ds


def check_zarr_format(zarr_format: object, *, error: type[Exception] = ConfigError) -> None:
    """Raise `error` unless `zarr_format` is a Zarr format slamgeo writes (`ZARR_FORMATS`)."""
    if zarr_format not in ZARR_FORMATS:
        raise error(f"zarr_format must be {' or '.join(map(str, ZARR_FORMATS))}, found {zarr_format!r}")


def write_cube(
    ds: xr.Dataset,
    out: str | Path,
    *,
    zarr_format: int = ZARR_FORMAT,
    overwrite: bool = False,
    progress: bool = True,
    inputs: Sequence[str | Path] = (),
    check: Callable[[xr.Dataset], None] | None = None,
) -> str | Path:
    """Write a contract cube to the Zarr store `out` (a local path or an fsspec URL), chunk by
    chunk; the store is marked complete (root attribute `slamgeo_complete = True`, consolidated
    metadata rewritten) only after every chunk is written and `check` (called with the written
    store, opened lazily) has passed.

    `out` must be absent, an empty folder, or (with `overwrite`) a slamgeo cube store that is
    none of `inputs` and holds nothing else (`slamgeo.io.storage.claim_output`).

    Local path: the store is written to a sibling `<out>.tmp-<pid>-<random>`, marked complete,
    then renamed to `out`; an existing `out` is replaced only once the new store is complete,
    and on any error the temporary store is removed (temporaries of killed runs are removed by
    the next write). Object storage has no rename: the store is written in place with
    `slamgeo_complete = False` and marked complete last, so an interrupted write leaves a store
    that `is_complete` and `open_cube` refuse, and an existing `out` (with `overwrite`) is
    removed before the new one is written. Memory is bounded by a few chunks per Dask thread
    (`to_zarr(compute=True)` streams the graph). Returns `out` (a `Path`, or the URL).
    """
    from slamgeo.io import storage

    check_zarr_format(zarr_format)
    out = storage.location(out)
    storage.claim_output(out, storage.CUBE, overwrite=overwrite, inputs=inputs)
    validate_cube(ds, where=str(out))
    ds = _for_zarr(ds)
    ds.attrs[COMPLETE_ATTR] = False
    ds.attrs.update(storage.stamp_attrs(storage.CUBE))  # slamgeo's stamp, from the first write on
    if storage.is_local(out):
        local = out if isinstance(out, Path) else Path(storage.filesystem(out)[1])
        storage.remove_stale_temporaries(local, storage.CUBE)
        _write_local(ds, local, zarr_format, progress, check)
        return out
    storage.remove(out)  # stale chunks of an older store would outlive its metadata
    _write_store(ds, str(out), zarr_format, progress, check)
    return out


def _write_store(
    ds: xr.Dataset, store: str, zarr_format: int, progress: bool, check: Callable[[xr.Dataset], None] | None = None
) -> None:
    """Write every chunk of `ds` to a new store, run `check` on it, then mark it complete."""
    from slamgeo.progress import dask_progress

    with warnings.catch_warnings():
        # Consolidated metadata is a zarr-python extension for format 3; it lets readers open
        # the store without listing it, and readers that ignore it still work.
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        with _own_thread_pool(ds), dask_progress("write cube", enabled=progress):
            ds.to_zarr(store, mode="w-", zarr_format=zarr_format, consolidated=True, compute=True)
        if check is not None:
            check(xr.open_zarr(store, decode_coords="all"))
        _mark_complete(store, zarr_format)


def _write_local(
    ds: xr.Dataset, out: Path, zarr_format: int, progress: bool, check: Callable[[xr.Dataset], None] | None = None
) -> None:
    """`_write_store` into a temporary sibling of `out`, renamed into place once complete."""
    import shutil

    from slamgeo.io import storage

    storage.makedirs(out.parent)
    tmp = out.with_name(storage.temporary_name(out, "tmp"))
    old = out.with_name(storage.temporary_name(out, "old"))
    try:
        _write_store(ds, str(tmp), zarr_format, progress, check)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _own_thread_pool(ds: xr.Dataset):
    """Run Dask's threaded scheduler on a pool of our own, shut down (waiting for the tasks in
    flight) on exit. When one chunk fails, Dask raises at once while other threads are still
    writing chunks; waiting for them lets the temporary store be removed for good. Under a
    distributed client (or another scheduler) this does nothing."""
    from concurrent.futures import ThreadPoolExecutor

    import dask
    import dask.threaded
    from dask.base import get_scheduler

    if get_scheduler(collections=[ds]) is not dask.threaded.get:
        yield
        return
    with ThreadPoolExecutor(dask.system.CPU_COUNT) as pool, dask.config.set(pool=pool):
        yield


def _mark_complete(path: str | Path, zarr_format: int) -> None:
    import zarr

    fmt = cast(Literal[2, 3], zarr_format)  # checked by `write_cube`
    group = zarr.open_group(str(path), mode="r+", zarr_format=fmt)
    group.attrs[COMPLETE_ATTR] = True
    zarr.consolidate_metadata(str(path), zarr_format=fmt)  # keep it in step


def open_results(path: str | Path, *, require_complete: bool = True) -> xr.Dataset:
    """Open a results store (written by `slamgeo.jobs.explain`) lazily, with its CRS coordinate;
    refuse one whose explain run has not completed."""
    try:
        ds = xr.open_zarr(str(path), decode_coords="all")
    except (FileNotFoundError, KeyError) as exc:  # zarr's GroupNotFoundError is a FileNotFoundError
        raise InputError(f"{path}: no results store here ({exc})") from exc
    if require_complete and not ds.attrs.get(COMPLETE_ATTR, False):
        raise InputError(f"{path}: the explain run that writes it has not completed; run explain again to resume")
    return load_coords(ds)


def load_coords(ds: xr.Dataset) -> xr.Dataset:
    """Load the (small, at most 1-D) coordinates a Zarr store gives as Dask arrays, such as a
    table cube's labels: stored in one chunk, they would not line up with the data's chunks."""
    lazy = {k: c.load() for k, c in ds.coords.items() if c.chunks is not None and c.ndim <= 1}
    return ds.assign_coords(lazy) if lazy else ds


__all__ = [
    "load_coords",
    "open_results",
    "BANDS",
    "COMPLETE_ATTR",
    "check_zarr_format",
    "chunk_cube",
    "db_to_linear",
    "is_complete",
    "is_gridded",
    "linear_to_db",
    "make_cube",
    "open_cube",
    "spatial_dims",
    "validate_cube",
    "write_cube",
]
