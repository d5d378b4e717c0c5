"""Ingest: Sentinel-1 inputs -> the cube of docs/design.md (float32 dB `VV`, `VH`; CF grid mapping).

Four kinds of input, detected from the paths:

- GeoTIFFs, one per date (files, or folders of `*.tif`): two bands described "VV" and "VH", or
  single-band files per polarisation (`..._VV.tif` / `..._VH.tif`), linear power;
- a STAC ItemCollection JSON, one Item per date, whose GeoTIFF/COG assets are read as above;
- a NetCDF file or Zarr store holding a cube (openEO names `S1-SIGMA0-VV`/`VH` and dim `t`, or
  `VV`/`VH` and `time`), as uint16 digital numbers, linear power, or dB (`units: dB`);
- a long Parquet table of per-parcel or per-point series (WorldCereal style), which becomes a
  `(time, sample)` cube with the labels as coordinates.

Rasters are read lazily with Dask and written chunk by chunk (`slamgeo.io.cube.write_cube`), so
a stack larger than memory ingests in bounded memory. Inputs are only ever opened for reading.

Inputs and the output may be fsspec URLs (`s3://bucket/cube.zarr`): Zarr stores and Parquet
tables are read through fsspec, a NetCDF file is downloaded once (fsspec's simplecache).
GeoTIFF and STAC URLs are handed to GDAL as they are (rasterio reads `s3://` as `/vsis3/`),
with GDAL's endpoint settings derived from `AWS_ENDPOINT_URL` when GDAL's own are not set
(`storage.gdal_s3_options`); an fsspec URL folder of GeoTIFFs is listed with fsspec.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import dask
import fsspec
import numpy as np
import pandas as pd
import rasterio
import rasterio.errors
import rasterio.windows
import rioxarray
import xarray as xr

from slamgeo.errors import ConfigError, InputError, OutputError, SlamgeoError
from slamgeo.io import storage
from slamgeo.io.cube import (
    BANDS,
    COMPLETE_ATTR,
    DEFAULT_CHUNK,
    chunk_cube,
    is_complete,
    linear_to_db,
    validate_cube,
    write_cube,
)

SourceKind = Literal["geotiff", "stac", "dataset", "table"]

TIFF_SUFFIXES = (".tif", ".tiff")
STAC_SUFFIXES = (".json", ".geojson")
DATASET_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".h5", ".zarr")
TABLE_SUFFIXES = (".parquet", ".pq", ".geoparquet")
DN_NODATA = (0, 65535)  # WorldCereal / openEO uint16 encoding: dB = 20*log10(DN) - 83
LEGEND_FILE = "crop_type_class_mappings.csv"
GDAL_CACHE_BYTES = 64 * 2**20  # GDAL block cache while ingesting (bytes)
# Input variable / column names for each band, checked in order.
BAND_ALIASES: dict[str, tuple[str, ...]] = {
    "VV": ("VV", "S1-SIGMA0-VV", "SIGMA0_VV", "vv"),
    "VH": ("VH", "S1-SIGMA0-VH", "SIGMA0_VH", "vh"),
}


# --- conversions -------------------------------------------------------------------------------


def dn_to_db(dn: np.ndarray) -> np.ndarray:
    """uint16 digital numbers -> float32 dB, `20*log10(DN) - 83`; 0, 65535 and NaN become NaN."""
    d = np.asarray(dn, dtype=np.float64)
    valid = np.isfinite(d) & (d > DN_NODATA[0]) & (d < DN_NODATA[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(valid, 20.0 * np.log10(np.where(valid, d, 1.0)) - 83.0, np.nan)
    return out.astype(np.float32)


def _lazy(func, da: xr.DataArray) -> xr.DataArray:
    """Apply a NumPy conversion block by block (lazily if `da` is a Dask array)."""
    out = xr.apply_ufunc(func, da, dask="parallelized", output_dtypes=[np.float32])
    out.attrs = {"units": "dB"}
    return out


# --- source detection --------------------------------------------------------------------------


def _suffix(p: storage.Location) -> str:
    return Path(storage.name(p)).suffix.lower()


def _is_zarr_dir(p: storage.Location) -> bool:
    return storage.isdir(p) and (
        _suffix(p) == ".zarr" or any(storage.exists(storage.join(p, m)) for m in (".zgroup", ".zmetadata", "zarr.json"))
    )


def _kind_of(p: storage.Location) -> SourceKind:
    if not storage.exists(p):
        raise InputError(f"{p}: no such file or folder")
    if _is_zarr_dir(p):
        return "dataset"
    if storage.isdir(p):
        return "geotiff"
    suffix = _suffix(p)
    for kind, suffixes in (
        ("geotiff", TIFF_SUFFIXES),
        ("stac", STAC_SUFFIXES),
        ("dataset", DATASET_SUFFIXES),
        ("table", TABLE_SUFFIXES),
    ):
        if suffix in suffixes:
            return kind  # type: ignore[return-value]
    raise InputError(
        f"{p}: unrecognised input type {suffix or '(no suffix)'}; expected GeoTIFF (.tif), STAC "
        "ItemCollection (.json), NetCDF (.nc), Zarr (.zarr) or Parquet (.parquet)"
    )


def scene_tiffs(p: str | Path) -> storage.Location | None:
    """The GeoTIFF folder of a `slamgeo synth` output folder (it holds `scene.json` and
    `tiffs/`), or None when `p` is not one. Its other rasters (`truth.tif`) are not backscatter."""
    from slamgeo.io.synth import SCENE_FILES

    p = storage.location(p)
    if not storage.isdir(p) or not storage.exists(storage.join(p, SCENE_FILES["meta"])):
        return None
    tiffs = storage.join(p, SCENE_FILES["tiffs"])
    return tiffs if storage.isdir(tiffs) else None


def detect_source(inputs: Sequence[str | Path]) -> tuple[SourceKind, list[storage.Location]]:
    """Which reader fits `inputs` (local paths or fsspec URLs): any number of GeoTIFF
    files/folders, or exactly one STAC JSON, NetCDF file, Zarr store or Parquet table. A
    `slamgeo synth` output folder stands for its `tiffs/` folder (`scene_tiffs`).
    Returns the kind and the inputs as locations (`Path`, or URL `str`). Raises `InputError`
    naming the bad path."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    paths = [storage.location(p) for p in inputs]
    paths = [scene_tiffs(p) or p for p in paths]
    if not paths:
        raise InputError(
            "no input given: expected GeoTIFF files or folders, a STAC ItemCollection JSON, "
            "a NetCDF or Zarr cube, or a Parquet table"
        )
    kinds = [_kind_of(p) for p in paths]
    if len(paths) > 1:
        odd = next((p for p, k in zip(paths, kinds) if k != "geotiff"), None)
        if odd is not None:
            raise InputError(
                f"{odd}: only GeoTIFFs can be given several at a time; a {_kind_of(odd)} input must be the only input"
            )
    return kinds[0], paths


# --- dates ---------------------------------------------------------------------------------------


def parse_time_window(start: str | None, end: str | None) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """Check `start`/`end` (ISO dates such as 2023-01-01); raise `ConfigError` if unparseable."""
    out = []
    for name, value in (("start", start), ("end", end)):
        if value is None:
            out.append(None)
            continue
        try:
            out.append(pd.Timestamp(value))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{name}={value!r} is not a date (expected YYYY-MM-DD): {exc}") from exc
    if out[0] is not None and out[1] is not None and out[0] > out[1]:
        raise ConfigError(f"start {start} is after end {end}")
    return out[0], out[1]


def select_time(ds: xr.Dataset, start: str | None, end: str | None, *, where: str) -> xr.Dataset:
    """Keep the dates in [start, end], pandas partial-string style: end='2023-12-31' keeps that
    whole day, start='2023' means 2023-01-01. Raises `InputError` when no date remains."""
    parse_time_window(start, end)
    if start is None and end is None:
        return ds
    out = ds.sel(time=slice(start, end))
    if out.sizes["time"] == 0:
        t = ds["time"].values
        raise InputError(
            f"{where}: no date between start={start} and end={end}; the input covers "
            f"{str(t.min())[:10]} .. {str(t.max())[:10]}"
        )
    return out


_DATE8 = re.compile(r"(?<!\d)(\d{8})(?!\d)")


def _to_datetime64(value: dt.datetime | pd.Timestamp) -> np.datetime64:
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return np.datetime64(ts.to_datetime64(), "ns")


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


# --- rasters (GeoTIFF files and STAC assets) ---------------------------------------------------


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


def _one_line(exc: BaseException) -> str:
    """The messages of an exception and its causes on one line (GDAL puts the file name and
    the real problem in the causes of rasterio's "Read failed")."""
    msgs: list[str] = []
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        m = " ".join(str(e).split())
        if m and m not in msgs:
            msgs.append(m)
        e = e.__cause__ or e.__context__
    return "; ".join(msgs)


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


def _resolve_href(href: str, base: storage.Location) -> str:
    """An asset href as rasterio opens it: URLs as they are, relative paths from the JSON's
    folder (a local folder or a URL)."""
    import posixpath

    parsed = urlparse(href)
    if parsed.scheme in ("http", "https", "s3", "gs", "az", "vsicurl") or href.startswith("/vsi"):
        return href
    if parsed.scheme == "file":
        return parsed.path
    if storage.is_url(base):
        scheme, _, rest = str(base).partition("://")
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, href))}"
    p = Path(href)
    return str(p if p.is_absolute() else (Path(base) / p).resolve())


def _raster_assets(item, where: str) -> dict[str, object]:
    """The GeoTIFF assets of an item: `{"VV": asset, "VH": asset}` for per-polarisation assets,
    else `{"": asset}` for one multi-band asset ("backscatter", or the only GeoTIFF)."""
    per_pol = {k.upper(): a for k, a in item.assets.items() if k.upper() in BANDS}
    if per_pol:
        return per_pol
    if "backscatter" in item.assets:
        return {"": item.assets["backscatter"]}
    tiffs = [
        a
        for a in item.assets.values()
        if "tiff" in (a.media_type or "") or urlparse(a.href).path.lower().endswith(TIFF_SUFFIXES)
    ]
    if len(tiffs) != 1:
        raise InputError(
            f"{where}: expected an asset 'backscatter' (or 'VV' and 'VH'), found assets {sorted(item.assets)}"
        )
    return {"": tiffs[0]}


def _read_item_collection(path: storage.Location):
    import pystac

    try:
        text = storage.read_text(path)
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a JSON file ({_one_line(exc)})") from exc
    try:
        if isinstance(data, dict) and data.get("type") == "Feature":
            return [pystac.Item.from_dict(data)]
        if not (isinstance(data, dict) and data.get("type") == "FeatureCollection"):
            found = data.get("type") if isinstance(data, dict) else type(data).__name__
            raise InputError(f"{path}: expected a STAC ItemCollection (type FeatureCollection), found {found!r}")
        return list(pystac.ItemCollection.from_dict(data))
    except (pystac.STACError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path}: not a valid STAC ItemCollection ({_one_line(exc)})") from exc


def open_stac(
    path: str | Path,
    *,
    chunk: int = DEFAULT_CHUNK,
    start: str | None = None,
    end: str | None = None,
) -> xr.Dataset:
    """STAC ItemCollection JSON (one Item per date, GeoTIFF/COG assets) -> lazy cube in dB.

    The item's `datetime` (or `start_datetime`) is the date; relative asset hrefs are resolved
    from the JSON file's folder; band polarisations come from the files' band descriptions.
    """
    path = storage.location(path)
    infos: list[RasterInfo] = []
    for where, when, pol, href in stac_assets(path):
        info = describe_tiff(href, time=when, where=f"{where}: {href}")
        if pol:  # a per-polarisation asset: its band described so, or its first band
            info = RasterInfo(
                info.path, info.time, {pol: info.bands.get(pol, 1)}, info.crs, info.transform, info.shape, info.where
            )
        infos.append(info)
    dates = group_dates(infos)
    check_same_grid([i for d in dates for i, _ in d.layers.values()])
    dates = _filter_dates(dates, start, end, str(path))
    return validate_cube(stack_dates(dates, chunk=chunk), where=str(path))


def stac_assets(path: str | Path) -> list[tuple[str, np.datetime64, str, str]]:
    """The rasters a STAC ItemCollection names, read from the JSON only:
    `(where, time, polarisation or "", href)` per asset; local hrefs are checked to exist."""
    path = storage.location(path)
    items = _read_item_collection(path)
    if not items:
        raise InputError(f"{path}: the ItemCollection has no items")
    out = []
    for item in items:
        where = f"{path} (item {item.id})"
        when = item.datetime or item.common_metadata.start_datetime
        if when is None:
            raise InputError(f"{where}: no datetime or start_datetime")
        for pol, asset in _raster_assets(item, where).items():
            href = _resolve_href(asset.href, storage.parent(path))
            if _is_local(href) and not Path(href).exists():
                raise InputError(f"{where}: asset {asset.href!r} not found at {href}")
            out.append((where, _to_datetime64(when), pol, href))
    return out


def _is_local(href: str) -> bool:
    return not urlparse(href).scheme and not href.startswith("/vsi")


# --- NetCDF / Zarr cubes -------------------------------------------------------------------------


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
    chunk: int = DEFAULT_CHUNK,
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


# --- long tables ---------------------------------------------------------------------------------


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
    chunk: int = DEFAULT_CHUNK,
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


# --- plausibility of the backscatter ---------------------------------------------------------------

PLAUSIBLE_MEDIAN_DB = (-40.0, 5.0)  # the median of a date's valid pixels lies in this range (dB)
LINEAR_LIMIT_DB = 30.0  # a median above this (linear power 1e3) is not backscatter (dB)
IMPOSSIBLE_DB = 40.0  # a value above this (linear power 1e4) is not backscatter, not even a corner reflector (dB)
IMPOSSIBLE_SHARE = 0.01  # a date with more than this share of valid pixels above IMPOSSIBLE_DB is refused
LOW_VALID_SHARE = 0.01  # a date with fewer valid pixels than this share is ingested with a warning
_HIST_EDGES = np.arange(-100.0, 100.25, 0.5)  # dB bin edges; two more bins take what lies outside


class BackscatterWarning(UserWarning):
    """A date with no, or very few, valid pixels: ingested as it is, but worth a look."""


def _block_histogram(block: np.ndarray) -> np.ndarray:
    """`(T, ...)` dB block -> `(T, NB, 1, ...)` counts of its finite values per bin of
    `_HIST_EDGES` (bin 0: below -100 dB, bin NB-1: +100 dB and above)."""
    t = block.shape[0]
    flat = np.asarray(block).reshape(t, -1)
    finite = np.isfinite(flat)
    nb = _HIST_EDGES.size + 1
    bins = np.searchsorted(_HIST_EDGES, np.where(finite, flat, 0.0), side="right")
    codes = (np.arange(t)[:, None] * nb + bins)[finite]
    counts = np.bincount(codes, minlength=t * nb).reshape(t, nb)
    return counts.reshape(t, nb, *([1] * (block.ndim - 1)))


def backscatter_histograms(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Per band, counts `(T, NB)` int64 of the valid (finite) dB values of each date in the bins
    of `_HIST_EDGES`, computed in one pass chunk by chunk (memory: a few chunks per thread)."""
    import dask.array

    nb = _HIST_EDGES.size + 1
    lazy = {}
    for band in BANDS:
        var = ds[band]
        data = dask.array.asarray(var.transpose("time", *(d for d in var.dims if d != "time")).data)
        per_block = data.map_blocks(
            _block_histogram,
            new_axis=1,
            dtype=np.int64,
            chunks=(data.chunks[0], (nb,), *[(1,) * len(c) for c in data.chunks[1:]]),
        )
        lazy[band] = per_block.sum(axis=tuple(range(2, per_block.ndim)))
    (out,) = dask.compute(lazy)
    return {b: np.asarray(h, dtype=np.int64) for b, h in out.items()}


def _median_db(counts: np.ndarray) -> np.ndarray:
    """`(T, NB)` histogram -> `(T,)` median in dB to 0.5 dB (bin centre); -inf / +inf when it
    lies beyond -100 / +100 dB; NaN for a date without a valid value."""
    n = counts.sum(1)
    k = np.argmax(counts.cumsum(1) >= np.maximum(n, 1)[:, None] / 2, axis=1)
    centres = np.concatenate([[-np.inf], (_HIST_EDGES[:-1] + _HIST_EDGES[1:]) / 2, [np.inf]])
    return np.where(n > 0, centres[k], np.nan)


def _dates_text(times: np.ndarray, idx: np.ndarray) -> str:
    shown = ", ".join(str(t)[:10] for t in times[idx[:5]])
    return f"{idx.size} date(s) ({shown}{', ...' if idx.size > 5 else ''})"


def check_plausible(
    ds: xr.Dataset,
    *,
    where: str = "cube",
    negative_share: Callable[[np.datetime64, str], float | None] | None = None,
) -> None:
    """Refuse a cube (`VV`, `VH` in dB on `(time, ...)`) whose values are not backscatter.

    Per band and date, over the valid (finite) pixels, in one chunked pass
    (`backscatter_histograms`): the median must lie in `PLAUSIBLE_MEDIAN_DB`, and at most
    `IMPOSSIBLE_SHARE` of the pixels may lie above `IMPOSSIBLE_DB` (so a few corner reflectors
    pass, a fill value does not). The `InputError` names the band, the dates and the likely
    encoding (linear power x 1000 as digital numbers, a fill value, dB read as linear power).
    A cube without any valid pixel, or a band without any on every date, is refused; a date
    without a valid pixel (or with fewer than `LOW_VALID_SHARE`) gives a `BackscatterWarning`,
    unless `negative_share(time, band)` (the share of negative values in the date's raw input,
    None if unknown) says that the input holds dB already, which is refused.
    """
    hists = backscatter_histograms(ds)
    times = np.asarray(ds["time"].values)
    n_pixels = int(np.prod([n for d, n in ds[BANDS[0]].sizes.items() if d != "time"]))
    span = f"{str(times.min())[:10]} .. {str(times.max())[:10]}" if times.size else "no date"

    def negative(idx: np.ndarray, band: str) -> float | None:
        return None if negative_share is None or idx.size == 0 else negative_share(times[idx[0]], band)

    valid = {b: h.sum(1) for b, h in hists.items()}
    empty_bands = [b for b in BANDS if not valid[b].any()]
    if empty_bands:
        share = negative(np.arange(times.size), empty_bands[0])
        hint = (
            "the input values are negative: values look like dB already, read here as linear power"
            if share is not None and share > 0.5
            else "every value is no data, zero or negative (values already in dB, read as linear power?)"
        )
        raise InputError(
            f"{where}: no valid {'/'.join(empty_bands)} backscatter on any of the {times.size} date(s) ({span}): {hint}"
        )
    impossible_from = int(np.searchsorted(_HIST_EDGES, IMPOSSIBLE_DB)) + 1
    for band in BANDS:
        h, n = hists[band], valid[band]
        median = _median_db(h)
        high = h[:, impossible_from:].sum(1) / np.maximum(n, 1)
        lo, hi = PLAUSIBLE_MEDIAN_DB
        fill = np.flatnonzero((n > 0) & ((median > LINEAR_LIMIT_DB) | (high > IMPOSSIBLE_SHARE)))
        scaled = np.flatnonzero((n > 0) & (median > hi) & (median <= LINEAR_LIMIT_DB) & (high <= IMPOSSIBLE_SHARE))
        dark = np.flatnonzero((n > 0) & (median < lo))
        for idx, hint in (
            (
                fill,
                f"linear power above 1e3 is not backscatter (a fill value such as 1e38, or digital numbers?); "
                f"{100 * high[fill[:1]].max(initial=0):.0f} % of the valid pixels above +{IMPOSSIBLE_DB:.0f} dB",
            ),
            (scaled, "looks like DN scaled by 1000 (linear power x 1000 stored as integers): divide by 1000"),
            (dark, "far below the noise floor: values look scaled down (linear power x 1e-3 or less?)"),
        ):
            if idx.size:
                m = median[idx[0]]
                m_text = f"{m:+.1f} dB" if np.isfinite(m) else ("above +100 dB" if m > 0 else "below -100 dB")
                expected = f" (expected {lo:+.0f} .. {hi:+.0f} dB)" if not lo <= m <= hi else ""
                raise InputError(
                    f"{where}: implausible {band} backscatter on {_dates_text(times, idx)}: median {m_text}{expected}; "
                    f"{hint}"
                )
    for band in BANDS:
        n = valid[band]
        none = np.flatnonzero(n == 0)
        share = negative(none, band)
        if share is not None and share > 0.5:
            raise InputError(
                f"{where}: no valid {band} pixel on {_dates_text(times, none)}: {100 * share:.0f} % of the input "
                "values are negative: values look like dB already, read here as linear power"
            )
        few = np.flatnonzero((n > 0) & (n < LOW_VALID_SHARE * n_pixels))
        for idx, what in ((none, "no valid pixel"), (few, f"fewer than {100 * LOW_VALID_SHARE:g} % valid pixels")):
            if idx.size:
                warnings.warn(
                    f"{where}: {band} has {what} on {_dates_text(times, idx)}; kept as they are (no data is NaN)",
                    BackscatterWarning,
                    stacklevel=2,
                )


def _raw_window(path: str, band: int, size: int = 256) -> np.ndarray:
    """The valid raw values (no data masked) of a central window of at most `size` x `size`
    pixels of one band of a GeoTIFF."""
    with rasterio.Env(**storage.gdal_s3_options()), rasterio.open(path) as src:
        h, w = src.shape
        win = rasterio.windows.Window(max(0, (w - size) // 2), max(0, (h - size) // 2), min(size, w), min(size, h))
        return np.ma.masked_invalid(src.read(band, window=win, masked=True)).compressed()


def _negative_share(
    kind: SourceKind, paths: Sequence[storage.Location], time: np.datetime64, band: str
) -> float | None:
    """Share of negative values among the non-zero raw values of `band` on the date `time`, read
    from one window of that date's GeoTIFF (GeoTIFF and STAC inputs; None for other kinds or
    when it cannot be read). Used only to explain a date without valid pixels."""
    try:
        if kind == "geotiff":
            found = ((describe_tiff(str(f)), None) for f in _expand_tiffs(paths))
        elif kind == "stac":
            found = (
                (describe_tiff(href, time=when, where=w), pol)
                for w, when, pol, href in stac_assets(paths[0])
                if when == time and pol in ("", band)
            )
        else:
            return None
        for info, pol in found:
            index = info.bands.get(band, 1 if pol else None)
            if info.time == time and index is not None:
                values = _raw_window(info.path, index)
                nonzero = values[values != 0]
                return float((nonzero < 0).mean()) if nonzero.size else None
    except (InputError, rasterio.errors.RasterioError, OSError):
        return None
    return None


# --- dispatch and ingest -------------------------------------------------------------------------


def open_source(
    inputs: Sequence[str | Path],
    *,
    chunk: int = DEFAULT_CHUNK,
    start: str | None = None,
    end: str | None = None,
) -> xr.Dataset:
    """Open any supported input as a lazy, validated contract cube (see the module doc)."""
    if chunk < 1:
        raise ConfigError(f"chunk must be a positive number of pixels, found {chunk}")
    parse_time_window(start, end)
    kind, paths = detect_source(inputs)
    if kind == "geotiff":
        return open_geotiffs(paths, chunk=chunk, start=start, end=end)
    if kind == "stac":
        return open_stac(paths[0], chunk=chunk, start=start, end=end)
    if kind == "dataset":
        return open_dataset_cube(paths[0], chunk=chunk, start=start, end=end)
    return open_table(paths[0], chunk=chunk, start=start, end=end)


def _local_entry(f: Path, name: str, content_limit: int) -> str:
    st = f.stat()
    ident = hashlib.sha256(f.read_bytes()).hexdigest() if st.st_size <= content_limit else st.st_mtime_ns
    return json.dumps([name, st.st_size, ident])


def _object_entries(url: str) -> list[str]:
    """Per object at `url` (a file, or every object under a folder such as a Zarr store): its
    name, size and the store's change tag (ETag on S3, else the modification time), from
    listings only: nothing is downloaded."""
    fs, root = storage.filesystem(url)
    found = fs.find(root, detail=True) if fs.isdir(root) else {root: fs.info(root)}
    out = []
    for key, info in found.items():
        rel = key[len(root.rstrip("/")) :].lstrip("/") or storage.name(url)
        tag = next((info[k] for k in ("ETag", "etag", "mtime", "LastModified", "created") if info.get(k)), None)
        out.append(json.dumps([rel, info.get("size"), str(tag)]))
    return out


def input_fingerprint(files: Sequence[str | Path], *, content_limit: int = 16 * 2**20) -> str:
    """sha256 (hex) identifying the inputs, in any order: per local file its name, size and
    content hash (the modification time instead for files over `content_limit` bytes, costly to
    hash), every file of a local folder (a Zarr store) likewise; per fsspec URL, each object's
    name, size and change tag (`_object_entries`); a GDAL path (`/vsi...`) or an http(s) URL
    by its text."""
    entries = []
    for f in files:
        text = str(f)
        if text.startswith("/vsi") or urlparse(text).scheme in ("http", "https"):
            entries.append(json.dumps(["url", text]))
        elif storage.is_url(f):
            entries.extend(_object_entries(text))
        elif Path(f).is_dir():
            root = Path(f)
            entries.extend(
                _local_entry(q, q.relative_to(root).as_posix(), content_limit)
                for q in sorted(root.rglob("*"))
                if q.is_file()
            )
        else:
            entries.append(_local_entry(Path(f), Path(f).name, content_limit))
    # Sorted: the same files given in another order are the same input.
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


def _provenance(kind: SourceKind, paths: Sequence[storage.Location]) -> dict:
    """Root attributes of an ingested cube: where it came from, and which slamgeo made it."""
    from slamgeo import __version__

    files: list[str | Path] = []
    for p in paths:
        if kind == "geotiff" and storage.isdir(p):
            files.extend(_expand_tiffs([p]))
        else:
            files.append(p)  # a folder (a Zarr store) is read whole by input_fingerprint
    if kind == "stac":  # the asset files are inputs as much as the JSON is
        files.extend(href for *_, href in stac_assets(paths[0]))
    return {
        "title": "Sentinel-1 backscatter cube (slamgeo)",
        "source_kind": kind,
        "source": [str(p) for p in paths],
        "input_fingerprint": input_fingerprint(files),
        "slamgeo_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _writing(exc: BaseException, out: storage.Location) -> bool:
    """True when the OS error `exc` names a path at or next to the output `out` (its
    temporary store), so the write failed, not the read."""
    out_path = Path(storage.filesystem(out)[1]).resolve()
    for f in (getattr(exc, "filename", None), getattr(exc, "filename2", None)):
        if f and str(Path(str(f)).resolve()).startswith(str(out_path)):
            return True
    return False


def ingest(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    chunk: int = DEFAULT_CHUNK,
    zarr_format: int = 2,
    overwrite: bool = False,
    start: str | None = None,
    end: str | None = None,
    progress: bool = True,
) -> storage.Location:
    """Ingest `inputs` (kind auto-detected) into the cube Zarr store `out` (a local path or an
    fsspec URL); returns its location (a `Path`, or the URL).

    Validates everything it can before writing (paths, dates, bands, grids), then writes
    chunk by chunk (`slamgeo.io.cube.write_cube`: locally to a temporary store renamed into place
    once complete; on object storage in place, marked complete last). Errors are
    `InputError`/`ConfigError` naming the file and the problem; no output that looks complete
    is left when it is not.
    """
    if zarr_format not in (2, 3):
        raise ConfigError(f"zarr_format must be 2 or 3, found {zarr_format!r}")
    out = storage.location(out)
    kind, paths = detect_source(inputs)
    storage.claim_output(out, storage.CUBE, overwrite=overwrite, inputs=paths)
    with storage.gdal_s3_environ():  # GeoTIFFs on S3: GDAL reads them, in Dask's threads too
        return _ingest_opened(
            kind,
            paths,
            out,
            chunk=chunk,
            zarr_format=zarr_format,
            overwrite=overwrite,
            start=start,
            end=end,
            progress=progress,
        )


def load(
    inputs: Sequence[str | Path],
    *,
    chunk: int = DEFAULT_CHUNK,
    start: str | None = None,
    end: str | None = None,
) -> xr.Dataset:
    """Sentinel-1 backscatter from `inputs` (any source `detect_source` knows) as a lazy cube
    of the contract: float32 dB `VV`, `VH` on `(time, y, x)` (or `(time, sample)` for a table),
    chunked `chunk` in space and whole in time, with its provenance as attributes. Nothing is
    written; `ingest` writes the same cube to a Zarr store (and checks its values)."""
    kind, paths = detect_source(inputs)
    ds = open_source(paths, chunk=chunk, start=start, end=end)
    ds.attrs = _provenance(kind, paths)
    return ds


def _ingest_opened(kind, paths, out, *, chunk, zarr_format, overwrite, start, end, progress) -> storage.Location:
    ds = open_source(paths, chunk=chunk, start=start, end=end)
    ds.attrs = _provenance(kind, paths)
    try:
        # GDAL's block cache (default 5 % of RAM) would keep every block read until it is full,
        # so peak memory would grow with the scene; ingest reads each block once, so bound it.
        # Local threads even under a distributed client: the inputs are local files, the GDAL
        # settings above apply to this process only, and a GDAL error raised on a remote worker
        # comes back without the file it names.
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), dask.config.set(scheduler="threads"):
            return write_cube(
                ds,
                out,
                zarr_format=zarr_format,
                overwrite=overwrite,
                progress=progress,
                inputs=paths,
                check=lambda written: check_plausible(
                    written, where=str(paths[0]), negative_share=lambda t, band: _negative_share(kind, paths, t, band)
                ),
            )
    except (rasterio.errors.RasterioError, OSError, RuntimeError) as exc:
        if isinstance(exc, SlamgeoError):
            raise
        if storage.is_local(out) and _writing(exc, out):
            raise OutputError(f"{out}: writing the cube failed ({_one_line(exc)})") from exc
        raise InputError(f"{paths[0]}: reading the {kind} input failed while writing {out} ({_one_line(exc)})") from exc


__all__ = [
    "BackscatterWarning",
    "RasterInfo",
    "backscatter_histograms",
    "check_plausible",
    "check_same_grid",
    "describe_tiff",
    "detect_source",
    "dn_to_db",
    "group_dates",
    "ingest",
    "input_fingerprint",
    "load",
    "scene_tiffs",
    "open_dataset_cube",
    "open_geotiffs",
    "open_source",
    "open_stac",
    "open_table",
    "parse_time_window",
    "select_time",
    "stac_assets",
    "stack_dates",
    "tiff_date",
]
