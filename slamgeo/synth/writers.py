"""`write_scene`: a synthetic scene written the way real products arrive (one GeoTIFF per date,
a STAC ItemCollection, a GeoPackage of parcels) with its ground truth, into a folder that
appears whole or not at all. `write_products` is the frame `write_archive` shares."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from affine import Affine
from shapely.geometry import box

from slamgeo.io.records import record_json
from slamgeo.io.scene import GRID_PARCELS_FILE, SCENE_FILES, SceneMeta
from slamgeo.schema import SCENE_MARKER
from slamgeo.synth.crops import CLASSES, EVENTS, calendars_json
from slamgeo.synth.parcels import CRS_EPSG, check_grid_parcels, grid_parcels, write_grid_parcels
from slamgeo.synth.scene import Scene

TIFF_BLOCK = 256
MISSION = "Sentinel-1 (synthetic, slamgeo)"
UNITS = "linear power (sigma0)"
# Tiled GeoTIFF, DEFLATE: the creation options of the scene's rasters.
_TILED: dict[str, Any] = dict(tiled=True, blockxsize=TIFF_BLOCK, blockysize=TIFF_BLOCK, compress="deflate")


def grid_profile(shape: tuple[int, int], count: int, dtype: str, epsg: int, transform: Affine) -> dict[str, Any]:
    """The rasterio profile of a raster of `count` bands of `shape` (height, width) on a grid."""
    return dict(width=shape[1], height=shape[0], count=count, dtype=dtype, crs=f"EPSG:{epsg}", transform=transform)


def describe_band(dst: Any, index: int, band: str) -> None:
    """Name band `index` (1-based) of the open dataset `dst` as the polarisation `band`."""
    dst.set_band_description(index, band)
    dst.update_tags(index, POLARIZATION=band, UNITS=UNITS)


def _tif_name(day: np.datetime64) -> str:
    return f"S1_VVVH_{str(day)[:10].replace('-', '')}.tif"


def _write_tiffs(scene: Scene, folder: Path) -> list[Path]:
    """One GeoTIFF per date in `folder`: bands VV, VH, linear power float32, nodata 0."""
    import rasterio

    cube = scene.cube
    shape = (cube.sizes["y"], cube.sizes["x"])
    profile = dict(
        driver="GTiff",
        **grid_profile(shape, 2, "float32", CRS_EPSG, cube.rio.transform()),
        nodata=0.0,
        **_TILED,
        predictor=3,
        zlevel=1,
    )
    folder.mkdir()
    paths = []
    for k, day in enumerate(cube["time"].values.astype("datetime64[D]")):
        path = folder / _tif_name(day)
        iso = str(day)
        with rasterio.open(path, "w", **profile) as dst:
            for b, band in enumerate(("VV", "VH"), start=1):
                db = np.asarray(cube[band].isel(time=k).values, np.float64)
                lin = np.where(np.isnan(db), 0.0, 10 ** (db / 10)).astype(np.float32)
                dst.write(lin, b)
                describe_band(dst, b, band)
            dst.update_tags(
                ACQUISITION_DATE=iso,
                TIFFTAG_DATETIME=iso.replace("-", ":") + " 00:00:00",
                MISSION=MISSION,
                RAIN_EVENT=str(pd.Timestamp(day) in scene.rain_dates),
            )
        paths.append(path)
    return paths


def _write_truth(scene: Scene, path: Path) -> None:
    """truth.tif: bands parcel_id and class_id, int32."""
    import rasterio

    pid = scene.parcel_id.values.astype(np.int32)
    profile = grid_profile(pid.shape, 2, "int32", CRS_EPSG, scene.cube.rio.transform())
    with rasterio.open(path, "w", driver="GTiff", **profile, **_TILED) as dst:
        dst.write(pid, 1)
        dst.write(scene.class_id.values.astype(np.int32), 2)
        dst.set_band_description(1, "parcel_id")
        dst.set_band_description(2, "class_id")
        dst.update_tags(CLASSES=json.dumps(CLASSES), NO_PARCEL="parcel_id 0, class_id -1", ALL_TOUCHED="FALSE")


def footprint_wgs84(valid: np.ndarray, transform: Affine, epsg: int) -> Any:
    """The footprint of the valid pixels of a north-up grid, in WGS84: the convex hull (the
    swath cut is convex) of the corners of the first and last valid pixel of each row, densified
    every 500 m before it is transformed; the raster's bounds when no pixel is valid."""
    from pyproj import Transformer

    ny, nx = valid.shape
    rows = np.flatnonzero(valid.any(axis=1))
    if rows.size:
        first = valid[rows].argmax(axis=1)
        last = nx - 1 - valid[rows, ::-1].argmax(axis=1)
        cols = np.concatenate([first, first, last + 1, last + 1])
        rr = np.concatenate([rows, rows + 1] * 2)
        xs, ys = transform.c + cols * transform.a, transform.f + rr * transform.e  # north-up grid
        hull = shapely.MultiPoint(np.column_stack([xs, ys])).convex_hull
    else:
        x0, y0 = transform.c, transform.f
        hull = box(x0, y0 + ny * transform.e, x0 + nx * transform.a, y0)
    hull = shapely.segmentize(hull, 500.0)
    to_wgs = Transformer.from_crs(epsg, 4326, always_xy=True)
    return shapely.transform(hull, lambda a: np.column_stack(to_wgs.transform(a[:, 0], a[:, 1])))


def _write_stac(scene: Scene, tiffs: list[Path], path: Path) -> None:
    """The STAC ItemCollection of the GeoTIFFs `tiffs`, one item a date, relative asset hrefs."""
    import pystac
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.sar import FrequencyBand, Polarization, SarExtension

    cube = scene.cube
    transform = cube.rio.transform()
    valid = ~np.isnan(cube["VV"].isel(time=0).values)
    ny, nx = valid.shape
    geom = footprint_wgs84(valid, transform, CRS_EPSG)
    items = []
    for k, tif in enumerate(tiffs):
        day = pd.Timestamp(cube["time"].values[k])
        item = pystac.Item(
            id=tif.stem,
            geometry=shapely.geometry.mapping(geom),
            bbox=list(geom.bounds),
            datetime=day.tz_localize("UTC").to_pydatetime(),
            properties={
                "constellation": "sentinel-1",
                "slamgeo:synthetic": True,
                "slamgeo:rain_event": day in scene.rain_dates,
            },
        )
        proj = ProjectionExtension.ext(item, add_if_missing=True)
        proj.apply(epsg=CRS_EPSG, shape=[ny, nx], transform=list(transform)[:6], bbox=list(cube.rio.bounds()))
        sar = SarExtension.ext(item, add_if_missing=True)
        sar.apply(
            instrument_mode="IW",
            frequency_band=FrequencyBand.C,
            polarizations=[Polarization.VV, Polarization.VH],
            product_type="GRD",
            looks_equivalent_number=float(scene.cube.attrs.get("enl", 4.4)),
        )
        item.add_asset(
            "backscatter",
            pystac.Asset(
                href=f"{tif.parent.name}/{tif.name}",
                media_type="image/tiff; application=geotiff",
                roles=["data"],
                title="VV, VH backscatter (linear power, float32, nodata 0)",
            ),
        )
        items.append(item)
    pystac.ItemCollection(items).save_object(dest_href=str(path))


def _write_ground_truth(scene: Scene, folder: Path, meta: dict[str, Any]) -> None:
    """truth.tif, parcels.gpkg, phenology.csv and scene.json (with `meta` added) in `folder`."""
    _write_truth(scene, folder / SCENE_FILES["truth"])
    scene.parcels.to_file(folder / SCENE_FILES["parcels"], layer="parcels", driver="GPKG")
    phen = scene.phenology.copy()
    for e in EVENTS:
        phen[e] = phen[e].dt.strftime("%Y-%m-%d")
    phen.to_csv(folder / SCENE_FILES["phenology"], index=False)
    (folder / SCENE_MARKER).write_text(
        record_json(  # checked against its schema, `SceneMeta`
            {
                **scene.info,
                **meta,
                "dates": [str(d)[:10] for d in scene.cube["time"].values],
                "rain_dates": [str(d.date()) for d in scene.rain_dates],
                "calendars": calendars_json(),
            },
            SceneMeta,
            indent=1,
        )
    )


def write_products(
    scene: Scene,
    out_dir: Path | str,
    backscatter: Callable[[Scene, Path], dict[str, Any]],
    files: dict[str, str],
    *,
    overwrite: bool,
    n_grid_parcels: int,
) -> dict[str, Path | str]:
    """Write `scene` to `out_dir` atomically: `backscatter(scene, folder)` writes its rasters
    and returns what it adds to scene.json; then the grid parcels (`n_grid_parcels` > 0) and
    the ground truth. `files`: the written paths by kind, relative to `out_dir`; returned as
    paths under `out_dir` (URLs for a remote one), with `parcels_grid` when there are any.

    The folder is filled hidden, then published (`slamgeo.io.storage.staged_folder`); `out_dir`
    must be empty or, with `overwrite`, a scene folder (`slamgeo.io.storage.claim_output`)."""
    from slamgeo.io import storage

    check_grid_parcels(n_grid_parcels)
    # The cube computed here, once: a Dask array built from NumPy holds its data in its graph,
    # so computing it date by date under a distributed client would ship the whole scene to
    # the scheduler with every date ("Sending large graph").
    scene = dataclasses.replace(scene, cube=scene.cube.compute(scheduler="sync"))
    if n_grid_parcels:
        files = {**files, "parcels_grid": GRID_PARCELS_FILE}

    def fill(folder: Path) -> None:
        meta = backscatter(scene, folder)
        if n_grid_parcels:
            write_grid_parcels(grid_parcels(scene, n_grid_parcels), folder / GRID_PARCELS_FILE)
        _write_ground_truth(scene, folder, meta)

    kind = storage.SCENE  # its entries include the archive/ folder of write_archive
    storage.claim_output(out_dir, kind, overwrite=overwrite)
    with storage.staged_folder(out_dir, kind) as staged:  # stamped first, published at the end
        fill(staged)
    if not storage.is_local(out_dir):
        return {k: storage.join(out_dir, v) for k, v in files.items()}
    out = Path(storage.filesystem(out_dir)[1])
    return {k: out / v for k, v in files.items()}


def _tiffs_and_stac(scene: Scene, folder: Path) -> dict[str, Any]:
    tiffs = _write_tiffs(scene, folder / SCENE_FILES["tiffs"])
    _write_stac(scene, tiffs, folder / SCENE_FILES["stac"])
    return {}


def write_scene(
    scene: Scene, out_dir: Path | str, *, overwrite: bool = False, n_grid_parcels: int = 0
) -> dict[str, Path | str]:
    """Write `scene` as real products are delivered, atomically (`slamgeo.synth`).

    `out_dir/tiffs/S1_VVVH_YYYYMMDD.tif` (bands VV, VH, linear power float32, nodata 0),
    `stac.json` (ItemCollection, relative asset hrefs), `parcels.gpkg` (layer "parcels"),
    `phenology.csv`, `truth.tif` (bands parcel_id, class_id) and `scene.json` (parameters,
    rain, distinctive windows); with `n_grid_parcels` > 0, also `parcels_grid.gpkg` (layer
    "parcels", `grid_parcels(scene, n_grid_parcels)`). Everything is written to a hidden sibling folder that
    is renamed to `out_dir` at the end. An existing `out_dir` must be empty or, with
    `overwrite`, a scene folder holding nothing else (`slamgeo.io.storage.claim_output`); it is
    replaced only once the new one is complete. Returns the paths by kind.

    `out_dir` may be an fsspec URL (`s3://bucket/scene`): the scene is written locally, then
    uploaded with `scene.json` last (`slamgeo.io.storage.staged_folder`); the URLs are returned.
    """
    return write_products(
        scene, out_dir, _tiffs_and_stac, SCENE_FILES, overwrite=overwrite, n_grid_parcels=n_grid_parcels
    )


__all__ = ["TIFF_BLOCK", "footprint_wgs84", "write_products", "write_scene"]
