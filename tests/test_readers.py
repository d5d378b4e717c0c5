"""The registry of readers: every kind of input has one reader module and one name, detection
asks the readers in the registry's order, the configuration's `input.kind` takes the same names,
and a reader is added with one module and one registry line."""

from __future__ import annotations

import importlib
import inspect
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml
from hostile_helpers import assert_one_line_error, slamgeo, slamgeo_here

from slamgeo.errors import ConfigError, InputError
from slamgeo.io.ingest import detect_source, ingest, load
from slamgeo.io.readers import READERS, Reader
from slamgeo.pipeline.config import parse_config

SCENE = ("--size", "32", "--n-dates", "8", "--seed", "1")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict[str, Path]:
    """A synth scene folder (tiffs/, stac.json), a synth archive folder, and a cube store."""
    root = tmp_path_factory.mktemp("readers")
    for name, extra in (("scene", ()), ("arch", ("--archive",))):
        res = slamgeo("synth", root / name, *SCENE, *extra, timeout=120)
        assert res.rc == 0, res
    ingest([root / "scene" / "tiffs"], root / "cube.zarr", chunk=16, progress=False)
    return {"scene": root / "scene", "arch": root / "arch", "cube": root / "cube.zarr"}


def test_every_reader_module_defines_what_the_registry_asks() -> None:
    for name, reader in READERS.items():
        module = importlib.import_module(reader.module)
        assert isinstance(module.SUMMARY, str) and module.SUMMARY, name
        assert callable(module.can_open), name
        assert list(inspect.signature(module.open).parameters) == ["sources", "request"], name


def test_detection_asks_the_readers_in_the_registrys_order(scenes, tmp_path) -> None:
    (tmp_path / "cube.nc").write_bytes(b"")
    (tmp_path / "series.parquet").write_bytes(b"")
    cases = {
        "stac+https://example.org/stac": "stac-api",
        scenes["scene"]: "scene",  # a folder of its own, before the readers of any folder
        scenes["arch"]: "scene",
        scenes["cube"]: "cube",
        tmp_path / "cube.nc": "cube",
        scenes["scene"] / "tiffs": "geotiff",
        scenes["scene"] / "stac.json": "stac",
        tmp_path / "series.parquet": "table",
    }
    assert {str(p): detect_source([p])[0] for p in cases} == {str(p): k for p, k in cases.items()}
    assert list(READERS) == ["stac-api", "scene", "cube", "geotiff", "stac", "table"]


def test_an_unrecognised_input_lists_the_kinds(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"notes\.txt: unrecognised input type \.txt; expected one of") as err:
        detect_source([tmp_path / "notes.txt"])
    assert all(f"{name}: {r.summary}" in str(err.value) for name, r in READERS.items())


def test_the_configurations_kinds_are_the_registrys_names() -> None:
    base = {"season": {"name": "2017"}, "output": "out"}
    for kind in READERS:
        path = "stac+https://example.org/stac" if kind == "stac-api" else "input"
        extra = {"collection": "sentinel-1-rtc"} if kind == "stac-api" else {}
        assert parse_config({**base, "input": {"kind": kind, "paths": [path], **extra}}).input.kind == kind
    with pytest.raises(ConfigError) as err:
        parse_config({**base, "input": {"kind": "dataset", "paths": ["cube.nc"]}})
    message = str(err.value)
    assert "\n" not in message and "input.kind: unknown input kind 'dataset'; the kinds are synthetic, " in message
    assert all(kind in message for kind in READERS)


def test_an_input_of_another_kind_than_the_one_given_is_refused(scenes) -> None:
    tiffs = scenes["scene"] / "tiffs"
    with pytest.raises(InputError, match=r"tiffs: reads as GeoTIFF files .* \(kind 'geotiff'\), not as a long Parquet"):
        load([tiffs], kind="table")
    with pytest.raises(ConfigError, match=r"unknown input kind 'tiff'; the kinds are stac-api, scene, cube"):
        load([tiffs], kind="tiff")
    assert load([tiffs], kind="geotiff", chunk=16).attrs["source_kind"] == "geotiff"


def test_a_pipeline_whose_paths_are_not_of_its_kind_stops_with_one_line(scenes, tmp_path) -> None:
    config = {
        "season": {"name": "2017"},
        "output": str(tmp_path / "out"),
        "input": {"kind": "table", "paths": [str(scenes["cube"])]},
        "parcels": {"path": str(scenes["scene"] / "parcels.gpkg")},
    }
    (tmp_path / "season.yaml").write_text(yaml.safe_dump(config))
    res = slamgeo_here("run", tmp_path / "season.yaml", cwd=tmp_path)
    assert_one_line_error(res, str(scenes["cube"]), r"\(kind 'cube'\), not as a long Parquet table .* \(kind 'table'\)")


def test_grid_and_search_options_are_refused_by_readers_that_do_not_take_them(scenes) -> None:
    with pytest.raises(ConfigError, match=r"apply to rasters \(stac-api, scene, geotiff, stac\); a cube input is read"):
        load([scenes["cube"]], crs="EPSG:32630")
    with pytest.raises(ConfigError, match=r"collection, datetime and sign apply to a search \(stac-api\) only"):
        load([scenes["scene"] / "tiffs"], collection="sentinel-1-rtc")


def test_a_synth_scene_is_read_through_its_backscatter_and_fingerprinted_by_it(scenes, tmp_path) -> None:
    for folder, rasters in ((scenes["scene"], "tiffs"), (scenes["arch"], "archive/items.json")):
        cube, direct = load([folder], chunk=16), load([folder / rasters], chunk=16)
        assert cube.attrs["source_kind"] == "scene" and cube.attrs["source"] == [str(folder)]
        assert cube.attrs["input_fingerprint"] == direct.attrs["input_fingerprint"]
        assert cube["VV"].equals(direct["VV"])
    empty = tmp_path / "scene"
    shutil.copytree(scenes["scene"], empty, ignore=shutil.ignore_patterns("*.tif"))
    shutil.rmtree(empty / "tiffs")
    res = slamgeo_here("ingest", empty, "--out", tmp_path / "c.zarr", cwd=tmp_path)
    assert_one_line_error(res, str(empty), r"a slamgeo synth scene without backscatter \(no tiffs/ folder")


# --- adding a reader: one module, one registry line ------------------------------------------------

NPZ_READER = '''
"""A reader of .npz files holding `VV` and `VH` (time, y, x) in dB and `time` (for the test)."""
import numpy as np
from slamgeo.io import storage
from slamgeo.io.cube import make_cube

SUMMARY = "a NumPy .npz of VV and VH in dB"


def can_open(source):
    return str(source).endswith(".npz") and storage.isfile(source)


def open(sources, request):
    data = np.load(sources[0])
    t, ny, nx = data["VV"].shape
    y, x = 4_100_000 - 10 * np.arange(ny) - 5.0, 230_000 + 10 * np.arange(nx) + 5.0
    return make_cube({"VV": data["VV"], "VH": data["VH"]}, data["time"], y=y, x=x, crs=32630, chunk=request.chunk)
'''


def test_a_reader_is_one_module_and_one_registry_line(tmp_path, monkeypatch) -> None:
    import numpy as np
    import pandas as pd

    (tmp_path / "npz_reader.py").write_text(textwrap.dedent(NPZ_READER))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(READERS, "npz", Reader("npz", "npz_reader"))  # the registry line
    rng = np.random.default_rng(0)
    vv = rng.normal(-12, 1, (8, 6, 5)).astype(np.float32)
    np.savez(tmp_path / "s1.npz", VV=vv, VH=vv - 7, time=pd.date_range("2017-01-03", periods=8, freq="6D").values)
    assert detect_source([tmp_path / "s1.npz"])[0] == "npz"
    out = ingest([tmp_path / "s1.npz"], tmp_path / "c.zarr", chunk=16, progress=False)
    cube = load([out])
    assert cube.attrs["source_kind"] == "cube" and np.array_equal(cube["VV"].values, vv)
    assert load([tmp_path / "s1.npz"]).attrs["source_kind"] == "npz"
    raw = {"season": {"name": "2017"}, "output": "out", "input": {"kind": "npz", "paths": ["s1.npz"]}}
    assert parse_config(raw).input.kind == "npz"
