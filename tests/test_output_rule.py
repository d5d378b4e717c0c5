"""The output rule against aliases, sub-folders, the current folder and look-alikes.

Through the command line as a user runs it: an output spelled as another name of an input (a
`file://` URL, a symbolic link, `./`, a trailing slash, `..`) is the input; a user's file at
any depth inside an output refuses its replacement; the current folder is never an output; a
folder that only looks like slamgeo's (no stamp), or is named like one of its temporaries, is
never replaced or removed; an unknown URL scheme and a read-only store are one line naming the
location. Every case checks the exit code, the one `error:` line, no traceback, and that
every file that was there is unchanged. And, directly, `storage.contains` / `same_location`.

The project (a 32 x 32 scene, its cube, a one-epoch model, clustered results, parcels outputs)
is written by slamgeo once per module; each case works on its own copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hostile_helpers import (
    assert_one_line_error,
    damage,
    describe_damage,
    slamgeo,
    slamgeo_here,
    snapshot,
    unwritable,
)

from slamgeo.errors import OutputError
from slamgeo.io import storage

pytestmark = pytest.mark.timeout(600)

SYNTH = ["--size", "32", "--n-dates", "8", "--seed", "1"]
TRAIN = ["--epochs", "1", "--sample-size", "300", "--batch-size", "64", "--threads", "1", "--no-progress"]
READ_ONLY = r"permission|not permitted|read-only|not writable|cannot (create|write)|unwritable"


# --- storage.contains / same_location ------------------------------------------------------------


@pytest.fixture
def tree(tmp_path, monkeypatch) -> Path:
    """`tmp_path` as the current folder, holding data/cube.zarr/VV/0.0.0, data/sub/ and a
    symbolic link link -> data."""
    (tmp_path / "data" / "cube.zarr" / "VV").mkdir(parents=True)
    (tmp_path / "data" / "cube.zarr" / "VV" / "0.0.0").write_bytes(b"x")
    (tmp_path / "data" / "sub").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "alias",
    [
        "data/cube.zarr",
        "./data/cube.zarr",
        "data/cube.zarr/",
        "data/./cube.zarr//",
        "data/sub/../cube.zarr",
        "link/cube.zarr",
        "link/sub/../cube.zarr",
        "file://{root}/data/cube.zarr",
        "file://{root}/data/cube.zarr/",
        "file://{root}/link/sub/../cube.zarr",
        "{root}/data/cube.zarr",
    ],
)
def test_every_spelling_of_a_location_is_the_same_location(tree, alias):
    alias = alias.format(root=tree)
    cube = tree / "data" / "cube.zarr"
    assert storage.same_location(alias, cube) and storage.same_location(cube, alias)
    assert storage.contains(alias, cube / "VV" / "0.0.0") and storage.contains("link", alias)
    assert not storage.contains(alias, tree / "data") and not storage.contains(alias, tree / "data" / "sub")


def test_a_hard_link_of_a_file_is_the_same_file(tree):
    a = tree / "data" / "a.parquet"
    a.write_bytes(b"table")
    os.link(a, tree / "b.parquet")
    (tree / "c.parquet").write_bytes(b"table")
    assert storage.same_location("b.parquet", a) and storage.same_location(f"file://{tree}/b.parquet", a)
    assert not storage.same_location("c.parquet", a)


def test_a_location_that_does_not_exist_yet_is_placed_by_its_parents(tree):
    inner = "link/sub/new/deeper.zarr"  # below a symbolic link, and absent
    assert storage.contains(tree / "data", inner) and storage.contains("data/sub", inner)
    assert storage.contains(f"file://{tree}/data/", inner) and storage.contains(inner, f"{inner}/x")
    assert not storage.contains(inner, "data/sub") and not storage.contains("data/cube.zarr", inner)
    assert storage.same_location("new/../absent.zarr", "absent.zarr")
    assert not storage.contains(tree / "dat", tree / "data" / "x")  # a prefix of the name is not a parent


def test_urls_on_object_storage_compare_by_protocol_bucket_and_key():
    assert storage.same_location("s3://bucket/x/cube.zarr/", "s3a://bucket/x/cube.zarr")
    assert storage.contains("s3://bucket/x", "s3://bucket/x/cube.zarr/VV/0.0.0")
    assert storage.contains("s3://bucket", "s3://bucket/x")
    assert not storage.contains("s3://bucket/x", "s3://bucket/xy")
    assert not storage.same_location("s3://bucket/x", "memory://bucket/x")
    assert not storage.contains("s3://bucket/x", "/bucket/x")


def test_the_output_rule_uses_the_same_comparison(tree):
    cube = tree / "data" / "cube.zarr"
    for alias, relation in [
        (f"file://{cube}/", "is"),
        ("link/cube.zarr", "is"),
        ("link", "holds"),
        ("./data/cube.zarr/VV/new.zarr", "lies inside"),
    ]:
        with pytest.raises(OutputError, match=f"the output {relation} the input"):
            storage.claim_output(alias, storage.CUBE, overwrite=True, inputs=["data/cube.zarr"])


# --- the project --------------------------------------------------------------------------------


def _ok(res):
    assert res.rc == 0, f"preparing the project failed\n{res}"
    return res


def _write_fields(cube: Path, out: Path) -> None:
    """Four square parcels (quadrants of the grid), two classes of two parcels each."""
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
def prepared(tmp_path_factory) -> Path:
    """`proj/` with scene/, cube.zarr, model/, results.zarr (clustered), fields.gpkg, parcels/
    and the user's notes.txt, all but the notes written by slamgeo."""
    import dask

    from slamgeo.jobs.cluster import cluster_store
    from slamgeo.jobs.explain import explain_store
    from slamgeo.jobs.parcels import parcels_store

    proj = tmp_path_factory.mktemp("output-rule") / "proj"
    proj.mkdir()
    _ok(slamgeo_here("synth", "scene", *SYNTH, cwd=proj))
    _ok(slamgeo_here("ingest", "scene/tiffs", "--out", "cube.zarr", "--chunk", "16", "--no-progress", cwd=proj))
    _ok(slamgeo_here("train", "cube.zarr", "--out", "model", *TRAIN, cwd=proj))
    _write_fields(proj / "cube.zarr", proj / "fields.gpkg")
    with dask.config.set(scheduler="threads"):
        explain_store(proj / "cube.zarr", proj / "model", proj / "results.zarr", client=None, progress=False)
        cluster_store(proj / "results.zarr", 2, sample_size=100)
        parcels_store(proj / "results.zarr", proj / "fields.gpkg", proj / "parcels", test_fraction=0.5)
    (proj / "notes.txt").write_text("field visit 2017-06-02: parcel 3 flooded\n")
    return proj


@pytest.fixture
def proj(prepared, tmp_path) -> Path:
    """This case's own copy of the prepared project."""
    out = tmp_path / "proj"
    shutil.copytree(prepared, out, symlinks=True)
    return out


def _refused(res, proj: Path, before: dict, names, cause: str) -> str:
    problems = damage(before, snapshot(proj))
    assert not problems, f"{describe_damage(problems)}\n{res}"
    return assert_one_line_error(res, names, cause)


# --- 1. another name of the input is the input ------------------------------------------------------

ALIASES = {
    "file-url": lambda p: f"file://{p}/cube.zarr",
    "file-url-slash": lambda p: f"file://{p}/cube.zarr/",
    "dot-slash": lambda p: "./cube.zarr",
    "trailing-slash": lambda p: "cube.zarr/",
    "dotdot": lambda p: "scene/../cube.zarr",
    "symlink": lambda p: "link.zarr",
    "absolute": lambda p: str(p / "cube.zarr"),
}


@pytest.mark.parametrize("alias", list(ALIASES))
def test_ingest_never_replaces_its_input_under_another_name(proj, alias):
    (proj / "link.zarr").symlink_to(proj / "cube.zarr")
    out = ALIASES[alias](proj)
    before = snapshot(proj)
    res = slamgeo_here("ingest", "cube.zarr", "--out", out, "--overwrite", "--start", "2017-02-01", cwd=proj)
    _refused(res, proj, before, [out.rstrip("/"), str(Path(out))], "the output is the input")


def test_an_input_given_as_a_url_is_the_output_given_as_a_path(proj):
    before = snapshot(proj)
    res = slamgeo_here("ingest", f"file://{proj}/cube.zarr/", "--out", "cube.zarr", "--overwrite", cwd=proj)
    _refused(res, proj, before, ["cube.zarr"], "the output is the input")


# --- 2. a user's file at any depth inside an output ---------------------------------------------------

NESTED = {
    "synth": (["synth", "scene", *SYNTH], "scene/tiffs/notes.txt"),
    "ingest": (
        ["ingest", "scene/tiffs", "--out", "cube.zarr", "--chunk", "16", "--no-progress"],
        "cube.zarr/VV/notes.txt",
    ),
    "explain": (
        ["explain", "cube.zarr", "model", "--out", "results.zarr", "--no-progress"],
        "results.zarr/importance/notes.txt",
    ),
    "parcels": (["parcels", "results.zarr", "fields.gpkg", "--out", "parcels"], "parcels/parcels.zarr/notes.txt"),
    "train": (["train", "cube.zarr", "--out", "model", *TRAIN], "model/old/model.json"),
}


@pytest.mark.parametrize("writer", list(NESTED))
def test_overwrite_never_removes_a_file_of_the_user_inside_an_output(proj, writer):
    args, mine = NESTED[writer]
    (proj / mine).parent.mkdir(parents=True, exist_ok=True)
    (proj / mine).write_text("my own notes, not slamgeo's\n")
    before = snapshot(proj)
    res = slamgeo_here(*args, "--overwrite", cwd=proj)
    output, inner = mine.split("/", 1)
    line = _refused(res, proj, before, [output], "that slamgeo did not write; refusing")
    assert inner in line, line


# --- 3. the current folder ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["train", "{proj}/cube.zarr", "--out", ".", *TRAIN],
        ["train", "{proj}/cube.zarr", "--out", "./", "--overwrite", *TRAIN],
        ["train", "{proj}/cube.zarr", "--out", "{here}", *TRAIN],
        ["train", "{proj}/cube.zarr", "--out", "..", "--overwrite", *TRAIN],
        ["ingest", "{proj}/scene/tiffs", "--out", ".", "--no-progress"],
        ["explain", "{proj}/cube.zarr", "{proj}/model", "--out", ".", "--no-progress"],
        ["synth", ".", *SYNTH],
    ],
    ids=["train-dot", "train-dot-slash-overwrite", "train-absolute", "train-parent", "ingest", "explain", "synth"],
)
def test_the_current_folder_is_never_an_output(proj, tmp_path, args):
    here = tmp_path / "ws" / "empty"
    here.mkdir(parents=True)
    args = [a.format(proj=proj, here=here) for a in args]
    out = args[args.index("--out") + 1] if "--out" in args else args[1]
    before = snapshot(tmp_path)
    res = slamgeo_here(*args, cwd=here)
    _refused(res, tmp_path, before, [out], r"current folder")
    assert here.is_dir() and not any(here.iterdir()), sorted(here.iterdir())
    assert sorted(p.name for p in here.parent.iterdir()) == ["empty"]


# --- 4. look-alikes: no stamp, no replacement ------------------------------------------------------------


def test_a_user_folder_that_looks_like_a_checkpoint_is_not_replaced(proj):
    mine = proj / "mine"
    mine.mkdir()
    (mine / "model.json").write_text('{"my": "settings"}')
    before = snapshot(proj)
    res = slamgeo_here("train", "cube.zarr", "--out", "mine", "--overwrite", *TRAIN, cwd=proj)
    _refused(res, proj, before, ["mine"], "without slamgeo's stamp; refusing|without slamgeo's stamp")


def test_a_user_folder_that_looks_like_a_report_is_not_replaced(proj):
    site = proj / "site"
    site.mkdir()
    (site / "index.html").write_text("<html>my page</html>")
    (site / "report.json").write_text("{}")
    before = snapshot(proj)
    res = slamgeo_here("report", "results.zarr", "--out", "site", "--overwrite", cwd=proj)
    _refused(res, proj, before, ["site"], "without slamgeo's stamp")


def test_a_store_without_the_stamp_is_not_replaced(proj):
    import zarr

    group = zarr.open_group(str(proj / "cube.zarr"), mode="r+")
    del group.attrs[storage.STAMP_ATTR]  # as slamgeo wrote stores before the stamp, or a look-alike
    zarr.consolidate_metadata(str(proj / "cube.zarr"))
    before = snapshot(proj)
    res = slamgeo_here("ingest", "scene/tiffs", "--out", "cube.zarr", "--overwrite", "--no-progress", cwd=proj)
    _refused(res, proj, before, ["cube.zarr"], "Zarr store without slamgeo's stamp")


def test_a_user_folder_named_like_a_stale_temporary_is_kept(proj):
    lookalike = proj / "model.tmp-999999-deadbeef"  # no such process
    lookalike.mkdir()
    (lookalike / "model.json").write_text('{"my": "settings"}')
    (lookalike / "model.safetensors").write_bytes(b"mine")
    before = snapshot(proj)
    res = slamgeo_here("train", "cube.zarr", "--out", "model", "--overwrite", *TRAIN, cwd=proj)
    assert res.rc == 0, str(res)
    problems = damage(before, snapshot(proj), exempt=("model",))
    assert not problems, f"{describe_damage(problems)}\n{res}"
    assert storage.read_stamp(proj / "model")["kind"] == "checkpoint"


# --- 5. an unknown URL scheme --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["ingest", "scene/tiffs", "--out", "foo://bar/x.zarr", "--no-progress"],
        ["train", "cube.zarr", "--out", "foo://bar/model", *TRAIN],
        ["synth", "foo://bar/scene", *SYNTH],
    ],
    ids=["ingest", "train", "synth"],
)
def test_an_unknown_url_scheme_is_one_line(proj, args):
    before = snapshot(proj)
    res = slamgeo_here(*args, cwd=proj)
    _refused(res, proj, before, ["foo://bar/"], r"unknown URL scheme 'foo://'")


# --- 6. a read-only results store ---------------------------------------------------------------------


def test_cluster_on_a_read_only_store_names_the_store(proj):
    store = proj / "results.zarr"
    before = snapshot(proj)
    with unwritable(store, recursive=True):
        res = slamgeo("cluster", store, "-k", "2", "--sample-size", "100", "--overwrite", "--workers", "1", cwd=proj)
    line = _refused(res, proj, before, [store], READ_ONLY)
    assert "results store" in line, line
    assert not [p.name for p in proj.iterdir() if ".tmp-" in p.name]


# --- on object storage: the same rule, from one recursive listing --------------------------------------


def test_the_stamp_and_the_sub_folder_rule_on_object_storage(s3):
    root = "s3://slamgeo-test/rule"
    with storage.staged_folder(f"{root}/model", storage.CHECKPOINT) as tmp:
        (tmp / "model.json").write_text("{}")
        (tmp / "model.safetensors").write_bytes(b"w")
    assert storage.read_stamp(f"{root}/model/")["kind"] == "checkpoint"
    assert storage.claim_output(f"{root}/model/", storage.CHECKPOINT, overwrite=True) == "own"
    s3.pipe("slamgeo-test/rule/model/old/notes.txt", b"mine")
    with pytest.raises(
        OutputError, match=r"rule/model: a slamgeo checkpoint output, but it also holds 1 entry \(old/notes.txt\)"
    ):
        storage.claim_output(f"{root}/model", storage.CHECKPOINT, overwrite=True)
    s3.pipe({"slamgeo-test/rule/look/model.json": b"{}", "slamgeo-test/rule/look/model.safetensors": b"w"})
    with pytest.raises(OutputError, match="rule/look: holds 2 entries .* without slamgeo's stamp"):
        storage.claim_output(f"{root}/look", storage.CHECKPOINT, overwrite=True)
    with pytest.raises(OutputError, match="the output is the input"):
        storage.claim_output(
            f"{root}/look/", storage.CHECKPOINT, overwrite=True, inputs=["s3a://slamgeo-test/rule/look"]
        )
    assert s3.cat("slamgeo-test/rule/model/old/notes.txt") == b"mine"
