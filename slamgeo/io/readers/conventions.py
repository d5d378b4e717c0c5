"""How catalogues lay Sentinel-1 backscatter out in STAC Items, as data (`CONVENTIONS`), and the
one place that applies them: `normalise_item` (which assets and bands hold VV and VH, their
no-data value, their units) and `to_db` (the loaded band in dB).

A convention is a row of `CONVENTIONS`, tried in order on each Item's asset keys (in any case):

- `linear`: assets `vv` and `vh` (Planetary Computer's `sentinel-1-rtc`; `VV`/`VH` too, and the
  Items slamgeo makes from GeoTIFF files), float32 linear power, no data -32768;
- `db`: assets `vv_db` and `vh_db`, backscatter already in dB, no data NaN;
- `multiband`: one asset `backscatter` whose bands are described VV and VH, linear power.

Whatever the row, a band whose STAC `raster:bands` entry has `unit` "dB" (any case) is read as dB.
The no-data value of a band is the Item's (`raster:bands` `nodata`), else its file header's, else
the row's (0 for unsigned-integer files). Linear power is resampled (bilinear by default) before
it becomes dB; a band in dB is resampled in dB, so that on a grid other than the files' own the
two differ by the resampling of a logarithm (on their own grid, or with nearest resampling, they
are the same cube within float32 rounding).

Rasters hold what their row says whatever their data type (a DN encoding is caught, and named,
by the plausibility check of ingest). Items without the projection extension get it from their
files' headers; local files' headers are read in any case, so that an asset that is not a
raster, or a VH that is the VV file, is named here.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import xarray as xr

from slamgeo.errors import InputError
from slamgeo.io import storage
from slamgeo.io.cube import BANDS, linear_to_db
from slamgeo.io.readers._common import _lazy, _one_line, resolve_href, urlparse_path
from slamgeo.io.readers.grid import lonlat_footprint

if TYPE_CHECKING:
    import pystac

Units = Literal["linear", "dB"]
DB_UNITS = ("db", "decibel", "decibels")  # `raster:bands` units that say dB (compared in lower case)


@dataclass(frozen=True)
class Convention:
    """How one family of catalogues lays Sentinel-1 backscatter out in an Item's assets.

    `assets`: the asset key of each polarisation (matched in any case), or `multiband`: the key
    of one asset whose bands are described VV and VH. `units`: of the pixel values, "linear"
    power or "dB". `nodata`: the no-data value of float files when neither the Item's
    `raster:bands` nor the file's header gives one (unsigned-integer files: 0). `note`: said
    in the message listing what an Item may hold."""

    name: str
    assets: Mapping[str, str] = field(default_factory=dict)
    multiband: str | None = None
    units: Units = "linear"
    nodata: float = -32768.0
    note: str = ""

    def expected(self) -> str:
        """How a message names this row: "'vv' and 'vh' (linear power, ...)"."""
        what = (
            " and ".join(repr(self.assets[p]) for p in BANDS)
            if self.assets
            else f"one {self.multiband!r} GeoTIFF with bands described VV and VH"
        )
        return f"{what} ({self.note})" if self.note else what


CONVENTIONS: tuple[Convention, ...] = (
    Convention(
        "linear",
        assets={"VV": "vv", "VH": "vh"},
        note="linear power, as Planetary Computer sentinel-1-rtc; any case",
    ),
    Convention("db", assets={"VV": "vv_db", "VH": "vh_db"}, units="dB", nodata=math.nan, note="dB"),
    Convention("multiband", multiband="backscatter", note="linear power"),
)


@dataclass(frozen=True)
class Layout:
    """How one polarisation sits in an Item's file: the file's band count, its 1-based band,
    data type and units (one layout per polarisation across the Items of a load)."""

    count: int
    index: int
    dtype: str
    units: Units = "linear"


# --- which convention an Item follows ------------------------------------------------------------


def item_where(item: pystac.Item, where: str) -> str:
    return f"{where} (item {item.id})" if where else f"item {item.id}"


def match(item: pystac.Item, label: str) -> tuple[Convention, dict[str, tuple[str, int | None]]]:
    """The first row of `CONVENTIONS` that `item` follows, and `{pol: (asset key, band or None)}`.
    A band of None means "read the file's band descriptions" (a multi-band file); a band given
    by the Item (`slamgeo:band`, on the Items made from GeoTIFF files) is taken as it is.
    Raises `InputError` naming the Item for assets of one polarisation only, or no known assets."""
    keys = {k.lower(): k for k in item.assets}
    for conv in CONVENTIONS:
        if conv.assets:
            found = {pol: keys[a.lower()] for pol, a in conv.assets.items() if a.lower() in keys}
            if len(found) == len(conv.assets):
                return conv, {pol: (k, item.assets[k].extra_fields.get("slamgeo:band")) for pol, k in found.items()}
            if found:
                missing = [b for b in BANDS if b not in found]
                raise InputError(
                    f"{label}: mixed polarisations: asset(s) {sorted(found.values())} but no {'/'.join(missing)}; "
                    f"slamgeo needs both VV and VH on every date"
                )
        elif conv.multiband is not None and conv.multiband.lower() in keys:
            return conv, {pol: (keys[conv.multiband.lower()], None) for pol in BANDS}
    expected = [c.expected() for c in CONVENTIONS]
    raise InputError(
        f"{label}: no Sentinel-1 backscatter assets among {sorted(item.assets)}; expected "
        f"{', '.join(expected[:-1])}, or {expected[-1]}"
    )


def band_units(conv: Convention, band: Mapping[str, Any]) -> Units:
    """The units of one band: dB when its `raster:bands` entry says so, else the row's."""
    unit = str(band.get("unit") or "").strip().lower()
    return "dB" if unit in DB_UNITS else conv.units


# --- the one place conventions are applied -------------------------------------------------------


def _asset_bands(asset: pystac.Asset) -> list[dict]:
    bands = asset.extra_fields.get("raster:bands")
    return list(bands) if isinstance(bands, list) else []


def normalise_item(
    item: pystac.Item, *, base: storage.Location | None = None, where: str = "", footprints: dict | None = None
) -> tuple[pystac.Item, dict[str, Layout]]:
    """A copy of `item` in one form, whatever its convention: assets `VV` and `VH` with absolute
    hrefs, `raster:bands` (nodata, data type) for every band of their file, and the projection
    fields (`proj:code`, `proj:shape`, `proj:transform`) on the item. Missing facts are read from
    the files' headers. Returns the copy and, per polarisation, where it sits in its file and in
    which units. `footprints`: a dict shared by the items of one load (`lonlat_footprint`'s
    memo)."""
    label = item_where(item, where)
    if item.datetime is None and item.common_metadata.start_datetime is None:
        raise InputError(f"{label}: no datetime or start_datetime")
    conv, pols = match(item, label)
    out = item.clone()
    out.assets = {}
    # Hrefs are resolved here; without its self link (an API's URL) pystac and odc-stac take
    # them as they are instead of resolving an absolute path against that URL again.
    out.links = [link for link in out.links if link.rel != "self"]
    layouts: dict[str, Layout] = {}
    header: dict[str, Any] = {}  # the headers whose facts are used
    checks: dict[str, Any] = {}  # the headers read only to check the file
    rasters: dict[str, tuple[str, str, int]] = {}  # pol -> (asset key, href, band)
    for pol, (key, index) in pols.items():
        asset = item.assets[key]
        href = asset.href if base is None else resolve_href(asset.href, base)
        what = f"{label}: asset {key!r} ({href})"
        local = not (storage.is_url(href) or href.startswith("/vsi"))
        if local and not Path(href).exists():
            raise InputError(f"{label}: asset {key!r} not found at {href}")
        _check_raster_kind(asset, href, what)
        given = _asset_bands(asset)  # the Item's own description of the file's bands
        bands = list(given)
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
        units = band_units(conv, given[index - 1] if index <= len(given) else {})
        if h is not None:
            bands = [{"nodata": h["nodata"], "data_type": h["dtype"]} for _ in range(h["count"])]
        dtype = str(bands[index - 1].get("data_type") or (h["dtype"] if h else "float32"))
        if bands[index - 1].get("nodata") is None:
            bands[index - 1] = {**bands[index - 1], "nodata": 0 if dtype.startswith("uint") else conv.nodata}
        fields = {k: v for k, v in asset.extra_fields.items() if k not in ("raster:bands", "slamgeo:band")}
        fields["raster:bands"] = bands
        if h is not None:
            fields.update({"proj:code": h["crs"], "proj:shape": h["shape"], "proj:transform": h["transform"]})
        out.add_asset(pol, type(asset)(href=href, media_type=asset.media_type, roles=["data"], extra_fields=fields))
        layouts[pol] = Layout(count=len(bands), index=index, dtype=dtype, units=units)
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
    out.geometry, out.bbox = lonlat_footprint(out, footprints)
    return out, layouts


def check_layouts(layouts: Sequence[tuple[pystac.Item, dict[str, Layout]]], where: str) -> dict[str, Layout]:
    """One band layout, data type and units per polarisation across the items (odc-stac loads
    one band name per polarisation, converted to dB in one way)."""
    first_item, first = layouts[0]
    for item, lay in layouts[1:]:
        for pol in BANDS:
            if lay[pol] != first[pol]:
                raise InputError(
                    f"{item_where(item, where)}: {pol} is band {lay[pol].index} of {lay[pol].count} "
                    f"({lay[pol].dtype}, {lay[pol].units}), but band {first[pol].index} of {first[pol].count} "
                    f"({first[pol].dtype}, {first[pol].units}) in item {first_item.id}; the items must share one layout"
                )
    return first


def _db_values(values: np.ndarray, nodata: float) -> np.ndarray:
    """dB values as float32, the no-data value (when it is a number) as NaN."""
    out = np.asarray(values, dtype=np.float32)
    return np.where(out == np.float32(nodata), np.float32(np.nan), out) if math.isfinite(nodata) else out


def power_to_db(power: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """Linear power `(..., y, x)` as odc-stac loaded it -> float32 dB: `slamgeo.io.cube.linear_to_db`
    (by date, through reused buffers), with odc-stac's fill value `nodata` as NaN when it is
    positive (odc-stac leaves it in place; a non-positive one is NaN through the logarithm)."""
    return linear_to_db(power, nodata=nodata)


def to_db(band: xr.DataArray, layout: Layout) -> xr.DataArray:
    """A band as odc-stac loaded it -> float32 dB (lazy): linear power through `power_to_db`
    (the values of `slamgeo.io.cube.linear_to_db`: the no-data value, zero and negative values
    become NaN); a band in dB as it is, its no-data value (odc-stac's `nodata` attribute) as NaN."""
    nodata = band.attrs.get("nodata")
    nodata = math.nan if nodata is None else float(nodata)
    if layout.units == "linear":
        return _lazy(functools.partial(power_to_db, nodata=nodata), band)
    return _lazy(functools.partial(_db_values, nodata=nodata), band).astype(np.float32)


# --- checks of the files an Item names -----------------------------------------------------------


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


def _header_env(href: str) -> dict[str, str]:
    """GDAL settings for reading one header: the S3 endpoint, and for a local file
    `GDAL_DISABLE_READDIR_ON_OPEN=TRUE` (unless the user's environment sets it): GDAL then
    probes the file's side-cars (`.aux.xml`, `.ovr`, `.msk`) one by one instead of listing
    its folder on every open, which in a folder of a whole archive's files costs a fifth of
    the open; the side-cars found, and so the header's facts, are the same (`EMPTY_DIR`
    would ignore them)."""
    env = storage.gdal_s3_options()
    local = not (storage.is_url(href) or href.startswith("/vsi"))
    if local and "GDAL_DISABLE_READDIR_ON_OPEN" not in os.environ:
        env = {**env, "GDAL_DISABLE_READDIR_ON_OPEN": "TRUE"}
    return env


def _header_facts(href: str, label: str) -> dict[str, Any]:
    import rasterio
    import rasterio.errors

    try:
        with rasterio.Env(**_header_env(href)), rasterio.open(href) as src:
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


__all__ = [
    "CONVENTIONS",
    "Convention",
    "Layout",
    "check_layouts",
    "match",
    "normalise_item",
    "to_db",
]
