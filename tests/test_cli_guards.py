"""The command line checks every option before any work starts, and no wait is unbounded.

Through the CLI as a user runs it (a subprocess, or the same entry point in this process):
- a bad option value (a Zarr format, a Grad-SLAM scaling, encoder layers the model does not
  have, a scheduler address that is not one) ends with one `error:` line naming the option,
  exit code 1, no traceback, before a cluster starts and before any output is created;
- connecting to a scheduler gives up after Dask's connect timeout, whether nothing listens on
  the port or another server (HTTP) does, naming the address;
- a scheduler without a worker for the tasks (none at all, or none with the resource GPU) is
  given `--wait-for-workers` seconds (`dask.wait_for_workers`), then one line says so;
- library warnings a user can do nothing about do not reach the terminal, the others are one
  line each; the workers of a LocalCluster do not print the "Compute Failed" report of an
  error that the driver raises itself.

The inputs (a 32 x 32 synthetic scene with 8 dates, its cube, a one-epoch model) and a
LocalCluster without GPU resources are built once for the module.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hostile_helpers import Result, assert_one_line_error, damage, describe_damage, slamgeo, slamgeo_here, snapshot

pytestmark = pytest.mark.timeout(300)

SYNTH = ["--size", "32", "--n-dates", "8", "--seed", "1"]
TRAIN = ["--epochs", "1", "--sample-size", "300", "--batch-size", "64", "--threads", "1", "--no-progress"]
CONNECT_TIMEOUT = 3.0  # seconds: DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT in these tests
WAIT = 2.0  # seconds: --wait-for-workers in these tests
MARGIN_HERE = 8.0  # seconds beyond a bound, for a command run in this process (a busy machine)
MARGIN_PROCESS = 25.0  # the same for a new interpreter, which imports torch, dask, xarray first
ADDRESS_FORM = r"expected tcp://HOST:PORT"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """proj/ with scene/, cube.zarr and model/ (one epoch), and the user's notes."""
    proj = tmp_path_factory.mktemp("guards") / "proj"
    proj.mkdir()
    for args in (
        ["synth", proj / "scene", *SYNTH],
        ["ingest", proj / "scene" / "tiffs", "--out", proj / "cube.zarr", "--chunk", "16", "--no-progress"],
        ["train", proj / "cube.zarr", "--out", proj / "model", *TRAIN],
    ):
        res = slamgeo_here(*args, cwd=proj)
        assert res.rc == 0, f"preparing the project failed\n{res}"
    (proj / "notes.txt").write_text("field visit 2017-06-02\n")
    return proj


@pytest.fixture(scope="module")
def cpu_cluster() -> Iterator[str]:
    """A LocalCluster of one worker process without the resource GPU; yields its address."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def empty_scheduler() -> Iterator[str]:
    """A LocalCluster with a scheduler and no worker; yields its address."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def http_server() -> Iterator[str]:
    """A real HTTP server on loopback (what listens on a dashboard port); yields tcp://127.0.0.1:PORT."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # noqa: ANN002 - no access log in the test output
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def connect_timeout(seconds: float) -> Iterator[dict[str, str]]:
    """Dask's connect timeout, in this process (dask.config) and for a subprocess (its env)."""
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": f"{seconds}s"}):
        yield {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": f"{seconds}s"}


def _timed(run) -> tuple[Result, float]:
    t0 = time.monotonic()
    res = run()
    return res, time.monotonic() - t0


def _assert_untouched(before: dict[str, str], root: Path, res: Result, *absent: Path) -> None:
    problems = damage(before, snapshot(root))
    assert not problems, f"{describe_damage(problems)}\n{res}"
    for path in absent:
        assert not path.exists(), f"{path} was created\n{res}"


def _season_config(path: Path, proj: Path, *, dask: dict) -> Path:
    """A season on the project's cube, reusing its model (no training), report off."""
    raw = {
        "season": {"name": "2017"},
        "output": str(path.parent / "out"),
        "input": {"kind": "cube", "paths": [str(proj / "cube.zarr")]},
        "chunk": 16,
        "dask": dask,
        "model": {"checkpoint": str(proj / "model")},
        "kmeans": {"k": 2, "sample_size": 100},
        "report": {"enabled": False},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


# --------------------------------------------------------------------------- options


EXPLAIN_OPTION_CASES = {
    # option values, what the line names, what it says
    "zarr-format": (["--zarr-format", "4"], "--zarr-format", r"expected one of 2, 3"),
    "scale": (["--scale", "foo"], "--scale", r"'foo'.*minmax"),
    "layers": (["--layers", "nope"], "--layers", r"no block nope .* has block1"),
    "layers-empty": (["--layers", ","], "--layers", r"no block name"),
    "importance-dtype": (["--importance-dtype", "int8"], "--importance-dtype", r"float32, float16"),
    "batch-size": (["--batch-size", "0"], "--batch-size", r"1 or more"),
    "workers": (["--workers", "0"], "--workers", r"1 or more"),
    "threads": (["--threads", "0"], "--threads", r"1 or more"),
    "wait-for-workers": (["--wait-for-workers", "-1"], "--wait-for-workers", r"0 or more"),
    "scheduler": (
        ["--scheduler", "notaurl"],
        "--scheduler",
        rf"not a Dask scheduler address \(no port\); {ADDRESS_FORM}",
    ),
    "scheduler-dashboard": (["--scheduler", "http://127.0.0.1:8787"], "--scheduler", r"dashboard"),
    "scheduler-port": (["--scheduler", "tcp://127.0.0.1:99999"], "--scheduler", r"port 99999"),
}
# the cases users met, run as a user does (a new process: worker output would show there too)
IN_A_PROCESS = {"zarr-format", "scale", "layers"}


@pytest.mark.parametrize("case", list(EXPLAIN_OPTION_CASES))
def test_explain_options_are_checked_before_any_work(project, tmp_path, case):
    args, option, cause = EXPLAIN_OPTION_CASES[case]
    out = tmp_path / "results.zarr"
    cmd = ["explain", project / "cube.zarr", project / "model", "--out", out, "--no-progress", *args]
    before = snapshot(project)
    res = slamgeo(*cmd, cwd=tmp_path, timeout=120) if case in IN_A_PROCESS else slamgeo_here(*cmd, cwd=tmp_path)
    line = assert_one_line_error(res, [option], cause)
    assert res.rc == 1, str(res)
    assert line.startswith(f"error: {option}"), line
    assert "dask:" not in res.output, f"a cluster started before the options were checked\n{res}"
    _assert_untouched(before, project, res, out)


@pytest.mark.parametrize(
    ("args", "option", "cause"),
    [
        (["--k", "1"], "--k", r"2 or more"),
        (["--sample-size", "3", "--k", "4"], "--sample-size", r"4 or more"),
        (["--max-iter", "0"], "--max-iter", r"1 or more"),
        (["--tol", "-1"], "--tol", r"0 or more"),
        (["--scheduler", "node042"], "--scheduler", ADDRESS_FORM),
        (["--wait-for-workers", "-5"], "--wait-for-workers", r"0 or more"),
    ],
    ids=["k", "sample-size", "max-iter", "tol", "scheduler", "wait-for-workers"],
)
def test_cluster_options_are_checked_before_any_work(project, tmp_path, args, option, cause):
    before = snapshot(project)
    res = slamgeo_here("cluster", project / "cube.zarr", *args, cwd=tmp_path)
    assert_one_line_error(res, [option], cause)
    assert "dask:" not in res.output, str(res)
    _assert_untouched(before, project, res)


def test_parcels_scheduler_is_checked_before_any_work(project, tmp_path):
    out = tmp_path / "parcels"
    before = snapshot(project)
    res = slamgeo_here(
        "parcels",
        project / "cube.zarr",
        project / "scene" / "parcels.gpkg",
        "--out",
        out,
        "--scheduler",
        "tcp://:8786",
        cwd=tmp_path,
    )
    assert_one_line_error(res, ["--scheduler"], r"no host")
    _assert_untouched(before, project, res, out)


def test_run_scheduler_option_is_checked_before_anything_is_written(project, tmp_path):
    config = _season_config(tmp_path / "cfg" / "season.yaml", project, dask={"n_workers": 1})
    res = slamgeo("run", config, "--scheduler", "notaurl", cwd=tmp_path, timeout=120)
    line = assert_one_line_error(res, ["--scheduler 'notaurl'"], rf"no port.*{ADDRESS_FORM}")
    assert res.rc == 1 and "missing port number" not in line, str(res)
    assert not (tmp_path / "cfg" / "out").exists(), str(res)

    res = slamgeo_here("run", config, "--wait-for-workers", "-1", cwd=tmp_path)
    assert_one_line_error(res, ["--wait-for-workers"], r"0 or more")
    assert not (tmp_path / "cfg" / "out").exists(), str(res)


def test_the_configuration_scheduler_is_checked_when_it_is_loaded(project, tmp_path):
    config = _season_config(tmp_path / "cfg" / "season.yaml", project, dask={"scheduler": "notaurl"})
    res = slamgeo_here("run", config, cwd=tmp_path)
    assert_one_line_error(res, ["dask.scheduler"], rf"'notaurl': not a Dask scheduler address.*{ADDRESS_FORM}")
    assert not (tmp_path / "cfg" / "out").exists(), str(res)


def test_an_option_typer_rejects_keeps_its_usage_message(project, tmp_path):
    res = slamgeo_here(
        "explain",
        project / "cube.zarr",
        project / "model",
        "--out",
        tmp_path / "r.zarr",
        "--batch-size",
        "many",
        cwd=tmp_path,
    )
    assert res.rc == 2 and "Traceback" not in res.output, str(res)
    assert "Invalid value for '--batch-size'" in res.output, str(res)


# --------------------------------------------------------------------------- bounded waits


def test_run_gives_up_on_an_http_server_at_the_scheduler_address(project, tmp_path):
    """What a user met: `run --scheduler` at a port where a web server listens waited for
    minutes. Now: Dask's connect timeout, then one line."""
    config = _season_config(tmp_path / "cfg" / "season.yaml", project, dask={"n_workers": 1})
    before = snapshot(project)
    with http_server() as address, connect_timeout(CONNECT_TIMEOUT) as env:
        res, took = _timed(lambda: slamgeo("run", config, "--scheduler", address, cwd=tmp_path, env=env, timeout=120))
    assert_one_line_error(res, [address], r"not a Dask scheduler \(nothing answered within 3 s\)")
    assert res.rc == 1, str(res)
    assert took < CONNECT_TIMEOUT + MARGIN_PROCESS, f"took {took:.1f} s\n{res}"
    _assert_untouched(before, project, res)
    out = tmp_path / "cfg" / "out"
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()], f"files written\n{res}"


@pytest.mark.parametrize("server", ["http", "closed-port"])
def test_explain_gives_up_on_an_address_where_no_scheduler_answers(project, tmp_path, server):
    out = tmp_path / "results.zarr"
    before = snapshot(project)
    with contextlib.ExitStack() as stack:
        address = stack.enter_context(http_server()) if server == "http" else f"tcp://127.0.0.1:{_free_port()}"
        stack.enter_context(connect_timeout(CONNECT_TIMEOUT))
        cmd = ["explain", project / "cube.zarr", project / "model", "--out", out, "--scheduler", address]
        res, took = _timed(lambda: slamgeo_here(*cmd, cwd=tmp_path))
    assert_one_line_error(res, [address], r"nothing answered")
    assert took < CONNECT_TIMEOUT + MARGIN_HERE, f"took {took:.1f} s\n{res}"
    if server == "closed-port":  # distributed retries until the timeout: a scheduler may be starting
        assert took >= CONNECT_TIMEOUT - 0.5, f"gave up after {took:.1f} s"
        assert "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT" in res.stderr, str(res)
    _assert_untouched(before, project, res, out)


def test_explain_gpu_waits_a_bounded_time_for_a_gpu_worker(project, tmp_path, cpu_cluster):
    out = tmp_path / "results.zarr"
    before = snapshot(project)
    cmd = ["explain", project / "cube.zarr", project / "model", "--out", out, "--no-progress"]
    res, took = _timed(
        lambda: slamgeo_here(*cmd, "--scheduler", cpu_cluster, "--gpu", "--wait-for-workers", WAIT, cwd=tmp_path)
    )
    line = assert_one_line_error(
        res,
        [cpu_cluster],
        rf"no worker with the Dask resource GPU joined within {WAIT:g} s \(the scheduler has 1 worker",
    )
    assert res.rc == 1, str(res)
    assert f"dask worker {cpu_cluster} --resources GPU=1" in line, line
    assert f"waiting up to {WAIT:g} s" in res.stderr, str(res)
    assert WAIT <= took < WAIT + MARGIN_HERE, f"took {took:.1f} s\n{res}"
    _assert_untouched(before, project, res, out)


def test_run_gpu_resources_waits_as_long_as_the_configuration_says(project, tmp_path, cpu_cluster):
    config = _season_config(tmp_path / "cfg" / "season.yaml", project, dask={"wait_for_workers": WAIT})
    before = snapshot(project)
    res, took = _timed(
        lambda: slamgeo("run", config, "--scheduler", cpu_cluster, "--gpu-resources", cwd=tmp_path, timeout=120)
    )
    assert_one_line_error(res, [cpu_cluster], rf"no worker with the Dask resource GPU joined within {WAIT:g} s")
    assert res.rc == 1, str(res)
    assert took < WAIT + MARGIN_PROCESS, f"took {took:.1f} s\n{res}"
    _assert_untouched(before, project, res)


def test_a_scheduler_without_workers_is_given_a_bounded_time(project, tmp_path, empty_scheduler):
    out = tmp_path / "results.zarr"
    cmd = ["explain", project / "cube.zarr", project / "model", "--out", out, "--no-progress"]
    res, took = _timed(
        lambda: slamgeo_here(*cmd, "--scheduler", empty_scheduler, "--wait-for-workers", "0", cwd=tmp_path)
    )
    line = assert_one_line_error(res, [empty_scheduler], r"no worker joined within 0 s \(the scheduler has no worker\)")
    assert f"`dask worker {empty_scheduler}`" in line, line
    assert took < MARGIN_HERE, f"took {took:.1f} s\n{res}"
    assert not out.exists(), str(res)


# --------------------------------------------------------------------------- what reaches the terminal


def test_a_run_on_a_scheduler_prints_no_library_warning(project, tmp_path, cpu_cluster):
    """A Zarr 3 results store: zarr warns that consolidated metadata is not in its spec, which
    the user can do nothing about."""
    out = tmp_path / "results.zarr"
    cmd = ["explain", project / "cube.zarr", project / "model", "--out", out, "--no-progress", "--zarr-format", "3"]
    res = slamgeo(*cmd, "--scheduler", cpu_cluster, cwd=tmp_path, timeout=180)
    assert res.rc == 0, str(res)
    assert "Warning" not in res.output and "warnings.warn" not in res.output, str(res)
    assert res.stderr.strip() == "", str(res)


def test_warnings_are_one_line_and_library_noise_is_left_out():
    from slamgeo.cli import _format_warning
    from slamgeo.jobs.metrics import EvaluationWarning
    from slamgeo.jobs.runtime import quiet_library_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        quiet_library_warnings()
        warnings.warn("this keyword is deprecated", FutureWarning, stacklevel=1)
        warnings.warn("Sending large graph of size 12 MiB.\nThis may cause slowdown.", UserWarning, stacklevel=1)
        warnings.warn("Consolidated metadata is currently not part in the Zarr format 3 specification.", stacklevel=1)
        warnings.warn("invalid value encountered\n  in divide", RuntimeWarning, stacklevel=1)
        warnings.warn("12 pixels have\nno valid date", EvaluationWarning, stacklevel=1)
    shown = [_format_warning(w.message, w.category, w.filename, w.lineno) for w in caught]
    assert len(shown) == 2, shown
    assert shown[0].startswith(f"warning: invalid value encountered in divide (RuntimeWarning, {Path(__file__).name}:")
    assert shown[1] == "warning: 12 pixels have no valid date\n", shown  # slamgeo's own: the message alone
    assert all(line.count("\n") == 1 and line.endswith("\n") for line in shown), shown


def test_localcluster_workers_do_not_print_the_report_of_a_failed_task(capfd):
    from slamgeo.jobs.runtime import ClusterOptions, dask_client

    def fails() -> None:
        raise ValueError("the task's own error")

    with dask_client(ClusterOptions(n_workers=1, dashboard=False), quiet=True) as client:
        with pytest.raises(ValueError, match="the task's own error"):
            client.submit(fails).result()
    err = capfd.readouterr().err
    assert "Compute Failed" not in err and "Traceback" not in err, err


def test_a_version_mismatch_is_one_warning_line(monkeypatch, capsys):
    import distributed
    from distributed.versions import VersionMismatchWarning

    from slamgeo.jobs import runtime

    class Client:
        def __init__(self, address, timeout) -> None:  # noqa: ANN001
            warnings.warn(VersionMismatchWarning("Mismatched versions found\n\n+---------+\n| numpy |"), stacklevel=1)

    monkeypatch.setattr(runtime, "_identify", lambda address, timeout: {"type": "Scheduler"})
    monkeypatch.setattr(distributed, "Client", Client)
    runtime.connect_client("tcp://node042:8786", timeout=1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "dask: warning: tcp://node042:8786: the scheduler or its workers run other versions"
    ), lines
