"""Helpers shared by the tests (imported as `from helpers import ...`; pytest's rootdir
insertion puts tests/ on sys.path): small cubes and model architectures, pipeline-summary
helpers, and running an explain script in a subprocess that is killed half-way. The fixtures
are in conftest.py."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def class_cube(
    *,
    ny: int = 24,
    nx: int = 20,
    n_times: int = 16,
    chunk: int = 8,
    seed: int = 0,
    nodata_rows: int = 3,
):
    """A small gridded cube of 3 classes in vertical stripes with distinct VV/VH profiles
    (dB), noise, and `nodata_rows` all-NaN rows at the top (a no-data border)."""
    from slamgeo.io.cube import make_cube

    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n_times)
    profiles = np.stack(
        [
            np.stack([-12 + 3 * np.sin(2 * np.pi * t), -20 + 4 * np.sin(2 * np.pi * t)]),
            np.stack([-10 - 4 * t, -18 - 5 * t]),
            np.stack([-14 + 5 * np.exp(-((t - 0.5) ** 2) / 0.01), -22 + 7 * np.exp(-((t - 0.5) ** 2) / 0.01)]),
        ]
    )  # (3 classes, 2 bands, T)
    cls = (np.arange(nx)[None, :] * 3 // nx).repeat(ny, 0)  # (ny, nx)
    data = profiles[cls]  # (ny, nx, 2, T)
    data = data + rng.normal(0, 0.7, data.shape)
    data[:nodata_rows] = np.nan
    data = data.transpose(2, 3, 0, 1).astype(np.float32)  # (2, T, ny, nx)
    time = pd.date_range("2017-01-03", periods=n_times, freq="6D")
    y = 4_140_000 - 10 * np.arange(ny) - 5.0
    x = 230_000 + 10 * np.arange(nx) + 5.0
    cube = make_cube({"VV": data[0], "VH": data[1]}, time, y=y, x=x, crs=32630, chunk=chunk)
    return cube, cls


def step_status(summary) -> dict[str, str]:
    """Step name -> status of a pipeline run's summary."""
    return {s.name: s.status for s in summary.steps}


SMALL_ARCH = {"channels": [8, 16, 16], "kernels": [5, 3, 3], "hidden": [16, 8]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# A preamble for scripts run in a subprocess: every explain block sleeps first, so that a test
# can kill the run half-way.
SLOW_BLOCKS = """
import sys, time
import slamgeo.jobs.explain as ex
_real = ex._explain_block_arrays
def _slow(*a, **k):
    time.sleep(0.5)
    return _real(*a, **k)
ex._explain_block_arrays = _slow
"""


def blocks_done(store) -> int:
    """How many blocks an explain run has ticked in `store` (0 before the store exists)."""
    import zarr

    try:
        return int(np.asarray(zarr.open_array(str(store), path="block_done", mode="r")[...]).sum())
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def run_and_kill(script: str, args, *, store, at_least: int, tmp: Path, env=None, timeout: float = 300) -> int:
    """Run `SLOW_BLOCKS + script` with `args` in a subprocess, SIGKILL it once `store` has
    `at_least` blocks done, and return the count then. Fails if the run ends by itself."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path = tmp / "killed_run.py"
    path.write_text(SLOW_BLOCKS + script)
    proc = subprocess.Popen([sys.executable, str(path), *map(str, args)], env=env or dict(os.environ))
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if blocks_done(store) >= at_least:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return blocks_done(store)


# --- the known-answer data of the Grad-SLAM tests ------------------------------------------

T_WIN, W0, W1 = 36, 15, 20  # 3 classes, identical except within dates 15..19
AMPLITUDES = (-1.5, 0.0, 1.5)


def window_classes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(n, 2, 36)` standardised-like series (torch) and their class `(n,)`: one smooth profile per band
    plus N(0, 0.15) noise; class c adds AMPLITUDES[c] times a Hann bump on dates W0..W1-1 only."""
    import torch  # here: most tests that use the helpers need no torch

    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, T_WIN)
    base = torch.stack([torch.sin(2 * np.pi * t), 0.7 * torch.cos(2 * np.pi * t) - 0.3])
    y = torch.arange(n) % len(AMPLITUDES)
    bump = torch.zeros(T_WIN)
    bump[W0:W1] = torch.hann_window(W1 - W0 + 2, periodic=False)[1:-1]
    x = base.expand(n, 2, T_WIN).clone()
    x += torch.tensor(AMPLITUDES)[y][:, None, None] * bump * torch.tensor([1.0, 0.6])[:, None]
    x += 0.15 * torch.randn(n, 2, T_WIN, generator=g)
    return x, y


def window_share(imp: torch.Tensor) -> torch.Tensor:
    """Per pixel: the share of sum_t |importance| that falls on the window's dates."""
    w = imp.abs()
    return w[..., W0:W1].sum(-1) / w.sum(-1)


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process group (a worker's nanny and its worker process), newest first; then
    SIGKILL what is still there after 20 s."""
    for p in procs[::-1]:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


@contextlib.contextmanager
def dask_processes(logs: Path, *, gpu_workers: int = 2, cpu_workers: int = 1) -> Iterator[str]:
    """A `dask scheduler` on loopback, `gpu_workers` `dask worker --resources GPU=1` (CPU only
    here: torch picks the CPU at run time) and `cpu_workers` workers without the resource, each
    one process with one thread, in process groups of their own; yields the scheduler's address.
    Logs go to `logs/`."""
    logs.mkdir(parents=True, exist_ok=True)
    dask = str(Path(sys.executable).parent / "dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []

    def start(name: str, args: list[str]) -> None:
        with open(logs / f"{name}.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [dask, *args],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )

    try:
        start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"])
        worker = ["worker", address, "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1", "--no-dashboard"]
        worker += ["--local-directory", str(logs / "workers")]
        for i in range(gpu_workers):
            start(f"gpu-{i}", [*worker, "--resources", "GPU=1", "--name", f"gpu-{i}"])
        for i in range(cpu_workers):
            start(f"cpu-{i}", [*worker, "--name", f"cpu-{i}"])
        yield address
    finally:
        _stop(procs)
