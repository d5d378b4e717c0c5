"""Parcels: reading and bad input, rasterising, per-parcel and per-class aggregation, checked
against numpy loops, shapely point-in-polygon, rasterstats, and the CLI end to end."""

import json
import subprocess
import sys
import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401
import shapely
import xarray as xr
from rasterstats import zonal_stats
from shapely import affinity

from slamgeo.errors import InputError
from slamgeo.io.cube import make_cube
from slamgeo.io.parcels import ParcelWarning, find_overlaps, read_parcels
from slamgeo.jobs.cluster import assign_clusters
from slamgeo.jobs.parcels import aggregate_parcels, class_profiles, minmax
from slamgeo.jobs.rasterize import rasterize_parcels

NY, NX, T, D = 40, 50, 6, 2
X0, Y0, RES = 230_000.0, 4_140_000.0, 10.0
CRS = 32630
CLASSES = ["beet", "cotton", "wheat"]


def _scene(chunk: int = 16, seed: int = 0):
    """(cube, results) on one 40 x 50 grid of 10 m pixels in EPSG:32630, chunked `chunk`.

    Embedding NaN on the top 3 rows and 4 scattered pixels, importance NaN there too; VV/VH
    NaN at scattered (date, pixel) but never at the first date; `cluster` of 4 centres."""
    rng = np.random.default_rng(seed)
    y = Y0 - RES * np.arange(NY) - RES / 2
    x = X0 + RES * np.arange(NX) + RES / 2
    time = pd.date_range("2017-01-03", periods=T, freq="6D")
    vv = rng.normal(-12, 2, (T, NY, NX))
    vh = rng.normal(-20, 2, (T, NY, NX))
    holes = rng.random((T, NY, NX)) < 0.05
    holes[0] = False
    vv[holes] = np.nan
    vh[np.roll(holes, 1, axis=2)] = np.nan
    cube = make_cube({"VV": vv, "VH": vh}, time, y=y, x=x, crs=CRS, chunk=chunk)
    emb = rng.normal(size=(D, NY, NX)).astype(np.float32)
    emb[:, :3] = np.nan
    for r, c in rng.integers(3, [NY, NX], (4, 2)):
        emb[rng.integers(0, D), r, c] = np.nan
    imp = rng.random((D, T, NY, NX)).astype(np.float32)
    imp[:, :, ~np.isfinite(emb).all(0)] = np.nan
    results = (
        xr.Dataset(
            {
                "embedding": (("dim", "y", "x"), emb),
                "importance": (("dim", "time", "y", "x"), imp),
                "recon_error": (("y", "x"), rng.random((NY, NX)).astype(np.float32)),
            },
            coords={"dim": np.arange(D), "time": time, "y": y, "x": x},
        )
        .rio.write_crs(CRS)
        .chunk({"y": chunk, "x": chunk})
    )
    centres = np.array([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]])
    results["cluster"] = assign_clusters(results["embedding"], centres)
    return cube, results


def _parcels(n_rows: int = 3, n_cols: int = 4) -> gpd.GeoDataFrame:
    """Rotated rectangles, not overlapping, ids 100, 107, 114, ... and classes in turn."""
    geoms, ids, crops = [], [], []
    for i in range(n_rows):
        for j in range(n_cols):
            cx, cy = X0 + 60 + 120 * j, Y0 - 70 - 130 * i
            rect = shapely.box(cx - 45, cy - 32, cx + 45, cy + 32)
            geoms.append(affinity.rotate(rect, 13 * (i * n_cols + j) - 30, origin="centroid"))
            ids.append(100 + 7 * (i * n_cols + j))
            crops.append(CLASSES[(i * n_cols + j) % 3])
    return gpd.GeoDataFrame({"parcel_id": ids, "crop": crops}, geometry=geoms, crs=CRS)


def _write(gdf: gpd.GeoDataFrame, path) -> str:
    if str(path).endswith(".parquet"):
        gdf.to_parquet(path)
    else:
        gdf.to_file(path)
    return str(path)


# --------------------------------------------------------------------------- reading and bad input


@pytest.mark.parametrize("suffix", [".gpkg", ".shp", ".parquet"])
def test_read_parcels_reads_each_format(tmp_path, suffix):
    gdf = _parcels()
    out = read_parcels(_write(gdf, tmp_path / f"p{suffix}"))
    assert out["parcel_id"].tolist() == gdf["parcel_id"].tolist()
    assert out["crop"].tolist() == gdf["crop"].tolist()
    assert all(a.symmetric_difference(b).area < 1e-6 for a, b in zip(out.geometry, gdf.geometry))  # shp reorients rings


def test_read_parcels_reprojects_to_the_cube_crs(tmp_path):
    gdf = _parcels()
    out = read_parcels(_write(gdf.to_crs(4326), tmp_path / "p.gpkg"), crs=CRS)
    assert out.crs.to_epsg() == CRS
    assert max(a.hausdorff_distance(b) for a, b in zip(out.geometry, gdf.geometry)) < 0.01


def test_missing_class_column_is_named(tmp_path):
    path = _write(_parcels().rename(columns={"crop": "culture"}), tmp_path / "p.gpkg")
    with pytest.raises(InputError, match=r"missing column\(s\) \['crop'\].*culture"):
        read_parcels(path)


def test_empty_layer_is_refused(tmp_path):
    path = _write(_parcels().iloc[:0], tmp_path / "p.parquet")
    with pytest.raises(InputError, match="empty"):
        read_parcels(path)


def test_invalid_geometry_is_repaired_and_reported(tmp_path):
    gdf = _parcels()
    bowtie = shapely.Polygon([(X0 + 10, Y0 - 10), (X0 + 90, Y0 - 90), (X0 + 90, Y0 - 10), (X0 + 10, Y0 - 90)])
    gdf.loc[0, "geometry"] = bowtie
    path = _write(gdf, tmp_path / "p.parquet")
    with pytest.warns(
        ParcelWarning, match=rf"{path}: repaired 1 invalid parcel geometry .* make_valid \(ids \[100\]\)"
    ):
        out = read_parcels(path)
    assert out.attrs["repaired_ids"] == [100]
    assert out.attrs["repaired"] == 1
    assert out.geometry.is_valid.all()
    assert out.geometry.iloc[0].area == pytest.approx(2 * 80 * 40 / 2)  # two triangles


def test_valid_parcels_are_read_without_a_repair_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ParcelWarning)
        out = read_parcels(_write(_parcels(), tmp_path / "p.parquet"))
    assert out.attrs["repaired"] == 0 and out.attrs["repaired_ids"] == []


def test_null_geometry_is_refused(tmp_path):
    gdf = _parcels()
    gdf.loc[2, "geometry"] = None
    with pytest.raises(InputError, match=r"\[114\] have a null or empty geometry"):
        read_parcels(_write(gdf, tmp_path / "p.parquet"))


@pytest.mark.parametrize("ids,message", [([5, 5, 6], "duplicated"), ([0, 1, 2], "0 means no parcel")])
def test_bad_ids_are_refused(tmp_path, ids, message):
    gdf = _parcels(1, 3).assign(parcel_id=ids)
    with pytest.raises(InputError, match=message):
        read_parcels(_write(gdf, tmp_path / "p.parquet"))


def test_layer_without_crs_is_refused(tmp_path):
    gdf = _parcels().set_crs(None, allow_override=True)
    with pytest.raises(InputError, match="no CRS"):
        read_parcels(_write(gdf, tmp_path / "p.parquet"))


def test_parcels_outside_the_cube_are_refused():
    _, results = _scene()
    far = _parcels().translate(xoff=50_000)
    with pytest.raises(InputError, match="do not overlap the cube"):
        rasterize_parcels(gpd.GeoDataFrame(_parcels().drop(columns="geometry"), geometry=far), results)


def test_sample_form_is_not_rasterised():
    cube = make_cube(
        {"VV": np.zeros((2, 3)), "VH": np.zeros((2, 3))}, ["2017-01-01", "2017-01-07"], sample=np.arange(3)
    )
    with pytest.raises(InputError, match="sample form"):
        rasterize_parcels(_parcels(), cube)


# --------------------------------------------------------------------------- rasterising


def _centres(results):
    xx, yy = np.meshgrid(results["x"].values, results["y"].values)
    return xx, yy


def test_rasterize_matches_pixel_centres_in_polygons():
    _, results = _scene()
    gdf = _parcels()
    pid = rasterize_parcels(gdf, results).values
    xx, yy = _centres(results)
    ref = np.zeros((NY, NX), dtype=np.int64)
    for i, g in zip(gdf["parcel_id"], gdf.geometry):
        ref[shapely.contains_xy(g, xx, yy)] = i
    np.testing.assert_array_equal(pid, ref)


def test_all_touched_adds_every_pixel_a_parcel_touches():
    _, results = _scene()
    gdf = _parcels(1, 1)
    centre = rasterize_parcels(gdf, results).values > 0
    touched = rasterize_parcels(gdf, results, all_touched=True).values > 0
    xx, yy = _centres(results)
    cells = shapely.box(xx - RES / 2, yy - RES / 2, xx + RES / 2, yy + RES / 2)
    ref = shapely.area(shapely.intersection(cells, gdf.geometry.iloc[0])) > 1e-6
    assert (touched >= centre).all()
    np.testing.assert_array_equal(touched, ref)


def test_overlapping_parcels_go_to_the_smallest():
    _, results = _scene()
    big = shapely.box(X0 + 20, Y0 - 220, X0 + 220, Y0 - 20)
    small = shapely.box(X0 + 80, Y0 - 160, X0 + 160, Y0 - 80)
    gdf = gpd.GeoDataFrame({"parcel_id": [2, 1], "crop": ["a", "b"]}, geometry=[small, big], crs=CRS)
    assert find_overlaps(gdf) == [(1, 2)]
    pid = rasterize_parcels(gdf, results).values
    xx, yy = _centres(results)
    assert (pid[shapely.contains_xy(small, xx, yy)] == 2).all()
    assert (pid[shapely.contains_xy(big, xx, yy) & ~shapely.contains_xy(small, xx, yy)] == 1).all()


def test_rasterize_is_lazy_and_chunked_like_the_grid():
    _, results = _scene(chunk=16)
    pid = rasterize_parcels(_parcels(), results)
    assert pid.chunks == results["recon_error"].chunks and pid.dtype == np.int32
    assert pid.rio.crs.to_epsg() == CRS


# --------------------------------------------------------------------------- aggregation


def _numpy_reference(cube, results, pid, ids):
    """Per-parcel statistics with a plain loop over parcels."""
    imp = results["importance"].values.astype(np.float64)
    emb = results["embedding"].values.astype(np.float64)
    vv = cube["VV"].values.astype(np.float64)
    cl = results["cluster"].values
    out = {k: [] for k in ("importance", "embedding", "VV", "VV_count", "n_pixels", "n_valid", "cluster_pixels")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN pixel set
        for i in ids:
            m = pid == i
            out["importance"].append(np.nanmean(imp[:, :, m], axis=-1) if m.any() else np.full(imp.shape[:2], np.nan))
            out["embedding"].append(np.nanmean(emb[:, m], axis=-1) if m.any() else np.full(D, np.nan))
            out["VV"].append(np.nanmean(vv[:, m], axis=-1) if m.any() else np.full(T, np.nan))
            out["VV_count"].append(np.isfinite(vv[:, m]).sum(-1))
            out["n_pixels"].append(m.sum())
            out["n_valid"].append(np.isfinite(emb[:, m]).all(0).sum())
            out["cluster_pixels"].append(np.bincount(cl[m][cl[m] >= 0], minlength=4))
    return {k: np.array(v) for k, v in out.items()}


def test_aggregate_matches_a_numpy_loop_over_parcels():
    cube, results = _scene()
    gdf = _parcels()
    ids = np.append(999, gdf["parcel_id"].to_numpy()[::-1])  # unsorted; 999: a parcel with no pixel
    pid_da = rasterize_parcels(gdf, results)
    agg = aggregate_parcels(results, cube, pid_da, ids)
    ref = _numpy_reference(cube, results, pid_da.values, ids)
    assert agg["importance"].dims == ("parcel", "dim", "time")
    np.testing.assert_array_equal(agg["parcel"].values, ids)
    for name in ("importance", "embedding", "VV"):
        np.testing.assert_allclose(agg[name].values, ref[name], rtol=1e-6, err_msg=name)
    for name in ("VV_count", "n_pixels", "n_valid", "cluster_pixels"):
        np.testing.assert_array_equal(agg[name].values, ref[name], err_msg=name)
    majority = np.where(ref["cluster_pixels"].sum(1) > 0, ref["cluster_pixels"].argmax(1), -1)
    np.testing.assert_array_equal(agg["cluster"].values, majority)
    assert agg["n_pixels"].values[0] == 0 and np.isnan(agg["VV"].values[0]).all()


def test_aggregate_matches_rasterstats_on_a_geotiff(tmp_path):
    cube, results = _scene()
    gdf = _parcels()
    tif = tmp_path / "vv.tif"
    cube["VV"].isel(time=0).rio.to_raster(tif)
    zs = zonal_stats(gdf, str(tif), stats=["mean", "count"], all_touched=False, nodata=-9999)
    agg = aggregate_parcels(results, cube, rasterize_parcels(gdf, results), gdf["parcel_id"].to_numpy())
    np.testing.assert_allclose(agg["VV"].isel(time=0).values, [z["mean"] for z in zs], rtol=1e-6)
    np.testing.assert_array_equal(agg["n_pixels"].values, [z["count"] for z in zs])


def test_aggregate_is_the_same_for_two_chunkings():
    gdf = _parcels()
    ids = gdf["parcel_id"].to_numpy()
    aggs = []
    for chunk in (16, 13):
        cube, results = _scene(chunk=chunk)
        aggs.append(aggregate_parcels(results, cube, rasterize_parcels(gdf, results), ids))
    xr.testing.assert_allclose(aggs[0], aggs[1], rtol=1e-12, atol=0)
    for name in ("n_pixels", "n_valid", "VV_count", "cluster_pixels", "cluster"):
        xr.testing.assert_equal(aggs[0][name], aggs[1][name])


def test_aggregate_on_a_distributed_cluster(default_cluster):
    cube, results = _scene()
    gdf = _parcels()
    pid = rasterize_parcels(gdf, results)
    agg = aggregate_parcels(results, cube, pid, gdf["parcel_id"].to_numpy())
    ref = _numpy_reference(cube, results, pid.values, gdf["parcel_id"].to_numpy())
    np.testing.assert_allclose(agg["importance"].values, ref["importance"], rtol=1e-6)


def test_aggregate_sample_form_groups_by_the_parcel_coordinate():
    rng = np.random.default_rng(1)
    n = 60
    parcel = rng.choice([3, 8, 21], n)
    emb = rng.normal(size=(D, n)).astype(np.float32)
    imp = rng.random((D, T, n)).astype(np.float32)
    time = pd.date_range("2017-01-03", periods=T, freq="6D")
    results = xr.Dataset(
        {"embedding": (("dim", "sample"), emb), "importance": (("dim", "time", "sample"), imp)},
        coords={"sample": np.arange(n), "time": time, "parcel_id": ("sample", parcel)},
    ).chunk({"sample": 25})
    agg = aggregate_parcels(results, None, results["parcel_id"], np.array([3, 8, 21]))
    frame = pd.DataFrame(imp.reshape(D * T, n).T).groupby(parcel).mean()
    np.testing.assert_allclose(agg["importance"].values.reshape(3, -1), frame.loc[[3, 8, 21]].values, rtol=1e-6)
    np.testing.assert_array_equal(agg["n_pixels"].values, [np.sum(parcel == i) for i in (3, 8, 21)])


# --------------------------------------------------------------------------- per-class profiles


def test_class_profiles_match_numpy_over_class_pixels():
    cube, results = _scene()
    gdf = _parcels()
    pid = rasterize_parcels(gdf, results)
    agg = aggregate_parcels(results, cube, pid, gdf["parcel_id"].to_numpy())
    prof = class_profiles(agg, pd.Series(gdf["crop"].to_numpy(), index=gdf["parcel_id"].to_numpy()))
    assert prof["importance"].dims == ("class", "dim", "time")
    assert list(prof["class"].values) == CLASSES
    cls_of = dict(zip(gdf["parcel_id"], gdf["crop"]))
    pix_class = np.vectorize(lambda i: cls_of.get(i, ""))(pid.values)
    imp = results["importance"].values.astype(np.float64)
    vv = cube["VV"].values.astype(np.float64)
    for c in CLASSES:
        m = pix_class == c
        mean = np.nanmean(imp[:, :, m], axis=-1)
        lo, hi = mean.min(-1, keepdims=True), mean.max(-1, keepdims=True)
        np.testing.assert_allclose(prof["importance_mean"].sel({"class": c}).values, mean, rtol=1e-6)
        np.testing.assert_allclose(prof["importance"].sel({"class": c}).values, (mean - lo) / (hi - lo), atol=1e-6)
        np.testing.assert_allclose(prof["VV"].sel({"class": c}).values, np.nanmean(vv[:, m], axis=-1), rtol=1e-6)
        assert prof["n_pixels"].sel({"class": c}).item() == m.sum()


def test_class_without_pixels_warns_and_is_left_out():
    cube, results = _scene()
    gdf = _parcels()
    gdf = pd.concat(
        [
            gdf,
            gpd.GeoDataFrame(
                {"parcel_id": [5], "crop": ["rice"]},
                geometry=[shapely.box(X0 + 5000, Y0, X0 + 5100, Y0 + 100)],
                crs=CRS,
            ),
        ]
    )
    agg = aggregate_parcels(results, cube, rasterize_parcels(gdf, results), gdf["parcel_id"].to_numpy())
    with pytest.warns(ParcelWarning, match=r"\['rice'\] have no valid pixel"):
        prof = class_profiles(agg, pd.Series(gdf["crop"].to_numpy(), index=gdf["parcel_id"].to_numpy()))
    assert "rice" not in prof["class"].values and prof.attrs["classes_without_pixels"] == ["rice"]


def test_minmax_scales_each_profile_to_0_1_and_constant_to_0():
    p = np.array([[2.0, 4.0, 3.0], [5.0, 5.0, 5.0]])
    np.testing.assert_allclose(minmax(p), [[0.0, 1.0, 0.5], [0.0, 0.0, 0.0]])


# --------------------------------------------------------------------------- CLI


def _stores(tmp_path):
    """Stores in which each class's parcels have their own cluster (cluster i = class i)."""
    cube, results = _scene()
    results.attrs["slamgeo_complete"] = True
    centres = np.array([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, -1.0]])
    emb = results["embedding"].values
    xx, yy = _centres(results)
    for g, crop in zip(_parcels().geometry, _parcels()["crop"]):
        m = shapely.contains_xy(g, xx, yy) & np.isfinite(emb).all(0)
        emb[:, m] = centres[CLASSES.index(crop)][:, None] * 3
    results["embedding"] = (("dim", "y", "x"), emb)
    results["embedding"] = results["embedding"].chunk({"y": 16, "x": 16})
    results["cluster"] = assign_clusters(results["embedding"], centres)
    results["cluster_centre"] = (("centre", "dim"), centres)
    cube.to_zarr(tmp_path / "cube.zarr", zarr_format=2)
    results.to_zarr(tmp_path / "results.zarr", zarr_format=2)
    return str(tmp_path / "results.zarr"), str(tmp_path / "cube.zarr")


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "slamgeo", "parcels", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_cli_writes_every_output(tmp_path, local_cluster):
    results, cube = _stores(tmp_path)
    gdf = _parcels()  # 12 parcels, 4 per class: each class has a held-out parcel
    inner = gpd.GeoDataFrame(
        {"parcel_id": [500], "crop": ["beet"]}, geometry=[gdf.geometry.iloc[0].centroid.buffer(15)], crs=CRS
    )  # inside parcel 100 (beet): its pixels go to 500, the smaller
    gdf = pd.concat([gdf, inner], ignore_index=True)
    parcels = _write(gdf, tmp_path / "p.gpkg")
    out = tmp_path / "out"
    proc = _run(
        results, parcels, "--cube", cube, "--out", out, "--scheduler", local_cluster.scheduler_info()["address"]
    )
    assert proc.returncode == 0, proc.stderr
    assert "smaller parcel" in proc.stdout
    # besides the folder's own stamp (slamgeo.io.storage.STAMP_FILE)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        [
            "parcels.zarr",
            "parcels.parquet",
            "class_profiles.zarr",
            "metrics.json",
            "confusion_pixels.csv",
            "confusion_pixels_percent.csv",
            "confusion_parcels.csv",
            "confusion_parcels_percent.csv",
        ]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train_parcels"] + metrics["n_test_parcels"] == 13
    assert metrics["overlapping_pairs"] == [[100, 500]]
    assert metrics["cluster_class"] == {"0": "beet", "1": "cotton", "2": "wheat"}
    assert metrics["parcels"]["overall_accuracy"] == 1.0 and metrics["pixels"]["kappa"] == pytest.approx(1.0)
    summary = gpd.read_parquet(out / "parcels.parquet")
    assert summary.crs.to_epsg() == CRS and len(summary) == 13
    assert set(summary["split"]) == {"train", "test"}
    per = xr.open_zarr(out / "parcels.zarr")
    assert per["importance"].dims == ("parcel", "dim", "time") and "VV" in per
    assert per["cluster_class"].values.tolist() == ["beet", "cotton", "wheat", "unassigned"]
    prof = xr.open_zarr(out / "class_profiles.zarr")
    assert sorted(prof["class"].values.tolist()) == CLASSES
    cm = pd.read_csv(out / "confusion_pixels.csv", index_col=0)
    assert cm.values.sum() == metrics["pixels"]["n"]


def test_cli_bad_parcels_write_nothing(tmp_path):
    results, _ = _stores(tmp_path)
    parcels = _write(_parcels().rename(columns={"crop": "culture"}), tmp_path / "p.gpkg")
    proc = _run(results, parcels, "--out", tmp_path / "out")
    assert proc.returncode == 1 and "missing column(s) ['crop']" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_cli_sample_form_uses_the_labels_it_carries(tmp_path, local_cluster):
    rng = np.random.default_rng(3)
    parcel = np.repeat(np.arange(1, 13), 10)  # 12 parcels of 10 samples, 4 per class
    crop = np.array(CLASSES)[(parcel - 1) % 3]
    centres = np.array([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    emb = (3 * centres[(parcel - 1) % 3] + rng.normal(0, 0.1, (parcel.size, D))).T.astype(np.float32)
    results = xr.Dataset(
        {
            "embedding": (("dim", "sample"), emb),
            "importance": (("dim", "time", "sample"), rng.random((D, T, parcel.size)).astype(np.float32)),
        },
        coords={
            "dim": np.arange(D),
            "time": pd.date_range("2017-01-03", periods=T, freq="6D"),
            "sample": np.arange(parcel.size),
            "parcel_id": ("sample", parcel),
            "crop": ("sample", crop),
        },
    ).chunk({"sample": 50})
    results["cluster"] = assign_clusters(results["embedding"], centres)
    results.attrs["slamgeo_complete"] = True  # as explain marks a finished run
    results.to_zarr(tmp_path / "results.zarr", zarr_format=2)
    proc = _run(
        tmp_path / "results.zarr", "--out", tmp_path / "out", "--scheduler", local_cluster.scheduler_info()["address"]
    )
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["pixels"]["overall_accuracy"] == 1.0 and metrics["n_test_parcels"] == 3
    table = pd.read_parquet(tmp_path / "out" / "parcels.parquet")
    assert table["n_pixels"].tolist() == [10] * 12 and "geometry" not in table


@pytest.mark.parametrize("case", ["test-fraction-0", "one-parcel-per-class"])
def test_cli_with_no_parcel_held_out_scores_all_parcels_and_says_so(tmp_path, local_cluster, case):
    results, cube = _stores(tmp_path)
    gdf = _parcels() if case == "test-fraction-0" else _parcels().iloc[:3]  # beet, cotton, wheat: one each
    parcels = _write(gdf, tmp_path / "p.gpkg")
    extra = ["--test-fraction", "0"] if case == "test-fraction-0" else []
    proc = _run(
        results,
        parcels,
        "--cube",
        cube,
        "--out",
        tmp_path / "out",
        *extra,
        "--scheduler",
        local_cluster.scheduler_info()["address"],
    )
    assert proc.returncode == 0, proc.stderr
    why = "test_fraction is 0" if case == "test-fraction-0" else "too few parcels: 3 labelled parcel(s)"
    assert f"note: no parcel held out ({why}" in proc.stdout
    assert "all (none held out) pixels: OA 100.0 %" in proc.stdout
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["held_out"] == 0 and metrics["n_test_parcels"] == 0 and metrics["n_train_parcels"] == len(gdf)
    assert metrics["evaluated_on"] == "all labelled parcels (none held out)" and "optimistic" in metrics["note"]
    assert metrics["parcels"]["n"] == len(gdf) and metrics["parcels"]["overall_accuracy"] == 1.0
    assert set(gpd.read_parquet(tmp_path / "out" / "parcels.parquet")["split"]) == {"train"}


def test_many_parcels_go_to_the_workers_as_data_not_in_the_graph(default_cluster) -> None:
    """40 000 small polygons: rasterised on a distributed cluster with the large-graph warning
    lowered to 256 kB and turned into an error, the same raster as on local threads."""
    import dask
    from affine import Affine

    from slamgeo.synth import grid_parcels

    transform = Affine(10, 0, 230_000, 0, -10, 4_110_000)
    parcels = grid_parcels((transform, 400), 40_000)
    like = make_cube(
        {"VV": np.zeros((1, 400, 400)), "VH": np.zeros((1, 400, 400))},
        ["2017-01-01"],
        y=4_110_000 - 5 - 10 * np.arange(400),
        x=230_005 + 10 * np.arange(400),
        crs="EPSG:32630",
        chunk=100,
    )
    with dask.config.set({"distributed.admin.large-graph-warning-threshold": "256kB"}), warnings.catch_warnings():
        warnings.filterwarnings("error", message="Sending large graph")
        got = rasterize_parcels(parcels, like).values
    with dask.config.set(scheduler="threads"):
        want = rasterize_parcels(parcels, like).values
    np.testing.assert_array_equal(got, want)
    assert np.unique(got).size > 30_000
