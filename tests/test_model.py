"""Shapes and structure of the CAE."""

import pytest
import torch

from slamgeo.method.model import CAE, CAEConfig, conv_blocks


@pytest.mark.parametrize("n_times", [8, 9, 36, 61])
@pytest.mark.parametrize("embed_dim", [1, 2, 5])
def test_shapes_for_several_t_and_d(n_times, embed_dim):
    cfg = CAEConfig(n_bands=2, n_times=n_times, embed_dim=embed_dim)
    e, r = CAE(cfg)(torch.randn(3, 2, n_times))
    assert e.shape == (3, embed_dim)
    assert r.shape == (3, 2, n_times)


def test_default_is_the_papers_family():
    m = CAE()
    names = list(m.encoder.blocks)
    assert names == ["block1", "block2", "block3"]
    convs = [b[0] for b in conv_blocks(m.encoder)]
    assert [c.out_channels for c in convs] == [64, 128, 256]
    assert [c.kernel_size[0] for c in convs] == [7, 5, 3]
    linears = [l for l in m.encoder.head if isinstance(l, torch.nn.Linear)]
    assert [l.out_features for l in linears] == [128, 64, 2]
    dec = [l for l in m.decoder.net if isinstance(l, torch.nn.Linear)]
    assert [l.out_features for l in dec] == [64, 128, 2 * 61]


def test_block_outputs_halve_time():
    m = CAE(CAEConfig(n_times=61))
    x = torch.randn(2, 2, 61)
    lengths = []
    for block in conv_blocks(m.encoder):
        x = block(x)
        lengths.append(x.shape[-1])
    assert lengths == [30, 15, 7]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_times": 7}, "n_times must be >= 8"),
        ({"kernels": (7, 4, 3)}, "odd"),
        ({"channels": (64, 128)}, "equal length"),
        ({"embed_dim": 0}, "embed_dim"),
    ],
)
def test_bad_architecture_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CAEConfig(**kwargs)


def test_config_round_trips_through_dict():
    cfg = CAEConfig(n_times=36, embed_dim=3, channels=(8, 16, 32))
    assert CAEConfig.from_dict(cfg.to_dict()) == cfg
