"""Real Sentinel-1 archives: STAC items in two UTM zones, slices of one pass, orbits, loaded
with odc-stac onto the grid asked for, checked against an analytic field and against
`rasterio.warp.reproject`; a real STAC API server (`rustac serve`) on loopback."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import rasterio.warp
import xarray as xr
from affine import Affine
from helpers import free_port
from pyproj import Transformer

from slamgeo.errors import ConfigError, InputError
from slamgeo.io.ingest import ingest, load

ZONE30, ZONE29 = "EPSG:32630", "EPSG:32629"
ORIGIN30 = (230_000.0, 4_110_000.0)  # near 6 deg W, the boundary of UTM zones 29 and 30
NX, NY = 80, 80  # the area in zone-30 pixels of 10 m; the north slice holds rows 0..47
DAY0 = dt.datetime(2017, 1, 3, 6, 15, tzinfo=dt.UTC)


def field_db(lon: np.ndarray, lat: np.ndarray, day: float, pol: str) -> np.ndarray:
    """The analytic backscatter (dB) at lon/lat (degrees) on `day` (days after DAY0): smooth
    at the scale of pixels (wavelengths of hundreds of metres)."""
    base = -12.0 if pol == "VV" else -19.0
    return base + 2.0 * np.sin((lon + 6.0) * 150.0) + 1.5 * np.cos((lat - 37.1) * 200.0) + 0.1 * day


def _write_cog(
    path: Path, crs: str, transform: Affine, shape: tuple[int, int], day: float, pol: str, **tags: str
) -> None:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    xs, ys = transform * (cols + 0.5, rows + 0.5)
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    power = (10 ** (field_db(lon, lat, day, pol) / 10)).astype("float32")
    profile = dict(driver="COG", width=shape[1], height=shape[0], count=1, dtype="float32", crs=crs)
    with rasterio.open(path, "w", transform=transform, nodata=-32768, **profile) as dst:
        dst.write(power, 1)
        dst.update_tags(**tags)


def _item(folder: Path, name: str, when: dt.datetime, crs: str, transform: Affine, shape, **props) -> pystac.Item:
    day = (when - DAY0).total_seconds() / 86400
    ny, nx = shape
    x0, y0 = transform * (0, 0)
    x1, y1 = transform * (nx, ny)
    lons, lats = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform([x0, x1, x1, x0], [y0, y0, y1, y1])
    ring = [[lo, la] for lo, la in zip(lons, lats)]
    geometry = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
    bbox = [min(lons), min(lats), max(lons), max(lats)]
    item = pystac.Item(name, geometry, bbox, when, {"proj:code": crs, "proj:shape": list(shape), **props})
    item.properties["proj:transform"] = list(transform)[:6]
    for pol in ("vv", "vh"):
        href = folder / f"{name}_{pol}.tif"
        _write_cog(href, crs, transform, shape, round(day), pol.upper())
        raster = {"raster:bands": [{"nodata": -32768, "data_type": "float32"}]}
        item.add_asset(
            pol, pystac.Asset(href.name, media_type=pystac.MediaType.COG, roles=["data"], extra_fields=raster)
        )
    return item


def _south_grid() -> tuple[Affine, tuple[int, int]]:
    """The south slice (zone-30 rows 32..79) on a north-up 10 m grid of zone 29."""
    x0, y1 = ORIGIN30
    left, right, top, bottom = x0, x0 + NX * 10, y1 - 32 * 10, y1 - NY * 10
    xs, ys = rasterio.warp.transform(ZONE30, ZONE29, [left, right, left, right], [top, top, bottom, bottom])
    gx0, gx1 = np.floor(min(xs) / 10) * 10, np.ceil(max(xs) / 10) * 10
    gy0, gy1 = np.floor(min(ys) / 10) * 10, np.ceil(max(ys) / 10) * 10
    return Affine(10, 0, gx0, 0, -10, gy1), (int((gy1 - gy0) / 10), int((gx1 - gx0) / 10))


def write_archive(folder: Path, *, descending: bool = True) -> Path:
    """An ItemCollection in Planetary Computer's sentinel-1-rtc conventions, in `folder`:
    date 0 and 12: a north slice (zone 30) and a south slice (zone 29) 25 s later; date 6:
    the north slice only; date 1: a descending pass (zone 30, whole area). Returns items.json."""
    folder.mkdir(parents=True, exist_ok=True)
    north = (Affine(10, 0, ORIGIN30[0], 0, -10, ORIGIN30[1]), (48, NX))
    south = _south_grid()
    asc = {"sat:orbit_state": "ascending", "sat:relative_orbit": 74}
    items = []
    for d in (0, 6, 12):
        when = DAY0 + dt.timedelta(days=d)
        items.append(_item(folder, f"S1_{d:02d}_N", when, ZONE30, *north, **asc))
        if d != 6:
            items.append(_item(folder, f"S1_{d:02d}_S", when + dt.timedelta(seconds=25), ZONE29, *south, **asc))
    if descending:
        whole = (Affine(10, 0, ORIGIN30[0], 0, -10, ORIGIN30[1]), (NY, NX))
        when = DAY0 + dt.timedelta(days=1, hours=12)
        items.append(
            _item(
                folder, "S1_01_D", when, ZONE30, *whole, **{"sat:orbit_state": "descending", "sat:relative_orbit": 147}
            )
        )
    path = folder / "items.json"
    pystac.ItemCollection(items).save_object(dest_href=str(path))
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return write_archive(tmp_path_factory.mktemp("archive"))


def _centres_lonlat(cube: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    xx, yy = np.meshgrid(cube["x"].values, cube["y"].values)
    return Transformer.from_crs(cube.rio.crs, "EPSG:4326", always_xy=True).transform(xx, yy)


BBOX = (-6.0365, 37.0912, -6.0300, 37.0965)  # inside the area, across both slices


@pytest.mark.parametrize("crs", [ZONE30, ZONE29, "EPSG:3035"])
def test_values_match_the_analytic_field_in_the_crs_resolution_and_bbox_asked_for(archive, crs) -> None:
    cube = load([archive], crs=crs, resolution=20, bbox=BBOX, chunk=32)
    assert cube.rio.crs.to_string() == crs
    assert cube.rio.resolution() == (20.0, -20.0)
    lon, lat = _centres_lonlat(cube)
    inside = (lon >= BBOX[0] - 3e-4) & (lon <= BBOX[2] + 3e-4) & (lat >= BBOX[1] - 3e-4) & (lat <= BBOX[3] + 3e-4)
    assert inside.mean() > 0.75  # the grid covers the bbox (its box in `crs`), snapped to whole pixels
    values = cube.isel(time=0).compute()
    for pol in ("VV", "VH"):
        got = values[pol].values
        ok = np.isfinite(got)
        assert ok.mean() > 0.95  # date 0 covers the whole bbox (north + south slices)
        err = np.abs(got[ok] - field_db(lon[ok], lat[ok], 0, pol))
        assert np.median(err) < 0.05, (pol, crs, np.median(err))


def test_slices_of_one_pass_are_one_date_and_uncovered_pixels_are_nan(archive) -> None:
    cube = load([archive], crs=ZONE30, resolution=10, chunk=32)
    days = (cube["time"].values - np.datetime64("2017-01-03T06:15")) / np.timedelta64(1, "D")
    np.testing.assert_allclose(days, [0, 6, 12])  # 5 ascending items, 3 solar days
    rows = (ORIGIN30[1] - cube["y"].values) / 10 - 0.5  # zone-30 row of each pixel centre
    cols = (cube["x"].values - ORIGIN30[0]) / 10 - 0.5
    vv = cube["VV"].values
    inner = (cols > 2)[None, :] & (cols < NX - 3)[None, :]
    south_only = (rows > 52)[:, None] & (rows < NY - 3)[:, None] & inner
    north = (rows > 2)[:, None] & (rows < 44)[:, None] & inner
    assert np.isfinite(vv[0][south_only]).all() and np.isfinite(vv[2][south_only]).all()
    assert np.isnan(vv[1][south_only]).all()  # date 6: only the north slice
    assert np.isfinite(vv[1][north]).all()


def test_time_is_one_chunk_and_space_is_tiled_without_a_rechunk(archive) -> None:
    cube = load([archive], crs=ZONE30, resolution=10, chunk=32)
    assert cube["VV"].chunks[0] == (cube.sizes["time"],)
    assert max(cube["VV"].chunks[1]) == 32 and max(cube["VV"].chunks[2]) == 32
    layers = cube["VV"].data.dask.layers
    assert not any("rechunk" in name for name in layers)


def test_a_one_slice_date_equals_rasterio_reproject_of_its_file(archive) -> None:
    cube = load([archive], crs=ZONE29, resolution=20, bbox=BBOX, chunk=32)
    got = cube["VV"].sel(time="2017-01-09").values  # the north slice only, from zone 30 to 29
    with rasterio.open(archive.parent / "S1_06_N_vv.tif") as src:
        want = np.full(got.shape, np.nan, dtype="float32")
        rasterio.warp.reproject(
            src.read(1),
            want,
            src_transform=src.transform,
            src_crs=src.crs,
            src_nodata=-32768,
            dst_transform=cube.rio.transform(),
            dst_crs=ZONE29,
            dst_nodata=np.nan,
            resampling=rasterio.warp.Resampling.bilinear,
        )
    want_db = 10 * np.log10(np.where(want > 0, want, np.nan))
    both = np.isfinite(got) & np.isfinite(want_db)
    assert both.sum() > 100
    assert (np.isfinite(got) == np.isfinite(want_db)).mean() > 0.97
    np.testing.assert_allclose(got[both], want_db[both], atol=0.02)


def test_the_native_grid_is_read_as_it_is(archive) -> None:
    cube = load([archive], orbit="descending", chunk=32)  # one zone-30 item, its own grid
    assert cube.rio.crs.to_string() == ZONE30 and cube.sizes["y"] == NY and cube.sizes["x"] == NX
    assert cube.rio.transform() == Affine(10, 0, ORIGIN30[0], 0, -10, ORIGIN30[1])
    with rasterio.open(archive.parent / "S1_01_D_vh.tif") as src:
        np.testing.assert_array_equal(
            cube["VH"].values[0], (10 * np.log10(src.read(1).astype("float64"))).astype("float32")
        )


def test_nearest_resampling_is_an_option(archive) -> None:
    cube = load([archive], orbit="descending", crs=ZONE30, resolution=20, resampling="nearest", chunk=32)
    with rasterio.open(archive.parent / "S1_01_D_vv.tif") as src:
        native = 10 * np.log10(src.read(1).astype("float64"))
    # a 20 m pixel takes one of the four 10 m pixels it covers, unchanged
    got = cube["VV"].values[0]
    blocks = native.reshape(NY // 2, 2, NX // 2, 2).transpose(0, 2, 1, 3).reshape(NY // 2, NX // 2, 4)
    assert np.all(np.min(np.abs(blocks - got[..., None]), axis=-1) < 1e-4)


def test_orbit_defaults_to_the_majority_and_filters_say_what_they_kept(archive) -> None:
    said: list[str] = []
    cube = load([archive], crs=ZONE30, resolution=40, chunk=32, report=said.append)
    assert cube.sizes["time"] == 3
    assert "orbit: ascending (3 passes), the direction with the most acquisitions; left out 1 descending" in said[0]
    assert "CRS EPSG:32630" in said[0] and "40 m pixels" in said[0]
    assert load([archive], orbit="descending", chunk=32).sizes["time"] == 1
    assert load([archive], relative_orbits=[147], chunk=32).sizes["time"] == 1  # ascending has none: the filter wins
    with pytest.raises(InputError, match=r"no acquisition on relative orbit\(s\) \[9\]; the items have \[74, 147\]"):
        load([archive], relative_orbits=[9])


def test_like_takes_the_extent_of_a_parcels_file(archive, tmp_path) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    x0, y1 = ORIGIN30
    parcels = gpd.GeoDataFrame({"parcel_id": [1]}, geometry=[box(x0 + 200, y1 - 600, x0 + 500, y1 - 300)], crs=ZONE30)
    parcels.to_file(tmp_path / "p.gpkg")
    cube = load([archive], crs=ZONE30, like=tmp_path / "p.gpkg", chunk=32)
    assert cube.rio.bounds() == (x0 + 200, y1 - 600, x0 + 500, y1 - 300)


def test_a_geotiff_folder_in_two_zones_goes_through_the_same_loader(tmp_path) -> None:
    folder = tmp_path / "tiffs"
    folder.mkdir()
    t30 = Affine(10, 0, ORIGIN30[0], 0, -10, ORIGIN30[1])
    t29, shape29 = _south_grid()
    for k, (crs, t, shape) in enumerate([(ZONE30, t30, (NY, NX)), (ZONE29, t29, shape29)]):
        for pol in ("VV", "VH"):
            path = folder / f"S1_2017010{3 + k}_{pol}.tif"
            # the date as a tag, the polarisation in the file name
            _write_cog(path, crs, t, shape, 0, pol, ACQUISITION_DATE=f"2017-01-0{3 + k}")
    said: list[str] = []
    cube = load([folder], crs=ZONE30, resolution=20, bbox=BBOX, report=said.append, chunk=32)
    assert cube.sizes["time"] == 2 and cube.attrs["source_kind"] == "geotiff"
    lon, lat = _centres_lonlat(cube)
    for k in range(2):
        got = cube["VH"].values[k]
        ok = np.isfinite(got)
        assert ok.mean() > 0.5
        assert np.median(np.abs(got[ok] - field_db(lon[ok], lat[ok], 0, "VH"))) < 0.05


# --- bad input: one line, and no cube ------------------------------------------------------------


def _rewrite(archive: Path, tmp_path: Path, change) -> Path:
    folder = tmp_path / "bad"
    shutil.copytree(archive.parent, folder)
    data = json.loads((folder / "items.json").read_text())
    change(data["features"])
    (folder / "items.json").write_text(json.dumps(data))
    return folder / "items.json"


def _no_assets(features) -> None:
    features[0]["assets"] = {"thumbnail": {"href": "x.png"}, "tilejson": {"href": "t.json"}}


def _vv_only(features) -> None:
    del features[2]["assets"]["vh"]


def _no_items(features) -> None:
    features.clear()


BAD = {
    "missing assets": (
        _no_assets,
        {},
        r"item S1_00_N\): no Sentinel-1 backscatter assets among \['thumbnail', 'tilejson'\]; expected 'vv' and 'vh'",
    ),
    "mixed polarisations": (_vv_only, {}, r"item S1_06_N\): mixed polarisations: asset\(s\) \['vv'\] but no VH"),
    "no items": (_no_items, {}, r"no items found|has no items"),
    "bbox outside": (
        None,
        {"bbox": "10,45,10.1,45.1"},
        r"bbox \[10.0, 45.0, 10.1, 45.1\] lies outside every item \(they cover lon -6.0",
    ),
    "unknown crs": (None, {"crs": "EPSG:99999"}, r"unknown CRS 'EPSG:99999'"),
    "geographic crs": (None, {"crs": "EPSG:4326"}, r"CRS EPSG:4326 is geographic"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_archive_input_is_one_line_and_leaves_no_cube(archive, tmp_path, case) -> None:
    change, options, message = BAD[case]
    items = _rewrite(archive, tmp_path, change) if change else archive
    out = tmp_path / "cube.zarr"
    with pytest.raises((InputError, ConfigError), match=message) as err:
        ingest([items], out, progress=False, **options)
    assert "\n" not in str(err.value)
    assert not out.exists()


def test_bad_archive_input_from_the_cli_is_one_line(archive, tmp_path) -> None:
    out = tmp_path / "cube.zarr"
    cmd = [sys.executable, "-m", "slamgeo", "ingest", str(archive), "--out", str(out), "--crs", "EPSG:4326"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and "is geographic" in lines[-1]
    assert not out.exists()


# --- STAC API: a real server on loopback ---------------------------------------------------------


@pytest.fixture(scope="module")
def stac_api(archive, tmp_path_factory):
    """`rustac serve` of the archive's items (absolute hrefs, as a real API serves them) in a
    collection "sentinel-1-rtc"; yields the API's `stac+http://` address."""
    folder = tmp_path_factory.mktemp("api")
    data = json.loads(archive.read_text())
    for f in data["features"]:
        f["collection"] = "sentinel-1-rtc"
        f["links"] = []
        for a in f["assets"].values():
            a["href"] = str(archive.parent / a["href"])
    (folder / "items.json").write_text(json.dumps(data))
    collection = pystac.Collection(
        "sentinel-1-rtc",
        "Synthetic Sentinel-1 RTC",
        pystac.Extent(pystac.SpatialExtent([[-6.1, 37.0, -6.0, 37.2]]), pystac.TemporalExtent([[DAY0, None]])),
        license="CC-BY-4.0",
    )
    collection.set_self_href(str(folder / "collection.json"))
    (folder / "collection.json").write_text(json.dumps(collection.to_dict(include_self_link=False)))
    port = free_port()
    rustac = shutil.which("rustac", path=str(Path(sys.executable).parent)) or "rustac"
    server = subprocess.Popen(
        [rustac, "serve", "collection.json", "items.json", "--addr", f"127.0.0.1:{port}"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/collections/sentinel-1-rtc/items", timeout=5)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"rustac serve did not start on {url}") from None
            time.sleep(0.1)
    try:
        yield f"stac+{url}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_stac_api_search_loads_what_the_item_collection_loads(archive, stac_api) -> None:
    options = dict(crs=ZONE30, resolution=20, bbox=BBOX, chunk=32)
    cube = load([stac_api], collection="sentinel-1-rtc", datetime="2017-01-01/2017-01-10", **options)
    assert cube.attrs["source_kind"] == "stac-api"
    ref = load([archive], end="2017-01-10", **options)
    np.testing.assert_array_equal(cube["time"].values, ref["time"].values)
    xr.testing.assert_identical(cube[["VV", "VH"]].compute().drop_attrs(), ref[["VV", "VH"]].compute().drop_attrs())


def test_the_cli_ingests_a_stac_api_search(stac_api, tmp_path) -> None:
    out = tmp_path / "cube.zarr"
    cmd = [sys.executable, "-m", "slamgeo", "ingest", stac_api, "--out", str(out), "--collection", "sentinel-1-rtc"]
    cmd += ["--datetime", "2017-01-01/2017-01-31", "--bbox", ",".join(map(str, BBOX)), "--resolution", "20"]
    done = subprocess.run([*cmd, "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "orbit: ascending (3 passes)" in done.stdout and "20 m pixels" in done.stdout
    cube = xr.open_zarr(out)
    assert cube.sizes["time"] == 3 and cube.attrs["slamgeo_complete"]


@pytest.mark.parametrize(
    "search, message",
    [
        ({"collection": "sentinel-2-l2a"}, r"no items found \(collection=sentinel-2-l2a\)"),
        ({"collection": "sentinel-1-rtc", "datetime": "2020-01-01/2020-12-31"}, r"no items found"),
        ({"collection": "sentinel-1-rtc", "sign": "nobody"}, r"unknown signing hook 'nobody'"),
    ],
)
def test_stac_api_errors_are_one_line(stac_api, tmp_path, search, message) -> None:
    with pytest.raises((InputError, ConfigError), match=message) as err:
        ingest([stac_api], tmp_path / "c.zarr", progress=False, **search)
    assert "\n" not in str(err.value) and not (tmp_path / "c.zarr").exists()


def test_an_unreachable_stac_api_is_one_line(tmp_path) -> None:
    url = f"stac+http://127.0.0.1:{free_port()}"
    with pytest.raises(InputError, match=r"the STAC API cannot be reached") as err:
        ingest([url], tmp_path / "c.zarr", progress=False, collection="sentinel-1-rtc")
    assert "\n" not in str(err.value) and not (tmp_path / "c.zarr").exists()


def test_a_signing_hook_sees_every_item(stac_api) -> None:
    seen: list[str] = []

    def sign(obj):  # pystac-client hands items as pystac objects or as dicts
        if isinstance(obj, pystac.Item):
            seen.append(obj.id)
        elif isinstance(obj, pystac.ItemCollection):
            seen.extend(i.id for i in obj)
        elif isinstance(obj, dict):
            seen.extend(f["id"] for f in obj.get("features", [obj]) if "id" in f)
        return obj

    load([stac_api], collection="sentinel-1-rtc", sign=sign, crs=ZONE30, resolution=40)
    assert {"S1_00_N", "S1_00_S", "S1_06_N", "S1_12_N", "S1_12_S", "S1_01_D"} <= set(seen)


# --- remote COGs: GDAL settings travel with the graph to every worker ----------------------------


def test_gdal_settings_reach_dask_workers_that_lack_them(archive, local_cluster, s3, monkeypatch) -> None:
    """COGs on an S3-compatible server, read on worker processes whose environment has no
    endpoint: the S3 settings (and GDAL_DISABLE_READDIR_ON_OPEN) reach them only through the
    loader's captured GDAL configuration, not through the client's environment."""
    import os

    for f in archive.parent.iterdir():
        s3.put(str(f), f"slamgeo-test/archive/{f.name}")
        s3.chmod(f"slamgeo-test/archive/{f.name}", acl="public-read")  # read unsigned: no keys travel
    monkeypatch.setenv("AWS_NO_SIGN_REQUEST", "YES")
    keys = ("AWS_ENDPOINT_URL", "AWS_S3_ENDPOINT", "AWS_NO_SIGN_REQUEST", "AWS_VIRTUAL_HOSTING", "AWS_HTTPS")

    def clear_and_tell() -> dict:
        for k in keys:
            os.environ.pop(k, None)
        return {k: os.environ.get(k) for k in keys}

    assert all(v is None for env in local_cluster.run(clear_and_tell).values() for v in env.values())
    options = dict(crs=ZONE30, resolution=20, bbox=BBOX, chunk=32)
    cube = load(["s3://slamgeo-test/archive/items.json"], **options)
    got = local_cluster.compute(cube[["VV", "VH"]]).result()
    want = load([archive], **options)[["VV", "VH"]].compute()
    xr.testing.assert_identical(got.drop_attrs(), want.drop_attrs())
    assert np.isfinite(got["VV"].values).mean() > 0.6


def test_a_failed_read_names_the_item_and_asset(archive, tmp_path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(archive.parent, folder)
    data = (folder / "S1_06_N_vh.tif").read_bytes()
    (folder / "S1_06_N_vh.tif").write_bytes(data[: len(data) // 2])  # a truncated download
    out = tmp_path / "cube.zarr"
    with pytest.raises(InputError, match=r"reading the stac input failed, in item S1_06_N, asset VH \(") as err:
        ingest([folder / "items.json"], out, progress=False, crs=ZONE30, chunk=32)
    assert "\n" not in str(err.value) and not out.exists()


def test_a_transient_http_error_is_retried(archive, tmp_path) -> None:
    """COGs served over HTTP by a server that answers 503 to the first request for each file:
    GDAL's retries (`GDAL_HTTP_MAX_RETRY`, set by the loader) read them all the same."""
    import http.server
    import threading

    folder = archive.parent
    failed: set[str] = set()

    class Flaky(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, body: bool) -> None:
            path = folder / Path(self.path.split("?")[0]).name
            if self.path not in failed:
                failed.add(self.path)
                self.send_error(503)
                return
            data = path.read_bytes()
            start, end = 0, len(data) - 1
            if "Range" in self.headers:
                a, b = self.headers["Range"].removeprefix("bytes=").split("-")
                start, end = int(a), min(int(b) if b else end, end)
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if body:
                self.wfile.write(data[start : end + 1])

        def do_GET(self) -> None:
            self._send(True)

        def do_HEAD(self) -> None:
            self._send(False)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        data = json.loads(archive.read_text())
        for f in data["features"]:
            for a in f["assets"].values():
                a["href"] = f"http://127.0.0.1:{server.server_address[1]}/{a['href']}"
        (tmp_path / "items.json").write_text(json.dumps(data))
        options = dict(orbit="descending", chunk=32)
        got = load([tmp_path / "items.json"], **options).compute()
    finally:
        server.shutdown()
    assert any("S1_01_D" in p for p in failed)  # the server did refuse, and was asked again
    want = load([archive], **options).compute()
    xr.testing.assert_identical(got[["VV", "VH"]].drop_attrs(), want[["VV", "VH"]].drop_attrs())


def test_a_pipeline_configuration_names_the_search_and_the_grid(stac_api, archive, tmp_path) -> None:
    from slamgeo.pipeline.config import load_config, parse_config

    (tmp_path / "parcels.gpkg").write_bytes(b"")  # only its path matters here
    text = f"""
season: {{name: "2017"}}
output: out
input:
  kind: stac-api
  paths: ["{stac_api}"]
  collection: sentinel-1-rtc
  datetime: 2017-01-01/2017-01-10
  bbox: [{", ".join(map(str, BBOX))}]
  crs: EPSG:32630
  resolution: 20
parcels: {{path: parcels.gpkg}}
"""
    (tmp_path / "season.yaml").write_text(text)
    cfg = load_config(tmp_path / "season.yaml")
    assert cfg.input.paths == [stac_api]  # a URL is not taken for a relative path
    got = load(cfg.input.paths, chunk=32, **cfg.input.grid())
    want = load([archive], crs=ZONE30, resolution=20, bbox=BBOX, end="2017-01-10", chunk=32)
    xr.testing.assert_identical(got[["VV", "VH"]].compute().drop_attrs(), want[["VV", "VH"]].compute().drop_attrs())
    for bad, message in [
        ({"collection": None}, "input.collection is required"),
        ({"paths": ["https://example.org/stac"]}, "stac\\+https://HOST/PATH"),
        ({"kind": "stac", "paths": ["items.json"]}, "apply to input.kind='stac-api' only"),
        ({"like": "parcels.gpkg"}, "bbox or input.like, not both"),
    ]:
        raw = {"season": {"name": "2017"}, "output": "out", "input": {**cfg.input.model_dump(), **bad}}
        with pytest.raises(ConfigError, match=message):
            parse_config(raw)


def test_the_users_gdal_settings_do_not_break_the_load(archive, monkeypatch) -> None:
    monkeypatch.setenv("GDAL_CACHEMAX", "64")  # rasterio refuses it as a string option
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "30")
    cube = load([archive], orbit="descending", chunk=32).compute()
    assert np.isfinite(cube["VV"].values).all()


def test_linear_to_db_by_date_equals_the_whole_block_formula() -> None:
    from slamgeo.io.cube import linear_to_db

    rng = np.random.default_rng(0)
    p = rng.gamma(1.0, 0.05, (7, 9, 11)).astype(np.float32)
    p[0, 0, :3] = (-32768, 0, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.where(p > 0, 10 * np.log10(p.astype(np.float64)), np.nan).astype(np.float32)
    np.testing.assert_array_equal(linear_to_db(p), want)


def _db_formula(x: np.ndarray) -> np.ndarray:
    """10 log10 of a whole array in float64, rounded once to float32; NaN where not > 0 or not finite."""
    x64 = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((x64 > 0) & np.isfinite(x64), 10 * np.log10(x64), np.nan).astype(np.float32)


def test_the_db_conversion_by_date_is_the_whole_array_formula_bit_for_bit() -> None:
    """`linear_to_db` (reused buffers, one date at a time) and the loader's `power_to_db` against
    the formula on the whole array: the same bits, NaNs included, for every dtype and layout."""
    from slamgeo.io.cube import linear_to_db
    from slamgeo.io.readers.conventions import power_to_db

    rng = np.random.default_rng(1)
    p = rng.gamma(1.0, 0.05, (5, 6, 7)).astype(np.float32)
    p[0, 0] = (-32768, 0, np.nan, np.inf, -np.inf, -0.0, 1e-45)  # no data, zero, NaN, infinities, a subnormal
    p[1, 0, 0] = 3.4e38
    p.view(np.uint32)[2, 0, 0] = 0xFFC00001  # a NaN with its sign bit set
    layouts = (p, p[:, ::2, 1:], p.astype(np.float64), p[0], p.reshape(5, 6, 7, 1), p.astype(np.float16))
    for x in (*layouts, rng.integers(-3, 4, (4, 3, 3)).astype(np.int32)):
        want = _db_formula(x)
        for got in (linear_to_db(x), power_to_db(x)):
            assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))

    # a no-data value: NaN exactly where the input equals it (in the input's type), the rest as before
    for x in (p, p[0], rng.integers(-3, 4, (4, 3, 3)).astype(np.int32), p.astype(np.float64)):
        nodata = float(np.asarray(x).flat[-1])
        want = _db_formula(x)
        if nodata > 0:
            want[np.asarray(x) == np.asarray(nodata).astype(x.dtype)] = np.nan
        for got in (linear_to_db(x, nodata=nodata), power_to_db(x, nodata=nodata)):
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
            assert np.isnan(got.flat[-1])


def test_footprints_of_one_grid_are_projected_once_and_equal_each_items_own(archive) -> None:
    from slamgeo.io.readers.conventions import normalise_item
    from slamgeo.io.readers.grid import lonlat_footprint

    items = list(pystac.ItemCollection.from_file(str(archive)))
    memo: dict = {}
    shared = [normalise_item(i, base=archive.parent, footprints=memo)[0] for i in items]
    alone = [normalise_item(i, base=archive.parent)[0] for i in items]
    assert len(memo) == 3  # the north, south and descending grids
    for a, b in zip(shared, alone):
        assert a.geometry == b.geometry and a.bbox == b.bbox == lonlat_footprint(b)[1]
    assert shared[0].bbox == shared[2].bbox  # dates 0 and 6 of the north slice: one grid
    shared[0].geometry["type"] = "Point"  # each item holds its own copy
    shared[0].bbox[0] = 0.0
    assert shared[2].geometry == alone[2].geometry and shared[2].bbox == alone[2].bbox


def test_a_local_headers_side_car_is_read(tmp_path) -> None:
    """Header reads skip the folder listing, not the side-cars: a no-data value given only by
    an `.aux.xml` next to the file is found."""
    from slamgeo.io.readers.conventions import _read_header

    path = tmp_path / "S1_vv.tif"
    profile = dict(driver="GTiff", width=16, height=16, count=1, dtype="float32", crs=ZONE30)
    with rasterio.open(path, "w", transform=Affine(10, 0, ORIGIN30[0], 0, -10, ORIGIN30[1]), **profile) as dst:
        dst.write(np.full((1, 16, 16), 0.1, np.float32))
    assert _read_header(str(path), "x")["nodata"] is None
    (tmp_path / "S1_vv.tif.aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1"><NoDataValue>5</NoDataValue></PAMRasterBand></PAMDataset>'
    )
    assert _read_header(str(path), "x")["nodata"] == 5


@pytest.mark.filterwarnings("ignore:.*only 1 date")
def test_a_no_data_value_of_a_local_side_car_masks_the_pixels(tmp_path) -> None:
    """A positive no-data value of linear power, given only by the `.aux.xml` beside a local
    file, masks its pixels in the cube (odc-stac leaves the value in place: it is not a
    non-positive power that the dB conversion would drop anyway)."""
    shape = (16, 16)
    transform = Affine(10, 0, ORIGIN30[0], 0, -10, ORIGIN30[1])
    item = _item(tmp_path, "S1_00_N", DAY0, ZONE30, transform, shape, **{"sat:orbit_state": "ascending"})
    for pol in ("vv", "vh"):
        path = tmp_path / f"S1_00_N_{pol}.tif"
        profile = dict(driver="GTiff", width=16, height=16, count=1, dtype="float32", crs=ZONE30)
        power = np.full((1, *shape), 0.1, np.float32)
        power[0, :4] = 5.0  # the first four rows: the side-car's no-data value
        with rasterio.open(path, "w", transform=transform, **profile) as dst:
            dst.write(power)
        (tmp_path / f"{path.name}.aux.xml").write_text(
            '<PAMDataset><PAMRasterBand band="1"><NoDataValue>5</NoDataValue></PAMRasterBand></PAMDataset>'
        )
        del item.assets[pol].extra_fields["raster:bands"]  # the side-car is the only source of no-data
    items = tmp_path / "items.json"
    pystac.ItemCollection([item]).save_object(dest_href=str(items))
    cube = load([items])
    vv = cube["VV"].isel(time=0).values
    assert np.isnan(vv[:4]).all()
    np.testing.assert_allclose(vv[4:], 10 * np.log10(np.float32(0.1)), rtol=1e-6)
