"""Per-pixel series helpers, checked against np.interp and pandas."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from slamgeo.io.series import fill_gaps, valid_mask


def _series_with_gaps(draw_shape=(st.integers(1, 4), st.integers(1, 3), st.integers(1, 20))):
    return st.tuples(*draw_shape).flatmap(
        lambda s: st.tuples(
            arrays(np.float32, s, elements=st.floats(-30, 5, width=32)),
            arrays(np.bool_, s),
        )
    )


def _reference_fill(row: np.ndarray, pos: np.ndarray, max_gap: int | None) -> np.ndarray:
    """One series, with np.interp (linear inside, nearest at the edges) and explicit runs."""
    ok = ~np.isnan(row)
    if not ok.any():
        return row.copy()
    filled = np.interp(pos, pos[ok], row[ok].astype(np.float64)).astype(np.float32)
    if max_gap is not None:
        i = 0
        while i < row.size:
            if ok[i]:
                i += 1
                continue
            j = i
            while j < row.size and not ok[j]:
                j += 1
            if j - i > max_gap:
                filled[i:j] = np.nan
            i = j
    return filled


@settings(max_examples=60, deadline=None)
@given(_series_with_gaps(), st.one_of(st.none(), st.integers(0, 6)))
def test_fill_gaps_matches_np_interp_per_series(data, max_gap):
    values, missing = data
    x = np.where(missing, np.nan, values).astype(np.float32)
    got = fill_gaps(x, max_gap=max_gap)
    pos = np.arange(x.shape[2], dtype=np.float64)
    for i in range(x.shape[0]):
        for b in range(x.shape[1]):
            np.testing.assert_allclose(got[i, b], _reference_fill(x[i, b], pos, max_gap), rtol=1e-5, atol=1e-4)


def test_fill_gaps_matches_pandas_interpolate():
    rng = np.random.default_rng(1)
    x = rng.normal(-12, 3, size=(50, 2, 30)).astype(np.float32)
    x[rng.random(x.shape) < 0.3] = np.nan
    x[:, :, 0] = rng.normal(-12, 3, size=(50, 2))  # a valid first date, so pandas' bfill is not needed
    got = fill_gaps(x)
    ref = pd.DataFrame(x.reshape(-1, 30).T.astype(np.float64)).interpolate(limit_direction="both").to_numpy()
    np.testing.assert_allclose(got.reshape(-1, 30).T, ref, rtol=1e-5, atol=1e-4)


def test_fill_gaps_uses_date_positions():
    x = np.array([[[0.0, np.nan, 10.0]]], dtype=np.float32)
    got = fill_gaps(x, t=np.array([0.0, 8.0, 10.0]))
    assert got[0, 0, 1] == pytest.approx(8.0)


def test_all_nan_band_stays_nan_and_other_band_is_filled():
    x = np.full((1, 2, 5), np.nan, dtype=np.float32)
    x[0, 1] = [1, np.nan, 3, np.nan, np.nan]
    got = fill_gaps(x)
    assert np.isnan(got[0, 0]).all()
    np.testing.assert_array_equal(got[0, 1], [1, 2, 3, 3, 3])


def test_gap_longer_than_max_gap_stays_nan():
    x = np.array([[[1, np.nan, np.nan, np.nan, 5, np.nan, 7]]], dtype=np.float32)
    got = fill_gaps(x, max_gap=2)
    np.testing.assert_array_equal(np.isnan(got[0, 0]), [False, True, True, True, False, False, False])
    assert got[0, 0, 5] == pytest.approx(6.0)


def test_fill_gaps_does_not_modify_input():
    x = np.array([[[1, np.nan, 3]]], dtype=np.float32)
    fill_gaps(x)
    assert np.isnan(x[0, 0, 1])


def test_valid_mask_is_true_only_without_nan():
    x = np.zeros((3, 2, 4), dtype=np.float32)
    x[1, 1, 3] = np.nan
    x[2, 0, 0] = np.nan
    np.testing.assert_array_equal(valid_mask(x), [True, False, False])


def test_wrong_rank_is_refused():
    with pytest.raises(ValueError, match=r"\(N, C, T\)"):
        valid_mask(np.zeros((3, 4)))
