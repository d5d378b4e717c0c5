"""Parcels on a grid: `rasterize_parcels` burns checked parcels (`slamgeo.io.parcels`) into a
lazy `parcel_id (y, x)` raster on the results' or the cube's grid, one Dask task per tile.

Policies (recorded in the raster's attributes):
- a pixel belongs to a parcel when its centre is inside it (`all_touched=False`, the default)
  or when the parcel touches it (`all_touched=True`);
- where parcels overlap, a pixel goes to the smallest parcel (by area; equal areas: the larger
  id), `OVERLAP_RULE`; 0 (`NO_PARCEL`) where there is no parcel.
"""

from __future__ import annotations

from typing import cast

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import rasterio.features
import rasterio.windows
import shapely
import xarray as xr

from slamgeo.errors import InputError
from slamgeo.io.cube import GRID_DIMS
from slamgeo.io.parcels import NO_PARCEL
from slamgeo.jobs.runtime import current_client
from slamgeo.schema import CHUNK, ID_COLUMN

OVERLAP_RULE = "smallest parcel wins (equal areas: larger id)"


def _rasterize_tile(payload, shape, transform, all_touched: bool) -> np.ndarray:
    geoms, values = payload
    return _rasterize_block(geoms, np.asarray(values).tolist(), shape, transform, all_touched)


def _rasterize_block(geoms, values, shape, transform, all_touched: bool) -> np.ndarray:
    if len(geoms) == 0:
        return np.full(shape, NO_PARCEL, dtype=np.int32)
    return rasterio.features.rasterize(
        zip(geoms, values),
        out_shape=shape,
        transform=transform,
        fill=NO_PARCEL,
        all_touched=all_touched,
        dtype="int32",
    )


def _grid_chunks(like: xr.Dataset | xr.DataArray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if isinstance(like, xr.Dataset):  # its variables may be chunked differently: use one grid variable
        like = like[[v for v in like.data_vars if set(GRID_DIMS) <= set(like[v].dims)][0]]
    chunks = like.chunksizes if like.chunks else {}
    return cast(
        tuple[tuple[int, ...], tuple[int, ...]],  # one entry per GRID_DIMS (y, x)
        tuple(
            chunks.get(d) or tuple(min(CHUNK, like.sizes[d] - s) for s in range(0, like.sizes[d], CHUNK))
            for d in GRID_DIMS
        ),
    )


def rasterize_parcels(
    parcels: gpd.GeoDataFrame,
    like: xr.Dataset | xr.DataArray,
    *,
    all_touched: bool = False,
    id_column: str = ID_COLUMN,
) -> xr.DataArray:
    """`parcel_id (y, x)` int32 on `like`'s grid: the id of the parcel each pixel belongs to,
    0 for none. Chunked like `like` (tiles of 512 when it is not chunked); lazy, each task
    burns only the parcels that meet its tile (rasterio.features.rasterize).

    Pixel rule: the centre is inside (`all_touched=False`) or the parcel touches the pixel
    (`all_touched=True`). Overlaps: the smallest parcel wins (equal areas: the larger id).
    Parcels in another CRS are reprojected. Raises `InputError` for a sample-form `like`, a
    `like` without CRS, or parcels that do not overlap the grid.
    """
    if not set(GRID_DIMS) <= set(like.dims):
        raise InputError(
            "rasterize_parcels: the sample form of a cube carries its labels already; nothing to rasterise"
        )
    crs = like.rio.crs
    if crs is None:
        raise InputError("rasterize_parcels: the grid has no CRS (expected a CF grid mapping 'spatial_ref')")
    if parcels.crs is None:
        raise InputError("rasterize_parcels: the parcels have no CRS")
    if not parcels.crs.equals(crs):
        parcels = parcels.to_crs(crs)
    transform = like.rio.transform()
    bounds = like.rio.bounds()
    grid_box = shapely.box(*bounds)
    hits = parcels.sindex.query(grid_box, predicate="intersects")
    if hits.size == 0:
        pb = tuple(round(v, 3) for v in parcels.total_bounds)
        raise InputError(
            f"the parcels do not overlap the cube: parcel bounds {pb}, grid bounds "
            f"{tuple(round(v, 3) for v in bounds)} (CRS {crs.to_string()})"
        )
    # burn order: largest first, so that the smallest parcel is burnt last and wins overlaps
    area = parcels.geometry.area.to_numpy()
    ids = parcels[id_column].to_numpy().astype(np.int64)
    order = np.lexsort((ids, -area))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    geoms = parcels.geometry.to_numpy()
    ychunks, xchunks = _grid_chunks(like)
    tiles = []  # (row, col, (h, w), transform, the tile's parcels as (geometries, ids))
    r0 = 0
    for i, h in enumerate(ychunks):
        c0 = 0
        for j, w in enumerate(xchunks):
            window = rasterio.windows.Window(c0, r0, w, h)
            box = shapely.box(*rasterio.windows.bounds(window, transform))
            sel = parcels.sindex.query(box, predicate="intersects")
            sel = sel[np.argsort(rank[sel], kind="stable")]
            tiles.append((i, j, (h, w), rasterio.windows.transform(window, transform), (list(geoms[sel]), ids[sel])))
            c0 += w
        r0 += h
    payloads: list = [t[4] for t in tiles]
    client = current_client()
    if client is not None:  # the polygons go to the workers as data, not inside the task graph
        payloads = client.scatter(payloads)
    blocks: dict = {}
    for (i, j, shape, wt, _), payload in zip(tiles, payloads):
        block = dask.delayed(_rasterize_tile, pure=True)(payload, shape, wt, all_touched)
        blocks[i, j] = da.from_delayed(block, shape=shape, dtype=np.int32)
    data = da.block([[blocks[i, j] for j in range(len(xchunks))] for i in range(len(ychunks))])
    coords = {"y": like["y"], "x": like["x"]}
    if "spatial_ref" in like.coords:
        coords["spatial_ref"] = like.coords["spatial_ref"]
    out = xr.DataArray(data, dims=GRID_DIMS, coords=coords, name="parcel_id")
    out.attrs = {
        "long_name": "parcel id",
        "flag_meaning": "0: no parcel",
        "all_touched": int(all_touched),
        "overlap_rule": OVERLAP_RULE,
    }
    if "spatial_ref" in out.coords:
        out.attrs["grid_mapping"] = "spatial_ref"
    return out


__all__ = ["OVERLAP_RULE", "rasterize_parcels"]
