"""Grad-SLAM's maps for a plain slamgeo `Encoder`, block by block, with the backward pass written out.

`slamgeo.method.gradslam` uses this executor for an `Encoder` of Conv1d -> MaxPool1d(2) -> ELU
blocks and a Linear/ELU head explained at its blocks (the default; `plain_blocks`); other
layers and encoders go through autograd there. It gives autograd's gradients (Eq. 4 of the
paper) for every requested block and embedding dimension, with less work:
- the D dimensions go through one backward pass as one batch (D N samples, one convolution per
  block) instead of one autograd pass per dimension (1.4x more here, benchmarks/README.md);
- the gradient of MaxPool1d(2) is routed by a comparison of even and odd dates (ties to the
  first date, as MaxPool1d does) instead of max_pool's costly autograd path;
- the input gradient of a stride-1 Conv1d is the forward correlation with the flipped kernel
  (oneDNN's forward kernels);
- the first requested block's gradient is taken one linear map later: if A only feeds a linear
  map B = W A + b (the next block's Conv1d), then sum_t dE/dA[k, t] = <dE/dB, W 1_k>, with 1_k
  the constant-one signal in channel k (`consumer_kernel`), a time sum plus a few edge dates;
- on CPU the activations are channels-last `(N, K, t)` with strides `(t K, 1, K)`, and every
  convolution is a conv2d over `(N, K, 1, t)` in channels-last memory, which oneDNN reads and
  writes in place (`_channels_last`).
All float32 (or the model's dtype); the maps equal autograd's to float32 rounding
(tests/test_gradslam.py, against a float64 per-sample Jacobian).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.grad import conv1d_input

from slamgeo.method.model import Encoder


def consumer_kernel(consumer: nn.Module, act: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """V `(P, K)` such that sum_t dE/dA[n, k, t] = (dE/dB[n].flatten() @ V)[k] for B = consumer(A).

    Column k is the consumer's linear part applied to the constant-one signal in channel k.
    """
    k, t_a = act.shape[1], act.shape[2]
    w = cast(Tensor, consumer.weight).detach().to(dtype)
    if isinstance(consumer, nn.Linear):  # B = W flatten(A) + b
        return w.view(w.shape[0], k, t_a).sum(-1)
    conv = cast(nn.Conv1d, consumer)
    c_out = w.shape[0]
    with torch.autocast(w.device.type, enabled=False):
        if conv.groups == 1:  # every (c, k) kernel on one constant-one signal: (1, C K, t_B)
            ones = torch.ones(1, 1, t_a, device=w.device, dtype=dtype)
            v = F.conv1d(ones, w.reshape(c_out * k, 1, -1), None, conv.stride, conv.padding, conv.dilation)
            v = v.view(c_out, k, -1).transpose(0, 1)  # (K, C, t_B)
        else:
            ones = torch.eye(k, device=w.device, dtype=dtype).unsqueeze(-1).expand(k, k, t_a)
            v = F.conv1d(ones, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)  # (K, C, t_B)
    return v.flatten(1).T


def _kernel_parts(conv: nn.Conv1d, act: Tensor, n_pooled: int) -> tuple[Tensor, Tensor, Tensor]:
    """`consumer_kernel` of a Conv1d followed by MaxPool1d(2), split for the direct executor:
    V[:, t] = Vmid `(C, K)` at every date t of B where the kernel lies inside A, plus
    Delta `(C E, K)` at the E other dates that pooling keeps (`edges`, `(E,)` long), so that
    sum_t g[c, t] V[c, t] = (sum_t g[c, t]) Vmid + g[:, edges].flatten() Delta. Built in float64,
    where the inner columns are equal sums of the same weights."""
    v = consumer_kernel(conv, act, torch.float64)
    v = v.view(-1, v.shape[0] // conv.out_channels, v.shape[1])  # (C, t_B, K)
    mid = v[:, v.shape[1] // 2]
    edges = [t for t in range(2 * n_pooled) if not torch.equal(v[:, t], mid)]
    delta = (v[:, edges] - mid.unsqueeze(1)).flatten(0, 1)
    return mid.to(act.dtype), delta.to(act.dtype), torch.tensor(edges, dtype=torch.long, device=act.device)


def _is_pool2(m: nn.Module) -> bool:
    """MaxPool1d(2): kernel 2, stride 2, no padding or dilation, floor mode, values only."""
    return (
        isinstance(m, nn.MaxPool1d)
        and _single(m.kernel_size) == 2
        and _single(m.stride) == 2
        and _single(m.padding) == 0
        and _single(m.dilation) == 1
        and not m.ceil_mode
        and not m.return_indices
    )


def _single(v) -> int:
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


def plain_blocks(encoder: nn.Module, layers: Sequence[nn.Module]) -> bool:
    """Whether the direct executor applies: a slamgeo Encoder of Conv1d -> MaxPool1d(2) -> ELU
    blocks and a head of Linear and ELU layers that starts with a Linear (as `CAE` builds it),
    no hooks of anyone else, layers among the blocks."""
    if type(encoder) is not Encoder:
        return False
    blocks = list(encoder.blocks.values())
    if not all(any(layer is b for b in blocks) for layer in layers):
        return False
    if any(m._forward_hooks or m._forward_pre_hooks for m in encoder.modules()):
        return False
    plain = all(
        isinstance(b, nn.Sequential)
        and len(b) == 3
        and isinstance(b[0], nn.Conv1d)
        and b[0].padding_mode == "zeros"
        and not isinstance(b[0].padding, str)
        and _is_pool2(b[1])
        and isinstance(b[2], nn.ELU)
        and b[2].alpha >= 0
        for b in blocks
    )
    head = encoder.head
    return (
        plain
        and isinstance(head, nn.Sequential)
        and len(head) > 0
        and isinstance(head[0], nn.Linear)
        and all(isinstance(m, nn.Linear) or (isinstance(m, nn.ELU) and m.alpha >= 0) for m in head)
    )


def _elu_slope(a: Tensor, alpha: float) -> Tensor:
    """ELU'(u) from a = ELU(u), in one pass: 1 for a > 0, else alpha exp(u) = a + alpha."""
    return torch.ops.aten.elu_backward(
        torch.ones((), dtype=a.dtype, device=a.device).expand_as(a), alpha, 1, 1, True, a
    )


def _channels_last(h: Tensor) -> bool:
    """Whether `h` `(..., K, t)` holds its channels contiguous (strides `(..., 1, K)`), the
    direct executor's layout on CPU: oneDNN's convolutions then read and write activations in
    place, where in torch's `(N, K, t)` layout every conv1d reorders its input and output to
    oneDNN's blocked layout and back (up to 14x the first block's convolution at one thread,
    benchmarks/README.md). The executor's results do not depend on the layout beyond float32
    rounding: every step reads its tensors' layout from their strides."""
    return h.stride(-2) == 1 and h.stride(-1) != 1


def _conv(h: Tensor, w: Tensor, b: Tensor | None, stride: int, padding: int, dilation: int, groups: int = 1) -> Tensor:
    """Conv1d `(N, C, t)` -> `(N, K, t')` of a zero-padded kernel `w` `(K, C / groups, k)`.
    For channels-last activations (`_channels_last`) it is a conv2d over `(N, C, 1, t)` in
    channels-last memory, whose result is the `(N, K, t')` view with contiguous channels: the
    same sums as conv1d, in oneDNN's order for that layout (float32 rounding apart)."""
    if not _channels_last(h):
        return F.conv1d(h, w, b, stride, padding, dilation, groups)
    h4 = h.unsqueeze(2).contiguous(memory_format=torch.channels_last)
    return F.conv2d(h4, w.unsqueeze(2), b, (1, stride), (0, padding), (1, dilation), groups).squeeze(2)


def _block_forward(block: nn.Sequential, h: Tensor) -> Tensor:
    """A plain block (Conv1d -> MaxPool1d(2) -> ELU) through `_conv`, in the executor's layout."""
    conv = cast(nn.Conv1d, block[0])
    z = _conv(h, conv.weight, conv.bias, *_conv_geometry(conv), conv.groups)
    return F.elu_(torch.maximum(*_pairs(z)), cast(nn.ELU, block[2]).alpha)


def _conv_geometry(conv: nn.Conv1d) -> tuple[int, int, int]:
    """(stride, padding, dilation) of a Conv1d whose padding is a number (`plain_blocks`)."""
    return _single(conv.stride), _single(cast(tuple[int], conv.padding)), _single(conv.dilation)


def _pool_elu(z: Tensor, alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    """ELU(MaxPool1d(2)(z)) `(N, K, t // 2)`, its derivative at the pooled values, and where
    the maximum sat (1.0: the odd date, 0.0: the even one; ties go to the first date, as
    MaxPool1d routes them), all in `z`'s layout. The pooled values are the larger of each pair
    (`torch.maximum` of the even and odd dates: MaxPool1d's values, measured 1.3-3x faster);
    the choice is float32, since a comparison written as bool is 2-4x slower for channels-last
    pairs."""
    even, odd = _pairs(z)
    took_odd = _empty_like_layout(z, even.shape[-1])
    torch.gt(odd, even, out=took_odd)
    a = F.elu_(torch.maximum(even, odd), alpha)
    return a, _elu_slope(a, alpha), took_odd


def _pairs(z: Tensor) -> tuple[Tensor, Tensor]:
    """The even and odd dates `(..., t // 2)` of `z` `(..., t)` that MaxPool1d(2) compares."""
    half = z.shape[-1] // 2
    return z[..., 0 : 2 * half : 2], z[..., 1 : 2 * half : 2]


def _empty_like_layout(z: Tensor, t: int) -> Tensor:
    """An uninitialised `(N, K, t)` tensor in `z`'s layout (`_channels_last` or torch's)."""
    n, k = z.shape[:-1], z.shape[-2]
    if _channels_last(z):
        return z.new_empty(*n[:-1], t, k).transpose(-1, -2)
    return z.new_empty(*n, t)


def _unpool(ga: Tensor, slope: Tensor, took_odd: Tensor, t_conv: int) -> Tensor:
    """dE/dz `(D, N, K, t_conv)` from dE/dA `(D, N, K, h)` through ELU and MaxPool1d(2): two
    strided products into the even and odd dates (measured 4x faster than a stacked routing);
    channels-last when `slope` is (`_channels_last`), so that dE/dz feeds `_conv` as it is."""
    half = ga.shape[-1]
    to_odd = slope * took_odd
    gz = _empty_like_layout(slope.expand(ga.shape[0], *slope.shape), t_conv)
    gz[..., 2 * half :] = 0.0  # the date that floor pooling drops
    torch.mul(ga, slope - to_odd, out=gz[..., 0 : 2 * half : 2])
    torch.mul(ga, to_odd, out=gz[..., 1 : 2 * half : 2])
    return gz


Pools = dict[int, tuple[Tensor, Tensor, int]]  # per block after the first: (ELU' (N, K, h), took_odd, t_conv)


def _direct_forward(
    enc: Encoder, x: Tensor, first: int, kernels: dict
) -> tuple[Tensor, dict[int, Tensor], Pools, list[Tensor]]:
    """The encoder's forward pass with the model's own weights, keeping what the backward pass
    needs: embedding `(N, D)`, block outputs from `first` on, pooling choices and ELU slopes."""
    blocks = cast(list[nn.Sequential], list(enc.blocks.values()))
    h = x
    for block in blocks[: first + 1]:
        h = _block_forward(block, h)
    acts, pools = {first: h}, {}
    for i in range(first + 1, len(blocks)):
        conv = cast(nn.Conv1d, blocks[i][0])
        z = _conv(h, conv.weight, conv.bias, *_conv_geometry(conv), conv.groups)
        h, slope, took_odd = _pool_elu(z, cast(nn.ELU, blocks[i][2]).alpha)
        acts[i], pools[i] = h, (slope, took_odd, z.shape[-1])
    head = cast(nn.Linear, enc.head[0])
    v, slopes = F.linear(_flat(h), _head_weight(head, h, kernels), head.bias), []
    for m in list(enc.head)[1:]:
        if isinstance(m, nn.ELU):
            v = F.elu(v, m.alpha)
            slopes.append(_elu_slope(v, m.alpha))
        else:
            v = m(v)
    return v, acts, pools, slopes


def _flat(h: Tensor) -> Tensor:
    """The last block's output `(N, C, t)` flattened for the head in its memory order, without a
    copy: `(c, t)` pairs in torch's layout (the model's `flatten`), `(t, c)` in channels-last."""
    return h.transpose(1, 2).reshape(h.shape[0], h.shape[1] * h.shape[2]) if _channels_last(h) else h.flatten(1)


def _head_weight(linear: nn.Linear, h: Tensor, kernels: dict) -> Tensor:
    """The head's first weight `(H, C t)` with its columns in `_flat(h)`'s order (cached in
    `kernels` for channels-last: the columns permuted once per call)."""
    w = linear.weight
    if not _channels_last(h):
        return w
    key = (linear, "channels-last", tuple(h.shape[1:]), h.device)
    if key not in kernels:
        kernels[key] = w.detach().view(w.shape[0], h.shape[1], h.shape[2]).transpose(1, 2).reshape(w.shape[0], -1)
    return kernels[key]


def _direct_backward(
    enc: Encoder,
    acts: dict[int, Tensor],
    pools: Pools,
    slopes: list[Tensor],
    n_dims: int,
    wanted: list[int],
    kernels: dict,
) -> dict[int, Tensor]:
    """Eq. 4 `(D, N, K)` for every wanted block: dE_d/dA for all d at once, from the head down to
    one linear map after the first wanted block (module docstring)."""
    blocks = cast(list[nn.Sequential], list(enc.blocks.values()))
    first, last = min(wanted), len(blocks) - 1
    h = acts[last]
    g = torch.eye(n_dims, dtype=h.dtype, device=h.device).unsqueeze(1)  # (D, 1, D): dE_d/de
    for m in list(enc.head)[:0:-1]:  # down to the output of head[0]: (D, 1 or N, width)
        g = g @ m.weight if isinstance(m, nn.Linear) else g * slopes.pop()
    g = g.expand(n_dims, h.shape[0], g.shape[-1])
    alphas: dict[int, Tensor] = {}
    if first == last:  # A feeds head[0] alone: Eq. 4 through its weight
        key = (enc.head[0], tuple(h.shape[1:]), h.device)
        if key not in kernels:
            kernels[key] = consumer_kernel(enc.head[0], h, h.dtype)
        return {last: g @ kernels[key] / h.shape[-1]}
    ga = g @ _head_weight(cast(nn.Linear, enc.head[0]), h, kernels)  # dE/dA of the last block, h's layout
    ga = (
        ga.view(n_dims, h.shape[0], h.shape[2], h.shape[1]).transpose(2, 3)
        if _channels_last(h)
        else ga.view(n_dims, *h.shape)
    )
    for i in range(last, first, -1):
        if i in wanted:
            alphas[i] = ga.mean(-1)
        slope, took_odd, t_conv = pools[i]
        conv = cast(nn.Conv1d, blocks[i][0])
        if i == first + 1:
            alphas[first] = _shortcut_alpha(ga, slope, took_odd, conv, acts[first], kernels)
            break
        gz = _unpool(ga, slope, took_odd, t_conv).flatten(0, 1)
        shape = (gz.shape[0], *acts[i - 1].shape[1:])
        ga = input_grad(conv, gz, shape).view(n_dims, *acts[i - 1].shape)
    return alphas


def input_grad(conv: nn.Conv1d, gz: Tensor, shape: tuple[int, ...]) -> Tensor:
    """dE/dA `shape` of A -> conv(A) from dE/dconv(A) `gz`: for a stride-1 ungrouped conv, the
    forward correlation with the flipped kernel (`_conv`, oneDNN's forward kernels: `grad_slam`
    measured 1.2x faster than with its backward-data path); else `conv1d_input`."""
    w = cast(Tensor, conv.weight)
    stride, pad, dil = _conv_geometry(conv)
    reach = dil * (w.shape[-1] - 1)
    if stride == 1 and conv.groups == 1 and 0 <= pad <= reach:
        return _conv(gz, w.flip(-1).transpose(0, 1), None, 1, reach - pad, dil)
    return conv1d_input(shape, w, gz.contiguous(), conv.stride, conv.padding, conv.dilation, conv.groups)


def _shortcut_alpha(ga: Tensor, slope: Tensor, took_odd: Tensor, conv: nn.Conv1d, act: Tensor, kernels: dict) -> Tensor:
    """Eq. 4 `(D, N, K)` of the block output A that feeds `conv`, from dE/dA' `(D, N, C, h)` of
    the block after it (A' = ELU(pool(conv(A)))): sum_t dE/dA[k, t] = <dE/dz, V_k>, with the
    pooling's unrouted sum and the few edge dates of `_kernel_parts`; dE/dz is never formed."""
    key = (conv, tuple(act.shape[1:]), act.device)
    if key not in kernels:
        kernels[key] = _kernel_parts(conv, act, slope.shape[-1])
    mid, delta, edges = kernels[key]
    alpha = torch.mul(ga, slope).sum(-1) @ mid  # not einsum: it copies ga into its own layout
    if edges.numel():  # index_select, not indexing: measured 4x faster
        s = edges // 2
        route = torch.where(took_odd.index_select(-1, s) == edges % 2, slope.index_select(-1, s), 0.0)
        alpha = alpha + (ga.index_select(-1, s) * route).flatten(2) @ delta
    return alpha / act.shape[-1]


def blockwise_maps(
    encoder: nn.Module, x: Tensor, layers: Sequence[nn.Module], kernels: dict, channels_last: bool | None = None
) -> tuple[Tensor, list[Tensor]]:
    """Embedding `(N, D)` and raw maps of the requested blocks with the backward pass written
    out and batched over the D dimensions: autograd's gradients, without one pass per
    dimension, max_pool's costly autograd path and the first block's full backward.
    `channels_last`: the activations' layout (`_channels_last`); None: on CPU only (CUDA keeps
    torch's layout, as measured on the GPU)."""
    if channels_last if channels_last is not None else x.device.type == "cpu":
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
    enc = cast(Encoder, encoder)
    blocks = list(enc.blocks.values())
    wanted = [next(i for i, b in enumerate(blocks) if b is layer) for layer in layers]
    with torch.no_grad():
        e, acts, pools, slopes = _direct_forward(enc, x, min(wanted), kernels)
        alphas = _direct_backward(enc, acts, pools, slopes, e.shape[1], wanted, kernels)
        maps = [torch.bmm(alphas[i].transpose(0, 1), acts[i]).float() for i in wanted]  # Eq. 3
    return e.float(), maps


__all__ = ["blockwise_maps", "consumer_kernel", "input_grad", "plain_blocks"]
