"""The grid of the synthetic scene and its parcels: the swath edge, fields cut the way cadastral
blocks are (`layout`), and `grid_parcels`, a tiling of any number of rectangular parcels for
benchmarks. The model is described in `slamgeo.synth`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize
from shapely import affinity
from shapely.geometry import Polygon, box

from slamgeo.errors import InputError
from slamgeo.synth.crops import CLASSES

if TYPE_CHECKING:
    from slamgeo.synth.scene import Scene

CRS_EPSG = 32630
PIXEL_SIZE = 10.0  # m
ORIGIN = (230_000.0, 4_110_000.0)  # top-left corner (m, EPSG:32630)
MIN_PARCEL_PIXELS = 30


def scene_transform() -> Affine:
    """The affine transform of the scene's grid: 10 m pixels, north up, from `ORIGIN`."""
    return Affine(PIXEL_SIZE, 0.0, ORIGIN[0], 0.0, -PIXEL_SIZE, ORIGIN[1])


def check_size(size: int) -> None:
    """Refuse a scene under 16 x 16 pixels (`InputError`)."""
    if size < 16:
        raise InputError(f"size must be at least 16 pixels, found {size}")


def _swath(rng: np.random.Generator, width: float, height: float) -> tuple[np.ndarray, np.ndarray, str]:
    """The swath edge: a point (x, y) on it, its unit normal pointing to the no-data side
    (scene-relative metres, y up from the bottom), and the side ("east"/"west")."""
    side = "east" if rng.random() < 0.5 else "west"
    tilt = math.radians(rng.uniform(8.0, 15.0)) * (1 if rng.random() < 0.5 else -1)
    cut = rng.uniform(0.06, 0.14) * width
    x_mid = width - cut if side == "east" else cut
    point = np.array([x_mid, height / 2])
    direction = np.array([math.sin(tilt), math.cos(tilt)])  # along the track, near north
    normal = np.array([direction[1], -direction[0]])  # to the east of the line
    if side == "west":
        normal = -normal
    return point, normal, side


def _half_plane(point: np.ndarray, normal: np.ndarray, size: float) -> Polygon:
    """The valid side of the swath line, as a big polygon."""
    d = np.array([-normal[1], normal[0]])
    far = 10 * size
    p = point
    return Polygon([p + far * d, p + far * d - far * normal, p - far * d - far * normal, p - far * d])


def _split(poly: Polygon, angle: float, frac: float, gap: float) -> list[Polygon]:
    """Cut `poly` across its longest extent in the frame rotated by `angle` degrees, at `frac`
    of that extent, removing a strip `gap` metres wide (a road or field margin)."""
    c = poly.centroid
    rot = affinity.rotate(poly, -angle, origin=c)
    minx, miny, maxx, maxy = rot.bounds
    if maxx - minx >= maxy - miny:
        xc = minx + frac * (maxx - minx)
        strip = box(xc - gap / 2, miny - 1, xc + gap / 2, maxy + 1)
    else:
        yc = miny + frac * (maxy - miny)
        strip = box(minx - 1, yc - gap / 2, maxx + 1, yc + gap / 2)
    pieces = rot.difference(strip)
    geoms = list(getattr(pieces, "geoms", [pieces]))
    return [affinity.rotate(g, angle, origin=c) for g in geoms if isinstance(g, Polygon) and not g.is_empty]


def _partition(rng: np.random.Generator, region: Polygon) -> list[Polygon]:
    """Blocks separated by roads, then fields separated by margins (`slamgeo.synth`, Parcels)."""
    blocks: list[Polygon] = []
    stack = [region]
    while stack:
        poly = stack.pop()
        if poly.area <= rng.uniform(40e4, 160e4):
            blocks.append(poly)
            continue
        mrr = poly.minimum_rotated_rectangle
        xy = np.asarray(mrr.exterior.coords)
        e = xy[1] - xy[0]
        angle = math.degrees(math.atan2(e[1], e[0])) + rng.uniform(-20, 20)
        stack.extend(_split(poly, angle, rng.uniform(0.35, 0.65), rng.uniform(15, 25)))
    fields: list[Polygon] = []
    for block in blocks:
        orientation = rng.uniform(0, 180)
        stack = [block]
        while stack:
            poly = stack.pop()
            if poly.area <= math.exp(rng.uniform(math.log(1.5e4), math.log(12e4))):
                fields.append(poly)
                continue
            angle = orientation + rng.normal(0, 1.5)
            stack.extend(_split(poly, angle, rng.uniform(0.15, 0.85), rng.uniform(8, 12)))
    return fields


def _rasterize(polys: list[Polygon], size: int, transform: Affine) -> np.ndarray:
    """Polygon i as the value i + 1 on the pixel centres of a `size` x `size` grid, 0 elsewhere."""
    if not polys:
        return np.zeros((size, size), np.int32)
    return rasterize(
        ((p, i + 1) for i, p in enumerate(polys)),
        out_shape=(size, size),
        transform=transform,
        fill=0,
        all_touched=False,
        dtype="int32",
    )


def layout(rng: np.random.Generator, size: int, transform: Affine) -> tuple[list[Polygon], np.ndarray, np.ndarray, str]:
    """Parcel polygons (map coordinates), parcel-id raster (size, size) int32, swath (valid)
    mask (size, size) bool and the side of the swath edge ("east"/"west")."""
    extent = size * PIXEL_SIZE
    point, normal, side = _swath(rng, extent, extent)
    # Pixel centres relative to the bottom-left corner, y up.
    centres = (np.arange(size) + 0.5) * PIXEL_SIZE
    xr_, yr_ = centres[None, :], extent - centres[:, None]
    valid = ((xr_ - point[0]) * normal[0] + (yr_ - point[1]) * normal[1]) < 0
    # Fields stop 15 m short of the swath edge (pixel centres beyond it are no data); they run
    # on to the scene's own edges, cut there as a real scene cuts them.
    region = box(0, 0, extent, extent).intersection(_half_plane(point - 15.0 * normal, normal, extent))
    polys = [p for p in _partition(rng, region) if p.area > 0]
    x0, y_top = transform.c, transform.f
    polys = [affinity.translate(p, x0, y_top - extent) for p in polys]
    raster = _rasterize(polys, size, transform)
    counts = np.bincount(raster.ravel(), minlength=len(polys) + 1)[1:]
    keep = [i for i in range(len(polys)) if counts[i] >= MIN_PARCEL_PIXELS]
    # Number from north-west to south-east: the first pixel of each parcel in raster order.
    flat = raster.ravel()
    first = np.full(len(polys) + 1, flat.size)
    np.minimum.at(first, flat, np.arange(flat.size))
    keep.sort(key=lambda i: first[i + 1])
    polys = [polys[i] for i in keep]
    return polys, _rasterize(polys, size, transform), valid, side


# --- a tiling of rectangular parcels, for benchmarks ------------------------------------------


def check_grid_parcels(n: int) -> None:
    """Refuse a negative number of grid parcels (`InputError`); 0 is none."""
    if n < 0:
        raise InputError(f"the number of grid parcels must be 0 (none) or more, found {n}")


def grid_parcels(
    scene: Scene | tuple[Affine, int] | tuple[Affine, tuple[int, int]], n: int, *, margin: float = 0.1
) -> gpd.GeoDataFrame:
    """`n` rectangular parcels tiling the scene, for benchmarks with many parcels.

    `scene`: a `Scene`, or (transform, size) or (transform, (height, width)) of a north-up grid
    in EPSG:32630. The grid has round(sqrt(n)) rows of cells (nearly square), the `n` cells
    dealt over them as evenly as possible, each row split into equal cells; each cell shrunk
    by `margin` times its shorter side on every side. Columns: parcel_id (1..n, from north-west
    to south-east, row by row), crop and class_id: the class of the scene parcel under the cell's
    centre, or of the nearest parcel pixel when the centre is on no parcel (round-robin over
    `CLASSES` without a Scene, or when it has no parcel); geometry, in EPSG:32630.
    """
    from scipy.ndimage import distance_transform_edt

    class_grid: np.ndarray | None
    if isinstance(scene, tuple | list):
        transform, shape = scene
        ny, nx = (shape, shape) if isinstance(shape, int | np.integer) else (int(shape[0]), int(shape[1]))
        class_grid = None
    else:
        transform = scene.cube.rio.transform()
        ny, nx = scene.parcel_id.shape
        class_grid = scene.class_id.values
    if int(n) != n or n < 1:
        raise InputError(f"the number of grid parcels must be a positive integer, found {n}")
    if not 0 <= margin < 0.5:
        raise InputError(f"margin must be in [0, 0.5) of a cell's side, found {margin}")
    if transform.b != 0 or transform.d != 0 or transform.a <= 0 or transform.e >= 0:
        raise InputError(f"grid_parcels needs a north-up grid, found the transform {tuple(transform)[:6]}")
    n = int(n)
    width, height = nx * transform.a, ny * -transform.e
    n_rows = int(min(n, max(1, round(math.sqrt(n * height / width)))))
    per_row = np.full(n_rows, n // n_rows)
    per_row[: n % n_rows] += 1
    row = np.repeat(np.arange(n_rows), per_row)
    col = np.arange(n) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    cw, ch = width / per_row[row], height / n_rows
    x0 = transform.c + col * cw
    y1 = transform.f - row * ch
    m = margin * np.minimum(cw, ch)
    geoms = shapely.box(x0 + m, y1 - ch + m, x0 + cw - m, y1 - m)
    labelled = class_grid is not None and bool((class_grid >= 0).any())
    if class_grid is not None and labelled:
        idx = distance_transform_edt(class_grid < 0, return_distances=False, return_indices=True)
        nearest = class_grid[tuple(idx)]
        r = np.clip(((y1 - ch / 2 - transform.f) / transform.e).astype(int), 0, ny - 1)
        c = np.clip(((x0 + cw / 2 - transform.c) / transform.a).astype(int), 0, nx - 1)
        cls = nearest[r, c].astype(int)
    else:
        cls = np.arange(n) % len(CLASSES)
    return gpd.GeoDataFrame(
        {"parcel_id": np.arange(1, n + 1), "crop": np.asarray(CLASSES)[cls], "class_id": cls},
        geometry=geoms,
        crs=f"EPSG:{CRS_EPSG}",
    )


def write_grid_parcels(parcels: gpd.GeoDataFrame, path: Path | str) -> Path:
    """Write `grid_parcels` output as a GeoPackage (layer "parcels"), with pyogrio and Arrow."""
    path = Path(path)
    parcels.to_file(path, layer="parcels", driver="GPKG", engine="pyogrio", use_arrow=True)
    return path


__all__ = [
    "CRS_EPSG",
    "MIN_PARCEL_PIXELS",
    "ORIGIN",
    "PIXEL_SIZE",
    "grid_parcels",
    "layout",
    "scene_transform",
    "write_grid_parcels",
]
