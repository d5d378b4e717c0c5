"""Season resampling onto the model's date grid, against a brute-force loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import class_cube
from hypothesis import given, settings
from hypothesis import strategies as st

from slamgeo.errors import InputError
from slamgeo.jobs.season import check_coverage, model_dates_in_season, resample_cube, resample_series


def brute_force(x, src, dst, max_gap):
    """One series, one target at a time, the definition written out."""
    n, c, _ = x.shape
    out = np.full((n, c, len(dst)), np.nan)
    for i in range(n):
        for b in range(c):
            ok = ~np.isnan(x[i, b])
            ts, vs = src[ok], x[i, b, ok]
            for j, t in enumerate(dst):
                before, after = ts[ts <= t], ts[ts >= t]
                if before.size and after.size:
                    t0, t1 = before[-1], after[0]
                    if t1 - t0 <= max_gap:
                        out[i, b, j] = np.interp(t, ts, vs)
                elif before.size and t - before[-1] <= max_gap / 2:
                    out[i, b, j] = vs[-1]
                elif after.size and after[0] - t <= max_gap / 2:
                    out[i, b, j] = vs[0]
    return out


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_src=st.integers(2, 30),
    nan_frac=st.floats(0, 0.6),
    max_gap=st.floats(3, 40),
)
def test_resample_matches_brute_force(seed, n_src, nan_frac, max_gap):
    rng = np.random.default_rng(seed)
    src = np.sort(rng.choice(np.arange(0, 200), n_src, replace=False)).astype(float)
    dst = np.sort(rng.uniform(-20, 220, 17))
    x = rng.normal(-15, 3, (4, 2, n_src)).astype(np.float32)
    x[rng.random(x.shape) < nan_frac] = np.nan
    got = resample_series(x, src, dst, max_gap_days=max_gap)
    np.testing.assert_allclose(got, brute_force(x, src, dst, max_gap), rtol=1e-5, atol=1e-4, equal_nan=True)


def test_twelve_day_revisit_with_missing_dates_maps_onto_a_six_day_grid():
    model = pd.date_range("2017-01-03", periods=61, freq="6D").values
    season = pd.date_range("2022-01-05", periods=31, freq="12D").delete([7]).values
    target = model_dates_in_season(model, season)
    assert str(target[0])[:10] == "2022-01-03"
    check_coverage(model, season, max_gap_days=25)  # 24-day hole is bridged
    with pytest.raises(InputError, match="do not cover"):
        check_coverage(model, season, max_gap_days=20)


def test_a_season_too_short_is_refused():
    model = pd.date_range("2017-01-03", periods=61, freq="6D").values
    season = pd.date_range("2018-03-01", periods=20, freq="6D").values
    with pytest.raises(InputError, match="too short"):
        check_coverage(model, season)


def test_resample_cube_is_lazy_and_equal_to_the_series_function():
    cube, _ = class_cube(ny=16, nx=12, n_times=30, chunk=8)
    cube = cube.assign_coords(time=pd.date_range("2018-01-06", periods=30, freq="12D").values)
    model = pd.date_range("2017-01-03", periods=61, freq="6D").values
    out = resample_cube(cube, model, max_gap_days=25)
    assert out["VV"].chunks is not None and out.sizes["time"] == 61
    assert out.rio.crs == cube.rio.crs
    x = np.stack([cube[b].values for b in ("VV", "VH")], 0).reshape(2, 30, -1).transpose(2, 0, 1)
    src = (cube["time"].values - out["time"].values[0]) / np.timedelta64(1, "D")
    dst = (out["time"].values - out["time"].values[0]) / np.timedelta64(1, "D")
    want = resample_series(x, src, dst, max_gap_days=25)
    got = np.stack([out[b].values for b in ("VV", "VH")], 0).reshape(2, 61, -1).transpose(2, 0, 1)
    np.testing.assert_array_equal(got, want)
