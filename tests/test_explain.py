"""explain: Zarr-to-Zarr on a real LocalCluster, equal to in-memory Grad-SLAM, resumable."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from helpers import SMALL_ARCH, blocks_done, class_cube, run_and_kill

from slamgeo.errors import CheckpointError, InputError
from slamgeo.jobs.explain import ExplainOptions, explain, explain_array, explain_store, open_results
from slamgeo.method.checkpoint import load_model
from slamgeo.method.gradslam import grad_slam

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("explain")


@pytest.fixture(scope="module")
def cube_and_model(workdir):
    """A 24 x 20 cube (16 dates, 8 x 8 chunks, 3 no-data rows, one all-no-data chunk row) and a
    small CAE trained on it."""
    from slamgeo.method.train import train

    cube, _ = class_cube(ny=24, nx=20, n_times=16, chunk=8, nodata_rows=8)
    cube_path = workdir / "cube.zarr"
    cube.to_zarr(cube_path, zarr_format=2)
    train(
        cube,
        out_dir=workdir / "model",
        sample_size=300,
        max_epochs=3,
        batch_size=64,
        arch=SMALL_ARCH,
        seed=0,
        progress=False,
    )
    return cube_path, workdir / "model"


def _pixels(cube: xr.Dataset, bands) -> np.ndarray:
    x = np.stack([cube[b].values for b in bands], 0)  # (C, T, y, x)
    c, t = x.shape[:2]
    return x.reshape(c, t, -1).transpose(2, 0, 1)


def _run(cube_path, model_dir, out, client, **kw):
    return explain_store(cube_path, model_dir, out, client=client, progress=False, **kw)


@pytest.fixture(scope="module")
def clean_run(cube_and_model, workdir, local_cluster):
    cube_path, model_dir = cube_and_model
    out = workdir / "clean.zarr"
    rep = _run(cube_path, model_dir, out, local_cluster)
    return rep, open_results(out).load()


def test_results_equal_in_memory_grad_slam(cube_and_model, clean_run):
    cube_path, model_dir = cube_and_model
    rep, res = clean_run
    cube = xr.open_zarr(cube_path).load()
    tm = load_model(model_dir)
    x = _pixels(cube, tm.bands)
    ok = ~np.isnan(x).any(axis=(1, 2))
    xs = torch.from_numpy(tm.standardise(x[ok]))
    ref = res.attrs.get("reference_map")
    ref = None if ref is None else torch.tensor(ref, dtype=torch.float32)
    out = grad_slam(tm.model.encoder, xs, reference=ref, return_embedding=True)
    imp = res["importance"].values.reshape(2, 16, -1)[:, :, ok].transpose(2, 0, 1)
    emb = res["embedding"].values.reshape(2, -1)[:, ok].T
    np.testing.assert_allclose(imp, out.importance.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb, out.embedding.numpy(), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        recon = tm.model.decoder(out.embedding)
    err = ((recon - xs) ** 2).mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(res["recon_error"].values.reshape(-1)[ok], err, rtol=1e-5, atol=1e-6)
    assert rep.valid_pixels == ok.sum() and rep.blocks_total == 9 and rep.blocks_computed == 9


def test_centred_reference_is_the_mean_map_of_a_scene_sample(cube_and_model, clean_run):
    from slamgeo.io.sample import sample_series
    from slamgeo.method.gradslam import reference_map

    cube_path, model_dir = cube_and_model
    _, res = clean_run
    tm = load_model(model_dir)
    opts = ExplainOptions()
    assert res.attrs["scale"] == opts.scale
    if opts.scale != "centred":
        assert "reference_map" not in res.attrs
        return
    x = sample_series(xr.open_zarr(cube_path, decode_coords="all"), opts.reference_size, seed=opts.seed, bands=tm.bands)
    x = x[~np.isnan(x).any(axis=(1, 2))]
    want = reference_map(tm.model.encoder, torch.from_numpy(tm.standardise(x)))
    np.testing.assert_allclose(np.asarray(res.attrs["reference_map"]), want.numpy(), rtol=1e-5, atol=1e-6)


def test_results_follow_the_cube_grid_and_record_provenance(cube_and_model, clean_run):
    cube_path, _ = cube_and_model
    _, res = clean_run
    cube = xr.open_zarr(cube_path, decode_coords="all")
    assert res["importance"].dims == ("dim", "time", "y", "x")
    assert res["embedding"].dims == ("dim", "y", "x")
    assert res["recon_error"].dims == ("y", "x")
    np.testing.assert_array_equal(res["x"], cube["x"])
    np.testing.assert_array_equal(res["time"], cube["time"])
    assert res.rio.crs == cube.rio.crs
    assert res.attrs["slamgeo_complete"] is True
    for key in ("model_checksum", "input_fingerprint", "layers", "scale", "slamgeo_version", "gap_fill"):
        assert res.attrs[key], key
    stored = xr.open_zarr(Path(cube_path).parent / "clean.zarr")
    assert stored["importance"].encoding["chunks"] == (2, 16, 8, 8)


def test_nodata_stays_nan_and_never_leaks(cube_and_model, clean_run):
    cube_path, _ = cube_and_model
    _, res = clean_run
    cube = xr.open_zarr(cube_path).load()
    nodata = cube["VV"].isnull().any("time").values
    assert nodata[:8].all()  # the first chunk row is all no-data
    assert np.isnan(res["importance"].values[:, :, nodata]).all()
    assert np.isnan(res["embedding"].values[:, nodata]).all()
    assert np.isfinite(res["importance"].values[:, :, ~nodata]).all()
    assert np.isfinite(res["recon_error"].values[~nodata]).all()


def test_a_pixel_does_not_depend_on_its_neighbours(cube_and_model, clean_run):
    cube_path, model_dir = cube_and_model
    ref = clean_run[1].attrs.get("reference_map")
    ref = None if ref is None else np.asarray(ref, np.float32)
    tm = load_model(model_dir)
    x = _pixels(xr.open_zarr(cube_path).load(), tm.bands)
    x = x[~np.isnan(x).any(axis=(1, 2))][:50]
    alone = explain_array(tm, x[:1], reference=ref)
    mixed = explain_array(tm, np.concatenate([x[:1], np.full_like(x[:3], np.nan), x[1:]]), reference=ref)
    np.testing.assert_allclose(alone[1][0], mixed[1][0], rtol=1e-5, atol=1e-6)
    assert np.isnan(mixed[1][1:4]).all()


def test_chunking_does_not_change_results(cube_and_model, clean_run, workdir, local_cluster):
    cube_path, model_dir = cube_and_model
    _, res = clean_run
    rechunked = workdir / "cube_rechunked.zarr"
    cube = xr.open_zarr(cube_path, decode_coords="all")
    for v in cube.variables.values():
        v.encoding.pop("chunks", None)
        v.encoding.pop("preferred_chunks", None)
    cube.chunk({"time": -1, "y": 12, "x": 5}).to_zarr(rechunked, zarr_format=2)
    out = workdir / "rechunked.zarr"
    _run(rechunked, model_dir, out, local_cluster)
    other = open_results(out).load()
    for v in ("importance", "embedding", "recon_error"):
        np.testing.assert_allclose(other[v].values, res[v].values, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_lazy_dataset_api_matches_the_store(cube_and_model, clean_run):
    cube_path, model_dir = cube_and_model
    _, res = clean_run
    lazy = explain(xr.open_zarr(cube_path, decode_coords="all"), load_model(model_dir))
    assert lazy["importance"].chunks is not None
    got = lazy.compute(scheduler="threads")
    np.testing.assert_allclose(got["importance"].values, res["importance"].values, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_float16_importance_halves_the_output(cube_and_model, clean_run, workdir, local_cluster):
    cube_path, model_dir = cube_and_model
    _, res = clean_run
    out = workdir / "f16.zarr"
    _run(cube_path, model_dir, out, local_cluster, options=ExplainOptions(importance_dtype="float16"))
    half = open_results(out)
    assert half["importance"].dtype == np.float16
    np.testing.assert_allclose(
        half["importance"].values.astype(np.float32), res["importance"].values, atol=2e-3, equal_nan=True
    )


def test_a_second_run_skips_every_block(cube_and_model, clean_run, workdir, local_cluster):
    cube_path, model_dir = cube_and_model
    rep = _run(cube_path, model_dir, workdir / "clean.zarr", local_cluster)
    assert rep.blocks_computed == 0 and rep.blocks_skipped == 9


def test_other_options_on_an_existing_store_are_refused(cube_and_model, clean_run, workdir, local_cluster):
    cube_path, model_dir = cube_and_model
    with pytest.raises(InputError, match="another run"):
        _run(cube_path, model_dir, workdir / "clean.zarr", local_cluster, options=ExplainOptions(scale="none"))


def test_model_that_does_not_fit_is_refused_before_any_work(workdir, cube_and_model, local_cluster):
    _, model_dir = cube_and_model
    cube, _ = class_cube(n_times=12)
    path = workdir / "cube12.zarr"
    cube.to_zarr(path, zarr_format=2)
    out = workdir / "never.zarr"
    with pytest.raises(CheckpointError, match="dates"):
        _run(path, model_dir, out, local_cluster)
    assert not out.exists()
    renamed = workdir / "cube_renamed.zarr"
    class_cube()[0].rename({"VH": "HH"}).to_zarr(renamed, zarr_format=2)
    with pytest.raises(InputError, match="VH"):
        _run(renamed, model_dir, out, local_cluster)
    assert not out.exists()


def test_the_input_cube_is_not_written(cube_and_model, clean_run):
    cube_path, _ = cube_and_model
    before = {p: p.stat().st_mtime_ns for p in Path(cube_path).rglob("*")}
    assert "importance" not in xr.open_zarr(cube_path)
    after = {p: p.stat().st_mtime_ns for p in Path(cube_path).rglob("*")}
    assert before == after


def test_incomplete_results_are_not_taken_for_complete(cube_and_model, workdir):
    cube_path, model_dir = cube_and_model
    out = workdir / "partial.zarr"
    _run(cube_path, model_dir, out, None)
    zarr.open_group(str(out), mode="r+").attrs["slamgeo_complete"] = False
    zarr.consolidate_metadata(str(out))
    with pytest.raises(InputError, match="not completed"):
        open_results(out)


EXPLAIN_ARGV = "ex.explain_store(sys.argv[1], sys.argv[2], sys.argv[3], client=None, progress=False)\n"


def test_resume_after_the_process_is_killed(cube_and_model, clean_run, workdir, tmp_path):
    """SIGKILL a run half-way; the rerun computes only the missing blocks and ends identical."""
    cube_path, model_dir = cube_and_model
    _, res = clean_run
    out = workdir / "killed.zarr"
    env = dict(os.environ, DASK_SCHEDULER="single-threaded")
    done = run_and_kill(EXPLAIN_ARGV, [cube_path, model_dir, out], store=out, at_least=3, tmp=tmp_path, env=env)
    with pytest.raises(InputError, match="not completed"):
        open_results(out)
    missing = 9 - done
    assert 0 < missing < 9
    rep = explain_store(cube_path, model_dir, out, client=None, progress=False)
    assert rep.blocks_computed == missing and rep.blocks_skipped == 9 - missing
    resumed = open_results(out).load()
    for v in ("importance", "embedding", "recon_error"):
        np.testing.assert_array_equal(resumed[v].values, res[v].values)


def _slow_blocks(seconds: float = 0.5) -> None:
    """Run on a worker: make every block task sleep first, so a test can act mid-run."""
    import slamgeo.jobs.explain as ex

    real = ex._explain_block_arrays

    def slow(*a, **k):
        time.sleep(seconds)
        return real(*a, **k)

    ex._explain_block_arrays = slow


def test_a_worker_killed_mid_run_loses_nothing(cube_and_model, clean_run, workdir):
    import threading

    import cloudpickle
    from distributed import Client, LocalCluster

    cube_path, model_dir = cube_and_model
    _, res = clean_run
    out = workdir / "worker_killed.zarr"
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    errors: list[BaseException] = []
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.run(_slow_blocks)
        pids = client.run(os.getpid)

        def job():
            try:
                _run(cube_path, model_dir, out, client)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
                errors.append(exc)

        thread = threading.Thread(target=job)
        thread.start()
        deadline = time.time() + 120
        killed = False
        while time.time() < deadline and thread.is_alive():
            if blocks_done(out) >= 2:
                os.kill(next(iter(pids.values())), signal.SIGKILL)
                killed = True
                break
            time.sleep(0.05)
        thread.join(timeout=180)
    assert killed and not errors, errors
    got = open_results(out).load()
    for v in ("importance", "embedding", "recon_error"):
        np.testing.assert_array_equal(got[v].values, res[v].values)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_explain_against_a_scheduler_started_by_the_dask_commands(cube_and_model, clean_run, workdir):
    """The path of users who outgrow one machine: `dask scheduler` + 2 `dask worker` processes."""
    from distributed import Client

    cube_path, model_dir = cube_and_model
    _, res = clean_run
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(Path(sys.executable).parent / "dask")
    procs = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [dask, "worker", address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            out = workdir / "remote.zarr"
            rep = _run(cube_path, model_dir, out, client)
            assert rep.blocks_computed == 9
            who = client.run(os.getpid)
            assert len(who) == 2
            # GPU placement: only a worker started with `--resources GPU=1` takes the tasks
            procs.append(
                subprocess.Popen(
                    [
                        dask,
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                        "--resources",
                        "GPU=1",
                        "--name",
                        "gpu-worker",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            client.wait_for_workers(3, timeout=60)
            gpu_addr = [a for a, w in client.scheduler_info()["workers"].items() if w.get("name") == "gpu-worker"]
            from distributed import get_task_stream

            with get_task_stream(client) as ts:
                _run(cube_path, model_dir, workdir / "gpu_only.zarr", client, gpu_resources=True)
            ours = [t for t in ts.data if any(k in str(t["key"]) for k in ("slamgeo-explain-write", "_reference_sum"))]
            assert any("_reference_sum" in str(t["key"]) for t in ours)  # the centred reference map too
            ran_on = {t["worker"] for t in ours}
            assert ran_on == set(gpu_addr), ran_on
        got = open_results(out).load()
        np.testing.assert_allclose(
            got["importance"].values, res["importance"].values, rtol=1e-5, atol=1e-6, equal_nan=True
        )
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
