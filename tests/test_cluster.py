"""k-Means on embeddings: quality against scikit-learn, inertia and labels against numpy,
chunking independence, empty clusters, the CLI and its all-or-nothing write."""

import contextlib
import subprocess
import sys
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr
import zarr
from sklearn.cluster import KMeans

from slamgeo.errors import InputError
from slamgeo.jobs.cluster import (
    append_variables,
    assign_clusters,
    cluster,
    cluster_store,
    fit_kmeans,
    inertia,
    kmeans_init,
    sample_embeddings,
)


def _embedding(kind: str = "blobs", *, seed: int = 0, d: int = 3, ny: int = 60, nx: int = 80, chunks=(25, 30)):
    """`(dim, y, x)` float32 with a NaN corner and one pixel NaN in a single dim."""
    rng = np.random.default_rng(seed)
    if kind == "blobs":
        centres = rng.normal(0, 4, (8, d))
        e = centres[rng.integers(0, 8, (ny, nx))] + rng.normal(0, 1.0, (ny, nx, d))
    else:  # one elongated Gaussian: no natural clusters, many local minima
        e = rng.normal(0, 1, (ny, nx, d)) * np.array([3, 1, 0.5])[:d]
    e = e.transpose(2, 0, 1).astype(np.float32)
    e[:, :5, :7] = np.nan
    e[1, ny // 2, nx // 2] = np.nan
    da_ = xr.DataArray(
        e,
        dims=("dim", "y", "x"),
        coords={"dim": np.arange(d), "y": 4_140_000 - 10.0 * np.arange(ny), "x": 230_000 + 10.0 * np.arange(nx)},
        name="embedding",
    )
    return da_.rio.write_crs(32630).chunk({"y": chunks[0], "x": chunks[1]})


def _valid_pixels(emb: xr.DataArray) -> np.ndarray:
    x = emb.values.reshape(emb.sizes["dim"], -1).T.astype(np.float64)
    return x[np.isfinite(x).all(1)]


def _sq_inertia(x: np.ndarray, centres: np.ndarray) -> float:
    return float(((x[:, None, :] - centres[None]) ** 2).sum(-1).min(1).sum())


@pytest.mark.parametrize("kind,k,seed", [("blobs", 8, 0), ("gauss", 16, 1), ("gauss", 16, 5)])
def test_fit_inertia_within_2_percent_of_sklearn(kind, k, seed):
    emb = _embedding(kind, seed=seed)
    fit = fit_kmeans(emb, k, sample_size=2000, seed=seed)
    x = _valid_pixels(emb)
    ref = KMeans(n_clusters=k, random_state=seed).fit(x)
    assert fit.inertia <= 1.02 * _sq_inertia(x, ref.cluster_centers_)


def test_fit_reports_squared_inertia_of_its_centres():
    emb = _embedding()
    fit = fit_kmeans(emb, 8, sample_size=1000)
    x = _valid_pixels(emb)
    assert fit.inertia == pytest.approx(_sq_inertia(x, fit.centres), rel=1e-10)
    assert fit.n_valid == x.shape[0] and fit.sizes.sum() == x.shape[0]


def test_inertia_equals_numpy_sum_of_squared_distances():
    emb = _embedding("gauss")
    centres = np.random.default_rng(3).normal(size=(5, 3))
    assert inertia(emb, centres) == pytest.approx(_sq_inertia(_valid_pixels(emb), centres), rel=1e-10)


def test_assign_clusters_is_nearest_centre_and_minus_one_on_nan():
    emb = _embedding()
    centres = np.random.default_rng(4).normal(0, 4, (6, 3))
    out = assign_clusters(emb, centres)
    assert isinstance(out.data, da.Array) and out.dtype == np.int16
    assert out.chunks == emb.chunks[1:]
    e = emb.values.astype(np.float64)
    ref = ((e[None] - centres[:, :, None, None]) ** 2).sum(1).argmin(0)
    ref[~np.isfinite(e).all(0)] = -1
    np.testing.assert_array_equal(out.values, ref)
    assert out.rio.crs == emb.rio.crs


def test_results_identical_for_two_chunkings():
    a = fit_kmeans(_embedding(chunks=(25, 30)), 8, sample_size=1500, seed=2)
    b = fit_kmeans(_embedding(chunks=(60, 13)), 8, sample_size=1500, seed=2)
    np.testing.assert_allclose(a.centres, b.centres, rtol=1e-12, atol=1e-12)
    assert a.n_iter == b.n_iter
    np.testing.assert_array_equal(
        assign_clusters(_embedding(chunks=(25, 30)), a.centres).values,
        assign_clusters(_embedding(chunks=(60, 13)), b.centres).values,
    )


def test_sample_is_independent_of_chunking_and_valid():
    s1, n1 = sample_embeddings(_embedding(chunks=(25, 30)), 500, seed=7)
    s2, n2 = sample_embeddings(_embedding(chunks=(7, 80)), 500, seed=7)
    assert n1 == n2 == _valid_pixels(_embedding()).shape[0]
    np.testing.assert_array_equal(s1, s2)
    assert s1.shape == (500, 3) and np.isfinite(s1).all()
    assert np.unique(s1, axis=0).shape[0] == 500  # without replacement


def test_sample_is_complete_when_most_pixels_are_nan():
    emb = _embedding().copy()
    emb[:, :55] = np.nan  # 5 of 60 rows left
    x, n = sample_embeddings(emb, 300, seed=0)
    assert n == 5 * 80 and x.shape == (300, 3)


def test_empty_cluster_is_reseeded_not_collapsed():
    emb = _embedding()
    init = kmeans_init(_valid_pixels(emb), 8)
    init[0] = [1e3, 1e3, 1e3]  # no pixel will choose it: dask-ml would move it to the origin
    fit = fit_kmeans(emb, 8, init=init, sample_size=2000)
    assert (fit.sizes > 0).all()
    assert np.unique(fit.centres, axis=0).shape[0] == 8


def test_kmeans_init_is_deterministic_for_a_seed():
    x = _valid_pixels(_embedding("gauss"))[:1000]
    a, b = kmeans_init(x, 5, seed=1), kmeans_init(x, 5, seed=1)
    assert a.shape == (5, 3)
    np.testing.assert_array_equal(a, b)


def test_kmeans_init_refuses_fewer_distinct_points_than_k():
    x = np.repeat(np.eye(3), 10, axis=0)
    with pytest.raises(InputError, match="only 3 distinct"):
        kmeans_init(x, 4)


def test_fit_refuses_more_clusters_than_valid_pixels():
    emb = _embedding(ny=10, nx=10, chunks=(5, 5))
    emb[:, 2:] = np.nan
    with pytest.raises(InputError, match="only 6 valid pixel"):
        fit_kmeans(emb, 16, sample_size=100)


def test_fit_works_on_the_sample_form():
    e = _embedding()
    table = e.stack(sample=("y", "x")).drop_vars(["sample", "y", "x", "spatial_ref"]).chunk({"sample": 1000})
    fit = fit_kmeans(table, 8, sample_size=1000)
    labels = assign_clusters(table, fit.centres)
    assert labels.dims == ("sample",)
    assert fit.inertia == pytest.approx(_sq_inertia(_valid_pixels(e), fit.centres), rel=1e-10)


def test_fit_on_a_distributed_cluster(default_cluster):
    emb = _embedding()
    fit = fit_kmeans(emb, 8, sample_size=1500, seed=2)
    local = fit_kmeans(emb, 8, sample_size=1500, seed=2, max_iter=fit.n_iter)
    np.testing.assert_allclose(fit.centres, local.centres, rtol=1e-12)


# --------------------------------------------------------------------------- CLI and store writes


def _results_store(path, *, complete: int = 1) -> str:
    emb = _embedding(ny=30, nx=40, chunks=(16, 16))
    ds = emb.to_dataset()
    ds["recon_error"] = emb.isel(dim=0, drop=True).rename("recon_error")
    ds.attrs["slamgeo_complete"] = bool(complete)
    ds.to_zarr(path, mode="w", zarr_format=2)
    return str(path)


def test_cli_adds_clusters_and_keeps_the_store(tmp_path, local_cluster):
    store = _results_store(tmp_path / "results.zarr")
    address = local_cluster.scheduler_info()["address"]
    proc = subprocess.run(
        [sys.executable, "-m", "slamgeo", "cluster", store, "--k", "4", "--sample-size", "500", "--scheduler", address],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    ds = xr.open_zarr(store, decode_coords="all")
    assert ds.attrs["slamgeo_complete"] is True
    assert ds["cluster"].dims == ("y", "x") and ds["cluster_centre"].dims == ("centre", "dim")
    assert ds["cluster"].rio.crs.to_epsg() == 32630
    ref = assign_clusters(ds["embedding"], ds["cluster_centre"].values).values
    np.testing.assert_array_equal(ds["cluster"].values, ref)
    assert ds["cluster_size"].values.sum() == (ds["cluster"].values >= 0).sum()
    again = subprocess.run(
        [sys.executable, "-m", "slamgeo", "cluster", store, "--k", "4", "--scheduler", address],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 1 and "--overwrite" in again.stderr


def test_cli_refuses_an_incomplete_explain_run(tmp_path):
    store = _results_store(tmp_path / "results.zarr", complete=0)
    proc = subprocess.run(
        [sys.executable, "-m", "slamgeo", "cluster", store], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1 and "not completed" in proc.stderr
    assert "cluster" not in zarr.open_group(store, mode="r")


def _boom(block):
    raise RuntimeError("worker lost")


def test_failed_write_leaves_the_store_as_it_was(tmp_path):
    store = _results_store(tmp_path / "results.zarr")
    before = sorted(zarr.open_group(store, mode="r").keys())
    emb = xr.open_zarr(store)["embedding"]
    bad = xr.DataArray(emb.isel(dim=0).data.map_blocks(_boom, dtype=np.int16), dims=("y", "x"), name="cluster")
    with pytest.raises(RuntimeError, match="worker lost"):
        append_variables(store, bad.to_dataset(), overwrite=False)
    assert sorted(zarr.open_group(store, mode="r").keys()) == before
    assert sorted(xr.open_zarr(store, decode_coords="all").data_vars) == ["embedding", "recon_error"]
    assert list(tmp_path.iterdir()) == [tmp_path / "results.zarr"]  # no temporary store left


def test_overwrite_replaces_a_clustering_with_another_k(tmp_path):
    from slamgeo.jobs.cluster import centres_dataarray

    store = _results_store(tmp_path / "results.zarr")
    emb = xr.open_zarr(store, decode_coords="all")["embedding"]
    for k in (4, 3):
        fit = fit_kmeans(emb, k, sample_size=500)
        new = xr.merge([assign_clusters(emb, fit.centres).to_dataset(), centres_dataarray(fit)])
        append_variables(store, new, overwrite=True)
    ds = xr.open_zarr(store, decode_coords="all")
    assert ds.sizes["centre"] == 3 and ds["cluster"].values.max() == 2
    assert ds.attrs["slamgeo_complete"] is True
    with pytest.raises(InputError, match="--overwrite"):
        append_variables(store, new, overwrite=False)


def test_the_same_variables_written_again_keep_their_coordinates(tmp_path):
    """A second write of equal labelled variables (the class pairs of a re-run report) reuses
    the store's coordinates and the new variables still name them: `pair_a` stays a coordinate."""
    store = _results_store(tmp_path / "results.zarr")
    new = xr.Dataset(
        {"pair_importance": (("pair", "time"), np.ones((2, 3), np.float32))},
        coords={"pair": [0, 1], "pair_a": ("pair", ["maize", "wheat"]), "pair_b": ("pair", ["rice", "oat"])},
    )
    for _ in range(2):
        append_variables(store, new, overwrite=True)
        ds = xr.open_zarr(store)
        assert {"pair_a", "pair_b"} <= set(ds.coords) and "pair_a" not in ds.data_vars
        picked = ds[["pair_importance"]]  # what a reader selecting the data variables keeps
        assert list(picked["pair_a"].values) == ["maize", "wheat"]


# --------------------------------------------------------------------------- reads of the embedding


@contextlib.contextmanager
def count_store_reads(prefix: str = "embedding/"):
    """Bytes returned by every read of a local Zarr store's keys under `prefix` (chunks and the
    array's metadata), in this process: a list of sizes, one per read. Local schedulers only
    (worker processes of a distributed cluster have their own, unpatched, store class)."""
    from zarr.storage import LocalStore

    sizes: list[int] = []
    get = LocalStore.get

    async def counting_get(self, key, prototype=None, byte_range=None):
        out = await get(self, key, prototype, byte_range)
        if key.startswith(prefix) and out is not None:
            sizes.append(len(out))
        return out

    LocalStore.get = counting_get  # type: ignore[method-assign]
    try:
        yield sizes
    finally:
        LocalStore.get = get  # type: ignore[method-assign]


def _stored_bytes(store: Path, name: str = "embedding") -> int:
    return sum(f.stat().st_size for f in (store / name).rglob("*") if f.is_file())


def _scale_store(path: Path) -> Path:
    """A results store whose k-Means takes a dozen Lloyd passes (an elongated Gaussian)."""
    ds = _embedding("gauss", ny=240, nx=320, chunks=(48, 64)).to_dataset()
    ds.attrs["slamgeo_complete"] = True
    ds.to_zarr(path, mode="w", zarr_format=2)
    return path


def test_cluster_store_reads_the_embedding_about_once(tmp_path):
    """Valid rows kept in memory across Lloyd passes: the sample, every pass and the labels read
    the embedding once in all (ratio 1.0 here), where streaming reads it 3 + n_iter times (14.0)."""
    kept, streamed = _scale_store(tmp_path / "kept.zarr"), _scale_store(tmp_path / "streamed.zarr")
    stored = _stored_bytes(kept)
    with dask.config.set(scheduler="threads"):
        with count_store_reads() as reads:
            fit = cluster_store(kept, 8, sample_size=2000)
        with count_store_reads() as reads_streamed:
            ref = cluster_store(streamed, 8, sample_size=2000, persist=False)
    assert fit.persisted and not ref.persisted and fit.n_iter >= 5
    assert sum(reads) <= 3.5 * stored, sum(reads) / stored
    assert sum(reads_streamed) >= (fit.n_iter + 2) * stored  # the count sees every pass
    np.testing.assert_array_equal(fit.centres, ref.centres)
    assert (fit.inertia, fit.n_iter, fit.n_valid) == (ref.inertia, ref.n_iter, ref.n_valid)
    np.testing.assert_array_equal(fit.sizes, ref.sizes)
    a, b = xr.open_zarr(kept)["cluster"].values, xr.open_zarr(streamed)["cluster"].values
    np.testing.assert_array_equal(a, b)
    assert (a == -1).sum() == a.size - fit.n_valid


def test_cluster_then_labels_read_the_embedding_at_most_twice(tmp_path):
    from slamgeo.io.cube import open_results

    store = _scale_store(tmp_path / "results.zarr")
    with dask.config.set(scheduler="threads"), count_store_reads() as reads:
        out = cluster(open_results(store), 8, sample_size=2000)
        labels = out["cluster"].values  # lazy: read again here, nothing held in memory meanwhile
    assert sum(reads) <= 2.5 * _stored_bytes(store)
    assert (labels >= 0).sum() == out["cluster_size"].values.sum()


def test_rows_kept_after_a_streamed_sample_when_only_the_valid_ones_fit(tmp_path, monkeypatch):
    import slamgeo.jobs.cluster as kc

    store = _scale_store(tmp_path / "results.zarr")
    n_total, per_pixel = 240 * 320, 3 * 4
    monkeypatch.setattr(kc, "_memory_budget", lambda: n_total * (per_pixel + 1) - 1)  # not if all were valid
    with dask.config.set(scheduler="threads"), count_store_reads() as reads:
        fit = cluster_store(store, 8, sample_size=2000)
    assert fit.persisted and sum(reads) <= 2.5 * _stored_bytes(store)
    monkeypatch.setattr(kc, "_memory_budget", lambda: 1000.0)
    assert not cluster_store(store, 8, sample_size=2000, overwrite=True).persisted


@pytest.mark.parametrize("form", ["grid", "table", "mostly_nan"])
def test_kept_rows_give_the_fit_of_the_streamed_passes(form):
    emb = _embedding("gauss", seed=3)
    if form == "table":
        emb = emb.stack(sample=("y", "x")).drop_vars(["sample", "y", "x", "spatial_ref"]).chunk({"sample": 1000})
    elif form == "mostly_nan":
        emb = emb.copy()
        emb[:, :50] = np.nan  # the sample needs a second draw
    a = fit_kmeans(emb, 6, sample_size=500, seed=1, persist=True)
    b = fit_kmeans(emb, 6, sample_size=500, seed=1, persist=False)
    assert a.persisted and not b.persisted
    np.testing.assert_array_equal(a.centres, b.centres)
    assert (a.inertia, a.n_iter, a.n_valid, a.sample_size) == (b.inertia, b.n_iter, b.n_valid, b.sample_size)
    np.testing.assert_array_equal(a.sizes, b.sizes)


def test_an_embedding_in_memory_is_not_copied():
    emb = _embedding()
    assert not fit_kmeans(emb, 4, sample_size=500).persisted  # numpy chunks: nothing to save
    lazy = emb.copy(data=emb.data + 0)  # a computation per chunk: kept
    assert fit_kmeans(lazy, 4, sample_size=500).persisted


def test_kept_rows_on_a_distributed_cluster(default_cluster):
    from slamgeo.jobs.cluster import PERSIST_FRACTION, _memory_budget

    workers = default_cluster.scheduler_info(n_workers=-1)["workers"].values()
    assert _memory_budget() == PERSIST_FRACTION * sum(w["memory_limit"] for w in workers)
    emb = _embedding("gauss", seed=3)
    fit = fit_kmeans(emb, 6, sample_size=500, seed=1, persist=True)
    assert fit.persisted
    with dask.config.set(scheduler="sync"):
        local = fit_kmeans(emb, 6, sample_size=500, seed=1, persist=False)
    np.testing.assert_allclose(fit.centres, local.centres, rtol=1e-12)
    assert fit.n_iter == local.n_iter and fit.sizes.tolist() == local.sizes.tolist()


# --------------------------------------------------------------------------- the driver only orchestrates


def test_kmeans_init_runs_on_a_worker_with_the_in_process_centres(default_cluster, monkeypatch):
    """Under a distributed client the sample is gathered and seeded on a worker (a task
    `initial_centres-...`; this process's `kmeans_init` is never called), and the seeding gives
    the centres of this process to the bit (one thread wherever it runs); the fit is the local one."""
    from distributed import get_task_stream

    import slamgeo.jobs.cluster as kc

    emb = _embedding("gauss", seed=3)
    sample, _ = sample_embeddings(emb, 1500, seed=2)
    here = kmeans_init(sample, 8, seed=2)
    on_worker = default_cluster.submit(kc._initial_centres, sample, 8, 2, 4, None).result()[0]
    np.testing.assert_array_equal(on_worker, here)

    def not_here(*args, **kwargs):
        raise AssertionError("kmeans_init ran in the driver")

    with monkeypatch.context() as m, get_task_stream(client=default_cluster) as stream:
        m.setattr(kc, "kmeans_init", not_here)
        fit = fit_kmeans(emb, 8, sample_size=1500, seed=2)
    ran = [t for t in stream.data if str(t["key"]).startswith("initial_centres-")]
    assert len(ran) == 1 and ran[0]["worker"] in default_cluster.scheduler_info()["workers"]
    with dask.config.set(scheduler="sync"):
        local = fit_kmeans(emb, 8, sample_size=1500, seed=2)
    np.testing.assert_allclose(fit.centres, local.centres, rtol=1e-12)
    assert (fit.n_iter, fit.sample_size, fit.n_valid) == (local.n_iter, local.sample_size, local.n_valid)


def test_the_sample_never_visits_the_driver(default_cluster, tmp_path):
    """Fits with samples of 1 000 and of 40 000 pixels x 3 dims (960 kB as float64) of a store,
    on a LocalCluster: the same graphs, whose handling by the in-process scheduler sets the
    driver's peak of traced allocations (tracemalloc, which sees numpy's buffers, those
    received from the workers too: about 2.2 MB give or take 0.3), and peaks within half the
    larger sample of each other (the sample was gathered here, twice over, before)."""
    import tracemalloc

    store = _scale_store(tmp_path / "results.zarr")
    emb = xr.open_zarr(store)["embedding"]
    fit_kmeans(emb, 8, sample_size=1000, max_iter=3)  # warm: imports on the workers
    peaks: dict[int, int] = {}
    for size in (1000, 40_000, 1000, 40_000):
        tracemalloc.start()
        try:
            fit = fit_kmeans(emb, 8, sample_size=size, seed=1, max_iter=3)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        peaks[size] = min(peaks.get(size, peak), peak)
        assert fit.sample_size == size and fit.persisted
    assert peaks[40_000] - peaks[1000] < 40_000 * 3 * 8 / 2, peaks


def test_options_are_checked_by_name():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['sample'\]"):
        cluster(_embedding().to_dataset(), 4, sample=100)  # type: ignore[call-arg]
