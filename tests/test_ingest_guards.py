"""Ingest of hostile or odd raster input: one clear line (or a warning line) naming the item,
asset, file or option, no traceback, no cube left behind, and no grid that takes hours.

Inputs: a synthetic 64 x 64 archive (`slamgeo synth --archive`: COG items in two UTM zones,
ascending and descending passes) and the same scene as per-date GeoTIFFs, altered per case."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
import time
import warnings
from pathlib import Path

import pytest
import rasterio
import rasterio.warp
from hostile_helpers import assert_one_line_error, slamgeo, slamgeo_here

from slamgeo.errors import ConfigError, InputError
from slamgeo.io.ingest import load

SIZE, N_DATES = 64, 8
QUICK = 90  # seconds: a guard answers in seconds; the grids it refuses took more than 600 s


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    """The archive folder (archive/items.json, cogs/, collection.json) and the GeoTIFF folder of
    one synthetic scene."""
    from slamgeo.synth import make_scene, write_archive, write_scene

    root = tmp_path_factory.mktemp("scenes")
    scene = make_scene(size=SIZE, n_dates=N_DATES, seed=1)
    write_archive(scene, root / "arch")
    write_scene(scene, root / "plain")
    return {"archive": root / "arch" / "archive", "tiffs": root / "plain" / "tiffs"}


@pytest.fixture(scope="module")
def served(scenes):
    """An HTTP server (plain files, as a static STAC host) of the archive folder; its URL."""
    handler = functools.partial(_QuietHandler, directory=str(scenes["archive"]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _copy_archive(scenes, tmp_path: Path, change=None) -> Path:
    """A copy of the archive folder whose items.json `change(features)` altered; its items.json."""
    folder = tmp_path / "archive"
    shutil.copytree(scenes["archive"], folder)
    if change is not None:
        data = json.loads((folder / "items.json").read_text())
        change(data["features"])
        (folder / "items.json").write_text(json.dumps(data))
    return folder / "items.json"


def _first(features, orbit: str = "ascending") -> dict:
    return next(f for f in features if f["properties"].get("sat:orbit_state") == orbit)


def _no_cube(out: Path) -> None:
    assert not out.exists(), f"{out} was left behind"
    assert not list(out.parent.glob(f"{out.name}.tmp*")), "a temporary store was left behind"


def _warnings(res) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.startswith("warning:")]


# --- 1. a static ItemCollection given as a STAC API ----------------------------------------------


@pytest.mark.parametrize("options", [["--collection", "sentinel-1-rtc"], []], ids=["collection", "no-collection"])
def test_a_static_item_collection_given_as_a_stac_api_is_one_line(served, tmp_path, options) -> None:
    url = f"stac+{served}/items.json"
    res = slamgeo_here("ingest", url, "--out", tmp_path / "c.zarr", *options, cwd=tmp_path)
    line = assert_one_line_error(res, url, r"not a STAC API landing page: it is a static ItemCollection")
    assert f"without the stac+ prefix ({served}/items.json)" in line and "root URL" in line
    _no_cube(tmp_path / "c.zarr")


def test_a_stac_collection_given_as_a_stac_api_names_what_it_is(served, tmp_path) -> None:
    url = f"stac+{served}/collection.json"
    res = slamgeo_here("ingest", url, "--out", tmp_path / "c.zarr", "--collection", "sentinel-1-rtc", cwd=tmp_path)
    assert_one_line_error(res, url, r"not a STAC API landing page: it is a STAC Collection; give the STAC API's root")


def test_the_suggested_plain_url_of_the_item_collection_is_read(served, scenes) -> None:
    cube = load([f"{served}/items.json"], chunk=32)  # lazy: the items and the grid, no pixel
    assert cube.sizes["time"] == N_DATES and cube.attrs["source_kind"] == "stac"


# --- 2. an asset that is not a raster -------------------------------------------------------------


def _vh_to(href: str):
    def change(features) -> None:
        _first(features)["assets"]["vh"]["href"] = href

    return change


def test_an_asset_naming_a_json_file_is_refused_naming_item_asset_and_href(scenes, tmp_path) -> None:
    items = _copy_archive(scenes, tmp_path, _vh_to("collection.json"))
    item = _first(json.loads(items.read_text())["features"])["id"]
    res = slamgeo_here("ingest", items, "--out", tmp_path / "c.zarr", cwd=tmp_path)
    line = assert_one_line_error(res, item, r"asset 'vh' \(.*collection\.json\): not a raster \(a \.json file\)")
    assert str(items) in line
    _no_cube(tmp_path / "c.zarr")


def test_a_vector_file_named_like_a_cog_is_refused_from_its_header(scenes, tmp_path) -> None:
    items = _copy_archive(scenes, tmp_path, _vh_to("cogs/fake_vh.tif"))
    shutil.copy(items, items.parent / "cogs" / "fake_vh.tif")  # a JSON file: GDAL opens it (STACIT), with 0 bands
    item = _first(json.loads(items.read_text())["features"])["id"]
    res = slamgeo_here("ingest", items, "--out", tmp_path / "c.zarr", cwd=tmp_path)
    assert_one_line_error(
        res, item, r"asset 'vh' \(.*fake_vh\.tif\): not a raster: GDAL reads it as a \w+ file without raster bands"
    )
    assert len(res.stderr.strip().splitlines()) == 1, res  # no warning of rasterio's before it
    _no_cube(tmp_path / "c.zarr")


def test_a_remote_asset_that_is_not_a_raster_is_named_when_it_is_read(scenes, served, tmp_path) -> None:
    """A remote header is not read before the load (a request each); odc-stac's refusal of the
    file while reading is put back on the item and asset."""
    shutil.copy(scenes["archive"] / "items.json", scenes["archive"] / "cogs" / "remote_fake_vh.tif")
    try:
        data = json.loads((scenes["archive"] / "items.json").read_text())
        for f in data["features"]:
            for a in f["assets"].values():
                a["href"] = f"{served}/{a['href']}"
        bad = _first(data["features"], "descending")
        bad["assets"]["vh"]["href"] = f"{served}/cogs/remote_fake_vh.tif"
        (tmp_path / "items.json").write_text(json.dumps(data))
        res = slamgeo_here(
            "ingest", "items.json", "--out", "c.zarr", "--orbit", "descending", "--no-progress", cwd=tmp_path
        )
    finally:
        (scenes["archive"] / "cogs" / "remote_fake_vh.tif").unlink()
    line = assert_one_line_error(res, bad["id"], r"reading the stac input failed, in item .*, asset VH")
    assert "remote_fake_vh.tif" in line and "0 bands" in line
    _no_cube(tmp_path / "c.zarr")


# --- 3. no warning in the middle of a normal archive ingest ---------------------------------------


def test_an_archive_ingest_prints_no_warning(scenes, tmp_path) -> None:
    start = time.monotonic()
    res = slamgeo("ingest", scenes["archive"] / "items.json", "--out", tmp_path / "c.zarr", "--chunk", "16",
                  "--no-progress", timeout=QUICK)  # fmt: skip
    assert res.rc == 0, res
    assert "Warning" not in res.stderr and "warning" not in res.stderr.lower(), res
    assert res.stderr.strip() == "", res
    assert time.monotonic() - start < QUICK


def test_the_reprojection_warning_of_rasterio_is_silenced_while_ingest_reads_and_restored_after() -> None:
    """`rasterio.warp.reproject` wraps each output in a MEM dataset without a geotransform for an
    instant; rasterio's own silencing of that is not thread-safe, so threads leak it."""
    from rasterio.errors import NotGeoreferencedWarning

    from slamgeo.io.ingest import _quiet_reprojection

    def leak() -> None:
        warnings.warn_explicit("Dataset has no geotransform", NotGeoreferencedWarning, "warp.py", 387, "rasterio.warp")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _quiet_reprojection():
            leak()
            warnings.warn_explicit("no geotransform", NotGeoreferencedWarning, "x.py", 1, "slamgeo.io.readers.archive")
        leak()
    assert [str(w.message) for w in caught] == ["no geotransform", "Dataset has no geotransform"]


# --- 4. orbit direction unknown -------------------------------------------------------------------


def _drop_orbit_state(k: int | None):
    def change(features) -> None:
        for i, f in enumerate(features):
            if k is None or i < k:
                f["properties"].pop("sat:orbit_state", None)

    return change


def test_items_without_orbit_state_are_kept_and_the_log_says_they_cannot_be_separated(scenes, tmp_path) -> None:
    items = _copy_archive(scenes, tmp_path, _drop_orbit_state(None))
    n = len(json.loads(items.read_text())["features"])
    said: list[str] = []
    cube = load([items], chunk=32, report=said.append)
    assert cube.sizes["time"] == N_DATES + 2  # the descending passes are dates too: nothing told them apart
    assert f"orbit: unknown for all {n} items (no sat:orbit_state)" in said[0]
    assert "cannot be separated" in said[0] and "relative orbits [74, 147]" in said[0]
    assert "--relative-orbit" in said[0]
    assert load([items], chunk=32, relative_orbits=[74]).sizes["time"] == N_DATES


def test_some_items_without_orbit_state_are_refused_naming_them(scenes, tmp_path) -> None:
    items = _copy_archive(scenes, tmp_path, _drop_orbit_state(3))
    first = json.loads(items.read_text())["features"][0]["id"]
    res = slamgeo_here("ingest", items, "--out", tmp_path / "c.zarr", cwd=tmp_path)
    line = assert_one_line_error(res, first, r"3 of \d+ items have no sat:orbit_state .*cannot be separated")
    assert "--orbit" in line and str(items) in line
    _no_cube(tmp_path / "c.zarr")


def test_an_orbit_keeps_the_known_passes_and_says_how_many_unknown_it_left_out(scenes, tmp_path) -> None:
    items = _copy_archive(scenes, tmp_path, _drop_orbit_state(3))
    said: list[str] = []
    cube = load([items], chunk=32, orbit="ascending", report=said.append)
    assert "orbit: ascending" in said[0] and "left out 3 item(s) without sat:orbit_state" in said[0]
    assert cube.sizes["time"] == N_DATES - 1  # the first date's two slices had no orbit state


# --- 5. VH that is VV -----------------------------------------------------------------------------


def test_a_vh_asset_pointing_at_the_vv_file_is_refused_naming_the_item(scenes, tmp_path) -> None:
    def same(features) -> None:
        f = _first(features)
        f["assets"]["vh"]["href"] = f["assets"]["vv"]["href"]

    items = _copy_archive(scenes, tmp_path, same)
    item = _first(json.loads(items.read_text())["features"])["id"]
    res = slamgeo_here("ingest", items, "--out", tmp_path / "c.zarr", cwd=tmp_path)
    assert_one_line_error(res, item, r"assets 'vv' and 'vh' give VV and VH as the same raster .*point 'vh' at the VH")
    _no_cube(tmp_path / "c.zarr")


def test_a_vh_file_that_links_to_the_vv_file_is_refused_too(scenes, tmp_path) -> None:
    items = _copy_archive(scenes, tmp_path)
    f = _first(json.loads(items.read_text())["features"])
    vh = items.parent / f["assets"]["vh"]["href"]
    vh.unlink()
    vh.symlink_to(items.parent / f["assets"]["vv"]["href"])
    res = slamgeo_here("ingest", items, "--out", tmp_path / "c.zarr", cwd=tmp_path)
    assert_one_line_error(res, f["id"], r"the same raster")


def test_a_geotiff_whose_vh_band_is_a_copy_of_vv_is_refused_naming_the_date(scenes, tmp_path) -> None:
    folder = tmp_path / "tiffs"
    shutil.copytree(scenes["tiffs"], folder)
    copied = sorted(folder.glob("*.tif"))[2]
    with rasterio.open(copied, "r+") as f:
        f.write(f.read(1), 2)
    res = slamgeo_here("ingest", folder, "--out", tmp_path / "c.zarr", "--no-progress", cwd=tmp_path)
    assert_one_line_error(res, str(folder), r"VH equals VV on every valid pixel on 1 date\(s\) \(2017-01-15\)")
    _no_cube(tmp_path / "c.zarr")


# --- 6. a date tag against the file name ----------------------------------------------------------


def test_a_date_tag_that_contradicts_the_file_name_is_a_warning_naming_both(scenes, tmp_path) -> None:
    folder = tmp_path / "tiffs"
    shutil.copytree(scenes["tiffs"], folder)
    (folder / "S1_VVVH_20170103.tif").rename(folder / "S1_VVVH_20180101.tif")  # its tag says 2017-01-03
    res = slamgeo_here("ingest", folder, "--out", tmp_path / "c.zarr", "--no-progress", cwd=tmp_path)
    assert res.rc == 0, res
    (line,) = _warnings(res)
    assert "S1_VVVH_20180101.tif (name 2018-01-01, ACQUISITION_DATE 2017-01-03)" in line
    assert "the tag is used" in line and str(folder) in line


# --- 7. short stacks ------------------------------------------------------------------------------


def test_a_stack_shorter_than_training_needs_is_ingested_with_a_warning_line(scenes, tmp_path) -> None:
    folder = tmp_path / "tiffs"
    folder.mkdir()
    for f in sorted(scenes["tiffs"].glob("*.tif"))[:2]:
        shutil.copy(f, folder / f.name)
    res = slamgeo_here("ingest", folder, "--out", tmp_path / "c.zarr", "--no-progress", cwd=tmp_path)
    assert res.rc == 0, res
    (line,) = _warnings(res)
    assert "only 2 date(s) (2017-01-03 .. 2017-01-09)" in line and "at least 8 dates" in line
    assert str(folder) in line and "slamgeo train" in line


def test_the_minimum_said_is_the_models() -> None:
    from slamgeo.io import ingest as ingest_module
    from slamgeo.method.model import CAEConfig

    assert ingest_module.TRAIN_MIN_DATES == max(8, 2 ** len(CAEConfig().channels))
    with pytest.raises(ValueError, match=">= 8"):
        CAEConfig(n_times=ingest_module.TRAIN_MIN_DATES - 1)


# --- 8. grids that would take hours ---------------------------------------------------------------


def test_a_file_with_a_mislabelled_crs_is_named_not_merged_into_a_huge_grid(scenes, tmp_path) -> None:
    folder = tmp_path / "tiffs"
    shutil.copytree(scenes["tiffs"], folder)
    odd = sorted(folder.glob("*.tif"))[3]
    with rasterio.open(odd, "r+") as f:
        f.crs = "EPSG:32629"  # the neighbouring UTM zone: the same numbers lie about 500 km west
    start = time.monotonic()
    res = slamgeo("ingest", folder, "--out", tmp_path / "c.zarr", "--no-progress", timeout=QUICK)
    line = assert_one_line_error(res, str(odd), r"1 item\(s\) lie far from the footprints of the 7 others")
    assert "in EPSG:32629" in line and " km away" in line and "--bbox" in line and "fix their CRS" in line
    assert time.monotonic() - start < QUICK
    _no_cube(tmp_path / "c.zarr")
    # with the extent given, the far file is only a date without pixels there
    with rasterio.open(sorted(folder.glob("*.tif"))[0]) as src:
        lon0, lat0, lon1, lat1 = rasterio.warp.transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    cube = load([folder], bbox=(lon0, lat0, lon1, lat1), chunk=32)
    assert cube.sizes["time"] == N_DATES


def test_a_resolution_that_makes_billions_of_pixels_is_refused_naming_max_pixels(scenes, tmp_path) -> None:
    start = time.monotonic()
    res = slamgeo("ingest", scenes["tiffs"], "--out", tmp_path / "c.zarr", "--resolution", "0.01", timeout=QUICK)
    line = assert_one_line_error(res, "--max-pixels", r"the grid would be 64,000 x 64,000 = 4.1e9 pixels per date")
    assert "0.01 m pixels" in line and "--resolution" in line and str(scenes["tiffs"]) in line
    assert time.monotonic() - start < QUICK
    _no_cube(tmp_path / "c.zarr")


def test_max_pixels_is_the_limit_in_python(scenes) -> None:
    with pytest.raises(
        (InputError, ConfigError), match=r"64 x 64 = 4,096 pixels per date .* than the 1,000 of max_pixels"
    ):
        load([scenes["tiffs"]], max_pixels=1000)
    assert load([scenes["tiffs"]], max_pixels=4096).sizes["x"] == SIZE
    with pytest.raises(ConfigError, match="max_pixels must be a positive whole number"):
        load([scenes["tiffs"]], max_pixels=0)


def test_a_one_pixel_chunk_is_refused_for_its_file_reads(scenes, tmp_path) -> None:
    start = time.monotonic()
    res = slamgeo("ingest", scenes["archive"] / "items.json", "--out", tmp_path / "c.zarr", "--chunk", "1",
                  timeout=QUICK)  # fmt: skip
    line = assert_one_line_error(res, "--chunk", r"chunk 1 cuts the \d+ x \d+ grid into [\d,]+ tiles of at most 1 x 1")
    assert "file reads" in line and "at least 16 pixels" in line and "--max-blocks" in line
    assert time.monotonic() - start < QUICK
    _no_cube(tmp_path / "c.zarr")


def test_small_tiles_pass_when_the_load_is_small_or_when_max_blocks_is_given(scenes) -> None:
    assert load([scenes["tiffs"]], chunk=8).sizes["time"] == N_DATES  # 64 tiles x 8 files: a few reads
    with pytest.raises(ConfigError, match="chunk 2 cuts"):
        load([scenes["archive"] / "items.json"], chunk=2)
    cube = load([scenes["archive"] / "items.json"], chunk=2, max_blocks=2000)  # asked: built, not read here
    assert max(cube["VV"].chunks[1]) == 2


def test_more_tiles_than_max_blocks_is_refused_naming_the_option(scenes, tmp_path) -> None:
    res = slamgeo_here("ingest", scenes["tiffs"], "--out", tmp_path / "c.zarr", "--chunk", "16", "--max-blocks", "10",
                       cwd=tmp_path)  # fmt: skip
    assert_one_line_error(
        res, "--max-blocks", r"chunk 16 cuts the 64 x 64 grid into 16 tiles \(4 x 4\), more than the 10"
    )
    _no_cube(tmp_path / "c.zarr")


def test_the_pipeline_input_section_carries_the_guards() -> None:
    from slamgeo.pipeline.config import parse_config

    raw = {"season": {"name": "x"}, "output": "o", "input": {"kind": "geotiff", "paths": ["t"], "max_pixels": 5}}
    cfg = parse_config(raw)
    assert cfg.input.grid()["max_pixels"] == 5
    assert "max_pixels" not in cfg.input.model_dump()  # a guard: not part of what the ingest step fingerprints
    with pytest.raises(ConfigError, match="max_blocks"):
        parse_config({**raw, "input": {**raw["input"], "max_blocks": 0}})
