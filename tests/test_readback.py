"""Files slamgeo reads back (a checkpoint's model.json, a season's pipeline_state.json and run
manifests, a synthetic scene's scene.json) are checked against a schema before use: a damaged
one is refused with one line naming the file and the field, where the user meets it (`slamgeo
explain`, `slamgeo run`, `slamgeo ingest`). Series too short to train on are refused with the
number of dates, the minimum and what to do (`slamgeo train`, `slamgeo synth`)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import SMALL_ARCH, class_cube
from hostile_helpers import assert_one_line_error, damage, describe_damage, slamgeo, slamgeo_here, snapshot
from pydantic import ValidationError

from slamgeo.errors import CheckpointError, InputError
from slamgeo.io.records import Record, check_record, describe, load_json
from slamgeo.io.scene import SceneMeta, read_scene_meta
from slamgeo.method.checkpoint import CheckpointMeta, load_model
from slamgeo.method.train import check_series_length, train
from slamgeo.pipeline.state import RunManifest, manifest_json, read_manifest, read_state, state_json
from slamgeo.schema import MODEL_MARKER
from slamgeo.synth import check_trainable_dates

pytestmark = pytest.mark.timeout(300)

# About the smallest season that runs every step but the report.
TINY = {
    "season": {"name": "2017"},
    "input": {"kind": "synthetic", "synthetic": {"size": 72, "n_dates": 8, "seed": 3}},
    "chunk": 36,
    "dask": {"n_workers": 1},
    "model": {"train": {"sample_size": 600, "max_epochs": 1, "batch_size": 128, "device": "cpu", "threads": 1}},
    "kmeans": {"k": 4, "sample_size": 600},
    "report": {"enabled": False},
}


@pytest.fixture(scope="module")
def season(tmp_path_factory) -> Path:
    """A season output of a real run (scene, cube, model, results, parcels, state, manifest)
    and its configuration at `<tmp>/season.yaml`; the tests copy it before they damage it."""
    from slamgeo.pipeline.config import load_config
    from slamgeo.pipeline.steps import run_pipeline

    tmp = tmp_path_factory.mktemp("readback")
    raw = {**TINY, "output": str(tmp / "out")}
    (tmp / "season.yaml").write_text(yaml.safe_dump(raw))
    summary = run_pipeline(load_config(tmp / "season.yaml"), quiet=True)
    assert not summary.failed, [(s.name, s.error) for s in summary.steps]
    return Path(summary.season_dir)


@pytest.fixture
def copy(season, tmp_path) -> Path:
    """A copy of the season output, with the configuration beside it (`../season.yaml`)."""
    out = tmp_path / "out" / "2017"
    shutil.copytree(season, out)
    raw = {**TINY, "output": str(tmp_path / "out")}
    (tmp_path / "season.yaml").write_text(yaml.safe_dump(raw))
    return out


def _assert_refused(res, before: dict, root: Path, names, cause: str) -> str:
    line = assert_one_line_error(res, names, cause)
    problems = damage(before, snapshot(root))
    assert not problems, describe_damage(problems)
    return line


# --- the records' schemas ---------------------------------------------------------------------


class _Point(Record):
    name: str
    xy: list[float]
    tags: dict[str, int] = {}


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"name": 3, "xy": [1.0]}, "field 'name': expected a string, found the number 3"),
        ({"name": "a", "xy": [1.0, "2"]}, "field 'xy[1]': expected a number, found the string \"2\""),
        ({"name": "a", "xy": None}, "field 'xy': expected a list, found null"),
        ({"name": "a", "xy": [], "tags": {"k": True}}, "field 'tags.k': expected an integer, found true"),
        ({"xy": []}, "field 'name': missing"),
        ({"name": "a", "xy": {}}, "field 'xy': expected a list, found an object"),
    ],
)
def test_a_record_of_another_shape_is_one_line_naming_the_field(data, expected):
    with pytest.raises(InputError) as err:
        check_record(data, _Point, "F.json", advice="; do X")
    assert str(err.value) == f"F.json: {expected}; do X"


def test_a_record_that_is_not_an_object_or_not_json_is_refused():
    with pytest.raises(CheckpointError, match=r"^F.json: expected a JSON object, found a list of 2 items$"):
        check_record([1, 2], _Point, "F.json", error=CheckpointError)
    with pytest.raises(InputError, match=r"^F.json: not valid JSON \(.* line 1 column 2\)$"):
        load_json("{oops", "F.json")
    with pytest.raises(InputError, match=r"^F.json: not a text file"):
        load_json(b"\x80\x81\x82", "F.json")


def test_many_problems_are_counted_after_the_first_three():
    with pytest.raises(ValidationError) as err:
        _Point.model_validate({"name": 1, "xy": [True, "a", None, 2]})
    text = describe(err.value)
    assert text.count("field '") == 3 and text.endswith("(and 1 more)") and "\n" not in text


def test_unknown_fields_are_kept_and_strings_are_not_numbers():
    p = check_record({"name": "a", "xy": [1, 2.5], "note": "new"}, _Point, "F.json")
    assert p.xy == [1.0, 2.5] and p.model_extra == {"note": "new"}
    with pytest.raises(InputError, match="field 'xy\\[0\\]': expected a number"):
        check_record({"name": "a", "xy": ["1"]}, _Point, "F.json")


# --- model.json ---------------------------------------------------------------------------------


def _set(path: str, value):
    """An edit of model.json: set the field at the dotted `path` (list indices as numbers)."""

    def edit(meta: dict) -> None:
        *head, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        node = meta
        for k in head:
            node = node[k]
        node[last] = value

    return edit


# (edit of the JSON value or its text, a regular expression the line must match)
MODEL_DAMAGE = {
    "not JSON": ("{not json", r"model\.json: unreadable metadata, not JSON"),
    "a list": ("[1, 2]", r"model\.json: expected a JSON object, found a list of 2 items"),
    "weights missing": (lambda m: m.pop("weights"), r"model\.json: metadata lacks \['weights'\]"),
    "weights a string": (_set("weights", "abc"), r"field 'weights': expected an object, found the string \"abc\""),
    "weights null": (_set("weights", None), r"field 'weights': expected an object, found null"),
    "bands a string": (_set("bands", "VV"), r"field 'bands': expected a list, found the string"),
    "n_times a string": (
        _set("architecture.n_times", "8"),
        r"field 'architecture\.n_times': expected an integer, found the string \"8\"",
    ),
    "a mean not a number": (
        _set("normalisation.mean.1", "x"),
        r"field 'normalisation\.mean\[1\]': expected a number, found the string",
    ),
    "std missing": (lambda m: m["normalisation"].pop("std"), r"field 'normalisation\.std': missing"),
    "sha256 a number": (_set("weights.sha256", 12), r"field 'weights\.sha256': expected a string, found the number 12"),
    "weights file outside": (_set("weights.file", "../w.safetensors"), r"field 'weights\.file': expected a file name"),
    "a date not a date": (_set("dates.0", "yesterday"), r"field 'dates\[0\]': expected an ISO date"),
    "gap_fill a string": (_set("gap_fill", "no"), r"field 'gap_fill': expected true or false, found the string"),
    "an unknown architecture key": (_set("architecture.depth", 4), r"field 'architecture\.depth': unknown field"),
    "checksums a list": (_set("metadata_sha256", []), r"field 'metadata_sha256': expected an object, found a list"),
    "version a string": (_set("format_version", "1"), r"format 'slamgeo-cae' version '1', expected"),
}


def _damage_model(model_dir: Path, edit) -> None:
    path = model_dir / MODEL_MARKER
    if isinstance(edit, str):
        path.write_text(edit)
        return
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta, indent=2))


@pytest.mark.parametrize("case", list(MODEL_DAMAGE))
def test_damaged_model_json_is_refused_naming_the_file_and_field(season, tmp_path, case):
    edit, cause = MODEL_DAMAGE[case]
    model = tmp_path / "model"
    shutil.copytree(season / "model", model)
    _damage_model(model, edit)
    with pytest.raises(CheckpointError) as err:
        load_model(model)
    msg = str(err.value)
    assert "\n" not in msg and str(model / MODEL_MARKER) in msg
    assert re.search(cause, msg), msg


@pytest.mark.parametrize("case", ["weights a string", "a list", "a mean not a number"])
def test_explain_refuses_a_damaged_model_in_one_line(season, tmp_path, case):
    edit, cause = MODEL_DAMAGE[case]
    model = tmp_path / "model"
    shutil.copytree(season / "model", model)
    _damage_model(model, edit)
    before = snapshot(tmp_path)
    res = slamgeo_here(
        "explain", season / "cube.zarr", model, "--out", tmp_path / "r.zarr", "--workers", "1", "--no-progress",
        cwd=tmp_path,
    )  # fmt: skip
    _assert_refused(res, before, tmp_path, [model / MODEL_MARKER], cause)
    assert not (tmp_path / "r.zarr").exists()


def test_explain_refuses_a_damaged_model_in_a_new_process(season, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(season / "model", model)
    _damage_model(model, _set("weights", None))
    before = snapshot(tmp_path)
    res = slamgeo(
        "explain", season / "cube.zarr", model, "--out", tmp_path / "r.zarr", "--workers", "1", "--no-progress",
        cwd=tmp_path, timeout=120,
    )  # fmt: skip
    _assert_refused(res, before, tmp_path, [model / MODEL_MARKER], r"field 'weights': expected an object, found null")


def test_a_written_model_json_has_the_checkpoint_shape(season):
    meta = json.loads((season / "model" / MODEL_MARKER).read_text())
    checked = CheckpointMeta.model_validate(meta)
    assert checked.architecture.n_times == 8 and checked.weights.file == "model.safetensors"


# --- pipeline_state.json and the manifests ------------------------------------------------------


def _state_edit(fn):
    def edit(path: Path) -> None:
        state = json.loads(path.read_text())
        path.write_text(json.dumps(fn(state)))

    return edit


STATE_DAMAGE = {
    "a list": (_state_edit(lambda s: list(s["steps"])), r"expected a JSON object, found a list of \d+ items"),
    "steps a list": (_state_edit(lambda s: {"steps": list(s["steps"].values())}), r"field 'steps': expected an object"),
    "a step a string": (
        _state_edit(lambda s: {"steps": {**s["steps"], "train": "done"}}),
        r"field 'steps\.train': expected an object, found the string \"done\"",
    ),
    "a status a number": (
        _state_edit(lambda s: {"steps": {**s["steps"], "train": {**s["steps"]["train"], "status": 1}}}),
        r"field 'steps\.train\.status': expected a string, found the number 1",
    ),
    "a fingerprint null": (
        _state_edit(lambda s: {"steps": {**s["steps"], "explain": {**s["steps"]["explain"], "fingerprint": None}}}),
        r"field 'steps\.explain\.fingerprint': expected a string, found null",
    ),
    "not JSON": (lambda p: p.write_text('{"steps": {'), r"not valid JSON"),
    "not text": (lambda p: p.write_bytes(b"\x80\x81\x82\x83"), r"not a text file"),
}


@pytest.mark.parametrize("case", list(STATE_DAMAGE))
def test_run_refuses_a_damaged_state_file_in_one_line(copy, case):
    edit, cause = STATE_DAMAGE[case]
    state = copy / "pipeline_state.json"
    edit(state)
    root = copy.parent.parent
    before = snapshot(root)
    res = slamgeo_here("run", root / "season.yaml", cwd=root)
    line = _assert_refused(res, before, root, [state], cause)
    assert "the pipeline state file" in line and line.endswith("remove it to run every step again")
    assert len(list((copy / "manifests").glob("run-*.json"))) == 1  # no manifest for a run that did not start


def test_a_state_and_a_manifest_written_by_a_run_read_back(season):
    state = read_state(season / "pipeline_state.json")
    assert {k: v["status"] for k, v in state["steps"].items()} == {
        "ingest": "done",
        "train": "done",
        "align": "done",
        "explain": "done",
        "cluster": "done",
        "parcels": "done",
        "drift": "done",
    }
    (path,) = (season / "manifests").glob("run-*.json")
    manifest = read_manifest(path)
    assert isinstance(manifest, RunManifest)
    assert manifest.tally == {"done": 7, "disabled": 1} and manifest.steps[-1].status == "disabled"
    assert read_state(season / "nowhere.json") == {"steps": {}}


def test_a_damaged_manifest_is_refused_naming_the_field(season, tmp_path):
    (path,) = (season / "manifests").glob("run-*.json")
    data = json.loads(path.read_text())
    data["steps"][1]["seconds"] = "3 s"
    bad = tmp_path / "run-x.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"run-x\.json: field 'steps\[1\]\.seconds': expected a number"):
        read_manifest(bad)


def test_writers_refuse_a_record_of_another_shape():
    with pytest.raises(ValueError, match="PipelineState .* field 'steps.train.status'"):
        state_json({"steps": {"train": {"status": None}}})
    with pytest.raises(ValueError, match="RunManifest .* field 'tally'"):
        manifest_json(
            {
                "started": "a",
                "finished": "b",
                "versions": {},
                "configuration": {},
                "steps": [],
                "figures": [],
                "tally": [],
            }
        )


# --- scene.json ---------------------------------------------------------------------------------


def _scene_edit(fn):
    def edit(path: Path) -> None:
        meta = json.loads(path.read_text())
        fn(meta)
        path.write_text(json.dumps(meta))

    return edit


SCENE_DAMAGE = {
    "a list": (lambda p: p.write_text("[]"), r"scene\.json: expected a JSON object, found a list of 0 items"),
    "not JSON": (lambda p: p.write_text("{"), r"scene\.json: not valid JSON"),
    "params missing": (_scene_edit(lambda m: m.pop("params")), r"field 'params': missing"),
    "n_dates a string": (
        _scene_edit(lambda m: m["params"].update(n_dates="8")),
        r"field 'params\.n_dates': expected an integer",
    ),
    "dates an object": (_scene_edit(lambda m: m.update(dates={})), r"field 'dates': expected a list, found an object"),
    "a window of 3 dates": (
        _scene_edit(lambda m: m["distinctive_windows"]["pepper"].append("2017-12-01")),
        r"field 'distinctive_windows\.pepper': List should have at most 2 items",
    ),
    "a window date not a date": (
        _scene_edit(lambda m: m["distinctive_windows"]["pepper"].__setitem__(0, "June")),
        r"field 'distinctive_windows\.pepper\[0\]': expected an ISO date",
    ),
}


@pytest.mark.parametrize("case", list(SCENE_DAMAGE))
def test_ingest_refuses_a_scene_with_a_damaged_scene_json(copy, case):
    edit, cause = SCENE_DAMAGE[case]
    scene = copy / "scene"
    edit(scene / "scene.json")
    root = copy.parent.parent
    before = snapshot(root)
    res = slamgeo_here("ingest", scene, "--out", root / "c.zarr", "--no-progress", cwd=root)
    line = _assert_refused(res, before, root, [scene / "scene.json"], cause)
    assert line.endswith("or ingest its tiffs/ folder")
    assert not (root / "c.zarr").exists()


def test_the_pipeline_reads_the_scene_windows_through_the_schema(copy):
    from slamgeo.pipeline.config import load_config
    from slamgeo.pipeline.steps import SeasonPaths, _Season

    cfg = load_config(copy.parent.parent / "season.yaml")
    season = _Season(cfg, SeasonPaths(copy), force=False, client=None, quiet=True)
    windows = season._scene_windows()
    assert set(windows) == {"pepper", "sweet potato"} and all(len(w) == 2 for w in windows.values())
    SCENE_DAMAGE["a window date not a date"][0](copy / "scene" / "scene.json")
    with pytest.raises(InputError, match=r"scene\.json: field 'distinctive_windows\.pepper\[0\]'"):
        season._scene_windows()


def test_a_written_scene_json_reads_back(season):
    meta = read_scene_meta(season / "scene")
    assert isinstance(meta, SceneMeta) and meta.params.n_dates == 8 and len(meta.dates) == 8


# --- series too short to train on ---------------------------------------------------------------


@pytest.mark.parametrize("n_times", [1, 2])
def test_train_refuses_a_cube_of_one_or_two_dates_with_advice(tmp_path, n_times):
    from slamgeo.io.cube import write_cube

    cube = tmp_path / f"short{n_times}.zarr"
    write_cube(class_cube(n_times=n_times)[0], cube, progress=False)
    before = snapshot(tmp_path)
    res = slamgeo_here("train", cube, "--out", tmp_path / "model", "--no-progress", cwd=tmp_path)
    line = _assert_refused(res, before, tmp_path, [cube], rf"{n_times} dates? found; training needs at least 8 dates")
    assert "ingest more acquisitions" in line and "--start/--end" in line
    assert not (tmp_path / "model").exists()


def test_fewer_pooling_blocks_are_advised_where_they_help():
    with pytest.raises(InputError) as err:
        check_series_length(10, 4, cube="c.zarr")
    msg = str(err.value)
    assert msg.startswith("c.zarr: 10 dates found; the model's 4 pooling blocks need at least 16 dates")
    assert "at most 3 pooling blocks" in msg and "arch" in msg
    check_series_length(16, 4)
    check_series_length(8, 3)


def test_train_names_the_cube_and_the_architecture_minimum():
    arch = {**SMALL_ARCH, "channels": [8, 8, 8, 8], "kernels": [3, 3, 3, 3]}
    with pytest.raises(InputError, match=r"^in\.zarr: 10 dates found; the model's 4 pooling blocks need at least 16"):
        train(class_cube(n_times=10)[0], arch=arch, inputs=["in.zarr"], progress=False)


def test_synth_refuses_a_scene_too_short_to_train_on(tmp_path):
    res = slamgeo_here("synth", tmp_path / "scene", "--size", "32", "--n-dates", "1", cwd=tmp_path)
    line = assert_one_line_error(
        res, ["--n-dates"], r"gives 1 date: too few to train .*at least 8.*--n-dates 8 or more"
    )
    assert line and not (tmp_path / "scene").exists()
    res = slamgeo_here("synth", tmp_path / "scene", "--n-dates", "8", "--missing-dates", "1", cwd=tmp_path)
    assert_one_line_error(res, ["--missing-dates 1"], r"gives 7 dates.*use --n-dates 9 or more")
    check_trainable_dates(8)
    check_trainable_dates(10, 2)
    with pytest.raises(InputError):
        check_trainable_dates(9, 2)


def test_the_state_file_shape_allows_fields_of_a_newer_slamgeo(tmp_path):
    path = tmp_path / "pipeline_state.json"
    path.write_text(json.dumps({"steps": {"train": {"status": "done", "fingerprint": "x", "gpu": "h200"}}, "v": 2}))
    assert read_state(path)["steps"]["train"]["gpu"] == "h200"
