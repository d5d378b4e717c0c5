"""Every location on object storage: the season pipeline writing to (and reading its inputs
from) a real S3-compatible server (moto in server mode, on loopback: the `s3` fixture of
conftest.py), a second run that skips everything, a run killed half-way and resumed with
identical results, checkpoints, cubes left incomplete, and the CLI on s3:// URLs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
import zarr
from helpers import SHARED_DATA, run_and_kill
from helpers import step_status as _status

from slamgeo.errors import CheckpointError, InputError, OutputError
from slamgeo.io import storage
from slamgeo.io.cube import COMPLETE_ATTR, is_complete, make_cube, open_cube, write_cube
from slamgeo.method.checkpoint import dates_meta, load_model, save_model
from slamgeo.method.model import CAE, CAEConfig
from slamgeo.pipeline.config import load_config
from slamgeo.pipeline.steps import STEPS, run_pipeline
from slamgeo.schema import MODEL_MARKER, WEIGHTS_FILE

pytestmark = pytest.mark.timeout(300)

BUCKET = "s3://slamgeo-test"
# About the smallest scene with classes of two parcels (one held out): 4 explain blocks.
TINY = {
    "season": {"name": "2017"},
    "input": {"kind": "synthetic", "synthetic": {"size": 72, "n_dates": 8, "seed": 3}},
    "chunk": 36,
    "model": {"train": {"sample_size": 600, "max_epochs": 1, "batch_size": 128, "device": "cpu"}},
    "kmeans": {"k": 4, "sample_size": 600},
    "report": {"class_groups": {"alike": ["cotton", "sweet potato", "pepper"]}},
}
RESULT_VARS = ("embedding", "importance", "recon_error", "cluster")


def _config(tmp: Path, name: str, **changes) -> Path:
    raw = json.loads(json.dumps(TINY))
    raw.update(changes)
    path = tmp / name
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def s3_cluster(s3):
    """A LocalCluster of worker processes started after `s3` set AWS_*: its workers inherit them
    (the session's `local_cluster` may have started before, without them)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


PIPELINE_ARGV = """
from distributed import Client
from slamgeo.pipeline.config import load_config
from slamgeo.pipeline.steps import run_pipeline
with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as c:
    run_pipeline(load_config(sys.argv[1]), client=c, quiet=True)
"""
CONFIG = f"{BUCKET}/configs/season.yaml"
ROOT = f"{BUCKET}/runs/2017"


@pytest.fixture(scope="module")
def resumed(s3, s3_cluster, tmp_path_factory):
    """The configuration on S3, output on S3: a run killed (SIGKILL) half-way through explain,
    then the same run again, which finishes it. Returns (the number of blocks the killed run had
    done, the summary of the second run)."""
    tmp = tmp_path_factory.mktemp("s3pipeline")
    s3.pipe(CONFIG.removeprefix("s3://"), yaml.safe_dump(dict(TINY, output=f"{BUCKET}/runs")).encode())
    store = f"{ROOT}/results.zarr"
    done = run_and_kill(PIPELINE_ARGV, [CONFIG], store=store, at_least=2, tmp=tmp, env=dict(os.environ), timeout=150)
    assert 2 <= done < 4 and not is_complete(store)
    assert sorted(p.name for p in tmp.iterdir()) == ["killed_run.py"]  # nothing written locally
    return done, run_pipeline(load_config(CONFIG), client=s3_cluster, quiet=True)


def test_a_run_killed_mid_explain_on_s3_resumes_and_finishes_every_step(s3, resumed):
    done, summary = resumed
    st = _status(summary)
    assert [st[s] for s in ("ingest", "train", "align")] == ["skipped"] * 3, [s.error for s in summary.steps]
    assert [st[s] for s in ("explain", "cluster", "parcels", "report")] == ["done"] * 4
    explain = next(s for s in summary.steps if s.name == "explain")
    assert explain.info["blocks_resumed_from_disk"] == done and explain.info["blocks_computed"] == 4 - done
    assert summary.season_dir == ROOT
    for p in (
        "model/model.json",
        "model/model.safetensors",
        "scene/parcels.gpkg",
        "parcels/metrics.json",
        "parcels/parcels.zarr/.zmetadata",
        "report/index.html",
        "pipeline_state.json",
    ):
        assert s3.exists(f"{ROOT.removeprefix('s3://')}/{p}"), p
    assert is_complete(f"{ROOT}/cube.zarr") and is_complete(f"{ROOT}/results.zarr")
    assert set(RESULT_VARS) <= set(zarr.open_group(f"{ROOT}/results.zarr", mode="r").keys())
    assert str(summary.manifest).startswith(f"{ROOT}/manifests/run-")
    manifest = json.loads(storage.read_text(summary.manifest))
    assert manifest["tally"] == {"skipped": 3, "done": 5}
    assert manifest["figures"] and all(
        f.startswith(f"{ROOT}/report/") and storage.exists(f) for f in manifest["figures"]
    )
    assert not Path("s3:").exists()  # no URL taken for a local path


def test_the_resumed_results_equal_an_uninterrupted_explain(resumed, tmp_path):
    from slamgeo.jobs.explain import explain_store

    with dask.config.set(scheduler="threads"):  # in one go, in this process
        explain_store(f"{ROOT}/cube.zarr", f"{ROOT}/model", tmp_path / "whole.zarr", client=None, progress=False)
    got = zarr.open_group(f"{ROOT}/results.zarr", mode="r")
    want = zarr.open_group(str(tmp_path / "whole.zarr"), mode="r")
    for v in ("embedding", "importance", "recon_error"):
        np.testing.assert_array_equal(got[v][...], want[v][...], err_msg=v)


def test_a_second_run_skips_everything(resumed, s3_cluster):
    summary = run_pipeline(load_config(CONFIG), client=s3_cluster, quiet=True)
    assert _status(summary) == {s: "skipped" for s in STEPS}


def test_an_output_left_incomplete_on_s3_is_redone(s3, resumed, s3_cluster):
    # as if its upload had been cut short: the marker of a write under way, and no metrics.json
    s3.pipe(f"{ROOT.removeprefix('s3://')}/parcels/{storage.INCOMPLETE}", b"parcels")
    s3.rm(f"{ROOT.removeprefix('s3://')}/parcels/metrics.json")
    summary = run_pipeline(load_config(CONFIG), client=s3_cluster, quiet=True)
    st = _status(summary)
    # redone, with the steps after it (drift and the report read the parcels)
    assert st["parcels"] == st["drift"] == st["report"] == "done" and all(st[s] == "skipped" for s in STEPS[:-3])
    assert s3.exists(f"{ROOT.removeprefix('s3://')}/parcels/metrics.json")
    assert not s3.exists(f"{ROOT.removeprefix('s3://')}/parcels/{storage.INCOMPLETE}")


def test_inputs_on_s3_cube_checkpoint_and_parcels(s3, resumed, tmp_path):
    from slamgeo.io.ingest import ingest
    from slamgeo.jobs.parcels import read_parcels

    copy = ingest([f"{ROOT}/cube.zarr"], f"{BUCKET}/copies/cube.zarr", chunk=36, progress=False)
    a, b = open_cube(copy), open_cube(f"{ROOT}/cube.zarr")
    np.testing.assert_array_equal(a["VV"].values, b["VV"].values)
    assert a.attrs["source"] == [f"{ROOT}/cube.zarr"] and a.attrs["input_fingerprint"]
    gdf = read_parcels(f"{ROOT}/scene/parcels.gpkg")
    assert len(gdf) > 0 and gdf.attrs["source"] == f"{ROOT}/scene/parcels.gpkg"
    path = _config(
        tmp_path,
        "inputs.yaml",
        output=f"{BUCKET}/from-s3",
        input={"kind": "cube", "paths": [f"{ROOT}/cube.zarr"]},
        model={"checkpoint": f"{ROOT}/model"},
        parcels={"path": f"{ROOT}/scene/parcels.gpkg"},
    )
    plan = run_pipeline(load_config(path), dry_run=True, quiet=True)
    assert _status(plan) == {s: "would run" for s in STEPS}, [s.error for s in plan.steps]


def test_netcdf_and_parquet_inputs_on_s3(s3):
    from slamgeo.io.ingest import ingest

    for name in ("openeo_cube_utm31n_2021.nc", "fra_2023_lpis_dekad.parquet", "crop_type_class_mappings.csv"):
        s3.put_file(str(SHARED_DATA / "worldcereal" / name), f"slamgeo-test/worldcereal/{name}")
    grid = open_cube(
        ingest(
            [f"{BUCKET}/worldcereal/openeo_cube_utm31n_2021.nc"], f"{BUCKET}/copies/nc.zarr", chunk=64, progress=False
        )
    )
    assert grid.sizes == {"time": 12, "y": 100, "x": 100} and grid.rio.crs.to_epsg() == 32631
    table = open_cube(
        ingest(
            [f"{BUCKET}/worldcereal/fra_2023_lpis_dekad.parquet"],
            f"{BUCKET}/copies/t.zarr",
            start="2023-01-01",
            end="2023-12-31",
            progress=False,
        )
    )
    assert table.sizes == {"time": 36, "sample": 500}
    assert "label_name" in table.coords  # the legend beside the table, read from S3 too


def test_geotiff_and_stac_inputs_on_s3_are_read_by_gdal(s3, tmp_path):
    # GDAL does not read AWS_ENDPOINT_URL: slamgeo derives its /vsis3/ settings from it
    from slamgeo.io.ingest import ingest
    from slamgeo.synth import make_scene, write_scene

    written = write_scene(make_scene(size=32, n_dates=4, seed=1), tmp_path / "scene")
    s3.put(str(written["tiffs"]), "slamgeo-test/scene/tiffs", recursive=True)
    s3.put_file(str(written["stac"]), "slamgeo-test/scene/stac.json")  # relative hrefs: tiffs/...
    want = open_cube(ingest([written["tiffs"]], tmp_path / "local.zarr", chunk=16, progress=False)).load()
    for src, name in ((f"{BUCKET}/scene/tiffs", "tiffs.zarr"), (f"{BUCKET}/scene/stac.json", "stac.zarr")):
        got = open_cube(ingest([src], f"{BUCKET}/copies/{name}", chunk=16, progress=False)).load()
        for band in ("VV", "VH"):
            np.testing.assert_array_equal(got[band].values, want[band].values)
        assert got.rio.crs == want.rio.crs


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {}),
        (
            {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"},
            {"AWS_S3_ENDPOINT": "127.0.0.1:9000", "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE"},
        ),
        (
            {"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "https://minio.example.org/"},
            {"AWS_S3_ENDPOINT": "minio.example.org", "AWS_HTTPS": "YES", "AWS_VIRTUAL_HOSTING": "FALSE"},
        ),
        ({"AWS_ENDPOINT_URL": "http://a:1", "AWS_S3_ENDPOINT": "b:2"}, {}),  # GDAL's own setting wins
    ],
)
def test_gdal_endpoint_options_follow_the_aws_endpoint(env, expected):
    assert storage.gdal_s3_options(env) == expected


def test_gdal_endpoint_variables_are_set_for_the_block_only_and_never_override(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_HTTPS", "YES")  # the user's own setting
    monkeypatch.delenv("AWS_S3_ENDPOINT", raising=False)
    monkeypatch.delenv("AWS_VIRTUAL_HOSTING", raising=False)
    with storage.gdal_s3_environ():
        assert os.environ["AWS_S3_ENDPOINT"] == "127.0.0.1:9000"
        assert os.environ["AWS_VIRTUAL_HOSTING"] == "FALSE"
        assert os.environ["AWS_HTTPS"] == "YES"
    assert "AWS_S3_ENDPOINT" not in os.environ and "AWS_VIRTUAL_HOSTING" not in os.environ
    assert os.environ["AWS_HTTPS"] == "YES"


def test_a_checkpoint_round_trips_through_s3(s3):
    dates = pd.date_range("2017-01-03", periods=8, freq="6D").values
    cfg = CAEConfig(n_bands=2, n_times=8, embed_dim=2, channels=(4, 8, 8), kernels=(3, 3, 3), hidden=(8, 4))
    meta = {
        "bands": ["VV", "VH"],
        **dates_meta(dates),
        "normalisation": {"mean": [-12.0, -19.0], "std": [2.5, 3.0], "units": "dB"},
    }
    torch.manual_seed(0)
    model = CAE(cfg).eval()
    url = f"{BUCKET}/models/m"
    assert save_model(model, meta, url) == url
    names = sorted(p.rsplit("/", 1)[-1] for p in s3.ls("slamgeo-test/models/m"))
    assert names == [storage.STAMP_FILE, MODEL_MARKER, WEIGHTS_FILE]
    tm = load_model(url)
    for k, v in model.state_dict().items():
        assert torch.equal(tm.model.state_dict()[k], v), k
    with pytest.raises(OutputError, match="already exists"):
        save_model(model, meta, url)
    torch.manual_seed(1)
    other = CAE(cfg).eval()
    save_model(other, meta, url + "/", overwrite=True)
    assert load_model(url).checksum != tm.checksum
    # a checkpoint whose upload stopped before its JSON, or with weights of another upload
    s3.rm(f"slamgeo-test/models/m/{MODEL_MARKER}")
    with pytest.raises(CheckpointError, match="metadata file missing"):
        load_model(url)
    s3.pipe(f"slamgeo-test/models/m/{MODEL_MARKER}", json.dumps(tm.meta).encode())
    with pytest.raises(CheckpointError, match="weights altered"):
        load_model(url)


def test_a_cube_write_that_fails_on_s3_leaves_a_store_marked_incomplete(s3):
    ny = nx = 8
    cube = make_cube(
        {"VV": np.zeros((3, ny, nx)), "VH": np.zeros((3, ny, nx))},
        pd.date_range("2017-01-03", periods=3, freq="6D"),
        y=np.arange(ny)[::-1] * 10.0,
        x=np.arange(nx) * 10.0,
        crs=32630,
        chunk=4,
    )

    def fail(block, block_info=None):
        if block_info[0]["chunk-location"][1:] == (1, 1):
            raise RuntimeError("the network went away")
        return block

    cube["VH"] = cube["VH"].copy(data=da.map_blocks(fail, cube["VH"].data, dtype=np.float32))
    url = f"{BUCKET}/cubes/c.zarr"
    # local threads: a default client left by another test could have workers without AWS_*
    with dask.config.set(scheduler="threads"), pytest.raises(RuntimeError, match="network"):
        write_cube(cube, url, progress=False)
    assert s3.exists("slamgeo-test/cubes/c.zarr/.zattrs")  # written in place: no rename on S3
    assert zarr.open_group(url, mode="r").attrs[COMPLETE_ATTR] is False
    assert not is_complete(url)
    with pytest.raises(InputError, match="incomplete"):
        open_cube(url)


def test_cli_run_with_a_configuration_on_s3(s3, resumed):
    # a dry run: it reads the configuration and the state on S3, checks the outputs there, and
    # starts no cluster (the runs above are what a real run does)
    proc = subprocess.run(
        [sys.executable, "-m", "slamgeo", "run", CONFIG, "--dry-run"],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr
    assert f"season 2017: {len(STEPS)} would skip -> {ROOT}" in proc.stdout
