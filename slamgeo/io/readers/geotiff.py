"""GeoTIFF reader: per-date GeoTIFFs (files, or folders of `*.tif`) -> the cube in dB.

Two bands described "VV" and "VH", or single-band files per polarisation (`..._VV.tif` /
`..._VH.tif`), linear power; the date comes from the tags or the file name (`tiff_date`).
Headers are read at once (dates, bands and grids are checked across files), pixels lazily with
Dask. The helpers here (`describe_tiff`, `group_dates`, `check_same_grid`, `stack_dates`) also
read the assets of a STAC ItemCollection (`slamgeo.io.readers.stac`).

GeoTIFF URLs are handed to GDAL as they are (rasterio reads `s3://` as `/vsis3/`), with GDAL's
endpoint settings derived from `AWS_ENDPOINT_URL` when GDAL's own are not set
(`storage.gdal_s3_options`); an fsspec URL folder of GeoTIFFs is listed with fsspec.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import rasterio
import rasterio.errors
import rioxarray
import xarray as xr

from slamgeo.errors import InputError
from slamgeo.io import storage
from slamgeo.io.cube import BANDS, DEFAULT_CHUNK, chunk_cube, linear_to_db, validate_cube
from slamgeo.io.readers._common import _lazy, _one_line, _suffix, _to_datetime64, parse_time_window

TIFF_SUFFIXES = (".tif", ".tiff")


# --- dates ---------------------------------------------------------------------------------------


_DATE8 = re.compile(r"(?<!\d)(\d{8})(?!\d)")


def tiff_date(path: str | Path, tags: dict[str, str]) -> np.datetime64:
    """Acquisition date of a GeoTIFF: tag ACQUISITION_DATE, else TIFFTAG_DATETIME
    ("YYYY:MM:DD HH:MM:SS"), else the 8-digit YYYYMMDD in the file name."""
    name = Path(urlparse(str(path)).path).name
    if "ACQUISITION_DATE" in tags:
        value = tags["ACQUISITION_DATE"]
        try:
            return _to_datetime64(pd.Timestamp(value))
        except (ValueError, TypeError) as exc:
            raise InputError(f"{path}: tag ACQUISITION_DATE={value!r} is not a date") from exc
    if "TIFFTAG_DATETIME" in tags:
        value = tags["TIFFTAG_DATETIME"]
        try:
            return _to_datetime64(dt.datetime.strptime(value.strip(), "%Y:%m:%d %H:%M:%S"))
        except ValueError as exc:
            raise InputError(f"{path}: tag TIFFTAG_DATETIME={value!r} is not 'YYYY:MM:DD HH:MM:SS'") from exc
    found = _DATE8.findall(name)
    if len(found) != 1:
        raise InputError(
            f"{path}: no acquisition date (no ACQUISITION_DATE or TIFFTAG_DATETIME tag, and "
            f"{'no' if not found else 'more than one'} YYYYMMDD date in the file name)"
        )
    try:
        return _to_datetime64(dt.datetime.strptime(found[0], "%Y%m%d"))
    except ValueError as exc:
        raise InputError(f"{path}: {found[0]} in the file name is not a valid YYYYMMDD date") from exc


# --- rasters (GeoTIFF files and STAC assets) -----------------------------------------------------


@dataclass(frozen=True)
class RasterInfo:
    """What one GeoTIFF holds: its bands by polarisation (1-based band index) and its grid."""

    path: str
    time: np.datetime64
    bands: dict[str, int]
    crs: rasterio.crs.CRS
    transform: rasterio.Affine
    shape: tuple[int, int]  # (height, width) in pixels
    where: str = ""  # the item or file that named this raster, for messages

    @property
    def label(self) -> str:
        return self.where or self.path


@dataclass
class _Date:
    time: np.datetime64
    layers: dict[str, tuple[RasterInfo, int]] = field(default_factory=dict)


_POL_IN_NAME = re.compile(r"(?:^|[_\-.])(VV|VH)(?:[_\-.]|$)", re.IGNORECASE)


def describe_tiff(path: str, *, time: np.datetime64 | None = None, where: str = "") -> RasterInfo:
    """Read a GeoTIFF's header (not its pixels): polarisation of each band, date and grid.

    Bands are named by their descriptions ("VV", "VH"); a single-band file without description
    takes its polarisation from the file name (`..._VV.tif`). `time` overrides the file's date
    (STAC items carry their own). Raises `InputError` naming the file.
    """
    label = where or path
    try:
        with rasterio.Env(**storage.gdal_s3_options()), rasterio.open(path) as src:
            descriptions = src.descriptions
            tags = src.tags()
            crs, transform, shape, count = src.crs, src.transform, src.shape, src.count
    except rasterio.errors.RasterioError as exc:
        raise InputError(f"{label}: cannot be read as a GeoTIFF ({_one_line(exc)})") from exc
    bands: dict[str, int] = {}
    for i, d in enumerate(descriptions, start=1):
        pol = (d or "").strip().upper()
        if pol in BANDS:
            if pol in bands:
                raise InputError(f"{label}: bands {bands[pol]} and {i} are both described {pol!r}")
            bands[pol] = i
    if not bands and count == 1:
        m = _POL_IN_NAME.findall(Path(urlparse(path).path).stem)
        if len(m) == 1:
            bands[m[0].upper()] = 1
    if not bands:
        raise InputError(
            f"{label}: no band described as VV or VH (band descriptions {list(descriptions)}); "
            "expected band descriptions 'VV'/'VH' or a single-band file named ..._VV.tif / ..._VH.tif"
        )
    if crs is None:
        raise InputError(f"{label}: no CRS; expected a projected CRS such as EPSG:32630")
    if transform.b != 0 or transform.d != 0:
        raise InputError(f"{label}: rotated grid (transform {tuple(transform)[:6]}) is not supported")
    return RasterInfo(
        path=path,
        time=time if time is not None else tiff_date(path, tags),
        bands=bands,
        crs=crs,
        transform=transform,
        shape=shape,
        where=where,
    )


def _crs_name(crs: rasterio.crs.CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else " ".join(crs.to_wkt().split())[:80]


def check_same_grid(infos: Sequence[RasterInfo]) -> None:
    """Every raster on the grid of the first: same CRS, pixel size, origin and size."""
    ref = infos[0]
    rres = (ref.transform.a, ref.transform.e)
    rorg = (ref.transform.c, ref.transform.f)
    for info in infos[1:]:
        if info.crs != ref.crs:
            raise InputError(
                f"{info.label}: CRS {_crs_name(info.crs)} differs from {_crs_name(ref.crs)} of {ref.label}"
            )
        res = (info.transform.a, info.transform.e)
        if not np.allclose(res, rres, rtol=1e-9, atol=0):
            raise InputError(f"{info.label}: pixel size {res} differs from {rres} of {ref.label}")
        org = (info.transform.c, info.transform.f)
        if not np.allclose(org, rorg, rtol=0, atol=1e-6 * abs(rres[0])):
            raise InputError(f"{info.label}: grid origin {org} differs from {rorg} of {ref.label}")
        if info.shape != ref.shape:
            raise InputError(
                f"{info.label}: grid size {info.shape[1]}x{info.shape[0]} (width x height) differs from "
                f"{ref.shape[1]}x{ref.shape[0]} of {ref.label}"
            )


def group_dates(infos: Sequence[RasterInfo]) -> list[_Date]:
    """One entry per date with both polarisations, sorted by time. Raises `InputError` on a
    date given twice for one polarisation, or a date missing a polarisation."""
    dates: dict[np.datetime64, _Date] = {}
    for info in infos:
        entry = dates.setdefault(info.time, _Date(info.time))
        for pol, band in info.bands.items():
            if pol in entry.layers:
                other = entry.layers[pol][0]
                raise InputError(f"{info.label}: duplicated date {str(info.time)[:10]} ({pol} also in {other.label})")
            entry.layers[pol] = (info, band)
    for entry in dates.values():
        missing = [b for b in BANDS if b not in entry.layers]
        if missing:
            files = sorted({i.label for i, _ in entry.layers.values()})
            raise InputError(
                f"{', '.join(files)}: missing polarisation {'/'.join(missing)} for date "
                f"{str(entry.time)[:10]} (found {sorted(entry.layers)})"
            )
    return [dates[t] for t in sorted(dates)]


def _filter_dates(dates: list[_Date], start: str | None, end: str | None, where: str) -> list[_Date]:
    if start is None and end is None:
        return dates
    parse_time_window(start, end)
    idx = pd.Series(range(len(dates)), index=pd.DatetimeIndex([d.time for d in dates]))
    keep = idx.loc[start:end].to_numpy()
    if keep.size == 0:
        raise InputError(
            f"{where}: no date between start={start} and end={end}; the input covers "
            f"{str(dates[0].time)[:10]} .. {str(dates[-1].time)[:10]}"
        )
    return [dates[i] for i in keep]


def _open_band(info: RasterInfo, band: int, chunk: int) -> xr.DataArray:
    """One band of one GeoTIFF as a lazy `(y, x)` float32 dB array; no data -> NaN."""
    # lock=False: each read opens its own handle, so Dask threads read in parallel.
    da = rioxarray.open_rasterio(info.path, chunks={"band": 1, "y": chunk, "x": chunk}, masked=True, lock=False)
    assert isinstance(da, xr.DataArray)  # one GeoTIFF: one array
    da = da.isel(band=band - 1, drop=True)
    return _lazy(linear_to_db, da)


def stack_dates(dates: Sequence[_Date], *, chunk: int = DEFAULT_CHUNK) -> xr.Dataset:
    """Lazy contract cube from per-date rasters already checked to share one grid."""
    time = pd.DatetimeIndex([d.time for d in dates], name="time")
    variables = {}
    for pol in BANDS:
        layers = [_open_band(info, band, chunk) for info, band in (d.layers[pol] for d in dates)]
        # The grids were checked equal: take coordinates from the first, compare nothing more.
        da = xr.concat(layers, dim=time, coords="minimal", compat="override", join="override")
        da.attrs = {"units": "dB", "long_name": f"Sentinel-1 {pol} backscatter"}
        variables[pol] = da
    ds = xr.Dataset(variables)
    ref = dates[0].layers[BANDS[0]][0]
    ds = ds.rio.write_crs(ref.crs).rio.write_transform(ref.transform)
    return chunk_cube(ds, chunk)


def _expand_tiffs(paths: Sequence[storage.Location]) -> list[storage.Location]:
    files: list[storage.Location] = []
    for p in paths:
        if storage.isdir(p):
            found = [q for q in storage.glob(p, "*") if _suffix(q) in TIFF_SUFFIXES and storage.isfile(q)]
            if not found:
                raise InputError(f"{p}: no GeoTIFF (*.tif, *.tiff) in this folder")
            files.extend(found)
        else:
            files.append(p)
    seen: set = set()
    for f in files:
        key = f if storage.is_url(f) else Path(f).resolve()
        if key in seen:
            raise InputError(f"{f}: given twice")
        seen.add(key)
    return files


def open_geotiffs(
    paths: Sequence[str | Path],
    *,
    chunk: int = DEFAULT_CHUNK,
    start: str | None = None,
    end: str | None = None,
) -> xr.Dataset:
    """Per-date GeoTIFFs (files or folders of `*.tif`) -> lazy cube `(time, y, x)` in dB.

    Reads headers now (dates, bands, grids are checked across files) and pixels lazily.
    """
    files = _expand_tiffs([storage.location(p) for p in paths])
    if not files:
        raise InputError("no GeoTIFF given")
    infos = [describe_tiff(str(f)) for f in files]
    dates = group_dates(infos)
    check_same_grid([i for d in dates for i, _ in d.layers.values()])
    dates = _filter_dates(dates, start, end, str(paths[0]))
    return validate_cube(stack_dates(dates, chunk=chunk), where=str(paths[0]))


__all__ = [
    "TIFF_SUFFIXES",
    "RasterInfo",
    "check_same_grid",
    "describe_tiff",
    "group_dates",
    "open_geotiffs",
    "stack_dates",
    "tiff_date",
]
