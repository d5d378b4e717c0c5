"""Grad-SLAM: which dates of a pixel's time series make its embedding (Di Martino et al., GRSL 2023).

For an encoder layer A with K feature maps of temporal length t_A and an embedding dimension d
(Eq. 4 and Eq. 3 of the paper, computed per sample n, no ReLU)::

    alpha[n, d, k] = (1 / t_A) * sum_t  dE[n, d] / dA[n, k, t]      (time-averaged gradient)
    L[n, d, t]     = sum_k alpha[n, d, k] * A[n, k, t]              (signed contribution map)

`layer_maps` returns L for every requested layer, `(N, D, t_A)` each. `grad_slam` resamples each
map to the input dates `(N, D, T)`, scales it per sample and per dimension, and merges the layers
(mean) into one date-importance profile per pixel and per dimension.

Cost. One forward pass and one backward pass serve every layer and every embedding dimension:
the gradient of `E[:, d].sum()` with respect to A[n] is exactly dE[n, d]/dA[n], because the
encoder has no operation across samples. Savings, all exact:
- the backward pass stops one linear map after the shallowest requested block: if A only feeds
  a linear map B = W A + b (the next block's Conv1d), then sum_t dE/dA[k, t] = <dE/dB, W 1_k>,
  with 1_k the constant-one signal in channel k, so alpha needs dE/dB and a small precomputed
  tensor V, not the conv's full backward;
- nothing upstream of the first requested layer is recorded or differentiated;
- for a slamgeo `Encoder` explained at its blocks (the default), the backward pass is written
  out, all D dimensions in one batch, with channels-last activations on CPU
  (`slamgeo.method.blockwise`) rather than left to autograd. Other layers and other encoders
  (or an encoder that carries someone else's hooks, or a call under autocast) go through the
  encoder's own forward pass with forward hooks and one autograd pass per dimension.
Batches are processed in chunks of `batch_size` pixels (1024 by default), which keeps the working
set in cache; the result does not depend on the chunking beyond float32 rounding.

Scaling. The default is "centred" (each pixel's merged map minus the scene's mean map): on data
whose classes differ only inside a window of dates it is the only scaling that puts the
importance there and ranks dates whose deletion moves the embedding more than chance
(tests/test_gradslam.py, the known-answer tests); per-pixel min-max of the signed map loses
the map's zero point and mostly shows the profile the whole scene shares.

Only PyTorch: tensors in, tensors out. The model is never changed: it runs in eval mode (its
training flags are restored afterwards), gradients are taken with respect to activations only
(written out, or by `torch.autograd.grad`; no parameter `.grad` is written), and the hooks that capture
the activations act only in the calling thread and are removed before returning, also on error.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
import torch
from torch import Tensor, nn

from slamgeo.errors import InputError
from slamgeo.method.blockwise import blockwise_maps, consumer_kernel, plain_blocks
from slamgeo.method.model import CAE, Encoder, conv_blocks
from slamgeo.schema import GRADSLAM_BATCH_SIZE, GRADSLAM_SCALE, SCALES, Scale

Merge = Literal["mean"]
# what an attribution explains: None (every embedding dimension), a dimension, a direction
Target = int | Sequence[float] | np.ndarray | Tensor | None


@dataclass(frozen=True)
class GradSlamOutput:
    """What `grad_slam` returns when asked for more than the importance.

    importance: `(N, D, T)` float32, scaled and merged over layers.
    embedding:  `(N, D)` float32, from the same forward pass.
    layer_maps: the raw maps `(N, D, t_A)` per layer (float32), or None if not asked for.
    """

    importance: Tensor
    embedding: Tensor
    layer_maps: list[Tensor] | None = None


# --------------------------------------------------------------------------------------------
# the equations


def default_layers(encoder: nn.Module) -> list[nn.Module]:
    """The default Grad-SLAM layers: the outputs of the encoder's conv blocks, in order."""
    encoder = as_encoder(encoder)
    if not isinstance(encoder, Encoder):
        raise InputError(
            f"default layers are the conv blocks of a slamgeo Encoder; found a {type(encoder).__name__}: "
            "pass `layers` explicitly"
        )
    return conv_blocks(encoder)


def layer_maps(
    encoder: nn.Module,
    x: Tensor,
    layers: Sequence[nn.Module] | None = None,
    *,
    batch_size: int = GRADSLAM_BATCH_SIZE,
) -> list[Tensor]:
    """Raw Grad-SLAM maps (Eq. 3/4, no ReLU) of every requested layer for every embedding dimension.

    encoder: maps standardised series `(N, C, T)` to embeddings `(N, D)` (a slamgeo `Encoder`;
        a `CAE` is accepted and its encoder used).
    x: `(N, C, T)` standardised series, finite (mask no-data pixels first).
    layers: modules of the encoder whose output is `(N, K, t_A)`; default: the conv blocks.
    Returns one float32 tensor `(N, D, t_A)` per layer, on x's device: L[n, d, :] =
    sum_k alpha[n, d, k] * A[n, k, :] with alpha[n, d, k] = mean_t dE[n, d] / dA[n, k, t].
    """
    return _run(encoder, x, layers, batch_size)[1]


def grad_slam(
    encoder: nn.Module,
    x: Tensor,
    layers: Sequence[nn.Module] | None = None,
    *,
    scale: Scale = GRADSLAM_SCALE,
    merge: Merge = "mean",
    reference: Tensor | None = None,
    return_embedding: bool = False,
    return_layer_maps: bool = False,
    batch_size: int = GRADSLAM_BATCH_SIZE,
    target: Target = None,
) -> Tensor | GradSlamOutput:
    """Date importance `(N, D, T)` per pixel and embedding dimension, merged over layers.

    `target` explains one quantity instead of every dimension, and the importance is `(N, T)`:
    an int d (the dimension e^d), a direction w `(D,)` or one direction per pixel `(N, D)` (the
    projection e . w, for example the line from one class's mean embedding to another's).
    Eq. 3-4 are linear in the gradient target, so the raw maps of e . w are exactly
    sum_d w_d L^d (`target_maps`); they are then resampled, scaled and merged as for one
    dimension, and "centred" subtracts the reference projected the same way, sum_d w_d R[d].

    Each layer's raw map `(N, D, t_A)` is resampled to the T input dates (`resample`), scaled
    per sample and per dimension along time, and the layers are averaged (`merge="mean"`).
    Scalings (`scale_maps` gives the formulas):
      "minmax":  per layer, (L - min) / (max - min), in [0, 1]: the authors' figures;
      "maxabs":  per layer, L / max|L|, in [-1, 1], sign kept (the paper drops the ReLU);
      "abs":     per layer, |L| / max|L|, in [0, 1];
      "none":    the raw resampled maps, averaged;
      "centred": the raw merged map minus `reference` (`reference_map` of a sample of the
                 scene, `(D, T)`), then divided by its max |.| over time: in [-1, 1]. It keeps
                 what sets a pixel apart from the scene, which per-pixel min-max loses when the
                 signed map's zero point matters.
    With `return_embedding` or `return_layer_maps`, returns a `GradSlamOutput` that also holds
    the embedding `(N, D)` of the same forward pass (and the raw maps). Everything float32.
    """
    if scale not in SCALES:
        raise InputError(f"scale must be one of {SCALES}, found {scale!r}")
    if merge != "mean":
        raise InputError(f"merge must be 'mean', found {merge!r}")
    if scale == "centred" and reference is None:
        raise InputError("scale='centred' needs `reference`, the (D, T) map from `reference_map` on a scene sample")
    n_times = int(torch.as_tensor(x).shape[-1])
    if reference is not None:  # shape and values checked before the work; D once it is known
        ref_shape = torch.as_tensor(reference).shape
        _check_reference(reference, ref_shape[0] if ref_shape else 0, n_times, torch.device("cpu"))
    e, maps = _run(encoder, x, layers, batch_size)
    w = None if target is None else target_weights(target, e.shape[1], e.shape[0]).to(e.device)
    with torch.autocast(e.device.type, enabled=False):  # float32 from here on
        if w is not None:
            maps = [target_maps(m, w) for m in maps]
        resampled = [resample(m, n_times) for m in maps]
        if scale == "centred":
            ref = _check_reference(reference, e.shape[1], n_times, e.device)
            if w is not None:
                ref = target_maps(ref.unsqueeze(0), w)  # (N or 1, 1, T)
            importance = scale_maps(torch.stack(resampled).mean(0) - ref, "maxabs")
        else:
            importance = torch.stack([scale_maps(r, scale) for r in resampled]).mean(0)
        if w is not None:
            importance = importance[:, 0]
    if not (return_embedding or return_layer_maps):
        return importance
    return GradSlamOutput(importance, e, maps if return_layer_maps else None)


def target_weights(target: Target, n_dims: int, n: int) -> Tensor:
    """A `target` as float32 weights `(1, D)` (one dimension, or one direction for every pixel)
    or `(N, D)` (a direction per pixel); an `InputError` for anything else, for a dimension out
    of range, and for a zero or non-finite direction (it would explain nothing)."""
    if isinstance(target, (bool, np.bool_)):
        raise InputError(f"target must be a dimension index or a direction, found {target!r}")
    if isinstance(target, (int, np.integer)):
        if not 0 <= int(target) < n_dims:
            raise InputError(f"target dimension must be in [0, D - 1 = {n_dims - 1}], found {int(target)}")
        w = torch.zeros(1, n_dims)
        w[0, int(target)] = 1.0
        return w
    w = torch.as_tensor(np.asarray(target, dtype=np.float32) if not isinstance(target, Tensor) else target)
    w = w.detach().to(dtype=torch.float32, device="cpu")
    if w.ndim == 1:
        w = w.unsqueeze(0)
    if w.ndim != 2 or w.shape[1] != n_dims or w.shape[0] not in (1, n):
        raise InputError(
            f"target direction must be (D,) = ({n_dims},) or (N, D) = ({n}, {n_dims}), "
            f"found shape {tuple(torch.as_tensor(target).shape)}"
        )
    if not bool(torch.isfinite(w).all()):
        raise InputError("target direction holds NaN or infinite values")
    zero = (w.abs().sum(1) == 0).nonzero()
    if zero.numel():
        raise InputError(f"target direction is zero (pixel {int(zero[0, 0])}): a zero direction explains nothing")
    return w


def target_maps(maps: Tensor, w: Tensor) -> Tensor:
    """Per-dimension maps `(N or 1, D, t)` projected on the weights `w` `(1 or N, D)`:
    `(N, 1, t)`, sum_d w[n, d] maps[n, d, :] (the map of the target e . w, by linearity of
    Eq. 3-4)."""
    return (w.to(maps.dtype)[:, :, None] * maps).sum(1, keepdim=True)


def reference_map(
    encoder: nn.Module,
    x_ref: Tensor,
    layers: Sequence[nn.Module] | None = None,
    *,
    batch_size: int = GRADSLAM_BATCH_SIZE,
) -> Tensor:
    """The reference `(D, T)` of the "centred" scaling: the mean over the reference pixels of
    the raw merged map, R[d, t] = mean_n mean_layers resample(L_layer)[n, d, t].

    x_ref: `(N, C, T)` standardised series, a random sample of the scene's valid pixels (a few
    thousand are plenty). Use the same encoder and layers as for `grad_slam`, and store R with
    the results so that they can be reproduced.
    """
    x_ref = torch.as_tensor(x_ref)
    if x_ref.ndim != 3 or x_ref.shape[0] == 0:
        raise InputError(f"x_ref must be (N, C, T) with N >= 1 pixels, found shape {tuple(x_ref.shape)}")
    maps = _run(encoder, x_ref, layers, batch_size)[1]
    n_times = x_ref.shape[-1]
    with torch.autocast(maps[0].device.type, enabled=False):
        return torch.stack([resample(m, n_times) for m in maps]).mean(0).mean(0)


# --------------------------------------------------------------------------------------------
# resampling and scaling


def layer_stride(t_layer: int, n_times: int) -> int:
    """The time stride of a layer of length `t_layer` in an encoder of input length `n_times`
    whose pooling halves time (floor): the largest power of two s with s <= T / t_A."""
    if not 1 <= t_layer <= n_times:
        raise InputError(f"a layer's time length must be in [1, T={n_times}], found {t_layer}")
    return 1 << int(math.floor(math.log2(n_times / t_layer) + 1e-9))


def resample_matrix(t_layer: int, n_times: int) -> Tensor:
    """`(t_A, T)` float64 matrix W with resample(m) = m @ W: linear interpolation at stride centres.

    Sample t of a layer with stride s = `layer_stride(t_A, T)` summarises the input dates
    [s t, s t + s - 1] (floor pooling by 2, applied log2(s) times); it is placed at their centre
    s t + (s - 1) / 2. Date i therefore reads the layer at u = (i + 0.5) / s - 0.5, linearly
    interpolated, clamped to [0, t_A - 1] (the dates before the first centre and after the last
    one, including those dropped by floor pooling at the end of an odd-length series, take the
    edge value). This is `F.interpolate(mode="linear", align_corners=False, scale_factor=s)`
    padded at the end; `align_corners=True` (or `size=T`) would stretch the map over T and shift
    late dates by up to half a block. If t_A is not floor(T / s), the layer is stretched over T
    (u = (i + 0.5) t_A / T - 0.5).
    """
    s = layer_stride(t_layer, n_times)
    i = np.arange(n_times, dtype=np.float64)
    u = (i + 0.5) / s - 0.5 if n_times // s == t_layer else (i + 0.5) * t_layer / n_times - 0.5
    u = np.clip(u, 0.0, t_layer - 1)
    lo = np.floor(u).astype(np.int64)
    hi = np.minimum(lo + 1, t_layer - 1)
    w = u - lo
    mat = np.zeros((t_layer, n_times))
    np.add.at(mat, (lo, np.arange(n_times)), 1.0 - w)
    np.add.at(mat, (hi, np.arange(n_times)), w)
    return torch.from_numpy(mat)


def resample(maps: Tensor, n_times: int) -> Tensor:
    """Resample layer maps `(..., t_A)` to the input dates `(..., T)` (see `resample_matrix`)."""
    mat = resample_matrix(maps.shape[-1], n_times).to(device=maps.device, dtype=maps.dtype)
    return maps @ mat


def scale_maps(maps: Tensor, scale: Scale) -> Tensor:
    """Scale maps `(..., T)` along the last axis, independently for every leading index.

    "minmax": (L - min) / (max - min); "maxabs": L / max|L|; "abs": |L| / max|L|; "none": L.
    A map that is constant ("minmax") or zero (the others) becomes 0 everywhere.
    ("centred" is `grad_slam`'s: it needs the reference map; its final step is "maxabs".)
    """
    if scale == "none":
        return maps
    if scale == "minmax":
        lo = maps.amin(-1, keepdim=True)
        span = maps.amax(-1, keepdim=True) - lo
        return torch.where(span > 0, (maps - lo) / torch.where(span > 0, span, 1), 0.0)
    if scale in ("maxabs", "abs"):
        top = maps.abs().amax(-1, keepdim=True)
        num = maps.abs() if scale == "abs" else maps
        return torch.where(top > 0, num / torch.where(top > 0, top, 1), 0.0)
    raise InputError(f"scale_maps takes 'minmax', 'maxabs', 'abs' or 'none', found {scale!r}")


# --------------------------------------------------------------------------------------------
# input checks


def as_encoder(encoder: nn.Module) -> nn.Module:
    """The encoder to explain: a CAE's encoder, or the module itself."""
    if isinstance(encoder, CAE):
        return encoder.encoder
    if not isinstance(encoder, nn.Module):
        raise InputError(f"encoder must be a torch.nn.Module, found {type(encoder).__name__}")
    return encoder


def check_series(encoder: nn.Module, x: Tensor) -> Tensor:
    """Series `(N, C, T)` as a detached floating tensor on the encoder's device and dtype,
    checked against the encoder's bands and dates and for non-finite values (`InputError`)."""
    if not isinstance(x, Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.ndim != 3:
        raise InputError(f"x must be (N, C, T) = (pixels, bands, dates), found shape {tuple(x.shape)}")
    if not (x.is_floating_point()):
        raise InputError(f"x must hold floating-point values, found dtype {x.dtype}")
    cfg = getattr(encoder, "cfg", None)
    n_bands = getattr(cfg, "n_bands", None)
    if n_bands is None:
        convs = [m for m in encoder.modules() if isinstance(m, nn.Conv1d)]
        n_bands = convs[0].in_channels if convs else None
    if n_bands is not None and x.shape[1] != n_bands:
        raise InputError(f"x must have C = {n_bands} bands (the encoder's input channels), found C = {x.shape[1]}")
    n_times = getattr(cfg, "n_times", None)
    if n_times is not None and x.shape[2] != n_times:
        short = " (too short for the encoder)" if x.shape[2] < n_times else ""
        raise InputError(f"x must have T = {n_times} dates (the encoder's n_times), found T = {x.shape[2]}{short}")
    param = next(encoder.parameters(), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    x = x.detach()
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        pix = bad.flatten(1).any(1)
        first = int(torch.nonzero(pix)[0, 0])
        raise InputError(
            f"x holds NaN or infinite values in {int(pix.sum())} of {x.shape[0]} pixels (first: pixel {first}); "
            "mask no-data pixels before explaining (slamgeo.jobs.explain does)"
        )
    return x


def _check_layers(encoder: nn.Module, layers: Sequence[nn.Module] | None) -> list[nn.Module]:
    if layers is None:
        return default_layers(encoder)
    if isinstance(layers, nn.Module):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise InputError("layers must name at least one module of the encoder, found an empty list")
    own = {id(m) for m in encoder.modules()}
    for i, layer in enumerate(layers):
        if id(layer) not in own:
            raise InputError(f"layers[{i}] ({type(layer).__name__}) is not a module of the encoder")
    return layers


def _check_reference(reference: Tensor | None, n_dims: int, n_times: int, device: torch.device) -> Tensor:
    ref = torch.as_tensor(reference).to(device=device, dtype=torch.float32)
    if ref.ndim != 2 or ref.shape != (n_dims, n_times):
        raise InputError(f"reference must be (D, T) = ({n_dims}, {n_times}), found shape {tuple(ref.shape)}")
    if not bool(torch.isfinite(ref).all()):
        raise InputError("reference holds NaN or infinite values")
    return ref


# --------------------------------------------------------------------------------------------
# the plumbing: hooks, model state, gradients


@contextmanager
def explaining(encoder: nn.Module) -> Iterator[None]:
    """Eval mode and grad mode on (whatever the caller's mode), restored afterwards."""
    flags = [(m, m.training) for m in encoder.modules()]
    try:
        encoder.eval()
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for m, flag in flags:
            m.training = flag


Shortcut = tuple[Tensor, Tensor, Tensor]  # (A, B = consumer(A), V): see `consumer_kernel`


@contextmanager
def _capture(modules: Sequence[nn.Module], layers: Sequence[nn.Module]) -> Iterator[dict[int, list]]:
    """Forward hooks recording every module's (input, output), keyed by id; always removed.

    The forward pass runs without recording a graph until the first of `layers` has run: the
    gradient with respect to a layer's output needs only the graph downstream of it. A layer
    output that is not part of the graph then (the first one) becomes a leaf that requires grad.
    The hooks act only in the calling thread, so that threads sharing one model do not see each
    other's activations.
    """
    seen: dict[int, list] = {id(m): [] for m in modules}
    layer_ids = {id(m) for m in layers}
    owner = threading.get_ident()

    def hook(mod: nn.Module, inp: tuple, out):
        if threading.get_ident() != owner:
            return None
        if id(mod) in layer_ids:
            torch.set_grad_enabled(True)
            if isinstance(out, Tensor) and out.is_floating_point() and not out.requires_grad:
                out = out.detach().requires_grad_(True)
        seen[id(mod)].append((inp, out))
        return out

    handles = []
    try:
        for m in {id(m): m for m in modules}.values():
            handles.append(m.register_forward_hook(hook))
        torch.set_grad_enabled(False)
        yield seen
    finally:
        torch.set_grad_enabled(True)  # `explaining` restores the caller's mode on exit
        for h in handles:
            h.remove()


def _linear_consumer(encoder: nn.Module, layer: nn.Module) -> nn.Module | None:
    """The linear module that alone consumes `layer`'s output in a slamgeo Encoder, if known."""
    if type(encoder) is not Encoder:  # a subclass may route activations differently
        return None
    blocks = cast(list[nn.Sequential], list(encoder.blocks.values()))
    idx = next((i for i, b in enumerate(blocks) if b is layer), None)
    if idx is None:
        return None
    nxt = blocks[idx + 1][0] if idx + 1 < len(blocks) else encoder.head[0]
    if isinstance(nxt, nn.Conv1d) and nxt.padding_mode == "zeros":
        return nxt
    if isinstance(nxt, nn.Linear) and idx + 1 == len(blocks):
        return nxt
    return None


def _hooked_forward(
    encoder: nn.Module, x: Tensor, layers: Sequence[nn.Module], kernels: dict, consumer: nn.Module | None
) -> tuple[Tensor, list[Tensor], Shortcut | None]:
    """The encoder's own forward pass, the layers' outputs captured by forward hooks."""
    shallow = None
    if consumer is not None:
        order = {id(b): i for i, b in enumerate(cast(Encoder, encoder).blocks.values())}
        shallow = min((layer for layer in layers if id(layer) in order), key=lambda m: order[id(m)])
    watched = list(layers) + ([consumer] if consumer is not None else [])
    with _capture(watched, layers) as seen:
        e = encoder(x)
    if not isinstance(e, Tensor) or e.ndim != 2:
        raise InputError(f"the encoder must return embeddings (N, D), found {getattr(e, 'shape', type(e))}")
    acts: list[Tensor] = []
    for i, layer in enumerate(layers):
        calls = seen[id(layer)]
        if len(calls) != 1:
            raise InputError(
                f"layers[{i}] ({type(layer).__name__}) ran {len(calls)} times in the forward pass, expected once"
            )
        out = calls[0][1]
        if not isinstance(out, Tensor) or out.ndim != 3:
            raise InputError(
                f"layers[{i}] ({type(layer).__name__}) must output (N, K, t_A), found {getattr(out, 'shape', type(out))}"
            )
        if not out.requires_grad:
            raise InputError(f"layers[{i}] ({type(layer).__name__}) does not lie on the path to the embedding")
        acts.append(out)
    shortcut = None
    if consumer is not None and len(seen[id(consumer)]) == 1:
        (c_in,), c_out = seen[id(consumer)][0]
        a = acts[next(i for i, layer in enumerate(layers) if layer is shallow)]
        if c_in.data_ptr() == a.data_ptr() and c_in.numel() == a.numel():
            key = (consumer, tuple(a.shape[1:]), a.device)
            if key not in kernels:
                kernels[key] = consumer_kernel(consumer, a)
            shortcut = (a, c_out, kernels[key])
    return e, acts, shortcut


def _maps_from_graph(e: Tensor, acts: list[Tensor], shortcut: Shortcut | None) -> tuple[Tensor, list[Tensor]]:
    """Eq. 4 then Eq. 3 for every activation, one backward pass per embedding dimension."""
    targets: list[Tensor] = []  # what to differentiate: the activations, or B for the shortcut's A
    for a in acts:
        if (shortcut is None or a is not shortcut[0]) and not any(a is t for t in targets):
            targets.append(a)
    if shortcut is not None:
        targets.append(shortcut[1])
    n_dims = e.shape[1]
    alphas: dict[int, list[Tensor]] = {id(a): [] for a in acts}  # per activation: D x (N, K)
    with torch.autocast(e.device.type, enabled=False):  # Eq. 3/4 in float32, even under autocast
        for d in range(n_dims):
            grads = torch.autograd.grad(e[:, d].sum(), targets, retain_graph=d < n_dims - 1, allow_unused=True)
            for t, g in zip(targets, grads):
                g = torch.zeros_like(t) if g is None else g
                if shortcut is not None and t is shortcut[1]:
                    a, _, v = shortcut
                    alphas[id(a)].append(g.flatten(1).float() @ v / a.shape[-1])  # Eq. 4 via B
                elif id(t) in alphas:
                    alphas[id(t)].append(g.float().mean(-1))  # Eq. 4
        maps = [torch.bmm(torch.stack(alphas[id(a)], 1), a.detach().float()) for a in acts]  # Eq. 3
    return e.detach().float(), maps


def _run(
    encoder: nn.Module, x: Tensor, layers: Sequence[nn.Module] | None, batch_size: int
) -> tuple[Tensor, list[Tensor]]:
    """Embedding `(N, D)` and raw maps `[(N, D, t_A)]`, float32, chunk by chunk: the direct
    executor for a plain slamgeo Encoder, else the encoder's forward pass, hooks and autograd."""
    encoder = as_encoder(encoder)
    layers = _check_layers(encoder, layers)
    x = check_series(encoder, x)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, found {batch_size}")
    chunks = [x[i : i + batch_size] for i in range(0, x.shape[0], batch_size)] or [x]
    kernels: dict[tuple, Tensor] = {}  # the consumer's V, computed once per call
    if plain_blocks(encoder, layers) and not torch.is_autocast_enabled(x.device.type):
        with explaining(encoder):
            outs = [blockwise_maps(encoder, xc, layers, kernels) for xc in chunks]
    else:
        # the shallowest requested block's gradient is not needed by any other layer: take it
        # one linear map later (module docstring); the deeper ones come free on the way. Only a
        # slamgeo Encoder's blocks are known to feed a linear map: another encoder's `blocks`
        # (a list, a dict, anything) plays no part, its `layers` are used as given.
        blocks = cast(Encoder, encoder).blocks.values() if type(encoder) is Encoder else ()
        order = {id(b): i for i, b in enumerate(blocks)}
        shallow = min((layer for layer in layers if id(layer) in order), key=lambda m: order[id(m)], default=None)
        consumer = _linear_consumer(encoder, shallow) if shallow is not None else None
        with explaining(encoder):
            outs = []
            for xc in chunks:
                xc = xc.clone() if xc.is_inference() else xc  # inference tensors cannot enter a graph
                outs.append(_maps_from_graph(*_hooked_forward(encoder, xc, layers, kernels, consumer)))
    e = torch.cat([o[0] for o in outs])
    maps = [torch.cat([o[1][i] for o in outs]) for i in range(len(layers))]
    return e, maps


__all__ = [
    "GradSlamOutput",
    "Target",
    "as_encoder",
    "check_series",
    "explaining",
    "default_layers",
    "grad_slam",
    "layer_maps",
    "layer_stride",
    "reference_map",
    "resample",
    "resample_matrix",
    "scale_maps",
    "target_maps",
    "target_weights",
]
