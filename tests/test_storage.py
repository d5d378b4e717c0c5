"""The output rule of `slamgeo.io.storage`: a writer replaces only its own kind of output, stamped
by slamgeo, never inputs or files it did not write (at any depth); stale temporaries of killed
writers are removed, others kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from slamgeo.errors import OutputError, SlamgeoError
from slamgeo.io import storage


def _zarr_store(path, attrs: dict, stamp: storage.OutputKind | None = None) -> None:
    """A small Zarr store (format 2) with root `attrs`, and slamgeo's stamp of `stamp`."""
    path.mkdir(parents=True)
    (path / ".zgroup").write_text('{"zarr_format": 2}')
    (path / ".zattrs").write_text(json.dumps({**attrs, **(storage.stamp_attrs(stamp) if stamp else {})}))
    (path / "VV").mkdir()
    (path / "VV" / ".zarray").write_text("{}")
    (path / "VV" / "0.0.0").write_bytes(b"x")


def _checkpoint(path, *, stamped: bool = True) -> None:
    path.mkdir(parents=True)
    (path / "model.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"w")
    if stamped:
        storage.stamp_folder(path, storage.CHECKPOINT)


def test_absent_and_empty_are_free(tmp_path):
    assert storage.claim_output(tmp_path / "new", storage.CUBE) == "absent"
    (tmp_path / "empty").mkdir()
    assert storage.claim_output(tmp_path / "empty", storage.REPORT) == "empty"


def test_own_kind_needs_overwrite(tmp_path):
    _checkpoint(tmp_path / "m")
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        storage.claim_output(tmp_path / "m", storage.CHECKPOINT)
    assert storage.claim_output(tmp_path / "m", storage.CHECKPOINT, overwrite=True) == "own"


@pytest.mark.parametrize(
    "attrs, stamp, kind, ok",
    [
        ({"slamgeo_complete": True}, storage.CUBE, storage.CUBE, True),
        ({"slamgeo_complete": False}, storage.RESULTS, storage.RESULTS, True),
        ({"slamgeo_complete": True}, storage.CUBE, storage.RESULTS, False),
        # what slamgeo wrote before outputs carried its stamp, or a look-alike: never replaced
        ({"slamgeo_complete": True}, None, storage.CUBE, False),
        ({storage.KIND_ATTR: "cube", "slamgeo_complete": True}, None, storage.CUBE, False),
        ({"slamgeo_complete": True, "model_checksum": "ab"}, None, storage.RESULTS, False),
        ({storage.STAMP_ATTR: {"kind": "cube"}}, None, storage.CUBE, False),  # no id: not a stamp
        ({"title": "someone else's store"}, None, storage.CUBE, False),
    ],
)
def test_zarr_kinds(tmp_path, attrs, stamp, kind, ok):
    _zarr_store(tmp_path / "s.zarr", attrs, stamp)
    if ok:
        assert storage.claim_output(tmp_path / "s.zarr", kind, overwrite=True) == "own"
    else:
        with pytest.raises(OutputError, match="refusing to replace it"):
            storage.claim_output(tmp_path / "s.zarr", kind, overwrite=True)


def test_the_stamp_of_a_store_and_of_a_folder(tmp_path):
    _zarr_store(tmp_path / "s.zarr", {}, storage.CUBE)
    _checkpoint(tmp_path / "m")
    a, b = storage.read_stamp(tmp_path / "s.zarr"), storage.read_stamp(tmp_path / "m")
    assert a is not None and a["kind"] == "cube" and len(a["id"]) == 16 and a["version"]
    assert b is not None and b["kind"] == "checkpoint" and b["id"] != a["id"]
    assert storage.store_kind(tmp_path / "s.zarr") == "cube" and storage.store_kind(tmp_path / "m") is None
    assert storage.read_stamp(tmp_path / "absent") is None


def test_foreign_files_are_never_replaced(tmp_path):
    _checkpoint(tmp_path / "m")
    (tmp_path / "m" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"m: a slamgeo checkpoint output, but it also holds 1 entry \(notes.txt\)"):
        storage.claim_output(tmp_path / "m", storage.CHECKPOINT, overwrite=True)
    _zarr_store(tmp_path / "c.zarr", {"slamgeo_complete": True}, storage.CUBE)
    (tmp_path / "c.zarr" / "README").write_text("mine")
    with pytest.raises(OutputError, match="README"):
        storage.claim_output(tmp_path / "c.zarr", storage.CUBE, overwrite=True)


@pytest.mark.parametrize(
    "rel",
    ["VV/notes.txt", "VV/0.0.x", "VV/sub/0.0.0", "notes/0.0.0", "VV/c/0/0/0", "mine/", "VV/empty/"],
)
def test_a_file_of_the_user_at_any_depth_of_a_store_is_found(tmp_path, rel):
    out = tmp_path / "c.zarr"
    _zarr_store(out, {"slamgeo_complete": True}, storage.CUBE)
    target = out / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.mkdir() if rel.endswith("/") else target.write_text("mine")
    with pytest.raises(OutputError, match=rf"but it also holds 1 entry \({rel.rstrip('/')}/?\)"):
        storage.claim_output(out, storage.CUBE, overwrite=True)


def test_what_zarr_writes_at_any_depth_is_own(tmp_path):
    out = tmp_path / "c.zarr"
    _zarr_store(out, {}, storage.RESULTS)
    for rel in ("VV/0.1.2", "VH/.zarray", "VH/0/1/2", "g/.zgroup", "g/a/.zarray", "g/a/3.4"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("x")
    for rel in ("v3/zarr.json", "v3/c/0/1/2", "s3/zarr.json", "s3/c"):  # format 3; "c" of a 0-d array
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("x")
    assert storage.claim_output(out, storage.RESULTS, overwrite=True) == "own"


def test_zarrs_half_written_chunks_of_a_killed_writer_are_own(tmp_path):
    """A writer killed inside zarr's atomic write leaves `<key>.<uuid hex>.partial`: the store is
    still slamgeo's to resume or replace (the claim removes nothing: another writer may be
    mid-write), and the store is removed whole when replaced; a look-alike name is refused."""
    out = tmp_path / "r.zarr"
    _zarr_store(out, {"slamgeo_complete": False}, storage.RESULTS)
    partial = out / "VV" / "0.5.479e4e6fd794484a94fb6af7a9811471.partial"
    meta = out / ".zattrs.0123456789abcdef0123456789abcdef.partial"
    partial.write_bytes(b"half")
    meta.write_bytes(b"half")
    assert storage.claim_output(out, storage.RESULTS, resume=True) == "own"
    assert partial.exists() and meta.exists()
    storage.remove_output(out, storage.RESULTS)
    assert not out.exists()
    _zarr_store(out, {"slamgeo_complete": False}, storage.RESULTS)
    (out / "VV" / "0.5.not-a-uuid.partial").write_bytes(b"mine")
    with pytest.raises(OutputError, match=r"1 entry \(VV/0.5.not-a-uuid.partial\)"):
        storage.claim_output(out, storage.RESULTS, resume=True)


@pytest.mark.parametrize(
    "kind, written, mine",
    [
        (storage.SCENE, ["scene.json", "tiffs/S1_VVVH_20170103.tif", "archive/cogs/a_vv.tif"], "tiffs/notes.txt"),
        (storage.SCENE, ["scene.json", "archive/items.json"], "archive/cogs/sub/x.tif"),
        (storage.PARCELS, ["metrics.json", "parcels.zarr/.zgroup", "parcels.zarr/x/.zarray"], "parcels.zarr/notes.txt"),
        (
            storage.PARCELS,
            ["metrics.json", "class_profiles.zarr/x/.zarray", "class_profiles.zarr/x/0"],
            "x.zarr/.zgroup",
        ),
        (storage.REPORT, ["index.html", "report.json", "a.png"], "figures/a.png"),
        (storage.CHECKPOINT, ["model.json"], "old/model.json"),
    ],
)
def test_a_folder_output_holds_only_what_its_writer_writes(tmp_path, kind, written, mine):
    out = tmp_path / "out"
    for rel in [*written, mine]:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("x")
    storage.stamp_folder(out, kind)
    with pytest.raises(OutputError, match=rf"it also holds 1 entry \({mine}\) that slamgeo did not write"):
        storage.claim_output(out, kind, overwrite=True)
    (out / mine).unlink()
    folder = (out / mine).parent
    while folder != out and not any(folder.iterdir()):  # an empty folder left is the user's too
        folder.rmdir()
        folder = folder.parent
    assert storage.claim_output(out, kind, overwrite=True) == "own"


def test_a_folder_of_another_kind_is_refused_with_what_it_holds(tmp_path):
    proj = tmp_path / "proj"
    _checkpoint(proj / "model")
    _zarr_store(proj / "cube.zarr", {"slamgeo_complete": True}, storage.CUBE)
    (proj / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"proj: holds 3 entries \(cube.zarr/, model/, notes.txt\) without slamgeo's"):
        storage.claim_output(proj, storage.RESULTS, overwrite=True)
    with pytest.raises(OutputError, match="holds a slamgeo checkpoint folder, not a slamgeo results store"):
        storage.claim_output(proj / "model", storage.RESULTS, overwrite=True)
    with pytest.raises(OutputError, match="holds a slamgeo cube store, not a slamgeo report folder"):
        storage.claim_output(proj / "cube.zarr", storage.REPORT, overwrite=True)


@pytest.mark.parametrize(
    "files",
    [
        {"model.json": "{}"},  # a user's folder that merely looks like a checkpoint
        {"model.json": "{}", storage.STAMP_FILE: "{}"},  # a stamp without kind and id
        {"model.json": "{}", storage.STAMP_FILE: '{"kind": "checkpoint"'},  # not JSON
    ],
)
def test_a_look_alike_without_the_stamp_is_refused(tmp_path, files):
    out = tmp_path / "m"
    out.mkdir()
    for rel, text in files.items():
        (out / rel).write_text(text)
    with pytest.raises(OutputError, match="without slamgeo's stamp, so it is not a slamgeo checkpoint folder"):
        storage.claim_output(out, storage.CHECKPOINT, overwrite=True)
    with pytest.raises(OutputError, match="without slamgeo's stamp"):
        storage.remove_output(out, storage.CHECKPOINT)
    assert sorted(p.name for p in out.iterdir()) == sorted(files)


def test_inputs_are_never_replaced(tmp_path):
    _zarr_store(tmp_path / "c.zarr", {"slamgeo_complete": True}, storage.CUBE)
    with pytest.raises(OutputError, match="the output is the input"):
        storage.claim_output(tmp_path / "c.zarr", storage.CUBE, overwrite=True, inputs=[tmp_path / "c.zarr"])
    with pytest.raises(OutputError, match="the output holds the input"):
        storage.claim_output(tmp_path, storage.CUBE, overwrite=True, inputs=[tmp_path / "c.zarr"])
    with pytest.raises(OutputError, match="the output lies inside the input"):
        storage.claim_output(tmp_path / "c.zarr" / "x", storage.CUBE, inputs=[tmp_path / "c.zarr"])


def test_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("mine")
    with pytest.raises(OutputError, match="is a file, not a cube store"):
        storage.claim_output(tmp_path / "f", storage.CUBE, overwrite=True)


def test_output_error_is_a_one_line_user_error():
    assert issubclass(OutputError, SlamgeoError) and issubclass(OutputError, OSError)


def test_stale_temporaries(tmp_path):
    out = tmp_path / "cube.zarr"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f"cube.zarr.tmp-{dead_pid}-0123abcd"
    legacy = tmp_path / "cube.zarr.tmp-89abcdef"  # the name older versions used
    alive = tmp_path / f"cube.zarr.tmp-{os.getpid()}-0123abcd"
    foreign = tmp_path / f"cube.zarr.tmp-{dead_pid}-fedcba98"
    unstamped = tmp_path / f".cube.zarr.old-{dead_pid}-01234567"
    other = tmp_path / f"cube.zarr.tmp-{dead_pid}-76543210"
    empty = tmp_path / f".cube.zarr.tmp-{dead_pid}-00000000"
    for p in (stale, legacy, alive):
        _zarr_store(p, {"slamgeo_complete": False}, storage.CUBE)
    _zarr_store(unstamped, {storage.KIND_ATTR: "cube", "slamgeo_complete": False})
    _zarr_store(other, {"slamgeo_complete": False}, storage.RESULTS)
    empty.mkdir()
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    removed = storage.remove_stale_temporaries(out, storage.CUBE)
    assert sorted(removed) == sorted([stale, legacy, empty])
    assert alive.exists() and (foreign / "notes.txt").read_text() == "mine"
    assert (unstamped / ".zattrs").exists() and (other / ".zattrs").exists()


def test_temporary_names_carry_the_process(tmp_path):
    name = storage.temporary_name(tmp_path / "m", "tmp", hidden=True)
    assert name.startswith(f".m.tmp-{os.getpid()}-")


def test_remove_output_refuses_foreign(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError):
        storage.remove_output(tmp_path / "x", storage.CUBE)
    assert (tmp_path / "x" / "notes.txt").exists()
    storage.remove_output(tmp_path / "absent", storage.CUBE)  # nothing there: nothing to do


def test_an_interrupted_in_place_write_is_still_own(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "fig.png").write_bytes(b"png")
    (out / storage.INCOMPLETE).write_text("report")
    with pytest.raises(OutputError, match="without slamgeo's stamp"):  # the stamp is what proves it
        storage.claim_output(out, storage.REPORT, overwrite=True)
    storage.stamp_folder(out, storage.REPORT)
    assert storage.claim_output(out, storage.REPORT, overwrite=True) == "own"
    with pytest.raises(OutputError, match="holds a slamgeo report folder, not a slamgeo parcels folder"):
        storage.claim_output(out, storage.PARCELS, overwrite=True)


def test_staged_folder_on_object_storage_replaces_only_when_done():
    import fsspec

    fs = fsspec.filesystem("memory")
    dest = "memory://bucket/model"
    fs.pipe({"/bucket/model/model.json": b"{}", "/bucket/model/model.safetensors": b"old"})
    with pytest.raises(OutputError, match="without slamgeo's stamp"):
        storage.claim_output(dest, storage.CHECKPOINT, overwrite=True)
    storage.stamp_folder(dest, storage.CHECKPOINT)
    storage.claim_output(dest, storage.CHECKPOINT, overwrite=True)
    with pytest.raises(RuntimeError):
        with storage.staged_folder(dest, storage.CHECKPOINT) as tmp:
            (tmp / "model.safetensors").write_bytes(b"new")
            raise RuntimeError("killed")
    assert fs.cat("/bucket/model/model.safetensors") == b"old"
    with storage.staged_folder(dest, storage.CHECKPOINT) as tmp:
        (tmp / "model.safetensors").write_bytes(b"new")
        (tmp / "model.json").write_text('{"a": 1}')
    names = ["model.json", "model.safetensors", storage.STAMP_FILE]
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.find("/bucket/model")) == sorted(names)
    assert fs.cat("/bucket/model/model.safetensors") == b"new"
    assert storage.read_stamp(dest)["kind"] == "checkpoint"
    storage.claim_output(dest, storage.CHECKPOINT, overwrite=True)
    fs.rm("/bucket", recursive=True)


def test_staged_folder_removes_stale_staging_folders(tmp_path):
    stale = tmp_path / ".m.tmp-999999999-0123abcd"  # no such process
    stale.mkdir()
    storage.stamp_folder(stale, storage.CHECKPOINT)  # what staged_folder writes first
    (stale / "model.safetensors").write_bytes(b"w")
    lookalike = tmp_path / "m.tmp-999999999-deadbeef"  # the user's, named like a temporary
    lookalike.mkdir()
    (lookalike / "model.json").write_text("{}")
    with storage.staged_folder(tmp_path / "m", storage.CHECKPOINT) as tmp:
        assert sorted(p.name for p in tmp.iterdir()) == [storage.STAMP_FILE]
        (tmp / "model.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", lookalike.name]
    assert storage.read_stamp(tmp_path / "m")["kind"] == "checkpoint"
