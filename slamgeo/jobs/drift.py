"""Season drift: does a model trained on one season still fit another?

`season_drift(reference, season)` compares two results stores of one model: `reference`, the
season the model was trained on, and `season`, a later season explained with it (aligned onto
the model's dates). It measures, out of core:

- reconstruction error: the ratio of the medians (season / reference) and the share of the
  season's pixels above the reference's 95th percentile (5 % without drift), on samples;
- embedding: the energy distance between samples of both seasons (each dimension scaled by
  the reference sample's standard deviation), against its null spread: the same distance
  between two halves of the reference sample, split by spatial tiles of `null_tile` pixels
  (pixels of one field are alike, so a split by pixels would understate the spread), repeated;
- with labels (class codes per pixel, -1: none): each class's centroid move in the embedding,
  in units of the reference class's spread, and the class-mean importance per date in each
  season: how much it changed, on which dates most, and the lag that best aligns the two
  seasons' profiles (a calendar moved by 45 days shows as a lag of about 45 days).

The verdict is "retrain" when a measure crosses its `DriftThresholds`, each crossing one line
of `reasons`; else "keep". The thresholds were chosen on synthetic seasons (docs/drift.md).

Memory on the driver: the two samples (`sample_size` x (D + 4) floats each) and the per-class
sums (classes x D x T); the pixels are read block by block by Dask tasks.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from slamgeo.errors import InputError
from slamgeo.io.parcels import read_parcels
from slamgeo.jobs.cluster import sample_embeddings
from slamgeo.jobs.parcels import read_parcels_outputs
from slamgeo.schema import CLASS_COLUMN, DIM, DRIFT_SAMPLE_SIZE, EMBEDDING, ID_COLUMN, IMPORTANCE, RECON_ERROR, TIME


@dataclass(frozen=True)
class DriftThresholds:
    """When a season's drift from the model's season calls for a new model; a measure above
    its threshold is a reason to retrain. Chosen on synthetic seasons of three models, near the
    geometric middle between the largest value of ten same-law seasons (another seed, rain, a
    12-day revisit, missing dates, another crop mix) and the smallest of four seasons whose
    calendars moved by +-45 days (docs/drift.md has the table):

        measure                  same laws: max   +-45 days: min   threshold
        recon_median_ratio       1.064            1.003 (1.44)     1.3
        recon_share_above_p95    0.112            0.208            0.15
        embedding_energy_ratio   2.97             6.28             4.3
        class_centroid_move      0.52             3.09             1.25
        importance_shift         0.073            0.191            0.12
        importance_lag_days      0                39               20

    Same laws cross none; a 45-day shift crosses 4 to 6; a 30-day shift 4, a 15-day shift 1.

    recon_median_ratio: median reconstruction error, season / reference.
    recon_share_above_p95: share of the season's pixels above the reference's 95th
        percentile of the reconstruction error (0.05 without drift).
    embedding_energy_ratio: energy distance between the seasons' embeddings over its null
        mean (two halves of the reference season).
    class_centroid_move: the median over classes of each class's centroid move, in units of
        the reference class's spread (the root mean square of its per-dimension standard
        deviations).
    importance_shift: the mean over dates of the class-mean importance change (mean over
        classes and dimensions of |season - reference|), in units of the reference's typical
        class range (the median over classes of max - min over dimensions and dates).
    importance_lag_days: the median over classes of the lag (days, either sign) that best
        aligns the class-mean importance of the season with the reference's (`importance_lags`):
        how far the dates the model reads have moved.
    min_class_pixels: classes with fewer labelled pixels in either season are left out of the
        class measures.
    """

    recon_median_ratio: float = 1.3
    recon_share_above_p95: float = 0.15
    embedding_energy_ratio: float = 4.3
    class_centroid_move: float = 1.25
    importance_shift: float = 0.12
    importance_lag_days: float = 20.0
    min_class_pixels: int = 200


_REASONS = {  # measure key -> (threshold field, how the line names it)
    "recon_median_ratio": ("recon_median_ratio", "reconstruction error: median ratio (season / reference)"),
    "recon_share_above_p95": (
        "recon_share_above_p95",
        "reconstruction error: share of the season's pixels above the reference's 95th percentile",
    ),
    "embedding_energy_ratio": ("embedding_energy_ratio", "embedding: energy distance over its null mean"),
    "class_centroid_move": ("class_centroid_move", "classes: median centroid move (reference class spreads)"),
    "importance_shift": ("importance_shift", "importance: mean change of the class-mean importance by date"),
    "importance_lag_days": ("importance_lag_days", "importance: median lag of the class-mean importance (days)"),
}
_SIGNED = ("importance_lag_days",)  # judged by their size, either sign


# --------------------------------------------------------------------------- inputs


def _spatial_dims(results: xr.Dataset, what: str) -> tuple[Hashable, ...]:
    for name in (EMBEDDING, IMPORTANCE, RECON_ERROR):
        if name not in results:
            raise InputError(f"{what}: no {name!r} variable; found {sorted(map(str, results.data_vars))}")
    sdims = tuple(d for d in results[RECON_ERROR].dims)
    if len(sdims) not in (1, 2):
        raise InputError(f"{what}: expected recon_error on (y, x) or (sample,), found {sdims}")
    return sdims


def _check_labels(labels: xr.DataArray | None, like: xr.DataArray, what: str) -> xr.DataArray | None:
    """`labels` as an integer DataArray on `like`'s dims and chunks, or None."""
    if labels is None:
        return None
    if not isinstance(labels, xr.DataArray):
        labels = xr.DataArray(np.asarray(labels), dims=like.dims)
    if set(labels.dims) != set(like.dims) or any(labels.sizes[d] != like.sizes[d] for d in like.dims):
        raise InputError(f"{what}: labels on {dict(labels.sizes)} do not fit the results' grid {dict(like.sizes)}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{what}: labels must be integer class codes (-1: none), found dtype {labels.dtype}")
    labels = labels.transpose(*like.dims)
    chunks = like.chunks or tuple((n,) for n in like.shape)
    data = labels.data if isinstance(labels.data, da.Array) else da.from_array(np.asarray(labels.data))
    return xr.DataArray(data.rechunk(chunks), dims=like.dims)


def _positions(like: xr.DataArray) -> list[da.Array]:
    """Each pixel's row and column (grid) or index (sample form), float, chunked like `like`."""
    chunks = like.chunks or tuple((n,) for n in like.shape)
    grids = da.meshgrid(*(da.arange(n, chunks=c, dtype=np.float64) for n, c in zip(like.shape, chunks)), indexing="ij")
    return [g.rechunk(chunks) for g in grids]


def _sample(
    results: xr.Dataset, labels: xr.DataArray | None, sdims: tuple[Hashable, ...], size: int, seed: int
) -> tuple[np.ndarray, int]:
    """`size` valid pixels drawn uniformly (`slamgeo.jobs.cluster.sample_embeddings`: by a hash
    of the pixel index, the same for every chunking): rows of (embedding (D), recon_error,
    label or -1, position (1 or 2)) float64, and the number of valid pixels."""
    recon = results[RECON_ERROR]
    emb = results[EMBEDDING].transpose(DIM, *sdims)
    emb_data = emb.data if isinstance(emb.data, da.Array) else da.from_array(np.asarray(emb.data))
    rec_data = recon.data if isinstance(recon.data, da.Array) else da.from_array(np.asarray(recon.data))
    chunks = emb_data.chunks[1:]
    rec_data = rec_data.rechunk(chunks)
    lab = labels.data.astype(np.float64) if labels is not None else da.full(rec_data.shape, -1.0, chunks=chunks)
    pos = _positions(xr.DataArray(rec_data, dims=sdims))
    parts = [emb_data.astype(np.float64), rec_data[None].astype(np.float64), lab[None], *(p[None] for p in pos)]
    stacked = da.concatenate([p.rechunk({0: -1, **{i + 1: c for i, c in enumerate(chunks)}}) for p in parts], axis=0)
    features = xr.DataArray(stacked.rechunk({0: -1}), dims=(DIM, *sdims))
    return sample_embeddings(features, size, seed=seed)


def _class_block(emb: np.ndarray, imp: np.ndarray, lab: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class sums of one block as one vector: counts (C), embedding sums and sums of
    squares (C x D each), importance sums (C x D x T); pixels with a NaN or no class left out."""
    d, t = imp.shape[0], imp.shape[1]
    e = emb.reshape(d, -1).T.astype(np.float64)
    m = imp.reshape(d * t, -1).T.astype(np.float64)
    code = lab.reshape(-1).astype(np.int64)
    ok = (code >= 0) & (code < n_classes) & np.isfinite(e).all(1) & np.isfinite(m).all(1)
    code, e, m = code[ok], e[ok], m[ok]
    counts = np.bincount(code, minlength=n_classes).astype(np.float64)
    out = [counts]
    for values in (e, e * e, m):
        sums = np.zeros((n_classes, values.shape[1]))
        np.add.at(sums, code, values)
        out.append(sums.ravel())
    return np.concatenate(out)


def _class_sums(
    results: xr.Dataset, labels: xr.DataArray, sdims: tuple[Hashable, ...], n_classes: int
) -> dict[str, np.ndarray]:
    """Exact per-class statistics over every labelled valid pixel, block by block (a tree of
    Dask tasks; the driver receives one vector of C x (1 + 2 D + D T) floats)."""
    emb = results[EMBEDDING].transpose(DIM, *sdims)
    imp = results[IMPORTANCE].transpose(DIM, TIME, *sdims)
    d, t = imp.shape[0], imp.shape[1]
    emb_data = emb.data if isinstance(emb.data, da.Array) else da.from_array(np.asarray(emb.data))
    imp_data = imp.data if isinstance(imp.data, da.Array) else da.from_array(np.asarray(imp.data))
    chunks = emb_data.chunks[1:]
    emb_data = emb_data.rechunk({0: -1})
    imp_data = imp_data.rechunk({0: -1, 1: -1, **{i + 2: c for i, c in enumerate(chunks)}})
    lab_data = labels.data.rechunk(chunks)
    eb, ib, lb = emb_data.to_delayed(), imp_data.to_delayed(), lab_data.to_delayed()
    parts = [
        dask.delayed(_class_block)(eb[(0, *idx)], ib[(0, 0, *idx)], lb[idx], n_classes) for idx in np.ndindex(lb.shape)
    ]
    while len(parts) > 1:  # a tree of sums: no task and not the driver holds every block's vector
        parts = [
            dask.delayed(np.add)(*parts[i : i + 2]) if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)
        ]
    (vec,) = dask.compute(parts[0])
    c = n_classes
    counts = vec[:c]
    s1 = vec[c : c + c * d].reshape(c, d)
    s2 = vec[c + c * d : c + 2 * c * d].reshape(c, d)
    si = vec[c + 2 * c * d :].reshape(c, d, t)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / counts[:, None]
        var = np.maximum(s2 / counts[:, None] - mean**2, 0.0)
        imp_mean = si / counts[:, None, None]
    return {"count": counts, "mean": mean, "var": var, "importance": imp_mean}


# --------------------------------------------------------------------------- measures


def _mean_distance(a: np.ndarray, b: np.ndarray, rows: int = 1024) -> float:
    """Mean Euclidean distance over all pairs of rows of `a (n, D)` and `b (m, D)`."""
    total = 0.0
    for i in range(0, a.shape[0], rows):
        diff = a[i : i + rows, None, :] - b[None, :, :]
        total += float(np.sqrt((diff * diff).sum(-1)).sum())
    return total / (a.shape[0] * b.shape[0])


def energy_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The energy distance (Szekely & Rizzo) between samples `a (n, D)` and `b (m, D)`:
    2 E|A - B| - E|A - A'| - E|B - B'|, with the means over all pairs (V-statistics: the
    pairs of a point with itself count, as zeros). 0 for one sample against itself; it grows
    with the difference of the two distributions (0 only when they are equal)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return 2 * _mean_distance(a, b) - _mean_distance(a, a) - _mean_distance(b, b)


def _hash01(values: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) number per integer value (splitmix64), for splitting tiles."""
    z = values.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 0x1234567) % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _tile_ids(pos: np.ndarray, tile: int) -> np.ndarray:
    """The id of the `tile` x `tile` pixel tile of each sampled pixel (rows of `pos`: row and
    column, or a sample index, which is its own tile)."""
    if pos.shape[1] == 1:
        return pos[:, 0].astype(np.int64)
    r = (pos[:, 0] // tile).astype(np.int64)
    c = (pos[:, 1] // tile).astype(np.int64)
    return r * (int(c.max(initial=0)) + 1) + c


def _group_energy(dist: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean distance between every pair of groups `(G, G)` from one distance matrix `(N, N)`
    and each row's group (-1: none)."""
    onehot = np.zeros((dist.shape[0], n_groups))
    ok = groups >= 0
    onehot[np.flatnonzero(ok), groups[ok]] = 1.0
    counts = onehot.sum(0)
    sums = onehot.T @ (dist @ onehot)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / np.outer(counts, counts)


def embedding_distance(
    reference: np.ndarray,
    season: np.ndarray,
    reference_pos: np.ndarray,
    *,
    size: int,
    repeats: int,
    tile: int,
    seed: int,
) -> dict[str, float]:
    """The energy distance between the seasons' embedding samples `(n, D)` and its null.

    Takes the first 2 `size` rows of `reference` and the first `size` rows of `season` (the
    samples are in random order); each repeat splits those reference rows in two halves A and
    B by a hash of each pixel's spatial tile (`reference_pos`, rows (row, column) or (sample
    index,); tiles of `tile` x `tile` pixels), and computes the null E(A, B) and the
    statistic E(season, A) (`energy_distance`), so both compare samples of about `size` rows.
    Every dimension is scaled by the reference sample's standard deviation. One distance
    matrix serves every repeat. Returns `energy_distance` (the statistic's mean over repeats),
    `null_mean`, `null_sd`, `ratio` (distance / null mean), `z` ((distance - null mean) / null
    sd), `n` (season rows) and `repeats`."""
    from scipy.spatial.distance import cdist

    sd = reference.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    ref = reference[: 2 * size] / sd
    sea = season[:size] / sd
    pts = np.concatenate([ref, sea])
    dist = cdist(pts, pts)
    tiles = _tile_ids(reference_pos[: ref.shape[0]], tile)
    stats, nulls = [], []
    for r in range(repeats):
        groups = np.concatenate([(_hash01(tiles, seed + r) >= 0.5).astype(np.int64), np.full(sea.shape[0], 2)])
        if np.bincount(groups, minlength=3).min() < 2:
            continue
        e = _group_energy(dist, groups, 3)  # groups: 0 = A, 1 = B, 2 = season
        nulls.append(2 * e[0, 1] - e[0, 0] - e[1, 1])
        stats.append(2 * e[2, 0] - e[2, 2] - e[0, 0])
    if not stats:
        return {"energy_distance": math.nan, "null_mean": math.nan, "null_sd": math.nan, "ratio": math.nan,
                "z": math.nan, "n": 0, "repeats": 0}  # fmt: skip
    stat, null_mean = float(np.mean(stats)), float(np.mean(nulls))
    null_sd = float(np.std(nulls, ddof=1)) if len(nulls) > 1 else math.nan
    return {
        "energy_distance": stat,
        "null_mean": null_mean,
        "null_sd": null_sd,
        "ratio": stat / null_mean if null_mean > 0 else math.inf,
        "z": (stat - null_mean) / null_sd if null_sd > 0 else math.nan,
        "n": int(sea.shape[0]),
        "repeats": len(stats),
    }


def recon_error_measures(reference: np.ndarray, season: np.ndarray) -> dict[str, float]:
    """Medians, their ratio (season / reference), the reference's 95th percentile and the
    share of `season` above it, from samples of the reconstruction error (NaN left out)."""
    reference = reference[np.isfinite(reference)]
    season = season[np.isfinite(season)]
    if reference.size == 0 or season.size == 0:
        raise InputError("season drift: no valid reconstruction error in one of the seasons")
    ref_med, sea_med = float(np.median(reference)), float(np.median(season))
    p95 = float(np.percentile(reference, 95))
    return {
        "reference_median": ref_med,
        "season_median": sea_med,
        "median_ratio": sea_med / ref_med if ref_med > 0 else math.inf,
        "reference_p95": p95,
        "share_above_reference_p95": float(np.mean(season > p95)),
    }


def class_measures(
    reference: dict[str, np.ndarray],
    season: dict[str, np.ndarray],
    class_names: Sequence[str],
    *,
    min_pixels: int,
) -> dict[str, Any]:
    """Per-class centroid moves and importance change from the per-class statistics of both
    seasons (`count (C,)`, `mean`, `var (C, D)`, `importance (C, D, T)`).

    `centroid_move[c]` = |mean_season - mean_reference| / sqrt(mean over dims of the reference
    variance); `importance_change (C, T)` = mean over dims of |importance_season -
    importance_reference| / scale, with scale the median over classes of the reference class
    mean importance's range (max - min over dims and dates). Classes under `min_pixels` in
    either season are left out (`left_out`)."""
    names = [str(c) for c in class_names]
    used = (reference["count"] >= min_pixels) & (season["count"] >= min_pixels)
    idx = np.flatnonzero(used)
    out: dict[str, Any] = {
        "classes": [names[i] for i in idx],
        "left_out": [names[i] for i in np.flatnonzero(~used)],
        "n_pixels_reference": [int(reference["count"][i]) for i in idx],
        "n_pixels_season": [int(season["count"][i]) for i in idx],
    }
    if idx.size == 0:
        return out
    spread = np.sqrt(reference["var"][idx].mean(axis=1))
    move = np.linalg.norm(season["mean"][idx] - reference["mean"][idx], axis=1) / np.where(spread > 0, spread, np.nan)
    ri, si = reference["importance"][idx], season["importance"][idx]
    ranges = ri.reshape(idx.size, -1).max(1) - ri.reshape(idx.size, -1).min(1)
    scale = float(np.median(ranges))
    change = np.abs(si - ri).mean(axis=1) / (scale if scale > 0 else 1.0)  # (C, T)
    out.update(
        {
            "centroid_move": {names[i]: float(v) for i, v in zip(idx, move)},
            "centroid_move_median": float(np.nanmedian(move)),
            "centroid_move_max": float(np.nanmax(move)),
            "importance_scale": scale,
            "importance_change": {names[i]: float(v) for i, v in zip(idx, change.mean(axis=1))},
            "importance_change_by_date": change,
            "importance_reference": ri,
            "importance_season": si,
        }
    )
    return out


def importance_lags(reference: np.ndarray, season: np.ndarray, max_lag: int) -> np.ndarray:
    """Per class, the lag k (dates, -`max_lag` .. `max_lag`) for which the season's class-mean
    importance `season (C, D, T)` on dates t + k correlates best with the reference's on dates
    t (Pearson, over the dims and the overlapping dates); NaN where no lag gives a correlation
    (a constant profile). Positive: the season's importance comes later."""
    c, _, t = reference.shape
    out = np.full(c, np.nan)
    for i in range(c):
        best = -np.inf
        for k in range(-max_lag, max_lag + 1):
            lo, hi = max(0, -k), min(t, t - k)
            if hi - lo < 3:
                continue
            x, y = reference[i, :, lo:hi].ravel(), season[i, :, lo + k : hi + k].ravel()
            if x.std() == 0 or y.std() == 0:
                continue
            r = float(np.corrcoef(x, y)[0, 1])
            if r > best:
                best, out[i] = r, k
    return out


def _date_step_days(dates: Sequence[str]) -> float:
    """The median step of the dates, in days (1 without dates)."""
    if len(dates) < 2:
        return 1.0
    days = np.asarray(dates, dtype="datetime64[D]").astype(np.int64)
    return float(np.median(np.diff(days)))


def _reasons(values: dict[str, float], thresholds: DriftThresholds) -> list[str]:
    lines = []
    for key, (field, text) in _REASONS.items():
        v = values.get(key)
        limit = getattr(thresholds, field)
        if v is None or not np.isfinite(v):
            continue
        if key in _SIGNED and abs(v) > limit:
            lines.append(f"{text}: {v:+.3g}, beyond +-{limit:g}")
        elif key not in _SIGNED and v > limit:
            lines.append(f"{text}: {v:.3g} > {limit:g}")
    return lines


def _iso(times: np.ndarray) -> list[str]:
    return [str(np.datetime64(t, "D")) for t in np.asarray(times)]


def _nested(a: np.ndarray) -> list:
    """`a` as nested lists of floats with 7 significant digits (null where not finite)."""
    flat = [float(f"{v:.7g}") if np.isfinite(v) else None for v in np.asarray(a, np.float64).ravel()]
    return np.array(flat, dtype=object).reshape(np.shape(a)).tolist()


def season_drift(
    reference: xr.Dataset,
    season: xr.Dataset,
    *,
    reference_labels: xr.DataArray | None = None,
    season_labels: xr.DataArray | None = None,
    class_names: Sequence[str] | None = None,
    sample_size: int = DRIFT_SAMPLE_SIZE,
    seed: int = 0,
    thresholds: DriftThresholds = DriftThresholds(),
    energy_size: int = 1000,
    null_repeats: int = 10,
    null_tile: int = 16,
    top_dates: int = 5,
    max_lag_days: float = 90.0,
) -> dict[str, Any]:
    """The drift of `season` from `reference`, two results stores of one model (`embedding
    (dim, *S)`, `importance (dim, time, *S)`, `recon_error (*S)`; S = (y, x) or (sample,)),
    and the verdict: "retrain" when a measure crosses its threshold, else "keep".

    `reference_labels`, `season_labels`: optional integer class codes on each store's grid
    (`*S`; -1: no class), codes into `class_names` (one list for both seasons;
    `slamgeo.jobs.pairs.parcel_class_codes` gives them from parcels, `shared_class_codes`
    puts two seasons' codes on one list). Without both, the class measures are left out.
    `sample_size` valid pixels of each season are drawn with `seed` (reference) and `seed + 1`
    (season) for the reconstruction error and the embedding; the energy distance uses
    `energy_size` of them, its null `null_repeats` splits of the reference by tiles of
    `null_tile` pixels (`embedding_distance`). The class sums are exact, over every pixel.
    The importance lags are searched within +-`max_lag_days` (at most a third of the dates).

    Returns a JSON-able dict: `verdict`; `reasons` (one line per threshold crossed);
    `measures`: `recon_error` (`recon_error_measures`), `embedding` (`embedding_distance`),
    `classes` (when labelled: `classes`, `left_out`, pixel counts; per class `centroid_move`,
    `importance_change`, `importance_top_date` (the date of its largest change) and
    `importance_lag_days` (`importance_lags`, in days); the summaries), `importance` (when
    labelled: `change_by_date (T,)`, the mean over classes; its mean `shift`; `top_dates`, the
    (at most `top_dates`) dates of largest change with their `top_changes`; `lag_days`, the
    median lag; the class-mean importance `reference`, `season (C, D, T)` of the `classes`),
    and the values the thresholds judge under `summary` (the class ones only when labelled);
    `dates` (the season's dates, ISO); `thresholds`; `n_valid` of each season.
    """
    sdims = _spatial_dims(reference, "reference")
    sdims_s = _spatial_dims(season, "season")
    if set(sdims) != set(sdims_s):
        raise InputError(f"season drift: the reference is on {sdims}, the season on {sdims_s}")
    for name in (EMBEDDING, IMPORTANCE):
        for axis in (DIM, TIME) if name == IMPORTANCE else (DIM,):
            if reference[name].sizes[axis] != season[name].sizes[axis]:
                raise InputError(
                    f"season drift: {name} has {reference[name].sizes[axis]} {axis} in the reference and "
                    f"{season[name].sizes[axis]} in the season; explain both with one model (the season "
                    "aligned onto the model's dates)"
                )
    if sample_size < 10:
        raise InputError(f"season drift: sample_size must be at least 10, found {sample_size}")
    labelled = reference_labels is not None and season_labels is not None
    ref_lab = _check_labels(reference_labels, reference[RECON_ERROR], "reference") if labelled else None
    sea_lab = _check_labels(season_labels, season[RECON_ERROR], "season") if labelled else None
    if labelled and class_names is None:
        raise InputError("season drift: labels need class_names (the classes their codes point into)")

    d = reference[EMBEDDING].sizes[DIM]
    ref_x, ref_n = _sample(reference, ref_lab, sdims, sample_size, seed)
    sea_x, sea_n = _sample(season, sea_lab, sdims, sample_size, seed + 1)
    if ref_x.shape[0] < 10 or sea_x.shape[0] < 10:
        raise InputError(
            f"season drift: too few valid pixels to compare ({ref_x.shape[0]} in the reference, "
            f"{sea_x.shape[0]} in the season)"
        )
    recon = recon_error_measures(ref_x[:, d], sea_x[:, d])
    emb = embedding_distance(
        ref_x[:, :d],
        sea_x[:, :d],
        ref_x[:, d + 2 :],
        size=energy_size,
        repeats=null_repeats,
        tile=null_tile,
        seed=seed,
    )
    summary: dict[str, float] = {
        "recon_median_ratio": recon["median_ratio"],
        "recon_share_above_p95": recon["share_above_reference_p95"],
        "embedding_energy_ratio": emb["ratio"],
    }
    measures: dict[str, Any] = {"recon_error": recon, "embedding": emb}
    dates = _iso(season[IMPORTANCE][TIME].values) if TIME in season[IMPORTANCE].coords else []
    if labelled:
        assert ref_lab is not None and sea_lab is not None and class_names is not None
        n_classes = len(class_names)
        ref_sums = _class_sums(reference, ref_lab, sdims, n_classes)
        sea_sums = _class_sums(season, sea_lab, sdims, n_classes)
        cls = class_measures(ref_sums, sea_sums, class_names, min_pixels=thresholds.min_class_pixels)
        if "centroid_move" in cls:
            change = cls.pop("importance_change_by_date")  # (C, T)
            by_date = change.mean(axis=0)  # (T,)
            peak = change.argmax(axis=1)
            cls["importance_top_date"] = {
                name: dates[int(k)] if dates else int(k) for name, k in zip(cls["classes"], peak)
            }
            ri, si = cls.pop("importance_reference"), cls.pop("importance_season")
            order = [int(i) for i in np.argsort(-by_date, kind="stable")[:top_dates] if by_date[i] > 0]
            step = _date_step_days(dates)
            lags = importance_lags(ri, si, min(ri.shape[-1] // 3, max(1, round(max_lag_days / step)))) * step
            cls["importance_lag_days"] = {
                name: (float(v) if np.isfinite(v) else None) for name, v in zip(cls["classes"], lags)
            }
            measures["importance"] = {
                "change_by_date": _nested(by_date),
                "shift": float(by_date.mean()),
                "top_dates": [dates[i] for i in order] if dates else [int(i) for i in order],
                "top_changes": [float(by_date[i]) for i in order],
                "classes": cls["classes"],
                "reference": _nested(ri),
                "season": _nested(si),
            }
            summary["class_centroid_move"] = cls["centroid_move_median"]
            summary["importance_shift"] = measures["importance"]["shift"]
            finite = lags[np.isfinite(lags)]
            summary["importance_lag_days"] = float(np.median(finite)) if finite.size else math.nan
            measures["importance"]["lag_days"] = summary["importance_lag_days"]
        measures["classes"] = cls
    measures["summary"] = summary
    reasons = _reasons(summary, thresholds)
    return {
        "verdict": "retrain" if reasons else "keep",
        "measures": measures,
        "reasons": reasons,
        "dates": dates,
        "thresholds": asdict(thresholds),
        "n_valid": {"reference": int(ref_n), "season": int(sea_n)},
    }


def shared_class_codes(
    reference: tuple[xr.DataArray, Sequence[str]], season: tuple[xr.DataArray, Sequence[str]]
) -> tuple[xr.DataArray, xr.DataArray, list[str]]:
    """Two seasons' class codes, each (codes (*S) int, -1: none; the names they point into),
    recoded into one list of names (sorted union): (reference codes, season codes, names)."""
    names = sorted({str(c) for c in reference[1]} | {str(c) for c in season[1]})
    index = {c: i for i, c in enumerate(names)}
    out = []
    for codes, own in (reference, season):
        lut = np.array([index[str(c)] for c in own] + [-1], dtype=np.int16)  # code -1 -> last entry
        out.append(
            xr.apply_ufunc(
                lambda v, lut=lut: lut[np.where(v < 0, -1, v)], codes, dask="parallelized", output_dtypes=[np.int16]
            )
        )
    return out[0], out[1], names


def parcel_labels(parcels_dir: str | Path, like: xr.Dataset) -> tuple[xr.DataArray, list[str]]:
    """The class codes of `like`'s pixels `(y, x)` (-1: none) and the class names, from the
    parcels the parcels stage of that season used: its output folder's `metrics.json` names
    the parcels file (`parcels_path`), its `id_column`, `class_column` and `all_touched`; the
    parcels are rasterised on `like`'s grid (`slamgeo.jobs.pairs.parcel_class_codes`)."""
    from slamgeo.jobs.pairs import parcel_class_codes  # torch, for pairs: not on the workers' path

    parts, missing = read_parcels_outputs(parcels_dir)
    settings = parts.get("metrics")
    if not settings or not settings.get("parcels_path"):
        why = missing.get("metrics", "metrics.json names no parcels_path")
        raise InputError(f"{parcels_dir}: cannot find the season's parcels ({why})")
    id_column = settings.get("id_column", ID_COLUMN)
    class_column = settings.get("class_column", CLASS_COLUMN)
    gdf = read_parcels(settings["parcels_path"], id_column=id_column, class_column=class_column, crs=like.rio.crs)
    return parcel_class_codes(
        gdf,
        like,
        id_column=id_column,
        class_column=class_column,
        all_touched=bool(settings.get("all_touched", False)),
    )


__all__ = [
    "DriftThresholds",
    "embedding_distance",
    "energy_distance",
    "parcel_labels",
    "recon_error_measures",
    "season_drift",
    "shared_class_codes",
]
