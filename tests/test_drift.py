"""Season drift: the measures against independent computations (brute-force energy distance,
NumPy percentiles and class means over the full grid), the verdict on two draws of one law
(keep) and on a drifted one (retrain), labels from a parcels output, and the refusals."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from slamgeo.errors import InputError
from slamgeo.jobs.drift import (
    DriftThresholds,
    embedding_distance,
    energy_distance,
    parcel_labels,
    recon_error_measures,
    season_drift,
    shared_class_codes,
)
from slamgeo.jobs.drift import _group_energy as group_energy

N, T, D, PARCEL, CHUNK = 96, 24, 2, 8, 32
CLASSES = ["beet", "maize", "rice", "wheat"]
PEAK = np.array([3, 8, 13, 18])  # each class's importance peaks on this date
LATER = 3  # dates: where the peaks move in the drifted season


def results(seed: int, *, drift: bool = False) -> tuple[xr.Dataset, xr.DataArray]:
    """A results store (`embedding`, `importance`, `recon_error` on a 96 x 96 grid, chunks of
    32) and its class codes: 144 square parcels of 8 x 8 pixels, classes dealt at random; each
    pixel's embedding is its class centre plus a parcel effect plus noise; its importance a bump
    on its class's date; a strip of no data. `drift`: centres moved, importance peaks `LATER`
    dates later, reconstruction errors doubled."""
    rng = np.random.default_rng(seed)
    n_p = (N // PARCEL) ** 2
    cls = rng.permutation(np.arange(n_p) % len(CLASSES))
    parcel = (np.arange(N)[:, None] // PARCEL) * (N // PARCEL) + np.arange(N)[None, :] // PARCEL
    labels = cls[parcel]
    centres = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [3.0, 3.0]]) + (1.5 if drift else 0.0)
    emb = centres[labels] + rng.normal(0, 0.3, (n_p, D))[parcel] + rng.normal(0, 0.6, (N, N, D))
    peak = PEAK[labels] + (LATER if drift else 0)
    imp = np.exp(-0.5 * ((np.arange(T)[None, None, :] - peak[..., None]) / 0.7) ** 2)  # (y, x, T)
    imp = imp[:, :, None, :] * np.array([1.0, 0.5])[:, None] + rng.normal(0, 0.05, (N, N, D, T))
    recon = rng.lognormal(np.log(0.2), 0.4, (N, N)) * (2.0 if drift else 1.0)
    emb[:, -5:], imp[:, -5:], recon[:, -5:] = np.nan, np.nan, np.nan  # the swath edge
    labels = np.where(rng.random((N, N)) < 0.1, -1, labels)  # margins: no class
    times = np.datetime64("2018-01-05") + np.arange(T) * np.timedelta64(15, "D")
    ds = xr.Dataset(
        {
            "embedding": (("dim", "y", "x"), emb.transpose(2, 0, 1).astype(np.float32)),
            "importance": (("dim", "time", "y", "x"), imp.transpose(2, 3, 0, 1).astype(np.float32)),
            "recon_error": (("y", "x"), recon.astype(np.float32)),
        },
        coords={"time": times.astype("datetime64[ns]"), "y": np.arange(N) * -10.0, "x": np.arange(N) * 10.0},
    ).chunk({"y": CHUNK, "x": CHUNK})
    return ds, xr.DataArray(labels.astype(np.int16), dims=("y", "x"))


@pytest.fixture(scope="module")
def seasons():
    return {"reference": results(0), "same": results(1), "drifted": results(2, drift=True)}


def drift_of(seasons, name: str, **kw) -> dict:
    (ref, ref_lab), (sea, sea_lab) = seasons["reference"], seasons[name]
    return season_drift(ref, sea, reference_labels=ref_lab, season_labels=sea_lab, class_names=CLASSES, **kw)


# --------------------------------------------------------------------------- the measures


def brute_energy(a: np.ndarray, b: np.ndarray) -> float:
    """2 E|A-B| - E|A-A'| - E|B-B'| over all ordered pairs, one pair at a time."""

    def mean_dist(x, y):
        return sum(float(np.sqrt(((p - q) ** 2).sum())) for p, q in itertools.product(x, y)) / (len(x) * len(y))

    return 2 * mean_dist(a, b) - mean_dist(a, a) - mean_dist(b, b)


def test_energy_distance_matches_the_brute_force_formula_and_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, (30, 3)), rng.normal(0.5, 1.2, (40, 3))
    assert energy_distance(a, b) == pytest.approx(brute_energy(a, b), rel=1e-10)
    assert energy_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    x, y = rng.normal(0, 1, 200), rng.normal(0.3, 1, 150)  # 1-D: SciPy's is the square root of it
    assert energy_distance(x[:, None], y[:, None]) == pytest.approx(stats.energy_distance(x, y) ** 2, rel=1e-9)


def test_group_means_of_one_distance_matrix_match_each_pair_of_groups():
    rng = np.random.default_rng(4)
    pts = rng.normal(0, 1, (25, 2))
    groups = rng.integers(-1, 3, 25)
    dist = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))
    got = group_energy(dist, groups, 3)
    for i, j in itertools.product(range(3), repeat=2):
        want = dist[np.ix_(groups == i, groups == j)].mean()
        assert got[i, j] == pytest.approx(want, rel=1e-12)


def test_embedding_distance_is_near_its_null_for_one_law_and_far_for_another():
    rng = np.random.default_rng(5)
    ref, same, moved = rng.normal(0, 1, (3000, 2)), rng.normal(0, 1, (3000, 2)), rng.normal(0.5, 1, (3000, 2))
    pos = np.stack([np.arange(3000) // 60, np.arange(3000) % 60], axis=1).astype(float)
    kw = {"size": 800, "repeats": 8, "tile": 4, "seed": 0}
    null = embedding_distance(ref, same, pos, **kw)
    far = embedding_distance(ref, moved, pos, **kw)
    assert null["n"] == 800 and null["repeats"] == 8 and null["null_sd"] > 0
    assert null["ratio"] < 3 and abs(null["z"]) < 4
    assert far["ratio"] > 10 and far["z"] > 10
    assert far["null_mean"] == null["null_mean"]  # the null depends on the reference only


def test_recon_error_measures_match_numpy():
    rng = np.random.default_rng(6)
    ref, sea = rng.lognormal(0, 0.5, 5001), rng.lognormal(0.2, 0.5, 4001)
    sea[:10] = np.nan
    m = recon_error_measures(ref, sea)
    ok = sea[~np.isnan(sea)]
    assert m["median_ratio"] == pytest.approx(np.median(ok) / np.median(ref))
    assert m["reference_p95"] == pytest.approx(np.percentile(ref, 95))
    assert m["share_above_reference_p95"] == pytest.approx(np.mean(ok > np.percentile(ref, 95)))


def test_season_drift_measures_match_the_full_grid(seasons):
    """With a sample as large as the grid, the sampled measures are the full grid's; the class
    measures are always computed over every pixel."""
    out = drift_of(seasons, "drifted", sample_size=N * N)
    (ref, ref_lab), (sea, sea_lab) = seasons["reference"], seasons["drifted"]
    r_rec, s_rec = ref["recon_error"].values.ravel(), sea["recon_error"].values.ravel()
    r_rec, s_rec = r_rec[np.isfinite(r_rec)], s_rec[np.isfinite(s_rec)]
    rec = out["measures"]["recon_error"]
    assert rec["median_ratio"] == pytest.approx(np.median(s_rec) / np.median(r_rec), rel=1e-6)
    assert rec["share_above_reference_p95"] == pytest.approx(np.mean(s_rec > np.percentile(r_rec, 95)), abs=1e-9)
    assert out["n_valid"] == {"reference": r_rec.size, "season": s_rec.size}

    cls = out["measures"]["classes"]
    assert cls["classes"] == CLASSES and cls["left_out"] == []
    imp = out["measures"]["importance"]
    for k, name in enumerate(CLASSES):
        means, spreads = [], None
        for ds, lab in ((ref, ref_lab), (sea, sea_lab)):
            m = (lab.values == k) & np.isfinite(ds["recon_error"].values)
            e = ds["embedding"].values[:, m].astype(np.float64)
            means.append(e.mean(1))
            spreads = np.sqrt(e.var(1).mean()) if spreads is None else spreads
            side = "reference" if ds is ref else "season"
            np.testing.assert_allclose(
                imp[side][k], ds["importance"].values[:, :, m].astype(np.float64).mean(-1), rtol=1e-6, atol=1e-9
            )
        assert cls["centroid_move"][name] == pytest.approx(np.linalg.norm(means[1] - means[0]) / spreads, rel=1e-6)
    assert len(out["dates"]) == T and out["dates"][0] == "2018-01-05"
    json.dumps(out, allow_nan=False)  # JSON as it is


def test_one_law_keeps_the_model(seasons):
    out = drift_of(seasons, "same")
    assert out["verdict"] == "keep" and out["reasons"] == []
    s = out["measures"]["summary"]
    assert 0.9 < s["recon_median_ratio"] < 1.1 and 0.03 < s["recon_share_above_p95"] < 0.08
    assert s["embedding_energy_ratio"] < 3
    assert set(s) == {f for f in DriftThresholds.__dataclass_fields__ if f != "min_class_pixels"}


def test_a_drifted_season_calls_for_retraining_and_names_the_moved_dates(seasons):
    out = drift_of(seasons, "drifted")
    assert out["verdict"] == "retrain"
    starts = ("reconstruction error: median ratio", "reconstruction error: share", "embedding:", "classes:")
    for start in starts:  # one line for each threshold crossed
        assert sum(r.startswith(start) for r in out["reasons"]) == 1, start
    same = drift_of(seasons, "same")["measures"]["summary"]
    assert out["measures"]["summary"]["importance_shift"] > 3 * same["importance_shift"]
    # the class-mean importance is best aligned LATER dates (15 days apart) later, the same law's at 0
    assert out["measures"]["summary"]["importance_lag_days"] == LATER * 15 and same["importance_lag_days"] == 0
    assert set(out["measures"]["classes"]["importance_lag_days"].values()) == {LATER * 15}
    assert any(r.startswith("importance: median lag") and "+45" in r for r in out["reasons"])
    # the importance peaks moved from the dates PEAK to PEAK + LATER: the dates that moved most
    moved = {out["dates"][i] for i in {*PEAK, *(PEAK + LATER)}}
    assert len(out["measures"]["importance"]["top_dates"]) == 5
    assert set(out["measures"]["importance"]["top_dates"]) <= moved
    for k, name in enumerate(CLASSES):
        assert out["measures"]["classes"]["importance_top_date"][name] in {
            out["dates"][PEAK[k]],
            out["dates"][PEAK[k] + LATER],
        }


def test_thresholds_decide_the_verdict(seasons):
    loose = DriftThresholds(
        recon_median_ratio=10, recon_share_above_p95=1, embedding_energy_ratio=1e9, class_centroid_move=1e9,
        importance_shift=1e9,
        importance_lag_days=1e9,
    )  # fmt: skip
    assert drift_of(seasons, "drifted", thresholds=loose)["verdict"] == "keep"
    strict = DriftThresholds(recon_share_above_p95=0.0)
    out = drift_of(seasons, "same", thresholds=strict)
    assert out["verdict"] == "retrain" and len(out["reasons"]) == 1 and "95th percentile" in out["reasons"][0]
    few = drift_of(seasons, "same", thresholds=DriftThresholds(min_class_pixels=10**6))
    assert few["measures"]["classes"]["left_out"] == CLASSES and "importance" not in few["measures"]


def test_without_labels_the_class_measures_are_left_out(seasons):
    out = season_drift(seasons["reference"][0], seasons["drifted"][0])
    assert out["verdict"] == "retrain"
    assert "classes" not in out["measures"] and "importance" not in out["measures"]
    assert set(out["measures"]["summary"]) == {"recon_median_ratio", "recon_share_above_p95", "embedding_energy_ratio"}


def test_the_same_answer_on_a_local_cluster_from_stores_of_other_chunks(seasons, default_cluster, tmp_path):
    """Zarr stores read by the workers of a LocalCluster, the reference in other chunks: the
    sample (drawn by pixel hashes) and the class sums do not depend on either."""
    here = drift_of(seasons, "drifted")
    (ref, ref_lab), (sea, sea_lab) = seasons["reference"], seasons["drifted"]
    ref.chunk({"y": 48, "x": 24}).to_zarr(tmp_path / "ref.zarr", zarr_format=2)
    sea.to_zarr(tmp_path / "sea.zarr", zarr_format=2)
    there = season_drift(
        xr.open_zarr(tmp_path / "ref.zarr"),
        xr.open_zarr(tmp_path / "sea.zarr"),
        reference_labels=ref_lab,
        season_labels=sea_lab,
        class_names=CLASSES,
    )
    assert there["measures"]["summary"] == pytest.approx(here["measures"]["summary"], rel=1e-9)
    assert there["verdict"] == here["verdict"]


def test_refusals(seasons):
    (ref, ref_lab), (sea, sea_lab) = seasons["reference"], seasons["same"]
    with pytest.raises(InputError, match="class_names"):
        season_drift(ref, sea, reference_labels=ref_lab, season_labels=sea_lab)
    with pytest.raises(InputError, match="time"):
        season_drift(ref, sea.isel(time=slice(0, 6)))
    with pytest.raises(InputError, match="do not fit"):
        season_drift(ref, sea, reference_labels=ref_lab[:10], season_labels=sea_lab, class_names=CLASSES)
    with pytest.raises(InputError, match="integer"):
        season_drift(ref, sea, reference_labels=ref_lab * 1.0, season_labels=sea_lab, class_names=CLASSES)
    with pytest.raises(InputError, match="recon_error"):
        season_drift(ref.drop_vars("recon_error"), sea)


def test_shared_class_codes_put_two_seasons_on_one_list():
    a = xr.DataArray(np.array([[0, 1], [-1, 1]], np.int16), dims=("y", "x"))
    b = xr.DataArray(np.array([[0, 1], [2, -1]], np.int16), dims=("y", "x")).chunk({"y": 1})
    ca, cb, names = shared_class_codes((a, ["wheat", "beet"]), (b, ["maize", "wheat", "beet"]))
    assert names == ["beet", "maize", "wheat"]
    np.testing.assert_array_equal(ca.values, [[2, 0], [-1, 0]])
    np.testing.assert_array_equal(cb.values, [[1, 2], [0, -1]])


def test_parcel_labels_read_the_parcels_the_season_used(tmp_path):
    from slamgeo.synth import CLASSES as CROPS
    from slamgeo.synth import make_scene

    scene = make_scene(size=48, n_dates=8, seed=2)
    path = tmp_path / "parcels.gpkg"
    scene.parcels.to_file(path, layer="parcels", driver="GPKG")
    folder = tmp_path / "parcels_out"
    folder.mkdir()
    metrics = {"parcels_path": str(path), "id_column": "parcel_id", "class_column": "crop", "all_touched": False}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    codes, names = parcel_labels(folder, scene.cube)
    want = np.where(scene.class_id.values >= 0, np.asarray(CROPS + ("",), dtype=object)[scene.class_id.values], "")
    got = np.where(codes.values >= 0, np.asarray(names + [""], dtype=object)[codes.values], "")
    np.testing.assert_array_equal(got, want)
    with pytest.raises(InputError, match="parcels"):
        parcel_labels(tmp_path / "nowhere", scene.cube)


def test_sample_form_results_give_the_grid_measures(seasons):
    """Results of a table of parcels or points, `(sample,)`: the same pixels give the same
    reconstruction error and class measures as on the grid."""

    def flat(name):
        ds, lab = seasons[name]
        table = ds.stack(sample=("y", "x")).drop_vars(["sample", "y", "x"]).chunk({"sample": 1000})
        return table, xr.DataArray(lab.values.ravel(), dims="sample")

    (ref, ref_lab), (sea, sea_lab) = flat("reference"), flat("drifted")
    out = season_drift(ref, sea, reference_labels=ref_lab, season_labels=sea_lab, class_names=CLASSES)
    grid = drift_of(seasons, "drifted")
    assert out["verdict"] == "retrain"
    for key in ("recon_median_ratio", "recon_share_above_p95", "class_centroid_move", "importance_lag_days"):
        assert out["measures"]["summary"][key] == pytest.approx(grid["measures"]["summary"][key], rel=1e-9)
