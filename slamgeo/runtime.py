"""The Dask runtime: a LocalCluster of worker processes by default, or an existing scheduler.

Workers run one task at a time per thread, and each task's torch computation is given its
share of the cores (`torch_threads`), so that Dask threads times torch threads never exceeds
the machine. Distributed's nanny already starts workers with OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from distributed import Client, LocalCluster


@dataclass(frozen=True)
class ClusterOptions:
    """Where to run: `scheduler` (an address such as tcp://host:8786) or a LocalCluster."""

    scheduler: str | None = None
    n_workers: int | None = None  # LocalCluster: default one worker per core
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    dashboard: bool = True


def default_workers() -> int:
    """One single-threaded worker process per usable core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores)


@contextlib.contextmanager
def dask_client(opts: ClusterOptions | None = None, *, quiet: bool = False) -> Iterator[Client]:
    """A `distributed.Client`, closed (with its LocalCluster) on exit; prints the dashboard."""
    opts = opts or ClusterOptions()
    if opts.scheduler:
        client = Client(opts.scheduler)
        cluster = None
    else:
        cluster = LocalCluster(
            n_workers=opts.n_workers or default_workers(),
            threads_per_worker=opts.threads_per_worker,
            processes=True,
            memory_limit=opts.memory_limit,
            dashboard_address=":0" if opts.dashboard else None,
        )
        client = Client(cluster)
    try:
        if not quiet:
            where = opts.scheduler or f"LocalCluster, {len(client.scheduler_info()['workers'])} worker processes"
            link = client.dashboard_link if opts.dashboard or opts.scheduler else "off"
            print(f"dask: {where}; dashboard: {link}", flush=True)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def torch_threads_for_task() -> int:
    """Cores per running task on this worker: the worker's core share divided by its threads."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except ValueError:  # not on a distributed worker: use what torch has
        import torch

        return torch.get_num_threads()
    nthreads = max(1, worker.state.nthreads)
    cores = int(os.environ.get("SLAMGEO_CORES_PER_WORKER", nthreads))
    return max(1, cores // nthreads)


__all__ = ["ClusterOptions", "dask_client", "default_workers", "torch_threads_for_task"]
