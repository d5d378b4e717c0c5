"""On a Dask cluster the driver only orchestrates: a whole season (GeoTIFF input, training,
explain, k-Means, parcels, class pairs, faithfulness and the report) runs with the driver
forbidden to read a raster, to train, to run the model, or to compute anything with Dask's
local schedulers, and no full-resolution raster (`(..., ny, nx)` or `ny * nx` long) is ever
gathered into it. Its pixels are the workers' business; what it gathers are per-class,
per-date sums, samples of fixed size and the coarsened figure rasters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import step_status

SIZE = 64  # a 64 x 64 scene in 4 blocks of 32; its figure rasters are coarsened to 16 a side below
MAP_SIDE = 16


def _arrays(obj, out: list[np.ndarray]) -> list[np.ndarray]:
    """The numpy arrays inside a gathered result (nested lists, tuples, dicts, pandas, xarray)."""
    if isinstance(obj, np.ndarray):
        out.append(obj)
    elif isinstance(obj, (list, tuple, set)):
        for v in obj:
            _arrays(v, out)
    elif isinstance(obj, dict):
        for v in obj.values():
            _arrays(v, out)
    elif hasattr(obj, "to_numpy") and not isinstance(obj, type):
        try:
            _arrays(np.asarray(obj.to_numpy()), out)
        except Exception:  # noqa: BLE001 - anything that is no array is no pixel raster
            pass
    return out


def _full_resolution(a: np.ndarray) -> bool:
    return a.ndim >= 2 and a.shape[-2:] == (SIZE, SIZE) or SIZE * SIZE in a.shape


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    from slamgeo.synth import make_scene, write_scene

    root = tmp_path_factory.mktemp("scene") / "scene"
    write_scene(make_scene(size=SIZE, seed=4, n_dates=16, chunk=32), root)
    return root


def test_a_season_on_a_cluster_leaves_the_pixels_to_the_workers(local_cluster, scene, tmp_path, monkeypatch) -> None:
    import dask
    import dask.local
    import dask.threaded
    import odc.loader._rio as rio
    import torch
    from distributed import Client

    import slamgeo.method.train as train_module
    import slamgeo.reporting.figures as figures
    from slamgeo.pipeline.config import load_config
    from slamgeo.pipeline.steps import run_pipeline

    def forbidden(what):
        def refuse(*args, **kwargs):
            raise AssertionError(f"the driver {what}")

        return refuse

    gathered: list[tuple[str, tuple[int, ...]]] = []
    original = Client._gather

    async def spy(self, futures, *args, **kwargs):
        result = await original(self, futures, *args, **kwargs)
        gathered.extend((str(a.dtype), a.shape) for a in _arrays(result, []) if _full_resolution(a))
        return result

    monkeypatch.setattr(figures, "MAX_MAP_SIDE", MAP_SIDE)
    monkeypatch.setattr(rio, "rio_read", forbidden("read a raster"))
    monkeypatch.setattr(train_module, "train", forbidden("trained a model"))
    monkeypatch.setattr(torch.nn.Module, "__call__", forbidden("ran a model"))
    monkeypatch.setattr(dask.threaded, "get", forbidden("computed on its own threads"))
    monkeypatch.setattr(dask.local, "get_sync", forbidden("computed in its own thread"))
    monkeypatch.setattr(Client, "_gather", spy)
    config = {
        "season": {"name": "2017"},
        "input": {"kind": "geotiff", "paths": [str(scene / "tiffs")]},
        "parcels": {"path": str(scene / "parcels.gpkg"), "test_fraction": 0.3},
        "chunk": 32,
        "model": {"train": {"sample_size": 1000, "max_epochs": 2, "batch_size": 256, "threads": 1}},
        "kmeans": {"k": 4, "sample_size": 1000},
        "output": str(tmp_path / "out"),
    }
    path = tmp_path / "season.yaml"
    path.write_text(yaml.safe_dump(config))
    summary = run_pipeline(load_config(path), client=local_cluster, quiet=True)
    status = step_status(summary)
    assert set(status.values()) <= {"done", "disabled"}, [(s.name, s.error) for s in summary.steps]
    assert status["report"] == "done" and status["train"] == "done"
    assert not gathered, f"full-resolution rasters gathered into the driver: {gathered[:5]}"
    report = tmp_path / "out" / "2017" / "report"
    assert (report / "index.html").exists() and len(list(report.glob("*.png"))) >= 8
