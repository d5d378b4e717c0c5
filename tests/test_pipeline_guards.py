"""`slamgeo run` refuses early, redoes what is gone, and leaves the user's files alone:

- class names in `report.pairs` / `report.class_groups` that the parcels do not have, a missing
  parcels file or column, checkpoint, or a bad date are refused before anything runs;
- a step whose outputs were removed (a variable of the results store, a file of a folder) is
  redone, with every step after it, and the log line says why;
- a file slamgeo did not write inside a step's output fails that step, untouched.

One small finished season is shared by the module; each test works on its own copy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
import zarr
from helpers import step_status
from hostile_helpers import assert_one_line_error, damage, describe_damage, slamgeo_here, snapshot

from slamgeo.errors import OutputError
from slamgeo.pipeline.config import load_config
from slamgeo.pipeline.steps import STEPS, run_pipeline

pytestmark = pytest.mark.timeout(300)

SEASON = {
    "season": {"name": "2017"},
    "output": "out",
    "input": {"kind": "synthetic", "synthetic": {"size": 32, "n_dates": 8, "seed": 1}},
    "chunk": 16,
    "model": {"train": {"sample_size": 500, "max_epochs": 1, "batch_size": 256}},
    "kmeans": {"k": 3, "sample_size": 500},
    "report": {"confused_pairs": 1, "pairs": [["cotton", "tomato"]]},
}
# the classes of that scene's parcels (slamgeo.synth.scene_classes(size=32, seed=1))
CLASSES = ["cotton", "tomato", "sugar beet", "maize", "wheat"]


def _config(folder: Path, *, scheduler: str | None = None, **changes) -> Path:
    raw = json.loads(json.dumps(SEASON))
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    if scheduler:
        raw["dask"] = {"scheduler": scheduler}
    path = folder / "season.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, local_cluster) -> Path:
    """The `out` folder of one finished run of SEASON."""
    tmp = tmp_path_factory.mktemp("guards")
    summary = run_pipeline(load_config(_config(tmp)), client=local_cluster, quiet=True)
    assert step_status(summary) == {s: "done" for s in STEPS}, [s.error for s in summary.steps]
    return tmp / "out"


@pytest.fixture
def season(finished, tmp_path) -> Path:
    """A copy of the finished run's `out` in this test's folder; returns the season folder."""
    shutil.copytree(finished, tmp_path / "out", symlinks=True)
    return tmp_path / "out" / "2017"


# --------------------------------------------------------------------------- refused before any step


def test_the_synthetic_scene_knows_its_classes_without_drawing():
    from slamgeo.synth import make_scene, scene_classes

    assert scene_classes(size=32, seed=1) == CLASSES
    for size, seed in ((32, 1), (48, 0), (64, 2)):
        drawn = make_scene(size=size, seed=seed, n_dates=8).parcels["crop"]
        assert sorted(scene_classes(size=size, seed=seed)) == sorted(set(drawn)), (size, seed)


@pytest.fixture(scope="module")
def parcels_file(tmp_path_factory) -> Path:
    """Two labelled parcels on the synthetic scene's grid: wheat and maize."""
    import geopandas as gpd
    from shapely.geometry import box

    path = tmp_path_factory.mktemp("parcels") / "fields.gpkg"
    x0, y0 = 230_000.0, 4_109_680.0
    gdf = gpd.GeoDataFrame(
        {"parcel_id": [1, 2], "crop": ["wheat", "maize"]},
        geometry=[box(x0, y0, x0 + 160, y0 + 160), box(x0 + 160, y0, x0 + 320, y0 + 160)],
        crs="EPSG:32630",
    )
    gdf.to_file(path, layer="parcels", engine="pyogrio")
    return path


@pytest.mark.parametrize(
    "changes, names, cause",
    [
        (
            {"report": {"pairs": [["cotton", "banana"]]}},
            ["report.pairs[0]"],
            r"unknown class 'banana'.*synthetic scene.*'cotton', 'tomato', 'sugar beet', 'maize', 'wheat'",
        ),
        # pepper is a crop of the generator, not of this small scene's five parcels
        ({"report": {"pairs": [["pepper", "cotton"]]}}, ["report.pairs[0]"], r"unknown class 'pepper'.*'wheat'"),
        (
            {"report": {"pairs": [["cotton", "tomato"]], "class_groups": {"alike": ["cotton", "kiwi"]}}},
            ["report.class_groups.alike"],
            r"unknown class 'kiwi'.*'maize'",
        ),
        ({"report": {"pairs": [["cotton", "cotton"]]}}, ["report.pairs"], r"'cotton' paired with itself"),
        (
            {"input": {"kind": "geotiff", "paths": ["tiffs"]}, "report": {"pairs": [["cotton", "tomato"]]}},
            ["report.pairs"],
            r"parcels\.path",
        ),
        ({"model": {"checkpoint": "no-such-model"}}, ["model.checkpoint"], r"no slamgeo checkpoint"),
        ({"season": {"name": "2017", "start": "2017-13-01"}}, ["season.start"], r"not a date"),
        ({"season": {"name": "2017", "start": "2017-09-01", "end": "2017-03-01"}}, ["season.start"], r"after"),
        ({"report": {"date": "June"}}, ["report.date"], r"not a date"),
    ],
    ids=[
        "unknown-pair-class",
        "class-not-in-this-scene",
        "unknown-group-class",
        "class-with-itself",
        "pairs-without-parcels",
        "missing-checkpoint",
        "bad-start",
        "start-after-end",
        "bad-report-date",
    ],
)
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_a_configuration_its_inputs_contradict_is_refused_before_any_step(tmp_path, changes, names, cause, dry_run):
    cfg = _config(tmp_path, **changes)
    res = slamgeo_here("run", cfg, *(["--dry-run"] if dry_run else []), cwd=tmp_path)
    line = assert_one_line_error(res, names, cause)
    assert "[ingest]" not in res.output, line  # nothing ran
    assert not (tmp_path / "out").exists(), "the run wrote its output folder"


@pytest.mark.parametrize(
    "parcels, names, cause",
    [
        (
            {"report": {"pairs": [["wheat", "cotton"]]}},
            ["report.pairs[0]", "fields.gpkg"],
            r"'cotton'.*'maize', 'wheat'",
        ),
        (
            {"report": {"pairs": [["wheat", "maize"]], "class_groups": {"cereals": ["wheat", "barley"]}}},
            ["report.class_groups.cereals"],
            r"unknown class 'barley'.*column 'crop' of .*fields\.gpkg.*\['maize', 'wheat'\]",
        ),
        ({"parcels": {"class_column": "culture"}}, ["parcels.class_column"], r"'culture' is not a column.*'crop'"),
        ({"parcels": {"id_column": "fid"}}, ["parcels.id_column"], r"'fid' is not a column"),
        ({"parcels": {"path": "missing.gpkg"}}, ["parcels.path", "missing.gpkg"], r"no parcel file"),
    ],
    ids=["unknown-pair-class", "unknown-group-class", "no-class-column", "no-id-column", "no-file"],
)
def test_names_are_checked_against_the_parcels_file(tmp_path, parcels_file, parcels, names, cause):
    changes = dict(parcels)
    changes["parcels"] = {"path": str(parcels_file), **parcels.get("parcels", {})}
    if "report" not in changes:
        changes["report"] = {"pairs": None, "confused_pairs": 1}
    before = snapshot(parcels_file.parent)
    res = slamgeo_here("run", _config(tmp_path, **changes), cwd=tmp_path)
    assert_one_line_error(res, names, cause)
    assert not (tmp_path / "out").exists()
    assert not damage(before, snapshot(parcels_file.parent))


def test_names_of_the_parcels_file_are_accepted(tmp_path, parcels_file):
    changes = {"parcels": {"path": str(parcels_file)}, "report": {"pairs": [["maize", "wheat"]]}}
    summary = run_pipeline(load_config(_config(tmp_path, **changes)), dry_run=True, quiet=True)
    assert step_status(summary) == {s: "would run" for s in STEPS}


# --------------------------------------------------------------------------- outputs removed by hand


def _cube_not_complete(season: Path) -> None:
    attrs = season / "cube.zarr" / ".zattrs"
    doc = json.loads(attrs.read_text())
    doc["slamgeo_complete"] = False
    attrs.write_text(json.dumps(doc))


def _remove(rel: str):
    def remove(season: Path) -> None:
        target = next(season.glob(rel))  # a pattern: the first figure of the report
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return remove


@pytest.mark.parametrize(
    "damage_outputs, first, reason",
    [
        (_cube_not_complete, "ingest", "cube.zarr is incomplete"),
        (_remove("cube.zarr/VV"), "ingest", "cube.zarr has no variable 'VV'"),
        (_remove("scene/parcels.gpkg"), "ingest", "scene/parcels.gpkg is missing"),
        (_remove("model/model.safetensors"), "train", "model/model.safetensors is missing"),
        (_remove("results.zarr/embedding"), "explain", "results.zarr has no variable 'embedding'"),
        (_remove("results.zarr/block_done"), "explain", "results.zarr has no variable 'block_done'"),
        (_remove("results.zarr/cluster_centre"), "cluster", "results.zarr has no variable 'cluster_centre'"),
        (_remove("parcels/metrics.json"), "parcels", "parcels/metrics.json is missing"),
        (_remove("parcels/class_profiles.zarr"), "parcels", "parcels/class_profiles.zarr is missing"),
        (_remove("report/index.html"), "report", "report/index.html is missing"),
        (_remove("report/*.png"), "report", "report/"),
        (_remove("results.zarr/pair_importance"), "report", "results.zarr has no variable 'pair_importance'"),
    ],
    ids=lambda v: v if isinstance(v, str) and "/" not in v and " " not in v else None,
)
def test_a_step_whose_outputs_are_gone_would_run_with_every_step_after_it(
    season, capsys, damage_outputs, first, reason
):
    damage_outputs(season)
    capsys.readouterr()
    summary = run_pipeline(load_config(_config(season.parents[1])), dry_run=True)
    st = step_status(summary)
    i = STEPS.index(first)
    assert [st[s] for s in STEPS] == ["would skip"] * i + ["would run"] * (len(STEPS) - i), st
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith(f"[{first}]"))
    assert f"[{first}] would run: {reason}" in line, out
    if first != "report":
        assert f"[{STEPS[i + 1]}] would run: {first} would run before it" in out, out


def test_a_results_variable_removed_by_hand_is_computed_again(season, local_cluster, capsys):
    shutil.rmtree(season / "results.zarr" / "embedding")
    capsys.readouterr()
    summary = run_pipeline(load_config(_config(season.parents[1])), client=local_cluster)
    out = capsys.readouterr().out
    st = step_status(summary)
    assert [st[s] for s in STEPS] == ["skipped"] * 3 + ["done"] * 5, [s.error for s in summary.steps]
    assert "[explain] running: results.zarr has no variable 'embedding'" in out, out
    assert "[cluster] running: explain was redone before it" in out, out
    group = zarr.open_group(str(season / "results.zarr"), mode="r")
    assert {"embedding", "importance", "cluster", "pair_importance"} <= set(group.keys())
    assert (season / "results.zarr" / "embedding" / ".zarray").exists()
    # and the season is whole again
    again = run_pipeline(load_config(_config(season.parents[1])), client=local_cluster, quiet=True)
    assert step_status(again) == {s: "skipped" for s in STEPS}


def test_a_parcels_folder_without_its_marker_is_made_again(season, local_cluster):
    (season / "parcels" / "metrics.json").unlink()
    summary = run_pipeline(load_config(_config(season.parents[1])), client=local_cluster, quiet=True)
    st = step_status(summary)
    assert [st[s] for s in STEPS] == ["skipped"] * 5 + ["done"] * 3, [s.error for s in summary.steps]
    assert (season / "parcels" / "metrics.json").exists()


def test_a_changed_explain_option_replaces_the_results(season, local_cluster):
    """Another fingerprint: the store of the former options is replaced, not refused as
    "results of another run"."""
    cfg = _config(season.parents[1], gradslam={"batch_size": 512})
    summary = run_pipeline(load_config(cfg), client=local_cluster, quiet=True)
    st = step_status(summary)
    assert [st[s] for s in STEPS] == ["skipped"] * 3 + ["done"] * 5, [s.error for s in summary.steps]
    explain = next(s for s in summary.steps if s.name == "explain")
    assert explain.info["blocks_resumed_from_disk"] == 0


# --------------------------------------------------------------------------- the user's files


def _user_tiff(season: Path) -> Path:
    return next((season / "scene" / "tiffs").glob("*.tif"))


@pytest.mark.parametrize(
    "place, source, changes, args",
    [
        # a GeoTIFF of the user's among the scene's: --force redoes ingest, which replaces the scene
        ("scene/tiffs/my_field.tif", _user_tiff, {}, ["--force"]),
        # a note inside the parcels' Zarr store: another parcels seed redoes the parcels step
        ("parcels/parcels.zarr/note.txt", None, {"parcels": {"seed": 1}}, []),
        # inside a variable of the results store: another k replaces the cluster variables
        ("results.zarr/cluster/note.txt", None, {"kmeans": {"k": 4}}, []),
        # beside the results' variables: the clustering is written into that store
        ("results.zarr/NOTES.md", None, {"kmeans": {"k": 4}}, []),
        # in the report folder: another date redoes the report
        ("report/notes/summary.txt", None, {"report": {"date": "2017-02-01"}}, []),
        # inside the cube, with --force
        ("cube.zarr/VV/note.txt", None, {}, ["--force"]),
    ],
    ids=["tiff-in-scene", "note-in-parcels-zarr", "note-in-results-variable", "note-in-results", "report", "cube"],
)
def test_a_file_of_the_users_inside_an_output_fails_the_step_untouched(
    season, local_cluster, place, source, changes, args
):
    user_file = season / place
    user_file.parent.mkdir(parents=True, exist_ok=True)
    if source is None:
        user_file.write_text("my own notes, not slamgeo's\n")
    else:
        shutil.copyfile(source(season), user_file)
    before = snapshot(season)
    cfg = _config(season.parents[1], scheduler=local_cluster.scheduler.address, **changes)
    res = slamgeo_here("run", cfg, *args, cwd=season.parents[1])
    assert_one_line_error(res, [user_file.name], r"refus")
    # the state file records the failed step; nothing else changed, and the user's file is there
    problems = damage(before, snapshot(season), exempt=("pipeline_state.json",))
    assert not problems, describe_damage(problems)
    assert user_file.exists()


def test_a_scene_on_object_storage_with_a_file_of_the_users_is_not_replaced(local_cluster, tmp_path):
    """The scene is staged locally and uploaded: the folder on object storage is claimed first."""
    from slamgeo.io import storage
    from slamgeo.synth import make_scene, write_scene

    root = "memory://slamgeo-guards/out"
    scene_dir = f"{root}/2017/scene"
    write_scene(make_scene(size=16, n_dates=8, seed=1), scene_dir)
    storage.write_text(f"{scene_dir}/notes.txt", "mine")
    cfg = load_config(_config(tmp_path, output=root, report={"pairs": None}))
    try:
        summary = run_pipeline(cfg, force=True, client=local_cluster, quiet=True)
        failed = [s for s in summary.steps if s.status == "failed"]
        assert [s.name for s in failed] == ["ingest"] and "notes.txt" in failed[0].error, failed
        assert storage.read_text(f"{scene_dir}/notes.txt") == "mine"
        assert storage.exists(f"{scene_dir}/scene.json")
        with pytest.raises(OutputError, match="notes.txt"):
            storage.claim_output(scene_dir, storage.SCENE, overwrite=True)
    finally:
        storage.remove("memory://slamgeo-guards")


WORLDCEREAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "worldcereal" / "fra_2023_lpis_dekad.parquet"


@pytest.mark.skipif(not WORLDCEREAL.exists(), reason="the WorldCereal table is not in shared/data")
def test_class_groups_of_a_table_input_are_checked_before_training(tmp_path, local_cluster):
    """A table's labels are coordinates of its cube: checked once it is ingested, before training."""
    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "pipelines" / "worldcereal.yaml").read_text())
    raw["input"]["paths"] = [str(WORLDCEREAL)]
    raw["output"] = "out"
    raw["report"]["class_groups"]["meadows"].append("kiwi")
    raw["dask"] = {"scheduler": local_cluster.scheduler.address}
    (tmp_path / "season.yaml").write_text(yaml.safe_dump(raw))
    res = slamgeo_here("run", tmp_path / "season.yaml", cwd=tmp_path)
    assert_one_line_error(res, ["report.class_groups.meadows"], r"unknown class 'kiwi'.*label_name.*'maize'")
    assert "[ingest] done" in res.output and "[train]" not in res.output
    assert not (tmp_path / "out" / "2023" / "model").exists()
