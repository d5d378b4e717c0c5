"""How faithful is a date-importance map? A deletion measure, and per-date reference attributions.

`deletion` removes the k dates an importance map ranks highest (each band's value at those dates
is replaced by linear interpolation from the nearest kept dates) and measures how far the
embedding moves; the same for k dates drawn at random (or the k lowest-ranked) gives the
comparison. A faithful map moves the embedding more than chance does. The same measure applies to
any `(N, D, T)` map, so Grad-SLAM can be set beside per-date attributions that no Grad-CAM tool
gives: gradient x input and integrated gradients (captum), summed over bands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from slamgeo.errors import InputError
from slamgeo.method.attribution import (
    GradientXInput,
    GradSlam,
    IntegratedGradients,
    Occlusion,
    delete_dates,
)
from slamgeo.method.gradslam import as_encoder, check_series, explaining
from slamgeo.schema import GRADSLAM_SCALE

Baseline = Literal["random", "least"]
DELETION_BATCH_SIZE = 4096  # pixels per forward pass of the deletion measure


def _embed(encoder: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([encoder(x[i : i + batch_size]).float() for i in range(0, x.shape[0], batch_size)])


def _first_k_mask(order: Tensor, k: int) -> Tensor:
    """`(M, T)` mask of the first k dates of each row's ranking `order` `(M, T)`."""
    mask = torch.zeros(order.shape, dtype=torch.bool, device=order.device)
    return mask.scatter_(-1, order[:, :k], True)


def deletion(
    encoder: nn.Module,
    x: Tensor,
    importance: Tensor,
    ks: Sequence[int],
    *,
    baseline: Baseline = "random",
    n_random: int = 8,
    seed: int = 0,
    batch_size: int = DELETION_BATCH_SIZE,
) -> dict[str, Tensor]:
    """Embedding displacement when the k most important dates are deleted, against a baseline.

    x: `(N, C, T)` standardised series; importance: `(N, D, T)`, any map (Grad-SLAM at any
    scaling, `gradient_x_input`, `integrated_gradients`). For pixel n and dimension d the dates
    are ranked by |importance[n, d, :]| (ties: earlier date first); the top k are deleted
    (`delete_dates`) and the displacement is |E(x')[n, d] - E(x)[n, d]|, the dimension the map
    explains. Baseline: "random" deletes k dates drawn uniformly without replacement (`n_random`
    draws per pixel, the same draws for every d, `seed` fixed), "least" the k lowest-ranked.
    Returns float64 tensors:
      k `(K,)`; top `(K, D)` and baseline `(K, D)`: mean displacement over pixels (and draws);
      ratio `(K, D)` = top / baseline; embedding_std `(D,)`: the std of E(x) over the pixels,
      to read displacements in units of the embedding's spread.
    """
    encoder = as_encoder(encoder)
    x = check_series(encoder, x)
    importance = torch.as_tensor(importance).to(x.device)
    n, _, n_times = x.shape
    if importance.ndim != 3 or importance.shape[0] != n or importance.shape[2] != n_times:
        raise InputError(f"importance must be (N, D, T) = ({n}, D, {n_times}), found {tuple(importance.shape)}")
    if not bool(torch.isfinite(importance).all()):
        raise InputError("importance holds NaN or infinite values")
    ks = [int(k) for k in ks]
    if not ks or any(not 1 <= k < n_times for k in ks):
        raise InputError(f"ks must be dates counts in [1, T - 1 = {n_times - 1}], found {ks}")
    if baseline not in ("random", "least"):
        raise InputError(f"baseline must be 'random' or 'least', found {baseline!r}")
    if n_random < 1:
        raise InputError(f"n_random must be >= 1, found {n_random}")
    n_dims = importance.shape[1]
    gen = torch.Generator().manual_seed(seed)
    with explaining(encoder):
        with torch.no_grad():
            e0 = _embed(encoder, x, batch_size)
        if e0.shape[1] != n_dims:
            raise InputError(f"importance has D = {n_dims} dimensions, the encoder's embedding {e0.shape[1]}")
        # stable descending sort of |importance|: earlier date first among ties
        order = torch.sort(importance.abs().float(), dim=-1, descending=True, stable=True).indices  # (N, D, T)
        if baseline == "least":
            base_order = order.flip(-1)
        else:
            draws = torch.rand(n_random, n, n_times, generator=gen).argsort(-1).to(x.device)  # (R, N, T)
        top = torch.zeros(len(ks), n_dims, dtype=torch.float64)
        base = torch.zeros(len(ks), n_dims, dtype=torch.float64)
        for i, k in enumerate(ks):
            for d in range(n_dims):
                moved = _embed(encoder, delete_dates(x, _first_k_mask(order[:, d], k)), batch_size)
                top[i, d] = (moved[:, d] - e0[:, d]).abs().double().mean()
                if baseline == "least":
                    moved = _embed(encoder, delete_dates(x, _first_k_mask(base_order[:, d], k)), batch_size)
                    base[i, d] = (moved[:, d] - e0[:, d]).abs().double().mean()
            if baseline == "random":
                xs = torch.cat([delete_dates(x, _first_k_mask(draws[r], k)) for r in range(n_random)])
                moved = _embed(encoder, xs, batch_size).view(n_random, n, -1)
                base[i] = (moved - e0).abs().double().mean((0, 1))
    return {
        "k": torch.tensor(ks, dtype=torch.float64),
        "top": top,
        "baseline": base,
        "ratio": top / base,
        "embedding_std": e0.double().std(0) if n > 1 else torch.zeros(n_dims, dtype=torch.float64),
    }


def gradient_x_input(encoder: nn.Module, x: Tensor, *, batch_size: int = DELETION_BATCH_SIZE) -> Tensor:
    """Gradient x input per date `(N, D, T)` (`slamgeo.method.attribution.GradientXInput`)."""
    return GradientXInput(encoder, batch_size=batch_size).attribute(x)


def integrated_gradients(
    encoder: nn.Module,
    x: Tensor,
    *,
    baseline: Tensor | float | None = None,
    n_steps: int = 32,
    batch_size: int = 1024,
) -> Tensor:
    """Integrated gradients per date `(N, D, T)` (`slamgeo.method.attribution.IntegratedGradients`)."""
    return IntegratedGradients(encoder, baseline=baseline, n_steps=n_steps, batch_size=batch_size).attribute(x)


ATTRIBUTIONS = {
    "gradslam": "Grad-SLAM",
    "gradient_x_input": "gradient × input",
    "integrated_gradients": "integrated gradients",
    "occlusion": "occlusion",
}


def deletion_curves(
    encoder: nn.Module,
    x: Tensor,
    ks: Sequence[int],
    *,
    methods: Sequence[str] = ("gradslam", "gradient_x_input", "integrated_gradients"),
    scale: str = GRADSLAM_SCALE,
    reference: Tensor | None = None,
    layers: Sequence[nn.Module] | None = None,
    baseline: Baseline = "random",
    n_random: int = 8,
    seed: int = 0,
) -> dict[str, dict]:
    """`deletion` for several explanations of the same pixels, by display name, as numpy
    arrays (`k (K,)`, `top (K, D)`, `baseline (K, D)`, `ratio (K, D)`, `embedding_std (D,)`)
    plus `baseline_name`: what `slamgeo.reporting.figures.fig_deletion_curve` draws.

    encoder: a `CAE` or its encoder (a `TrainedModel`'s `.model`); x: `(N, C, T)` standardised
    series (finite); methods: keys of `ATTRIBUTIONS` (`slamgeo.method.attribution`). Grad-SLAM
    is taken at `scale`; "centred" subtracts `reference` `(D, T)` (the scene's, stored with the
    results), or the mean map of `x` when None.
    """
    import numpy as np

    unknown = [m for m in methods if m not in ATTRIBUTIONS]
    if unknown:
        raise InputError(f"faithfulness methods {unknown} unknown; expected some of {list(ATTRIBUTIONS)}")
    x = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, Tensor) else x
    out: dict[str, dict] = {}
    for m in methods:
        if m == "gradslam":
            method = GradSlam(encoder, layers, reference=reference)
            if scale == "centred" and reference is None:
                method.set_reference(x)
            imp = method.attribute(x, scale=scale)  # type: ignore[arg-type]
            name = f"Grad-SLAM ({scale})"
        else:
            cls = {
                "gradient_x_input": GradientXInput,
                "integrated_gradients": IntegratedGradients,
                "occlusion": Occlusion,
            }[m]
            imp, name = cls(encoder).attribute(x), ATTRIBUTIONS[m]
        res = deletion(encoder, x, imp, ks, baseline=baseline, n_random=n_random, seed=seed)
        out[name] = {k: v.numpy() for k, v in res.items()}
        out[name]["baseline_name"] = "k random dates" if baseline == "random" else "k least important dates"
    return out


__all__ = [
    "ATTRIBUTIONS",
    "Baseline",
    "deletion",
    "deletion_curves",
    "gradient_x_input",
    "integrated_gradients",
]
