"""Shared fixtures: a real LocalCluster with worker processes and a real S3-compatible server.
Helpers that tests import (cubes, architectures, run-and-kill) are in helpers.py."""

from __future__ import annotations

import os

import pytest
from helpers import free_port


@pytest.fixture(scope="session")
def local_cluster():
    """A real `distributed.LocalCluster` with 2 single-threaded worker processes."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster, set_as_default=False) as client:
            yield client


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1, in its own process (`python -m moto.server`, as a real
    object store would be: GDAL's reads block while holding the GIL, so a server thread in
    this process could deadlock them), with a bucket `slamgeo-test`; yields an `s3fs`
    filesystem. The AWS_* variables set here point boto (s3fs) and GDAL at it, for this
    process, its subprocesses and the worker processes of a LocalCluster started afterwards;
    not for the workers of `local_cluster`, which may have started before."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=5)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"the moto S3 server did not start on {endpoint}") from None
            time.sleep(0.1)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir("slamgeo-test")
    try:
        yield fs
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        s3fs.S3FileSystem.clear_instance_cache()
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def default_cluster(local_cluster):
    """The LocalCluster as Dask's scheduler for the test (`dask.compute` runs there)."""
    import dask

    with dask.config.set(scheduler=local_cluster):
        yield local_cluster
