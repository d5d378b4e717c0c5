"""The Dask runtime: a LocalCluster of worker processes by default, or an existing scheduler.

A worker process serialises its torch calls (one model, one lock; see `slamgeo.jobs.explain`), so
the call holding the lock is given all the cores of the worker (`torch_threads_for_task`):
torch threads never exceed the machine, and a 1-worker x T-thread cluster still uses T cores.
Distributed's nanny starts workers with OMP_NUM_THREADS=1 and MALLOC_TRIM_THRESHOLD_=65536;
the latter makes glibc serve every allocation above 128 KiB with a fresh mmap, which halves
torch's speed; `relax_malloc_trim` undoes it once per worker process.

Interrupts: `interrupt_handlers` turns SIGINT and SIGTERM into `Interrupted` in the main
thread for the duration of a run. The worker processes of a LocalCluster started here ignore
both (a Ctrl-C reaches the whole process group): the driver decides, and when it leaves
`dask_client` through an exception it kills the workers and closes the cluster with short
timeouts, with logging silenced, so nothing but the driver's own message reaches the terminal.
A normal close stops the workers through their nannies, as before.

Progress: `progress_bar` is the one progress display of a step (explain's blocks, training's
epochs): a tqdm bar on a terminal or in a notebook; when the stream is not a terminal (a batch
job's log file, a pipe), a plain line such as "explain: 12/40 blocks (30%), 45 s" when the step
starts, at most every `SLAMGEO_PROGRESS_INTERVAL` seconds (30 by default) and when it ends,
instead of hundreds of carriage-return redraws.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from distributed import Client, LocalCluster


@dataclass(frozen=True)
class ClusterOptions:
    """Where to run: `scheduler` (an address such as tcp://host:8786) or a LocalCluster.

    `gpu_resources`: the run restricts explain's tasks to workers with the Dask resource GPU
    (`--resources GPU=1`). A LocalCluster then gives each of its workers GPU=1 (each worker
    uses CUDA if it sees a device, else its CPU); an existing scheduler is asked how many of its
    workers have the resource, and a warning is printed when none has it yet (the tasks wait)."""

    scheduler: str | None = None
    n_workers: int | None = None  # LocalCluster: default one worker per core
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    dashboard: bool = True
    gpu_resources: bool = False


def default_workers() -> int:
    """One single-threaded worker process per usable core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores)


@contextlib.contextmanager
def dask_client(opts: ClusterOptions | None = None, *, quiet: bool = False) -> Iterator[Client]:
    """A `distributed.Client`, closed (with its LocalCluster) on exit; prints the dashboard.

    Left through an interrupt, a LocalCluster is stopped at once: its workers are killed and
    the cluster closed with short timeouts, quietly; otherwise (an error too) it is closed
    cleanly, so that its workers release what they hold."""
    from distributed import Client, LocalCluster

    opts = opts or ClusterOptions()
    if opts.scheduler:
        client = Client(opts.scheduler)
        cluster = None
    else:
        with _ignored_by_children((signal.SIGINT, signal.SIGTERM)):
            cluster = LocalCluster(
                n_workers=opts.n_workers or default_workers(),
                threads_per_worker=opts.threads_per_worker,
                processes=True,
                memory_limit=opts.memory_limit,
                dashboard_address=":0" if opts.dashboard else None,
                resources={"GPU": 1} if opts.gpu_resources else None,
            )
        try:
            client = Client(cluster)
        except BaseException:
            _stop_now(None, cluster)
            raise
    try:
        if not quiet:
            where = opts.scheduler or f"LocalCluster, {len(client.scheduler_info()['workers'])} worker processes"
            link = client.dashboard_link if opts.dashboard or opts.scheduler else "off"
            print(f"dask: {where}; dashboard: {link}", flush=True)  # once per client, so once per run
        if opts.gpu_resources:
            n_gpu = gpu_workers(client)
            if not quiet:
                print(f"dask: {n_gpu} worker(s) with the resource GPU take explain's tasks", flush=True)
            if n_gpu == 0:
                print(
                    "dask: warning: no worker has the resource GPU yet; explain's tasks wait for workers "
                    "started with `--resources GPU=1`",
                    file=sys.stderr,
                    flush=True,
                )
        yield client
    except (KeyboardInterrupt, Interrupted):
        _stop_now(client, cluster)
        raise
    except BaseException:  # an error: the workers are closed cleanly, releasing what they hold
        _close(client, cluster)
        raise
    _close(client, cluster)


def current_client() -> Client | None:
    """The distributed client Dask computes on here (the default one, or one set with
    `dask.config.set(scheduler=client)`), or None under a local scheduler. Lets a job send large
    constants to the workers once (`client.scatter`) instead of inside its task graph."""
    from dask.base import get_scheduler
    from distributed import Client

    owner = getattr(get_scheduler(), "__self__", None)
    return owner if isinstance(owner, Client) else None


def gpu_workers(client: Client) -> int:
    """How many of the scheduler's workers now have the Dask resource GPU."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return sum(1 for w in workers if (w.get("resources") or {}).get("GPU", 0) > 0)


def _close(client: Client, cluster: LocalCluster | None) -> None:
    client.close()
    if cluster is not None:
        cluster.close()


CLOSE_TIMEOUT = 5.0  # seconds for a cluster stopped by an interrupt or a failure to close


@contextlib.contextmanager
def _ignored_by_children(signals: tuple[int, ...]) -> Iterator[None]:
    """`signals` ignored while worker processes are started, so that they inherit the ignored
    disposition (for SIGINT, Python then installs no KeyboardInterrupt handler in them): a
    Ctrl-C or a SIGTERM sent to the process group is left to the driver, which stops them.
    The driver itself ignores them for that time (about a second). Main thread only;
    elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """No log records at all for the duration (distributed's warnings about workers that
    disappear while a cluster is torn down); the previous setting is restored."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


def _stop_now(client: Client | None, cluster: LocalCluster | None) -> None:
    """Stop a run's cluster without waiting for its work: kill a LocalCluster's worker
    processes, then close the client and the cluster with short timeouts, quietly."""
    with _quiet_logging(), contextlib.suppress(Exception):
        if cluster is not None:
            for nanny in list(cluster.workers.values()):
                pid = getattr(getattr(nanny, "process", None), "pid", None)
                if pid:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=CLOSE_TIMEOUT)
        if cluster is not None:
            cluster.close(timeout=CLOSE_TIMEOUT)


class Interrupted(BaseException):
    """The run was stopped by a signal (SIGINT, SIGTERM), raised in the main thread by the
    handlers of `interrupt_handlers`. A BaseException, like KeyboardInterrupt, so that
    `except Exception` clauses let it through."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def signal_name(self) -> str:
        """SIGINT, SIGTERM, ..."""
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by this signal: 128 + its number."""
        return 128 + self.signum

    def __str__(self) -> str:
        return f"interrupted by {self.signal_name}"


@contextlib.contextmanager
def interrupt_handlers(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """While active, each of `signals` raises `Interrupted` in the main thread; the previous
    handlers are restored on exit. Main thread only; elsewhere a no-op.

    Python cannot propagate an exception out of a gc callback (distributed's GC diagnosis
    runs one in this process) or a `__del__`: it prints "Exception ignored in ..." and goes on.
    So a signal that comes while a gc callback runs is handled again shortly after, and an
    `Interrupted` swallowed elsewhere is raised again, without the report. A second signal
    while the first is being handled (the run closing its cluster, writing its state) ends the
    process at once: its child processes are killed, exit code 128 + signal number.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    unwinding = False  # an Interrupted has been raised and has not been swallowed
    active = True
    timers: list[threading.Timer] = []
    main_thread = cast(int, threading.main_thread().ident)  # the main thread has started

    def again_soon(signum: int) -> None:
        """The same signal again in 10 ms, to the main thread (a real signal, so that a
        blocking wait there is interrupted), from a helper thread: the main thread is in a
        callback that would swallow the exception."""

        def send() -> None:
            if active:
                signal.pthread_kill(main_thread, signum)

        timer = threading.Timer(0.01, send)
        timer.daemon = True
        timers.append(timer)
        timer.start()

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal unwinding
        if _in_gc_callback(frame):
            again_soon(signum)
            return
        if unwinding:
            _exit_now(signum)
        unwinding = True
        raise Interrupted(signum)

    previous_hook = sys.unraisablehook

    def unraisable(report: sys.UnraisableHookArgs) -> None:
        nonlocal unwinding
        exc = getattr(report, "exc_value", None)
        if isinstance(exc, Interrupted):
            unwinding = False
            again_soon(exc.signum)
            return
        previous_hook(report)

    previous = {s: signal.signal(s, handler) for s in signals}
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        active = False
        for timer in timers:
            timer.cancel()
        for s, h in previous.items():
            signal.signal(s, h)
        if sys.unraisablehook is unraisable:
            sys.unraisablehook = previous_hook


def _in_gc_callback(frame: FrameType | None) -> bool:
    """True when `frame` runs in (or below) one of the garbage collector's callbacks."""
    codes = {getattr(getattr(cb, "__func__", cb), "__code__", None) for cb in gc.callbacks} - {None}
    while frame is not None and codes:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def _exit_now(signum: int) -> None:
    """End the process at once (a second interrupt): kill the child processes, exit 128 + signum."""
    for child in multiprocessing.active_children():
        with contextlib.suppress(OSError):
            os.kill(cast(int, child.pid), signal.SIGKILL)  # active children have started
    sys.stderr.flush()
    os._exit(128 + signum)


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
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


__all__ = [
    "ClusterOptions",
    "Interrupted",
    "current_client",
    "dask_client",
    "default_workers",
    "gpu_workers",
    "interrupt_handlers",
    "relax_malloc_trim",
    "torch_threads_for_task",
]
