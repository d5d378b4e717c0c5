"""Per-date attributions of an encoder's embedding behind one interface, in the manner of captum:
`Method(encoder, ...).attribute(x, target=...)`.

- `GradSlam`: Grad-SLAM (`slamgeo.method.gradslam`), maps of the encoder's layers resampled to the
  dates, scaled and merged;
- `GradientXInput`: gradient x input (captum `InputXGradient`), summed over bands;
- `IntegratedGradients`: integrated gradients (captum), summed over bands;
- `Occlusion`: the change of the target when one date is replaced by linear interpolation from
  its neighbours (`delete_dates`, the perturbation of `slamgeo.method.faithfulness.deletion`), per date.

`x` is `(N, C, T)` standardised series (finite). `target`: None explains every embedding
dimension and returns `(N, D, T)`; a dimension d, a direction w `(D,)` or one direction per
pixel `(N, D)` explain e^d or e . w and return `(N, T)`. Every method here is linear in the
target (a gradient, or a difference of the embedding), so a direction's attribution is the
weighted sum of the per-dimension attributions; all return float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from slamgeo.errors import InputError
from slamgeo.method.gradslam import (
    Merge,
    Target,
    as_encoder,
    check_series,
    explaining,
    grad_slam,
    reference_map,
    target_maps,
    target_weights,
)
from slamgeo.schema import GRADSLAM_BATCH_SIZE, GRADSLAM_SCALE, Scale


class Attribution:
    """Base class: holds the encoder (a CAE is explained through its encoder)."""

    def __init__(self, encoder: nn.Module):
        self.encoder = as_encoder(encoder)

    def attribute(self, x: Tensor, target: Target = None) -> Tensor:
        """Attribution `(N, D, T)` for `target=None`, `(N, T)` for a dimension or direction."""
        maps = self._per_dimension(check_series(self.encoder, x))
        return _project(maps, target)

    def _per_dimension(self, x: Tensor) -> Tensor:  # (N, D, T)
        raise NotImplementedError


def _project(maps: Tensor, target: Target) -> Tensor:
    """Per-dimension attributions `(N, D, T)` for `target` (see the module doc)."""
    if target is None:
        return maps
    w = target_weights(target, maps.shape[1], maps.shape[0]).to(maps.device)
    return target_maps(maps, w)[:, 0]


def delete_dates(x: Tensor, mask: Tensor) -> Tensor:
    """Replace masked dates of series `(M, C, T)` by linear interpolation from the kept dates.

    mask: `(M, T)` bool, True where a date is deleted (the same dates in every band). A deleted
    date between two kept dates gets the straight line between them; before the first kept date
    or after the last one it gets that date's value. Every series must keep at least one date.
    """
    if x.ndim != 3 or mask.shape != (x.shape[0], x.shape[2]):
        raise InputError(f"expected x (M, C, T) and mask (M, T), found {tuple(x.shape)} and {tuple(mask.shape)}")
    n_times = x.shape[-1]
    kept = ~mask
    if not bool(kept.any(-1).all()):
        raise InputError("every series must keep at least one date")
    idx = torch.arange(n_times, device=x.device).expand_as(mask)
    left = torch.where(kept, idx, -1).cummax(-1).values  # last kept date <= t, or -1
    right = torch.where(kept, idx, n_times).flip(-1).cummin(-1).values.flip(-1)  # first kept date >= t, or T
    left, right = torch.where(left < 0, right, left), torch.where(right >= n_times, left, right)
    span = (right - left).to(x.dtype)
    w = torch.where(span > 0, (idx - left).to(x.dtype) / span.clamp(min=1), 0.0).unsqueeze(1)  # (M, 1, T)
    c = x.shape[1]
    x_left = x.gather(-1, left.unsqueeze(1).expand(-1, c, -1))
    x_right = x.gather(-1, right.unsqueeze(1).expand(-1, c, -1))
    return torch.where(mask.unsqueeze(1), x_left * (1 - w) + x_right * w, x)


class GradSlam(Attribution):
    """Grad-SLAM at `layers` (default: the conv blocks of a slamgeo Encoder).

    `reference`: the `(D, T)` map the "centred" scaling subtracts; `set_reference(x_ref)`
    computes it from a sample of the scene's series."""

    def __init__(
        self,
        encoder: nn.Module,
        layers: Sequence[nn.Module] | None = None,
        *,
        reference: Tensor | None = None,
        batch_size: int = GRADSLAM_BATCH_SIZE,
    ):
        super().__init__(encoder)
        self.layers = layers
        self.reference = reference
        self.batch_size = batch_size

    def set_reference(self, x_ref: Tensor) -> Tensor:
        """Compute and keep the reference map `(D, T)` of a sample `(N, C, T)` of the scene."""
        self.reference = reference_map(self.encoder, x_ref, self.layers, batch_size=self.batch_size)
        return self.reference

    def attribute(
        self,
        x: Tensor,
        target: Target = None,
        *,
        scale: Scale = GRADSLAM_SCALE,
        merge: Merge = "mean",
        reference: Tensor | None = None,
    ) -> Tensor:
        """Date importance (`grad_slam`): `(N, D, T)`, or `(N, T)` for a target."""
        ref = reference if reference is not None else self.reference
        out = grad_slam(
            self.encoder,
            x,
            self.layers,
            scale=scale,
            merge=merge,
            reference=ref,
            batch_size=self.batch_size,
            target=target,
        )
        assert isinstance(out, Tensor)
        return out


class GradientXInput(Attribution):
    """sum_c x[n, c, t] * dE[n, d] / dx[n, c, t] (captum `InputXGradient`); signed."""

    def __init__(self, encoder: nn.Module, *, batch_size: int = 4096):
        super().__init__(encoder)
        self.batch_size = batch_size

    def _per_dimension(self, x: Tensor) -> Tensor:
        from captum.attr import InputXGradient

        method = InputXGradient(self.encoder)
        return _per_date(lambda xc, d: method.attribute(xc, target=d), self.encoder, x, self.batch_size)


class IntegratedGradients(Attribution):
    """Integrated gradients (captum, Gauss-Legendre with `n_steps` points) summed over bands:
    sum_c (x - x0)[n, c, t] * mean_a dE[n, d]/dx at x0 + a (x - x0); sum_t ~ E(x) - E(x0).

    `baseline` x0: None = zeros (the per-band mean of standardised series), a float, or a tensor
    `(C, T)` or `(N, C, T)`. `batch_size` bounds the series per forward pass (pixels x steps)."""

    def __init__(
        self, encoder: nn.Module, *, baseline: Tensor | float | None = None, n_steps: int = 32, batch_size: int = 1024
    ):
        super().__init__(encoder)
        if n_steps < 1:
            raise InputError(f"n_steps must be >= 1, found {n_steps}")
        self.baseline, self.n_steps, self.batch_size = baseline, n_steps, batch_size

    def _per_dimension(self, x: Tensor) -> Tensor:
        from captum.attr import IntegratedGradients as CaptumIG

        if self.baseline is None:
            x0 = torch.zeros_like(x)
        else:
            x0 = torch.as_tensor(self.baseline, dtype=x.dtype, device=x.device)
            if x0.ndim not in (0, 2, 3):
                raise InputError(f"baseline must be a float, (C, T) or (N, C, T), found shape {tuple(x0.shape)}")
            x0 = x0.expand_as(x).contiguous()
        method = CaptumIG(self.encoder)
        chunks = []
        with explaining(self.encoder):
            n_dims = _n_dims(self.encoder, x)
            for i in range(0, x.shape[0], self.batch_size):
                xc, bc = x[i : i + self.batch_size], x0[i : i + self.batch_size]
                chunks.append(
                    torch.stack(
                        [
                            method.attribute(
                                xc, baselines=bc, target=d, n_steps=self.n_steps, internal_batch_size=self.batch_size
                            ).sum(1)
                            for d in range(n_dims)
                        ],
                        1,
                    ).float()
                )
        return torch.cat(chunks) if chunks else torch.zeros(0, n_dims, x.shape[2])


class Occlusion(Attribution):
    """E(x)[n, d] - E(x with date t deleted)[n, d] per date t: the date is replaced by linear
    interpolation from its neighbours in every band (`delete_dates`), the same perturbation as the
    deletion measure. T + 1 forward passes; signed."""

    def __init__(self, encoder: nn.Module, *, batch_size: int = 4096):
        super().__init__(encoder)
        self.batch_size = batch_size

    def _per_dimension(self, x: Tensor) -> Tensor:
        n, _, n_times = x.shape
        with explaining(self.encoder), torch.no_grad():
            e0 = _embed(self.encoder, x, self.batch_size)
            out = torch.empty(n, e0.shape[1], n_times)
            for t in range(n_times):
                mask = torch.zeros(n, n_times, dtype=torch.bool, device=x.device)
                mask[:, t] = True
                out[:, :, t] = (e0 - _embed(self.encoder, delete_dates(x, mask), self.batch_size)).cpu()
        return out.to(x.device)


def _embed(encoder: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    """Embeddings `(N, D)` float32, in chunks of `batch_size`, without autograd."""
    with torch.no_grad():
        parts = [encoder(x[i : i + batch_size]).float() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, _n_dims(encoder, x))


def _n_dims(encoder: nn.Module, x: Tensor) -> int:
    with torch.no_grad():
        return int(
            encoder(x[:1] if x.shape[0] else torch.zeros(1, *x.shape[1:], dtype=x.dtype, device=x.device)).shape[1]
        )


def _per_date(attribute, encoder: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    """A captum attribution for every embedding dimension, chunked: `(N, D, T)` float32,
    summed over bands."""
    with explaining(encoder):
        n_dims = _n_dims(encoder, x)
        out = []
        for i in range(0, x.shape[0], batch_size):
            xc = x[i : i + batch_size].clone().requires_grad_(True)  # captum's leaf input
            out.append(torch.stack([attribute(xc, d).sum(1) for d in range(n_dims)], 1).detach().float())
    return torch.cat(out) if out else torch.zeros(0, n_dims, x.shape[2])


__all__ = ["Attribution", "GradSlam", "GradientXInput", "IntegratedGradients", "Occlusion", "delete_dates"]
