"""The Dask runtime: torch threads per worker, glibc's trim threshold in worker processes,
and the batch size of Grad-SLAM passes per device."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from slamgeo.jobs.explain import ExplainOptions, _batch_size
from slamgeo.jobs.runtime import relax_malloc_trim, torch_threads_for_task
from slamgeo.schema import GRADSLAM_BATCH_SIZE


def test_worker_processes_get_their_malloc_thresholds_relaxed(local_cluster):
    # distributed's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536; each worker undoes it
    env = local_cluster.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert set(env.values()) == {"65536"}
    assert set(local_cluster.run(relax_malloc_trim).values()) == {True}


@pytest.mark.parametrize(("value", "expected"), [(None, False), ("65536", True), (str(2**30), False)])
def test_malloc_thresholds_are_only_touched_when_the_environment_set_a_small_one(value, expected):
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    if value is not None:
        env["MALLOC_TRIM_THRESHOLD_"] = value
    code = "from slamgeo.jobs.runtime import relax_malloc_trim; print(relax_malloc_trim())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(expected and sys.platform.startswith("linux"))


def test_the_torch_call_holding_the_lock_gets_every_core_of_its_worker():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        assert client.submit(torch_threads_for_task, pure=False).result() == 2
        client.run(lambda: os.environ.update(SLAMGEO_CORES_PER_WORKER="3"))
        assert client.submit(torch_threads_for_task, pure=False).result() == 3
    assert torch_threads_for_task() == torch.get_num_threads()  # outside a worker


def test_grad_slam_batches_follow_the_options_on_a_gpu_only():
    opts = ExplainOptions(batch_size=8192)
    assert _batch_size(opts, torch.device("cuda")) == 8192
    assert _batch_size(opts, torch.device("cpu")) == GRADSLAM_BATCH_SIZE


def _gpu_task(queue: str, go: str) -> bool:
    """Say it started (on the distributed Queue `queue`), then wait for the Event `go`."""
    from distributed import Event, Queue

    Queue(queue).put(1)
    return Event(go).wait(60)


def test_a_local_gpu_worker_has_a_block_in_flight_per_thread():
    """Under `gpu_resources` a LocalCluster worker declares GPU = its threads, so as many
    GPU-annotated tasks (explain's blocks) run at once as it has threads: here all three have
    started before any may end."""
    import uuid

    from distributed import Event, Queue

    from slamgeo.jobs.runtime import ClusterOptions, dask_client

    opts = ClusterOptions(n_workers=1, threads_per_worker=3, gpu_resources=True, dashboard=False)
    with dask_client(opts, quiet=True) as client:
        (info,) = client.scheduler_info()["workers"].values()
        assert info["resources"] == {"GPU": 3}
        name = uuid.uuid4().hex
        started, go = Queue(f"started-{name}", client=client), Event(f"go-{name}", client=client)
        tasks = [client.submit(_gpu_task, started.name, go.name, resources={"GPU": 1}, pure=False) for _ in range(3)]
        try:
            assert [started.get(timeout=60) for _ in tasks] == [1, 1, 1]
        finally:
            go.set()
        assert client.gather(tasks) == [True, True, True]
