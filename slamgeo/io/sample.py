"""A training sample of a cube's pixels, drawn lazily with Dask: `sample_series`.

Two stages: a seeded random subset of the spatial chunks (all of them on a small cube), then
pixels stratified over those (one task per drawn chunk, each reading its chunk once), so that a
regional cube is not read whole for a training sample.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import dask
import numpy as np
import xarray as xr

from slamgeo.errors import ConfigError
from slamgeo.io.cube import BANDS, chunk_cube, spatial_dims, validate_cube
from slamgeo.io.series import fill_gaps
from slamgeo.schema import CHUNK

OVERSAMPLE = 1.5  # candidates drawn per chunk, relative to its share, so that gaps rarely need a re-read
MIN_CHUNKS = 16  # chunks drawn at least (all of them when there are no more): keeps the sample spread
CHUNK_MARGIN = 4  # drawn chunks hold at least this many pixels per pixel asked (room for no data)


def _block_candidates(arrays: Sequence[np.ndarray], k: int, seed: Sequence[int], gap_fill: bool) -> np.ndarray:
    """Up to `k` usable pixels `(k', C, T)` of one chunk, in random order.

    `arrays`: one `(T, *spatial)` dB array per band. Usable: no NaN, or with `gap_fill`, at
    least one valid date in every band (the rest is interpolated). The order is a fixed
    permutation of the chunk's pixels for a given seed, so a larger `k` gives a superset.
    """
    T = arrays[0].shape[0]
    x = np.stack([np.asarray(a, dtype=np.float32).reshape(T, -1) for a in arrays], axis=0)  # (C, T, P)
    nan = np.isnan(x)
    usable = (~nan).any(axis=1).all(axis=0) if gap_fill else ~nan.any(axis=(0, 1))
    order = np.random.default_rng(list(seed)).permutation(x.shape[2])
    pick = order[usable[order]][:k]  # type: ignore[index]  # numpy types all(axis=0) as bool | ndarray
    out = np.ascontiguousarray(x[:, :, pick].transpose(2, 0, 1))
    return fill_gaps(out) if gap_fill else out


def _waterfill(available: np.ndarray, sizes: np.ndarray, n: int) -> np.ndarray:
    """Per-stratum counts `q_i = min(available_i, floor(lam * size_i))` with the smallest `lam`
    that gives at least `n` in all (proportional allocation, topped up where strata run short)."""
    if available.sum() <= n:
        return available.copy()
    lo, hi = 0.0, float((available / np.maximum(sizes, 1)).max()) + 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if np.minimum(available, np.floor(mid * sizes)).sum() >= n:
            hi = mid
        else:
            lo = mid
    return np.minimum(available, np.floor(hi * sizes)).astype(np.int64)


def _chunk_order(sizes: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, int]:
    """The order in which chunks are drawn, and how many the first stage takes.

    Every chunk, in index order, when there are at most `MIN_CHUNKS` or when `CHUNK_MARGIN * n`
    pixels need them all (the sample is then the plain stratified one over every chunk);
    else a permutation seeded by `seed` and the fewest leading chunks, at least `MIN_CHUNKS`,
    whose pixels number `CHUNK_MARGIN * n` or more."""
    if len(sizes) <= MIN_CHUNKS or CHUNK_MARGIN * n >= sizes.sum():
        return np.arange(len(sizes)), len(sizes)
    order = np.random.default_rng([seed, 2]).permutation(len(sizes))
    enough = int(np.searchsorted(np.cumsum(sizes[order]), CHUNK_MARGIN * n)) + 1
    return order, min(len(sizes), max(MIN_CHUNKS, enough))


def sample_series(
    ds: xr.Dataset,
    n: int,
    *,
    seed: int = 0,
    gap_fill: bool = False,
    bands: Sequence[str] = BANDS,
) -> np.ndarray:
    """A random sample of `n` usable pixels of a cube, stratified over space: `(N, C, T)` float32 dB.

    Two stages. First a random subset of the cube's spatial chunks (`(y, x)` tiles, or runs of
    `sample`), drawn with `seed`: at least `MIN_CHUNKS` of them and enough to hold `CHUNK_MARGIN`
    times `n` pixels, or all of them on a cube with few chunks or a large `n` (`_chunk_order`).
    Then the drawn chunks are the strata: each gets a share proportional to its size, topped up
    from the others where it lacks usable pixels; when the drawn chunks together lack usable
    pixels, further chunks are drawn (in the same random order, enough to make up the shortfall
    at the usable fraction seen so far) and join the strata. Only drawn chunks are read.
    Pixels with any NaN are skipped, or with `gap_fill` linearly gap-filled (a band with no
    valid date is still skipped). Lazy: one Dask task per drawn chunk, each reads its chunk
    once and returns only its candidates. Fewer than `n` come back when the cube has fewer
    usable pixels.
    """
    if n < 1:
        raise ConfigError(f"sample size must be >= 1, got {n}")
    bands = list(bands)
    validate_cube(ds, bands=bands)
    sub = ds[bands]
    if sub[bands[0]].chunks is None:  # an in-memory cube: tiles of the contract's default size
        sub = chunk_cube(sub, CHUNK)
    sub = sub.unify_chunks()
    sdims = spatial_dims(sub)
    spatial_chunks = [sub.chunks[d] for d in sdims]
    blocks = list(itertools.product(*[range(len(c)) for c in spatial_chunks]))
    sizes = np.array([math.prod(c[i] for c, i in zip(spatial_chunks, b)) for b in blocks], dtype=np.int64)
    data = [sub[b].data for b in bands]

    def tasks(ks: dict[int, int]) -> dict[int, np.ndarray]:
        delayed = [
            dask.delayed(_block_candidates)([a.blocks[(slice(None), *blocks[j])] for a in data], k, (seed, j), gap_fill)
            for j, k in ks.items()
        ]
        return dict(zip(ks, dask.compute(*delayed)))

    def share(chunks: list[int], k: int) -> dict[int, int]:
        total = int(sizes[chunks].sum())
        return {j: int(min(sizes[j], math.ceil(OVERSAMPLE * k * sizes[j] / total) + 1)) for j in chunks}

    order, m = _chunk_order(sizes, n, seed)
    want = share(sorted(int(j) for j in order[:m]), n)
    got = tasks(want)
    while True:
        # Strata that filled their request may hold more; ask them again (a superset, same seed)
        # while the total is short. Rare: only when many chunks are mostly empty.
        while sum(len(v) for v in got.values()) < n:
            full = {j: min(int(sizes[j]), 2 * want[j]) for j in got if len(got[j]) == want[j] and want[j] < sizes[j]}
            if not full:
                break
            want.update(full)
            got.update(tasks(full))
        short = n - sum(len(v) for v in got.values())
        if short <= 0 or m == len(order):
            break
        # Every drawn chunk has given all its usable pixels: draw further chunks, enough for
        # CHUNK_MARGIN times the shortfall at the usable fraction seen (twice as many if none).
        seen = int(sizes[list(got)].sum())
        target = CHUNK_MARGIN * short * seen / (n - short) if n > short else seen
        extra = int(np.searchsorted(np.cumsum(sizes[order[m:]]), target)) + 1
        more = share([int(j) for j in order[m : m + extra]], short)
        m = min(len(order), m + extra)
        want.update(more)
        got.update(tasks(more))

    strata = sorted(got)  # in chunk order: with every chunk drawn, the plain stratified sample
    avail = np.array([len(got[j]) for j in strata], dtype=np.int64)
    q = _waterfill(avail, sizes[strata], n)
    parts = [got[j][: q[i]] for i, j in enumerate(strata) if q[i] > 0]
    T = sub.sizes["time"]
    x = np.concatenate(parts, axis=0) if parts else np.empty((0, len(bands), T), dtype=np.float32)
    rng = np.random.default_rng([seed, 1])
    keep = rng.permutation(len(x))[: min(n, len(x))]
    return np.ascontiguousarray(x[keep], dtype=np.float32)


__all__ = ["CHUNK_MARGIN", "MIN_CHUNKS", "OVERSAMPLE", "sample_series"]
