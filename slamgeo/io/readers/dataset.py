"""The reader of a NetCDF file or Zarr store holding a cube (kind `cube`) -> the cube in dB.

openEO names (`S1-SIGMA0-VV`/`VH`, dim `t`, grid mapping `crs`) or `VV`/`VH` and `time`; values as
uint16 digital numbers (the WorldCereal/openEO encoding `20*log10(DN) - 83`), linear power, or dB
(`units: dB`). Read lazily with Dask. A Zarr store is read through fsspec; a NetCDF URL is
downloaded once (fsspec's simplecache), the netCDF4 library reading local files only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import fsspec
import numpy as np
import xarray as xr

from slamgeo.errors import InputError
from slamgeo.io import storage
from slamgeo.io.cube import BANDS, COMPLETE_ATTR, chunk_cube, is_complete, linear_to_db, validate_cube
from slamgeo.io.readers._common import BAND_ALIASES, _lazy, _one_line, _suffix, dn_to_db, select_time
from slamgeo.schema import CHUNK

if TYPE_CHECKING:
    from slamgeo.io.readers import ReadRequest

SUMMARY = "a NetCDF file (.nc) or Zarr store (.zarr) holding a cube"
DATASET_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".h5", ".zarr")


def _is_zarr_dir(p: storage.Location) -> bool:
    return storage.isdir(p) and (
        _suffix(p) == ".zarr" or any(storage.exists(storage.join(p, m)) for m in (".zgroup", ".zmetadata", "zarr.json"))
    )


def _find_band(ds: xr.Dataset, pol: str, where: str) -> str:
    for name in BAND_ALIASES[pol]:
        if name in ds.data_vars:
            return name
    raise InputError(
        f"{where}: missing polarisation {pol} (looked for variables {list(BAND_ALIASES[pol])}; "
        f"found {sorted(map(str, ds.data_vars))})"
    )


def _band_to_db(da: xr.DataArray) -> xr.DataArray:
    """dB from whatever the source holds: `units` dB as is; integers stored without
    scale_factor/add_offset as digital numbers (the WorldCereal/openEO uint16 encoding, also
    when a _FillValue made xarray decode them to float); otherwise linear power."""
    units = str(da.attrs.get("units", "")).strip().lower()
    if units == "db":
        return da.astype(np.float32)
    stored = np.dtype(da.encoding.get("dtype", da.dtype))
    packed = "scale_factor" in da.encoding or "add_offset" in da.encoding  # decoded to physical values
    if np.issubdtype(da.dtype, np.integer) or (np.issubdtype(stored, np.integer) and not packed):
        return _lazy(dn_to_db, da)
    return _lazy(linear_to_db, da)


def open_dataset_cube(
    path: str | Path,
    *,
    chunk: int = CHUNK,
    start: str | None = None,
    end: str | None = None,
) -> xr.Dataset:
    """A NetCDF file or Zarr store holding a cube -> lazy contract cube in dB.

    Maps openEO names (`S1-SIGMA0-VV`/`VH`, dim `t`, grid mapping `crs`) to the contract,
    converts uint16 DN (`20*log10(DN) - 83`, 0 and 65535 no data) or linear power to dB, keeps
    data already in dB (`units: dB`) and keeps the CRS as a `spatial_ref` grid mapping.
    """
    path = storage.location(path)
    where = str(path)
    try:
        if _is_zarr_dir(path):
            if any(storage.exists(storage.join(path, m)) for m in (".zgroup", "zarr.json")):
                import zarr

                attrs = zarr.open_group(str(path), mode="r").attrs
                if COMPLETE_ATTR in attrs and not is_complete(path):
                    raise InputError(f"{where}: this cube was not written completely ({COMPLETE_ATTR} is not set)")
            src = xr.open_zarr(str(path), decode_coords="all", chunks={})
        elif storage.is_url(path):
            # The netCDF4 library reads local files only: fsspec's simplecache downloads the file
            # once (to a temporary folder removed at exit) and gives its local path.
            local = fsspec.open_local(f"simplecache::{path}")
            src = xr.open_dataset(local, decode_coords="all", chunks={})
        else:
            src = xr.open_dataset(path, decode_coords="all", chunks={})
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001  (netCDF4, h5py and zarr raise many kinds)
        raise InputError(f"{where}: cannot be opened as a NetCDF or Zarr cube ({_one_line(exc)})") from exc
    if "t" in src.dims and "time" not in src.dims:
        src = src.rename({"t": "time"})
    if "time" not in src.dims:
        raise InputError(f"{where}: no time dimension ('time' or 't'); dims are {tuple(src.dims)}")
    names = {pol: _find_band(src, pol, where) for pol in BANDS}
    variables = {}
    for pol, name in names.items():
        da = src[name]
        da = _band_to_db(da)
        da.attrs = {"units": "dB", "long_name": f"Sentinel-1 {pol} backscatter"}
        variables[pol] = da
    sdims = tuple(d for d in variables[BANDS[0]].dims if d != "time")
    sample_form = sdims == ("sample",)
    if not sample_form:
        if set(sdims) != {"y", "x"}:
            raise InputError(f"{where}: expected dims (time, y, x) or (time, sample), found {variables['VV'].dims}")
        variables = {k: v.transpose("time", "y", "x") for k, v in variables.items()}
    crs = None if sample_form else src[names["VV"]].rio.crs
    keep = [c for c in src.coords if c not in ("crs", "spatial_ref")]
    ds = xr.Dataset({k: v.drop_vars([c for c in v.coords if c not in keep]) for k, v in variables.items()})
    if not sample_form:
        if crs is None:
            raise InputError(f"{where}: no CRS found (no CF grid_mapping variable with crs_wkt)")
        ds = ds.rio.write_crs(crs)
        ds = ds.rio.write_transform(ds.rio.transform(recalc=True))
    ds = ds.sortby("time")
    validate_cube(ds, where=where)
    ds = select_time(ds, start, end, where=where)
    return chunk_cube(ds, chunk)


def can_open(source: storage.Location) -> bool:
    return _is_zarr_dir(source) or (_suffix(source) in DATASET_SUFFIXES and storage.isfile(source))


def open(sources: Sequence[storage.Location], request: ReadRequest) -> xr.Dataset:
    """The cube of the one NetCDF file or Zarr store of `sources` (`open_dataset_cube`)."""
    return open_dataset_cube(sources[0], chunk=request.chunk, start=request.start, end=request.end)


__all__ = ["DATASET_SUFFIXES", "can_open", "open", "open_dataset_cube"]
