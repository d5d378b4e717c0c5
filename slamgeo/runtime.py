"""The Dask runtime: a LocalCluster of worker processes by default, or an existing scheduler.

A worker process serialises its torch calls (one model, one lock; see `slamgeo.explain`), so
the call holding the lock is given all the cores of the worker (`torch_threads_for_task`):
torch threads never exceed the machine, and a 1-worker x T-thread cluster still uses T cores.
Distributed's nanny starts workers with OMP_NUM_THREADS=1 and MALLOC_TRIM_THRESHOLD_=65536;
the latter makes glibc serve every allocation above 128 KiB with a fresh mmap, which halves
torch's speed; `relax_malloc_trim` undoes it once per worker process.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
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
    """Torch threads for the call holding this worker's model lock: the worker's cores
    (`SLAMGEO_CORES_PER_WORKER`, else its Dask thread count), since no other torch call of the
    process runs meanwhile. Outside a distributed worker: what torch has."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except ValueError:  # not on a distributed worker: use what torch has
        import torch

        return torch.get_num_threads()
    nthreads = max(1, worker.state.nthreads)
    return max(1, int(os.environ.get("SLAMGEO_CORES_PER_WORKER", nthreads)))


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's own ceiling for its dynamic mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX),
# and the trim threshold it pairs with it (twice the mmap threshold)
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 64 * 2**20


@functools.cache
def relax_malloc_trim() -> bool:
    """Undo a small `MALLOC_TRIM_THRESHOLD_` (distributed sets 65536 in its workers) for this
    process, once: set glibc's mmap and trim thresholds to the values its own dynamic
    adjustment reaches (32 MiB, 64 MiB), so torch's large temporaries are reused rather than
    mmap-ed and page-faulted afresh on every call. Returns whether the thresholds were set
    (False: not glibc, or no small threshold in the environment, where glibc already adapts).

    Done by hand with ctypes: no library exposes mallopt; an environment variable cannot
    help once the process has started (glibc reads it at start-up).
    """
    small = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    if not sys.platform.startswith("linux") or small is None or not small.isdigit() or int(small) >= TRIM_THRESHOLD:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl or another libc: nothing to undo
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


__all__ = ["ClusterOptions", "dask_client", "default_workers", "relax_malloc_trim", "torch_threads_for_task"]
