"""The season pipeline end to end on a small synthetic scene, with a real LocalCluster."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
import yaml
import zarr
from helpers import run_and_kill
from helpers import step_status as _status

from slamgeo.errors import ConfigError
from slamgeo.pipeline.config import load_config, parse_config
from slamgeo.pipeline.steps import STEPS, run_pipeline

pytestmark = pytest.mark.timeout(600)

SMALL = {
    "season": {"name": "2017"},
    "input": {"kind": "synthetic", "synthetic": {"size": 96, "n_dates": 20, "seed": 3}},
    "chunk": 48,
    "model": {"train": {"sample_size": 2000, "max_epochs": 2, "batch_size": 256}},
    "kmeans": {"k": 6, "sample_size": 2000},
    "parcels": {"test_fraction": 0.3},
    "report": {"class_groups": {"alike": ["cotton", "sweet potato", "pepper"]}, "pairs": [["cotton", "pepper"]]},
}


def _config(tmp: Path, name: str = "season.yaml", **changes) -> Path:
    raw = json.loads(json.dumps(SMALL))
    raw["output"] = str(tmp / "out")
    for k, v in changes.items():
        raw[k] = v
    path = tmp / name
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, local_cluster):
    tmp = tmp_path_factory.mktemp("pipeline")
    cfg = load_config(_config(tmp))
    summary = run_pipeline(cfg, client=local_cluster, quiet=True)
    return tmp, cfg, summary


def test_the_whole_pipeline_runs_end_to_end(first_run):
    tmp, cfg, summary = first_run
    assert _status(summary) == {s: "done" for s in STEPS}, [s.error for s in summary.steps]
    root = summary.season_dir
    assert root == tmp / "out" / "2017"
    for p in ("cube.zarr", "model/model.json", "results.zarr", "parcels/metrics.json", "report/index.html"):
        assert (root / p).exists(), p
    results = zarr.open_group(str(root / "results.zarr"), mode="r")
    assert {"embedding", "importance", "recon_error", "cluster", "pair_importance"} <= set(results.keys())
    # the named pair and the most confused ones are explained, with a figure and their dates each
    pairs = xr.open_zarr(root / "results.zarr")
    named = [{str(a), str(b)} for a, b in zip(pairs["pair_a"].values, pairs["pair_b"].values)]
    assert {"cotton", "pepper"} in named and 1 < len(named) <= 4
    assert pairs["pair_importance"].dims == ("pair", "time") and np.isfinite(pairs["pair_importance"].values).all()
    page = (root / "report" / "index.html").read_text()
    assert page.count("The dates that separate") == len(named)
    assert len(list((root / "report").glob("pair_*.png"))) == len(named)
    # the synthetic scene knows where cotton and pepper differ: the page measures it
    assert "Class-pair explanations against the known truth" in page and "pepper 2017-" in page
    manifest = json.loads(summary.manifest.read_text())
    assert manifest["tally"] == {"done": len(STEPS)}
    assert [s["name"] for s in manifest["steps"]] == list(STEPS)
    assert manifest["versions"]["torch"] and manifest["configuration"]["season"]["name"] == "2017"
    assert manifest["figures"] and all(Path(f).exists() for f in manifest["figures"])


def test_a_second_run_skips_everything(first_run, local_cluster):
    _, cfg, _ = first_run
    summary = run_pipeline(cfg, client=local_cluster, quiet=True)
    assert _status(summary) == {s: "skipped" for s in STEPS}


def test_dry_run_says_what_would_be_done_and_does_nothing(first_run):
    tmp, cfg, _ = first_run
    changed = cfg.model_copy(update={"kmeans": cfg.kmeans.model_copy(update={"k": 5})})
    before = (tmp / "out" / "2017" / "pipeline_state.json").read_text()
    summary = run_pipeline(changed, dry_run=True, quiet=True)
    assert _status(summary)["cluster"] == "would run" and _status(summary)["explain"] == "would skip"
    assert (tmp / "out" / "2017" / "pipeline_state.json").read_text() == before


def test_training_threads_count_once_set(first_run):
    _, cfg, _ = first_run
    one = cfg.model_copy(
        update={"model": cfg.model.model_copy(update={"train": cfg.model.train.model_copy(update={"threads": 1})})}
    )
    st = _status(run_pipeline(one, dry_run=True, quiet=True))
    assert st["ingest"] == "would skip" and st["train"] == "would run"


def test_changing_one_option_redoes_only_what_depends_on_it(first_run, local_cluster):
    _, cfg, _ = first_run
    changed = cfg.model_copy(update={"kmeans": cfg.kmeans.model_copy(update={"k": 5})})
    summary = run_pipeline(changed, client=local_cluster, quiet=True)
    st = _status(summary)
    assert [st[s] for s in ("ingest", "train", "align", "explain")] == ["skipped"] * 4
    assert [st[s] for s in ("cluster", "parcels", "report")] == ["done"] * 3
    centres = zarr.open_group(str(summary.season_dir / "results.zarr"), mode="r")["cluster_centre"]
    assert centres.shape[0] == 5


def test_a_new_season_with_12_day_revisit_reuses_the_model(first_run, local_cluster):
    tmp, cfg, first = first_run
    state_2017 = (first.season_dir / "pipeline_state.json").read_text()
    path = _config(
        tmp,
        "season2018.yaml",
        season={"name": "2018"},
        input={
            "kind": "synthetic",
            "synthetic": {
                "size": 96,
                "n_dates": 12,
                "seed": 4,
                "start": "2018-01-06",
                "step_days": 12,
                "missing_dates": 2,
            },
        },
        model={"checkpoint": str(first.season_dir / "model")},
        gradslam={"max_gap_days": 40},
    )
    summary = run_pipeline(load_config(path), client=local_cluster, quiet=True)
    st = _status(summary)
    assert st == {s: "done" for s in STEPS}, [s.error for s in summary.steps]
    align = next(s for s in summary.steps if s.name == "align")
    assert align.info["aligned"] is True and align.info["model_dates"] == 20
    res = zarr.open_group(str(summary.season_dir / "results.zarr"), mode="r")
    assert res["importance"].shape[1] == 20
    assert not (summary.season_dir / "model").exists()
    assert (first.season_dir / "pipeline_state.json").read_text() == state_2017


def test_a_season_too_short_for_the_model_fails_with_its_reason(first_run, local_cluster):
    tmp, _, first = first_run
    path = _config(
        tmp,
        "short.yaml",
        season={"name": "short"},
        input={
            "kind": "synthetic",
            "synthetic": {"size": 48, "n_dates": 8, "seed": 5, "start": "2018-01-06", "step_days": 6},
        },
        model={"checkpoint": str(first.season_dir / "model")},
        report={"confused_pairs": 1},  # the eight classes of this small scene: no pepper, no sweet potato
    )
    summary = run_pipeline(load_config(path), client=local_cluster, quiet=True)
    failed = [s for s in summary.steps if s.status == "failed"]
    assert [s.name for s in failed] == ["align"] and "too short" in failed[0].error
    assert summary.failed
    # the steps after the failure are listed, as not run, in the summary and the manifest's tally
    assert [_status(summary)[s] for s in ("explain", "cluster", "parcels", "drift", "report")] == ["not run"] * 5
    assert json.loads(summary.manifest.read_text())["tally"]["not run"] == 5


def test_a_run_with_nothing_to_do_starts_no_cluster(first_run, local_cluster, monkeypatch):
    import slamgeo.jobs.runtime

    _, cfg, _ = first_run
    run_pipeline(cfg, client=local_cluster, quiet=True)  # brings the state back to `cfg` (other tests change it)

    def no_cluster(*a, **k):
        raise AssertionError("a cluster was started for a run with nothing to do")

    monkeypatch.setattr(slamgeo.jobs.runtime, "dask_client", no_cluster)
    summary = run_pipeline(cfg, quiet=True)
    assert _status(summary) == {s: "skipped" for s in STEPS}


def test_the_cluster_starts_only_when_a_step_runs_and_is_closed(first_run, local_cluster, monkeypatch):
    import contextlib

    import slamgeo.jobs.runtime

    _, cfg, _ = first_run
    run_pipeline(cfg, client=local_cluster, quiet=True)  # the state of `cfg` (other tests change it)
    events = []

    @contextlib.contextmanager
    def fake_client(opts, quiet=False):
        events.append("start")
        yield local_cluster
        events.append("close")

    monkeypatch.setattr(slamgeo.jobs.runtime, "dask_client", fake_client)
    titled = cfg.model_copy(update={"report": cfg.report.model_copy(update={"date": "2017-06-01"})})
    summary = run_pipeline(titled, quiet=True)
    assert _status(summary)["report"] == "done" and _status(summary)["explain"] == "skipped"
    assert events == ["start", "close"]


def test_a_disabled_report_is_not_made(first_run, local_cluster):
    _, cfg, _ = first_run
    off = cfg.model_copy(update={"report": cfg.report.model_copy(update={"enabled": False})})
    summary = run_pipeline(off, client=local_cluster, quiet=True)
    st = _status(summary)
    assert st["report"] == "disabled" and all(st[s] == "skipped" for s in STEPS if s != "report")


PIPELINE_ARGV = """
from distributed import Client
from slamgeo.pipeline.config import load_config
from slamgeo.pipeline.steps import run_pipeline
with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as c:
    run_pipeline(load_config(sys.argv[1]), client=c, quiet=True)
"""


def test_a_run_killed_mid_explain_resumes(tmp_path, local_cluster):
    path = _config(tmp_path, chunk=24)
    store = tmp_path / "out" / "2017" / "results.zarr"
    run_and_kill(PIPELINE_ARGV, [path], store=store, at_least=2, tmp=tmp_path)
    summary = run_pipeline(load_config(path), client=local_cluster, quiet=True)
    st = _status(summary)
    assert [st[s] for s in ("ingest", "train", "align")] == ["skipped"] * 3
    explain = next(s for s in summary.steps if s.name == "explain")
    assert explain.status == "done" and explain.info["blocks_resumed_from_disk"] >= 2
    assert explain.info["blocks_computed"] + explain.info["blocks_resumed_from_disk"] == 16
    assert not summary.failed


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": "blue"}, "colour: unknown key"),
        ({"kmeans": {"k": "many"}}, "kmeans.k"),
        ({"kmeans": {"k": 16, "init": "k-means++"}}, "kmeans.init: unknown key"),
        ({"chunk": -3}, "chunk"),
        ({"season": {"name": "2017/18"}}, "season.name"),
        ({"input": {"kind": "geotiff"}}, "input.paths is required"),
        ({"gradslam": {"scale": "relu"}}, "gradslam.scale"),
        ({"model": {"train": {"threads": 0}}}, "model.train.threads"),
    ],
)
def test_configuration_errors_name_the_key(change, message):
    raw = dict(SMALL, output="/tmp/x", **change)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("+", r"\+")):
        parse_config(raw)


def test_missing_season_and_bad_yaml_are_refused(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("output: x\n")
    with pytest.raises(ConfigError, match="season: Field required"):
        load_config(p)
    p.write_text("season: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    p.write_text("!!python/object/apply:os.system ['echo unsafe']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_cli_reports_a_bad_configuration_in_one_line(tmp_path):
    p = _config(tmp_path, colour="blue")
    proc = subprocess.run([sys.executable, "-m", "slamgeo", "run", str(p)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "colour: unknown key" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_demo_configuration_validates():
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "pipelines" / "demo.yaml")
    assert cfg.input.kind == "synthetic" and cfg.season.name == "2017"


def test_the_archive_configuration_runs_end_to_end(tmp_path, local_cluster):
    """pipelines/archive.yaml, made small: a synthetic archive (two UTM zones, two slices per
    pass, descending passes) goes from the STAC loader to a report, with no data sent inside a
    task graph."""
    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "pipelines" / "archive.yaml").read_text())
    raw["input"]["synthetic"].update(size=64, n_dates=16, seed=2)
    raw.update(output=str(tmp_path / "out"), chunk=32, model=SMALL["model"], kmeans={"k": 4, "sample_size": 1000})
    raw["report"] = {"confused_pairs": 1}
    (tmp_path / "archive.yaml").write_text(yaml.safe_dump(raw))
    # No data in the task graphs: distributed's large-graph warning (10 MB by default, which a
    # scene this small never reaches) lowered to 256 kB, a quarter of one band of the cube, and
    # turned into an error.
    with dask.config.set({"distributed.admin.large-graph-warning-threshold": "256kB"}), warnings.catch_warnings():
        warnings.filterwarnings("error", message="Sending large graph")
        summary = run_pipeline(load_config(tmp_path / "archive.yaml"), client=local_cluster, quiet=True)
    assert _status(summary) == {s: "done" for s in STEPS}, [s.error for s in summary.steps]
    cube = xr.open_zarr(summary.season_dir / "cube.zarr", decode_coords="all")
    assert cube.rio.crs.to_epsg() == 32630 and cube.rio.resolution() == (10.0, -10.0)
    assert cube.sizes["time"] == 16  # the ascending passes, one date each (two slices merged)
    assert cube.attrs["source_kind"] == "stac" and "EPSG:32630" in cube.attrs["grid"]
    assert (summary.season_dir / "report" / "index.html").exists()
