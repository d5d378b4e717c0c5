"""Grad-SLAM: exact against independent computations, per sample, model left untouched,
and a known answer on data whose classes differ only within a window of dates."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers import T_WIN, W0, W1, window_classes, window_share
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slamgeo.errors import InputError
from slamgeo.method.faithfulness import deletion
from slamgeo.method.gradslam import (
    GradSlamOutput,
    default_layers,
    grad_slam,
    layer_maps,
    layer_stride,
    reference_map,
    resample,
    scale_maps,
)
from slamgeo.method.model import CAE, CAEConfig, conv_blocks
from slamgeo.schema import GRADSLAM_SCALE, SCALES

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def small_encoder(seed: int = 0, *, n_times: int = 24, embed_dim: int = 3, channels=(4, 8, 8), kernels=(5, 3, 3)):
    torch.manual_seed(seed)
    cfg = CAEConfig(n_bands=2, n_times=n_times, embed_dim=embed_dim, channels=channels, kernels=kernels, hidden=(8,))
    return CAE(cfg).encoder.eval()


def stages(encoder) -> list[nn.Module]:
    """The encoder as a flat list of modules: conv, pool, ELU per block, then flatten + head."""
    flat: list[nn.Module] = [m for block in conv_blocks(encoder) for m in block]
    return flat + [nn.Sequential(nn.Flatten(1), encoder.head)]


def reference_maps_float64(encoder, x: torch.Tensor, layers: list[nn.Module]) -> list[torch.Tensor]:
    """Eq. 3/4 the slow way: float64 copy of the encoder, one sample at a time, the Jacobian of
    the embedding with respect to the layer's output by `torch.autograd.functional.jacobian`,
    the stages run by hand (no hooks)."""
    enc64 = copy.deepcopy(encoder).double()
    seq = stages(enc64)
    seq_orig = stages(encoder)
    out = []
    for layer in layers:
        j = next(
            i for i, m in enumerate(seq_orig) if m is layer or (isinstance(layer, nn.Sequential) and m is layer[-1])
        )
        per_sample = []
        for n in range(x.shape[0]):
            a = x[n : n + 1].double()
            for m in seq[: j + 1]:
                a = m(a)
            jac = torch.autograd.functional.jacobian(
                lambda t, j=j: nn.Sequential(*seq[j + 1 :])(t)[0], a
            )  # (D, 1, K, t_A)
            alpha = jac[:, 0].mean(-1)  # (D, K)
            per_sample.append(alpha @ a[0])  # (D, t_A)
        out.append(torch.stack(per_sample))
    return out


def assert_maps_close(got: torch.Tensor, want: torch.Tensor) -> None:
    """float32 against float64: relative to the map's scale."""
    assert got.dtype == torch.float32
    scale = want.abs().max().item() + 1e-12
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5 * scale)


# ------------------------------------------------------------------------------------ exactness


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 4),
    n_times=st.sampled_from([16, 19, 24, 33]),
    embed_dim=st.integers(1, 3),
)
def test_layer_maps_equal_per_sample_float64_jacobian_for_every_layer_and_dim(seed, n, n_times, embed_dim):
    enc = small_encoder(seed, n_times=n_times, embed_dim=embed_dim)
    x = torch.randn(n, 2, n_times, generator=torch.Generator().manual_seed(seed))
    layers = default_layers(enc)
    got = layer_maps(enc, x)
    want = reference_maps_float64(enc, x, layers)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.shape[:2] == (n, embed_dim)
        assert_maps_close(g, w)


def test_layer_maps_equal_reference_for_layers_inside_blocks_and_any_order():
    enc = small_encoder(3)
    x = torch.randn(4, 2, 24)
    b = enc.blocks
    layers = [b["block3"], b["block2"][0], b["block1"][1]]  # a block, a conv output, a pool output
    for g, w in zip(layer_maps(enc, x, layers), reference_maps_float64(enc, x, layers)):
        assert_maps_close(g, w)


@pytest.mark.parametrize("names", [["block1"], ["block2"], ["block3"], ["block3", "block1"], ["block2", "block2"]])
def test_any_subset_of_blocks_in_any_order_equals_the_reference(names):
    enc = small_encoder(11, n_times=19)
    x = torch.randn(3, 2, 19)
    layers = [enc.blocks[n] for n in names]
    got = layer_maps(enc, x, layers)
    assert len(got) == len(layers)
    for g, w in zip(got, reference_maps_float64(enc, x, layers)):
        assert_maps_close(g, w)


def test_layer_maps_equal_central_finite_differences_in_float64():
    enc = small_encoder(7, embed_dim=2).double()
    x = torch.randn(2, 2, 24, dtype=torch.float64)
    got = layer_maps(enc, x)
    seq = stages(enc)
    ends = [2, 5, 8]  # index in `stages` of each block's last module
    h = 1e-6
    for layer_idx, j in enumerate(ends):
        for n in range(x.shape[0]):
            a = x[n : n + 1]
            for m in seq[: j + 1]:
                a = m(a)
            rest = nn.Sequential(*seq[j + 1 :])
            grad = torch.zeros(2, *a.shape[1:], dtype=torch.float64)  # (D, K, t_A)
            with torch.no_grad():
                for k in range(a.shape[1]):
                    for t in range(a.shape[2]):
                        up, down = a.clone(), a.clone()
                        up[0, k, t] += h
                        down[0, k, t] -= h
                        grad[:, k, t] = (rest(up)[0] - rest(down)[0]) / (2 * h)
            want = grad.mean(-1) @ a[0]  # (D, t_A)
            torch.testing.assert_close(got[layer_idx][n].double(), want, rtol=1e-5, atol=1e-7)


def test_ties_in_max_pooling_route_the_gradient_as_max_pool_does():
    """A constant series makes the conv outputs equal on neighbouring dates: MaxPool1d passes
    the gradient to the first of tied dates, and so must the direct executor."""
    enc = small_encoder(4)
    x = torch.zeros(2, 2, 24)
    x[1] = 0.5
    for g, w in zip(layer_maps(enc, x), reference_maps_float64(enc, x, default_layers(enc))):
        assert_maps_close(g, w)


def test_frozen_parameters_give_the_same_maps():
    enc = small_encoder(5)
    x = torch.randn(4, 2, 24)
    want = layer_maps(enc, x)
    for p in enc.parameters():
        p.requires_grad_(False)
    for g, w in zip(layer_maps(enc, x), want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-7)
    assert not any(p.requires_grad for p in enc.parameters())


def test_direct_and_hooked_executors_agree():
    """With a hook of someone else on the encoder, the maps come from the encoder's own forward
    pass and hooks; without, from the block-by-block executor: the same numbers."""
    enc = small_encoder(6, n_times=61, channels=(16, 32, 64), kernels=(7, 5, 3))
    x = torch.randn(64, 2, 61)
    direct = layer_maps(enc, x)
    handle = enc.register_forward_hook(lambda m, i, o: None)
    try:
        hooked = layer_maps(enc, x)
    finally:
        handle.remove()
    for a, b in zip(direct, hooked):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * b.abs().max().item())


@pytest.mark.parametrize(
    ("n_times", "channels", "kernels"),
    [(61, (16, 32, 64), (7, 5, 3)), (24, (4, 8, 8), (5, 3, 3)), (8, (1, 8, 3), (3, 3, 1)), (33, (8, 1, 4), (7, 5, 3))],
)
def test_both_activation_layouts_give_the_reference_maps(n_times, channels, kernels):
    """The direct executor keeps activations channels-last on CPU and in torch's layout on CUDA:
    both layouts, run here on CPU, give the float64 reference's maps and the encoder's own
    embedding, at odd T (a date dropped by pooling), a last block of one date (T = 8), and
    blocks of one channel, where the two layouts coincide in memory."""
    from slamgeo.method.blockwise import blockwise_maps

    enc = small_encoder(21, n_times=n_times, channels=channels, kernels=kernels)
    x = torch.randn(40, 2, n_times, generator=torch.Generator().manual_seed(21))
    layers = default_layers(enc)
    want = reference_maps_float64(enc, x, layers)
    with torch.no_grad():
        e_want = copy.deepcopy(enc).double()(x.double())
    outs = {}
    for channels_last in (True, False):
        e, maps = blockwise_maps(enc, x, layers, {}, channels_last=channels_last)
        torch.testing.assert_close(e.double(), e_want, rtol=1e-5, atol=1e-6)
        for g, w in zip(maps, want):
            assert_maps_close(g, w)
        outs[channels_last] = maps
    for a, b in zip(outs[True], outs[False]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * b.abs().max().item())


def test_the_cpu_executor_runs_channels_last_convolutions():
    """On CPU every convolution of the direct executor gets channels-last input (no reorder in
    oneDNN), and the maps are the float64 reference's."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Layouts(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.inputs: list[bool] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.convolution.default and args[0].shape[0] > 1:  # not the shortcut's V
                self.inputs.append(args[0].is_contiguous(memory_format=torch.channels_last))
            return func(*args, **(kwargs or {}))

    enc = small_encoder(22, n_times=61, channels=(16, 32, 64), kernels=(7, 5, 3))
    x = torch.randn(30, 2, 61)
    with Layouts() as seen:
        got = layer_maps(enc, x)
    assert seen.inputs == [True] * 4  # 3 blocks forward, block 3's input gradient
    for g, w in zip(got, reference_maps_float64(enc, x, default_layers(enc))):
        assert_maps_close(g, w)


@pytest.mark.parametrize("names", [("block1",), ("block2",), ("block3",), ("block3", "block1"), ("block2", "block3")])
def test_batched_backward_equals_one_autograd_pass_per_dimension(names):
    """The direct executor (all D dimensions in one written-out backward pass) against the
    hooked executor (autograd, one pass per dimension), at an odd T with dates dropped by
    pooling, D = 3, and every subset of blocks in any order."""
    enc = small_encoder(16, n_times=61, embed_dim=3, channels=(8, 16, 16), kernels=(7, 5, 3))
    x = torch.randn(50, 2, 61)
    layers = [enc.blocks[n] for n in names]
    direct = layer_maps(enc, x, layers, batch_size=16)
    handle = enc.register_forward_hook(lambda m, i, o: None)
    try:
        hooked = layer_maps(enc, x, layers, batch_size=16)
    finally:
        handle.remove()
    for a, b in zip(direct, hooked):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * b.abs().max().item())


@pytest.mark.parametrize(
    ("stride", "padding", "dilation"), [(1, 0, 1), (1, 1, 1), (1, 2, 1), (1, 2, 2), (1, 4, 2), (2, 1, 1)]
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_input_gradient_equals_autograd(stride, padding, dilation, channels_last):
    """dE/dA through a Conv1d, as the direct executor takes it (the flipped kernel's forward
    correlation for stride 1, `conv1d_input` else), against autograd, from dE/dconv(A) in
    torch's layout and channels-last (the CPU executor's)."""
    from slamgeo.method.blockwise import input_grad

    torch.manual_seed(17)
    conv = nn.Conv1d(6, 5, 3, stride=stride, padding=padding, dilation=dilation)
    a = torch.randn(4, 6, 15, requires_grad=True)
    out = conv(a)
    g = torch.randn_like(out)
    (want,) = torch.autograd.grad(out, a, g)
    if channels_last:
        g = g.transpose(1, 2).contiguous().transpose(1, 2)
        assert g.stride()[1] == 1
    torch.testing.assert_close(input_grad(conv, g, tuple(a.shape)), want, rtol=1e-5, atol=1e-6)


def test_threads_sharing_one_model_get_their_own_maps():
    from concurrent.futures import ThreadPoolExecutor

    enc = small_encoder(7)
    xs = [torch.randn(40, 2, 24) for _ in range(6)]
    layers = [enc.blocks["block2"], enc.blocks["block2"][0]]  # the hooked executor
    want = [layer_maps(enc, x, layers) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda x: layer_maps(enc, x, layers), xs))
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_default_layers_are_the_conv_blocks_outputs():
    enc = small_encoder()
    layers = default_layers(enc)
    assert len(layers) == 3 and all(a is b for a, b in zip(layers, enc.blocks.values()))


def test_a_cae_is_explained_through_its_encoder():
    torch.manual_seed(0)
    cae = CAE(CAEConfig(n_times=16, channels=(4, 8, 8), hidden=(8,)))
    x = torch.randn(3, 2, 16)
    for a, b in zip(layer_maps(cae, x), layer_maps(cae.encoder, x)):
        assert torch.equal(a, b)


class ListBlocksEncoder(nn.Module):
    """Someone else's encoder: the same modules as a slamgeo Encoder, `blocks` an nn.ModuleList."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList(conv_blocks(encoder))
        self.head = encoder.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x.flatten(1))


def test_an_encoder_with_a_list_of_blocks_is_explained_at_the_given_layers():
    enc = small_encoder(16, n_times=19)
    foreign = ListBlocksEncoder(enc)
    x = torch.randn(4, 2, 19)
    layers = [foreign.blocks[2], foreign.blocks[0]]
    got = layer_maps(foreign, x, layers)
    for g, w in zip(got, reference_maps_float64(enc, x, layers)):
        assert_maps_close(g, w)
    want = grad_slam(enc, x, list(enc.blocks.values()), scale="maxabs")
    torch.testing.assert_close(grad_slam(foreign, x, list(foreign.blocks), scale="maxabs"), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match=r"found a ListBlocksEncoder: pass `layers` explicitly"):
        grad_slam(foreign, x, scale="maxabs")


# ------------------------------------------------------------------------------- per sample


def test_a_pixel_gets_the_same_maps_alone_or_in_a_batch_of_thousands():
    """Same up to float32 rounding (oneDNN picks its kernels' blocking by batch size, so the
    sums are not bitwise identical: about 1e-6 of the map's scale)."""
    enc = small_encoder(1, n_times=61, channels=(16, 32, 64), kernels=(7, 5, 3))
    x = torch.randn(3000, 2, 61, generator=torch.Generator().manual_seed(1))
    pick = [0, 1500, 2999]
    alone = [layer_maps(enc, x[i : i + 1]) for i in pick]
    for batch_size in (1024, 4096):  # chunks of 1024, and one batch of 3000
        together = layer_maps(enc, x, batch_size=batch_size)
        for j, i in enumerate(pick):
            for a, t in zip(alone[j], together):
                torch.testing.assert_close(t[i : i + 1], a, rtol=1e-5, atol=1e-5 * a.abs().max().item())


def test_a_pixel_map_does_not_depend_on_the_other_pixels():
    enc = small_encoder(2)
    x = torch.randn(50, 2, 24)
    y = x.clone()
    y[1:] = 10 * torch.randn(49, 2, 24)  # every other pixel changed
    for a, b in zip(layer_maps(enc, x), layer_maps(enc, y)):
        torch.testing.assert_close(a[0], b[0], rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- resampling, scaling


def test_layer_strides_of_the_default_blocks_at_61_dates():
    assert [layer_stride(t, 61) for t in (61, 30, 15, 7)] == [1, 2, 4, 8]
    assert [layer_stride(t, 23) for t in (11, 5, 2)] == [2, 4, 8]


@pytest.mark.parametrize("n_times, t_layer", [(61, 30), (61, 15), (61, 7), (36, 4), (16, 2), (23, 2), (20, 20)])
def test_resample_interpolates_linearly_between_block_centres(n_times, t_layer):
    s = layer_stride(t_layer, n_times)
    maps = torch.randn(3, 2, t_layer, dtype=torch.float64)
    centres = s * np.arange(t_layer) + (s - 1) / 2  # sample t summarises dates [s t, s t + s - 1]
    want = np.apply_along_axis(lambda m: np.interp(np.arange(n_times), centres, m), -1, maps.numpy())
    np.testing.assert_allclose(resample(maps, n_times).numpy(), want, rtol=1e-12, atol=1e-12)


def test_resample_gives_trailing_dates_dropped_by_pooling_the_last_value():
    maps = torch.arange(7.0).view(1, 1, 7)  # block3 at T = 61 covers dates 0..55
    r = resample(maps, 61)
    assert torch.all(r[0, 0, 60 - 8 :] == 6.0)


@pytest.mark.parametrize("scale", ["minmax", "maxabs", "abs", "none"])
def test_per_layer_scalings_merge_as_the_mean_of_independently_scaled_maps(scale):
    enc = small_encoder(4)
    x = torch.randn(6, 2, 24)
    raw = [resample(m, 24).numpy().astype(np.float64) for m in layer_maps(enc, x)]

    def numpy_scale(m):
        if scale == "minmax":
            lo, hi = m.min(-1, keepdims=True), m.max(-1, keepdims=True)
            return (m - lo) / (hi - lo)
        if scale == "maxabs":
            return m / np.abs(m).max(-1, keepdims=True)
        if scale == "abs":
            return np.abs(m) / np.abs(m).max(-1, keepdims=True)
        return m

    want = np.mean([numpy_scale(m) for m in raw], axis=0)
    got = grad_slam(enc, x, scale=scale)
    assert got.shape == (6, 3, 24) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_scaled_ranges():
    enc = small_encoder(5)
    x = torch.randn(20, 2, 24)
    mm = grad_slam(enc, x, scale="minmax")
    assert mm.min() >= 0 and mm.max() <= 1
    ma = grad_slam(enc, x, scale="maxabs")
    assert ma.min() >= -1 and ma.max() <= 1 and ma.min() < 0  # the sign is kept
    ab = grad_slam(enc, x, scale="abs")
    assert ab.min() >= 0 and ab.max() <= 1


def test_a_zero_map_scales_to_zero_and_a_constant_one_to_zero_under_minmax():
    zero = torch.zeros(1, 1, 5)
    for scale in ("minmax", "maxabs", "abs"):
        assert torch.equal(scale_maps(zero, scale), zero)
    assert torch.equal(scale_maps(torch.full((1, 1, 5), 3.0), "minmax"), zero)


def test_reference_map_is_the_mean_of_the_raw_merged_maps():
    enc = small_encoder(6)
    x = torch.randn(30, 2, 24)
    merged = torch.stack([resample(m, 24) for m in layer_maps(enc, x)]).mean(0).double()
    ref = reference_map(enc, x)
    assert ref.shape == (3, 24)
    torch.testing.assert_close(ref.double(), merged.mean(0), rtol=1e-5, atol=1e-7)


def test_centred_is_the_raw_merged_map_minus_the_reference_over_its_max_abs():
    enc = small_encoder(7)
    x = torch.randn(8, 2, 24)
    ref = reference_map(enc, torch.randn(40, 2, 24))
    raw = grad_slam(enc, x, scale="none").double()
    diff = raw - ref.double()
    want = diff / diff.abs().amax(-1, keepdim=True)
    got = grad_slam(enc, x, scale="centred", reference=ref)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- outputs, cost


def test_embedding_comes_from_the_same_single_forward_pass():
    enc = small_encoder(8)
    x = torch.randn(10, 2, 24)
    calls = []
    handle = enc.register_forward_pre_hook(lambda m, i: calls.append(i[0].shape[0]))
    try:
        out = grad_slam(enc, x, scale="maxabs", return_embedding=True)
    finally:
        handle.remove()
    assert calls == [10]
    assert isinstance(out, GradSlamOutput) and out.layer_maps is None
    with torch.no_grad():
        torch.testing.assert_close(out.embedding, enc(x))
    assert out.embedding.dtype == torch.float32 and out.importance.shape == (10, 3, 24)


def test_an_empty_batch_gives_empty_outputs():
    out = grad_slam(small_encoder(), torch.zeros(0, 2, 24), scale="maxabs", return_embedding=True)
    assert out.importance.shape == (0, 3, 24) and out.embedding.shape == (0, 3)


@pytest.mark.parametrize("embed_dim", [1, 3])
def test_explaining_runs_the_convolutions_of_one_forward_pass(embed_dim):
    """Counted at the dispatcher: 3 forward convolutions (one per block) for the default path,
    however many embedding dimensions are explained."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountConvolutions(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.forward = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.convolution.default:
                self.forward += 1
            return func(*args, **(kwargs or {}))

    enc = small_encoder(8, embed_dim=embed_dim)
    with CountConvolutions() as count:
        grad_slam(enc, torch.randn(10, 2, 24), scale="maxabs", return_embedding=True)
    # + 1: the shortcut's kernel V, one tiny convolution of a ones signal; + 1: block 3's input
    # gradient for all dimensions at once, a correlation with the flipped kernel
    assert count.forward == 3 + 1 + 1


def test_return_layer_maps_gives_the_raw_maps():
    enc = small_encoder(9)
    x = torch.randn(4, 2, 24)
    out = grad_slam(enc, x, scale="minmax", return_layer_maps=True)
    for a, b in zip(out.layer_maps, layer_maps(enc, x)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_each_available_device(device):
    enc = small_encoder(10).to(device)
    x = torch.randn(5, 2, 24, device=device)
    out = grad_slam(enc, x, scale="maxabs", return_embedding=True)
    assert out.importance.device.type == device and out.importance.dtype == torch.float32
    cpu = grad_slam(enc.cpu(), x.cpu(), scale="maxabs")
    torch.testing.assert_close(out.importance.cpu(), cpu, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------- grad modes, state


def test_same_result_under_no_grad_and_inference_mode():
    enc = small_encoder(11)
    x = torch.randn(5, 2, 24)
    want = grad_slam(enc, x, scale="maxabs")
    with torch.no_grad():
        assert torch.equal(grad_slam(enc, x, scale="maxabs"), want)
    with torch.inference_mode():
        xi = x.clone()
        got = grad_slam(enc, xi, scale="maxabs")
    assert torch.equal(got, want)


def test_input_that_requires_grad_is_not_touched():
    enc = small_encoder(12)
    x = torch.randn(5, 2, 24, requires_grad=True)
    grad_slam(enc, x * 1.0, scale="maxabs")
    assert x.grad is None


def test_runs_under_bfloat16_autocast_and_returns_float32():
    enc = small_encoder(13, n_times=61, channels=(16, 32, 64), kernels=(7, 5, 3))
    x = torch.randn(64, 2, 61)
    want = grad_slam(enc, x, scale="maxabs", return_embedding=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = grad_slam(enc, x, scale="maxabs", return_embedding=True)
    assert got.importance.dtype == torch.float32 and got.embedding.dtype == torch.float32
    assert torch.isfinite(got.importance).all()
    # bfloat16 keeps ~3 significant digits: the maps agree in shape, not to float32 precision
    corr = np.corrcoef(got.importance.flatten().numpy(), want.importance.flatten().numpy())[0, 1]
    assert corr > 0.95


def test_model_is_left_as_it_was():
    enc = small_encoder(14)
    enc.train()
    state = copy.deepcopy(enc.state_dict())
    p0 = next(enc.parameters())
    p0.grad = torch.ones_like(p0)  # a caller's own accumulated gradient stays as it is
    grad_slam(enc, torch.randn(4, 2, 24), scale="maxabs")
    assert enc.training and all(m.training for m in enc.modules())
    assert all(torch.equal(v, state[k]) for k, v in enc.state_dict().items())
    assert torch.equal(p0.grad, torch.ones_like(p0))
    assert all(p.grad is None for p in list(enc.parameters())[1:])
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in enc.modules())


def test_no_hook_is_left_behind_after_an_error():
    enc = small_encoder(15)
    with pytest.raises(InputError, match=r"must output \(N, K, t_A\)"):
        layer_maps(enc, torch.randn(3, 2, 24), [enc.head[0]])  # a Linear: (N, 8), no time axis
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in enc.modules())
    assert not enc.training


# -------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make_x, message",
    [
        (lambda: torch.randn(2, 24), r"must be \(N, C, T\)"),
        (lambda: torch.randn(1, 2, 2, 24), r"must be \(N, C, T\)"),
        (lambda: torch.randn(3, 3, 24), "C = 2 bands"),
        (lambda: torch.randn(3, 2, 6), "T = 24 dates.*found T = 6.*too short"),
        (lambda: torch.randn(3, 2, 30), "T = 24 dates.*found T = 30"),
        (lambda: torch.ones(3, 2, 24, dtype=torch.int64), "floating-point"),
    ],
)
def test_bad_shapes_are_refused(make_x, message):
    with pytest.raises(InputError, match=message):
        grad_slam(small_encoder(), make_x(), scale="maxabs")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_is_refused_and_the_pixels_counted(bad):
    x = torch.randn(5, 2, 24)
    x[3, 1, 7] = bad
    with pytest.raises(InputError, match=r"1 of 5 pixels \(first: pixel 3\).*mask no-data"):
        layer_maps(small_encoder(), x)


def test_a_layer_outside_the_encoder_is_refused():
    enc = small_encoder()
    other = small_encoder(1)
    with pytest.raises(InputError, match=r"layers\[1\] \(Sequential\) is not a module of the encoder"):
        layer_maps(enc, torch.randn(2, 2, 24), [enc.blocks["block1"], other.blocks["block1"]])
    with pytest.raises(InputError, match="at least one"):
        layer_maps(enc, torch.randn(2, 2, 24), [])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale": "max"}, "scale must be one of"),
        ({"merge": "max"}, "merge must be 'mean'"),
        ({"scale": "centred"}, "needs `reference`"),
        ({"scale": "centred", "reference": torch.zeros(3, 23)}, r"reference must be \(D, T\) = \(3, 24\)"),
        ({"scale": "maxabs", "batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        grad_slam(small_encoder(), torch.randn(2, 2, 24), **kwargs)


# ------------------------------------------------------------------------------ known answer


@pytest.fixture(scope="module")
def window_model():
    """A CAE (16/32/64 channels, D = 2) trained 300 Adam steps on `window_classes`, seed 0; the
    embedding dimension that separates the classes best (Fisher ratio); held-out pixels; the
    reference map of the training sample."""
    x, _ = window_classes(1536, seed=0)
    torch.manual_seed(0)
    cae = CAE(
        CAEConfig(n_bands=2, n_times=T_WIN, embed_dim=2, channels=(16, 32, 64), kernels=(7, 5, 3), hidden=(32, 16))
    )
    opt = torch.optim.Adam(cae.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        xb = x[torch.randint(0, len(x), (256,), generator=g)]
        loss = nn.functional.mse_loss(cae(xb)[1], xb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    enc = cae.encoder.eval()
    xt, yt = window_classes(600, seed=100)
    with torch.no_grad():
        e = enc(xt)
    means = torch.stack([e[yt == c].mean(0) for c in range(3)])
    within = torch.stack([e[yt == c].var(0) for c in range(3)]).mean(0)
    fisher = means.var(0) / within
    return enc, xt, yt, int(fisher.argmax()), fisher.max().item(), reference_map(enc, x[:1000])


def test_default_importance_concentrates_in_the_dates_that_separate_the_classes(window_model):
    """Measure: mean over held-out pixels of the window's share of the |importance| mass, for
    the class-carrying dimension, and the same share of the per-class mean profiles (what the
    per-class tables show); uniform share = 5/36 = 0.139. Threshold: 1.5 x uniform for both
    ("clearly more": half as much again; centred gave 2.0-2.4 x over training seeds 0-2, the
    per-pixel scalings 0.6-1.1 x). All scalings are printed side by side (pytest -s)."""
    enc, xt, yt, d, fisher, ref = window_model
    assert fisher > 5, "the trained CAE does not separate the classes: the test would be void"
    uniform = (W1 - W0) / T_WIN
    rows = {}
    for scale in SCALES:
        imp = grad_slam(enc, xt, scale=scale, reference=ref)[:, d]
        per_pixel = window_share(imp).mean().item()
        per_class = np.mean([window_share(imp[yt == c].mean(0, keepdim=True)).item() for c in range(3)])
        rows[scale] = (per_pixel / uniform, per_class / uniform)
    print(f"\nwindow share / uniform share ({uniform:.3f}), dim {d}, Fisher {fisher:.1f}")
    for scale, (pp, pc) in rows.items():
        print(f"  {scale:8s} per pixel {pp:5.2f}   per-class mean {pc:5.2f}")
    pp, pc = rows[GRADSLAM_SCALE]
    assert pp > 1.5 and pc > 1.5
    assert pp == max(r[0] for r in rows.values())  # the default is the best of all scalings here


def test_default_importance_moves_the_embedding_more_than_random_dates(window_model):
    """Deleting the dates the default importance ranks highest moves the class dimension of
    the embedding clearly more than deleting as many random dates: at least 2x at k = 4 and 8
    (5.5-7.5 x and 10-14 x over training seeds 0-2)."""
    enc, xt, yt, d, _, ref = window_model
    ratios = {}
    for scale in SCALES:
        imp = grad_slam(enc, xt, scale=scale, reference=ref)
        ratios[scale] = deletion(enc, xt, imp, [2, 4, 8], n_random=4)["ratio"][:, d]
    print(f"\ndeletion: displacement of dim {d}, top-k dates / k random dates, k = 2, 4, 8")
    for scale, r in ratios.items():
        print(f"  {scale:8s} " + "  ".join(f"{v:5.2f}" for v in r.tolist()))
    assert ratios[GRADSLAM_SCALE][1] > 2 and ratios[GRADSLAM_SCALE][2] > 2


# --- targets: a dimension, a direction, a direction per pixel -------------------------------


def test_a_direction_target_is_the_weighted_sum_of_the_per_dimension_maps():
    """Eq. 3-4 are linear in the gradient target: the raw maps of e . w equal sum_d w_d L^d,
    checked against the float64 per-sample Jacobian of the projection itself."""
    enc = small_encoder(3, embed_dim=3)
    x = torch.randn(6, 2, 24, generator=torch.Generator().manual_seed(1))
    w = torch.tensor([0.5, -1.0, 2.0])
    layers = conv_blocks(enc)
    want = [torch.einsum("d,ndt->nt", w.double(), m) for m in reference_maps_float64(enc, x, layers)]
    out = grad_slam(enc, x, scale="none", target=w, return_layer_maps=True)
    for got, ref in zip(out.layer_maps, want):
        assert got.shape == (6, 1, ref.shape[-1])
        assert_maps_close(got[:, 0], ref)
    unscaled = grad_slam(enc, x, scale="none")
    torch.testing.assert_close(out.importance, torch.einsum("d,ndt->nt", w, unscaled), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scale", ["centred", "maxabs", "minmax", "abs", "none"])
def test_a_dimension_target_equals_that_dimension_and_directions_scale_as_one(scale):
    enc = small_encoder(4, embed_dim=3)
    x = torch.randn(20, 2, 24, generator=torch.Generator().manual_seed(2))
    ref = reference_map(enc, x)
    full = grad_slam(enc, x, scale=scale, reference=ref)
    torch.testing.assert_close(grad_slam(enc, x, scale=scale, reference=ref, target=1), full[:, 1])
    # a one-hot direction is the same target; a direction per pixel matches pixel by pixel
    torch.testing.assert_close(grad_slam(enc, x, scale=scale, reference=ref, target=[0.0, 1.0, 0.0]), full[:, 1])
    w = torch.randn(20, 3, generator=torch.Generator().manual_seed(3))
    per_pixel = grad_slam(enc, x, scale=scale, reference=ref, target=w)
    for n in (0, 7, 19):
        alone = grad_slam(enc, x[n : n + 1], scale=scale, reference=ref, target=w[n])
        torch.testing.assert_close(per_pixel[n : n + 1], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "target, message",
    [
        (3, r"target dimension must be in \[0, D - 1 = 2\]"),
        (-1, "target dimension must be in"),
        ([0.0, 0.0, 0.0], "a zero direction explains nothing"),
        ([1.0, 2.0], r"target direction must be \(D,\) = \(3,\)"),
        (np.ones((5, 3)), r"or \(N, D\) = \(4, 3\)"),
        ([1.0, float("nan"), 0.0], "NaN or infinite"),
        (True, "a dimension index or a direction"),
    ],
)
def test_bad_targets_are_refused(target, message):
    enc = small_encoder(0, embed_dim=3)
    with pytest.raises(InputError, match=message):
        grad_slam(enc, torch.randn(4, 2, 24), scale="maxabs", target=target)
