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
A normal close stops the workers through their nannies, as before. Killed workers leave
numcodecs' Blosc lock (a named semaphore) to multiprocessing's resource tracker, which unlinks
it at exit; the tracker is started with its "leaked semaphore" warning ignored
(`_quiet_resource_tracker`), since that clean-up is the expected outcome.

An existing scheduler: its address is checked before anything starts
(`check_scheduler_address`); connecting is bounded by Dask's `distributed.comm.timeouts.connect`
(30 s by default), the handshake included (distributed bounds only the TCP connection, so a
port where another server listens would hold the client forever); then the run waits at most
`ClusterOptions.wait_for_workers` seconds for a worker (with the resource GPU when the tasks
need it). Each failure is a `ClusterError`: one line naming the address.

Noise: library warnings that a user can do nothing about are ignored (`quiet_library_warnings`,
set by the command line and in the workers of a LocalCluster started here), and those
workers do not log the "Compute Failed" report of a task whose error the driver raises itself.

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
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

from slamgeo.errors import ConfigError, SlamgeoError, one_line
from slamgeo.schema import WAIT_FOR_WORKERS

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

SCHEDULER_FORM = "tcp://HOST:PORT or tls://HOST:PORT (what `dask scheduler` prints; port 8786 by default)"
CONNECT_TIMEOUT_ENV = "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT"  # Dask's own setting, e.g. 120s


class ClusterError(SlamgeoError):
    """A Dask scheduler that does not answer, or that has no worker for the tasks."""


@dataclass(frozen=True)
class ClusterOptions:
    """Where to run: `scheduler` (an address such as tcp://host:8786) or a LocalCluster.

    `gpu_resources`: the run restricts explain's tasks to workers with the Dask resource GPU
    (`--resources GPU=1`). A LocalCluster then gives each of its workers GPU = its threads, so
    that each thread has a block in flight (its read, encoding and write beside the device's
    work; the worker's lock runs one torch call at a time): on one H200 a worker of 4 threads
    explained 1.8x the pixels per second of one block at a time. Each worker uses CUDA if it
    sees a device, else its CPU. An existing scheduler is asked how many of its workers have the
    resource, and the run waits for one as it does for any worker (below).

    `wait_for_workers`: seconds an existing scheduler is given, once connected, to have a worker
    (one with the resource GPU under `gpu_resources`); then `ClusterError`. 0: at once.
    `connect_timeout`: seconds to reach the scheduler and hear it answer (None: Dask's
    `distributed.comm.timeouts.connect`, 30 s unless set)."""

    scheduler: str | None = None
    n_workers: int | None = None  # LocalCluster: default one worker per core
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    dashboard: bool = True
    gpu_resources: bool = False
    wait_for_workers: float = WAIT_FOR_WORKERS
    connect_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.scheduler is not None:
            check_scheduler_address(self.scheduler)
        if self.n_workers is not None and self.n_workers < 1:
            raise ConfigError(f"n_workers must be 1 or more, found {self.n_workers}")
        if self.threads_per_worker < 1:
            raise ConfigError(f"threads_per_worker must be 1 or more, found {self.threads_per_worker}")
        if not self.wait_for_workers >= 0:  # NaN too
            raise ConfigError(f"wait_for_workers must be 0 seconds or more, found {self.wait_for_workers}")
        if self.connect_timeout is not None and not self.connect_timeout > 0:
            raise ConfigError(f"connect_timeout must be more than 0 seconds, found {self.connect_timeout}")


def check_scheduler_address(address: str, *, where: str = "scheduler") -> str:
    """`address` if a Dask client can connect to it: `SCHEME://HOST:PORT` with a scheme of
    distributed's comms (tcp, tls, ws, wss, ucx), or `HOST:PORT` (tcp); else `ConfigError`
    naming `where` (an option, a configuration key) and the expected form. Only the form is
    checked here, not whether a scheduler answers (`connect_client`)."""
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import backends

    problem = None
    text = str(address).strip()
    try:
        scheme, loc = parse_address(text)
    except ValueError as exc:
        scheme, loc, problem = "", "", str(exc)
    if problem is None and (scheme not in backends or scheme == "inproc"):
        problem = f"{scheme}:// is not a scheme of Dask's schedulers"
        if scheme in ("http", "https"):
            problem = f"{scheme}:// is the scheme of the scheduler's dashboard, not of the scheduler"
    if problem is None:
        try:
            host, port = parse_host_port(loc)
        except ValueError:
            host, port, problem = "", 0, "no port" if ":" not in loc.rsplit("]", 1)[-1] else "the port is not a number"
        if problem is None and not host:
            problem = "no host"
        elif problem is None and not 0 < int(port) < 65536:
            problem = f"port {port} is not in 1-65535"
    if problem is not None:
        what = f"{where} {address!r}" if where else repr(address)
        raise ConfigError(f"{what}: not a Dask scheduler address ({problem}); expected {SCHEDULER_FORM}")
    return address


def connect_timeout(opts: ClusterOptions) -> float:
    """Seconds to reach a scheduler: the options', else Dask's `distributed.comm.timeouts.connect`."""
    if opts.connect_timeout is not None:
        return float(opts.connect_timeout)
    import dask
    from dask.utils import parse_timedelta

    return float(parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="seconds") or 30.0)


def connect_client(address: str, *, timeout: float) -> Client:
    """A `distributed.Client` of the scheduler at `address`, or `ClusterError` within about
    `timeout` seconds: when nothing answers there, when what answers is not a Dask scheduler
    (an HTTP server, a worker), or when the connection fails. A version mismatch between this
    process and the cluster is one warning line on stderr."""
    from distributed import Client

    identity = _identify(address, timeout)
    kind = identity.get("type")
    if kind in ("Worker", "Nanny"):
        raise ClusterError(
            f"{address}: a Dask {kind.lower()} answers there, not a scheduler; give the scheduler's address, "
            f"{SCHEDULER_FORM}"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            client = Client(address, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"{address}: connecting to the Dask scheduler failed: {one_line(exc)}") from exc
    for w in caught:
        if type(w.message).__name__ == "VersionMismatchWarning":
            print(
                f"dask: warning: {address}: the scheduler or its workers run other versions of Python packages than "
                "this process (`client.get_versions(check=True)` lists them); install the same versions if tasks fail",
                file=sys.stderr,
                flush=True,
            )
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return client


def _identify(address: str, timeout: float) -> dict[str, Any]:
    """What answers at `address` (its `identity`: {"type": "Scheduler", ...}), within `timeout`
    seconds for the connection, its handshake and the answer, or `ClusterError`. Runs its own
    event loop in a helper thread, so that it works under a running loop (a notebook) too."""
    import asyncio

    from distributed.comm import connect
    from distributed.security import Security

    async def ask() -> dict[str, Any]:
        comm = await connect(address, timeout=timeout, **Security().get_connection_args("client"))
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    async def bounded() -> dict[str, Any]:
        return await asyncio.wait_for(ask(), timeout + 0.5)  # connect() gives up first on its own

    result: dict[str, Any] = {}

    def probe() -> None:
        try:
            result["identity"] = asyncio.run(bounded())
        except BaseException as exc:  # noqa: BLE001 - reported by the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=probe, name="slamgeo-scheduler-probe", daemon=True)
    thread.start()
    thread.join(timeout + 5.0)
    identity, exc = result.get("identity"), result.get("error")
    if isinstance(identity, dict) and identity.get("type"):
        return identity
    if isinstance(exc, OSError) and "Timed out trying to connect" in str(exc):  # no connection at all
        errno_text = re.search(r"\[Errno -?\d+\] ([^:)\]]+)", str(exc.__cause__ or ""))
        why = f" ({errno_text.group(1).strip().lower()})" if errno_text else ""
        raise ClusterError(
            f"{address}: nothing answered as a Dask scheduler within {timeout:g} s{why}; check that a scheduler "
            f"runs at that address (`dask scheduler` prints it), or wait longer with {CONNECT_TIMEOUT_ENV}=120s"
        )
    what = "nothing answered" if exc is None or isinstance(exc, TimeoutError) else f"its answer was {one_line(exc)}"
    raise ClusterError(
        f"{address}: something listens there, but not a Dask scheduler ({what} within {timeout:g} s); "
        "check the address: a scheduler's is what `dask scheduler` prints, port 8786 by default (8787 is its dashboard)"
    )


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

    An existing scheduler must answer within the connection timeout and have a worker for the
    tasks (one with the resource GPU under `gpu_resources`) within `opts.wait_for_workers`
    seconds; else `ClusterError`. Left through an interrupt, a LocalCluster is stopped at once:
    its workers are killed and the cluster closed with short timeouts, quietly; otherwise (an
    error too) it is closed cleanly, so that its workers release what they hold."""
    from distributed import Client, LocalCluster

    opts = opts or ClusterOptions()
    if opts.scheduler:
        client = connect_client(opts.scheduler, timeout=connect_timeout(opts))
        cluster = None
    else:
        _quiet_resource_tracker()
        with _ignored_by_children((signal.SIGINT, signal.SIGTERM)):
            cluster = LocalCluster(
                n_workers=opts.n_workers or default_workers(),
                threads_per_worker=opts.threads_per_worker,
                processes=True,
                memory_limit=opts.memory_limit,
                dashboard_address=":0" if opts.dashboard else None,
                resources={"GPU": opts.threads_per_worker} if opts.gpu_resources else None,
                preload=[__name__],  # `dask_setup` below, in each worker
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
        if opts.scheduler:
            wait_for_workers(client, opts.scheduler, gpu=opts.gpu_resources, timeout=opts.wait_for_workers)
        if opts.gpu_resources and not quiet:
            print(f"dask: {gpu_workers(client)} worker(s) with the resource GPU take explain's tasks", flush=True)
        yield client
    except (KeyboardInterrupt, Interrupted):
        _stop_now(client, cluster)
        raise
    except BaseException:  # an error: the workers are closed cleanly, releasing what they hold
        _close(client, cluster)
        raise
    _close(client, cluster)


def wait_for_workers(client: Client, address: str, *, gpu: bool = False, timeout: float = WAIT_FOR_WORKERS) -> int:
    """Wait until the scheduler at `address` has a worker (with `gpu`, one with the Dask
    resource GPU), at most `timeout` seconds, saying so once on stderr while it waits; returns
    how many such workers it has. `ClusterError` after `timeout`: no such worker joined (how
    many workers there are, and how to start one)."""
    what = "worker with the Dask resource GPU" if gpu else "worker"
    deadline = time.monotonic() + timeout
    said = False
    while True:
        workers = list(client.scheduler_info(n_workers=-1)["workers"].values())
        n_gpu = sum(1 for w in workers if (w.get("resources") or {}).get("GPU", 0) > 0)
        found = n_gpu if gpu else len(workers)
        if found:
            return found
        left = deadline - time.monotonic()
        if left <= 0:
            start = f"`dask worker {address}{' --resources GPU=1' if gpu else ''}`"
            has = f"{len(workers)} worker(s), none with GPU" if workers else "no worker"
            raise ClusterError(
                f"{address}: no {what} joined within {timeout:g} s (the scheduler has {has}); "
                f"start some with {start}, or wait longer with --wait-for-workers (dask.wait_for_workers)"
            )
        if not said:
            print(f"dask: waiting up to {timeout:g} s for a {what} to join {address}", file=sys.stderr, flush=True)
            said = True
        time.sleep(min(0.5, left))


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


# Library warnings a user of the command line can do nothing about: deprecation notices meant
# for slamgeo's developers, zarr's notes on Zarr 3 extensions (consolidated metadata, codecs),
# dask's and distributed's performance hints about graphs slamgeo builds. Matched by message
# where the category is a library's own, so that no library is imported to name it.
NOISY_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    ("", DeprecationWarning),
    ("", PendingDeprecationWarning),
    ("", FutureWarning),
    (r".*is currently not part in the Zarr format 3 specification", Warning),
    (r"Object at .* is not recognized as a component of a Zarr hierarchy", Warning),
    (r"Sending large graph of size", Warning),
    (r"Increasing number of chunks by factor of", Warning),
    (r"Slicing (is producing a large chunk|with an out-of-order index)", Warning),
    (r"Port \d+ is already in use", Warning),
)


def quiet_library_warnings() -> None:
    """Ignore `NOISY_WARNINGS` in this process (the command line's policy; also set in the
    workers of a LocalCluster started by `dask_client`). slamgeo's own warnings, and the
    libraries' other warnings, are still shown."""
    for message, category in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


class _DropComputeFailed(logging.Filter):
    """Drops distributed's "Compute Failed" report: the driver raises that task's error itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Compute Failed")


def dask_setup(worker: object) -> None:
    """Preload of the workers of a LocalCluster started by `dask_client` (distributed calls a
    preload module's `dask_setup` in each worker it starts, restarts included): they print to
    this terminal, so they ignore `NOISY_WARNINGS` and do not log "Compute Failed" reports."""
    quiet_library_warnings()
    worker_log = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _DropComputeFailed) for f in worker_log.filters):
        worker_log.addFilter(_DropComputeFailed())


_TRACKER_WARNING = "ignore:resource_tracker:UserWarning"


def _quiet_resource_tracker() -> None:
    """Start multiprocessing's resource tracker, if it is not running yet, with its warnings
    ignored. The tracker is the helper process that unlinks the named semaphores of processes
    that could not: a LocalCluster's worker killed on an interrupt leaves numcodecs' Blosc lock
    there, and at exit the tracker unlinks it and warns "There appear to be N leaked semaphore
    objects" on our stderr, after the run's own line; that clean-up is the expected outcome.
    The tracker takes its warning filters from its command line, built from `sys.warnoptions`,
    so the filter is put there for the moment it starts. A tracker already running is left
    as it is. POSIX only."""
    if sys.platform == "win32":
        return
    from multiprocessing import resource_tracker

    added = _TRACKER_WARNING not in sys.warnoptions
    if added:
        sys.warnoptions.append(_TRACKER_WARNING)
    try:
        resource_tracker.ensure_running()
    finally:
        if added:
            sys.warnoptions.remove(_TRACKER_WARNING)


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
    "NOISY_WARNINGS",
    "ClusterError",
    "ClusterOptions",
    "Interrupted",
    "check_scheduler_address",
    "connect_client",
    "current_client",
    "dask_client",
    "dask_setup",
    "default_workers",
    "gpu_workers",
    "interrupt_handlers",
    "quiet_library_warnings",
    "relax_malloc_trim",
    "torch_threads_for_task",
    "wait_for_workers",
]
