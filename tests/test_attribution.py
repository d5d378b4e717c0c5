"""The captum-style attribution interface: every method, every kind of target, against an
independent computation (autograd of the projection, a hand-made occlusion, completeness)."""

from __future__ import annotations

import pytest
import torch

from slamgeo.errors import InputError
from slamgeo.method.attribution import GradientXInput, GradSlam, IntegratedGradients, Occlusion
from slamgeo.method.gradslam import grad_slam, reference_map
from slamgeo.method.model import CAE, CAEConfig

T = 24


@pytest.fixture(scope="module")
def cae():
    torch.manual_seed(0)
    return CAE(CAEConfig(n_bands=2, n_times=T, embed_dim=3, channels=(4, 8, 8), kernels=(5, 3, 3), hidden=(16, 8)))


@pytest.fixture(scope="module")
def x():
    return torch.randn(12, 2, T, generator=torch.Generator().manual_seed(1))


def test_grad_slam_class_is_the_function(cae, x):
    method = GradSlam(cae)
    ref = method.set_reference(x)
    torch.testing.assert_close(ref, reference_map(cae.encoder, x))
    torch.testing.assert_close(method.attribute(x), grad_slam(cae.encoder, x, reference=ref))
    torch.testing.assert_close(
        method.attribute(x, target=2, scale="minmax"), grad_slam(cae.encoder, x, scale="minmax")[:, 2]
    )


def test_a_method_without_reference_refuses_centred(cae, x):
    with pytest.raises(InputError, match="needs `reference`"):
        GradSlam(cae).attribute(x)


def test_gradient_x_input_of_a_direction_is_the_gradient_of_the_projection(cae, x):
    w = torch.tensor([1.0, -2.0, 0.5])
    xr = x.clone().requires_grad_(True)
    (cae.encoder(xr) @ w).sum().backward()
    want = (xr.grad * x).sum(1)
    torch.testing.assert_close(GradientXInput(cae).attribute(x, target=w), want, rtol=1e-4, atol=1e-6)
    full = GradientXInput(cae).attribute(x)
    assert full.shape == (12, 3, T)
    torch.testing.assert_close(torch.einsum("d,ndt->nt", w, full), want, rtol=1e-4, atol=1e-6)


def test_integrated_gradients_are_complete_for_a_direction(cae, x):
    w = torch.tensor([0.3, 0.0, -1.0])
    ig = IntegratedGradients(cae, n_steps=64).attribute(x, target=w)
    with torch.no_grad():
        gap = (cae.encoder(x) - cae.encoder(torch.zeros_like(x))) @ w
    torch.testing.assert_close(ig.sum(-1), gap, rtol=2e-2, atol=2e-3)


def test_occlusion_deletes_one_date_by_interpolation(cae, x):
    """By hand: an inner date becomes the mean of its neighbours, an end date its neighbour."""
    occ = Occlusion(cae).attribute(x, target=1)
    with torch.no_grad():
        e0 = cae.encoder(x)[:, 1]
        for t in (0, 5, T - 1):
            x2 = x.clone()
            x2[..., t] = x[..., 1] if t == 0 else x[..., T - 2] if t == T - 1 else (x[..., t - 1] + x[..., t + 1]) / 2
            torch.testing.assert_close(occ[:, t], e0 - cae.encoder(x2)[:, 1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", [GradientXInput, Occlusion, IntegratedGradients])
def test_per_pixel_directions_match_pixel_by_pixel(cae, x, method):
    w = torch.randn(12, 3, generator=torch.Generator().manual_seed(4))
    att = method(cae).attribute(x, target=w)
    full = method(cae).attribute(x)
    torch.testing.assert_close(att, torch.einsum("nd,ndt->nt", w, full), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", [GradientXInput, Occlusion])
def test_bad_targets_and_inputs_are_refused(cae, x, method):
    with pytest.raises(InputError, match="zero direction"):
        method(cae).attribute(x, target=[0.0, 0.0, 0.0])
    with pytest.raises(InputError, match="target dimension"):
        method(cae).attribute(x, target=7)
    with pytest.raises(InputError, match=r"x must be \(N, C, T\)"):
        method(cae).attribute(x[0])
