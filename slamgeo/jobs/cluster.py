"""k-Means on the CAE embeddings, out of core: k-means++ on a sample, then Lloyd on every pixel.

Shapes: an embedding is `(dim, *S)` where `S` is `(y, x)` (a grid) or `(sample,)` (a table);
a valid pixel is one whose embedding is finite in every dim. Centres are `(k, D)` float64.

Lloyd runs in `map_blocks`, not dask-ml's `KMeans`: less accurate, slower (benchmarks/README.md).
When the valid pixels fit in a share of the workers' memory (`PERSIST_FRACTION`), each block's
valid rows are read once and kept there for the sample, every Lloyd pass and the labels of
`cluster_store`; else every pass reads the embedding again. Under a distributed client the
sample is gathered on a worker and seeded there (`kmeans_init`): the driver holds the centres
and a few counts, never the sample nor the pixels.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.sizeof import sizeof

from slamgeo.errors import InputError
from slamgeo.schema import (
    CENTRE,
    CLUSTER,
    CLUSTER_CENTRE,
    CLUSTER_SIZE,
    CLUSTER_VARIABLES,
    DIM,
    KMEANS_K,
    KMEANS_MAX_ITER,
    KMEANS_SAMPLE_SIZE,
    KMEANS_TOL,
)

NO_CLUSTER = -1
_BATCH = 1 << 16  # pixels per distance computation: bounds a block's (batch, k) float64 scratch


@dataclass
class KMeansResult:
    """A fitted k-Means: `centres (k, D)`, `inertia` (sum over valid pixels of the squared
    distance to the nearest centre, float64), Lloyd passes over the data `n_iter`, whether the
    centre shift fell under the tolerance (`converged`), `sizes (k,)` pixels per cluster, and the
    number of valid pixels `n_valid`; `persisted`: whether the valid pixels were read once and
    kept in memory across the Lloyd passes (else every pass read the embedding)."""

    centres: np.ndarray
    inertia: float
    n_iter: int
    converged: bool
    sizes: np.ndarray
    n_valid: int
    sample_size: int = 0
    attrs: dict = field(default_factory=dict)
    persisted: bool = False


# --------------------------------------------------------------------------- plain numpy


def _nearest(X: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest centre and the squared distance to it, for `X (n, D)` float64.

    Distances by the expansion |x|^2 - 2 x.c + |c|^2 (one matrix product), in batches; the
    returned squared distance is recomputed directly from the chosen centre, so that the
    inertia has no cancellation error."""
    n = X.shape[0]
    labels = np.empty(n, dtype=np.int64)
    c2 = (centres**2).sum(1)
    for s in range(0, n, _BATCH):
        x = X[s : s + _BATCH]
        d2 = c2[None, :] - 2.0 * (x @ centres.T)  # |x|^2 is the same for every centre
        labels[s : s + _BATCH] = d2.argmin(1)
    dist = ((X - centres[labels]) ** 2).sum(1)
    return labels, dist


def _pixels(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(D, *s)` block -> (valid pixels `(n, D)` float64, validity mask `(prod(s),)`)."""
    X = block.reshape(block.shape[0], -1).T.astype(np.float64)
    valid = np.isfinite(X).all(1)
    return X[valid], valid  # type: ignore[return-value]  # numpy types all(axis=1) as bool | ndarray


def kmeans_init(X: np.ndarray, k: int, *, seed: int = 0, n_init: int = 4) -> np.ndarray:
    """Initial centres `(k, D)` from an in-memory sample `X (n, D)`.

    k-means++ seeding (scikit-learn), refined by Lloyd iterations on the sample, best of
    `n_init` seedings by squared error: low-dimensional embeddings make this cheap, and it
    gives the full-data Lloyd loop a start as good as scikit-learn's own `KMeans`. Runs on
    one thread (OpenMP and BLAS): the same centres to the bit in any process, a worker or this one.
    """
    from sklearn.cluster import KMeans  # imported here: 1-2 s, and only fitting needs it
    from threadpoolctl import threadpool_limits

    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise InputError(f"kmeans_init: expected a sample of shape (n, D), found {X.shape}")
    X = X[np.isfinite(X).all(1)]
    n_distinct = np.unique(X, axis=0).shape[0]
    if n_distinct < k:
        raise InputError(
            f"k-Means: k={k} clusters asked, but the sample of valid embeddings has only {n_distinct} "
            f"distinct value(s) ({X.shape[0]} pixels); use a smaller k"
        )
    km = KMeans(n_clusters=k, init="k-means++", n_init=n_init, random_state=seed, max_iter=300)
    with threadpool_limits(limits=1):  # sklearn's reductions add per-thread parts in any order
        return km.fit(X).cluster_centers_.astype(np.float64)


# --------------------------------------------------------------------------- dask plumbing


def _as_dask(embedding: xr.DataArray) -> tuple[da.Array, tuple[Hashable, ...]]:
    """The embedding as a dask array `(D, *S)` with the dim axis in one chunk."""
    if DIM not in embedding.dims:
        raise InputError(f"embedding: expected a '{DIM}' dimension, found dims {embedding.dims}")
    sdims = tuple(d for d in embedding.dims if d != DIM)
    if len(sdims) not in (1, 2):
        raise InputError(f"embedding: expected dims (dim, y, x) or (dim, sample), found {embedding.dims}")
    emb = embedding.transpose(DIM, *sdims)
    data = emb.data if isinstance(emb.data, da.Array) else da.from_array(np.asarray(emb.data))
    return data.rechunk({0: -1}), sdims


def _stats(X: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Lloyd statistics of valid pixels `X (n, D)` float64 as `(k*D + k + 2,)`: sums, counts,
    inertia, n_valid."""
    k, d = centres.shape
    out = np.zeros(k * d + k + 2)
    if X.shape[0]:
        labels, dist = _nearest(X, centres)
        sums = np.zeros((k, d))
        np.add.at(sums, labels, X)
        out[: k * d] = sums.ravel()
        out[k * d : k * d + k] = np.bincount(labels, minlength=k)
        out[-2] = dist.sum()
        out[-1] = X.shape[0]
    return out


def _stats_block(block: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Per-block Lloyd statistics as `(1,)*ndim + (k*D + k + 2,)`: sums, counts, inertia, n_valid."""
    return _stats(_pixels(block)[0], centres).reshape((1,) * block.ndim + (-1,))


def _lloyd_pass(
    data: da.Array, centres: np.ndarray, rows: da.Array | None = None
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """One pass over every block: (sums (k, D), counts (k,), inertia, n_valid) for `centres`;
    over the blocks' valid rows kept in memory when `rows` (`_valid_rows`) is given, with the
    same per-block statistics and the same reduction tree, so the same sums to the bit."""
    k, d = centres.shape
    m = k * d + k + 2
    if rows is None:
        parts = da.map_blocks(
            _stats_block,
            data,
            centres=centres,
            new_axis=data.ndim,
            chunks=tuple((1,) * len(c) for c in data.chunks) + ((m,),),
            dtype=np.float64,
        )
        total = parts.sum(axis=tuple(range(data.ndim))).compute()
    else:
        parts = da.map_blocks(
            _stats_rows,
            rows,
            centres=centres,
            new_axis=[0, rows.ndim + 1],  # the shape of `_stats_block`'s parts: (1, *grid, m)
            chunks=((1,),) + rows.chunks + ((m,),),
            dtype=np.float64,
        )
        total = parts.sum(axis=tuple(range(rows.ndim + 1))).compute()
    return total[: k * d].reshape(k, d), total[k * d : k * d + k], float(total[-2]), int(total[-1])


@dataclass
class _Place:
    """Where the fit's small steps run (drawing the sample, seeding, re-seeding): as tasks on
    the workers of `client`, their results futures that stay there until asked for (the sample
    never visits the driver), or in this process (`client` None), a result then its value."""

    client: Any = None

    def compute(self, *objs: Any) -> tuple:
        return dask.compute(*objs) if self.client is None else tuple(self.client.compute(list(objs)))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.client is None:
            return fn(*args)
        return self.client.submit(fn, *args, key=f"{fn.__name__.strip('_')}-{uuid.uuid4().hex}", pure=False)

    def result(self, *handles: Any) -> tuple:
        return handles if self.client is None else tuple(self.client.gather(list(handles)))


def _hash_uniform(index: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) number per global pixel index (splitmix64): the sample depends on the
    pixel, the seed and nothing else, so it is the same for every chunking and scheduler."""
    z = index.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _sample_block(block: np.ndarray, offset: tuple[int, ...], shape: tuple[int, ...], p: float, seed: int):
    """Valid pixels of one block whose hash is below `p`: (hash, values (n, D)), and the block's
    count of valid pixels."""
    X = block.reshape(block.shape[0], -1).T.astype(np.float64)
    valid = np.isfinite(X).all(1)
    grids = np.meshgrid(*(np.arange(o, o + s) for o, s in zip(offset, block.shape[1:])), indexing="ij")
    index = np.ravel_multi_index(tuple(g.ravel() for g in grids), shape)
    u = _hash_uniform(index, seed)
    keep = valid & (u < p)
    return u[keep], X[keep], int(valid.sum())


def _combine(parts: list, size: int, d: int) -> tuple[np.ndarray, int, int]:
    """The `size` valid pixels of smallest hash `(min(size, n), D)` float64, from the blocks'
    parts in C order (hashes under a threshold, their pixels `(n_b, D)`, the block's count of
    valid pixels); with the count of valid pixels and `n`, the count under the threshold."""
    n_valid = sum(c for _, _, c in parts)
    u = np.concatenate([q[0] for q in parts])
    X = np.concatenate([q[1] for q in parts]).reshape(-1, d)
    # ordered by hash, not by block: the same sample in the same order for every chunking
    order = np.argsort(u, kind="stable")[:size]
    return X[order], n_valid, int(u.size)


def _draw(place: _Place, tasks: Callable[[float], list], size: int, n_total: int, d: int) -> tuple[Any, int, int]:
    """The sample of the `size` valid pixels of smallest hash (`_combine`), where `place` keeps
    it, with the count of valid pixels and the sample's size. `tasks(p)`: per block in C order,
    a delayed `_sample_block` (or `_sample_rows`) at threshold `p`."""
    p = min(1.0, 2.0 * size / max(n_total, 1))
    while True:
        drawn = place.compute(*dask.delayed(_combine, nout=3)(tasks(p), size, d))
        n_valid, n_kept = place.result(*drawn[1:])
        if n_kept >= min(size, n_valid) or p >= 1.0:
            return drawn[0], n_valid, min(size, n_kept)
        p = min(1.0, 1.5 * size / max(n_valid, 1))


def _sample_data(data: da.Array, size: int, seed: int, place: _Place) -> tuple[Any, int, int]:
    shape = data.shape[1:]
    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]) for c in data.chunks[1:]]
    blocks = data.to_delayed()

    def tasks(p: float) -> list:
        out = []
        for idx in np.ndindex(blocks.shape):
            offset = tuple(int(starts[a][i]) for a, i in enumerate(idx[1:]))
            out.append(dask.delayed(_sample_block)(blocks[idx], offset, shape, p, seed))
        return out

    return _draw(place, tasks, size, math.prod(shape), data.shape[0])


def sample_embeddings(embedding: xr.DataArray, size: int, *, seed: int = 0) -> tuple[np.ndarray, int]:
    """A uniform random sample (without replacement) of `size` valid pixels' embeddings.

    Returns (`X (min(size, n_valid), D)` float64, `n_valid`). Out of core: each block keeps the
    pixels whose hash falls under a threshold; the `size` smallest hashes form the sample, so
    the sample does not depend on the chunking. A second pass with a higher threshold runs only
    when much of the scene is no data.
    """
    data, _ = _as_dask(embedding)
    sample, n_valid, _ = _sample_data(data, size, seed, _Place())
    return sample, n_valid


# --------------------------------------------------------------------------- valid rows kept in memory

PERSIST_FRACTION = 0.25
"""The valid rows are kept in memory across Lloyd passes when they take at most this share of the
workers' total memory limit (of this machine's available memory without a distributed client):
it stays under distributed's 60 % spill threshold with room for the float64 copy of a block that
each pass makes, for the labels' write and for an uneven spread of blocks over the workers."""


@dataclass
class _Rows:
    """One block's valid pixels `values (n, D)` in the embedding's dtype, its validity mask
    `valid (prod(shape),)`, its spatial `offset` and `shape` in the whole array."""

    values: np.ndarray
    valid: np.ndarray
    offset: tuple[int, ...]
    shape: tuple[int, ...]


@sizeof.register(_Rows)
def _sizeof_rows(r: _Rows) -> int:
    return int(r.values.nbytes + r.valid.nbytes) + 64


def _rows_block(block: np.ndarray, block_info=None) -> _Rows:
    X = block.reshape(block.shape[0], -1).T
    valid = np.isfinite(X).all(1)
    offset = tuple(int(lo) for lo, _ in block_info[0]["array-location"][1:])
    return _Rows(np.ascontiguousarray(X[valid]), valid, offset, tuple(block.shape[1:]))


def _valid_rows(data: da.Array) -> da.Array:
    """The valid rows of every block of `data (D, *S)`, read once and persisted (in the workers'
    memory under a distributed client): one `_Rows` per block, as a Dask array of the block grid."""
    rows = da.map_blocks(
        _rows_block,
        data,
        drop_axis=0,
        chunks=tuple((1,) * len(c) for c in data.chunks[1:]),
        dtype=object,
        meta=np.empty((0,) * (data.ndim - 1), dtype=object),
    )
    return rows.persist()


def _stats_rows(r: _Rows, centres: np.ndarray) -> np.ndarray:
    """`_stats_block`'s statistics from a block's kept rows, shaped `(1,)*(1 + len(S)) + (m,)`."""
    return _stats(r.values.astype(np.float64), centres).reshape((1,) * (1 + len(r.shape)) + (-1,))


def _sample_rows(r: _Rows, shape: tuple[int, ...], p: float, seed: int):
    """`_sample_block` from a block's kept rows: the same hashes, pixels and order."""
    grids = np.meshgrid(*(np.arange(o, o + s) for o, s in zip(r.offset, r.shape)), indexing="ij")
    index = np.ravel_multi_index(tuple(g.ravel() for g in grids), shape)[r.valid]
    u = _hash_uniform(index, seed)
    keep = u < p
    return u[keep], r.values[keep].astype(np.float64), int(r.values.shape[0])


def _sample_kept(rows: da.Array, data: da.Array, size: int, seed: int, place: _Place) -> tuple[Any, int, int]:
    """`_sample_data` from kept rows (the same sample), without reading the embedding."""
    shape = data.shape[1:]
    parts = rows.to_delayed()

    def tasks(p: float) -> list:
        return [dask.delayed(_sample_rows)(parts[idx], shape, p, seed) for idx in np.ndindex(parts.shape)]

    return _draw(place, tasks, size, math.prod(shape), data.shape[0])


def _assign_rows(r: _Rows, centres: np.ndarray, out_dtype: np.dtype) -> np.ndarray:
    out = np.full(r.valid.shape, NO_CLUSTER, dtype=out_dtype)
    if r.values.shape[0]:
        out[r.valid] = _nearest(r.values.astype(np.float64), centres)[0]
    return out.reshape(r.shape)


def _in_memory(embedding: xr.DataArray) -> bool:
    """Whether the embedding is in memory already (numpy, or a Dask array whose chunks are all
    materialised, as after `persist`): then there are no reads to save, nor a copy to make."""
    from dask.core import istask

    data = embedding.data
    if not isinstance(data, da.Array):
        return True
    return not any(istask(v) for v in dict(data.__dask_graph__()).values())


def _memory_budget() -> float:
    """Bytes the kept rows may take: `PERSIST_FRACTION` of the distributed workers' summed
    memory limits when the active scheduler is a client whose workers all have one, else of
    this machine's available memory."""
    client = getattr(dask.base.get_scheduler(), "__self__", None)
    if client is not None and hasattr(client, "scheduler_info"):
        try:
            try:
                workers = client.scheduler_info(n_workers=-1)["workers"]
            except TypeError:  # distributed before 2025: every worker without asking
                workers = client.scheduler_info()["workers"]
            limits = [float(w.get("memory_limit") or 0) for w in workers.values()]
        except Exception:  # noqa: BLE001 - an unusual scheduler: fall back on this machine's memory
            limits = []
        if limits and all(limits):
            return PERSIST_FRACTION * sum(limits)
    try:
        import psutil

        available = float(psutil.virtual_memory().available)
    except ImportError:  # psutil comes with distributed; this is a fallback for Linux
        available = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    return PERSIST_FRACTION * available


# --------------------------------------------------------------------------- public API


def inertia(embedding: xr.DataArray, centres: np.ndarray) -> float:
    """Sum over valid pixels of the squared Euclidean distance to the nearest centre (float64)."""
    data, _ = _as_dask(embedding)
    return _lloyd_pass(data, np.asarray(centres, dtype=np.float64))[2]


def _reseed_empty(centres: np.ndarray, empty: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Move each empty cluster's centre to a sample point far from every centre (as
    scikit-learn relocates empty clusters to the farthest points)."""
    centres = centres.copy()
    _, dist = _nearest(sample, centres)
    far = np.argsort(-dist, kind="stable")
    taken = 0
    for j in np.flatnonzero(empty):
        while taken < far.size and dist[far[taken]] <= 0.0:
            taken += 1
        if taken >= far.size:
            break
        centres[j] = sample[far[taken]]
        taken += 1
    return centres


class KMeansOptions(TypedDict, total=False):
    """Settings of a k-Means fit (`fit_kmeans`), each optional: `sample_size` valid pixels for
    the seeding (`KMEANS_SAMPLE_SIZE`), `max_iter` Lloyd passes at most (`KMEANS_MAX_ITER`), the
    relative tolerance `tol` (`KMEANS_TOL`), the `seed` (0) and whether the valid rows are
    kept in memory, `persist` (None: when they fit)."""

    sample_size: int
    max_iter: int
    tol: float
    seed: int
    persist: bool | None


KMEANS_DEFAULTS = KMeansOptions(
    sample_size=KMEANS_SAMPLE_SIZE, max_iter=KMEANS_MAX_ITER, tol=KMEANS_TOL, seed=0, persist=None
)
"""The value of each `KMeansOptions` key when it is not given."""


def _initial_centres(
    sample: np.ndarray, k: int, seed: int, n_init: int, init: np.ndarray | None
) -> tuple[np.ndarray, float]:
    """The initial centres `(k, D)` (`kmeans_init` on the sample `(n, D)`, or `init` when given)
    and the sample's mean per-dim variance (the scale of the tolerance). A task on a worker
    under a distributed client."""
    centres = kmeans_init(sample, k, seed=seed, n_init=n_init) if init is None else init
    return centres, float(np.mean(np.var(sample, axis=0)))


def fit_kmeans(
    embedding: xr.DataArray,
    k: int = KMEANS_K,
    *,
    sample_size: int = KMEANS_SAMPLE_SIZE,
    max_iter: int = KMEANS_MAX_ITER,
    tol: float = KMEANS_TOL,
    seed: int = 0,
    n_init: int = 4,
    init: np.ndarray | None = None,
    persist: bool | None = None,
) -> KMeansResult:
    """k-Means with `k` clusters on the valid pixels of `embedding (dim, *S)`, out of core.

    1. a uniform sample of `sample_size` valid pixels (chunking-independent, `seed`);
    2. `kmeans_init` on it: k-means++ refined on the sample, best of `n_init`;
    3. Lloyd iterations over every valid pixel, one pass each, until the squared centre shift
       is at most `tol` times the mean per-dim variance (scikit-learn's rule) or `max_iter`;
       an empty cluster is re-seeded on the sample point farthest from its centre;
    4. a last pass for the squared inertia and cluster sizes of the final centres.

    `init (k, D)` replaces step 2 with given initial centres (the sample is still drawn: it
    sets the tolerance's scale and the re-seeding candidates).

    Runs on whatever Dask scheduler is active (a `distributed.Client` if one exists; then the
    sample is gathered, seeded and kept on a worker, and this process holds only the centres and
    counts). The embedding is read at most about twice: the valid pixels of each block are read once and
    kept in memory (the workers' under a client) for the sample and every pass when they fit in
    `PERSIST_FRACTION` of the memory (`persist=None`), or always (`True`); with `persist=False`,
    or when they do not fit, every pass reads the embedding again. An embedding already in
    memory (numpy, or persisted by the caller) is not copied. The results are the same either way.
    """
    options = KMeansOptions(sample_size=sample_size, max_iter=max_iter, tol=tol, seed=seed, persist=persist)
    return _fit(embedding, k, n_init=n_init, init=init, **options)[0]


def _fit(
    embedding: xr.DataArray,
    k: int = KMEANS_K,
    *,
    n_init: int = 4,
    init: np.ndarray | None = None,
    **options: Unpack[KMeansOptions],
) -> tuple[KMeansResult, da.Array | None]:
    """`fit_kmeans`, and the kept rows (`_valid_rows`) when they were kept, else None."""
    unknown = sorted(set(options) - set(KMeansOptions.__annotations__))
    if unknown:
        raise TypeError(f"k-Means: unknown option(s) {unknown}; the options are {list(KMeansOptions.__annotations__)}")
    given = KMeansOptions(**{**KMEANS_DEFAULTS, **options})
    sample_size, max_iter, tol = given["sample_size"], given["max_iter"], given["tol"]
    seed, persist = given["seed"], given["persist"]
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k-Means: k must be a positive integer, found {k!r}")
    if sample_size < k:
        raise InputError(f"k-Means: sample_size ({sample_size}) must be at least k ({k})")
    data, _ = _as_dask(embedding)
    keep = (not _in_memory(embedding)) if persist is None else persist
    budget = _memory_budget() if keep and persist is None else math.inf
    n_total = math.prod(data.shape[1:])
    per_pixel = data.shape[0] * data.dtype.itemsize  # bytes of a kept row; + 1 for its mask
    from slamgeo.jobs.runtime import current_client

    place = _Place(current_client())  # the sample stays there: on a worker under a distributed client
    rows = None
    if keep and n_total * (per_pixel + 1) <= budget:  # fits even if every pixel is valid: one read
        rows = _valid_rows(data)
        sample, n_valid, n_sample = _sample_kept(rows, data, sample_size, seed, place)
    else:
        sample, n_valid, n_sample = _sample_data(data, sample_size, seed, place)
        if keep and n_valid * per_pixel + n_total <= budget:  # fits once the no-data is left out
            rows = _valid_rows(data)
    if n_valid < k:
        raise InputError(f"k-Means: k={k} clusters asked, but the embedding has only {n_valid} valid pixel(s)")
    if init is not None:
        init = np.asarray(init, dtype=np.float64)
        if init.shape != (k, data.shape[0]):
            raise InputError(f"k-Means: init must have shape ({k}, {data.shape[0]}), found {init.shape}")
    centres, spread = place.result(place.submit(_initial_centres, sample, int(k), seed, n_init, init))[0]
    tol_abs = tol * spread
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - the count of passes is read after the loop
        sums, counts, _, _ = _lloyd_pass(data, centres, rows)
        empty = counts == 0
        new = np.where(empty[:, None], centres, sums / np.maximum(counts, 1)[:, None])
        if empty.any():
            new = place.result(place.submit(_reseed_empty, new, empty, sample))[0]
        shift = float(((new - centres) ** 2).sum())
        centres = new
        if shift <= tol_abs and not empty.any():
            converged = True
            break
    _, sizes, total, n_valid = _lloyd_pass(data, centres, rows)
    fit = KMeansResult(
        centres=centres,
        inertia=total,
        n_iter=n_iter,
        converged=converged,
        sizes=sizes.astype(np.int64),
        n_valid=n_valid,
        sample_size=n_sample,
        attrs={
            "k": int(k),
            "seed": int(seed),
            "sample_size": n_sample,
            "max_iter": int(max_iter),
            "tol": float(tol),
            "n_init": int(n_init),
            "init": "k-means++ on a sample, refined on the sample" if init is None else "given",
        },
        persisted=rows is not None,
    )
    return fit, rows


def _assign_block(block: np.ndarray, centres: np.ndarray, out_dtype: np.dtype) -> np.ndarray:
    X, valid = _pixels(block)
    out = np.full(valid.shape, NO_CLUSTER, dtype=out_dtype)
    if X.shape[0]:
        out[valid] = _nearest(X, centres)[0]
    return out.reshape(block.shape[1:])


def cluster_dtype(k: int) -> np.dtype:
    """int16 up to 32767 clusters, int32 beyond."""
    return np.dtype(np.int16) if k <= np.iinfo(np.int16).max else np.dtype(np.int32)


def assign_clusters(embedding: xr.DataArray, centres: np.ndarray) -> xr.DataArray:
    """`cluster (*S)`: index of the nearest centre, -1 where any embedding dim is NaN.

    Lazy, one task per block, chunked like the embedding's spatial chunks; keeps the spatial
    coordinates (and the CRS coordinate `spatial_ref`)."""
    centres = np.asarray(centres, dtype=np.float64)
    data, sdims = _as_dask(embedding)
    if centres.ndim != 2 or centres.shape[1] != data.shape[0]:
        raise InputError(f"centres: expected shape (k, {data.shape[0]}), found {centres.shape}")
    dtype = cluster_dtype(centres.shape[0])
    labels = da.map_blocks(
        _assign_block, data, centres=centres, out_dtype=dtype, dtype=dtype, drop_axis=0, meta=np.array((), dtype)
    )
    return _labels_dataarray(embedding, sdims, labels, centres.shape[0])


def _assign_kept(embedding: xr.DataArray, rows: da.Array, centres: np.ndarray) -> xr.DataArray:
    """`assign_clusters` from the kept rows of `embedding` (`_valid_rows`): the same labels,
    without reading the embedding again."""
    data, sdims = _as_dask(embedding)
    dtype = cluster_dtype(centres.shape[0])
    labels = da.map_blocks(
        _assign_rows,
        rows,
        centres=centres,
        out_dtype=dtype,
        dtype=dtype,
        chunks=data.chunks[1:],
        meta=np.array((), dtype),
    )
    return _labels_dataarray(embedding, sdims, labels, centres.shape[0])


def _labels_dataarray(embedding: xr.DataArray, sdims: tuple[Hashable, ...], labels: da.Array, k: int) -> xr.DataArray:
    template = embedding.isel({DIM: 0}, drop=True).transpose(*sdims)
    out = xr.DataArray(labels, dims=sdims, coords=template.coords, name=CLUSTER)
    out.attrs = {
        "long_name": "k-Means cluster of the embedding",
        "flag_meaning": "-1: no data",
        "k": int(k),
    }
    if "spatial_ref" in out.coords:
        out.attrs["grid_mapping"] = "spatial_ref"
    return out


def centres_dataarray(result: KMeansResult) -> xr.Dataset:
    """`cluster_centre (centre, dim)` and `cluster_size (centre,)`, with the fit's settings."""
    k, d = result.centres.shape
    coords = {CENTRE: np.arange(k), DIM: np.arange(d)}
    ds = xr.Dataset(
        {
            CLUSTER_CENTRE: ((CENTRE, DIM), result.centres, {"long_name": "k-Means centre in embedding space"}),
            CLUSTER_SIZE: ((CENTRE,), result.sizes, {"long_name": "valid pixels in the cluster"}),
        },
        coords=coords,
    )
    ds[CLUSTER_CENTRE].attrs.update(
        {f"kmeans_{a}": v for a, v in result.attrs.items()},
        inertia=result.inertia,
        n_iter=result.n_iter,
        converged=int(result.converged),
        n_valid=result.n_valid,
    )
    return ds


# --------------------------------------------------------------------------- the stage


def cluster(results: xr.Dataset, k: int = KMEANS_K, **options: Unpack[KMeansOptions]) -> xr.Dataset:
    """`results` plus k-Means of its `embedding (dim, *S)`: `cluster (*S)` (-1 = no data, lazy),
    `cluster_centre (centre, dim)` and `cluster_size (centre,)` (`fit_kmeans`, with `options`:
    `KMeansOptions`; the Lloyd passes run on the caller's Dask scheduler). The lazy `cluster`
    reads the embedding again when computed (it holds no memory meanwhile)."""
    _, new = _clustering(results, "results", k, **options)
    return results.drop_vars([v for v in CLUSTER_VARIABLES if v in results]).assign(
        {v: new[v] for v in CLUSTER_VARIABLES}
    )


def _clustering(
    results: xr.Dataset, where: str, k: int, *, labels_from_kept: bool = False, **options: Unpack[KMeansOptions]
) -> tuple[KMeansResult, xr.Dataset]:
    """The fit on `results["embedding"]` and the new variables (`CLUSTER_VARIABLES`); with
    `labels_from_kept`, `cluster` is computed from the rows kept in memory by the fit, if any
    (so computing it reads nothing, but holds them until then)."""
    if "embedding" not in results:
        raise InputError(f"{where}: no 'embedding' variable; found {sorted(map(str, results.data_vars))}")
    emb = results["embedding"]
    fit, rows = _fit(emb, k, **options)
    if labels_from_kept and rows is not None:
        labels = _assign_kept(emb, rows, fit.centres)
    else:
        labels = assign_clusters(emb, fit.centres)
    return fit, xr.merge([labels.to_dataset(), centres_dataarray(fit)])


def cluster_store(
    store: str | Path, k: int = KMEANS_K, *, overwrite: bool = False, **options: Unpack[KMeansOptions]
) -> KMeansResult:
    """`cluster` on a results store, the new variables written into it (`append_variables`);
    a clustering already there is replaced only with `overwrite`. `options`: `KMeansOptions`
    (`sample_size`, `max_iter`, `tol`, `seed`, `persist`). Returns the fit.

    When the valid embeddings fit in memory (`fit_kmeans`), the embedding is read once: the
    sample, the Lloyd passes and the labels all come from the rows kept in memory."""
    from slamgeo.io.cube import open_results

    store = str(store)
    ds = open_results(store)
    if not overwrite:
        clash = [n for n in CLUSTER_VARIABLES if n in ds.variables]
        if clash:
            raise InputError(f"{store}: already holds {clash}; pass --overwrite to replace them")
    fit, new = _clustering(ds, store, k, labels_from_kept=True, **options)
    append_variables(store, new, overwrite=overwrite)
    return fit


def _drop_arrays(store: str, names) -> None:
    import zarr

    group = zarr.open_group(store, mode="r+")
    for name in names:
        if name in group:
            del group[name]
    zarr.consolidate_metadata(store)


def append_variables(store: str, new, *, overwrite: bool) -> None:
    """Add the variables of `new` (an xarray Dataset) to the Zarr store `store` (a local path or
    an fsspec URL), all or nothing.

    The new variables are computed into a temporary local store first, so a failure
    while computing leaves `store` untouched; they are then copied in with `to_zarr(mode="a")`,
    and if that copy fails, the arrays it created are removed again. Coordinates already in the
    store are reused when equal; with `overwrite`, variables of the same names, and coordinates
    that only they use (a `centre` axis of another k), are removed just before the copy."""
    import numpy as np
    import xarray as xr
    import zarr

    from slamgeo.errors import InputError, OutputError

    old = xr.open_zarr(store, decode_coords="all")
    replace = [str(n) for n in new.data_vars if n in old.variables]
    if replace and not overwrite:
        raise InputError(f"{store}: already holds {replace}; pass --overwrite to replace them")
    same = []
    for c in new.coords:
        if c not in old.variables:
            continue
        if old[c].shape == new[c].shape and np.array_equal(old[c].values, new[c].values):
            same.append(c)
            continue
        # a coordinate of `new` on that dimension (pair_a on pair) is checked in its own turn
        users = [str(v) for v in old.variables if c in old[v].dims and v not in (*replace, *new.variables) and v != c]
        if users or not overwrite:
            raise InputError(f"{store}: coordinate '{c}' differs from the store's (used by {users or replace})")
        replace.append(str(c))
    zarr_format = zarr.open_group(store, mode="r").metadata.zarr_format
    from slamgeo.io import storage

    # Staged on local disk: beside a local store, in a temporary folder for a URL (object
    # storage has no rename to gain from staging there; the copy below is what publishes).
    local = storage.is_local(store)
    where = str(storage.parent(storage.filesystem(store)[1])) if local else None
    try:
        folder = tempfile.mkdtemp(prefix=f".{storage.name(store)}.tmp-" if local else "slamgeo-append-", dir=where)
    except OSError as exc:
        raise OutputError(f"{store}: cannot write beside the results store ({exc.strerror or exc})") from exc
    tmp = f"{folder}/new.zarr"
    try:
        new.to_zarr(tmp, mode="w", zarr_format=zarr_format)
        # the coordinates already there are left out of the copy only now, so that the new
        # variables still name them as their coordinates (`coordinates` attribute)
        staged = xr.open_zarr(tmp).drop_vars(same)
        # to_zarr(mode="a") replaces the group's attributes with the dataset's: keep the store's
        staged.attrs = dict(zarr.open_group(store, mode="r").attrs)
        for v in staged.variables.values():
            v.encoding.pop("preferred_chunks", None)
        try:
            if replace:
                _drop_arrays(store, replace)
            before = set(zarr.open_group(store, mode="r").keys())
            try:
                staged.to_zarr(store, mode="a")
            except BaseException:
                with contextlib.suppress(OSError):  # a store that refuses writes refuses this too
                    _drop_arrays(store, sorted(set(zarr.open_group(store, mode="r").keys()) - before))
                raise
        except OSError as exc:  # names a chunk key or an array, not the store: say which store
            raise OutputError(
                f"{store}: cannot write into the results store ({exc.strerror or exc}); "
                "make it writable, or cluster a copy of it"
            ) from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)


__all__ = [
    "CENTRE",
    "KMeansOptions",
    "KMeansResult",
    "NO_CLUSTER",
    "PERSIST_FRACTION",
    "append_variables",
    "assign_clusters",
    "centres_dataarray",
    "cluster",
    "cluster_dtype",
    "cluster_store",
    "fit_kmeans",
    "inertia",
    "kmeans_init",
    "sample_embeddings",
]
