"""Object storage: explain reads a cube from and writes results to a real S3-compatible server
(moto in server mode, on loopback; the `s3` fixture of conftest.py), including resume after an
interruption."""

from __future__ import annotations

import os

import dask
import numpy as np
import pytest
from helpers import SMALL_ARCH, class_cube, run_and_kill

from slamgeo.jobs.explain import explain_store, open_results

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def s3_cube_and_model(s3, tmp_path_factory):
    from slamgeo.method.train import train

    tmp = tmp_path_factory.mktemp("s3")
    local_threads = dask.config.set(scheduler="threads")  # workers started elsewhere lack the AWS_* settings
    local_threads.__enter__()
    cube, _ = class_cube(ny=16, nx=16, n_times=12, chunk=8, nodata_rows=2)
    cube.to_zarr("s3://slamgeo-test/cube.zarr", zarr_format=2, mode="w")
    train(cube, out_dir=tmp / "model", sample_size=200, max_epochs=2, batch_size=64, arch=SMALL_ARCH, progress=False)
    local = tmp / "local.zarr"
    explain_store("s3://slamgeo-test/cube.zarr", tmp / "model", local, client=None, progress=False)
    yield tmp, open_results(local).load()
    local_threads.__exit__(None, None, None)


def test_explain_round_trip_through_s3(s3, s3_cube_and_model):
    from distributed import Client, LocalCluster

    tmp, want = s3_cube_and_model
    out = "s3://slamgeo-test/results.zarr"
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        rep = explain_store("s3://slamgeo-test/cube.zarr", tmp / "model", out, client=client, progress=False)
    assert rep.blocks_computed == 4
    got = open_results(out).load()
    assert s3.exists("slamgeo-test/results.zarr/importance")
    for v in ("importance", "embedding", "recon_error"):
        np.testing.assert_array_equal(got[v].values, want[v].values)


EXPLAIN_ARGV = "ex.explain_store(sys.argv[1], sys.argv[2], sys.argv[3], client=None, progress=False)\n"


def test_resume_on_s3_after_the_process_is_killed(s3, s3_cube_and_model):
    tmp, want = s3_cube_and_model
    out = "s3://slamgeo-test/killed.zarr"
    env = dict(os.environ, DASK_SCHEDULER="single-threaded")
    done = run_and_kill(
        EXPLAIN_ARGV,
        ["s3://slamgeo-test/cube.zarr", tmp / "model", out],
        store=out,
        at_least=1,
        tmp=tmp,
        env=env,
        timeout=120,
    )
    missing = 4 - done
    assert 0 < missing < 4
    rep = explain_store("s3://slamgeo-test/cube.zarr", tmp / "model", out, client=None, progress=False)
    assert rep.blocks_computed == missing
    got = open_results(out).load()
    for v in ("importance", "embedding", "recon_error"):
        np.testing.assert_array_equal(got[v].values, want[v].values)
