"""Majority voting, confusion and scores, checked by hand and against scikit-learn."""

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from slamgeo.errors import InputError
from slamgeo.jobs.metrics import (
    UNASSIGNED,
    apply_vote,
    confusion,
    evaluate_parcels,
    majority_vote,
    scores,
    split_parcels,
)

CLASSES = ["beet", "cotton", "pepper", "wheat"]


def _labels(draw_n=st.integers(1, 60)):
    return draw_n.flatmap(
        lambda n: st.tuples(
            st.lists(st.sampled_from(CLASSES), min_size=n, max_size=n),
            st.lists(st.sampled_from(CLASSES), min_size=n, max_size=n),
            st.lists(st.integers(1, 9), min_size=n, max_size=n),
        )
    )


# --------------------------------------------------------------------------- majority voting


def test_majority_vote_hand_built_example():
    clusters = np.array([0, 0, 0, 1, 1, 1, 2, 2, -1, 3])
    labels = np.array(["a", "a", "b", "b", "b", "c", "c", None, "a", ""], dtype=object)
    # cluster 0: a a b -> a; 1: b b c -> b; 2: c (None ignored) -> c; -1 ignored; 3 only unlabelled
    assert majority_vote(clusters, labels) == {0: "a", 1: "b", 2: "c"}


def test_majority_vote_breaks_ties_by_smallest_label():
    assert majority_vote([4, 4, 4, 4], ["z", "b", "z", "b"]) == {4: "b"}


def test_majority_vote_weights_count_as_units():
    # one parcel of 5 pixels of "a" beats two parcels of 1 pixel of "b" when voting by pixels
    assert majority_vote([0, 0, 0], ["a", "b", "b"], weights=[5, 1, 1]) == {0: "a"}
    assert majority_vote([0, 0, 0], ["a", "b", "b"]) == {0: "b"}


def test_apply_vote_marks_clusters_without_class_unassigned():
    out = apply_vote(np.array([0, 1, 2, -1]), {0: "a", 2: "c"})
    assert out.tolist() == ["a", UNASSIGNED, "c", UNASSIGNED]


# --------------------------------------------------------------------------- confusion and scores


@settings(max_examples=40, deadline=None)
@given(_labels())
def test_confusion_counts_equal_sklearn(data):
    y_true, y_pred, w = data
    cm = confusion(y_true, y_pred, CLASSES, sample_weight=w)
    ref = skm.confusion_matrix(y_true, y_pred, labels=CLASSES, sample_weight=w)
    np.testing.assert_allclose(cm["counts"].values, ref)
    assert cm["counts"].dims == ("true", "predicted")


@settings(max_examples=40, deadline=None)
@given(_labels())
def test_confusion_percent_is_row_normalised(data):
    y_true, y_pred, _ = data
    cm = confusion(y_true, y_pred, CLASSES)
    ref = skm.confusion_matrix(y_true, y_pred, labels=CLASSES, normalize="true") * 100
    rows = cm["counts"].values.sum(1) > 0
    np.testing.assert_allclose(cm["percent"].values[rows], ref[rows])
    assert np.isnan(cm["percent"].values[~rows]).all()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
@settings(max_examples=40, deadline=None)
@given(_labels())
def test_scores_equal_sklearn(data):
    y_true, y_pred, w = data
    s = scores(y_true, y_pred, CLASSES, sample_weight=w)
    assert s["overall_accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred, sample_weight=w))
    kappa = skm.cohen_kappa_score(y_true, y_pred, labels=CLASSES, sample_weight=w)
    if np.isfinite(kappa):  # sklearn gives NaN when expected agreement is 1
        assert s["kappa"] == pytest.approx(kappa, abs=1e-12)
    p, r, f, sup = skm.precision_recall_fscore_support(y_true, y_pred, labels=CLASSES, sample_weight=w, zero_division=0)
    for i, c in enumerate(CLASSES):
        assert s["per_class"][c]["precision"] == pytest.approx(p[i])
        assert s["per_class"][c]["recall"] == pytest.approx(r[i])
        assert s["per_class"][c]["f1"] == pytest.approx(f[i])
        assert s["per_class"][c]["support"] == pytest.approx(np.asarray(w)[np.asarray(y_true) == c].sum())


def test_unassigned_predictions_count_as_errors():
    y_true = ["a", "a", "b", "b", "b", "c"]
    y_pred = ["a", UNASSIGNED, "b", "a", UNASSIGNED, "c"]
    s = scores(y_true, y_pred, ["a", "b", "c"])
    labels = ["a", "b", "c", UNASSIGNED]
    assert s["overall_accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert s["kappa"] == pytest.approx(skm.cohen_kappa_score(y_true, y_pred, labels=labels))
    r = skm.recall_score(y_true, y_pred, labels=["a", "b", "c"], average=None, zero_division=0)
    assert [s["per_class"][c]["recall"] for c in "abc"] == pytest.approx(r)
    cm = confusion(y_true, y_pred, ["a", "b", "c"])
    assert cm["unassigned"].values.tolist() == [1, 1, 0]
    assert cm["percent"].sel(true="b", predicted="b").item() == pytest.approx(100 / 3)


def test_confusion_refuses_reference_labels_outside_the_classes():
    with pytest.raises(InputError, match="not among the classes"):
        confusion(["a", "x"], ["a", "a"], ["a", "b"])


# --------------------------------------------------------------------------- split by parcel


def test_split_parcels_is_a_partition_of_the_ids():
    ids = np.arange(10, 110)
    train, test = split_parcels(ids, test_fraction=0.3, seed=1)
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), ids)
    assert test.size == 30


def test_split_parcels_is_deterministic_for_a_seed():
    ids = np.arange(1, 51)
    a, b, c = (split_parcels(ids, seed=s)[1] for s in (3, 3, 4))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_split_parcels_stratifies_by_class():
    labels = np.array(["a"] * 20 + ["b"] * 10 + ["c"] * 2 + ["d"])
    ids = np.arange(1, labels.size + 1)
    train, test = split_parcels(ids, labels=labels, test_fraction=0.3, seed=0)
    lab = pd.Series(labels, index=ids)
    assert lab[test].value_counts().to_dict() == {"a": 6, "b": 3, "c": 1}
    assert "d" in set(lab[train])  # a class of one parcel stays in train, so it can vote


# --------------------------------------------------------------------------- per-parcel evaluation


def _per_parcel(cluster_pixels: np.ndarray) -> xr.Dataset:
    cp = np.asarray(cluster_pixels)
    ids = np.arange(1, cp.shape[0] + 1)
    majority = np.where(cp.sum(1) > 0, cp.argmax(1), -1)
    return xr.Dataset(
        {"cluster_pixels": (("parcel", "centre"), cp), "cluster": (("parcel",), majority)},
        coords={"parcel": ids, "centre": np.arange(cp.shape[1])},
    )


def test_evaluate_by_pixels_and_by_parcels_can_disagree(monkeypatch):
    # cluster 0: parcel 1 (class a, 10 pixels) vs parcels 2 and 3 (class b, 3 pixels each)
    cp = np.zeros((3, 2), dtype=int)
    cp[0, 0], cp[1, 0], cp[2, 0] = 10, 3, 3
    labels = pd.Series(["a", "b", "b"], index=[1, 2, 3], dtype=object)
    per = _per_parcel(cp)
    # vote and evaluate on the same three parcels, so the vote alone makes the difference
    from slamgeo.jobs import metrics

    monkeypatch.setattr(metrics, "split_parcels", lambda ids, **kw: (np.sort(ids), np.sort(ids)))
    by_pixels = evaluate_parcels(per, labels, vote="pixels")
    by_parcels = evaluate_parcels(per, labels, vote="parcels")
    assert by_pixels.mapping == {0: "a"}
    assert by_parcels.mapping == {0: "b"}
    # pixel-level scores weigh pixels: 10 of 16 pixels right with the pixel vote
    assert by_pixels.scores_pixels["overall_accuracy"] == pytest.approx(10 / 16)
    assert by_parcels.scores_parcels["overall_accuracy"] == pytest.approx(2 / 3)


def test_evaluate_holds_out_parcels_of_every_class():
    rng = np.random.default_rng(0)
    n = 40
    labels = pd.Series(np.array(["a", "b"])[np.arange(n) % 2], index=np.arange(1, n + 1), dtype=object)
    cp = np.zeros((n, 3), dtype=int)
    cp[np.arange(n), np.arange(n) % 2] = rng.integers(5, 20, n)
    ev = evaluate_parcels(_per_parcel(cp), labels, vote="pixels", test_fraction=0.25, seed=2)
    assert ev.test_ids.size == 10 and np.intersect1d(ev.train_ids, ev.test_ids).size == 0
    assert ev.mapping == {0: "a", 1: "b"}
    assert ev.scores_pixels["overall_accuracy"] == 1.0
    assert ev.scores_pixels["n"] == cp[ev.test_ids - 1].sum()


def test_split_parcels_with_test_fraction_0_holds_nothing_out():
    labels = np.array(["a"] * 5 + ["b"] * 2)
    ids = np.arange(1, labels.size + 1)
    train, test = split_parcels(ids, labels=labels, test_fraction=0.0)
    assert np.array_equal(train, ids) and test.size == 0


def test_split_parcels_refuses_a_fraction_outside_0_1():
    for bad in (-0.1, 1.0):
        with pytest.raises(InputError, match=r"test_fraction must be in \[0, 1\)"):
            split_parcels(np.arange(1, 5), test_fraction=bad)


def _two_class_parcels(n: int):
    labels = pd.Series(np.array(["a", "b"])[np.arange(n) % 2], index=np.arange(1, n + 1), dtype=object)
    cp = np.zeros((n, 2), dtype=int)
    cp[np.arange(n), np.arange(n) % 2] = 7
    cp[0, 1] = 3  # parcel 1 (class a): 3 of its 10 pixels in the cluster voted b
    return labels, cp


@pytest.mark.parametrize(
    "n, test_fraction, why", [(2, 0.3, "too few parcels: 2 labelled"), (6, 0.0, "test_fraction is 0")]
)
def test_evaluate_with_no_parcel_held_out_scores_all_parcels_and_says_so(n, test_fraction, why):
    from slamgeo.jobs.metrics import ALL_PARCELS, EvaluationWarning

    labels, cp = _two_class_parcels(n)
    with pytest.warns(EvaluationWarning, match=f"no parcel held out \\({why}"):
        ev = evaluate_parcels(_per_parcel(cp), labels, vote="pixels", test_fraction=test_fraction)
    assert ev.test_ids.size == 0 and np.array_equal(ev.train_ids, labels.index.to_numpy())
    assert ev.evaluated_on == ALL_PARCELS and ev.held_out == 0
    # every parcel scored: the 3 pixels of parcel 1 in the cluster voted b are wrong, all others right
    assert ev.scores_pixels["n"] == cp.sum()
    assert ev.scores_pixels["overall_accuracy"] == pytest.approx(1 - 3 / cp.sum())
    assert ev.scores_parcels["n"] == n and ev.scores_parcels["overall_accuracy"] == 1.0
    d = ev.to_dict()
    assert d["held_out"] == 0 and d["n_test_parcels"] == 0 and d["evaluated_on"] == ALL_PARCELS
    assert "optimistic" in d["note"]


def test_evaluate_with_held_out_parcels_says_so():
    from slamgeo.jobs.metrics import HELD_OUT

    labels, cp = _two_class_parcels(20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ev = evaluate_parcels(_per_parcel(cp), labels, test_fraction=0.3)
    d = ev.to_dict()
    assert d["held_out"] == ev.test_ids.size == 6 and d["evaluated_on"] == HELD_OUT and "note" not in d
