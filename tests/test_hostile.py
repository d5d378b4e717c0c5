"""Acceptance tests: never lose a user's data, and one-line errors for every failure.

The contract checked here, through the command line as a user runs it:
A/B. A writer replaces only what it can prove is its own kind of output: one that carries
     slamgeo's stamp of that kind (the root attribute `slamgeo_output` of a Zarr store, the file
     `.slamgeo-output.json` of a checkpoint, report, parcels or scene folder). It never removes
     or changes a folder that holds an input of the command or a file it did not write (at any
     depth), even with `--overwrite`: it refuses in one line naming the path. Every file that
     existed before a command is byte-identical afterwards (new files may appear at new paths).
     (tests/test_output_rule.py: aliases of a location, sub-folders, the current folder,
     look-alikes.)
C.   Failures (a read-only location, a file where a folder goes, an unreachable object store, a
     malformed Parquet table) end with exactly one `error:` line naming the path and the cause,
     a non-zero exit code and no traceback.
D.   Season names that resolve outside the pipeline's output (`.`, `..`) are refused at
     validation, naming `season.name`.
E.   A stale temporary of a killed ingest (`cube.zarr.tmp-<hex>`, a stamped Zarr store with
     `slamgeo_complete` false) is removed by the next ingest to that output; a folder so named
     that holds foreign files, or no stamp, is left alone.

The inputs (a 32 x 32 synthetic scene, its cube, a one-epoch model, explained and clustered
results, parcels outputs) are built once per module; each case works on its own copy.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hostile_helpers import (
    UNREACHABLE_S3,
    Result,
    assert_one_line_error,
    damage,
    describe_damage,
    new_files,
    slamgeo,
    slamgeo_here,
    snapshot,
    unwritable,
)

pytestmark = pytest.mark.timeout(900)

SYNTH = ["--size", "32", "--n-dates", "8", "--seed", "1"]
TRAIN = ["--epochs", "1", "--sample-size", "300", "--batch-size", "64", "--threads", "1", "--no-progress"]
CLUSTER = ["-k", "2", "--sample-size", "100"]
PARCELS_OPTS = ["--test-fraction", "0.5"]


# --- the prepared project ----------------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    """A user's project: `ws/proj/` holds the inputs and outputs of every stage and the user's
    own notes; `ws` is its parent."""

    ws: Path

    @property
    def proj(self) -> Path:
        return self.ws / "proj"

    @property
    def scene(self) -> Path:
        return self.proj / "scene"

    @property
    def tiffs(self) -> Path:
        return self.scene / "tiffs"

    @property
    def fields(self) -> Path:
        return self.proj / "fields.gpkg"

    @property
    def cube(self) -> Path:
        return self.proj / "cube.zarr"

    @property
    def model(self) -> Path:
        return self.proj / "model"

    @property
    def results(self) -> Path:
        return self.proj / "results.zarr"

    @property
    def parcels(self) -> Path:
        return self.proj / "parcels"

    @property
    def notes(self) -> Path:
        return self.proj / "notes.txt"

    @property
    def mine(self) -> Path:
        return self.proj / "mine"


def _ok(res: Result) -> Result:
    assert res.rc == 0, f"preparing the project failed\n{res}"
    return res


def _write_fields(cube: Path, out: Path) -> None:
    """Four square parcels (quadrants of the grid), two classes of two parcels each, so that
    `slamgeo parcels` can hold one parcel of each class out."""
    import geopandas as gpd
    import rioxarray  # noqa: F401
    import xarray as xr
    from shapely.geometry import box

    with xr.open_zarr(str(cube), decode_coords="all") as ds:
        x, y, crs = ds["x"].values, ds["y"].values, ds.rio.crs
    x0, x1, y0, y1 = x.min() - 5, x.max() + 5, y.min() - 5, y.max() + 5
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    geoms = [box(x0, ym, xm, y1), box(xm, ym, x1, y1), box(x0, y0, xm, ym), box(xm, y0, x1, ym)]
    gpd.GeoDataFrame(
        {"parcel_id": [1, 2, 3, 4], "crop": ["wheat", "maize", "maize", "wheat"]}, geometry=geoms, crs=crs
    ).to_file(out, layer="parcels", driver="GPKG")


@pytest.fixture(scope="module")
def scheduler():
    """One real LocalCluster (1 worker process, 1 thread) shared by the module's commands
    through `--scheduler`, so that each command does not pay for starting one. The one-line
    error cases start their own (`--workers 1`), as a user would."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, scheduler) -> Project:
    P = Project(tmp_path_factory.mktemp("hostile-project") / "ws")
    P.proj.mkdir(parents=True)
    sch = ["--scheduler", scheduler]
    _ok(slamgeo("synth", P.scene, *SYNTH))
    _ok(slamgeo("ingest", P.tiffs, "--out", P.cube, "--chunk", "16", "--no-progress"))
    _write_fields(P.cube, P.fields)
    _ok(slamgeo("train", P.cube, "--out", P.model, *TRAIN))
    _ok(slamgeo("explain", P.cube, P.model, "--out", P.results, "--no-progress", *sch))
    _ok(slamgeo("cluster", P.results, *CLUSTER, *sch))
    _ok(slamgeo("parcels", P.results, P.fields, "--out", P.parcels, *PARCELS_OPTS, *sch))
    P.notes.write_text("field visit 2017-06-02: parcel 3 flooded\n")
    P.mine.mkdir()
    (P.mine / "notes.txt").write_text("my own notes, not slamgeo's\n")
    (P.mine / "todo.md").write_text("- ask about parcel 4\n")
    for p in (P.scene / "scene.json", P.cube, P.model / "model.json", P.results, P.parcels / "metrics.json"):
        assert p.exists(), p
    return P


@pytest.fixture
def project(prepared, tmp_path) -> Project:
    """This case's own copy of the prepared project."""
    P = Project(tmp_path / "ws")
    shutil.copytree(prepared.ws, P.ws, symlinks=True)
    return P


def _pipeline_config(path: Path, P: Project, output, *, season: str = "2017", dask: dict) -> Path:
    """A season pipeline on the project's cube, reusing its model (no training), report off."""
    raw = {
        "season": {"name": season},
        "output": str(output),
        "input": {"kind": "cube", "paths": [str(P.cube)]},
        "parcels": {"path": str(P.fields), "test_fraction": 0.5},
        "chunk": 16,
        "dask": dask,
        "model": {"checkpoint": str(P.model)},
        "kmeans": {"k": 2, "sample_size": 100},
        "report": {"enabled": False},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


# --- B: no writer damages what is there --------------------------------------------------------

TARGETS = {
    "inputs": lambda P: P.proj,  # the folder holding the command's inputs (and the user's notes)
    "parent": lambda P: P.ws,  # its parent
    "checkpoint": lambda P: P.model,  # a checkpoint folder (model.json, model.safetensors)
    "foreign": lambda P: P.mine,  # a folder of the user's own files
    "file": lambda P: P.notes,  # a regular file
}


def _writer_args(writer: str, P: Project, target: Path, tmp: Path, scheduler: str) -> list:
    sch = ["--scheduler", scheduler]
    if writer == "synth":
        return ["synth", target, *SYNTH]
    if writer == "ingest":
        return ["ingest", P.tiffs, "--out", target, "--chunk", "16", "--no-progress"]
    if writer == "train":
        return ["train", P.cube, "--out", target, *TRAIN]
    if writer == "explain":
        return ["explain", P.cube, P.model, "--out", target, "--no-progress", *sch]
    if writer == "cluster":  # writes into the results store it is given
        return ["cluster", target, *CLUSTER, *sch]
    if writer == "parcels":
        return ["parcels", P.results, P.fields, "--out", target, *PARCELS_OPTS, *sch]
    if writer == "report":
        return ["report", P.results, "--out", target]
    if writer == "run":
        return ["run", _pipeline_config(tmp / "season.yaml", P, target, dask={"scheduler": scheduler})]
    raise AssertionError(writer)


# what the refusal says it found there (lenient: the wording is the library's)
REFUSAL = r"hold|contain|exist|not an? |input|found|refus|file|folder"
HAS_OVERWRITE = {"synth", "ingest", "train", "explain", "cluster", "parcels"}
WRITERS = ("synth", "ingest", "train", "explain", "cluster", "parcels", "report", "run")
WRITER_CASES = [
    pytest.param(w, t, ow, id=f"{w}-{t}-{'overwrite' if ow else 'plain'}")
    for w in WRITERS
    for t in TARGETS
    for ow in ((False, True) if w in HAS_OVERWRITE else (False,))
]


def _expected(writer: str, target: str, overwrite: bool) -> str:
    """'replace': the target is the writer's own kind of output and --overwrite is given, so it
    may be replaced; 'either': `run` writes into a new `<output>/<season>/` folder below the
    target, so it may succeed or refuse; 'refuse' otherwise (A: the target holds inputs or
    files slamgeo did not write, or is a file)."""
    if writer == "train" and target == "checkpoint" and overwrite:
        return "replace"
    if writer == "run" and target != "file":
        return "either"
    return "refuse"


@pytest.mark.parametrize(("writer", "target", "overwrite"), WRITER_CASES)
def test_writer_never_damages_existing_files(project, tmp_path, scheduler, writer, target, overwrite):
    P = project
    out = TARGETS[target](P)
    args = _writer_args(writer, P, out, tmp_path, scheduler) + (["--overwrite"] if overwrite else [])
    before = snapshot(P.ws)
    res = slamgeo_here(*args, cwd=tmp_path)
    after = snapshot(P.ws)

    expected = _expected(writer, target, overwrite)
    exempt = (out.relative_to(P.ws).as_posix(),) if expected == "replace" else ()
    problems = damage(before, after, exempt=exempt)
    assert not problems, f"{describe_damage(problems)}\n{res}"
    if expected == "refuse":
        assert_one_line_error(res, [out], REFUSAL)
    elif expected == "replace":
        assert res.rc == 0, str(res)
        assert (out / "model.json").is_file() and (out / "model.safetensors").is_file()
    elif res.rc != 0:
        assert_one_line_error(res, [out])


# --- C: one line, no traceback -----------------------------------------------------------------

READ_ONLY = r"permission|not permitted|read-only|not writable|cannot (create|write)|unwritable"
IS_A_FILE = r"file|not a (folder|directory)|exists"
UNREACHABLE = r"connect|endpoint|unreachable|refused"


@dataclass
class ErrorCase:
    args: list
    names: list  # the error line names one of these (a path, a URL, a key)
    cause: str  # regular expression the error line matches
    env: dict = field(default_factory=dict)
    locked: list = field(default_factory=list)  # folders made unwritable while the command runs
    locked_deep: list = field(default_factory=list)  # ... with everything in them
    absent: list = field(default_factory=list)  # outputs that must not exist afterwards


def _ro(tmp: Path) -> Path:
    ro = tmp / "ro"
    ro.mkdir()
    return ro


def _table(path: Path, **columns) -> Path:
    """A long Parquet table as tests/test_ingest.py writes them: sample_id, timestamp, S1 DN."""
    base = {
        "sample_id": ["a", "a", "b", "b"],
        "timestamp": pd.to_datetime(["2023-01-01", "2023-01-11", "2023-01-01", "2023-01-11"]),
        "S1-SIGMA0-VV": np.array([1000, 1100, 1200, 1300], np.uint16),
        "S1-SIGMA0-VH": np.array([500, 510, 520, 530], np.uint16),
    }
    base.update(columns)
    pd.DataFrame(base).to_parquet(path)
    return path


def _c_readonly_run(P, tmp):
    ro = _ro(tmp)
    cfg = _pipeline_config(tmp / "season.yaml", P, ro / "out", dask={"n_workers": 1})
    return ErrorCase(["run", cfg], [ro], READ_ONLY, locked=[ro])


def _c_readonly_train(P, tmp):
    ro = _ro(tmp)
    return ErrorCase(["train", P.cube, "--out", ro / "model", *TRAIN], [ro], READ_ONLY, locked=[ro])


def _c_readonly_explain(P, tmp):
    ro = _ro(tmp)
    return ErrorCase(
        ["explain", P.cube, P.model, "--out", ro / "results.zarr", "--no-progress", "--workers", "1"],
        [ro],
        READ_ONLY,
        locked=[ro],
    )


def _c_readonly_report(P, tmp):
    ro = _ro(tmp)
    return ErrorCase(["report", P.results, "--out", ro / "report"], [ro], READ_ONLY, locked=[ro])


def _c_readonly_synth(P, tmp):
    ro = _ro(tmp)
    return ErrorCase(["synth", ro / "scene", *SYNTH], [ro], READ_ONLY, locked=[ro])


def _c_readonly_cluster(P, tmp):
    # cluster writes into the results store: the store and the folder holding it are read-only
    return ErrorCase(
        ["cluster", P.results, *CLUSTER, "--overwrite", "--workers", "1"],
        [P.proj],
        READ_ONLY,
        locked=[P.proj],
        locked_deep=[P.results],
    )


def _c_readonly_ingest(P, tmp):
    ro = _ro(tmp)
    return ErrorCase(
        ["ingest", P.tiffs, "--out", ro / "cube.zarr", "--chunk", "16", "--no-progress"], [ro], READ_ONLY, locked=[ro]
    )


def _c_file_run(P, tmp):
    cfg = _pipeline_config(tmp / "season.yaml", P, P.notes, dask={"n_workers": 1})
    return ErrorCase(["run", cfg], [P.notes], IS_A_FILE)


def _c_file_explain(P, tmp):
    return ErrorCase(
        ["explain", P.cube, P.model, "--out", P.notes, "--no-progress", "--workers", "1"], [P.notes], IS_A_FILE
    )


def _c_file_report(P, tmp):
    return ErrorCase(["report", P.results, "--out", P.notes], [P.notes], IS_A_FILE)


def _c_s3_synth_out(P, tmp):
    return ErrorCase(["synth", "s3://bucket/scene", *SYNTH], ["bucket/scene"], UNREACHABLE, env=UNREACHABLE_S3)


def _c_s3_train_out(P, tmp):
    return ErrorCase(
        ["train", P.cube, "--out", "s3://bucket/model", *TRAIN], ["bucket/model"], UNREACHABLE, env=UNREACHABLE_S3
    )


def _c_s3_ingest_in(P, tmp):
    return ErrorCase(
        ["ingest", "s3://bucket/x.parquet", "--out", tmp / "cube.zarr", "--no-progress"],
        ["bucket/x.parquet"],
        UNREACHABLE,
        env=UNREACHABLE_S3,
        absent=[tmp / "cube.zarr"],
    )


def _c_s3_report_in(P, tmp):
    return ErrorCase(
        ["report", "s3://bucket/x/results.zarr", "--out", tmp / "report"],
        ["bucket/x/results.zarr"],
        UNREACHABLE,
        env=UNREACHABLE_S3,
        absent=[tmp / "report" / "index.html"],
    )


def _c_s3_run_out(P, tmp):
    cfg = _pipeline_config(tmp / "season.yaml", P, "s3://bucket/x", dask={"n_workers": 1})
    return ErrorCase(["run", cfg], ["bucket/x"], UNREACHABLE, env=UNREACHABLE_S3)


def _c_parquet_string_band(P, tmp):
    table = _table(tmp / "series.parquet", **{"S1-SIGMA0-VV": ["high", "low", "1200", "n/a"]})
    return ErrorCase(
        ["ingest", table, "--out", tmp / "cube.zarr", "--no-progress"],
        [table],
        r"S1-SIGMA0-VV",
        absent=[tmp / "cube.zarr"],
    )


def _c_parquet_bad_timestamp(P, tmp):
    table = _table(tmp / "series.parquet", timestamp=["2023-01-01", "2023-01-11", "2023-01-01", "next tuesday"])
    return ErrorCase(
        ["ingest", table, "--out", tmp / "cube.zarr", "--no-progress"],
        [table],
        r"timestamp|date",
        absent=[tmp / "cube.zarr"],
    )


ERROR_CASES = {
    "readonly-run": _c_readonly_run,
    "readonly-train": _c_readonly_train,
    "readonly-explain": _c_readonly_explain,
    "readonly-report": _c_readonly_report,
    "readonly-synth": _c_readonly_synth,
    "readonly-cluster": _c_readonly_cluster,
    "readonly-ingest": _c_readonly_ingest,
    "file-run": _c_file_run,
    "file-explain": _c_file_explain,
    "file-report": _c_file_report,
    "s3-synth-out": _c_s3_synth_out,
    "s3-train-out": _c_s3_train_out,
    "s3-ingest-in": _c_s3_ingest_in,
    "s3-report-in": _c_s3_report_in,
    "s3-run-out": _c_s3_run_out,
    "parquet-string-band": _c_parquet_string_band,
    "parquet-bad-timestamp": _c_parquet_bad_timestamp,
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
def test_failure_is_one_line_without_traceback(project, tmp_path, case):
    P = project
    c = ERROR_CASES[case](P, tmp_path)
    before = snapshot(P.ws)
    with contextlib.ExitStack() as stack:
        for p in c.locked_deep:
            stack.enter_context(unwritable(p, recursive=True))
        for p in c.locked:
            stack.enter_context(unwritable(p))
        res = slamgeo(*c.args, cwd=tmp_path, env=c.env)
    problems = damage(before, snapshot(P.ws))
    assert not problems, f"{describe_damage(problems)}\n{res}"
    assert_one_line_error(res, c.names, c.cause)
    for p in c.absent:
        assert not Path(p).exists(), f"{p} was left behind by a failed command\n{res}"


# --- D: season names outside the output ---------------------------------------------------------


@pytest.mark.parametrize("season", [".", ".."], ids=["dot", "dotdot"])
def test_season_name_outside_the_output_is_refused(project, tmp_path, scheduler, season):
    P = project
    out = P.ws / "out"
    cfg = _pipeline_config(tmp_path / "season.yaml", P, out, season=season, dask={"scheduler": scheduler})
    before = snapshot(P.ws)
    res = slamgeo("run", cfg, cwd=tmp_path)
    after = snapshot(P.ws)
    problems = damage(before, after)
    assert not problems, f"{describe_damage(problems)}\n{res}"
    outside = [f for f in new_files(before, after) if not f.startswith("out/")]
    assert not outside, f"files written outside the output {out}: {outside[:10]}\n{res}"
    assert_one_line_error(res, ["season.name"])


# --- E: the stale temporary of a killed ingest ----------------------------------------------------

STALE = "cube.zarr.tmp-0badc0de"


def _complete(store: Path) -> bool:
    import zarr

    return bool(zarr.open_group(str(store), mode="r").attrs.get("slamgeo_complete", False))


@pytest.mark.parametrize("existing", [False, True], ids=["new-output", "overwrite"])
def test_stale_ingest_temporary_is_removed(project, tmp_path, existing):
    import zarr

    P = project
    dest = P.ws / "again"
    dest.mkdir()
    stale = dest / STALE
    shutil.copytree(P.cube, stale)  # what a killed ingest leaves: a store not marked complete
    zarr.open_group(str(stale), mode="r+").attrs["slamgeo_complete"] = False
    zarr.consolidate_metadata(str(stale))
    assert not _complete(stale)
    extra = []
    if existing:
        shutil.copytree(P.cube, dest / "cube.zarr")
        extra = ["--overwrite"]
    res = slamgeo(
        "ingest", P.tiffs, "--out", dest / "cube.zarr", "--chunk", "16", "--no-progress", *extra, cwd=tmp_path
    )
    assert res.rc == 0, str(res)
    assert _complete(dest / "cube.zarr")
    left = sorted(p.name for p in dest.iterdir() if p.name.startswith("cube.zarr.tmp-"))
    assert not left, f"stale temporaries left next to the cube: {left}\n{res}"


@pytest.mark.parametrize("contents", ["notes-only", "stale-store-with-notes"])
def test_folder_named_like_a_temporary_holding_foreign_files_is_kept(project, tmp_path, contents):
    """A folder named like an ingest temporary is the user's as soon as it holds a file no
    writer of slamgeo writes: alone, or dropped into what was a stale store."""
    import zarr

    P = project
    dest = P.ws / "again"
    lookalike = dest / STALE
    if contents == "stale-store-with-notes":
        shutil.copytree(P.cube, lookalike)
        zarr.open_group(str(lookalike), mode="r+").attrs["slamgeo_complete"] = False
        zarr.consolidate_metadata(str(lookalike))
    lookalike.mkdir(parents=True, exist_ok=True)
    (lookalike / "notes.txt").write_text("not slamgeo's: keep me\n")
    before = snapshot(P.ws)
    res = slamgeo("ingest", P.tiffs, "--out", dest / "cube.zarr", "--chunk", "16", "--no-progress", cwd=tmp_path)
    problems = damage(before, snapshot(P.ws))
    assert not problems, f"{describe_damage(problems)}\n{res}"
    assert res.rc == 0, str(res)
    assert _complete(dest / "cube.zarr")
