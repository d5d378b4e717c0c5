"""Interrupts: SIGINT and SIGTERM stop `slamgeo run` within seconds with exit code 130 or 143,
the step is recorded as interrupted, no worker noise reaches the terminal (nor multiprocessing's
"leaked semaphore" warning: the run's line is the last), and running again resumes to the same
results as an uninterrupted run."""

from __future__ import annotations

import gc
import glob
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from helpers import blocks_done

from slamgeo.jobs.runtime import Interrupted, interrupt_handlers

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals and /proc"),
]

# Small, but with a training step of several seconds and an explain step of many blocks, so
# that a signal sent when a step says it is running reaches it while it runs.
CONFIG = {
    "season": {"name": "2017"},
    "output": "out",  # relative: resolved against the configuration file's folder
    "input": {"kind": "synthetic", "synthetic": {"size": 96, "n_dates": 16, "seed": 3}},
    "chunk": 16,
    "dask": {"n_workers": 2},
    "model": {"train": {"sample_size": 2000, "max_epochs": 6, "patience": 6, "batch_size": 64, "threads": 1}},
    "kmeans": {"k": 4, "sample_size": 1000},
    "report": {"enabled": False},
}
STOP_WITHIN = 10.0  # seconds from the signal to the end of the process
STEP_TIMEOUT = 300.0  # generous: the test machine may be busy
RESULT_VARIABLES = ("embedding", "importance", "recon_error", "cluster")


def _config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "season.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


class _Run:
    """`slamgeo run CONFIG` in its own session (process group), its stdout read line by line."""

    def __init__(self, config: Path, cwd: Path):
        self.stderr_path = cwd / f"stderr-{time.monotonic_ns()}.txt"
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "slamgeo", "run", str(config)],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, text: str, timeout: float = STEP_TIMEOUT) -> None:
        """Wait until a line of stdout contains `text`; fails if the run ends first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"the run ended before {text!r}:\n" + "\n".join(self.lines) + self.stderr())
            self.lines.append(line)
            if text in line:
                return
        pytest.fail(f"no {text!r} within {timeout} s:\n" + "\n".join(self.lines))

    def wait_until(self, condition: Callable[[], bool], timeout: float = STEP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if condition():
                return
            time.sleep(0.05)
        pytest.fail("the run ended, or took too long, before the condition held")

    def signal(self, signum: int, *, group: bool) -> float:
        """Send `signum` to the run's process group or to its main process; the time sent."""
        (os.killpg if group else os.kill)(self.proc.pid, signum)
        return time.monotonic()

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._stderr.close()
        return rc

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def close(self) -> None:
        """Nothing is left behind: the whole process group is killed."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=60)
        self._stderr.close()


def _alive_in_group(pgid: int) -> list[int]:
    """Processes of the group `pgid` that are still running (zombies excepted)."""
    alive = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(Path(stat).parent.name))
    return alive


def _interrupt(run: _Run, signum: int, *, group: bool) -> None:
    """Send the signal; the run must end within seconds, with 128 + signum, quietly, and
    leave no process behind."""
    sent = run.signal(signum, group=group)
    try:
        rc = run.wait(timeout=STOP_WITHIN + 20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the run did not stop within {STOP_WITHIN + 20} s of {signal.Signals(signum).name}")
    took = time.monotonic() - sent
    err = run.stderr()
    assert rc == 128 + signum, (rc, err[-3000:])
    assert took < STOP_WITHIN, f"stopped {took:.1f} s after the signal"
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    assert f"interrupted by {signal.Signals(signum).name}" in err
    deadline = time.monotonic() + 10
    while _alive_in_group(run.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive_in_group(run.proc.pid), "worker processes outlived the run"
    # multiprocessing's resource tracker (in the group too, now gone) wrote what it had to say:
    # the semaphores of the killed workers are cleaned up without a warning after our line
    err = run.stderr()
    assert "resource_tracker" not in err and "leaked" not in err, err[-3000:]
    assert err.rstrip().splitlines()[-1] == f"slamgeo: interrupted by {signal.Signals(signum).name}", err[-3000:]


def _last_manifest(season: Path) -> dict:
    return json.loads(sorted((season / "manifests").glob("run-*.json"))[-1].read_text())


def _statuses(season: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Step -> status in the newest manifest, and in the state file."""
    manifest = {s["name"]: s["status"] for s in _last_manifest(season)["steps"]}
    state = json.loads((season / "pipeline_state.json").read_text())["steps"]
    return manifest, {k: v["status"] for k, v in state.items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The results of an uninterrupted run."""
    tmp = tmp_path_factory.mktemp("reference")
    proc = subprocess.run(
        [sys.executable, "-m", "slamgeo", "run", str(_config(tmp / "config"))],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT * 2,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return tmp / "config" / "out" / "2017" / "results.zarr"


def test_interrupted_runs_stop_quickly_and_resume_to_the_same_results(tmp_path, reference):
    config = _config(tmp_path / "config")
    season = tmp_path / "config" / "out" / "2017"  # `output: out` is next to the configuration

    # (a) Ctrl-C as a terminal sends it: SIGINT to the whole process group, during training
    run = _Run(config, tmp_path)
    try:
        run.wait_for_line("[train] running")
        _interrupt(run, signal.SIGINT, group=True)
    finally:
        run.close()
    manifest, state = _statuses(season)
    assert manifest["ingest"] == "done" and manifest["train"] == "interrupted", manifest
    assert all(manifest[s] == "not run" for s in ("align", "explain", "cluster", "parcels", "report")), manifest
    assert state["train"] == "interrupted" and state["ingest"] == "done", state

    # (b) SIGTERM to the main process alone, during explain, once some blocks are written
    store = season / "results.zarr"
    run = _Run(config, tmp_path)
    try:
        run.wait_for_line("[ingest] up to date, skipped")
        run.wait_for_line("[explain] running")
        run.wait_until(lambda: blocks_done(store) >= 1)
        _interrupt(run, signal.SIGTERM, group=False)
    finally:
        run.close()
    manifest, state = _statuses(season)
    assert manifest["train"] == "done" and manifest["explain"] == "interrupted", manifest
    assert state["explain"] == "interrupted", state
    assert 1 <= blocks_done(store) < 36
    # a kill inside zarr's atomic write of a chunk leaves its partial file (when the signal
    # lands there): made certain here, it must not stop the resume
    (store / "embedding" / f"0.5.{uuid.uuid4().hex}.partial").write_bytes(b"half a chunk")

    # running again resumes: the steps done are skipped, explain keeps the blocks it wrote
    proc = subprocess.run(
        [sys.executable, "-m", "slamgeo", "run", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT * 2,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    steps = {s["name"]: s for s in _last_manifest(season)["steps"]}
    assert [steps[s]["status"] for s in ("ingest", "train", "align")] == ["skipped"] * 3
    assert steps["explain"]["status"] == "done" and steps["explain"]["info"]["blocks_resumed_from_disk"] >= 1
    got, want = zarr.open_group(str(store), mode="r"), zarr.open_group(str(reference), mode="r")
    for name in RESULT_VARIABLES:
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(want[name]), err_msg=name)


# ----------------------------------------------------------------------------- in process


def test_sigterm_raises_interrupted_and_the_handlers_are_restored():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(Interrupted) as info:
        with interrupt_handlers():
            signal.raise_signal(signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert info.value.signum == signal.SIGTERM and info.value.exit_code == 143
    assert str(info.value) == "interrupted by SIGTERM"
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_signal_during_a_gc_callback_is_not_swallowed():
    """Python drops an exception raised in a gc callback (distributed's GC diagnosis runs one
    in the driver): the interrupt must come once the callback is done, and the callback must
    run to its end."""
    finished = []

    def callback(phase: str, info: dict) -> None:
        if phase == "start" and not finished:
            signal.raise_signal(signal.SIGINT)
            sum(range(10_000))  # Python code after the signal: where the handler runs
            finished.append(True)

    reports = []
    hook, sys.unraisablehook = sys.unraisablehook, reports.append
    try:
        with pytest.raises(Interrupted) as info:
            with interrupt_handlers():
                gc.callbacks.append(callback)  # once the handlers are there
                gc.collect()
                time.sleep(5)  # the interrupt comes before this ends
    finally:
        if callback in gc.callbacks:
            gc.callbacks.remove(callback)
        sys.unraisablehook = hook
    assert info.value.signum == signal.SIGINT and finished == [True]
    assert not reports


def test_an_interrupt_swallowed_by_a_finaliser_is_raised_again():
    class Finalised:
        def __del__(self) -> None:
            signal.raise_signal(signal.SIGTERM)
            sum(range(10_000))  # the Interrupted is raised here, and Python reports and drops it

    reports = []
    hook, sys.unraisablehook = sys.unraisablehook, reports.append
    try:
        with pytest.raises(Interrupted):
            with interrupt_handlers():
                obj = Finalised()
                del obj
                time.sleep(5)  # raised again before this ends
    finally:
        sys.unraisablehook = hook
    assert not reports


def test_run_help_says_relative_output_is_resolved_against_the_configuration_folder():
    from typer.testing import CliRunner

    from slamgeo.cli import app

    out = CliRunner().invoke(app, ["run", "--help"], terminal_width=200).output
    assert "resolved against the configuration file's folder" in " ".join(out.split())
