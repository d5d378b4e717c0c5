"""Running on a real cluster: the season pipeline against a `dask scheduler` with GPU and
CPU-only `dask worker` processes (`slamgeo run --scheduler ... --gpu-resources`), the same
results as on a LocalCluster; and the progress a batch job's log file gets (plain lines)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from helpers import SMALL_ARCH, class_cube, dask_processes
from helpers import step_status as _status

from slamgeo import progress as progress_module
from slamgeo.progress import PlainProgress, progress_bar

# A small season: 64 x 64 pixels in 16 chunks of 16 x 16 (16 explain blocks: the chance that they
# all land on the 2 GPU workers of 3 unrestricted is (2/3)^16, 0.2 %), 16 dates, a short
# training; no report (its figures say nothing about where the tasks ran).
SMALL = {
    "season": {"name": "2017"},
    "input": {"kind": "synthetic", "synthetic": {"size": 64, "n_dates": 16, "seed": 3}},
    "chunk": 16,
    "model": {"train": {"sample_size": 1000, "max_epochs": 2, "batch_size": 256, "threads": 1}},
    "kmeans": {"k": 4, "sample_size": 1000},
    "parcels": {"test_fraction": 0.3},
    "report": {"enabled": False},
}
N_BLOCKS = 16
EXPLAIN_KEYS = ("slamgeo-explain-write", "_reference_sum")  # explain's block and reference-map tasks


def _config(tmp: Path, out: str) -> Path:
    raw = json.loads(json.dumps(SMALL))
    raw["output"] = str(tmp / out)
    path = tmp / f"{out}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _explain_tasks(stream: list[dict]) -> list[dict]:
    return [t for t in stream if any(k in str(t["key"]) for k in EXPLAIN_KEYS)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gpu_option_sends_explain_to_gpu_workers_of_an_external_scheduler(tmp_path, local_cluster, capsys):
    from distributed import Client, get_task_stream

    from slamgeo.cli.run import run_config
    from slamgeo.pipeline.config import load_config
    from slamgeo.pipeline.steps import run_pipeline

    remote_cfg = _config(tmp_path, "remote")
    with dask_processes(tmp_path / "logs") as address:
        with Client(address, timeout=60, set_as_default=False) as observer:
            observer.wait_for_workers(3, timeout=90)
            workers = observer.scheduler_info(n_workers=-1)["workers"]
            gpu = {a for a, w in workers.items() if (w.get("resources") or {}).get("GPU")}
            assert len(gpu) == 2 and len(workers) == 3
            with get_task_stream(observer) as ts:
                # what `slamgeo run remote.yaml --scheduler ADDRESS --gpu-resources` does
                run_config(remote_cfg, force=False, dry_run=False, scheduler=address, gpu_resources=True)
            ran_anywhere = {t["worker"] for t in ts.data}
    out, err = capsys.readouterr()
    ours = _explain_tasks(ts.data)
    blocks = [t for t in ours if "slamgeo-explain-write" in str(t["key"])]
    assert len(blocks) == N_BLOCKS, [t["key"] for t in ours]
    assert any("_reference_sum" in str(t["key"]) for t in ours)  # the centred reference map too
    assert {t["worker"] for t in ours} <= gpu, {t["worker"] for t in ours}
    assert ran_anywhere - gpu, "the CPU-only worker took no task at all (ingest, k-Means...)"
    # the run's own output: the dashboard once, a few progress lines (not a TTY here)
    assert out.count("dashboard:") == 1, out
    assert f"dask: {address}" in out and "2 worker(s) with the resource GPU" in out
    assert "season 2017:" in out and "failed" not in out
    progress_lines = [line for line in err.splitlines() if line.startswith(("explain:", "train:"))]
    assert 2 <= len(progress_lines) <= 8 and "\r" not in err, err
    manifest = json.loads(next((tmp_path / "remote" / "2017" / "manifests").glob("run-*.json")).read_text())
    assert manifest["configuration"]["dask"]["scheduler"] == address
    assert manifest["configuration"]["dask"]["gpu_resources"] is True

    # the same configuration on a LocalCluster, without the option: the same results
    summary = run_pipeline(load_config(_config(tmp_path, "local")), client=local_cluster, quiet=True)
    assert set(_status(summary).values()) <= {"done", "disabled"}, [s.error for s in summary.steps]
    remote, local = (xr.open_zarr(tmp_path / d / "2017" / "results.zarr") for d in ("remote", "local"))
    assert set(remote.data_vars) == set(local.data_vars)
    assert {"embedding", "importance", "recon_error", "cluster"} <= set(remote.data_vars)
    for v in remote.data_vars:
        a, b = remote[v].values, local[v].values
        if np.issubdtype(a.dtype, np.floating):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=v)
        else:
            np.testing.assert_array_equal(a, b, err_msg=v)
    np.testing.assert_allclose(remote.attrs["reference_map"], local.attrs["reference_map"], rtol=1e-5, atol=1e-7)
    metrics = [
        json.loads((tmp_path / d / "2017" / "parcels" / "metrics.json").read_text()) for d in ("remote", "local")
    ]
    parcels = [xr.open_zarr(tmp_path / d / "2017" / "parcels" / "parcels.zarr") for d in ("remote", "local")]
    for name in ("label", "split", "predicted"):
        np.testing.assert_array_equal(parcels[0][name].values, parcels[1][name].values, err_msg=name)
    for key in ("scores_pixels", "scores_parcels", "mapping", "cluster_class"):
        if key in metrics[0] or key in metrics[1]:
            assert metrics[0].get(key) == metrics[1].get(key), key


# --------------------------------------------------------------------------- progress in logs


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_progress_in_a_log_file_is_a_few_plain_lines(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    log = io.StringIO()  # not a terminal
    bar = progress_bar(400, "explain", "block", file=log, interval=30)
    assert isinstance(bar, PlainProgress)
    for _ in range(400):  # 400 blocks of 1 s each: a line every 30 s at most
        clock.now += 1.0
        bar.update(1)
    bar.close()
    bar.close()  # once only
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines[0] == "explain: 0/400 blocks (0%)"
    assert lines[1] == "explain: 30/400 blocks (8%), 30 s"
    assert lines[-1] == "explain: 400/400 blocks (100%) in 400.0 s"
    assert len(lines) == 1 + 400 // 30 + 1

    quick = io.StringIO()
    with PlainProgress(1000, "explain", "block", initial=10, file=quick, interval=30) as b:
        for _ in range(990):
            b.update(1)  # no time passes: only the first and the last line
    assert quick.getvalue().splitlines() == [
        "explain: 10/1000 blocks (1%)",
        "explain: 1000/1000 blocks (100%) in 0.0 s",
    ]

    off = io.StringIO()
    b = progress_bar(5, "explain", "block", file=off, enabled=False)
    b.update(5)
    b.close()
    assert off.getvalue() == ""


def test_progress_on_a_terminal_is_a_tqdm_bar():
    from tqdm import tqdm

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    bar = progress_bar(3, "train", "epoch", file=Tty())
    assert isinstance(bar, tqdm)
    bar.close()


def test_training_logs_a_few_lines_not_one_per_epoch(capsys):
    from slamgeo.method.train import train

    cube, _ = class_cube(ny=16, nx=12, n_times=16, chunk=8, nodata_rows=2)
    train(cube, sample_size=150, max_epochs=40, patience=40, arch=SMALL_ARCH, device="cpu", batch_size=64, threads=1)
    err = capsys.readouterr().err  # pytest's capture is no terminal
    lines = [line for line in err.splitlines() if line.startswith("train:")]
    assert 2 <= len(lines) <= 3 and "\r" not in err, err
    assert lines[0] == "train: 0/40 epochs (0%)"
    assert lines[-1].startswith("train: 40/40 epochs (100%) in ") and "best=" in lines[-1]


def test_dask_computations_of_a_step_log_two_lines_not_a_redraw_per_task():
    import dask.array as da

    from slamgeo.progress import dask_progress

    log = io.StringIO()
    x = da.ones((400, 400), chunks=20)  # 400 chunks: hundreds of tasks
    with dask_progress("ingest", file=log):
        assert float((x + 1).sum().compute(scheduler="threads")) == 320_000.0
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in log.getvalue(), lines
    total = int(lines[0].split("/")[1].split()[0])
    assert total > 400 and lines[0] == f"ingest: 0/{total} tasks (0%)"
    assert lines[1].startswith(f"ingest: {total}/{total} tasks (100%) in ")
