"""The checkpoint: safetensors + JSON, round trip, and each bad checkpoint or cube refused."""

from __future__ import annotations

import dataclasses
import json
import struct
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from slamgeo.errors import CheckpointError, OutputError
from slamgeo.io.cube import make_cube
from slamgeo.method.checkpoint import TrainedModel, dates_meta, load_model, save_model
from slamgeo.method.model import CAE, CAEConfig
from slamgeo.schema import MODEL_MARKER, WEIGHTS_FILE

T = 16
DATES = pd.date_range("2017-01-03", periods=T, freq="6D").values
CFG = CAEConfig(n_bands=2, n_times=T, embed_dim=2, channels=(8, 16, 16), kernels=(5, 3, 3), hidden=(16, 8))


def _meta() -> dict:
    return {
        "bands": ["VV", "VH"],
        **dates_meta(DATES),
        "normalisation": {"mean": [-12.0, -19.0], "std": [2.5, 3.0], "units": "dB"},
        "gap_fill": False,
        "seed": 3,
    }


@pytest.fixture
def model() -> CAE:
    torch.manual_seed(0)
    return CAE(CFG).eval()


@pytest.fixture
def saved(tmp_path, model):
    return save_model(model, _meta(), tmp_path / "m")


def _cube(bands=("VV", "VH"), n_times=T, dates=None):
    dates = DATES[:n_times] if dates is None else dates
    rng = np.random.default_rng(0)
    arrays = {b: rng.normal(-15, 3, (n_times, 4, 5)) for b in bands}
    return make_cube(arrays, dates, y=np.arange(4.0)[::-1], x=np.arange(5.0), crs=32631)


def _series(n=50, seed=1):
    return np.random.default_rng(seed).normal(-15, 3, (n, 2, T)).astype(np.float32)


def test_round_trip_gives_identical_embeddings(saved, model):
    loaded = load_model(saved)
    x = _series()
    with torch.no_grad():
        ref = model.encoder(torch.from_numpy(loaded.standardise(x))).numpy()
    np.testing.assert_array_equal(loaded.embed(x), ref)


def test_round_trip_gives_identical_weights(saved, model):
    loaded = load_model(saved).model.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(loaded[k], v), k


def test_round_trip_keeps_metadata(saved):
    tm = load_model(saved)
    assert tm.bands == ("VV", "VH")
    np.testing.assert_array_equal(tm.dates, DATES.astype("datetime64[ns]"))
    np.testing.assert_array_equal(tm.day_of_year, pd.DatetimeIndex(DATES).day_of_year)
    assert tm.meta["seed"] == 3
    assert tm.meta["architecture"] == CFG.to_dict()
    assert not tm.gap_fill
    assert not tm.model.training


def test_weights_file_is_plain_safetensors(saved, model):
    """Header read by hand (8-byte little-endian length + JSON): names, shapes, no pickle."""
    raw = (saved / WEIGHTS_FILE).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    assert {k: v["shape"] for k, v in header.items()} == {k: list(v.shape) for k, v in model.state_dict().items()}
    assert all(v["dtype"] == "F32" for v in header.values())


def test_recorded_checksum_is_sha256_of_weights(saved):
    import hashlib

    meta = json.loads((saved / MODEL_MARKER).read_text())
    assert meta["weights"]["sha256"] == hashlib.sha256((saved / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert load_model(saved).checksum == meta["weights"]["sha256"]


def test_standardise_uses_stored_statistics(saved):
    tm = load_model(saved)
    x = _series()
    expected = np.stack([(x[:, 0] + 12.0) / 2.5, (x[:, 1] + 19.0) / 3.0], axis=1)
    np.testing.assert_allclose(tm.standardise(x), expected, rtol=1e-6, atol=1e-6)
    assert tm.standardise(x).dtype == np.float32


def test_to_device_gives_same_embeddings(saved):
    tm = load_model(saved)
    moved = tm.to("cpu")
    assert moved.device == torch.device("cpu")
    np.testing.assert_array_equal(moved.embed(_series()), tm.embed(_series()))


def test_save_leaves_no_temporary_directory(tmp_path, model):
    save_model(model, _meta(), tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    # with slamgeo's stamp (slamgeo.io.storage.STAMP_FILE), which the output rule checks
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [".slamgeo-output.json", MODEL_MARKER, WEIGHTS_FILE]


def test_existing_checkpoint_is_not_overwritten_by_default(saved, model):
    with pytest.raises(OutputError, match="already exists"):
        save_model(model, _meta(), saved)


def test_overwrite_replaces_checkpoint(saved):
    torch.manual_seed(5)
    other = CAE(CFG)
    save_model(other, _meta(), saved, overwrite=True)
    assert torch.equal(
        load_model(saved).model.state_dict()["decoder.net.0.weight"], other.state_dict()["decoder.net.0.weight"]
    )
    assert sorted(p.name for p in saved.parent.iterdir()) == ["m"]


def test_overwrite_refuses_a_directory_that_is_not_a_checkpoint(tmp_path, model):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not a slamgeo checkpoint"):
        save_model(model, _meta(), tmp_path / "data", overwrite=True)
    assert (tmp_path / "data" / "precious.txt").exists()


def test_save_refuses_metadata_that_does_not_fit_the_model(tmp_path, model):
    meta = _meta()
    meta["dates"] = meta["dates"][:-1]
    with pytest.raises(CheckpointError, match=f"{T - 1} dates for n_times={T}"):
        save_model(model, meta, tmp_path / "m")


def test_missing_weights_file_is_refused(saved):
    (saved / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="weights file missing"):
        load_model(saved)


def test_altered_weights_are_refused(saved):
    raw = bytearray((saved / WEIGHTS_FILE).read_bytes())
    raw[-3] ^= 0xFF  # one byte of the last tensor
    (saved / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="weights altered: sha256"):
        load_model(saved)


def test_missing_metadata_is_refused(saved):
    (saved / MODEL_MARKER).unlink()
    with pytest.raises(CheckpointError, match="metadata file missing"):
        load_model(saved)


def test_unreadable_metadata_is_refused(saved):
    (saved / MODEL_MARKER).write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable metadata"):
        load_model(saved)


def test_metadata_without_required_keys_is_refused(saved):
    meta = json.loads((saved / MODEL_MARKER).read_text())
    del meta["normalisation"]
    (saved / MODEL_MARKER).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"lacks \['normalisation'\]"):
        load_model(saved)


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        load_model(tmp_path / "nowhere")


def test_architecture_that_does_not_match_weights_is_refused(saved):
    meta = json.loads((saved / MODEL_MARKER).read_text())
    meta["architecture"]["embed_dim"] = 3
    (saved / MODEL_MARKER).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"encoder\.head\.4\.weight: shape \(2, 8\) in file, \(3, 8\)"):
        load_model(saved)


def test_invalid_architecture_is_refused(saved):
    meta = json.loads((saved / MODEL_MARKER).read_text())
    meta["architecture"]["kernels"] = [4, 3, 3]
    (saved / MODEL_MARKER).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="invalid architecture"):
        load_model(saved)


def test_band_names_that_do_not_fit_the_architecture_are_refused(saved):
    meta = json.loads((saved / MODEL_MARKER).read_text())
    meta["bands"] = ["VV"]
    (saved / MODEL_MARKER).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="1 band names for n_bands=2"):
        load_model(saved)


def test_cube_with_matching_bands_and_dates_is_accepted(saved):
    cube, tm = _cube(), load_model(saved)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tm.check_cube(cube)


def test_cube_missing_a_band_is_refused(saved):
    with pytest.raises(CheckpointError, match=r"lacks band\(s\) \['VH'\]"):
        load_model(saved).check_cube(_cube(bands=("VV",)))


def test_cube_with_other_number_of_dates_is_refused(saved):
    with pytest.raises(CheckpointError, match=f"the cube has 12 dates, the model expects {T}"):
        load_model(saved).check_cube(_cube(n_times=12))


def test_cube_with_other_dates_warns_with_the_shift(saved):
    shifted = DATES + np.timedelta64(3, "D")
    with pytest.warns(UserWarning, match="largest shift 3 days"):
        load_model(saved).check_cube(_cube(dates=shifted))


def test_trained_model_is_a_frozen_dataclass(saved):
    tm = load_model(saved)
    assert isinstance(tm, TrainedModel)
    with pytest.raises(dataclasses.FrozenInstanceError):
        tm.checksum = "x"  # type: ignore[misc]


def test_weights_checksum_is_the_same_in_another_process():
    """safetensors keeps header metadata in a hash map: more than one key would make the file
    bytes (and the recorded sha256) differ from one process to the next."""
    import subprocess
    import sys

    from slamgeo.method.checkpoint import sha256_hex, weights_bytes

    code = (
        "import torch; torch.manual_seed(0)\n"
        "from slamgeo.method.model import CAE, CAEConfig\n"
        "from slamgeo.method.checkpoint import sha256_hex, weights_bytes\n"
        f"print(sha256_hex(weights_bytes(CAE(CAEConfig(**{CFG.to_dict()!r})))))\n"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    torch.manual_seed(0)
    assert other == sha256_hex(weights_bytes(CAE(CFG)))


def _edit_meta(saved, edit) -> None:
    meta = json.loads((saved / MODEL_MARKER).read_text())
    edit(meta)
    (saved / MODEL_MARKER).write_text(json.dumps(meta, indent=2))


@pytest.mark.parametrize(
    "field, edit",
    [
        ("bands", lambda m: m.update(bands=m["bands"][::-1])),
        ("dates", lambda m: m["dates"].__setitem__(0, "2017-01-02T00:00:00")),
        ("normalisation", lambda m: m["normalisation"].update(mean=m["normalisation"]["mean"][::-1])),
        ("gap_fill", lambda m: m.update(gap_fill=True)),
        ("day_of_year", lambda m: m["day_of_year"].__setitem__(0, 2)),
    ],
)
def test_altered_metadata_is_refused_naming_the_field(saved, field, edit):
    _edit_meta(saved, edit)
    with pytest.raises(CheckpointError) as err:
        load_model(saved)
    msg = str(err.value)
    assert "\n" not in msg and str(saved / MODEL_MARKER) in msg
    assert f"metadata altered: field(s) ['{field}'] do not match" in msg


def test_metadata_outside_the_protected_fields_may_change(saved):
    _edit_meta(saved, lambda m: m.update(seed=99, note="retrained on Monday"))
    assert load_model(saved).meta["seed"] == 99


def test_recorded_metadata_checksums_are_sha256_of_canonical_json(saved):
    import hashlib

    meta = json.loads((saved / MODEL_MARKER).read_text())
    bands = json.dumps(["VV", "VH"], separators=(",", ":")).encode()
    assert meta["metadata_sha256"]["bands"] == hashlib.sha256(bands).hexdigest()
    assert set(meta["metadata_sha256"]) >= {"architecture", "bands", "dates", "normalisation", "weights"}


def test_checkpoint_without_metadata_checksums_loads_with_a_warning(saved, model):
    _edit_meta(saved, lambda m: m.pop("metadata_sha256"))
    with pytest.warns(UserWarning, match="no metadata_sha256 .* not verified"):
        tm = load_model(saved)
    np.testing.assert_allclose(tm.embed(_series()), load_model_embed(model), rtol=1e-6, atol=1e-7)


def load_model_embed(model):
    """Embeddings of `_series()` by `model` standardised with `_meta()`'s statistics."""
    x = _series()
    mean, std = np.array([-12.0, -19.0])[None, :, None], np.array([2.5, 3.0])[None, :, None]
    with torch.no_grad():
        return model.encoder(torch.from_numpy(((x - mean) / std).astype(np.float32))).numpy()
