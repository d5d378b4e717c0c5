"""The deletion measure and the per-date reference attributions, against independent computations."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from slamgeo.errors import InputError
from slamgeo.method.attribution import delete_dates
from slamgeo.method.faithfulness import deletion, gradient_x_input, integrated_gradients
from slamgeo.method.model import CAE, CAEConfig


class LinearEncoder(nn.Module):
    """e[n, d] = sum_{c, t} W[d, c, t] x[n, c, t]: every attribution is known in closed form."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nct,dct->nd", x, self.weight)


def window_encoder(n_times: int = 20, dates=(8, 9, 10)) -> LinearEncoder:
    """D = 2: dimension 0 reads band 0 on `dates` only, dimension 1 reads band 1 on every date."""
    w = torch.zeros(2, 2, n_times)
    w[0, 0, list(dates)] = torch.tensor([1.0, -2.0, 1.5])
    w[1, 1, :] = 0.3
    return LinearEncoder(w)


def small_cae_encoder(seed: int = 0, n_times: int = 24):
    torch.manual_seed(seed)
    cfg = CAEConfig(n_bands=2, n_times=n_times, embed_dim=2, channels=(4, 8, 8), kernels=(5, 3, 3), hidden=(8,))
    return CAE(cfg).encoder.eval()


# ------------------------------------------------------------------------------- delete_dates


def test_deleted_dates_are_interpolated_like_numpy_interp_from_the_kept_ones():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(40, 2, 15)))
    mask = torch.from_numpy(rng.random((40, 15)) < 0.4)
    mask[0, :3] = True  # deleted first dates: the first kept value
    mask[1, -4:] = True  # deleted last dates: the last kept value
    mask[2] = True
    mask[2, 7] = False  # one date kept: it fills the series
    got = delete_dates(x, mask).numpy()
    t = np.arange(15)
    for n in range(40):
        kept = ~mask[n].numpy()
        for c in range(2):
            want = np.interp(t, t[kept], x[n, c].numpy()[kept])
            np.testing.assert_allclose(got[n, c], want, rtol=1e-12, atol=1e-12)


def test_kept_dates_are_left_exactly_as_they_were():
    x = torch.randn(10, 2, 12)
    mask = torch.rand(10, 12) < 0.5
    mask[:, 0] = False
    out = delete_dates(x, mask)
    assert torch.equal(out[~mask.unsqueeze(1).expand_as(x)], x[~mask.unsqueeze(1).expand_as(x)])


def test_deleting_every_date_is_refused():
    with pytest.raises(InputError, match="at least one date"):
        delete_dates(torch.randn(2, 2, 5), torch.ones(2, 5, dtype=torch.bool))


# ----------------------------------------------------------------------------------- deletion


def brute_force_displacement(enc, x, ranking_scores, k):
    """Mean over pixels of |E(x')[n, d] - E(x)[n, d]| with the k top-|score| dates deleted, per
    pixel and dimension, by NumPy interpolation and a plain loop."""
    xs = x.numpy()
    t = np.arange(x.shape[-1])
    with torch.no_grad():
        e0 = enc(x).numpy()
    out = np.zeros(e0.shape[1])
    for d in range(e0.shape[1]):
        moved = []
        for n in range(x.shape[0]):
            top = np.argsort(-np.abs(ranking_scores[n, d]), kind="stable")[:k]
            kept = np.ones(len(t), bool)
            kept[top] = False
            xd = np.stack([np.interp(t, t[kept], xs[n, c, kept]) for c in range(xs.shape[1])])
            with torch.no_grad():
                moved.append(enc(torch.from_numpy(xd[None]).to(x.dtype))[0, d].item())
        out[d] = np.mean(np.abs(np.array(moved) - e0[:, d]))
    return out


def test_top_k_displacement_equals_a_brute_force_loop():
    enc = small_cae_encoder(1)
    x = torch.randn(12, 2, 24)
    imp = torch.randn(12, 2, 24)
    res = deletion(enc, x, imp, [1, 3, 6], n_random=2)
    for i, k in enumerate([1, 3, 6]):
        np.testing.assert_allclose(res["top"][i].numpy(), brute_force_displacement(enc, x, imp.numpy(), k), rtol=1e-5)


def test_least_baseline_equals_the_brute_force_loop_on_the_reversed_ranking():
    enc = small_cae_encoder(2)
    x = torch.randn(10, 2, 24)
    imp = torch.randn(10, 2, 24)
    res = deletion(enc, x, imp, [2, 5], baseline="least")
    # the k least important dates are the k most important of a reversed score (no ties here)
    reversed_scores = 1.0 / imp.abs().numpy()
    for i, k in enumerate([2, 5]):
        np.testing.assert_allclose(
            res["baseline"][i].numpy(), brute_force_displacement(enc, x, reversed_scores, k), rtol=1e-5
        )
    torch.testing.assert_close(res["ratio"], res["top"] / res["baseline"])


def test_true_weights_move_a_linear_encoder_more_than_random_dates():
    enc = window_encoder()
    x = torch.randn(200, 2, 20)
    truth = (enc.weight.detach()[None] * x[:, None]).sum(2)  # (N, D, T): the exact per-date contribution
    res = deletion(enc, x, truth, [1, 2, 3], n_random=8)
    assert torch.all(res["ratio"][:, 0] > 3)  # dimension 0 lives on three dates: random ones rarely hit them
    assert torch.all(res["top"] >= res["baseline"])


def test_random_baseline_is_reproducible_by_seed():
    enc = small_cae_encoder(3)
    x = torch.randn(30, 2, 24)
    imp = torch.randn(30, 2, 24)
    a = deletion(enc, x, imp, [3], seed=5)
    b = deletion(enc, x, imp, [3], seed=5)
    c = deletion(enc, x, imp, [3], seed=6)
    assert torch.equal(a["baseline"], b["baseline"]) and not torch.equal(a["baseline"], c["baseline"])
    assert torch.equal(a["top"], c["top"])


def test_random_baseline_equals_its_expectation_on_a_linear_encoder():
    """Linear encoder reading one date (t0 = 5) of band 0, and a series that is 0 except 1 at
    t0: deleting t0 replaces it by 0 (both neighbours are 0), so |dE| = 1 exactly when t0 is
    drawn, which happens with probability k / T."""
    w = torch.zeros(1, 2, 20)
    w[0, 0, 5] = 1.0
    enc = LinearEncoder(w)
    x = torch.zeros(500, 2, 20)
    x[:, 0, 5] = 1.0
    res = deletion(enc, x, torch.randn(500, 1, 20), [4], n_random=16, seed=0)
    p = 4 / 20
    se = np.sqrt(p * (1 - p) / (500 * 16))
    assert abs(res["baseline"][0, 0].item() - p) < 4 * se


def test_deletion_reports_the_embedding_spread():
    enc = small_cae_encoder(4)
    x = torch.randn(25, 2, 24)
    res = deletion(enc, x, torch.randn(25, 2, 24), [2])
    with torch.no_grad():
        torch.testing.assert_close(res["embedding_std"], enc(x).double().std(0))
    assert res["k"].tolist() == [2.0] and res["top"].shape == res["baseline"].shape == (1, 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"importance": torch.randn(5, 2, 23)}, r"importance must be \(N, D, T\)"),
        ({"importance": torch.randn(5, 3, 24)}, "D = 3 dimensions"),
        ({"importance": torch.full((5, 2, 24), float("nan"))}, "NaN"),
        ({"ks": [0]}, r"ks must be"),
        ({"ks": [24]}, r"ks must be"),
        ({"ks": []}, r"ks must be"),
        ({"baseline": "bottom"}, "baseline must be"),
        ({"n_random": 0}, "n_random"),
    ],
)
def test_bad_deletion_arguments_are_refused(kwargs, message):
    args = {"importance": torch.randn(5, 2, 24), "ks": [2]}
    args.update(kwargs)
    importance, ks = args.pop("importance"), args.pop("ks")
    with pytest.raises(InputError, match=message):
        deletion(small_cae_encoder(), torch.randn(5, 2, 24), importance, ks, **args)


def test_deletion_refuses_nan_in_x():
    x = torch.randn(5, 2, 24)
    x[2, 0, 3] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        deletion(small_cae_encoder(), x, torch.randn(5, 2, 24), [2])


# ------------------------------------------------------------------- reference attributions


def test_gradient_x_input_equals_x_times_the_float64_jacobian_summed_over_bands():
    enc = small_cae_encoder(5)
    x = torch.randn(4, 2, 24)
    got = gradient_x_input(enc, x)
    enc64 = copy.deepcopy(enc).double()
    for n in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: enc64(v)[0], x[n : n + 1].double())  # (D, 1, C, T)
        want = (jac[:, 0] * x[n].double()).sum(1)  # (D, T)
        torch.testing.assert_close(got[n].double(), want, rtol=1e-4, atol=1e-6)


def test_integrated_gradients_of_a_linear_encoder_are_exact():
    enc = window_encoder()
    x = torch.randn(6, 2, 20)
    x0 = torch.randn(2, 20)
    want = (enc.weight.detach()[None] * (x - x0)[:, None]).sum(2)
    torch.testing.assert_close(integrated_gradients(enc, x, baseline=x0, n_steps=4), want, rtol=1e-5, atol=1e-6)


def test_integrated_gradients_are_complete_on_the_cae():
    """sum_t IG[n, d, t] = E(x)[n, d] - E(0)[d], up to the quadrature error of 64 points."""
    enc = small_cae_encoder(6)
    x = torch.randn(8, 2, 24)
    ig = integrated_gradients(enc, x, n_steps=64)
    with torch.no_grad():
        want = enc(x) - enc(torch.zeros(1, 2, 24))
    torch.testing.assert_close(ig.sum(-1), want, rtol=1e-3, atol=1e-3 * want.abs().max().item())


def test_attributions_leave_the_model_as_it_was():
    enc = small_cae_encoder(7)
    enc.train()
    state = copy.deepcopy(enc.state_dict())
    x = torch.randn(3, 2, 24)
    gradient_x_input(enc, x)
    integrated_gradients(enc, x, n_steps=4)
    deletion(enc, x, torch.randn(3, 2, 24), [2], n_random=2)
    assert enc.training
    assert all(torch.equal(v, state[k]) for k, v in enc.state_dict().items())
    assert all(p.grad is None for p in enc.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in enc.modules())


# ------------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    """A small cube (24 x 20 pixels, 16 dates, a no-data border) and a model, as stores too;
    the results of the in-memory `explain` and of `explain_store`."""
    from helpers import SMALL_ARCH, class_cube

    from slamgeo.io.cube import open_cube, open_results, write_cube
    from slamgeo.jobs.explain import explain, explain_store
    from slamgeo.method.train import train

    tmp = tmp_path_factory.mktemp("faithfulness")
    cube, _ = class_cube()
    write_cube(cube, tmp / "cube.zarr", progress=False)
    cube = open_cube(tmp / "cube.zarr")
    model = train(cube, out_dir=tmp / "model", sample_size=300, max_epochs=2, arch=SMALL_ARCH, seed=0, progress=False)
    explain_store(tmp / "cube.zarr", tmp / "model", tmp / "results.zarr", progress=False)
    return cube, model, explain(cube, model), open_results(tmp / "results.zarr")


def test_the_stage_equals_deletion_curves_on_the_sampled_series(explained):
    import slamgeo
    from slamgeo.io.sample import sample_series
    from slamgeo.method.faithfulness import deletion_curves

    cube, model, _, stored = explained
    got = slamgeo.faithfulness(stored, cube, model, n_pixels=200, seed=3)
    x = sample_series(cube, 200, seed=3, gap_fill=model.gap_fill, bands=model.bands)
    x = x[~np.isnan(x).any(axis=(1, 2))]
    want = deletion_curves(
        model.model.encoder,
        torch.from_numpy(model.standardise(x)),
        [1, 2, 4, 8],  # those of (1, 2, 4, 8, 16) below the 16 dates
        methods=("gradslam",),
        scale=stored.attrs["scale"],
        reference=torch.tensor(stored.attrs["reference_map"], dtype=torch.float32),
    )
    assert list(got) == list(want) == ["Grad-SLAM (centred)"]
    for key in ("k", "top", "baseline", "ratio", "embedding_std"):
        np.testing.assert_array_equal(got["Grad-SLAM (centred)"][key], want["Grad-SLAM (centred)"][key])
    assert slamgeo.faithfulness(stored, cube, model, n_pixels=5) is None  # too few series to say


def test_the_run_scaling_of_in_memory_results_is_the_stored_one(explained):
    """A results store records the scaling and the reference map; the in-memory `explain`
    keeps neither on the Dataset, and the map is computed again as explain did."""
    from slamgeo.jobs.faithfulness import run_scaling

    cube, model, in_memory, stored = explained
    assert "reference_map" not in in_memory.attrs
    scale, ref = run_scaling(stored, model, cube)
    scale_mem, ref_mem = run_scaling(in_memory, model, cube)
    assert scale == scale_mem == "centred" and ref is not None and ref_mem is not None
    assert ref.dtype == np.float32 and ref.shape == (model.model.cfg.embed_dim, cube.sizes["time"])
    np.testing.assert_array_equal(ref_mem, ref)
    assert run_scaling(in_memory.assign_attrs(scale="minmax"), model, cube) == ("minmax", None)


def test_on_a_cluster_the_curves_are_computed_on_a_worker_as_in_process(explained, local_cluster):
    """With a distributed client, the deletion curves are one task on a worker
    (`deletion_task`), with the in-process numbers (the worker's single torch thread may round
    differently from this process's threads: a tight tolerance)."""
    import dask
    from distributed import get_task_stream

    import slamgeo

    cube, model, _, stored = explained
    want = slamgeo.faithfulness(stored, cube, model, n_pixels=200, seed=3)
    with dask.config.set(scheduler=local_cluster), get_task_stream(client=local_cluster) as stream:
        got = slamgeo.faithfulness(stored, cube, model, n_pixels=200, seed=3)
    ran = [t for t in stream.data if str(t["key"]).startswith("deletion_task-")]
    assert len(ran) == 1 and ran[0]["worker"] in local_cluster.scheduler_info()["workers"]
    assert want is not None and got is not None and list(got) == list(want) == ["Grad-SLAM (centred)"]
    for key in ("k", "top", "baseline", "ratio", "embedding_std"):
        np.testing.assert_allclose(got["Grad-SLAM (centred)"][key], want["Grad-SLAM (centred)"][key], rtol=1e-5)
    assert got["Grad-SLAM (centred)"]["baseline_name"] == want["Grad-SLAM (centred)"]["baseline_name"]


def test_started_curves_are_not_waited_for_and_are_the_stages(explained, local_cluster):
    """`start_faithfulness` submits the curves' task and returns without waiting for it (the
    report runs the class pairs meanwhile): it returns before the task's computation on the
    worker ends (the workers' clock is this machine's). Then the waiter gives `faithfulness`'s
    curves."""
    import time

    import dask
    from distributed import get_task_stream

    import slamgeo
    from slamgeo.jobs.faithfulness import start_faithfulness

    cube, model, _, stored = explained
    want = slamgeo.faithfulness(stored, cube, model, n_pixels=200, seed=3)
    with dask.config.set(scheduler=local_cluster), get_task_stream(client=local_cluster) as stream:
        wait = start_faithfulness(stored, cube, model, n_pixels=200, seed=3)
        returned = time.time()
        got = wait()
    ran = [t for t in stream.data if str(t["key"]).startswith("deletion_task-")]
    assert len(ran) == 1
    computed = [s for s in ran[0]["startstops"] if s["action"] == "compute"]
    assert returned < computed[-1]["stop"], (returned, computed)
    assert got is not None and want is not None and list(got) == list(want)
    for key in ("k", "top", "baseline", "ratio", "embedding_std"):
        np.testing.assert_allclose(got["Grad-SLAM (centred)"][key], want["Grad-SLAM (centred)"][key], rtol=1e-5)


def _on_worker_only(block: np.ndarray) -> np.ndarray:
    """A block that only a worker of a distributed cluster may compute."""
    from distributed import get_worker

    get_worker()  # ValueError outside a worker
    return block


def test_on_a_cluster_the_cube_is_not_gathered_in_the_driver(explained, tmp_path, local_cluster):
    """The stage on a 256 x 256 cube store (8 MB of dB) whose blocks only a worker may compute,
    on a LocalCluster: the driver's peak of traced allocations (tracemalloc, numpy's buffers
    received from the workers included) stays under a third of the cube (about 2.5 MB are the
    in-process scheduler's handling of the graphs; the 200 series drawn take 26 kB), and the
    curves are those of the same cube in this process."""
    import tracemalloc

    import dask
    import dask.array as da
    from helpers import class_cube

    import slamgeo
    from slamgeo.io.cube import open_cube, write_cube

    _, model, _, stored = explained
    cube, _ = class_cube(ny=256, nx=256, n_times=16, chunk=64)
    write_cube(cube, tmp_path / "cube.zarr", progress=False)
    on_disk = open_cube(tmp_path / "cube.zarr")
    meta = np.empty((0, 0, 0), np.float32)
    marked = on_disk.assign(
        {b: on_disk[b].copy(data=da.map_blocks(_on_worker_only, on_disk[b].data, meta=meta)) for b in model.bands}
    )
    nbytes = sum(on_disk[b].nbytes for b in model.bands)
    with dask.config.set(scheduler=local_cluster):
        slamgeo.faithfulness(stored, marked, model, n_pixels=200, seed=1)  # warm: imports, the model's pickle
        tracemalloc.start()
        try:
            got = slamgeo.faithfulness(stored, marked, model, n_pixels=200, seed=1)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < nbytes / 3, (peak, nbytes)
    want = slamgeo.faithfulness(stored, on_disk, model, n_pixels=200, seed=1)
    assert got is not None and want is not None
    for key in ("k", "top", "baseline", "ratio", "embedding_std"):
        np.testing.assert_allclose(got["Grad-SLAM (centred)"][key], want["Grad-SLAM (centred)"][key], rtol=1e-5)


def test_started_curves_take_the_stages_options_and_defaults(explained):
    """`start_faithfulness`'s defaults are `faithfulness`'s signature's, and an unknown option is
    refused by name before any work."""
    import inspect

    from slamgeo.jobs.faithfulness import FAITHFULNESS_DEFAULTS, faithfulness, start_faithfulness

    params = inspect.signature(faithfulness).parameters
    assert {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY} == dict(FAITHFULNESS_DEFAULTS)
    cube, model, _, stored = explained
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['n_pixel'\]"):
        start_faithfulness(stored, cube, model, n_pixel=10)  # type: ignore[call-arg]
