"""Sentinel-1 archives as STAC Items -> the cube on a grid the user names, loaded with odc-stac.

Real archives are not on one grid: scenes lie in several UTM zones, footprints differ by orbit,
and a pass comes in two or three slices. Every raster input (an ItemCollection JSON, a STAC API
search, a folder of GeoTIFFs) becomes a list of STAC Items here and is loaded by `odc.stac.load`
onto one `odc.geo` GeoBox: reprojection, mosaicking of the slices of one pass and the grouping
by solar day are odc-stac's and GDAL's, not ours.

Steps (`open_items`):

1. Conventions (`normalise_item`): each Item's polarisations are found as Planetary Computer's
   `sentinel-1-rtc` assets `vv`/`vh` (float32 linear power, nodata -32768), assets `VV`/`VH`,
   or one multi-band `backscatter` asset whose bands are described VV and VH. Rasters hold
   linear power whatever their data type (a DN encoding is caught, and named, by the
   plausibility check of ingest). Items without the
   projection extension get it from their files' headers; local files' headers are read in any
   case, so that an asset that is not a raster, or a VH that is the VV file, is named here.
2. Orbit (`choose_orbit`): one orbit direction (`sat:orbit_state`), by default the one with the
   most acquisitions, because mixing ascending and descending passes in one series adds a
   geometry signal that is not the crop; optionally some relative orbits only. Items without
   `sat:orbit_state` are said in the log (all of them) or refused by name (some of them).
3. Grid (`output_geobox`): the CRS (default: the most common among the items), the pixel size
   (default: the items' native one) and the extent (default: the union of the items' raster
   footprints; or a lon/lat bbox; or the extent of a parcels file). In the items' own CRS and
   resolution the grid keeps their pixel phase, so a stack already on one grid is read as it is.
   Guards, before any pixel is read: footprints far from the others when the extent is their
   union (`check_one_area`), a grid over `max_pixels` per date, a tiling over `max_blocks` tiles
   or into tiny tiles that would open files thousands of times (`check_tiling`).
4. Load: `groupby="solar_day"` (the slices of one pass are one time step; where nothing covers
   a pixel on a date it is NaN), bilinear resampling of linear power by default (nearest is an
   option), then dB. The result is lazy and chunked as the contract wants: the whole time axis
   in one chunk, spatial tiles of `chunk`, with no rechunk pass.

GDAL settings for remote COGs (`GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR`, HTTP retries, the S3
endpoint) are given to odc-stac (`configure_rio`), which captures them when the graph is built
and restores them around every read, so they reach Dask workers in other processes too; a
`rasterio.Env` in the client would not.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from slamgeo.errors import ConfigError, InputError
from slamgeo.io import storage
from slamgeo.io.cube import BANDS, DEFAULT_CHUNK, linear_to_db, validate_cube
from slamgeo.io.readers._common import InputWarning, _lazy, _one_line, _to_datetime64, parse_time_window

if TYPE_CHECKING:
    import pystac
    from odc.geo.geobox import GeoBox

log = logging.getLogger("slamgeo.ingest")

Orbit = Literal["ascending", "descending"]
Resampling = Literal["bilinear", "nearest"]
PC_NODATA = -32768.0  # Planetary Computer sentinel-1-rtc: float32 linear power, this is no data
# Guards against a grid that would take hours or fill the disk, checked before any pixel is read
# (each may be raised with the option named in its message):
MAX_PIXELS = 1_000_000_000  # pixels of the grid per date (4 GB per date and band in float32)
MAX_BLOCKS = 100_000  # spatial tiles of `chunk` x `chunk` pixels (each one task per band)
MIN_CHUNK = 16  # pixels: tiles smaller than this ...
SMALL_TILE_READS = 10_000  # ... are refused above this many file reads (a few ms each, any tile size)
NEAR_FOOTPRINTS = 2.0  # footprints farther apart than this many footprint sides are separate areas
GDAL_REMOTE_OPTIONS = {  # for COGs over HTTP or S3 (GDAL's names; odc-stac's cloud defaults)
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
}


@dataclass(frozen=True)
class GridOptions:
    """The grid and the selection a user asks for; every field may be left unset.

    crs: "EPSG:32630" or anything pyproj reads (projected, metres). resolution: pixel size in
    metres. bbox: (lon0, lat0, lon1, lat1) in degrees. like: a parcels file (GeoPackage,
    GeoParquet, Shapefile ...) whose extent is the output's. orbit: "ascending" / "descending".
    relative_orbits: keep these relative orbits only. resampling: "bilinear" (of linear power)
    or "nearest". max_pixels: the most pixels per date the grid may hold (default `MAX_PIXELS`);
    max_blocks: the most spatial tiles it may be cut into (default `MAX_BLOCKS`; given, tiles
    under `MIN_CHUNK` pixels are allowed too). Both are guards: they never change the result.
    """

    crs: str | None = None
    resolution: float | None = None
    bbox: tuple[float, float, float, float] | None = None
    like: str | Path | None = None
    orbit: Orbit | None = None
    relative_orbits: tuple[int, ...] = ()
    resampling: Resampling = "bilinear"
    max_pixels: int | None = None
    max_blocks: int | None = None

    def __post_init__(self) -> None:
        if self.resolution is not None and not (math.isfinite(self.resolution) and self.resolution > 0):
            raise ConfigError(f"resolution must be a positive number of metres, found {self.resolution}")
        if self.bbox is not None:
            check_bbox(self.bbox)
        if self.bbox is not None and self.like is not None:
            raise ConfigError("give either bbox or like (a parcels file), not both")
        if self.orbit not in (None, "ascending", "descending"):
            raise ConfigError(f"orbit must be 'ascending' or 'descending', found {self.orbit!r}")
        if self.resampling not in ("bilinear", "nearest"):
            raise ConfigError(f"resampling must be 'bilinear' or 'nearest', found {self.resampling!r}")
        for name in ("max_pixels", "max_blocks"):
            value = getattr(self, name)
            if isinstance(value, float) and value.is_integer():  # 2e9 in Python
                value = int(value)
                object.__setattr__(self, name, value)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive whole number, found {value!r}")

    @property
    def is_default(self) -> bool:
        """True when nothing about the grid or the selection is asked (the guards aside)."""
        return dataclasses.replace(self, max_pixels=None, max_blocks=None) == GridOptions()


def check_bbox(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    """A lon/lat box `(lon0, lat0, lon1, lat1)` in degrees, checked; raises `ConfigError`."""
    try:
        b = tuple(float(v) for v in bbox)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bbox must be four numbers lon0,lat0,lon1,lat1, found {bbox!r}") from exc
    if len(b) != 4 or not all(math.isfinite(v) for v in b):
        raise ConfigError(f"bbox must be four numbers lon0,lat0,lon1,lat1, found {bbox!r}")
    lon0, lat0, lon1, lat1 = b
    if not (-180 <= lon0 < lon1 <= 180 and -90 <= lat0 < lat1 <= 90):
        raise ConfigError(f"bbox {list(b)} is not lon0,lat0,lon1,lat1 in degrees with lon0 < lon1 and lat0 < lat1")
    return (lon0, lat0, lon1, lat1)


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """`"LON0,LAT0,LON1,LAT1"` -> a checked bbox."""
    parts: list[Any] = [v for v in text.replace(" ", "").split(",") if v != ""] if text else []
    return check_bbox(parts)


# --- conventions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """How one polarisation sits in an item's asset: (band count of the file, 1-based band)."""

    count: int
    index: int
    dtype: str


def _item_where(item: pystac.Item, where: str) -> str:
    return f"{where} (item {item.id})" if where else f"item {item.id}"


def _asset_bands(asset: pystac.Asset) -> list[dict]:
    bands = asset.extra_fields.get("raster:bands")
    return list(bands) if isinstance(bands, list) else []


def _pol_assets(item: pystac.Item, label: str) -> dict[str, tuple[str, int | None]]:
    """`{pol: (asset key, band index or None)}`: the asset (and band) holding each polarisation.
    A band index of None means "read the file's band descriptions"."""
    keys = {k.upper(): k for k in item.assets if k.upper() in BANDS}
    if keys:
        if len(keys) < len(BANDS):
            missing = [b for b in BANDS if b not in keys]
            raise InputError(
                f"{label}: mixed polarisations: asset(s) {sorted(keys.values())} but no {'/'.join(missing)}; "
                f"slamgeo needs both VV and VH on every date"
            )
        # A band given by the item (files described by slamgeo), else the file's descriptions
        # when it has several bands, else band 1.
        return {pol: (key, item.assets[key].extra_fields.get("slamgeo:band")) for pol, key in keys.items()}
    if "backscatter" in item.assets:
        return {pol: ("backscatter", None) for pol in BANDS}
    raise InputError(
        f"{label}: no Sentinel-1 backscatter assets among {sorted(item.assets)}; expected 'vv' and 'vh' "
        "(Planetary Computer sentinel-1-rtc), 'VV' and 'VH', or one 'backscatter' GeoTIFF with bands "
        "described VV and VH"
    )


def normalise_item(
    item: pystac.Item, *, base: storage.Location | None = None, where: str = ""
) -> tuple[pystac.Item, dict[str, _Layout]]:
    """A copy of `item` in one convention: assets `VV` and `VH` with absolute hrefs,
    `raster:bands` (nodata, data type) for every band of their file, and the projection fields
    (`proj:code`, `proj:shape`, `proj:transform`) on the item. Missing facts are read from the
    files' headers. Returns the copy and, per polarisation, where it sits in its file."""
    from slamgeo.io.readers.stac import _resolve_href

    label = _item_where(item, where)
    if item.datetime is None and item.common_metadata.start_datetime is None:
        raise InputError(f"{label}: no datetime or start_datetime")
    pols = _pol_assets(item, label)
    out = item.clone()
    out.assets = {}
    # Hrefs are resolved here; without its self link (an API's URL) pystac and odc-stac take
    # them as they are instead of resolving an absolute path against that URL again.
    out.links = [link for link in out.links if link.rel != "self"]
    layouts: dict[str, _Layout] = {}
    header: dict[str, Any] = {}  # the headers whose facts are used
    checks: dict[str, Any] = {}  # the headers read only to check the file
    rasters: dict[str, tuple[str, str, int]] = {}  # pol -> (asset key, href, band)
    for pol, (key, index) in pols.items():
        asset = item.assets[key]
        href = asset.href if base is None else _resolve_href(asset.href, base)
        what = f"{label}: asset {key!r} ({href})"
        local = not (storage.is_url(href) or href.startswith("/vsi"))
        if local and not Path(href).exists():
            raise InputError(f"{label}: asset {key!r} not found at {href}")
        _check_raster_kind(asset, href, what)
        bands = _asset_bands(asset)
        need_header = (
            (index is None and len(bands) != 1) or not bands or "nodata" not in bands[0] or not _has_proj(item, asset)
        )
        # A local header costs a millisecond: it is always read, so that a file that is not a
        # raster, or lacks the band, is named here and not in the middle of the load. A remote
        # one only when the item lacks the facts (a request each).
        if need_header and href not in header:
            header[href] = _read_header(href, what)
        elif local and href not in header and href not in checks:
            checks[href] = _read_header(href, what)
        checked = header.get(href) or checks.get(href)
        h = header.get(href) if need_header else None  # the file's facts replace the item's only where it lacks them
        if index is None and (len(bands) == 1 or (h is not None and h["count"] == 1)):
            index = 1  # a single-band file holds the polarisation its asset is named after
        if index is None:  # a multi-band file: its band descriptions name the polarisations
            if h is None:
                h = header[href] = _read_header(href, what)
            described = [str(d or "").strip().upper() for d in h["descriptions"]]
            if pol not in described:
                raise InputError(
                    f"{label}: asset {key!r} has no band described {pol} (band descriptions {h['descriptions']}); "
                    "expected bands described VV and VH"
                )
            index = described.index(pol) + 1
        if checked is not None and index > checked["count"]:
            raise InputError(f"{what}: {pol} is said to be band {index}, but the file has {checked['count']} band(s)")
        if h is not None:
            bands = [{"nodata": h["nodata"], "data_type": h["dtype"]} for _ in range(h["count"])]
        dtype = str(bands[index - 1].get("data_type") or (h["dtype"] if h else "float32"))
        if bands[index - 1].get("nodata") is None:
            bands[index - 1] = {**bands[index - 1], "nodata": 0 if dtype.startswith("uint") else PC_NODATA}
        fields = {k: v for k, v in asset.extra_fields.items() if k not in ("raster:bands", "slamgeo:band")}
        fields["raster:bands"] = bands
        if h is not None:
            fields.update({"proj:code": h["crs"], "proj:shape": h["shape"], "proj:transform": h["transform"]})
        out.add_asset(pol, type(asset)(href=href, media_type=asset.media_type, roles=["data"], extra_fields=fields))
        layouts[pol] = _Layout(count=len(bands), index=index, dtype=dtype)
        rasters[pol] = (key, href, index)
    _check_distinct_rasters(rasters, label)
    for pol in BANDS:  # the item's own projection fields, from the first asset if it lacked them
        a = out.assets[pol].extra_fields
        for k in ("proj:code", "proj:shape", "proj:transform"):
            if k in a and k not in out.properties:
                out.properties[k] = a[k]
        if "proj:epsg" in out.properties and "proj:code" not in out.properties:
            out.properties["proj:code"] = f"EPSG:{out.properties['proj:epsg']}"
    # odc-stac picks the items of each tile by their footprints; the raster's bounds contain the
    # valid data and cannot be wrong, unlike a hand-written geometry.
    out.geometry, out.bbox = _lonlat_footprint(out)
    return out, layouts


def _lonlat_footprint(item: pystac.Item) -> tuple[dict, list[float]]:
    """GeoJSON geometry and bbox (lon/lat) of an item's raster, from its projection fields."""
    from affine import Affine
    from odc.geo.geom import box

    t = Affine(*item.properties["proj:transform"][:6])
    ny, nx = item.properties["proj:shape"]
    xs, ys = (t.c, t.c + nx * t.a), (t.f, t.f + ny * t.e)
    g = box(min(xs), min(ys), max(xs), max(ys), _item_crs(item)).to_crs("EPSG:4326")
    return g.json, list(g.boundingbox)


# Files that an asset of backscatter cannot be: metadata, vectors, archives, quicklooks.
NOT_RASTER_SUFFIXES = (
    *(".json", ".geojson", ".xml", ".html", ".htm", ".txt", ".csv"),
    *(".gpkg", ".shp", ".parquet", ".zip", ".safe", ".png", ".jpg", ".jpeg"),
)
NOT_RASTER_MEDIA = ("json", "xml", "html", "text/", "image/png", "image/jpeg", "application/zip")


def _check_raster_kind(asset: pystac.Asset, href: str, what: str) -> None:
    """Refuse an asset whose media type or file name says it is not a raster of backscatter."""
    media = (asset.media_type or "").lower()
    suffix = Path(urlparse_path(href)).suffix.lower()
    if suffix in NOT_RASTER_SUFFIXES or any(m in media for m in NOT_RASTER_MEDIA):
        said = f"media type {asset.media_type}" if any(m in media for m in NOT_RASTER_MEDIA) else f"a {suffix} file"
        raise InputError(f"{what}: not a raster ({said}); expected a GeoTIFF/COG of backscatter")


def _same_file(a: str, b: str) -> bool:
    """True when two hrefs name one file (local paths: also through links)."""
    if a == b:
        return True
    if storage.is_url(a) or storage.is_url(b) or a.startswith("/vsi") or b.startswith("/vsi"):
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_distinct_rasters(rasters: dict[str, tuple[str, str, int]], label: str) -> None:
    """Refuse an item whose VV and VH are the same band of the same file (VH would equal VV)."""
    (vv_key, vv_href, vv_band), (vh_key, vh_href, vh_band) = rasters["VV"], rasters["VH"]
    if vv_band != vh_band or not _same_file(vv_href, vh_href):
        return
    if vv_key == vh_key:
        fix = "expected two bands described VV and VH in it, or separate VV and VH assets"
        which = f"asset {vv_key!r}"
    else:
        fix = f"point {vh_key!r} at the VH file"
        which = f"assets {vv_key!r} and {vh_key!r}"
    raise InputError(
        f"{label}: {which} give VV and VH as the same raster ({vh_href}, band {vh_band}), so VH would equal VV "
        f"on every pixel; {fix}"
    )


def _has_proj(item: pystac.Item, asset: pystac.Asset) -> bool:
    fields = {**item.properties, **asset.extra_fields}
    return ("proj:epsg" in fields or "proj:code" in fields or "proj:wkt2" in fields) and (
        "proj:transform" in fields and "proj:shape" in fields
    )


def _read_header(href: str, label: str) -> dict[str, Any]:
    """The facts of a raster's header: band descriptions, count, data type, nodata, CRS,
    shape, transform. Raises `InputError` (starting with `label`) for a file GDAL cannot open,
    that has no raster band, no CRS or a rotated grid (odc-stac places every file by its own
    georeferencing)."""
    import rasterio.errors

    with warnings.catch_warnings():
        # said below in one line: "no CRS", or not a raster at all
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        return _header_facts(href, label)


def _header_facts(href: str, label: str) -> dict[str, Any]:
    import rasterio
    import rasterio.errors

    try:
        with rasterio.Env(**storage.gdal_s3_options()), rasterio.open(href) as src:
            if src.count == 0:
                raise InputError(
                    f"{label}: not a raster: GDAL reads it as a {src.driver} file without raster bands; "
                    "expected a GeoTIFF/COG of backscatter"
                )
            if src.crs is None:
                raise InputError(f"{label}: no CRS; expected a projected CRS such as EPSG:32630")
            if src.transform.b != 0 or src.transform.d != 0:
                raise InputError(f"{label}: a rotated grid, which is not supported")
            epsg = src.crs.to_epsg()
            return {
                "descriptions": list(src.descriptions),
                "count": src.count,
                "dtype": src.dtypes[0],
                "nodata": src.nodata,
                "crs": f"EPSG:{epsg}" if epsg else src.crs.to_wkt(),
                "shape": [src.height, src.width],
                "transform": list(src.transform)[:6],
            }
    except rasterio.errors.RasterioError as exc:
        raise InputError(f"{label}: cannot be read as a GeoTIFF ({_one_line(exc)})") from exc


def _check_layouts(layouts: Sequence[tuple[pystac.Item, dict[str, _Layout]]], where: str) -> dict[str, _Layout]:
    """One band layout and data type per polarisation across the items (odc-stac loads one
    band name per polarisation)."""
    first_item, first = layouts[0]
    for item, lay in layouts[1:]:
        for pol in BANDS:
            if lay[pol] != first[pol]:
                raise InputError(
                    f"{_item_where(item, where)}: {pol} is band {lay[pol].index} of {lay[pol].count} "
                    f"({lay[pol].dtype}), but band {first[pol].index} of {first[pol].count} "
                    f"({first[pol].dtype}) in item {first_item.id}; the items must share one layout"
                )
    return first


# --- orbits --------------------------------------------------------------------------------------


def choose_orbit(
    items: Sequence[pystac.Item], orbit: Orbit | None, relative_orbits: Sequence[int], where: str
) -> tuple[list[pystac.Item], str]:
    """The items of one orbit direction (and of the given relative orbits), and a sentence
    saying what was chosen.

    Items without `sat:orbit_state` cannot be told ascending from descending: when none has it
    they are all kept and the sentence says so (with the relative orbits found, if any); when
    some have it and others not, `orbit` keeps the known ones of that direction (saying how many
    unknown were left out), a relative orbit (one direction) keeps its items, and otherwise the
    items are refused, naming those without it: keeping them would mix directions silently,
    dropping them would lose dates silently."""
    note = ""
    if relative_orbits:  # first: a relative orbit implies its direction
        wanted = {int(r) for r in relative_orbits}
        found_rel = sorted({int(r) for i in items if (r := i.properties.get("sat:relative_orbit")) is not None})
        items = [i for i in items if i.properties.get("sat:relative_orbit") in wanted]
        if not items:
            raise InputError(
                f"{where}: no acquisition on relative orbit(s) {sorted(wanted)}; the items have {found_rel or 'none'}"
            )
        note = f"relative orbit(s) {sorted(wanted)}"
    states = [item.properties.get("sat:orbit_state") for item in items]
    unknown = [i for i, s in zip(items, states) if s is None]
    passes: collections.Counter[str] = collections.Counter()
    for s, _ in {(s, _day(item)) for s, item in zip(states, items)}:  # a pass: a direction on a day
        if s is not None:
            passes[str(s).lower()] += 1
    kept = list(items)
    said = ""
    left_unknown = f"; left out {len(unknown)} item(s) without sat:orbit_state" if unknown else ""
    if orbit is not None:
        kept = [i for i, s in zip(items, states) if s is not None and str(s).lower() == orbit]
        if not kept:
            found = ", ".join(f"{k} ({n} passes)" for k, n in passes.items()) or "no sat:orbit_state"
            raise InputError(f"{where}: no {orbit} acquisition; the items have {found}")
        said = f"orbit: {orbit} ({passes[orbit]} passes), as asked{left_unknown}"
    elif unknown and not passes:
        tracks = sorted({int(r) for i in items if (r := i.properties.get("sat:relative_orbit")) is not None})
        hint = (
            f"; they are on relative orbits {tracks}: keep one track with --relative-orbit N (relative_orbits= "
            "in Python)"
            if len(tracks) > 1 and not relative_orbits
            else ""
        )
        said = (
            f"orbit: unknown for all {len(items)} items (no sat:orbit_state): ascending and descending passes "
            f"cannot be separated and are all kept{hint}"
        )
    elif unknown and not relative_orbits:
        names = ", ".join(i.id for i in unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        known = ", ".join(f"{n} {k} pass{'es' if n != 1 else ''}" for k, n in sorted(passes.items()))
        raise InputError(
            f"{where}: {len(unknown)} of {len(items)} items have no sat:orbit_state ({names}) while the others "
            f"are {known}: their direction is unknown, so ascending and descending passes cannot be separated; "
            "give orbit (--orbit ascending or descending) to keep only the known passes of that direction, "
            "or add sat:orbit_state to those items"
        )
    elif len(passes) > 1:
        best = max(sorted(passes), key=lambda k: passes[k])
        kept = [i for i, s in zip(items, states) if s is not None and str(s).lower() == best]
        others = ", ".join(f"{n} {k}" for k, n in passes.items() if k != best)
        said = (
            f"orbit: {best} ({passes[best]} passes), the direction with the most acquisitions; left out {others} "
            f"(mixing directions adds a viewing-geometry signal); choose with orbit{left_unknown}"
        )
    elif unknown:  # one relative orbit's items, some without sat:orbit_state: one direction all the same
        said = f"orbit: {next(iter(passes))} (the relative orbit's), {len(unknown)} item(s) without sat:orbit_state"
    note = "; ".join(n for n in (said, note) if n)
    return kept, note


def _day(item: pystac.Item) -> str:
    when = item.datetime or item.common_metadata.start_datetime
    return str(when)[:10]


# --- grid ----------------------------------------------------------------------------------------


def _item_crs(item: pystac.Item) -> str:
    p = item.properties
    if "proj:code" in p and p["proj:code"]:
        return str(p["proj:code"])
    if p.get("proj:epsg"):
        return f"EPSG:{p['proj:epsg']}"
    return str(p.get("proj:wkt2"))


def _most_common_crs(items: Sequence[pystac.Item], counts: collections.Counter[str]) -> str:
    """The CRS of the most items; on a tie, the UTM zone holding the centre of their footprints
    (a region split evenly between two zones goes to the one it mostly lies in), else the first."""
    top = max(counts.values())
    tied = sorted(k for k, n in counts.items() if n == top)
    if len(tied) > 1:
        boxes = np.array([i.bbox for i in items if i.bbox])
        lon = (boxes[:, 0].min() + boxes[:, 2].max()) / 2
        lat = (boxes[:, 1].min() + boxes[:, 3].max()) / 2
        zone = f"EPSG:{(32600 if lat >= 0 else 32700) + int((lon + 180) // 6) % 60 + 1}"
        if zone in tied:
            return zone
    return tied[0]


def _check_crs(crs: str, where: str):
    from odc.geo.crs import CRS
    from pyproj.exceptions import CRSError

    try:
        out = CRS(crs)
    except (CRSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: unknown CRS {crs!r} ({_one_line(exc)})") from exc
    if out.geographic:
        raise ConfigError(
            f"{where}: CRS {crs} is geographic (degrees); choose a projected CRS in metres such as a UTM zone"
        )
    return out


def output_geobox(items: Sequence[pystac.Item], opts: GridOptions, where: str) -> tuple[GeoBox, str]:
    """The output grid for normalised `items` and `opts`, and a sentence saying what was chosen.

    Refused before any pixel is read: footprints in separate areas when the extent is their
    union (`check_one_area`: a mislabelled CRS, or two regions in one collection), and a grid
    of more than `opts.max_pixels` (default `MAX_PIXELS`) pixels per date."""
    gbox, note, _ = _output_grid(items, opts, where)
    return gbox, note


def _output_grid(items: Sequence[pystac.Item], opts: GridOptions, where: str) -> tuple[GeoBox, str, list]:
    """`output_geobox`, and each item's raster footprint in the grid's CRS (odc-geo boxes)."""
    from affine import Affine
    from odc.geo import xy_
    from odc.geo.geobox import GeoBox
    from odc.geo.geom import BoundingBox, box, unary_union

    crs_counts = collections.Counter(_item_crs(i) for i in items)
    chosen = []
    if opts.crs is None:
        crs_text = _most_common_crs(items, crs_counts)
        if len(crs_counts) > 1:
            tie = sum(n == max(crs_counts.values()) for n in crs_counts.values()) > 1
            why = "tied, the UTM zone of the footprints' centre" if tie else "the most common among the items"
            chosen.append(f"CRS {crs_text} ({why}: {dict(crs_counts)})")
        else:
            chosen.append(f"CRS {crs_text} (the items')")
    else:
        crs_text = opts.crs
        chosen.append(f"CRS {crs_text}")
    crs = _check_crs(crs_text, where)
    native = [i for i in items if _check_crs(_item_crs(i), where) == crs] or list(items)
    transforms = [Affine(*i.properties["proj:transform"][:6]) for i in native]
    res_counts = collections.Counter(abs(t.a) for t in transforms)
    native_res = max(sorted(res_counts), key=lambda r: res_counts[r])
    res = float(opts.resolution) if opts.resolution is not None else native_res
    chosen.append(f"{res:g} m pixels" + (" (native)" if opts.resolution is None else ""))
    # The pixel phase of the items on this CRS and resolution, so that their grid is kept.
    phase = xy_(0.0, 0.0)
    on_grid = [t for t in transforms if abs(abs(t.a) - res) < 1e-9 * res and abs(abs(t.e) - res) < 1e-9 * res]
    if on_grid and _check_crs(_item_crs(native[0]), where) == crs:
        t = on_grid[0]
        phase = xy_((t.c / res) % 1.0, (t.f / res) % 1.0)

    def raster_box(item: pystac.Item):
        t = Affine(*item.properties["proj:transform"][:6])
        ny, nx = item.properties["proj:shape"]
        x0, y0 = t.c, t.f
        x1, y1 = t.c + nx * t.a, t.f + ny * t.e
        g = box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1), _check_crs(_item_crs(item), where))
        return g.to_crs(crs) if g.crs != crs else g

    boxes = [raster_box(i) for i in items]
    if opts.bbox is None and opts.like is None:
        check_one_area(items, boxes, res, where)
    footprint = unary_union(boxes)
    assert footprint is not None
    if opts.bbox is not None:
        region = box(*opts.bbox, "EPSG:4326").to_crs(crs)
        if not region.intersects(footprint):
            lon0, lat0, lon1, lat1 = footprint.to_crs("EPSG:4326").boundingbox
            raise InputError(
                f"{where}: bbox {list(opts.bbox)} lies outside every item (they cover lon {lon0:.4f}..{lon1:.4f}, "
                f"lat {lat0:.4f}..{lat1:.4f})"
            )
        chosen.append(f"extent: bbox {list(opts.bbox)}")
    elif opts.like is not None:
        region = _like_extent(opts.like).to_crs(crs)
        if not region.intersects(footprint):
            raise InputError(f"{where}: the parcels of {opts.like} lie outside every item")
        chosen.append(f"extent: that of {storage.name(storage.location(opts.like))}")
    else:
        region = footprint
        chosen.append(f"extent: the union of {len(items)} items' footprints")
    bb = region.boundingbox
    gbox = GeoBox.from_bbox(BoundingBox(bb.left, bb.bottom, bb.right, bb.top, crs), crs, resolution=res, anchor=phase)
    ny, nx = gbox.shape.y, gbox.shape.x
    chosen.append(f"{nx} x {ny} pixels")
    limit = opts.max_pixels or MAX_PIXELS
    if nx * ny > limit:
        error = InputError if opts.resolution is None and opts.bbox is None and opts.like is None else ConfigError
        extent = chosen[-2].removeprefix("extent: ")
        raise error(
            f"{where}: the grid would be {nx:,} x {ny:,} = {_count(nx * ny)} pixels per date ({res:g} m pixels over "
            f"{extent}, {8 * nx * ny / 1e9:.3g} GB per date of float32 VV and VH), more than the {_count(limit)} "
            "of max_pixels; choose a coarser resolution (--resolution) or a smaller extent (--bbox, --like), or "
            "raise the limit (--max-pixels N, max_pixels= in Python)"
        )
    return gbox, ", ".join(chosen), boxes


def _count(n: float) -> str:
    """A count for a message: 4692 -> "4,692", 4.66e9 -> "4.66e9"."""
    return f"{n:,.0f}" if n < 1e7 else f"{n:.3g}".replace("e+0", "e").replace("e+", "e")


def check_one_area(items: Sequence[pystac.Item], boxes: Sequence[Any], res: float, where: str) -> None:
    """Refuse items whose footprints (`boxes`, odc-geo boxes in one CRS) form separate areas:
    footprints lying within `NEAR_FOOTPRINTS` footprint sides of each other are one area, and
    the items outside the area of the most items are named (an item with a mislabelled CRS
    lies hundreds of kilometres away, and the union of the footprints, the default extent,
    would be a grid of billions of pixels). `res`: the pixel size, to say that grid's size."""
    import shapely
    from shapely.geometry import box as shapely_box

    bounds = np.array([list(b.boundingbox) for b in boxes], dtype=float)  # left, bottom, right, top
    finite = np.isfinite(bounds).all(axis=1)
    sides = np.where(finite, np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]), 0.0)
    grown = [
        shapely_box(*b).buffer(NEAR_FOOTPRINTS / 2 * side, join_style="mitre")
        for b, side, ok in zip(bounds, sides, finite)
        if ok
    ]
    merged = shapely.unary_union(grown) if grown else None
    parts = list(getattr(merged, "geoms", [merged])) if merged is not None else []
    if len(parts) <= 1 and finite.all():
        return
    area = np.full(len(items), -1)
    for k, (b, ok) in enumerate(zip(bounds, finite)):
        if ok:
            centre = shapely.Point((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
            area[k] = next((j for j, part in enumerate(parts) if part.covers(centre)), -1)
    counts = collections.Counter(int(a) for a in area if a >= 0)
    main = max(sorted(counts), key=lambda a: counts[a]) if counts else -1
    odd = [k for k in range(len(items)) if area[k] != main]
    inside = shapely.unary_union([shapely_box(*bounds[k]) for k in range(len(items)) if area[k] == main])

    def named(k: int) -> str:
        item = items[k]
        href = next(iter(item.assets.values())).href if item.assets else ""
        # an item made from a GeoTIFF is named after its file: the file is what the user knows
        name = href if Path(urlparse_path(href)).stem == item.id else f"item {item.id} ({href})"
        crs = _item_crs(item)
        if not finite[k]:
            return f"{name} in {crs}, whose footprint cannot be placed in the grid's CRS"
        km = shapely_box(*bounds[k]).distance(inside) / 1000
        return f"{name} in {crs}, {km:,.0f} km away"

    shown = "; ".join(named(k) for k in odd[:3]) + (f"; and {len(odd) - 3} more" if len(odd) > 3 else "")
    ok = bounds[finite]
    size = ""
    if ok.size:
        nx = (ok[:, 2].max() - ok[:, 0].min()) / res
        ny = (ok[:, 3].max() - ok[:, 1].min()) / res
        size = f"; with them the union of the footprints (the default extent) would be {nx:,.0f} x {ny:,.0f} pixels"
    raise InputError(
        f"{where}: {len(odd)} item(s) lie far from the footprints of the {counts.get(main, 0)} others: {shown}{size}; "
        "remove those files or items, fix their CRS if it is mislabelled, or give the extent with --bbox or --like"
    )


def _like_extent(path: str | Path):
    """The extent of a vector file (parcels) as an odc-geo box in its own CRS."""
    import geopandas as gpd
    from odc.geo.geom import box

    loc = storage.location(path)
    if not storage.exists(loc):
        raise InputError(f"{loc}: no such parcels file (like)")
    try:
        if str(loc).endswith(".parquet"):
            gdf = gpd.read_parquet(str(loc), columns=["geometry"])
        else:
            gdf = gpd.read_file(str(loc), columns=[])
    except Exception as exc:  # GDAL and pyarrow errors have no common base
        raise InputError(f"{loc}: cannot be read as a vector file (like) ({_one_line(exc)})") from exc
    if gdf.crs is None or len(gdf) == 0:
        raise InputError(f"{loc}: {'no CRS' if len(gdf) else 'no features'}; cannot take its extent (like)")
    x0, y0, x1, y1 = gdf.total_bounds
    return box(x0, y0, x1, y1, gdf.crs.to_wkt())


# --- loading -------------------------------------------------------------------------------------


def configure_gdal() -> None:
    """GDAL settings for remote COGs, captured by odc-stac with every graph it builds and restored
    around every read, on whichever worker runs it: `GDAL_REMOTE_OPTIONS`, the S3 endpoint derived
    from `AWS_ENDPOINT_URL` (`storage.gdal_s3_options`), and the user's own GDAL variables."""
    import os

    from odc.stac import configure_rio

    # The user's own GDAL settings, and the non-secret AWS ones GDAL reads (credentials stay on
    # the workers' own environment or instance roles, never in a task graph).
    public = ("AWS_NO_SIGN_REQUEST", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_REQUEST_PAYER")
    # GDAL_CACHEMAX is left out: rasterio wants it as an integer, and GDAL reads it from the
    # environment once per process anyway.
    user = {
        k: v
        for k, v in os.environ.items()
        if (k.startswith(("GDAL_", "CPL_", "AWS_S3_", "VSI_")) or k in public) and k != "GDAL_CACHEMAX"
    }
    options: dict[str, Any] = {**GDAL_REMOTE_OPTIONS, **storage.gdal_s3_options(), **user}
    configure_rio(**options)


def open_items(
    items: Sequence[pystac.Item],
    *,
    grid: GridOptions = GridOptions(),
    chunk: int = DEFAULT_CHUNK,
    start: str | None = None,
    end: str | None = None,
    base: storage.Location | None = None,
    where: str = "items",
    report: Callable[[str], None] | None = None,
) -> xr.Dataset:
    """STAC Items of Sentinel-1 backscatter -> the lazy contract cube `(time, y, x)` in dB on the
    grid `grid` asks for (see the module doc). `base`: the folder relative asset hrefs start
    from. `report` receives one line saying which orbit and grid were chosen (default: log).
    Raises `InputError`/`ConfigError` before any pixel is read for a bad item, orbit or grid
    (the guards of `output_geobox` and `check_tiling`)."""
    import odc.stac

    if chunk < 1:
        raise ConfigError(f"chunk must be a positive number of pixels, found {chunk}")
    say = report or log.info
    items = list(items)
    if not items:
        raise InputError(f"{where}: no items found")
    items = _in_window(items, start, end, where)
    items, orbit_note = choose_orbit(items, grid.orbit, grid.relative_orbits, where)
    normalised = [normalise_item(i, base=base, where=where) for i in items]
    layout = _check_layouts(normalised, where)
    items = [n for n, _ in normalised]
    gbox, grid_note, boxes = _output_grid(items, grid, where)
    check_tiling(gbox, boxes, chunk, grid.max_blocks, where)
    say("; ".join(n for n in (orbit_note, grid_note) if n))
    names = {pol: pol if layout[pol].count == 1 else f"{pol}.{layout[pol].index}" for pol in BANDS}
    configure_gdal()
    try:
        ds = odc.stac.load(
            items,
            bands=list(names.values()),
            geobox=gbox,
            groupby="solar_day",
            resampling=grid.resampling,
            chunks={"time": -1, "y": chunk, "x": chunk},
            fail_on_error=True,
        )
    except (ValueError, KeyError, RuntimeError) as exc:
        raise InputError(f"{where}: odc-stac cannot load the items ({_one_line(exc)})") from exc
    cube = xr.Dataset(
        {pol: _lazy(linear_to_db, ds[name]).astype(np.float32) for pol, name in names.items()},
        coords={"time": ds["time"].values.astype("datetime64[ns]")},
    )
    for pol in BANDS:
        cube[pol].attrs = {"units": "dB", "long_name": f"Sentinel-1 {pol} backscatter"}
    crs = gbox.crs
    assert crs is not None  # output_geobox always sets one
    cube = cube.assign_coords(spatial_ref=ds["spatial_ref"]).rio.write_crs(crs.to_wkt())
    cube = cube.rio.write_transform(gbox.affine)
    if cube.sizes["x"] == 0 or cube.sizes["y"] == 0:
        raise InputError(f"{where}: the requested extent holds no pixel")
    cube.attrs = {
        "grid": f"{f'EPSG:{crs.epsg}' if crs.epsg else crs.to_wkt()} {tuple(gbox.affine)[:6]} {gbox.shape.y}x{gbox.shape.x} {grid.resampling}",
        "asset_hrefs": sorted({a.href for i in items for a in i.assets.values()}),
        # which item and asset a file is, for a read error (dropped by ingest and load)
        "asset_items": {a.href: f"item {i.id}, asset {k}" for i in items for k, a in i.assets.items()},
    }
    return validate_cube(cube, where=where)


def file_reads(gbox: GeoBox, boxes: Sequence[Any], chunk: int) -> int:
    """How many file reads odc-stac makes to load `gbox` in tiles of `chunk` pixels: per item
    (its footprint `boxes`, odc-geo boxes in the grid's CRS), the tiles it covers, for each of
    the two polarisations (odc-stac opens a file once per tile and band)."""
    ny, nx = gbox.shape.y, gbox.shape.x
    inverse = ~gbox.affine
    total = 0
    for b in boxes:
        bb = b.boundingbox
        corners = [inverse * (x, y) for x in (bb.left, bb.right) for y in (bb.bottom, bb.top)]
        cols = [c for c, _ in corners]
        rows = [r for _, r in corners]
        if not all(math.isfinite(v) for v in cols + rows):
            continue
        c0, c1 = max(0, math.floor(min(cols))), min(nx, math.ceil(max(cols)))
        r0, r1 = max(0, math.floor(min(rows))), min(ny, math.ceil(max(rows)))
        if c1 > c0 and r1 > r0:
            total += ((c1 - 1) // chunk - c0 // chunk + 1) * ((r1 - 1) // chunk - r0 // chunk + 1)
    return total * len(BANDS)


def check_tiling(gbox: GeoBox, boxes: Sequence[Any], chunk: int, max_blocks: int | None, where: str) -> None:
    """Refuse a tiling that would take hours before any pixel is read: more than `max_blocks`
    (default `MAX_BLOCKS`) tiles of `chunk` x `chunk` pixels, or, unless `max_blocks` is given,
    tiles under `MIN_CHUNK` pixels that would make more than `SMALL_TILE_READS` file reads
    (`file_reads`: each read costs milliseconds whatever the tile's size)."""
    ny, nx = gbox.shape.y, gbox.shape.x
    tiles_y, tiles_x = -(-ny // chunk), -(-nx // chunk)
    blocks = tiles_y * tiles_x
    limit = max_blocks or MAX_BLOCKS
    if blocks > limit:
        raise ConfigError(
            f"{where}: chunk {chunk} cuts the {nx} x {ny} grid into {blocks:,} tiles ({tiles_x} x {tiles_y}), more "
            f"than the {limit:,} of max_blocks: each tile is a task per band that opens every file it covers; "
            "choose a larger chunk (--chunk; default 512) or a smaller extent, or raise the limit (--max-blocks N, "
            "max_blocks= in Python)"
        )
    if chunk < MIN_CHUNK and blocks > 1 and max_blocks is None:
        reads = file_reads(gbox, boxes, chunk)
        if reads > SMALL_TILE_READS:
            raise ConfigError(
                f"{where}: chunk {chunk} cuts the {nx} x {ny} grid into {blocks:,} tiles of at most {chunk} x {chunk} "
                f"pixels, and each tile opens every file it covers: about {reads:,} file reads of a few milliseconds "
                f"each, for {nx * ny:,} pixels per date; choose a chunk of at least {MIN_CHUNK} pixels (--chunk; "
                "default 512), or give --max-blocks N (max_blocks= in Python) to load it so all the same"
            )


def _in_window(items: list[pystac.Item], start: str | None, end: str | None, where: str) -> list[pystac.Item]:
    parse_time_window(start, end)
    if start is None and end is None:
        return items
    times = pd.DatetimeIndex([_to_datetime64(i.datetime or i.common_metadata.start_datetime) for i in items])
    order = pd.Series(range(len(items)), index=times).sort_index()
    keep = order.loc[start:end].to_numpy()
    if keep.size == 0:
        raise InputError(
            f"{where}: no date between start={start} and end={end}; the items cover "
            f"{str(times.min())[:10]} .. {str(times.max())[:10]}"
        )
    return [items[k] for k in sorted(keep)]


# --- item sources: GeoTIFF files, STAC API -------------------------------------------------------


def items_from_tiffs(files: Sequence[str], *, where: str = "GeoTIFFs") -> list[pystac.Item]:
    """One STAC Item per date of per-date GeoTIFF files, from their headers (date, polarisation
    bands, grid): the few lines of pystac that rio-stac would write, without its dependencies.
    A date's VV and VH may be bands of one file or two single-band files. A date tag that is
    not the date in the file name gives an `InputWarning` naming the files (the tag is used)."""
    import pystac

    from slamgeo.io.readers.geotiff import date_conflicts, describe_tiff, group_dates

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


def urlparse_path(href: str) -> str:
    from urllib.parse import urlparse

    return urlparse(href).path or href


STAC_API_PREFIX = "stac+"


def _not_an_api(url: str, api: str, found: str | None) -> str:
    """The one line for a `stac+` URL that is a static STAC document, not an API's landing page."""
    what = {
        "FeatureCollection": "a static ItemCollection (a FeatureCollection)",
        "Feature": "a single STAC Item",
        "Collection": "a STAC Collection",
        "Catalog": "a static STAC catalogue without item search",
    }.get(found or "", f"a JSON document of type {found}")
    advice = (
        f"to read its items, give the URL without the stac+ prefix ({api}); for a search, give the STAC API's "
        "root URL (its landing page)"
        if found in ("FeatureCollection", "Feature")
        else "give the STAC API's root URL (its landing page, which links to /search)"
    )
    return f"{url}: not a STAC API landing page: it is {what}; {advice}"


def is_stac_api(source: str | Path) -> bool:
    return str(source).startswith((STAC_API_PREFIX + "http://", STAC_API_PREFIX + "https://"))


@dataclass(frozen=True)
class SearchOptions:
    """A STAC API search: collection id, datetime ("2017-01-01/2017-12-31"), lon/lat bbox, and
    an optional signing hook for catalogues that need signed asset URLs ("planetary-computer",
    or a function `Item -> Item`)."""

    collection: str | None = None
    datetime: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    sign: str | Callable[[Any], Any] | None = None
    max_items: int | None = None


def signer(sign: str | Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """The signing hook named by `sign`: None, "planetary-computer" (the `planetary-computer`
    package, from the `pc` extra), or a callable taken as it is."""
    if sign is None or callable(sign):
        return sign
    if sign == "planetary-computer":
        try:
            import planetary_computer
        except ImportError as exc:
            raise ConfigError(
                "sign=planetary-computer needs the planetary-computer package: pip install 'slamgeo[pc]'"
            ) from exc
        return planetary_computer.sign_inplace
    raise ConfigError(f"unknown signing hook {sign!r}; known: planetary-computer")


def search_items(url: str, search: SearchOptions) -> list[pystac.Item]:
    """Items of a STAC API search (pystac-client), signed when asked. `url` may carry the
    `stac+` prefix. Raises `InputError` when the API cannot be reached, is not a STAC API (a
    static ItemCollection, Collection or catalogue served over HTTP), or finds nothing."""
    import pystac_client
    import pystac_client.errors
    import pystac_client.exceptions
    import pystac_client.warnings
    import requests

    api = url[len(STAC_API_PREFIX) :] if url.startswith(STAC_API_PREFIX) else url
    sign = signer(search.sign)
    bbox = list(check_bbox(search.bbox)) if search.bbox is not None else None
    try:
        with warnings.catch_warnings():
            # a static catalogue advertises no conformance: said below, in one line
            warnings.simplefilter("ignore", pystac_client.warnings.PystacClientWarning)
            client = pystac_client.Client.open(api, modifier=sign)
        if not search.collection:
            raise ConfigError(f"{url}: a STAC API search needs a collection (for example sentinel-1-rtc)")
        found = client.search(
            collections=[search.collection], datetime=search.datetime, bbox=bbox, max_items=search.max_items
        )
        items = list(found.items())
    except pystac_client.errors.ClientTypeError as exc:
        kind = re.search(r"found type=(\w+)", str(exc))
        raise InputError(_not_an_api(url, api, kind.group(1) if kind else None)) from exc
    except pystac_client.warnings.DoesNotConformTo as exc:
        raise InputError(_not_an_api(url, api, "Catalog")) from exc
    except (requests.RequestException, pystac_client.exceptions.APIError, OSError) as exc:
        raise InputError(f"{api}: the STAC API cannot be reached or refused the search ({_one_line(exc)})") from exc
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise InputError(f"{api}: not a usable STAC API search ({_one_line(exc)})") from exc
    if not items:
        what = ", ".join(
            f"{k}={v}"
            for k, v in (("collection", search.collection), ("datetime", search.datetime), ("bbox", bbox))
            if v is not None
        )
        raise InputError(f"{api}: no items found ({what})")
    return [copy.copy(i) for i in items]


__all__ = [
    "GDAL_REMOTE_OPTIONS",
    "MAX_BLOCKS",
    "MAX_PIXELS",
    "MIN_CHUNK",
    "GridOptions",
    "SearchOptions",
    "check_bbox",
    "check_one_area",
    "check_tiling",
    "choose_orbit",
    "configure_gdal",
    "file_reads",
    "is_stac_api",
    "items_from_tiffs",
    "normalise_item",
    "open_items",
    "output_geobox",
    "parse_bbox",
    "search_items",
    "signer",
]
