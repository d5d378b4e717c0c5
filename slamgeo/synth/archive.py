"""`write_archive`: a synthetic scene written as a Sentinel-1 archive in Planetary Computer's
`sentinel-1-rtc` conventions (float32 linear power COGs per asset, STAC items and collection).

Every date is one ascending pass of two overlapping slices (north on the scene's grid, south
reprojected into UTM 29N), and every 5th date (the 1st, 6th, 11th ...) also a descending pass
the next evening, brighter by a viewing-geometry offset; see `write_archive`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from affine import Affine

from slamgeo.io.scene import ARCHIVE_DIR, ARCHIVE_FILES
from slamgeo.synth.parcels import CRS_EPSG, PIXEL_SIZE
from slamgeo.synth.scene import Scene
from slamgeo.synth.writers import MISSION, TIFF_BLOCK, describe_band, footprint_wgs84, grid_profile, write_products

ARCHIVE_COLLECTION = "sentinel-1-rtc"
ARCHIVE_LICENSE = "CC-BY-4.0"
ARCHIVE_NODATA = -32768
ARCHIVE_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
ARCHIVE_PLATFORM = "sentinel-1a"
ARCHIVE_ID_PREFIX = "S1A_IW_GRDH_1SDV_"
SOUTH_EPSG = 32629  # UTM zone 29N: the scene lies just east of 6 degrees W
ASCENDING_TIME = pd.Timedelta(hours=6, minutes=15)  # north slice; the south one 25 s later
SOUTH_DELAY = pd.Timedelta(seconds=25)
ASCENDING_ORBIT = 74
DESCENDING_TIME = pd.Timedelta(days=1, hours=18, minutes=5)  # after the scene date
DESCENDING_ORBIT = 147
DESCENDING_EVERY = 5  # dates 0, 5, 10 ... of the scene
DESCENDING_OFFSET_DB = {"VV": 1.5, "VH": 1.0}
_POLARISATIONS = (("VV", "vv"), ("VH", "vh"))  # band, asset key


def archive_slices(size: int) -> dict[str, tuple[int, int]]:
    """Scene rows [start, stop) of the north ("N") and south ("S") slices of an ascending pass:
    the rows r < 0.6 size and the rows r >= 0.4 size."""
    return {"N": (0, -(-6 * size // 10)), "S": (-(-4 * size // 10), size)}


@dataclass(frozen=True)
class _Grid:
    rows: tuple[int, int]  # scene rows it covers
    epsg: int
    transform: Affine
    shape: tuple[int, int]


def _archive_grids(scene: Scene) -> dict[str, _Grid]:
    """The grids of the north, south and descending ("D", the whole scene) slices."""
    from rasterio.warp import aligned_target, calculate_default_transform

    t = scene.cube.rio.transform()
    ny, nx = scene.parcel_id.shape
    grids = {}
    for key, (r0, r1) in archive_slices(ny).items():
        src = t * Affine.translation(0, r0)
        if key == "N":
            grids[key] = _Grid((r0, r1), CRS_EPSG, src, (r1 - r0, nx))
            continue
        bounds = (src.c, src.f + (r1 - r0) * src.e, src.c + nx * src.a, src.f)
        dst, w, h = calculate_default_transform(
            f"EPSG:{CRS_EPSG}", f"EPSG:{SOUTH_EPSG}", nx, r1 - r0, *bounds, resolution=PIXEL_SIZE
        )
        dst, w, h = aligned_target(dst, w, h, PIXEL_SIZE)  # on the 10 m lattice of the zone
        grids[key] = _Grid((r0, r1), SOUTH_EPSG, dst, (int(h), int(w)))
    grids["D"] = _Grid((0, ny), CRS_EPSG, t, (ny, nx))
    return grids


def _slice_power(db: np.ndarray, scene_transform: Affine, grid: _Grid, offset_db: float = 0.0) -> np.ndarray:
    """Linear power (float32, NaN: no data) of the scene's dB image `db` (y, x) on `grid`:
    the rows it covers, reprojected (bilinear, on linear power) when it is in another zone."""
    from rasterio.warp import Resampling, reproject

    r0, r1 = grid.rows
    lin = (10 ** ((db[r0:r1].astype(np.float64) + offset_db) / 10)).astype(np.float32)
    if grid.epsg == CRS_EPSG:
        return lin
    out = np.full(grid.shape, np.nan, np.float32)
    reproject(
        lin,
        out,
        src_transform=scene_transform * Affine.translation(0, r0),
        src_crs=f"EPSG:{CRS_EPSG}",
        src_nodata=np.nan,
        dst_transform=grid.transform,
        dst_crs=f"EPSG:{grid.epsg}",
        dst_nodata=np.nan,
        resampling=Resampling.bilinear,
    )
    return out


def _write_cog(path: Path, power: np.ndarray, grid: _Grid, band: str, tags: dict[str, str]) -> None:
    """One band of linear power as a float32 Cloud Optimized GeoTIFF, nodata -32768."""
    import rasterio

    data = np.where(np.isnan(power), np.float32(ARCHIVE_NODATA), power).astype(np.float32)
    with rasterio.open(
        path,
        "w",
        driver="COG",
        **grid_profile(grid.shape, 1, "float32", grid.epsg, grid.transform),
        nodata=ARCHIVE_NODATA,
        blocksize=TIFF_BLOCK,
        compress="deflate",
        predictor="yes",
        overview_resampling="average",
    ) as dst:
        dst.write(data, 1)
        describe_band(dst, 1, band)
        dst.update_tags(**tags)


def _archive_extensions() -> list[str]:
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterExtension
    from pystac.extensions.sar import SarExtension
    from pystac.extensions.sat import SatExtension

    return [e.get_schema_uri() for e in (ProjectionExtension, SarExtension, SatExtension, RasterExtension)]


def _raster_bands() -> list[dict[str, Any]]:
    return [{"nodata": ARCHIVE_NODATA, "data_type": "float32"}]


def _archive_item(
    key: str, when: pd.Timestamp, grid: _Grid, footprint: Any, orbit: tuple[str, int], extra: dict[str, Any]
) -> Any:
    import pystac

    item_id = f"{ARCHIVE_ID_PREFIX}{when:%Y%m%dT%H%M%S}_{key}"
    h, w = grid.shape
    t = grid.transform
    item = pystac.Item(
        id=item_id,
        geometry=shapely.geometry.mapping(footprint),
        bbox=list(footprint.bounds),
        datetime=when.to_pydatetime(),
        properties={
            "platform": ARCHIVE_PLATFORM,
            "constellation": "sentinel-1",
            "sar:instrument_mode": "IW",
            "sar:polarizations": ["VV", "VH"],
            "sar:frequency_band": "C",
            "sar:product_type": "GRD",
            "sat:orbit_state": orbit[0],
            "sat:relative_orbit": orbit[1],
            "proj:code": f"EPSG:{grid.epsg}",
            "proj:epsg": grid.epsg,
            "proj:shape": [h, w],
            "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
            "proj:bbox": [t.c, t.f + h * t.e, t.c + w * t.a, t.f],
            "slamgeo:synthetic": True,
            **extra,
        },
        stac_extensions=_archive_extensions(),
        collection=ARCHIVE_COLLECTION,
    )
    for rel in ("collection", "parent", "root"):
        item.add_link(pystac.Link(rel, "./collection.json", media_type=pystac.MediaType.JSON))
    for _, pol in _POLARISATIONS:
        item.add_asset(
            pol,
            pystac.Asset(
                href=f"cogs/{item_id}_{pol}.tif",
                media_type=ARCHIVE_MEDIA_TYPE,
                roles=["data"],
                title=f"{pol.upper()}: linear power (sigma0), float32, nodata {ARCHIVE_NODATA}",
                extra_fields={"raster:bands": _raster_bands()},
            ),
        )
    return item


def _archive_collection(items: list[Any]) -> Any:
    import pystac

    bb = np.array([it.bbox for it in items])
    times = sorted(it.datetime for it in items)
    collection = pystac.Collection(
        id=ARCHIVE_COLLECTION,
        title="Sentinel-1 Radiometrically Terrain Corrected (synthetic, slamgeo)",
        description=(
            "A synthetic Sentinel-1 IW archive written by slamgeo.synth.write_archive in the "
            "conventions of Planetary Computer's sentinel-1-rtc collection: float32 linear power "
            "COGs (assets vv, vh; nodata -32768), passes in two slices over two UTM zones."
        ),
        extent=pystac.Extent(
            pystac.SpatialExtent(
                [[float(bb[:, 0].min()), float(bb[:, 1].min()), float(bb[:, 2].max()), float(bb[:, 3].max())]]
            ),
            pystac.TemporalExtent([[times[0], times[-1]]]),
        ),
        license=ARCHIVE_LICENSE,
        keywords=["Sentinel-1", "SAR", "RTC", "synthetic"],
        providers=[
            pystac.Provider(
                name="slamgeo (synthetic)",
                roles=[pystac.ProviderRole.PRODUCER, pystac.ProviderRole.HOST],
                description="slamgeo.synth.make_scene and write_archive",
            )
        ],
        summaries=pystac.Summaries(
            {
                "platform": [ARCHIVE_PLATFORM],
                "constellation": ["sentinel-1"],
                "sar:instrument_mode": ["IW"],
                "sar:polarizations": ["VV", "VH"],
                "sat:orbit_state": ["ascending", "descending"],
                "sat:relative_orbit": [ASCENDING_ORBIT, DESCENDING_ORBIT],
                "proj:code": [f"EPSG:{SOUTH_EPSG}", f"EPSG:{CRS_EPSG}"],
            }
        ),
        stac_extensions=_archive_extensions(),
    )
    collection.extra_fields["item_assets"] = {
        pol: {
            "type": ARCHIVE_MEDIA_TYPE,
            "roles": ["data"],
            "title": f"{pol.upper()}: linear power (sigma0)",
            "raster:bands": _raster_bands(),
        }
        for _, pol in _POLARISATIONS
    }
    collection.clear_links()
    collection.add_link(pystac.Link("root", "./collection.json", media_type=pystac.MediaType.JSON))
    return collection


def _write_archive_stac(scene: Scene, folder: Path) -> dict[str, Any]:
    """The COGs, items.json and collection.json of `write_archive` in `folder`; returns the
    layout recorded in scene.json."""
    import pystac

    cube = scene.cube
    transform = cube.rio.transform()
    grids = _archive_grids(scene)
    cogs = folder / "cogs"
    cogs.mkdir(parents=True)
    first = np.asarray(cube["VV"].isel(time=0).values)
    footprints = {
        k: footprint_wgs84(~np.isnan(_slice_power(first, transform, g)), g.transform, g.epsg) for k, g in grids.items()
    }
    items = []
    for k, day in enumerate(cube["time"].values):
        date = pd.Timestamp(day).normalize().tz_localize("UTC")
        db = {b: np.asarray(cube[b].isel(time=k).values) for b, _ in _POLARISATIONS}
        common = {"slamgeo:scene_date": str(date.date()), "slamgeo:rain_event": pd.Timestamp(day) in scene.rain_dates}
        passes = [("N", date + ASCENDING_TIME, ("ascending", ASCENDING_ORBIT), 0.0)]
        passes.append(("S", date + ASCENDING_TIME + SOUTH_DELAY, ("ascending", ASCENDING_ORBIT), 0.0))
        if k % DESCENDING_EVERY == 0:
            passes.append(("D", date + DESCENDING_TIME, ("descending", DESCENDING_ORBIT), 1.0))
        for key, when, orbit, geometry in passes:
            grid = grids[key]
            item = _archive_item(key, when, grid, footprints[key], orbit, {**common, "slamgeo:slice": key})
            tags = {"ACQUISITION_DATETIME": when.isoformat(), "MISSION": MISSION}
            for b, pol in _POLARISATIONS:
                power = _slice_power(db[b], transform, grid, geometry * DESCENDING_OFFSET_DB[b])
                _write_cog(folder / item.assets[pol].href, power, grid, b, tags)
            items.append(item)
    items.sort(key=lambda it: (it.datetime, it.id))
    pystac.ItemCollection(items).save_object(dest_href=str(folder / "items.json"))
    collection = _archive_collection(items)
    (folder / "collection.json").write_text(
        json.dumps(collection.to_dict(include_self_link=False, transform_hrefs=False), indent=1)
    )
    return {
        "collection": ARCHIVE_COLLECTION,
        "items": len(items),
        "slices": {
            k: {"rows": list(g.rows), "epsg": g.epsg, "shape": list(g.shape), "transform": list(g.transform)[:6]}
            for k, g in grids.items()
        },
        "ascending": {
            "time": "06:15:00Z (N), 06:15:25Z (S)",
            "relative_orbit": ASCENDING_ORBIT,
        },
        "descending": {
            "every": DESCENDING_EVERY,
            "time": "next day 18:05:00Z",
            "relative_orbit": DESCENDING_ORBIT,
            "offset_db": DESCENDING_OFFSET_DB,
        },
        "nodata": ARCHIVE_NODATA,
    }


def _archive_products(scene: Scene, folder: Path) -> dict[str, Any]:
    return {"archive": True, "archive_layout": _write_archive_stac(scene, folder / ARCHIVE_DIR)}


def write_archive(
    scene: Scene, out_dir: Path | str, *, overwrite: bool = False, n_grid_parcels: int = 0
) -> dict[str, Path | str]:
    """Write `scene` as a Sentinel-1 archive in Planetary Computer's `sentinel-1-rtc`
    conventions, atomically and with the ownership rules of `write_scene`.

    `out_dir/` holds the ground truth of `write_scene` (scene.json, with `"archive": true` and
    the layout under `"archive_layout"`; parcels.gpkg; phenology.csv; truth.tif; with
    `n_grid_parcels` > 0, parcels_grid.gpkg) and `archive/`: `items.json` (a STAC ItemCollection,
    asset hrefs relative to its folder), `collection.json` (the Collection "sentinel-1-rtc",
    which `rustac serve collection.json items.json` serves) and `cogs/<item id>_vv.tif`,
    `_vh.tif` (float32 linear power COGs, nodata -32768).

    Each date is an ascending pass (relative orbit 74) of two overlapping slices: "N", scene
    rows r < 0.6 size on the scene's grid (EPSG:32630) at 06:15:00Z, and "S", rows r >= 0.4
    size reprojected (bilinear, on linear power) onto a north-up 10 m grid of EPSG:32629 at
    06:15:25Z. Every 5th date (the 1st, 6th, ...) also has a descending pass (relative orbit
    147), "D", the whole scene on its grid, the next day at 18:05:00Z, with the date's values
    plus 1.5 dB (VV) and 1.0 dB (VH). Item ids: `S1A_IW_GRDH_1SDV_<start, %Y%m%dT%H%M%S>_<N|S|D>`.
    """
    return write_products(
        scene, out_dir, _archive_products, ARCHIVE_FILES, overwrite=overwrite, n_grid_parcels=n_grid_parcels
    )


__all__ = ["ARCHIVE_COLLECTION", "ARCHIVE_NODATA", "SOUTH_EPSG", "archive_slices", "write_archive"]
