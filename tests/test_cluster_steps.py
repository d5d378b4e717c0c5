"""Ingest and training on the workers of a real LocalCluster (2 worker processes, the session's
`local_cluster`): the driver reads no pixel of the input, a worker that cannot see an input is
refused in one line, and a model trained on a worker is the one trained in this process."""

from __future__ import annotations

from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr
from helpers import SMALL_ARCH, class_cube

from slamgeo.errors import ConfigError, InputError
from slamgeo.io.cube import open_cube, write_cube
from slamgeo.io.ingest import check_workers_see, ingest
from slamgeo.jobs.training import train_on_cluster
from slamgeo.method.train import train


@pytest.fixture(scope="module")
def tiffs(tmp_path_factory) -> Path:
    """A 32x32 synthetic scene of 8 dates as GeoTIFFs (one per date, bands VV and VH)."""
    from slamgeo.synth import make_scene, write_scene

    scene = make_scene(size=32, seed=3, n_dates=8, chunk=16)
    return Path(write_scene(scene, tmp_path_factory.mktemp("scene") / "scene")["tiffs"])


def test_ingest_is_read_and_written_by_the_workers(local_cluster, tiffs, tmp_path, monkeypatch) -> None:
    """With a client active, every pixel read runs on a worker: here the loader's read raises,
    yet ingest succeeds, and gives the cube a local (threads) ingest gives."""
    import odc.loader._rio as rio
    from distributed import get_task_stream

    expected = ingest([tiffs], tmp_path / "local.zarr", progress=False, chunk=16)  # this process's threads

    def no_read_here(*args, **kwargs):
        raise AssertionError("the driver read pixels")

    monkeypatch.setattr(rio, "rio_read", no_read_here)
    with dask.config.set(scheduler=local_cluster), get_task_stream(client=local_cluster) as stream:
        out = ingest([tiffs], tmp_path / "cube.zarr", progress=False, chunk=16)
    workers = {t["worker"] for t in stream.data}
    assert workers and workers <= set(local_cluster.scheduler_info()["workers"])
    assert any("store" in str(t["key"]) for t in stream.data)  # the Zarr write ran there too
    got, want = open_cube(str(out)), open_cube(str(expected))
    for band in ("VV", "VH"):
        np.testing.assert_array_equal(got[band].values, want[band].values)


def test_a_failed_read_on_a_worker_names_the_file(local_cluster, tiffs, tmp_path) -> None:
    import shutil

    broken = tmp_path / "tiffs"
    shutil.copytree(tiffs, broken)
    victim = sorted(broken.glob("*.tif"))[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with (
        dask.config.set(scheduler=local_cluster),
        pytest.raises(InputError, match="reading the geotiff input failed, in") as err,
    ):
        ingest([broken], tmp_path / "cube.zarr", progress=False, chunk=16)
    assert victim.name in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "cube.zarr").exists()


def test_inputs_the_workers_cannot_see_are_refused_in_one_line(local_cluster, tiffs, tmp_path, monkeypatch) -> None:
    """The workers were started in another working directory: a relative path that this
    process sees is not theirs."""
    monkeypatch.chdir(tiffs.parent)
    with dask.config.set(scheduler=local_cluster), pytest.raises(InputError, match="not visible to 2 of 2 Dask") as err:
        ingest(["tiffs"], tmp_path / "cube.zarr", progress=False, chunk=16)
    assert str(err.value).startswith("tiffs") and "\n" not in str(err.value)
    assert not (tmp_path / "cube.zarr").exists()
    check_workers_see(local_cluster, [tiffs.resolve(), *sorted(tiffs.resolve().glob("*.tif"))])  # absolute: seen


def test_a_file_of_another_size_on_the_workers_is_not_theirs(local_cluster, tmp_path) -> None:
    f = tmp_path / "a.tif"
    f.write_bytes(b"x" * 10)

    class Other:  # the client's answer when a worker sees another file under that name
        @staticmethod
        def run(func, files, sizes):
            return {"tcp://w:1": func(files, {k: 11 for k in sizes})}

    with pytest.raises(InputError, match=r"a\.tif: not visible to 1 of 1 Dask worker"):
        check_workers_see(Other(), [f])  # type: ignore[arg-type]


def test_workers_that_do_not_answer_are_reported_in_one_line(tmp_path, monkeypatch) -> None:
    import time

    import slamgeo.io.ingest as ingest_module

    f = tmp_path / "a.tif"
    f.write_bytes(b"x")

    class Stuck:  # a cluster whose workers' event loops are held
        @staticmethod
        def run(func, files, sizes):
            time.sleep(5)

    monkeypatch.setattr(ingest_module, "WORKERS_ANSWER", 0.2)
    t0 = time.monotonic()
    with pytest.raises(InputError, match=r"a\.tif: cannot ask the Dask workers .* \(no answer within 0\.2 s\)"):
        check_workers_see(Stuck(), [f])  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 3


@pytest.fixture(scope="module")
def small_cube(tmp_path_factory) -> Path:
    cube, _ = class_cube(ny=32, nx=32, n_times=8, chunk=16, seed=1)
    return Path(write_cube(cube, tmp_path_factory.mktemp("cube") / "cube.zarr", progress=False))


def test_a_model_trained_on_a_worker_is_the_one_trained_here(local_cluster, small_cube, tmp_path) -> None:
    opts = {"sample_size": 300, "max_epochs": 3, "batch_size": 64, "seed": 5, "device": "cpu", "threads": 1}
    here = train(open_cube(str(small_cube)), arch=SMALL_ARCH, progress=False, **opts)
    there = train_on_cluster(small_cube, client=local_cluster, out_dir=tmp_path / "model", arch=SMALL_ARCH, **opts)
    assert there.checksum == here.checksum
    assert there.meta["data_fingerprint"] == here.meta["data_fingerprint"]
    assert there.meta["training"]["cpu_threads"] == 1
    assert (tmp_path / "model" / "model.json").exists()
    for a, b in zip(here.model.state_dict().values(), there.model.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy())


def test_a_task_error_comes_back_as_it_is(local_cluster, tmp_path) -> None:
    cube, _ = class_cube(ny=16, nx=16, n_times=4, chunk=8)
    path = write_cube(cube, tmp_path / "short.zarr", progress=False)
    with pytest.raises(InputError, match="4 dates found"):
        train_on_cluster(path, client=local_cluster, sample_size=50, max_epochs=1, device="cpu")
    assert isinstance(xr.open_zarr(path), xr.Dataset)


def test_training_on_a_worker_shows_its_epochs_here(local_cluster, small_cube, monkeypatch, capfd) -> None:
    monkeypatch.setenv("SLAMGEO_PROGRESS_INTERVAL", "0")  # a plain line for every epoch (stderr is no terminal)
    opts = {"sample_size": 200, "max_epochs": 3, "patience": 5, "batch_size": 64, "device": "cpu", "threads": 1}
    tm = train_on_cluster(small_cube, client=local_cluster, arch=SMALL_ARCH, progress=True, **opts)
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("train: ")]
    assert tm.meta["training"]["epochs_run"] == 3
    assert lines[0].startswith("train: 0/3 epochs") and lines[-1].startswith("train: 3/3 epochs (100%) in ")
    assert any("val=" in ln for ln in lines)  # the losses came from the worker's epochs


def test_asking_for_a_gpu_worker_where_none_is_refused_at_once(local_cluster, small_cube) -> None:
    with pytest.raises(ConfigError, match="no worker of the cluster has the Dask resource GPU"):
        train_on_cluster(small_cube, client=local_cluster, gpu=True, sample_size=50, max_epochs=1)
