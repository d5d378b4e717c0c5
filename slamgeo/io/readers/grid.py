"""The output grid of the archive loader, and the guards that refuse a grid or a tiling before
any pixel is read.

`GridOptions` is what a user asks for (CRS, pixel size, extent as a lon/lat bbox or the extent of
a parcels file, orbit, resampling, the guards' limits). `output_geobox` makes the `odc.geo`
GeoBox from the normalised Items (`slamgeo.io.readers.conventions.normalise_item`): the CRS
(default: the most common among the items), the pixel size (default: the items' native one) and
the extent (default: the union of the items' raster footprints). In the items' own CRS and
resolution the grid keeps their pixel phase, so a stack already on one grid is read as it is.
Guards: footprints far from the others when the extent is their union (`check_one_area`), a grid
over `max_pixels` per date, a tiling over `max_blocks` tiles or into tiny tiles that would open
files thousands of times (`check_tiling`).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from slamgeo.errors import ConfigError, InputError
from slamgeo.io import storage
from slamgeo.io.cube import BANDS
from slamgeo.io.readers._common import _one_line, urlparse_path

if TYPE_CHECKING:
    import pystac
    from odc.geo.geobox import GeoBox

Orbit = Literal["ascending", "descending"]
Resampling = Literal["bilinear", "nearest"]
# Guards against a grid that would take hours or fill the disk, checked before any pixel is read
# (each may be raised with the option named in its message):
MAX_PIXELS = 1_000_000_000  # pixels of the grid per date (4 GB per date and band in float32)
MAX_BLOCKS = 100_000  # spatial tiles of `chunk` x `chunk` pixels (each one task per band)
MIN_CHUNK = 16  # pixels: tiles smaller than this ...
SMALL_TILE_READS = 10_000  # ... are refused above this many file reads (a few ms each, any tile size)
NEAR_FOOTPRINTS = 2.0  # footprints farther apart than this many footprint sides are separate areas


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
    gbox, note, _ = output_grid(items, opts, where)
    return gbox, note


def output_grid(items: Sequence[pystac.Item], opts: GridOptions, where: str) -> tuple[GeoBox, str, list]:
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


def lonlat_footprint(item: pystac.Item, memo: dict | None = None) -> tuple[dict, list[float]]:
    """GeoJSON geometry and bbox (lon/lat) of an item's raster, from its projection fields.
    `memo`: a dict kept by the caller across the items of one load, so that rasters on one
    grid (every date of a slice) are projected once; each call returns its own copy."""
    from affine import Affine
    from odc.geo.geom import box

    key = (_item_crs(item), tuple(item.properties["proj:transform"][:6]), tuple(item.properties["proj:shape"]))
    if memo is None or key not in memo:
        t = Affine(*key[1])
        ny, nx = key[2]
        xs, ys = (t.c, t.c + nx * t.a), (t.f, t.f + ny * t.e)
        g = box(min(xs), min(ys), max(xs), max(ys), key[0]).to_crs("EPSG:4326")
        if memo is None:
            return g.json, list(g.boundingbox)
        memo[key] = (g.json, list(g.boundingbox))
    geometry, bbox = memo[key]
    return copy.deepcopy(geometry), list(bbox)


__all__ = [
    "MAX_BLOCKS",
    "MAX_PIXELS",
    "MIN_CHUNK",
    "GridOptions",
    "Orbit",
    "Resampling",
    "check_bbox",
    "check_one_area",
    "check_tiling",
    "file_reads",
    "lonlat_footprint",
    "output_geobox",
    "parse_bbox",
]
