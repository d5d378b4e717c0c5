"""Per-pixel time-series helpers on plain NumPy arrays `(N, C, T)` (pixels, bands, dates).

Pure functions: no xarray, no Dask, no torch. Used by the training sample (`slamgeo.io.sample`)
and by explain (per chunk), so that both treat gaps the same way.
"""

from __future__ import annotations

import numpy as np


def _check_nct(x: np.ndarray, name: str = "x") -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"{name} must have shape (N, C, T), got shape {x.shape}")
    return x


def valid_mask(x: np.ndarray) -> np.ndarray:
    """`(N, C, T)` -> `(N,)` bool: True where a pixel has no NaN in any band or date."""
    x = _check_nct(x)
    return ~np.isnan(x).any(axis=(1, 2))


def fill_gaps(x: np.ndarray, *, max_gap: int | None = None, t: np.ndarray | None = None) -> np.ndarray:
    """Fill NaN gaps along the time axis of `(N, C, T)` dB series, per pixel and band.

    Inside a series a gap is filled by linear interpolation between its two valid neighbours;
    leading and trailing gaps take the nearest valid value (what `np.interp` does). A run of
    more than `max_gap` consecutive missing dates (edges included) stays NaN, and so does a
    band with no valid date. `t` gives the date positions `(T,)` (e.g. days); default:
    equally spaced. Returns a new float32 array; `x` is not modified.
    """
    x = _check_nct(x)
    out = np.array(x, dtype=np.float32, copy=True)
    n, c, T = out.shape
    if out.size == 0:
        return out
    if max_gap is not None and max_gap < 0:
        raise ValueError(f"max_gap must be >= 0 or None, got {max_gap}")
    pos = np.arange(T, dtype=np.float64) if t is None else np.asarray(t, dtype=np.float64)
    if pos.shape != (T,):
        raise ValueError(f"t must have shape ({T},), got {pos.shape}")
    if T > 1 and np.any(np.diff(pos) <= 0):
        raise ValueError("t must be strictly increasing")

    # Vectorised over all (pixel, band) rows instead of a Python loop over np.interp:
    # the index of the previous and of the next valid date of every date, via running max/min.
    rows = out.reshape(n * c, T)
    valid = ~np.isnan(rows)
    if valid.all():
        return out
    idx = np.arange(T)
    prev = np.maximum.accumulate(np.where(valid, idx, -1), axis=1)
    nxt = np.minimum.accumulate(np.where(valid, idx, T)[:, ::-1], axis=1)[:, ::-1]
    has_prev, has_next = prev >= 0, nxt < T
    p, q = np.clip(prev, 0, T - 1), np.clip(nxt, 0, T - 1)
    r = np.arange(n * c)[:, None]
    xp, xq = rows[r, p].astype(np.float64), rows[r, q].astype(np.float64)
    tp, tq, tt = pos[p], pos[q], pos[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(tq > tp, (tt - tp) / np.where(tq > tp, tq - tp, 1.0), 0.0)
    interp = np.where(has_prev & has_next, xp + w * (xq - xp), np.where(has_prev, xp, xq))
    fill = ~valid & (has_prev | has_next)
    if max_gap is not None:
        # length of the run of missing dates each missing date belongs to
        run = np.where(has_prev & has_next, nxt - prev - 1, np.where(has_prev, T - 1 - prev, nxt))
        fill &= run <= max_gap
    rows[fill] = interp[fill].astype(np.float32)
    return out


__all__ = ["fill_gaps", "valid_mask"]
