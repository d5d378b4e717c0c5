"""The reader of per-date GeoTIFFs (files, or folders of `*.tif`).

Two bands described "VV" and "VH", or single-band files per polarisation (`..._VV.tif` /
`..._VH.tif`), linear power; the date comes from the tags or the file name (`tiff_date`).
Headers are read here (`describe_tiff`, `group_dates`: dates and polarisations checked across
files); the files become STAC Items (`items_from_tiffs`) and are loaded by the same odc-stac
loader as any archive, onto one grid (`slamgeo.io.readers.archive.open_items`).

GeoTIFF URLs are handed to GDAL as they are (rasterio reads `s3://` as `/vsis3/`), with GDAL's
endpoint settings derived from `AWS_ENDPOINT_URL` when GDAL's own are not set
(`storage.gdal_s3_options`); an fsspec URL folder of GeoTIFFs is listed with fsspec.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import rasterio
import rasterio.errors
import rasterio.windows

from slamgeo.errors import InputError
from slamgeo.io import storage
from slamgeo.io.cube import BANDS
from slamgeo.io.readers._common import InputWarning, _one_line, _suffix, _to_datetime64, urlparse_path

if TYPE_CHECKING:
    import pystac
    import xarray as xr

    from slamgeo.io.readers import ReadRequest

SUMMARY = "GeoTIFF files or folders of them (.tif, .tiff), one file per date"
MANY = True  # several files or folders make one input
GRID = True  # loaded onto the grid the user asks for
TIFF_SUFFIXES = (".tif", ".tiff")


# --- dates ---------------------------------------------------------------------------------------


_DATE8 = re.compile(r"(?<!\d)(\d{8})(?!\d)")


def name_date(path: str | Path) -> np.datetime64 | None:
    """The date written in a file name as one 8-digit YYYYMMDD (`S1_20170103_VV.tif`); None
    when the name holds none, several, or one that is not a date."""
    found = _DATE8.findall(Path(urlparse(str(path)).path).name)
    if len(found) != 1:
        return None
    try:
        return _to_datetime64(dt.datetime.strptime(found[0], "%Y%m%d"))
    except ValueError:
        return None


def _tag_date(path: str | Path, tags: dict[str, str]) -> tuple[np.datetime64, str] | None:
    """The date of the tags and the tag that gave it, or None without a date tag."""
    if "ACQUISITION_DATE" in tags:
        value = tags["ACQUISITION_DATE"]
        try:
            return _to_datetime64(pd.Timestamp(value)), "ACQUISITION_DATE"
        except (ValueError, TypeError) as exc:
            raise InputError(f"{path}: tag ACQUISITION_DATE={value!r} is not a date") from exc
    if "TIFFTAG_DATETIME" in tags:
        value = tags["TIFFTAG_DATETIME"]
        try:
            return _to_datetime64(dt.datetime.strptime(value.strip(), "%Y:%m:%d %H:%M:%S")), "TIFFTAG_DATETIME"
        except ValueError as exc:
            raise InputError(f"{path}: tag TIFFTAG_DATETIME={value!r} is not 'YYYY:MM:DD HH:MM:SS'") from exc
    return None


def tiff_date(path: str | Path, tags: dict[str, str]) -> np.datetime64:
    """Acquisition date of a GeoTIFF: tag ACQUISITION_DATE, else TIFFTAG_DATETIME
    ("YYYY:MM:DD HH:MM:SS"), else the 8-digit YYYYMMDD in the file name. A tag that
    contradicts the name still wins (the name may be a processing date or a rename);
    `date_conflicts` says so."""
    tagged = _tag_date(path, tags)
    if tagged is not None:
        return tagged[0]
    found = _DATE8.findall(Path(urlparse(str(path)).path).name)
    if len(found) != 1:
        raise InputError(
            f"{path}: no acquisition date (no ACQUISITION_DATE or TIFFTAG_DATETIME tag, and "
            f"{'no' if not found else 'more than one'} YYYYMMDD date in the file name)"
        )
    when = name_date(path)
    if when is None:
        raise InputError(f"{path}: {found[0]} in the file name is not a valid YYYYMMDD date")
    return when


def date_conflicts(infos: Sequence[RasterInfo]) -> str:
    """One sentence naming the files whose date tag gives another day than the date in their
    name (the tag is used), or "" when there is none."""
    odd = [i for i in infos if i.tag and i.name_time is not None and str(i.name_time)[:10] != str(i.time)[:10]]
    if not odd:
        return ""
    shown = "; ".join(
        f"{Path(urlparse(i.path).path).name} (name {str(i.name_time)[:10]}, {i.tag} {str(i.time)[:10]})"
        for i in odd[:5]
    )
    more = f"; and {len(odd) - 5} more" if len(odd) > 5 else ""
    return (
        f"{len(odd)} file(s) have a date tag that is not the date in their name, and the tag is used: "
        f"{shown}{more}; check the files (or rename them) if the name is right"
    )


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
    tag: str = ""  # the tag that gave `time` ("" when given, or taken from the file name)
    name_time: np.datetime64 | None = None  # the date in the file name, if any

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
        with warnings.catch_warnings():
            # a file without georeferencing is refused below in one line ("no CRS")
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
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
    tagged = _tag_date(path, tags) if time is None else None
    return RasterInfo(
        path=path,
        time=time if time is not None else tiff_date(path, tags),
        bands=bands,
        crs=crs,
        transform=transform,
        shape=shape,
        where=where,
        tag=tagged[1] if tagged else "",
        name_time=name_date(path),
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


def items_from_tiffs(files: Sequence[str], *, where: str = "GeoTIFFs") -> list[pystac.Item]:
    """One STAC Item per date of per-date GeoTIFF files, from their headers (date, polarisation
    bands, grid): the few lines of pystac that rio-stac would write, without its dependencies.
    A date's VV and VH may be bands of one file or two single-band files. A date tag that is
    not the date in the file name gives an `InputWarning` naming the files (the tag is used)."""
    import pystac

    infos = [describe_tiff(str(f)) for f in files]
    conflicts = date_conflicts(infos)
    if conflicts:
        warnings.warn(f"{where}: {conflicts}", InputWarning, stacklevel=2)
    items = []
    for date in group_dates(infos):
        day = pd.Timestamp(date.time)
        first = date.layers[BANDS[0]][0]
        item = pystac.Item(
            id=Path(urlparse_path(first.path)).stem,
            geometry=None,
            bbox=None,
            datetime=day.tz_localize("UTC").to_pydatetime() if day.tzinfo is None else day.to_pydatetime(),
            properties={},
        )
        for pol in BANDS:
            info, band = date.layers[pol]
            epsg = info.crs.to_epsg()
            proj = {
                "proj:code": f"EPSG:{epsg}" if epsg else info.crs.to_wkt(),
                "proj:shape": list(info.shape),
                "proj:transform": list(info.transform)[:6],
            }
            if pol == BANDS[0]:
                item.properties.update(proj)
            item.add_asset(pol, pystac.Asset(href=info.path, extra_fields={"slamgeo:band": band, **proj}))
        items.append(item)
    return items


# --- the reader ----------------------------------------------------------------------------------


def can_open(source: storage.Location) -> bool:
    """A folder (of GeoTIFFs: tried after the readers of other folders), or a .tif file."""
    return storage.isdir(source) or (_suffix(source) in TIFF_SUFFIXES and storage.isfile(source))


def open(sources: Sequence[storage.Location], request: ReadRequest) -> xr.Dataset:
    """The GeoTIFFs of `sources` (files or folders) as Items, loaded onto one grid (lazy)."""
    from slamgeo.io.readers.archive import load_items

    where = str(sources[0])
    return load_items(items_from_tiffs([str(f) for f in _expand_tiffs(sources)], where=where), request, where=where)


def inputs(sources: Sequence[storage.Location], *, ds: xr.Dataset | None = None) -> list[str | Path]:
    """The GeoTIFF files, those of each folder listed (`ds` is not needed)."""
    return list(_expand_tiffs(sources))


def raw_window(path: str, band: int, size: int = 256) -> np.ndarray:
    """The valid raw values (no data masked) of a central window of at most `size` x `size`
    pixels of one band of a GeoTIFF."""
    with rasterio.Env(**storage.gdal_s3_options()), rasterio.open(path) as src:
        h, w = src.shape
        win = rasterio.windows.Window(max(0, (w - size) // 2), max(0, (h - size) // 2), min(size, w), min(size, h))
        return np.ma.masked_invalid(src.read(band, window=win, masked=True)).compressed()


def share_negative(infos: Iterable[tuple[RasterInfo, str | None]], time: np.datetime64, band: str) -> float | None:
    """Share of negative values among the non-zero raw values of `band` on the date `time`, in
    one window of the first of `infos` (headers, each with the polarisation its asset holds, or
    None for a file whose band descriptions say) that holds it; None when none does."""
    for info, pol in infos:
        index = info.bands.get(band, 1 if pol else None)
        if info.time == time and index is not None:
            values = raw_window(info.path, index)
            nonzero = values[values != 0]
            return float((nonzero < 0).mean()) if nonzero.size else None
    return None


def negative_share(sources: Sequence[storage.Location], time: np.datetime64, band: str) -> float | None:
    """Share of negative raw values of `band` on the date `time` (to explain a date without
    valid pixels: values in dB read as linear power)."""
    return share_negative(((describe_tiff(str(f)), None) for f in _expand_tiffs(sources)), time, band)


__all__ = [
    "TIFF_SUFFIXES",
    "RasterInfo",
    "can_open",
    "date_conflicts",
    "describe_tiff",
    "group_dates",
    "inputs",
    "items_from_tiffs",
    "name_date",
    "negative_share",
    "open",
    "tiff_date",
]
