"""The output rule of `slamgeo.io.storage`: a writer replaces only its own kind of output, never
inputs or files it did not write; stale temporaries of killed writers are removed, others kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from slamgeo.errors import OutputError, SlamgeoError
from slamgeo.io import storage


def _zarr_store(path, attrs: dict) -> None:
    path.mkdir(parents=True)
    (path / ".zgroup").write_text('{"zarr_format": 2}')
    (path / ".zattrs").write_text(json.dumps(attrs))
    (path / "VV").mkdir()
    (path / "VV" / ".zarray").write_text("{}")
    (path / "VV" / "0.0.0").write_bytes(b"x")


def _checkpoint(path) -> None:
    path.mkdir(parents=True)
    (path / "model.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"w")


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
    "attrs, kind, ok",
    [
        ({storage.KIND_ATTR: "cube", "slamgeo_complete": True}, storage.CUBE, True),
        ({storage.KIND_ATTR: "results", "slamgeo_complete": False}, storage.RESULTS, True),
        ({"slamgeo_complete": True}, storage.CUBE, True),  # written before stores carried their kind
        ({"slamgeo_complete": True, "model_checksum": "ab"}, storage.RESULTS, True),
        ({storage.KIND_ATTR: "cube", "slamgeo_complete": True}, storage.RESULTS, False),
        ({"title": "someone else's store"}, storage.CUBE, False),
    ],
)
def test_zarr_kinds(tmp_path, attrs, kind, ok):
    _zarr_store(tmp_path / "s.zarr", attrs)
    if ok:
        assert storage.claim_output(tmp_path / "s.zarr", kind, overwrite=True) == "own"
    else:
        with pytest.raises(OutputError, match="refusing to replace it"):
            storage.claim_output(tmp_path / "s.zarr", kind, overwrite=True)


def test_foreign_files_are_never_replaced(tmp_path):
    _checkpoint(tmp_path / "m")
    (tmp_path / "m" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"m: a checkpoint output, but it also holds 1 entry \(notes.txt\)"):
        storage.claim_output(tmp_path / "m", storage.CHECKPOINT, overwrite=True)
    _zarr_store(tmp_path / "c.zarr", {storage.KIND_ATTR: "cube", "slamgeo_complete": True})
    (tmp_path / "c.zarr" / "README").write_text("mine")
    with pytest.raises(OutputError, match="README"):
        storage.claim_output(tmp_path / "c.zarr", storage.CUBE, overwrite=True)


def test_a_folder_of_another_kind_is_refused_with_what_it_holds(tmp_path):
    proj = tmp_path / "proj"
    _checkpoint(proj / "model")
    _zarr_store(proj / "cube.zarr", {storage.KIND_ATTR: "cube", "slamgeo_complete": True})
    (proj / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"proj: holds 3 entries \(cube.zarr/, model/, notes.txt\)"):
        storage.claim_output(proj, storage.RESULTS, overwrite=True)
    with pytest.raises(OutputError, match="not a slamgeo results store"):
        storage.claim_output(proj / "model", storage.RESULTS, overwrite=True)
    with pytest.raises(OutputError, match="holds a slamgeo cube store, not a report folder"):
        storage.claim_output(proj / "cube.zarr", storage.REPORT, overwrite=True)


def test_inputs_are_never_replaced(tmp_path):
    _zarr_store(tmp_path / "c.zarr", {storage.KIND_ATTR: "cube", "slamgeo_complete": True})
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
    for p in (stale, legacy, alive):
        _zarr_store(p, {storage.KIND_ATTR: "cube", "slamgeo_complete": False})
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    removed = storage.remove_stale_temporaries(out, storage.CUBE)
    assert sorted(removed) == sorted([stale, legacy])
    assert alive.exists() and (foreign / "notes.txt").read_text() == "mine"


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
    assert storage.claim_output(out, storage.REPORT, overwrite=True) == "own"
    with pytest.raises(OutputError, match="no metrics.json, so it is not a slamgeo parcels folder"):
        storage.claim_output(
            out, storage.REPORT.__class__("parcels", marker="metrics.json", entries=("*.png",)), overwrite=True
        )


def test_staged_folder_on_object_storage_replaces_only_when_done():
    import fsspec

    fs = fsspec.filesystem("memory")
    dest = "memory://bucket/model"
    fs.pipe({"/bucket/model/model.json": b"{}", "/bucket/model/model.safetensors": b"old"})
    storage.claim_output(dest, storage.CHECKPOINT, overwrite=True)
    with pytest.raises(RuntimeError):
        with storage.staged_folder(dest, storage.CHECKPOINT) as tmp:
            (tmp / "model.safetensors").write_bytes(b"new")
            raise RuntimeError("killed")
    assert fs.cat("/bucket/model/model.safetensors") == b"old"
    with storage.staged_folder(dest, storage.CHECKPOINT) as tmp:
        (tmp / "model.safetensors").write_bytes(b"new")
        (tmp / "model.json").write_text('{"a": 1}')
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.find("/bucket/model")) == ["model.json", "model.safetensors"]
    assert fs.cat("/bucket/model/model.safetensors") == b"new"
    fs.rm("/bucket", recursive=True)


def test_staged_folder_removes_stale_staging_folders(tmp_path):
    stale = tmp_path / ".m.tmp-999999999-0123abcd"  # no such process
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"w")
    with storage.staged_folder(tmp_path / "m", storage.CHECKPOINT) as tmp:
        (tmp / "model.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
