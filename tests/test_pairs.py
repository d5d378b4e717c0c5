"""Class-pair explanations: pair selection from a confusion table, names checked, and the
contrastive importance against a direct NumPy computation from the per-dimension maps; the
stage (`slamgeo.pairs`) against the functions it composes, and its store twin writing the same
variables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from helpers import SMALL_ARCH, T_WIN, W0, W1, class_cube, window_classes, window_share

import slamgeo
from slamgeo.errors import InputError
from slamgeo.jobs.explain import explain
from slamgeo.jobs.pairs import (
    check_pairs,
    cluster_labels,
    confused_pairs,
    nearest_centre_pairs,
    pair_importance,
    separating_dates,
    window_accuracy,
)
from slamgeo.method.gradslam import grad_slam, reference_map
from slamgeo.method.train import train

NAMES = np.array(["cotton", "pepper", "maize"])


def test_confused_pairs_are_the_largest_off_diagonal_shares():
    counts = pd.DataFrame(
        [[80, 20, 0, 5], [60, 40, 0, 0], [10, 0, 90, 0], [0, 0, 0, 0]],
        index=["cotton", "pepper", "maize", "wheat"],
        columns=["cotton", "pepper", "maize", "unassigned"],
    )
    # shares: pepper->cotton 0.6, cotton->pepper 0.19 (same pair), maize->cotton 0.1
    assert confused_pairs(counts, n=3) == [("pepper", "cotton"), ("maize", "cotton")]
    assert confused_pairs(counts, n=1) == [("pepper", "cotton")]
    assert confused_pairs(pd.DataFrame([[5, 0], [0, 5]], index=["a", "b"], columns=["a", "b"])) == []
    assert confused_pairs(counts, n=0) == []


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([["cotton", "okra"]], r"unknown class 'okra'; the classes are \['cotton', 'maize', 'pepper'\]"),
        ([["cotton", "cotton"]], "'cotton' paired with itself"),
        ([["cotton"]], "expected two class names"),
        (["cotton"], "expected two class names"),
    ],
)
def test_bad_pairs_are_refused(pairs, message):
    with pytest.raises(InputError, match=message):
        check_pairs(pairs, NAMES)


def test_nearest_centres_are_the_cluster_pairs_without_labels():
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.5, 0.0], [10.0, 3.0]])
    assert nearest_centre_pairs(centres, 2) == [("cluster 0", "cluster 2"), ("cluster 1", "cluster 3")]
    names = cluster_labels(xr.DataArray(np.array([[0, -1], [3, 2]]), dims=("y", "x")))
    assert names.values.tolist() == [["cluster 0", ""], ["cluster 3", "cluster 2"]]


@pytest.fixture(scope="module")
def scene():
    cube, cls = class_cube(ny=24, nx=24, n_times=16, chunk=12, nodata_rows=3)
    model = train(cube, sample_size=400, max_epochs=4, batch_size=64, arch=SMALL_ARCH, seed=0, progress=False)
    res = explain(cube, model).compute()
    labels = xr.DataArray(NAMES[cls], dims=("y", "x"))
    return cube.compute(), model, res, labels


@pytest.mark.parametrize("scale", ["none", "centred"])
def test_pair_importance_equals_the_projected_per_dimension_maps(scene, scale):
    """Direct computation: the per-dimension raw maps of every pixel of the two classes,
    projected on w = mean embedding of b - that of a (NumPy), scaled, averaged per class."""
    cube, model, res, labels = scene
    x_all = np.stack([cube[b].values for b in model.bands], 0).reshape(2, 16, -1).transpose(2, 0, 1)
    valid = ~np.isnan(x_all).any(axis=(1, 2))
    names = labels.values.ravel()
    emb = res["embedding"].values.reshape(res.sizes["dim"], -1)
    ref = reference_map(model.model.encoder, torch.from_numpy(model.standardise(x_all[valid]))).numpy()
    out = pair_importance(
        model, cube, res["embedding"], labels, [("cotton", "pepper")], scale=scale, reference=ref, max_pixels=10_000
    )
    a, b = (valid & (names == c) for c in ("cotton", "pepper"))
    w = emb[:, b].astype(np.float64).mean(1) - emb[:, a].astype(np.float64).mean(1)
    np.testing.assert_allclose(out["pair_direction"].values[0], w)
    xs = torch.from_numpy(model.standardise(x_all[a | b]))
    raw = grad_slam(model.model.encoder, xs, scale="none", layers=None, return_layer_maps=True)
    from slamgeo.method.gradslam import resample

    merged = np.mean([resample(m, 16).numpy() for m in raw.layer_maps], axis=0)  # (N, D, T)
    proj = np.einsum("d,ndt->nt", w, merged)
    if scale == "centred":
        proj = proj - w @ ref
        proj = proj / np.abs(proj).max(axis=1, keepdims=True)
    member_b = names[a | b] == "pepper"
    want = np.stack([proj[~member_b].mean(0), proj[member_b].mean(0)])
    np.testing.assert_allclose(out["pair_importance_class"].values[0], want, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(out["pair_importance"].values[0], np.abs(proj).mean(0), rtol=2e-4, atol=2e-5)
    assert out["pair_pixels"].values[0].tolist() == [int(a.sum()), int(b.sum())]
    assert out["pair_a"].values.tolist() == ["cotton"] and out["pair_b"].values.tolist() == ["pepper"]


def test_a_pair_without_a_direction_is_refused(scene):
    cube, model, res, labels = scene
    flat = res["embedding"].copy(data=np.zeros_like(res["embedding"].values))
    with pytest.raises(InputError, match="same mean embedding"):
        pair_importance(model, cube, flat, labels, [("cotton", "pepper")], scale="none")
    with pytest.raises(InputError, match="unknown class 'okra'"):
        pair_importance(model, cube, res["embedding"], labels, [("cotton", "okra")], scale="none")


def test_separating_dates_are_the_largest_in_date_order():
    times = pd.date_range("2017-01-01", periods=5, freq="10D").values
    assert separating_dates(np.array([0.1, -0.9, 0.2, 0.8, 0.0]), times, n=2) == ["2017-01-11", "2017-01-31"]


# --- explanation accuracy against a known truth ---------------------------------------------


def test_contrastive_importance_of_two_classes_lies_in_the_dates_that_tell_them_apart():
    """Known truth: classes 0 and 2 differ only on dates 15..19 (5 of 36). A small CAE
    (16/32/64 channels, D = 2) is trained 300 Adam steps, seed 0; w = mean embedding of class 2
    - that of class 0 on held-out pixels; the contrastive importance (target e . w, default
    scaling, reference map of the training sample) of those classes' held-out pixels.
    Measure: the window's share of sum_t |importance|, divided by the uniform share 5/36, per
    pixel then averaged, and for each class's mean map, then averaged over the two classes.
    Threshold 2.0 x uniform for both (centred gave 2.3 / 2.9 / 2.6 x over training seeds 0-2;
    the per-pixel scalings about 0.8-1.1 x). Every scaling is printed (pytest -s)."""
    from torch import nn

    from slamgeo.method.model import CAE, CAEConfig
    from slamgeo.schema import GRADSLAM_SCALE, SCALES

    x, _ = window_classes(1536, seed=0)
    torch.manual_seed(0)
    cae = CAE(
        CAEConfig(n_bands=2, n_times=T_WIN, embed_dim=2, channels=(16, 32, 64), kernels=(7, 5, 3), hidden=(32, 16))
    )
    opt = torch.optim.Adam(cae.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: one thread is fastest, and the same on every machine
    try:
        for _ in range(300):
            xb = x[torch.randint(0, len(x), (256,), generator=g)]
            loss = nn.functional.mse_loss(cae(xb)[1], xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    enc = cae.encoder.eval()
    xt, yt = window_classes(600, seed=100)
    keep = (yt == 0) | (yt == 2)
    xt, yt = xt[keep], yt[keep]
    with torch.no_grad():
        e = enc(xt)
    w = e[yt == 2].mean(0) - e[yt == 0].mean(0)
    spread = torch.stack([e[yt == c].std(0) for c in (0, 2)]).mean(0).norm()
    assert w.norm() > 3 * spread, "the trained CAE does not separate the two classes: the test would be void"
    ref = reference_map(enc, x[:1000])
    uniform = (W1 - W0) / T_WIN
    rows = {}
    for scale in SCALES:
        imp = grad_slam(enc, xt, scale=scale, reference=ref, target=w)
        assert imp.shape == (len(xt), T_WIN)
        per_pixel = window_share(imp).mean().item() / uniform
        class_mean = np.mean([window_share(imp[yt == c].mean(0)).item() for c in (0, 2)]) / uniform
        rows[scale] = (per_pixel, class_mean)
    print(f"\ncontrastive window share / uniform share ({uniform:.3f}), classes 0 -> 2, |w| = {w.norm():.2f}")
    for scale, (pp, cm) in rows.items():
        print(f"  {scale:8s} per pixel {pp:5.2f}   class-mean map {cm:5.2f}")
    pp, cm = rows[GRADSLAM_SCALE]
    assert pp >= 2.0 and cm >= 2.0


def test_window_accuracy_of_a_profile_against_known_dates():
    times = pd.date_range("2017-01-01", periods=10, freq="10D").values
    imp = np.zeros(10)
    imp[3:5] = [2.0, -2.0]  # all the mass on 2017-01-31 and 2017-02-10
    acc = window_accuracy(imp, times, [("2017-01-31", "2017-02-10")])
    assert acc["share_ratio"] == pytest.approx(1.0 / 0.2) and acc["auroc"] == 1.0 and acc["dates_inside"] == 2
    flat = window_accuracy(np.ones(10), times, [("2017-01-31", "2017-02-10")])
    assert flat["share_ratio"] == pytest.approx(1.0) and flat["auroc"] == 0.5
    assert np.isnan(window_accuracy(imp, times, [("2020-01-01", "2020-02-01")])["auroc"])


# --- the stage and its store twin --------------------------------------------------------------


@pytest.fixture(scope="module")
def season(tmp_path_factory):
    """A small season on disk (synthetic scene of 32 x 32 pixels, 8 dates): the cube store, a
    model folder, the results store (explained, 4 clusters) and the parcels folder; with the
    parcels stage's result."""
    from slamgeo.io.cube import open_cube
    from slamgeo.synth import make_scene, write_scene

    tmp = tmp_path_factory.mktemp("season")
    write_scene(make_scene(size=32, n_dates=8, seed=1), tmp / "scene")
    slamgeo.ingest([tmp / "scene"], tmp / "cube.zarr", chunk=16, progress=False)
    cube = open_cube(tmp / "cube.zarr")
    slamgeo.train(cube, out_dir=tmp / "model", sample_size=400, max_epochs=2, arch=SMALL_ARCH, progress=False)
    slamgeo.explain_store(tmp / "cube.zarr", tmp / "model", tmp / "results.zarr", progress=False)
    slamgeo.cluster_store(tmp / "results.zarr", 4, seed=0)
    par = slamgeo.parcels_store(
        tmp / "results.zarr", tmp / "scene" / "parcels.gpkg", tmp / "parcels", cube=tmp / "cube.zarr", test_fraction=0.0
    )
    return tmp, par


def _opened(tmp):
    from slamgeo.io.cube import open_cube, open_results
    from slamgeo.method.checkpoint import load_model

    return open_results(tmp / "results.zarr"), open_cube(tmp / "cube.zarr"), load_model(tmp / "model")


def _asked_pair(par, n_confused: int) -> list[tuple[str, str]]:
    """A pair of profiled classes that is not among the `n_confused` most confused ones."""
    classes = [str(c) for c in par.classes["class"].values]
    taken = [set(p) for p in confused_pairs(par.confusion("pixels"), n_confused)]
    return [next((a, b) for i, a in enumerate(classes) for b in classes[i + 1 :] if {a, b} not in taken)]


def test_the_stage_with_parcels_equals_pair_importance_on_the_rasterised_classes(season):
    from slamgeo.io.parcels import read_parcels
    from slamgeo.jobs.pairs import PAIR_VARIABLES, choose_pairs, parcel_class_codes

    tmp, par = season
    res, cube, model = _opened(tmp)
    asked = _asked_pair(par, 2)
    out = slamgeo.pairs(res, par, asked, 2, cube=cube, model=model)

    classes = [str(c) for c in par.classes["class"].values]
    chosen = choose_pairs(par.confusion("pixels"), classes, asked, 2)
    assert len(chosen) == 3 and chosen[-1] == asked[0]
    gdf = read_parcels(tmp / "scene" / "parcels.gpkg", crs=res.rio.crs)
    labels, codes_of = parcel_class_codes(gdf, res)
    assert labels.dtype == np.int16
    ref = np.asarray(res.attrs["reference_map"], np.float32)
    want = pair_importance(
        model, cube, res["embedding"], labels, chosen, scale=res.attrs["scale"], reference=ref, classes=codes_of
    )
    for v in PAIR_VARIABLES:
        np.testing.assert_array_equal(out[v].values, want[v].values)
    assert list(zip(out["pair_a"].values.tolist(), out["pair_b"].values.tolist())) == chosen
    assert {"embedding", "importance", "cluster"} <= set(out.data_vars)  # the results, plus the pairs


def test_the_store_twin_writes_the_variables_of_the_stage(season, tmp_path):
    import shutil

    from slamgeo.io.cube import open_results
    from slamgeo.jobs.pairs import PAIR_VARIABLES

    tmp, par = season
    res, cube, model = _opened(tmp)
    asked = _asked_pair(par, 1)
    store = tmp_path / "results.zarr"
    shutil.copytree(tmp / "results.zarr", store)
    done = slamgeo.pairs_store(
        store, tmp / "parcels", cube=tmp / "cube.zarr", model=tmp / "model", pairs=asked, confused=1
    )  # the polygons: those metrics.json names
    back = open_results(store)
    # in memory, from the parcels stage's result (its table's polygons) and from the folder
    for parcels in (par, tmp / "parcels"):
        mem = slamgeo.pairs(res, parcels, asked, 1, cube=cube, model=model)
        for v in PAIR_VARIABLES:
            np.testing.assert_array_equal(back[v].values, mem[v].values)
    assert done == list(zip(back["pair_a"].values.tolist(), back["pair_b"].values.tolist()))
    assert len(done) == 2 and done[-1] == asked[0]
    # asking again replaces them
    again = slamgeo.pairs_store(store, tmp / "parcels", cube=tmp / "cube.zarr", model=tmp / "model", confused=1)
    assert again == done[:1] and open_results(store).sizes["pair"] == 1


def test_the_stage_without_labels_explains_the_nearest_clusters(season):
    tmp, _ = season
    res, cube, model = _opened(tmp)
    out = slamgeo.pairs(res, None, confused=2, cube=cube, model=model)
    chosen = nearest_centre_pairs(res["cluster_centre"].values, 2)
    labels = xr.DataArray(res["cluster"].values.astype(np.int16), dims=("y", "x"))
    want = pair_importance(
        model,
        cube,
        res["embedding"],
        labels,
        chosen,
        scale=res.attrs["scale"],
        reference=np.asarray(res.attrs["reference_map"], np.float32),
        classes=[f"cluster {i}" for i in range(4)],
    )
    np.testing.assert_array_equal(out["pair_importance_class"].values, want["pair_importance_class"].values)
    assert out["pair_a"].values.tolist() == [a for a, _ in chosen]


def test_the_stage_with_pixel_classes_explains_the_pairs_asked_for(scene):
    cube, model, res, labels = scene
    out = slamgeo.pairs(res, labels, [("cotton", "maize")], cube=cube, model=model)
    assert out["pair_a"].values.tolist() == ["cotton"] and out["pair_b"].values.tolist() == ["maize"]
    with pytest.raises(InputError, match="unknown class 'okra'"):
        slamgeo.pairs(res, labels, [("cotton", "okra")], cube=cube, model=model)


def test_without_a_pair_the_results_and_the_store_are_left_as_they_were(season, scene):
    from slamgeo.io.cube import open_results

    tmp, par = season
    res, cube, model = _opened(tmp)
    assert slamgeo.pairs(res, par, None, 0, cube=cube, model=model) is res
    unclustered = res.drop_vars(["cluster", "cluster_centre", "cluster_size"])
    assert slamgeo.pairs(unclustered, None, cube=cube, model=model) is unclustered
    before = sorted(map(str, open_results(tmp / "results.zarr").data_vars))
    assert (
        slamgeo.pairs_store(
            tmp / "results.zarr", tmp / "parcels", cube=tmp / "cube.zarr", model=tmp / "model", confused=0
        )
        == []
    )
    assert sorted(map(str, open_results(tmp / "results.zarr").data_vars)) == before
    sample = scene[2].stack(sample=("y", "x")).reset_index("sample", drop=True)  # no grid: no pairs
    assert slamgeo.pairs(sample, None, cube=scene[0], model=scene[1]) is sample


def test_on_a_cluster_each_pair_is_explained_on_a_worker_as_in_process(season, local_cluster):
    """With a distributed client, each pair's Grad-SLAM is a task on a worker (`pair_profile`);
    the variables are those of the in-process run (the worker's single torch thread may round
    differently from this process's threads: a tight tolerance)."""
    import dask
    from distributed import get_task_stream

    from slamgeo.jobs.pairs import PAIR_VARIABLES

    tmp, par = season
    res, cube, model = _opened(tmp)
    asked = _asked_pair(par, 2)
    want = slamgeo.pairs(res, par, asked, 2, cube=cube, model=model)
    with dask.config.set(scheduler=local_cluster), get_task_stream(client=local_cluster) as stream:
        got = slamgeo.pairs(res, par, asked, 2, cube=cube, model=model)
    ran = [t for t in stream.data if str(t["key"]).startswith("pair_profile-")]
    assert len(ran) == got.sizes["pair"] == 3
    assert {t["worker"] for t in ran} <= set(local_cluster.scheduler_info()["workers"])
    for v in ("pair_direction", "pair_pixels", "pair_a", "pair_b"):
        np.testing.assert_array_equal(got[v].values, want[v].values)
    for v in PAIR_VARIABLES:
        np.testing.assert_allclose(got[v].values, want[v].values, rtol=1e-5, atol=1e-7)


# --- out of core: lazy inputs, the previous in-memory draw, nothing per pixel in the driver -----


def _previous_draw(emb: np.ndarray, names: np.ndarray, pairs, max_pixels: int, seed: int):
    """The previous in-memory implementation's directions and drawn pixels (flat indices per
    member), from the whole embedding `(D, *S)` and class names `(*S)` in memory."""
    e = emb.reshape(emb.shape[0], -1)
    ok = np.isfinite(e).all(axis=0)
    flat = names.ravel()
    rng = np.random.default_rng(seed)
    out = []
    for a, b in pairs:
        members = [np.flatnonzero(ok & (flat == c)) for c in (a, b)]
        w = e[:, members[1]].astype(np.float64).mean(axis=1) - e[:, members[0]].astype(np.float64).mean(axis=1)
        drawn = [np.sort(rng.choice(m, size=min(max_pixels, m.size), replace=False)) for m in members]
        out.append((w, drawn))
    return out


@pytest.mark.parametrize("form", ["names", "lazy_names", "lazy_codes"])
def test_the_drawn_pixels_and_directions_are_those_of_the_in_memory_draw(scene, monkeypatch, form):
    """Lazy embedding and labels (chunks that split rows), NaN pixels, classes in several pairs
    (the generator's sequence), some classes under `max_pixels`: the pixels read are exactly
    those the previous in-memory implementation drew, the directions equal to float rounding."""
    import slamgeo.jobs.pairs as jp

    cube, model, res, labels = scene
    names = labels.values.copy()
    names[20:, :5] = ""  # pixels without a class
    emb = res["embedding"].values.copy()
    emb[:, 10, 3:9] = np.nan  # and a few with no embedding, beside the no-data rows
    pairs = [("cotton", "pepper"), ("maize", "cotton"), ("pepper", "maize")]
    lazy = res["embedding"].copy(data=emb).chunk({"y": 7, "x": 10})
    classes = None
    if form == "names":
        lab = xr.DataArray(names, dims=("y", "x"))
    elif form == "lazy_names":
        lab = xr.DataArray(names, dims=("y", "x")).chunk({"y": 5, "x": 24})
    else:
        classes = ["cotton", "maize", "pepper", "wheat"]
        codes = np.select([names == c for c in classes], np.arange(4), -1).astype(np.int16)
        lab = xr.DataArray(codes, dims=("y", "x")).chunk({"y": 9, "x": 11})
    read = []
    series = jp._series
    monkeypatch.setattr(jp, "_series", lambda c, b, flat, s: read.append(flat) or series(c, b, flat, s))
    out = pair_importance(model, cube, lazy, lab, pairs, scale="none", max_pixels=60, seed=4, classes=classes)
    want = _previous_draw(emb, names, pairs, 60, 4)
    assert len(read) == len(pairs)
    for p, (w, drawn) in enumerate(want):
        np.testing.assert_array_equal(read[p], np.concatenate(drawn))
        np.testing.assert_allclose(out["pair_direction"].values[p], w, rtol=1e-12)
        assert out["pair_pixels"].values[p].tolist() == [d.size for d in drawn]
        x = series(cube, model.bands, np.concatenate(drawn), ("y", "x"))
        which = np.repeat([0, 1], [d.size for d in drawn])
        per_class, both, _ = jp.pair_profile(model, x, which, w, "none", None)
        np.testing.assert_allclose(out["pair_importance_class"].values[p], per_class, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(out["pair_importance"].values[p], both, rtol=1e-6, atol=1e-7)


def _on_worker_only(block: np.ndarray) -> np.ndarray:
    """A block that only a worker of a distributed cluster may compute."""
    from distributed import get_worker

    get_worker()  # ValueError outside a worker
    return block


def _lazy_inputs(tmp_path, n: int):
    """A cube store of n x n pixels (three classes in stripes, 16 dates), and from a results
    store chunked 4 x 4 like it: an embedding `(2, n, n)` (the class, plus noise; NaN on the
    cube's no-data rows) whose blocks only a worker may compute, and the class codes."""
    import dask.array as da
    from helpers import class_cube

    from slamgeo.io.cube import open_cube, write_cube

    cube, cls = class_cube(ny=n, nx=n, n_times=16, chunk=n // 4)
    write_cube(cube, tmp_path / f"cube{n}.zarr", progress=False)
    emb = (np.random.default_rng(0).normal(0, 1, (2, n, n)) + np.stack([cls, -cls])).astype(np.float32)
    emb[:, :3] = np.nan
    xr.Dataset({"embedding": (("dim", "y", "x"), emb), "codes": (("y", "x"), cls.astype(np.int16))}).chunk(
        {"y": n // 4, "x": n // 4}
    ).to_zarr(tmp_path / f"res{n}.zarr", zarr_format=2)
    stored = xr.open_zarr(tmp_path / f"res{n}.zarr")
    marked = da.map_blocks(
        _on_worker_only, stored["embedding"].data, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32)
    )
    return open_cube(tmp_path / f"cube{n}.zarr"), stored["embedding"].copy(data=marked), stored["codes"], stored


def test_on_a_cluster_a_lazy_embedding_is_not_gathered_in_the_driver(scene, tmp_path, local_cluster):
    """pair_importance on a 256 x 256 lazy embedding with lazy class codes, on a LocalCluster.
    The embedding's blocks can only be computed on a worker (a marker that fails elsewhere),
    and what reaches the driver does not grow with the pixels: its peak of traced allocations
    (tracemalloc: numpy's buffers are traced, those received from the workers too) is that of
    a 64 x 64 scene of the same 4 x 4 blocks (the same graphs, whose handling by the in-process
    scheduler sets the peak, about 2.5 MB give or take 0.3) within half the 256 x 256
    embedding's 512 kB; the previous implementation gathered the whole embedding and the
    codes. The numbers are those of the in-process run."""
    import tracemalloc

    import dask

    _, model, _, _ = scene
    classes = ["cotton", "pepper", "maize"]
    pairs = [("cotton", "pepper"), ("maize", "cotton")]
    peaks: dict[int, int] = {}
    with dask.config.set(scheduler=local_cluster):
        for n in (64, 256):
            cube, lazy, codes, stored = _lazy_inputs(tmp_path, n)
            pair_importance(model, cube, lazy, codes, pairs, scale="none", max_pixels=100, classes=classes)  # warm
            for _ in range(2):
                tracemalloc.start()
                try:
                    got = pair_importance(
                        model, cube, lazy, codes, pairs, scale="none", max_pixels=100, classes=classes
                    )
                    peak = tracemalloc.get_traced_memory()[1]
                finally:
                    tracemalloc.stop()
                peaks[n] = min(peaks.get(n, peak), peak)
    size = stored["embedding"].nbytes
    assert peaks[256] - peaks[64] < size / 2, (peaks, size)
    with pytest.raises(ValueError, match="No worker"):  # the marker: no block of the embedding here
        lazy.compute(scheduler="sync")
    want = pair_importance(
        model, cube, stored["embedding"], codes, pairs, scale="none", max_pixels=100, classes=classes
    )
    for v in ("pair_pixels", "pair_a", "pair_b"):
        np.testing.assert_array_equal(got[v].values, want[v].values)
    np.testing.assert_allclose(got["pair_direction"].values, want["pair_direction"].values, rtol=1e-12)
    for v in ("pair_importance", "pair_importance_class"):
        np.testing.assert_allclose(got[v].values, want[v].values, rtol=1e-5, atol=1e-7)
