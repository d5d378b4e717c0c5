"""The 1-D convolutional autoencoder (CAE) of the paper's model family.

Input: standardised dB series `(N, C, T)` (C bands, T dates). Encoder: blocks of
Conv1d ("same" padding) -> MaxPool1d(2) -> ELU, then fully connected layers down to the
embedding `(N, D)`. Decoder: fully connected from D back to `C * T`, reshaped `(N, C, T)`.
The conv blocks are named (`encoder.blocks["block1"]`, ...) because Grad-SLAM explains them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from slamgeo.schema import EMBED_DIM, TRAIN_MIN_DATES


def min_times(n_blocks: int) -> int:
    """The fewest dates a CAE with `n_blocks` conv blocks (each halves the series) takes:
    `max(TRAIN_MIN_DATES, 2 ** n_blocks)`; 8 for the default 3 blocks."""
    return max(TRAIN_MIN_DATES, 2**n_blocks)


@dataclass(frozen=True)
class CAEConfig:
    """Architecture hyper-parameters; stored in the checkpoint metadata as a dict."""

    n_bands: int = 2
    n_times: int = 61
    embed_dim: int = EMBED_DIM
    channels: tuple[int, ...] = (64, 128, 256)
    kernels: tuple[int, ...] = (7, 5, 3)
    hidden: tuple[int, ...] = (128, 64)

    def __post_init__(self) -> None:
        # lists from JSON become tuples, so that configs compare and hash as values
        for name in ("channels", "kernels", "hidden"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if len(self.channels) != len(self.kernels) or not self.channels:
            raise ValueError(
                f"channels {self.channels} and kernels {self.kernels} must be non-empty and of equal length"
            )
        if any(k < 1 or k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernels must be odd and positive for 'same' padding, got {self.kernels}")
        min_t = min_times(len(self.channels))
        if self.n_times < min_t:
            raise ValueError(f"n_times must be >= {min_t} for {len(self.channels)} pooling blocks, got {self.n_times}")
        if self.n_bands < 1 or self.embed_dim < 1:
            raise ValueError(f"n_bands and embed_dim must be >= 1, got {self.n_bands}, {self.embed_dim}")

    @property
    def block_names(self) -> tuple[str, ...]:
        return tuple(f"block{i + 1}" for i in range(len(self.channels)))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> CAEConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown architecture parameters {sorted(unknown)}")
        return cls(**d)


def conv_block(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    """Conv1d ('same') -> MaxPool1d(2) -> ELU: `(N, c_in, t)` -> `(N, c_out, t // 2)`."""
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2),
        nn.MaxPool1d(2),
        nn.ELU(),
    )


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ELU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """`(N, C, T)` -> embedding `(N, D)`; `blocks` holds the named conv blocks."""

    def __init__(self, cfg: CAEConfig):
        super().__init__()
        self.cfg = cfg
        chans = (cfg.n_bands, *cfg.channels)
        self.blocks = nn.ModuleDict(
            {
                name: conv_block(chans[i], chans[i + 1], k)
                for i, (name, k) in enumerate(zip(cfg.block_names, cfg.kernels))
            }
        )
        t = cfg.n_times
        for _ in cfg.channels:
            t //= 2
        self.flat_len = t
        self.head = mlp([cfg.channels[-1] * t, *cfg.hidden, cfg.embed_dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks.values():
            x = block(x)
        return self.head(x.flatten(1))


class Decoder(nn.Module):
    """Embedding `(N, D)` -> reconstruction `(N, C, T)`."""

    def __init__(self, cfg: CAEConfig):
        super().__init__()
        self.cfg = cfg
        self.net = mlp([cfg.embed_dim, *reversed(cfg.hidden), cfg.n_bands * cfg.n_times])

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(e).view(-1, self.cfg.n_bands, self.cfg.n_times)


class CAE(nn.Module):
    """Convolutional autoencoder: `forward(x)` returns `(embedding (N, D), reconstruction (N, C, T))`."""

    def __init__(self, cfg: CAEConfig | None = None):
        super().__init__()
        self.cfg = cfg or CAEConfig()
        self.encoder = Encoder(self.cfg)
        self.decoder = Decoder(self.cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.encoder(x)
        return e, self.decoder(e)


def conv_blocks(encoder: Encoder) -> list[nn.Module]:
    """The encoder's conv blocks in order: the default Grad-SLAM layers."""
    return list(encoder.blocks.values())


__all__ = ["CAE", "CAEConfig", "Decoder", "Encoder", "conv_block", "conv_blocks", "min_times"]
