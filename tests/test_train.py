"""Training: stratified lazy sampling, loss below the per-date mean, reproducibility, CLI."""

from __future__ import annotations

import subprocess
import sys

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import ROOT, SMALL_ARCH, class_cube

from slamgeo.errors import ConfigError, InputError, OutputError
from slamgeo.io.cube import make_cube
from slamgeo.io.sample import sample_series
from slamgeo.method.checkpoint import load_model
from slamgeo.method.train import resolve_device, train

FAST = dict(arch=SMALL_ARCH, device="cpu", progress=False, batch_size=128, threads=1)


def _id_cube(ny=32, nx=24, n_times=10, chunk=8, nan_mask=None):
    """VV at date 0 is the pixel's flat index, so a sampled pixel tells where it came from."""
    ids = np.arange(ny * nx, dtype=np.float32).reshape(ny, nx)
    vv = np.broadcast_to(ids, (n_times, ny, nx)).copy()
    vh = vv * 0 - 20 + np.arange(n_times, dtype=np.float32)[:, None, None]
    if nan_mask is not None:
        vv[:, nan_mask] = np.nan
    time = pd.date_range("2020-01-01", periods=n_times, freq="12D")
    cube = make_cube(
        {"VV": vv, "VH": vh}, time, y=np.arange(ny)[::-1] * 10.0, x=np.arange(nx) * 10.0, crs=32631, chunk=chunk
    )
    return cube, ids


@pytest.fixture(scope="module")
def cube_and_classes():
    return class_cube(ny=40, nx=30, n_times=16, chunk=16, nodata_rows=4)


@pytest.fixture(scope="module")
def trained(cube_and_classes):
    cube, _ = cube_and_classes
    return train(cube, sample_size=900, max_epochs=25, patience=5, lr=5e-3, seed=0, **FAST)


# --------------------------------------------------------------------------- sampling


def test_sample_has_requested_size_and_no_nan():
    mask = np.zeros((32, 24), dtype=bool)
    mask[:5] = True
    cube, _ = _id_cube(nan_mask=mask)
    x = sample_series(cube, 300, seed=1)
    assert x.shape == (300, 2, 10) and x.dtype == np.float32
    assert not np.isnan(x).any()


def test_sampled_pixels_are_distinct_cube_pixels():
    cube, ids = _id_cube()
    x = sample_series(cube, 200, seed=0)
    got = x[:, 0, 0].astype(int)
    assert len(np.unique(got)) == 200
    np.testing.assert_array_equal(x[:, 0, :], np.repeat(got[:, None], 10, axis=1))


def test_sample_is_proportional_to_chunk_size():
    cube, _ = _id_cube(ny=32, nx=24, chunk=8)  # 12 chunks of 64 pixels
    got = sample_series(cube, 240, seed=3)[:, 0, 0].astype(int)
    chunk_of = (got // 24) // 8 * 3 + (got % 24) // 8
    np.testing.assert_array_equal(np.bincount(chunk_of, minlength=12), np.full(12, 20))


def test_sample_tops_up_from_other_chunks_when_one_is_mostly_empty():
    mask = np.zeros((32, 24), dtype=bool)
    mask[:8, :8] = True  # chunk 0 empty
    mask[8:16, :7] = True  # chunk 3 keeps 8 valid pixels
    cube, _ = _id_cube(nan_mask=mask)
    got = sample_series(cube, 600, seed=0)[:, 0, 0].astype(int)
    assert len(got) == 600 and len(np.unique(got)) == 600
    chunk_of = (got // 24) // 8 * 3 + (got % 24) // 8
    counts = np.bincount(chunk_of, minlength=12)
    assert counts[0] == 0 and counts[3] == 8
    assert counts.sum() == 600 and counts[[1, 2, 4, 5, 6, 7, 8, 9, 10, 11]].min() >= 58


def test_sample_returns_all_usable_pixels_when_fewer_than_asked():
    mask = np.ones((32, 24), dtype=bool)
    mask[3, 4] = mask[20, 10] = mask[31, 23] = False
    cube, ids = _id_cube(nan_mask=mask)
    got = sorted(sample_series(cube, 100)[:, 0, 0].astype(int))
    assert got == sorted(ids[~mask].astype(int))


def test_same_seed_gives_same_sample_and_other_seed_another():
    cube, _ = _id_cube()
    a, b, c = (sample_series(cube, 100, seed=s) for s in (4, 4, 5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_gap_fill_keeps_gappy_pixels_filled_and_skips_empty_bands():
    cube, _ = _id_cube(ny=8, nx=8, chunk=8)
    vv = cube["VV"].values.copy()
    vv[3, :4] = np.nan  # one missing date for 32 pixels
    vv[:, 7, :] = np.nan  # a band with no valid date for 8 pixels
    cube["VV"] = (cube["VV"].dims, vv)
    x = sample_series(cube, 64, gap_fill=True)
    assert x.shape == (56, 2, 10) and not np.isnan(x).any()
    assert sample_series(cube, 64).shape[0] == 24


def test_sample_of_a_table_cube():
    rng = np.random.default_rng(0)
    vv = rng.normal(-12, 2, (10, 300)).astype(np.float32)
    vv[:, :50] = np.nan
    cube = make_cube(
        {"VV": vv, "VH": vv - 6}, pd.date_range("2021-01-01", periods=10, freq="10D"), sample=np.arange(300), chunk=100
    )
    x = sample_series(cube, 120, seed=0)
    assert x.shape == (120, 2, 10) and not np.isnan(x).any()


def test_sample_of_an_in_memory_cube():
    cube, _ = _id_cube()
    x = sample_series(cube.compute(), 50)
    assert x.shape == (50, 2, 10)


def test_sample_runs_one_task_per_chunk():
    """Lazy: one sampling task per spatial chunk (12 here), each returning only its candidates."""
    from dask.callbacks import Callback

    cube, _ = _id_cube(ny=32, nx=24, chunk=8)
    calls = []

    class Count(Callback):
        def _posttask(self, key, result, dsk, state, id):
            if str(key[0] if isinstance(key, tuple) else key).startswith("_block_candidates"):
                calls.append(key)

    with Count(), dask.config.set(scheduler="threads"):  # callbacks see local schedulers only
        sample_series(cube, 100)
    assert len(calls) == 12


# --------------------------------------------------------------------------- training


def test_training_beats_the_per_date_mean_on_held_out_pixels(trained, cube_and_classes):
    cube, _ = cube_and_classes
    x = sample_series(cube, 400, seed=99)  # pixels drawn independently of training
    z = trained.standardise(x)
    with torch.no_grad():
        _, rec = trained.model(torch.from_numpy(z))
    mse_model = float(np.mean((rec.numpy() - z) ** 2))
    mse_mean = float(np.mean((z - z.mean(axis=0)) ** 2))
    assert mse_model < 0.5 * mse_mean


def test_validation_loss_ends_well_below_the_recorded_baseline(trained):
    losses = trained.meta["losses"]
    assert losses["best_val"] < 0.5 * losses["baseline_val_per_date_mean"]


def test_losses_are_recorded_per_epoch_and_best_epoch_is_kept(trained):
    t, losses = trained.meta["training"], trained.meta["losses"]
    assert len(losses["train"]) == len(losses["val"]) == t["epochs_run"]
    assert losses["best_val"] == min(losses["val"])
    assert t["best_epoch"] == int(np.argmin(losses["val"])) + 1


def test_normalisation_statistics_describe_the_cube(trained, cube_and_classes):
    cube, _ = cube_and_classes
    for i, b in enumerate(("VV", "VH")):
        v = cube[b].values
        assert trained.mean[i] == pytest.approx(np.nanmean(v), abs=0.15)
        assert trained.std[i] == pytest.approx(np.nanstd(v), rel=0.05)


def test_metadata_holds_what_a_later_run_needs(trained, cube_and_classes):
    cube, _ = cube_and_classes
    m = trained.meta
    assert m["bands"] == ["VV", "VH"]
    np.testing.assert_array_equal(trained.dates, cube["time"].values)
    assert m["day_of_year"] == list(pd.DatetimeIndex(cube["time"].values).day_of_year)
    assert m["architecture"]["channels"] == SMALL_ARCH["channels"]
    assert m["seed"] == 0 and m["training"]["lr"] == 5e-3 and m["training"]["batch_size"] == 128
    assert len(m["data_fingerprint"]) == 64 and "package_version" in m


def test_two_cpu_runs_with_the_same_seed_give_identical_weights(cube_and_classes):
    cube, _ = cube_and_classes
    a, b = (train(cube, sample_size=300, max_epochs=3, seed=7, **FAST) for _ in range(2))
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.checksum == b.checksum
    assert a.meta["losses"] == b.meta["losses"]


def test_other_seed_gives_other_weights(cube_and_classes):
    cube, _ = cube_and_classes
    a, b = (train(cube, sample_size=300, max_epochs=1, seed=s, **FAST) for s in (1, 2))
    assert a.checksum != b.checksum


def test_training_leaves_global_torch_state_alone(cube_and_classes):
    cube, _ = cube_and_classes
    before_rng, before_det = torch.get_rng_state(), torch.are_deterministic_algorithms_enabled()
    before_threads = torch.get_num_threads()
    tm = train(cube, sample_size=200, max_epochs=1, **{**FAST, "threads": before_threads + 1})
    assert tm.meta["training"]["cpu_threads"] == before_threads + 1
    assert torch.equal(torch.get_rng_state(), before_rng)
    assert torch.are_deterministic_algorithms_enabled() == before_det
    assert torch.get_num_threads() == before_threads


def test_early_stopping_stops_patience_epochs_after_the_best(cube_and_classes):
    cube, _ = cube_and_classes
    tm = train(
        cube,
        sample_size=60,
        val_fraction=0.5,
        max_epochs=300,
        patience=2,
        lr=2e-2,
        seed=0,
        arch=SMALL_ARCH,
        device="cpu",
        progress=False,
        batch_size=8,
        threads=1,
    )
    t = tm.meta["training"]
    assert t["stopped_early"] and t["epochs_run"] < 300
    assert t["epochs_run"] == t["best_epoch"] + 2


def test_bf16_autocast_trains(cube_and_classes):
    cube, _ = cube_and_classes
    tm = train(cube, sample_size=600, max_epochs=15, bf16=True, **FAST)
    assert tm.meta["training"]["precision"] == "bfloat16 autocast"
    assert tm.meta["losses"]["best_val"] < 0.6 * tm.meta["losses"]["baseline_val_per_date_mean"]


def test_gappy_cube_needs_gap_fill():
    cube, _ = class_cube(ny=16, nx=12, n_times=16, chunk=8, nodata_rows=0)
    vv = cube["VV"].values.copy()
    for t in range(16):  # every pixel misses one date
        vv[t][(np.arange(16)[:, None] + np.arange(12)[None, :]) % 16 == t] = np.nan
    cube["VV"] = (cube["VV"].dims, vv)
    with pytest.raises(InputError, match="found only 0 usable pixel"):
        train(cube, sample_size=100, max_epochs=1, **FAST)
    tm = train(cube, sample_size=100, max_epochs=1, gap_fill=True, **FAST)
    assert tm.gap_fill and tm.meta["training"]["n_sampled"] == 100


def test_train_writes_a_checkpoint_that_loads_to_the_same_embeddings(tmp_path, cube_and_classes):
    cube, _ = cube_and_classes
    tm = train(cube, out_dir=tmp_path / "m", sample_size=200, max_epochs=2, **FAST)
    loaded = load_model(tmp_path / "m")
    x = sample_series(cube, 100, seed=5)
    np.testing.assert_array_equal(loaded.embed(x), tm.embed(x))
    assert loaded.meta == tm.meta


def test_train_without_out_dir_has_the_checksum_a_save_would_record(tmp_path, cube_and_classes):
    from slamgeo.method.checkpoint import save_model

    cube, _ = cube_and_classes
    tm = train(cube, sample_size=200, max_epochs=1, **FAST)
    save_model(tm.model, tm.meta, tmp_path / "m")
    assert load_model(tmp_path / "m").checksum == tm.checksum


def test_existing_out_dir_is_refused_before_training(tmp_path, cube_and_classes):
    cube, _ = cube_and_classes
    from slamgeo.io import storage

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.json").write_text("{}")
    storage.stamp_folder(tmp_path / "m", storage.CHECKPOINT)  # as slamgeo writes a checkpoint
    with pytest.raises(OutputError, match="already exists"):
        train(cube, out_dir=tmp_path / "m", sample_size=200, max_epochs=1, **FAST)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"arch": {"n_times": 5}}, "n_times comes from the cube"),
        ({"arch": {"depth": 3}}, "unknown architecture parameters"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"val_fraction": 1.0}, "val_fraction must be in"),
        ({"device": "tpu"}, "device must be"),
    ],
)
def test_bad_settings_are_refused(cube_and_classes, kwargs, message):
    cube, _ = cube_and_classes
    with pytest.raises(ConfigError, match=message):
        train(cube, **{**dict(sample_size=100, progress=False), **kwargs})


def test_cube_without_a_band_is_refused(cube_and_classes):
    cube, _ = cube_and_classes
    with pytest.raises(InputError, match=r"missing band variable\(s\) \['VH'\]"):
        train(cube.drop_vars("VH"), sample_size=100, progress=False)


def test_cuda_asked_without_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")


def test_auto_device_is_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


# --------------------------------------------------------------------------- CLI


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "slamgeo", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_cli_trains_and_writes_a_loadable_checkpoint(tmp_path):
    cube, _ = class_cube(ny=24, nx=20, n_times=16, chunk=8)
    cube.to_zarr(tmp_path / "cube.zarr", zarr_format=2, consolidated=True)
    res = _cli(
        "train",
        str(tmp_path / "cube.zarr"),
        "--out",
        str(tmp_path / "model"),
        "--sample-size",
        "300",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--embed-dim",
        "3",
        "--device",
        "cpu",
        "--seed",
        "1",
        "--threads",
        "1",
        "--no-progress",
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    assert f"wrote {tmp_path / 'model'}" in res.stdout and "validation loss" in res.stdout
    tm = load_model(tmp_path / "model")
    assert tm.config.embed_dim == 3 and tm.meta["seed"] == 1 and tm.meta["training"]["epochs_run"] == 2

    again = _cli(
        "train",
        str(tmp_path / "cube.zarr"),
        "--out",
        str(tmp_path / "model"),
        "--epochs",
        "1",
        "--no-progress",
        cwd=ROOT,
    )
    assert again.returncode == 1
    assert "already exists" in again.stderr and "Traceback" not in again.stderr


# --------------------------------------------------------------------------- class separation


def _ari_kmeans(features: np.ndarray, labels: np.ndarray, k: int = 16) -> float:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    return adjusted_rand_score(labels, KMeans(n_clusters=k, n_init=4, random_state=0).fit_predict(features))


@pytest.mark.slow
def test_cae_embeddings_separate_crop_classes_better_than_pca_of_the_series():
    """Synthetic scene (16 crops): ARI of k-Means(16) on the 2-D embeddings vs on a 2-component
    PCA of the same standardised series. Measured (seeds 0, 1, 2, one thread): CAE 0.57, 0.44,
    0.58; PCA 0.33, 0.33, 0.34. On the default 512 scene (paper architecture): 0.60 vs 0.32."""
    from sklearn.decomposition import PCA

    from slamgeo.synth import make_scene

    scene = make_scene(size=128, seed=0)
    cube = scene.cube
    x = np.stack([cube[b].values.reshape(cube.sizes["time"], -1).T for b in ("VV", "VH")], axis=1)
    cls = scene.class_id.values.ravel()
    keep = (cls >= 0) & ~np.isnan(x).any(axis=(1, 2))
    x, cls = x[keep], cls[keep]
    tm = train(
        cube,
        sample_size=12_000,
        max_epochs=20,
        batch_size=256,
        seed=0,
        device="cpu",
        progress=False,
        threads=1,
        arch={"channels": [8, 16, 32], "kernels": [5, 3, 3], "hidden": [32, 16]},
    )
    ari_cae = _ari_kmeans(tm.embed(x), cls)
    ari_pca = _ari_kmeans(PCA(n_components=2, random_state=0).fit_transform(tm.standardise(x).reshape(len(x), -1)), cls)
    assert ari_cae > ari_pca + 0.1, (ari_cae, ari_pca)


def test_training_on_real_worldcereal_parcels_beats_the_per_date_mean():
    """500 French parcels, 36 dekads of 2023, 6.6 % of S1 values missing: a (time, sample) cube
    that needs gap filling."""
    from slamgeo.io.readers.table import open_table

    table = ROOT.parent / "shared" / "data" / "worldcereal" / "fra_2023_lpis_dekad.parquet"
    cube = open_table(table, start="2023-01-01", end="2023-12-31")
    tm = train(
        cube,
        sample_size=500,
        max_epochs=30,
        patience=30,
        batch_size=32,
        seed=0,
        gap_fill=True,
        arch=SMALL_ARCH,
        device="cpu",
        progress=False,
        threads=1,
    )
    assert tm.meta["training"]["n_sampled"] > 450
    assert tm.meta["losses"]["best_val"] < 0.75 * tm.meta["losses"]["baseline_val_per_date_mean"]


# --------------------------------------------------------------------------- two-stage sample


def _recorded_cube(n_chunks_side=8, chunk=128, n_times=3, usable=None):
    """A `n_chunks_side * chunk` square cube built lazily by `map_blocks`; each computed VV chunk
    appends its (y, x) chunk location to the returned list. VV at every date is the pixel's
    flat index; `usable(iy, ix)` gives, per chunk, how many of its first pixels are not NaN."""
    side = n_chunks_side * chunk
    computed: list[tuple[int, int]] = []

    def band(vh: bool, block_info=None):
        info = block_info[None]
        (t0, t1), (y0, y1), (x0, x1) = info["array-location"]
        ids = (np.arange(y0, y1)[:, None] * side + np.arange(x0, x1)[None, :]).astype(np.float32)
        out = np.broadcast_to(ids, (t1 - t0, *ids.shape)).copy()
        if usable is not None:
            out.reshape(t1 - t0, -1)[:, usable(*info["chunk-location"][1:]) :] = np.nan
        if vh:
            return out * 0 - 20
        computed.append(tuple(info["chunk-location"][1:]))
        return out

    chunks = ((n_times,), (chunk,) * n_chunks_side, (chunk,) * n_chunks_side)
    template, _ = _id_cube(ny=side, nx=side, n_times=n_times, chunk=chunk)
    dims = template["VV"].dims
    cube = template.assign(
        VV=(dims, da.map_blocks(band, False, chunks=chunks, dtype=np.float32), template["VV"].attrs),
        VH=(dims, da.map_blocks(band, True, chunks=chunks, dtype=np.float32), template["VH"].attrs),
    )
    return cube, computed


def test_sample_reads_only_the_chunks_it_draws():
    cube, computed = _recorded_cube()  # 64 chunks of 128 x 128
    with dask.config.set(scheduler="sync"):
        x = sample_series(cube, 300, seed=0)
        first = sorted(set(computed))
        computed.clear()
        again = sample_series(cube, 300, seed=0)
        second = sorted(set(computed))
        computed.clear()
        other = sample_series(cube, 300, seed=1)
    assert x.shape == (300, 2, 3) and len(computed) == len(set(computed))  # each chunk read once
    assert len(first) == 16 and len(first) <= 64 // 4  # MIN_CHUNKS of 64
    assert second == first and sorted(set(computed)) != first  # seeded, reproducible
    np.testing.assert_array_equal(x, again)
    assert not np.array_equal(x, other)
    ids = x[:, 0, 0].astype(np.int64)
    assert len(np.unique(ids)) == 300
    assert sorted({(i // 1024 // 128, i % 1024 // 128) for i in ids}) == first  # all from drawn chunks
    rows, cols = {r for r, _ in first}, {c for _, c in first}
    assert len(rows) >= 4 and len(cols) >= 4  # spread over the scene, not one corner
    per_chunk = np.bincount([first.index((i // 1024 // 128, i % 1024 // 128)) for i in ids])
    assert per_chunk.min() >= 300 // 16 - 1 and per_chunk.max() <= 300 // 16 + 2  # proportional


def test_sample_tops_up_from_further_chunks_when_the_drawn_ones_are_empty():
    # only chunk (5, 6) has usable pixels (its first 400)
    cube, computed = _recorded_cube(usable=lambda iy, ix: 400 if (iy, ix) == (5, 6) else 0)
    with dask.config.set(scheduler="sync"):
        x = sample_series(cube, 250, seed=0)
    ids = x[:, 0, 0].astype(np.int64)
    assert len(x) == 250 and len(np.unique(ids)) == 250 and not np.isnan(x).any()
    assert {(i // 1024 // 128, i % 1024 // 128) for i in ids} == {(5, 6)}
    assert (5, 6) in computed and len(set(computed)) <= 32  # 16 drawn first, then 16 more (none usable)


def test_sample_is_the_stratified_one_over_every_chunk_when_all_are_needed(monkeypatch):
    """With few chunks or a large n every chunk is drawn, in chunk order: the sample is that of
    the one-stage design (here: MIN_CHUNKS too large to draw fewer), to the bit."""
    import slamgeo.io.sample as sampling

    mask = np.zeros((64, 48), dtype=bool)
    mask[:10, :20] = True
    cube, _ = _id_cube(ny=64, nx=48, chunk=8, nan_mask=mask)  # 48 chunks of 64 pixels
    small = sample_series(cube, 100, seed=2)  # 16 chunks drawn
    large = sample_series(cube, 800, seed=2)  # 4 x 800 >= 3072 pixels: every chunk
    monkeypatch.setattr(sampling, "MIN_CHUNKS", 10**9)
    np.testing.assert_array_equal(large, sample_series(cube, 800, seed=2))
    assert not np.array_equal(small, sample_series(cube, 100, seed=2))
