"""Re-running a model on another season: resample each pixel's series onto the model's dates.

Sentinel-1 acquisition dates move from year to year (and the revisit went from 6 to 12 days
when Sentinel-1B failed in December 2021). A model trained on one date grid needs its inputs on
that grid: each model date is mapped to the same day of the year in the new season (the
season is shifted by whole years), and each pixel's series is interpolated linearly in time
between its two nearest valid observations around that day. When these observations are more
than `max_gap_days` apart (or the day lies outside the observed span by more than half of
it), the value is NaN: the pixel has no data there, and explain leaves it NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from slamgeo.errors import InputError
from slamgeo.io.cube import spatial_dims
from slamgeo.schema import BANDS, MAX_GAP_DAYS


def year_shift(model_dates: np.ndarray, season_dates: np.ndarray) -> int:
    """Whole years between the model's season and the new one (by their middle dates)."""
    m = pd.DatetimeIndex(model_dates)
    s = pd.DatetimeIndex(season_dates)
    mid_m = m[0] + (m[-1] - m[0]) / 2
    mid_s = s[0] + (s[-1] - s[0]) / 2
    return int(round((mid_s - mid_m).days / 365.25))


def model_dates_in_season(model_dates: np.ndarray, season_dates: np.ndarray) -> np.ndarray:
    """The model's dates moved by whole years into the new season: `(T_model,)` datetime64[ns]."""
    k = year_shift(model_dates, season_dates)
    moved = pd.DatetimeIndex(model_dates) + pd.DateOffset(years=k)
    return moved.values.astype("datetime64[ns]")


def resample_series(
    x: np.ndarray, src_days: np.ndarray, dst_days: np.ndarray, *, max_gap_days: float = MAX_GAP_DAYS
) -> np.ndarray:
    """Interpolate `(N, C, Ts)` series observed at `src_days` onto `dst_days` -> `(N, C, Td)`.

    Linear in time between the nearest valid (non-NaN) observations before and after each
    target day; NaN where those are more than `max_gap_days` apart, and beyond the first or
    last valid observation by more than `max_gap_days / 2`. Days are floats (any origin).
    Vectorised over all rows with running indices instead of a Python loop over `np.interp`,
    because NaN positions differ per row.
    """
    x = np.asarray(x, dtype=np.float32)
    src = np.asarray(src_days, dtype=np.float64)
    dst = np.asarray(dst_days, dtype=np.float64)
    if x.ndim != 3 or x.shape[-1] != src.size:
        raise InputError(f"expected series (N, C, {src.size}), got shape {x.shape}")
    if src.size and np.any(np.diff(src) <= 0):
        raise InputError("source dates must be strictly increasing")
    n, c, ts = x.shape
    rows = x.reshape(n * c, ts)
    valid = ~np.isnan(rows)
    idx = np.arange(ts)
    prev = np.maximum.accumulate(np.where(valid, idx, -1), axis=1)  # last valid index <= j
    nxt = np.minimum.accumulate(np.where(valid, idx, ts)[:, ::-1], axis=1)[:, ::-1]  # first valid >= j
    # bracketing source positions of each target day
    right = np.searchsorted(src, dst, side="left")  # first src >= dst
    left = right - 1
    exact = (right < ts) & (src[np.clip(right, 0, ts - 1)] == dst)
    left = np.where(exact, right, left)
    r = np.arange(n * c)[:, None]
    p = np.where(left[None, :] >= 0, prev[:, np.clip(left, 0, ts - 1)], -1)
    q = np.where(right[None, :] < ts, nxt[:, np.clip(right, 0, ts - 1)], ts)
    has_p, has_q = p >= 0, q < ts
    pi, qi = np.clip(p, 0, ts - 1), np.clip(q, 0, ts - 1)
    xp, xq = rows[r, pi].astype(np.float64), rows[r, qi].astype(np.float64)
    tp, tq = src[pi], src[qi]
    t = dst[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(tq > tp, (t - tp) / (tq - tp), 0.0)
    both = has_p & has_q
    out = np.where(both, xp + w * (xq - xp), np.nan)
    out = np.where(both & (tq - tp > max_gap_days), np.nan, out)
    # beyond the observed span: the nearest value, if close enough
    half = max_gap_days / 2
    out = np.where(has_p & ~has_q & (t - tp <= half), xp, out)
    out = np.where(~has_p & has_q & (tq - t <= half), xq, out)
    return out.astype(np.float32).reshape(n, c, dst.size)


def check_coverage(
    model_dates: np.ndarray,
    season_dates: np.ndarray,
    *,
    max_gap_days: float = MAX_GAP_DAYS,
    where: str = "season",
) -> None:
    """Refuse a season whose acquisitions cannot reach every model date within the gap limit."""
    target = model_dates_in_season(model_dates, season_dates)
    src = _days(season_dates, target[0])
    dst = _days(target, target[0])
    probe = resample_series(np.zeros((1, 1, src.size), np.float32), src, dst, max_gap_days=max_gap_days)[0, 0]
    missing = np.flatnonzero(np.isnan(probe))
    if missing.size:
        first = [str(target[i])[:10] for i in missing[:5]]
        raise InputError(
            f"{where}: acquisitions {str(season_dates[0])[:10]}..{str(season_dates[-1])[:10]} "
            f"({len(season_dates)} dates) do not cover {missing.size} of the model's {len(target)} dates "
            f"within {max_gap_days} days (first: {', '.join(first)}); the season is too short or too sparse for this model"
        )


def _days(dates: np.ndarray, origin) -> np.ndarray:
    return (np.asarray(dates, dtype="datetime64[ns]") - np.datetime64(origin, "ns")) / np.timedelta64(1, "D")


def resample_cube(
    cube: xr.Dataset, model_dates: np.ndarray, *, bands=BANDS, max_gap_days: float = MAX_GAP_DAYS
) -> xr.Dataset:
    """A cube on the model's date grid (moved into the cube's season), lazily per spatial chunk.

    Refuses a season that cannot cover the grid. Attributes record the resampling.
    """
    season_dates = cube["time"].values
    check_coverage(model_dates, season_dates, max_gap_days=max_gap_days)
    target = model_dates_in_season(model_dates, season_dates)
    src, dst = _days(season_dates, target[0]), _days(target, target[0])
    sdims = spatial_dims(cube)

    def per_band(a: np.ndarray) -> np.ndarray:  # (..., Ts) -> (..., Td)
        shp = a.shape[:-1]
        flat = a.reshape(-1, 1, a.shape[-1])
        return resample_series(flat, src, dst, max_gap_days=max_gap_days).reshape(*shp, dst.size)

    out = {}
    for b in bands:
        da_ = xr.apply_ufunc(
            per_band,
            cube[b].chunk({"time": -1}),
            input_core_dims=[["time"]],
            output_core_dims=[["new_time"]],
            dask="parallelized",
            output_dtypes=[np.float32],
            dask_gufunc_kwargs={"output_sizes": {"new_time": dst.size}},
        )
        out[b] = da_.rename(new_time="time").transpose("time", *sdims)
        out[b].attrs = dict(cube[b].attrs)
    coords = {k: v for k, v in cube.coords.items() if "time" not in v.dims}
    ds = xr.Dataset(out, coords={**coords, "time": target})
    ds.attrs = dict(cube.attrs)
    ds.attrs.update(
        resampled_to_model_dates=1,
        resampling=f"linear in time onto the model's day-of-year grid, gaps up to {max_gap_days} days bridged",
        max_gap_days=float(max_gap_days),
        source_dates=",".join(str(d)[:10] for d in season_dates),
    )
    for b in bands:
        if "grid_mapping" in cube[b].encoding:
            ds[b].encoding["grid_mapping"] = cube[b].encoding["grid_mapping"]
    return ds


__all__ = [
    "check_coverage",
    "model_dates_in_season",
    "resample_cube",
    "resample_series",
    "year_shift",
]
