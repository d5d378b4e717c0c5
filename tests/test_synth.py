"""The synthetic Sentinel-1 scene: grid, parcels, class statistics, speckle, transitions at the
ground-truth dates, rain, determinism, and the products written to disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.enums import Compression
from rasterio.features import rasterize
from shapely.geometry import Point, shape

import slamgeo.synth as synth
from slamgeo.errors import InputError, OutputError
from slamgeo.io.cube import validate_cube
from slamgeo.synth import (
    CALENDARS,
    CLASSES,
    DISTINCTIVE_WINDOWS,
    EVENTS,
    archive_slices,
    grid_parcels,
    make_dates,
    make_scene,
    write_archive,
    write_scene,
)

ROOT = Path(__file__).resolve().parents[1]


# --- fixtures and independent helpers ------------------------------------------------------


@pytest.fixture(scope="module")
def scene():
    """A 256 x 256 scene over the default 61 dates (about 190 parcels, 12 per class)."""
    return make_scene(size=256, seed=2)


@pytest.fixture(scope="module")
def cube(scene):
    return scene.cube.compute()


def parcel_means_db(cube, parcel_id: np.ndarray, band: str) -> np.ndarray:
    """Mean linear intensity of each parcel on each date, in dB: (T, n_parcels), column p-1 for
    parcel p. Computed with np.bincount, independently of the generator."""
    t = cube.sizes["time"]
    lin = 10 ** (cube[band].values.reshape(t, -1).astype(np.float64) / 10)
    pid = parcel_id.ravel()
    n = pid.max()
    counts = np.bincount(pid, minlength=n + 1)
    sums = np.stack([np.bincount(pid, weights=np.nan_to_num(lin[k]), minlength=n + 1) for k in range(t)])
    return 10 * np.log10(sums[:, 1:] / counts[1:])


@pytest.fixture(scope="module")
def means(scene, cube):
    return {b: parcel_means_db(cube, scene.parcel_id.values, b) for b in ("VV", "VH")}


def transitions(scene, cube, event: str) -> list[tuple[int, int]]:
    """(parcel index, k) for parcels whose `event` falls after the first date and on or before
    the last: date k is the first acquisition on or after the event."""
    days = cube["time"].values
    ev = scene.phenology[event].to_numpy()
    out = []
    for i, d in enumerate(ev):
        if not np.isnat(d) and days[0] < d <= days[-1]:
            out.append((i, int(np.searchsorted(days, d))))
    return out


def season_day(cube) -> np.ndarray:
    return (cube["time"].values - np.datetime64("2017-01-01")).astype("timedelta64[D]").astype(int)


# --- grid and contract -------------------------------------------------------------------


def test_cube_follows_the_contract(scene):
    cube = validate_cube(scene.cube)
    assert cube["VV"].dims == ("time", "y", "x")
    assert cube["VV"].dtype == np.float32 and cube["VH"].dtype == np.float32
    assert cube.rio.crs.to_epsg() == 32630
    assert cube.sizes["y"] == cube.sizes["x"] == 256


def test_grid_has_10_m_pixels_and_y_decreasing(scene):
    cube = scene.cube
    assert cube.rio.resolution() == (10.0, -10.0)
    assert np.all(np.diff(cube["y"].values) == -10.0)
    assert np.all(np.diff(cube["x"].values) == 10.0)
    assert cube.rio.transform() == scene.parcel_id.rio.transform()


def test_default_dates_are_61_every_6_days_from_2017_01_03(scene):
    expected = pd.date_range("2017-01-03", periods=61, freq="6D").values.astype("datetime64[ns]")
    np.testing.assert_array_equal(scene.cube["time"].values, expected)
    assert str(expected[-1])[:10] == "2017-12-29"


# --- parcels ------------------------------------------------------------------------------


def test_rasters_match_the_parcel_table(scene):
    pid, cid = scene.parcel_id.values, scene.class_id.values
    assert pid.dtype == np.int32 and cid.dtype == np.int16
    n = len(scene.parcels)
    assert set(np.unique(pid)) == set(range(n + 1))
    np.testing.assert_array_equal(scene.parcels["parcel_id"], np.arange(1, n + 1))
    lookup = np.concatenate([[-1], scene.parcels["class_id"].to_numpy()])
    np.testing.assert_array_equal(cid, lookup[pid])
    assert list(scene.parcels["crop"]) == [CLASSES[c] for c in scene.parcels["class_id"]]
    assert set(scene.parcels["crop"]) == set(CLASSES)


def test_polygons_rasterise_back_to_parcel_id(scene):
    burnt = rasterize(
        zip(scene.parcels.geometry, scene.parcels["parcel_id"]),
        out_shape=scene.parcel_id.shape,
        transform=scene.cube.rio.transform(),
        fill=0,
        all_touched=False,
        dtype="int32",
    )
    np.testing.assert_array_equal(burnt, scene.parcel_id.values)


def test_parcels_have_varied_sizes(scene):
    n_pixels = np.bincount(scene.parcel_id.values.ravel())[1:]
    np.testing.assert_array_equal(n_pixels, scene.phenology["n_pixels"])
    assert n_pixels.min() >= synth.MIN_PARCEL_PIXELS
    assert np.percentile(n_pixels, 10) < 120 and np.percentile(n_pixels, 90) > 350  # ~1 ha to ~4 ha
    assert n_pixels.max() <= 1300


def test_parcels_have_varied_orientations(scene):
    angles = []
    for poly in scene.parcels.geometry:
        xy = np.asarray(poly.minimum_rotated_rectangle.exterior.coords)
        e = xy[1] - xy[0]
        angles.append(np.degrees(np.arctan2(e[1], e[0])) % 90)
    counts, _ = np.histogram(angles, bins=9, range=(0, 90))
    assert (counts >= 0.03 * len(angles)).sum() >= 5  # not a checkerboard


def test_parcels_are_separated_by_margins(scene):
    pid = scene.parcel_id.values
    assert 0.1 < np.mean(pid == 0) < 0.4
    # Most parcel pixels on a parcel's edge touch a margin (0), not another parcel.
    right = (pid[:, :-1] > 0) & (pid[:, 1:] > 0) & (pid[:, :-1] != pid[:, 1:])
    down = (pid[:-1] > 0) & (pid[1:] > 0) & (pid[:-1] != pid[1:])
    edge = (pid[:, :-1] != pid[:, 1:]).sum() + (pid[:-1] != pid[1:]).sum()
    assert (right.sum() + down.sum()) < 0.1 * edge


def test_nodata_border_is_nan_on_all_dates_and_holds_no_parcel(scene, cube):
    border = np.isnan(cube["VV"].values[0])
    assert 0.02 < border.mean() < 0.25
    for band in ("VV", "VH"):
        np.testing.assert_array_equal(np.isnan(cube[band].values), np.broadcast_to(border, cube[band].shape))
    assert np.all(scene.parcel_id.values[border] == 0)
    assert np.all(scene.class_id.values[border] == -1)
    # A swath edge: in each row the no-data pixels are one run touching the left or right side.
    for row in border:
        idx = np.flatnonzero(row)
        if idx.size:
            assert idx.size == idx[-1] - idx[0] + 1
            assert idx[0] == 0 or idx[-1] == row.size - 1


# --- class statistics ---------------------------------------------------------------------


@pytest.mark.parametrize("band, lo, hi", [("VV", -20.0, -5.0), ("VH", -28.0, -12.0)])
def test_class_median_levels_are_plausible(scene, cube, band, lo, hi):
    cid = scene.class_id.values.ravel()
    values = cube[band].values.reshape(cube.sizes["time"], -1)
    for c, name in enumerate(CLASSES):
        med = np.median(values[:, cid == c])
        assert lo < med < hi, f"{name}: median {band} {med:.1f} dB"


@pytest.mark.parametrize("band, lo, hi", [("VV", -20.5, -4.5), ("VH", -28.5, -11.5)])
def test_parcel_profiles_stay_within_the_plausible_range(means, band, lo, hi):
    m = means[band]
    assert lo < m.min() and m.max() < hi


def test_vh_rises_with_biomass_from_emergence_to_peak(scene, cube, means):
    days = cube["time"].values
    em, pk = scene.phenology["emergence"].to_numpy(), scene.phenology["peak"].to_numpy()
    crop = scene.phenology["crop"].to_numpy()
    rises: dict[str, list[float]] = {}
    for i in range(len(em)):
        if np.isnat(em[i]) or np.isnat(pk[i]) or not days[0] < em[i] or not pk[i] <= days[-1]:
            continue
        before = np.searchsorted(days, em[i]) - 1
        at = np.searchsorted(days, pk[i])
        rises.setdefault(crop[i], []).append(means["VH"][at, i] - means["VH"][before, i])
    assert len(rises) >= 8
    for name, r in rises.items():
        assert np.median(r) > 1.5, name
    assert np.median(np.concatenate(list(rises.values()))) > 4.0


def test_speckle_enl_is_close_to_the_requested_looks(scene, cube, means):
    """mean^2 / var of linear intensity within parcels, after dividing by the parcel mean."""
    pid = scene.parcel_id.values.ravel()
    inside = pid > 0
    t = cube.sizes["time"]
    for band in ("VV", "VH"):
        lin = 10 ** (cube[band].values.reshape(t, -1)[:, inside].astype(np.float64) / 10)
        z = lin / 10 ** (means[band][:, pid[inside] - 1] / 10)
        enl = z.mean() ** 2 / z.var()
        assert enl == pytest.approx(4.4, rel=0.15), band


@pytest.mark.parametrize("enl", [1.0, 9.0])
def test_speckle_follows_the_enl_option(enl):
    sc = make_scene(size=48, n_dates=6, seed=11, enl=enl)
    cube = sc.cube.compute()
    pid = sc.parcel_id.values.ravel()
    m = parcel_means_db(cube, sc.parcel_id.values, "VH")
    lin = 10 ** (cube["VH"].values.reshape(6, -1)[:, pid > 0].astype(np.float64) / 10)
    z = lin / 10 ** (m[:, pid[pid > 0] - 1] / 10)
    assert z.mean() ** 2 / z.var() == pytest.approx(enl, rel=0.15)


def test_vh_drops_at_the_ground_truth_harvest(scene, cube, means):
    vh = means["VH"]
    drops = np.array([vh[k - 1, i] - vh[k, i] for i, k in transitions(scene, cube, "harvest")])
    typical = np.abs(np.diff(vh, axis=0)).mean()
    assert drops.size > 100
    assert drops.mean() > 5 * typical
    assert np.mean(drops > 0) > 0.95


def test_vv_rises_at_the_ground_truth_tillage(scene, cube, means):
    vv = means["VV"]
    ups = np.array(
        [vv[k, i] - vv[k - 1, i] for ev in ("tillage", "post_tillage") for i, k in transitions(scene, cube, ev)]
    )
    typical = np.abs(np.diff(vv, axis=0)).mean()
    assert ups.size > 100
    assert ups.mean() > 4 * typical
    assert np.mean(ups > 0) > 0.95


def test_event_dates_vary_per_parcel_around_the_calendar(scene):
    phen = scene.phenology
    year0 = np.datetime64("2017-01-01")
    for name in ("cotton", "maize", "wheat"):
        rows = phen[phen["crop"] == name]
        for ev in ("sowing", "harvest"):
            days = (rows[ev].to_numpy() - year0).astype("timedelta64[D]").astype(int)
            nominal = getattr(CALENDARS[name], ev)
            assert np.unique(days).size > 1, (name, ev)
            assert np.all(np.abs(days - nominal) <= 20), (name, ev)


def test_events_are_in_calendar_order(scene):
    values = scene.phenology[list(EVENTS)].to_numpy()
    for row in values:
        present = row[~pd.isna(row)]
        assert np.all(np.diff(present.astype("datetime64[D]").astype(int)) > 0)


def test_fallow_and_quinoa_have_no_transition(scene, cube, means):
    phen = scene.phenology
    for name in ("fallow", "quinoa"):
        rows = phen[phen["crop"] == name]
        for ev in ("tillage", "sowing", "emergence", "senescence_start", "harvest", "post_tillage"):
            assert rows[ev].isna().all(), (name, ev)
        idx = rows.index.to_numpy()
        assert np.abs(np.diff(means["VH"][:, idx], axis=0)).max() < 1.5, name
    crops = phen.index[phen["harvest"].notna()].to_numpy()
    assert np.median(np.abs(np.diff(means["VH"][:, crops], axis=0)).max(axis=0)) > 3.0


@pytest.mark.parametrize("other", ["pepper", "sweet potato"])
def test_confusable_classes_differ_from_cotton_mostly_in_their_window(scene, cube, means, other):
    cls = scene.parcels["class_id"].to_numpy()
    day = season_day(cube)
    lo, hi = DISTINCTIVE_WINDOWS[other]
    inside = (day >= lo) & (day <= hi)
    outside = np.ones_like(inside)
    for a, b in DISTINCTIVE_WINDOWS.values():
        outside &= ~((day >= a) & (day <= b))
    vh = means["VH"]
    diff = vh[:, cls == CLASSES.index(other)].mean(axis=1) - vh[:, cls == CLASSES.index("cotton")].mean(axis=1)
    # A dozen parcels per class leave a small level offset between the class means; remove it.
    diff -= np.median(diff[outside])
    assert np.abs(diff[inside]).mean() > 3 * np.abs(diff[outside]).mean()
    assert inside[np.argsort(-np.abs(diff))[:3]].all()


# --- rain, determinism, dates -------------------------------------------------------------


def test_rain_raises_vv_on_its_dates_only():
    dry = make_scene(size=48, n_dates=20, seed=4).cube.compute()
    wet_scene = make_scene(size=48, n_dates=20, seed=4, rain_events=3)
    wet = wet_scene.cube.compute()
    assert len(wet_scene.rain_dates) == 3
    is_rain = np.isin(wet["time"].values, np.array(wet_scene.rain_dates, dtype="datetime64[ns]"))
    assert is_rain.sum() == 3
    np.testing.assert_array_equal(wet["VV"].values[~is_rain], dry["VV"].values[~is_rain])
    rise_vv = np.nanmedian((wet["VV"] - dry["VV"]).values[is_rain].reshape(3, -1), axis=1)
    rise_vh = np.nanmedian((wet["VH"] - dry["VH"]).values[is_rain].reshape(3, -1), axis=1)
    assert np.all((rise_vv > 1.4) & (rise_vv < 3.1))
    assert np.all(rise_vh < 0.5 * rise_vv)
    # The scene mean VV on a rain date stands above its neighbours.
    mean_vv = wet["VV"].mean(dim=("y", "x")).values
    for k in np.flatnonzero(is_rain):
        neighbours = [mean_vv[j] for j in (k - 1, k + 1) if 0 <= j < mean_vv.size and not is_rain[j]]
        assert mean_vv[k] > max(neighbours) + 1.0


def test_no_rain_by_default(scene):
    assert scene.rain_dates == []


def test_same_seed_gives_the_same_scene():
    a, b = make_scene(size=40, n_dates=8, seed=5), make_scene(size=40, n_dates=8, seed=5)
    np.testing.assert_array_equal(a.cube["VV"].values, b.cube["VV"].values)
    np.testing.assert_array_equal(a.cube["VH"].values, b.cube["VH"].values)
    np.testing.assert_array_equal(a.parcel_id.values, b.parcel_id.values)
    pd.testing.assert_frame_equal(a.phenology, b.phenology)


def test_another_seed_gives_another_scene():
    a, b = make_scene(size=40, n_dates=4, seed=5), make_scene(size=40, n_dates=4, seed=6)
    assert not np.array_equal(a.parcel_id.values, b.parcel_id.values)


def test_parcels_do_not_depend_on_the_dates():
    a, b = make_scene(size=40, n_dates=4, seed=5), make_scene(size=40, n_dates=9, step_days=12, seed=5)
    np.testing.assert_array_equal(a.parcel_id.values, b.parcel_id.values)
    np.testing.assert_array_equal(a.class_id.values, b.class_id.values)


def test_missing_dates_drop_acquisitions_from_the_grid():
    regular = make_dates(n_dates=30)
    d = make_dates(n_dates=30, missing_dates=5, rng=np.random.default_rng(1))
    assert d.size == 25 and np.isin(d, regular).all()
    assert d[0] == regular[0] and d[-1] == regular[-1]


def test_irregular_dates_stay_near_the_grid():
    regular = make_dates(n_dates=40)
    d = make_dates(n_dates=40, irregular=True, rng=np.random.default_rng(1))
    gap = np.abs((d - regular).astype(int))
    assert d[0] == regular[0] and gap.max() <= 2 and gap.max() > 0
    assert np.all(np.diff(d).astype(int) > 0) and np.unique(np.diff(d)).size > 1


def test_scene_uses_the_date_options():
    sc = make_scene(size=24, n_dates=12, step_days=12, start="2018-03-01", missing_dates=2)
    t = sc.cube["time"].values
    assert t.size == 10 and str(t[0])[:10] == "2018-03-01"
    assert sc.info["season_year"] == 2018


def test_scene_uses_explicit_dates():
    dates = ["2017-01-05", "2017-02-01", "2017-06-30", "2017-07-12"]
    sc = make_scene(size=24, dates=dates)
    np.testing.assert_array_equal(sc.cube["time"].values, pd.to_datetime(dates).values.astype("datetime64[ns]"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 8},
        {"enl": 0.0},
        {"n_dates": 0},
        {"step_days": 0},
        {"n_dates": 5, "missing_dates": 4},
        {"n_dates": 5, "rain_events": 6},
        {"start": "not a date"},
        {"dates": ["2017-02-01", "2017-01-01"]},
        {"dates": ["2017-01-01", "2017-02-01"], "missing_dates": 1},
    ],
)
def test_bad_options_raise_input_error(kwargs):
    with pytest.raises(InputError):
        make_scene(**{"size": 24, **kwargs})


# --- products on disk ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    return make_scene(size=64, n_dates=8, seed=1, rain_events=1)


@pytest.fixture(scope="module")
def written(small, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "scene"
    return write_scene(small, out)


def test_write_returns_the_products(written):
    for key in ("tiffs", "stac", "parcels", "phenology", "truth"):
        assert written[key].exists(), key
    assert written["stac"].name == "stac.json" and written["parcels"].name == "parcels.gpkg"
    assert written["phenology"].name == "phenology.csv"


def test_geotiffs_are_georeferenced_tiled_and_compressed(small, written):
    tifs = sorted(written["tiffs"].glob("*.tif"))
    days = [str(d)[:10] for d in small.cube["time"].values]
    assert [p.name for p in tifs] == [f"S1_VVVH_{d.replace('-', '')}.tif" for d in days]
    for path, day in zip(tifs, days):
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32630
            assert src.transform == small.cube.rio.transform()
            assert src.nodata == 0.0 and src.dtypes == ("float32", "float32")
            assert src.descriptions == ("VV", "VH")
            assert src.block_shapes == [(256, 256), (256, 256)] and src.profile["tiled"]
            assert src.compression == Compression.deflate
            tags = src.tags()
            assert tags["ACQUISITION_DATE"] == day
            assert tags["TIFFTAG_DATETIME"] == day.replace("-", ":") + " 00:00:00"


def test_geotiffs_hold_linear_power_of_the_cube(small, written):
    tifs = sorted(written["tiffs"].glob("*.tif"))
    for k, path in enumerate(tifs):
        with rasterio.open(path) as src:
            data = src.read()
        for b, band in enumerate(("VV", "VH")):
            db = small.cube[band].isel(time=k).values
            np.testing.assert_array_equal(data[b] == 0, np.isnan(db))
            with np.errstate(divide="ignore"):
                np.testing.assert_allclose(10 * np.log10(data[b][~np.isnan(db)]), db[~np.isnan(db)], atol=1e-4)


def test_stac_item_collection_describes_the_geotiffs(small, written):
    stac = written["stac"]
    ic = pystac.ItemCollection.from_file(str(stac))
    days = small.cube["time"].values
    assert len(ic) == days.size
    to_wgs = Transformer.from_crs(32630, 4326, always_xy=True)
    valid = ~np.isnan(small.cube["VV"].isel(time=0).values)
    r, c = np.argwhere(valid)[len(np.argwhere(valid)) // 2]
    centre = Point(*to_wgs.transform(small.cube["x"].values[c], small.cube["y"].values[r]))
    for item, day in zip(ic, days):
        assert item.id == f"S1_VVVH_{str(day)[:10].replace('-', '')}"
        assert item.datetime == pd.Timestamp(day).tz_localize("UTC").to_pydatetime()
        asset = item.assets["backscatter"]
        assert asset.media_type == "image/tiff; application=geotiff" and asset.roles == ["data"]
        assert not Path(asset.href).is_absolute()
        assert (stac.parent / asset.href).resolve() == (written["tiffs"] / f"{item.id}.tif").resolve()
        assert item.properties["sar:polarizations"] == ["VV", "VH"]
        assert item.properties["proj:code"] == "EPSG:32630"
        assert item.properties["proj:shape"] == [64, 64]
        assert shape(item.geometry).contains(centre)
        west, south, east, north = item.bbox
        assert -7 < west < east < -5 and 36 < south < north < 38  # near Seville


def test_gpkg_parcels_rasterise_back_to_parcel_id(small, written):
    gdf = gpd.read_file(written["parcels"], layer="parcels")
    assert {"parcel_id", "crop", "class_id", "geometry"} <= set(gdf.columns)
    assert gdf.crs.to_epsg() == 32630
    assert list(gdf["crop"]) == [CLASSES[c] for c in gdf["class_id"]]
    burnt = rasterize(
        zip(gdf.geometry, gdf["parcel_id"]),
        out_shape=small.parcel_id.shape,
        transform=small.cube.rio.transform(),
        fill=0,
        all_touched=False,
        dtype="int32",
    )
    np.testing.assert_array_equal(burnt, small.parcel_id.values)


def test_phenology_csv_round_trips(small, written):
    csv = pd.read_csv(written["phenology"])
    assert list(csv["parcel_id"]) == list(small.phenology["parcel_id"])
    for ev in EVENTS:
        expected = small.phenology[ev].dt.strftime("%Y-%m-%d").fillna("").tolist()
        assert csv[ev].fillna("").tolist() == expected, ev


def test_truth_raster_holds_parcel_and_class_ids(small, written):
    with rasterio.open(written["truth"]) as src:
        assert src.descriptions == ("parcel_id", "class_id")
        assert src.crs.to_epsg() == 32630
        np.testing.assert_array_equal(src.read(1), small.parcel_id.values)
        np.testing.assert_array_equal(src.read(2), small.class_id.values)


def test_scene_json_is_strict_json_with_the_rain_dates(small, written):
    def no_nan(token):
        raise ValueError(token)

    meta = json.loads(written["meta"].read_text(), parse_constant=no_nan)
    assert meta["rain_dates"] == [str(d.date()) for d in small.rain_dates]
    assert meta["classes"] == list(CLASSES)


def test_write_refuses_a_non_empty_folder(small, tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match=r"keep.txt.*not a slamgeo scene folder"):
            write_scene(small, tmp_path, overwrite=overwrite)
    assert (tmp_path / "keep.txt").read_text() == "x"


def test_write_overwrites_a_scene_when_asked(small, tmp_path):
    out = tmp_path / "scene"
    write_scene(small, out)
    (out / "stac.json").write_text("old")
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        write_scene(small, out)
    write_scene(small, out, overwrite=True)
    assert (out / "stac.json").read_text() != "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]
    (out / "old.txt").write_text("x")  # a file slamgeo did not write: never replaced
    with pytest.raises(OutputError, match="old.txt"):
        write_scene(small, out, overwrite=True)
    assert (out / "old.txt").read_text() == "x"


def test_failed_write_leaves_nothing_that_looks_complete(small, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    write_scene(small, tmp_path / "scene")
    before = (tmp_path / "scene" / "stac.json").read_bytes()
    monkeypatch.setattr(synth.writers, "_write_stac", broken)
    with pytest.raises(RuntimeError):
        write_scene(small, tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]
    # An existing scene survives a failed overwrite.
    with pytest.raises(RuntimeError):
        write_scene(small, tmp_path / "scene", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]
    assert (tmp_path / "scene" / "stac.json").read_bytes() == before


# --- command line -------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "slamgeo", "synth", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_cli_writes_a_scene_then_refuses_to_overwrite_it(tmp_path):
    out = tmp_path / "scene"
    res = run_cli(
        str(out),
        "--size",
        "40",
        "--n-dates",
        "9",
        "--seed",
        "3",
        "--rain-events",
        "1",
        "--missing-dates",
        "1",
        "--irregular",
    )
    assert res.returncode == 0, res.stderr
    assert "wrote" in res.stdout and "stac.json" in res.stdout
    assert len(list((out / "tiffs").glob("S1_VVVH_*.tif"))) == 8
    assert len(pystac.ItemCollection.from_file(str(out / "stac.json"))) == 8
    again = run_cli(str(out), "--size", "40", "--n-dates", "9")
    assert again.returncode == 1
    assert "error:" in again.stderr and "already exists" in again.stderr


def test_cli_help_lists_the_options():
    res = run_cli("--help")
    assert res.returncode == 0
    for opt in (
        "--size",
        "--seed",
        "--n-dates",
        "--start",
        "--step-days",
        "--missing-dates",
        "--irregular",
        "--rain-events",
        "--overwrite",
        "--calendar-shift-days",
        "--crop-mix",
    ):
        assert opt in res.stdout, opt


# --- a Sentinel-1 archive (Planetary Computer sentinel-1-rtc conventions) ------------------


@pytest.fixture(scope="module")
def archived(tmp_path_factory):
    """A 64 x 64 scene over 6 dates written as an archive: 6 ascending passes of 2 slices, and
    descending passes after dates 0 and 5."""
    sc = make_scene(size=64, n_dates=6, seed=3)
    return sc, write_archive(sc, tmp_path_factory.mktemp("archive") / "scene")


def archive_items(paths) -> list[pystac.Item]:
    return list(pystac.ItemCollection.from_file(str(paths["items"])))


def test_archive_layout_has_the_ground_truth_and_no_scene_tiffs(archived):
    sc, paths = archived
    out = paths["meta"].parent
    assert sorted(p.name for p in out.iterdir()) == [
        ".slamgeo-output.json",  # slamgeo's stamp (slamgeo.io.storage.STAMP_FILE)
        "archive",
        "parcels.gpkg",
        "phenology.csv",
        "scene.json",
        "truth.tif",
    ]
    assert sorted(p.name for p in (out / "archive").iterdir()) == ["cogs", "collection.json", "items.json"]
    meta = json.loads(paths["meta"].read_text())
    assert meta["archive"] is True and meta["dates"] == [str(d)[:10] for d in sc.cube["time"].values]
    assert meta["archive_layout"]["slices"]["S"]["epsg"] == 32629
    with rasterio.open(paths["truth"]) as src:
        np.testing.assert_array_equal(src.read(1), sc.parcel_id.values)
    items = archive_items(paths)
    expected = {f"{i.id}_{pol}.tif" for i in items for pol in ("vv", "vh")}
    assert {p.name for p in paths["cogs"].iterdir()} == expected


def test_archive_items_follow_the_sentinel_1_rtc_conventions(archived):
    sc, paths = archived
    items = archive_items(paths)
    raw = json.loads(paths["items"].read_text())
    assert raw["type"] == "FeatureCollection"
    assert len(items) == len(raw["features"]) == 6 * 2 + 2
    for item, feature in zip(items, raw["features"]):
        # pystac reads "proj:epsg" into "proj:code" (projection extension v2); the file has both.
        epsg = feature["properties"]["proj:epsg"]
        assert isinstance(epsg, int) and feature["properties"]["proj:code"] == f"EPSG:{epsg}"
        p = {**item.properties, "proj:epsg": epsg}
        assert item.collection_id == "sentinel-1-rtc"
        assert {link.rel for link in item.links} >= {"collection", "root", "parent"}
        assert item.get_single_link("collection").href == "./collection.json"
        assert item.datetime is not None and item.datetime.utcoffset().total_seconds() == 0
        assert p["datetime"].endswith("Z")
        assert p["platform"] == "sentinel-1a" and p["constellation"] == "sentinel-1"
        assert p["sar:instrument_mode"] == "IW" and p["sar:polarizations"] == ["VV", "VH"]
        assert (p["sat:orbit_state"], p["sat:relative_orbit"]) in {("ascending", 74), ("descending", 147)}
        assert p["proj:code"] == f"EPSG:{p['proj:epsg']}" and isinstance(p["proj:epsg"], int)
        key = {"ascending": item.id[-1], "descending": "D"}[p["sat:orbit_state"]]
        assert item.id == f"S1A_IW_GRDH_1SDV_{item.datetime:%Y%m%dT%H%M%S}_{key}"
        west, south, east, north = item.bbox
        assert -7 < west < east < -5 and 36 < south < north < 38
        assert shape(item.geometry).bounds == pytest.approx(tuple(item.bbox))
        assert set(item.assets) == {"vv", "vh"}
        for pol, asset in item.assets.items():
            assert asset.media_type == "image/tiff; application=geotiff; profile=cloud-optimized"
            assert asset.roles == ["data"]
            assert asset.extra_fields["raster:bands"] == [{"nodata": -32768, "data_type": "float32"}]
            assert not Path(asset.href).is_absolute() and asset.href == f"cogs/{item.id}_{pol}.tif"
            with rasterio.open(paths["archive"] / asset.href) as src:
                assert src.crs.to_epsg() == p["proj:epsg"]
                assert list(src.transform)[:6] == p["proj:transform"]
                assert [src.height, src.width] == p["proj:shape"]
                assert src.count == 1 and src.dtypes == ("float32",) and src.nodata == -32768
                assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"


def test_archive_collection_describes_the_items(archived):
    _, paths = archived
    col = pystac.Collection.from_file(str(paths["collection"]))
    assert col.id == "sentinel-1-rtc" and col.license
    items = archive_items(paths)
    (west, south, east, north) = col.extent.spatial.bboxes[0]
    for item in items:
        x0, y0, x1, y1 = item.bbox
        assert west <= x0 and south <= y0 and x1 <= east and y1 <= north
    (t0, t1) = col.extent.temporal.intervals[0]
    assert t0 == min(i.datetime for i in items) and t1 == max(i.datetime for i in items)
    raw = json.loads(paths["collection"].read_text())
    assert raw["type"] == "Collection" and raw["links"] == [
        {"rel": "root", "href": "./collection.json", "type": "application/json"}
    ]


def test_archive_passes_are_two_overlapping_slices_in_two_utm_zones(archived):
    sc, paths = archived
    items = archive_items(paths)
    assert {i.properties["proj:code"] for i in items} == {"EPSG:32630", "EPSG:32629"}
    asc = [i for i in items if i.properties["sat:orbit_state"] == "ascending"]
    desc = [i for i in items if i.properties["sat:orbit_state"] == "descending"]
    assert len(asc) == 12 and len(desc) == 2 and len(asc) > len(desc)
    days = [pd.Timestamp(d).tz_localize("UTC") for d in sc.cube["time"].values]
    north = {i.id: i for i in asc if i.id.endswith("_N")}
    south = {i.id: i for i in asc if i.id.endswith("_S")}
    assert len(north) == len(south) == 6
    for day in days:
        n = next(i for i in north.values() if i.datetime == day + pd.Timedelta("06:15:00"))
        s = next(i for i in south.values() if i.datetime == day + pd.Timedelta("06:15:25"))
        assert (n.properties["proj:code"], s.properties["proj:code"]) == ("EPSG:32630", "EPSG:32629")
        assert n.properties["proj:transform"] == list(sc.cube.rio.transform())[:6]
        assert n.properties["proj:shape"] == [39, 64]  # rows 0 .. 38 (< 0.6 * 64)
        gn, gs = shape(n.geometry), shape(s.geometry)
        overlap = gn.intersection(gs).area
        assert 0.1 * gs.area < overlap < 0.5 * gs.area  # rows 26 .. 38 of 26 .. 63
        assert gs.centroid.y < gn.centroid.y
        tr = s.properties["proj:transform"]
        assert tr[0] == 10.0 and tr[4] == -10.0 and tr[1] == tr[3] == 0.0 and tr[2] % 10 == tr[5] % 10 == 0
    assert [i.datetime for i in desc] == [days[k] + pd.Timedelta("1 days 18:05:00") for k in (0, 5)]
    for d in desc:
        assert d.properties["sat:relative_orbit"] == 147 and d.properties["proj:shape"] == [64, 64]


def read_cog(paths, item: pystac.Item, pol: str) -> np.ndarray:
    with rasterio.open(paths["archive"] / item.assets[pol].href) as src:
        return src.read(1)


def test_archive_north_slices_hold_linear_power_of_the_scene(archived):
    sc, paths = archived
    north = sorted((i for i in archive_items(paths) if i.id.endswith("_N")), key=lambda i: i.datetime)
    for k, item in enumerate(north):
        for band in ("VV", "VH"):
            db = sc.cube[band].isel(time=k).values[:39]
            data = read_cog(paths, item, band.lower())
            nan = np.isnan(db)
            assert nan.any() and np.all(data[nan] == -32768)
            expected = (10 ** (db[~nan].astype(np.float64) / 10)).astype(np.float32)
            np.testing.assert_allclose(data[~nan], expected, rtol=1e-6)


def test_archive_south_slices_are_the_scene_reprojected(archived):
    sc, paths = archived
    south = sorted((i for i in archive_items(paths) if i.id.endswith("_S")), key=lambda i: i.datetime)
    to_30 = Transformer.from_crs(32629, 32630, always_xy=True)
    t30 = sc.cube.rio.transform()
    for k, item in enumerate(south):
        data = read_cog(paths, item, "vv")
        valid = data != -32768
        assert 0.5 < valid.mean() < 0.97 and np.all(data[valid] > 0)  # rotated grid: no-data corners
        # Each valid pixel centre lands in scene rows 26..63, and the values follow the scene's.
        t = item.properties["proj:transform"]
        r, c = np.nonzero(valid)
        x, y = to_30.transform(t[2] + (c + 0.5) * t[0], t[5] + (r + 0.5) * t[4])
        row = np.floor((np.asarray(y) - t30.f) / t30.e).astype(int)
        col = np.floor((np.asarray(x) - t30.c) / t30.a).astype(int)
        assert row.min() >= 25 and row.max() <= 64 and col.min() >= -1 and col.max() <= 64
        inside = (row >= 26) & (row < 64) & (col >= 0) & (col < 64)
        db = sc.cube["VV"].isel(time=k).values
        scene_lin = 10 ** (db[row[inside], col[inside]] / 10)
        ok = ~np.isnan(scene_lin)
        assert np.nanmean(data[r[inside], c[inside]][ok]) == pytest.approx(scene_lin[ok].mean(), rel=0.05)
        assert np.corrcoef(np.log(data[r[inside], c[inside]][ok]), np.log(scene_lin[ok]))[0, 1] > 0.4


def test_archive_descending_passes_add_a_geometry_offset(archived):
    sc, paths = archived
    desc = sorted((i for i in archive_items(paths) if i.id.endswith("_D")), key=lambda i: i.datetime)
    for k, item in zip((0, 5), desc):
        assert item.properties["slamgeo:scene_date"] == str(sc.cube["time"].values[k])[:10]
        for band, offset in (("VV", 1.5), ("VH", 1.0)):
            db = sc.cube[band].isel(time=k).values
            data = read_cog(paths, item, band.lower())
            nan = np.isnan(db)
            assert np.all(data[nan] == -32768)
            np.testing.assert_allclose(10 * np.log10(data[~nan]), db[~nan] + offset, atol=1e-4)


def test_archive_overwrite_follows_the_scene_rules(archived, tmp_path):
    sc, _ = archived
    out = tmp_path / "scene"
    write_archive(sc, out)
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        write_archive(sc, out)
    write_scene(sc, out, overwrite=True)  # an archive folder is a scene folder
    assert (out / "stac.json").exists() and not (out / "archive").exists()
    write_archive(sc, out, overwrite=True)
    assert (out / "archive" / "items.json").exists() and not (out / "tiffs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]


def test_archive_slices_overlap_by_a_fifth_of_the_scene():
    assert archive_slices(64) == {"N": (0, 39), "S": (26, 64)}
    assert archive_slices(512) == {"N": (0, 308), "S": (205, 512)}
    assert archive_slices(10) == {"N": (0, 6), "S": (4, 10)}


# --- a large parcels file for benchmarks --------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 37, 100])
def test_grid_parcels_tile_the_scene(small, n):
    gdf = grid_parcels(small, n)
    assert len(gdf) == n and list(gdf["parcel_id"]) == list(range(1, n + 1))
    assert gdf.crs.to_epsg() == 32630
    assert set(gdf["crop"]) <= set(CLASSES)
    assert list(gdf["crop"]) == [CLASSES[c] for c in gdf["class_id"]]
    assert gdf.geometry.is_valid.all() and not gdf.geometry.is_empty.any()
    union = gdf.geometry.union_all()
    assert union.area == pytest.approx(gdf.geometry.area.sum())  # disjoint
    scene_box = shapely.geometry.box(*small.cube.rio.bounds())
    assert scene_box.contains(union)
    assert 0.6 * scene_box.area < union.area < 0.7 * scene_box.area  # (1 - 2 x 0.1)^2 of each cell
    # Cells are nearly square, and the first one is in the north-west corner.
    w = gdf.geometry.bounds["maxx"] - gdf.geometry.bounds["minx"]
    h = gdf.geometry.bounds["maxy"] - gdf.geometry.bounds["miny"]
    assert (w / h).between(0.4, 2.5).all()
    assert gdf.geometry.iloc[0].centroid.x < scene_box.centroid.x or n == 1


def test_grid_parcels_take_the_class_of_the_scene_parcel_under_them(small):
    gdf = grid_parcels(small, 60)
    t = small.cube.rio.transform()
    cid = small.class_id.values
    centres = gdf.geometry.centroid
    rows = np.floor((centres.y - t.f) / t.e).astype(int)
    cols = np.floor((centres.x - t.c) / t.a).astype(int)
    under = cid[rows, cols]
    assert np.all(gdf["class_id"].to_numpy()[under >= 0] == under[under >= 0])
    assert (under >= 0).mean() > 0.3
    assert set(gdf["class_id"]) <= set(small.parcels["class_id"])


def test_grid_parcels_from_a_transform_deal_classes_round_robin(small, tmp_path):
    gdf = grid_parcels((small.cube.rio.transform(), 64), 40)
    assert list(gdf["crop"]) == [CLASSES[i % len(CLASSES)] for i in range(40)]
    rect = grid_parcels((small.cube.rio.transform(), (32, 64)), 8, margin=0.0)
    assert rect.geometry.union_all().area == pytest.approx(32 * 64 * 100.0)
    path = synth.write_grid_parcels(gdf, tmp_path / "parcels_grid.gpkg")
    back = gpd.read_file(path, layer="parcels")
    assert list(back["parcel_id"]) == list(range(1, 41)) and back.crs.to_epsg() == 32630
    for bad in (0, -3, 2.5):
        with pytest.raises(InputError):
            grid_parcels(small, bad)


def test_write_scene_adds_the_grid_parcels_file(small, tmp_path):
    paths = write_scene(small, tmp_path / "scene", n_grid_parcels=25)
    back = gpd.read_file(paths["parcels_grid"], layer="parcels")
    assert len(back) == 25 and paths["parcels_grid"].name == "parcels_grid.gpkg"
    with pytest.raises(InputError):
        write_scene(small, tmp_path / "other", n_grid_parcels=-1)
    assert not (tmp_path / "other").exists()


def test_cli_writes_an_archive_with_grid_parcels(tmp_path):
    out = tmp_path / "scene"
    res = run_cli(str(out), "--size", "40", "--n-dates", "8", "--archive", "--grid-parcels", "50")
    assert res.returncode == 0, res.stderr
    assert "items.json (18 STAC items)" in res.stdout and "(36 COGs)" in res.stdout
    items = pystac.ItemCollection.from_file(str(out / "archive" / "items.json"))
    assert sorted(i.properties["sat:orbit_state"] for i in items) == ["ascending"] * 16 + ["descending"] * 2
    assert len(gpd.read_file(out / "parcels_grid.gpkg", layer="parcels")) == 50
    assert json.loads((out / "scene.json").read_text())["archive"] is True
    assert not (out / "tiffs").exists()
    help_ = run_cli("--help")
    assert "--archive" in help_.stdout and "--grid-parcels" in help_.stdout


# --- drift from one season to the next -----------------------------------------------------


def _scene_arrays(sc) -> tuple:
    return (sc.cube["VV"].values, sc.cube["VH"].values, sc.parcel_id.values, sc.class_id.values)


def test_no_drift_draws_the_scene_of_the_defaults_bit_for_bit():
    kw = {"size": 48, "n_dates": 20, "seed": 7, "rain_events": 2, "missing_dates": 2}
    plain = make_scene(**kw)
    for drift in ({"calendar_shift_days": 0}, {"crop_mix": None}, {"crop_mix": {"maize": 1.0}}, {"crop_mix": {}}):
        other = make_scene(**kw, **drift)
        for a, b in zip(_scene_arrays(plain), _scene_arrays(other), strict=True):
            assert a.tobytes() == b.tobytes(), drift
        pd.testing.assert_frame_equal(plain.phenology, other.phenology)
        params = {k: v for k, v in other.info["params"].items() if k != "crop_mix" or v != {"maize": 1.0}}
        assert {**other.info, "params": params} == plain.info  # no shift recorded when there is none


def test_calendar_shift_moves_every_event_and_cut_by_whole_days():
    plain = make_scene(size=96, n_dates=8, seed=4)
    moved = make_scene(size=96, n_dates=8, seed=4, calendar_shift_days=-30)
    for e in EVENTS:  # the same jitter draws: every parcel's event moves by exactly the shift
        a, b = plain.phenology[e].to_numpy(), moved.phenology[e].to_numpy()
        np.testing.assert_array_equal(np.isnat(a), np.isnat(b))
        ok = ~np.isnat(a)
        assert ok.any()
        np.testing.assert_array_equal(b[ok] - a[ok], np.timedelta64(-30, "D"))
    for a, b in zip(plain.phenology["cuts"], moved.phenology["cuts"], strict=True):
        da_, db_ = (pd.to_datetime(c.split(";")).values if c else np.array([], "datetime64[ns]") for c in (a, b))
        np.testing.assert_array_equal(db_ - da_, np.timedelta64(-30, "D"))
    np.testing.assert_array_equal(plain.parcel_id.values, moved.parcel_id.values)
    assert moved.info["params"]["calendar_shift_days"] == -30
    for c, (lo, _) in DISTINCTIVE_WINDOWS.items():
        assert moved.info["distinctive_windows"][c][0] == str(np.datetime64("2017-01-01") + lo - 30)


def _class_mean_db(cube, class_id: np.ndarray, band: str) -> np.ndarray:
    """Mean linear intensity of each class on each date, in dB: (classes, T), by np.bincount."""
    t = cube.sizes["time"]
    lin = 10 ** (cube[band].values.reshape(t, -1).astype(np.float64) / 10)
    cid = class_id.ravel().astype(np.int64) + 1  # 0: no parcel
    n = len(CLASSES) + 1
    counts = np.bincount(cid, minlength=n)
    sums = np.stack([np.bincount(cid, weights=np.nan_to_num(lin[k]), minlength=n) for k in range(t)], axis=1)
    return 10 * np.log10(sums[1:] / np.maximum(counts[1:, None], 1))


def test_calendar_shift_moves_the_class_mean_profiles_by_the_shift():
    """42 days are 7 acquisitions of the 6-day grid: each class's mean VV and VH profile of
    the shifted scene is the unshifted one moved by 7 dates, up to the weather (soil moisture
    keeps its season) and texture; the best lag of each class is the shift."""
    step, lag = 6, 7
    plain = make_scene(size=128, seed=1, calendar_shift_days=0).cube.compute()
    moved = make_scene(size=128, seed=1, calendar_shift_days=step * lag).cube.compute()
    cid = make_scene(size=128, seed=1, n_dates=8).class_id.values
    seasonal = [CLASSES.index(c) for c in CLASSES if CALENDARS[c].kind != "flat"]  # fallow, quinoa: no transition
    for band in ("VV", "VH"):
        a, b = _class_mean_db(plain, cid, band)[seasonal], _class_mean_db(moved, cid, band)[seasonal]
        idx = np.arange(lag, a.shape[1] - lag)  # dates that the shifted profile covers at every lag
        # mean |moved(t + k dates) - plain(t)| per class, for k = -lag .. lag: (lags, classes)
        errors = np.stack([np.abs(b[:, idx + k] - a[:, idx]).mean(axis=1) for k in range(-lag, lag + 1)])
        best = errors.argmin(axis=0) - lag
        assert (best == lag).mean() >= 0.8, (band, best)
        assert np.median(errors[2 * lag]) < 0.8, band  # dB, moved back by the shift
        assert np.median(errors[lag]) > 2 * np.median(errors[2 * lag]), band  # unmoved: far worse


def test_crop_mix_deals_the_parcels_by_weight():
    from slamgeo.synth import deal_classes, scene_classes

    np.testing.assert_array_equal(deal_classes(40, {"maize": 1}), np.arange(40) % len(CLASSES))
    seq = deal_classes(170, {"maize": 3, "wheat": 0})  # weights: 14 classes of 1, maize 3
    counts = np.bincount(seq, minlength=len(CLASSES))
    assert counts[CLASSES.index("wheat")] == 0
    assert counts[CLASSES.index("maize")] == 30 and set(np.delete(counts, [3, 4])) == {10}
    sc = make_scene(size=128, n_dates=8, seed=2, crop_mix={"maize": 3, "wheat": 0})
    per_class = sc.parcels["crop"].value_counts()
    assert "wheat" not in per_class and per_class["maize"] >= 2.5 * per_class.drop("maize").median()
    assert sorted(scene_classes(size=128, seed=2, crop_mix={"maize": 3, "wheat": 0})) == sorted(per_class.index)
    assert sc.info["params"]["crop_mix"] == {"maize": 3.0, "wheat": 0.0}
    plain = make_scene(size=128, n_dates=8, seed=2)
    np.testing.assert_array_equal(sc.parcel_id.values, plain.parcel_id.values)  # the same fields


@pytest.mark.parametrize(
    "kwargs",
    [
        {"calendar_shift_days": 4.5},
        {"calendar_shift_days": 400},
        {"calendar_shift_days": float("nan")},
        {"crop_mix": {"rice": 1}},
        {"crop_mix": {"maize": -1}},
        {"crop_mix": {"maize": float("inf")}},
        {"crop_mix": dict.fromkeys(CLASSES, 0)},
    ],
)
def test_bad_drift_options_raise_input_error(kwargs):
    with pytest.raises(InputError):
        make_scene(size=24, n_dates=8, **kwargs)


def test_cli_draws_a_drifted_scene(tmp_path):
    out = tmp_path / "scene"
    args = ("--size", "40", "--n-dates", "8", "--seed", "3")
    res = run_cli(str(out), *args, "--calendar-shift-days", "45", "--crop-mix", "maize=2, sugar beet=0")
    assert res.returncode == 0, res.stderr
    meta = json.loads((out / "scene.json").read_text())
    assert meta["params"]["calendar_shift_days"] == 45
    assert meta["params"]["crop_mix"] == {"maize": 2.0, "sugar beet": 0.0}
    phen = pd.read_csv(out / "phenology.csv")
    assert "sugar beet" not in set(phen["crop"])
    bad = run_cli(str(tmp_path / "bad"), *args, "--crop-mix", "maize:2")
    assert bad.returncode == 1 and "--crop-mix" in bad.stderr and "CLASS=WEIGHT" in bad.stderr
