"""Majority voting of clusters into classes, the split by parcel, the confusion matrix and the
accuracy figures (overall accuracy, Cohen's kappa, per-class precision, recall and F1).

The figures are computed from one (weighted) confusion matrix, so that pixel-level figures over
millions of pixels come from per-parcel cluster counts without expanding them to pixels; the
tests check every one against scikit-learn on the same labels.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from slamgeo.errors import InputError
from slamgeo.schema import TEST_FRACTION, UNASSIGNED, VOTE, VOTE_UNITS, VoteUnit

HELD_OUT = "held-out parcels"
ALL_PARCELS = "all labelled parcels (none held out)"


class EvaluationWarning(UserWarning):
    """The figures are not what was asked for (no parcel could be held out), but were computed."""


def _labelled(labels: np.ndarray) -> np.ndarray:
    s = pd.Series(labels, dtype=object)
    return ~(s.isna() | (s.astype(str) == "")).to_numpy()


def majority_vote(
    clusters: np.ndarray | Sequence[int],
    labels: np.ndarray | Sequence,
    *,
    weights: np.ndarray | Sequence[float] | None = None,
) -> dict[int, Hashable]:
    """Assign each cluster the most frequent label among its units (pixels or parcels).

    `clusters (n,)` int (negative = no cluster, ignored), `labels (n,)` (null or "" =
    unlabelled, ignored), `weights (n,)` optional counts (for example pixels per (parcel,
    cluster) pair). Ties go to the smallest label (sorted order). Clusters with no labelled
    unit are absent from the result.
    """
    clusters = np.asarray(clusters)
    labels = np.asarray(labels, dtype=object)
    w = np.ones(clusters.shape, dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64)
    if not (clusters.shape == labels.shape == w.shape) or clusters.ndim != 1:
        raise InputError(
            f"majority_vote: clusters, labels and weights must be 1-D of one length, found "
            f"{clusters.shape}, {labels.shape}, {w.shape}"
        )
    keep = (clusters >= 0) & _labelled(labels) & (w > 0)
    if not keep.any():
        return {}
    classes, codes = np.unique(labels[keep], return_inverse=True)  # sorted: argmax picks the smallest on ties
    ids, cl_codes = np.unique(clusters[keep], return_inverse=True)
    table = np.zeros((ids.size, classes.size))
    np.add.at(table, (cl_codes, codes), w[keep])
    return {int(c): classes[j] for c, j in zip(ids, table.argmax(1))}


def apply_vote(clusters: np.ndarray, mapping: dict[int, Hashable], *, unassigned=UNASSIGNED) -> np.ndarray:
    """The class of each unit's cluster (object array); `unassigned` where the cluster has none."""
    clusters = np.asarray(clusters)
    out = np.full(clusters.shape, unassigned, dtype=object)
    for c, label in mapping.items():
        out[clusters == c] = label
    return out


def _index(values: np.ndarray, classes: Sequence, what: str, *, allow_other: bool) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    idx = np.array([lookup.get(v, -1) for v in values], dtype=np.int64)
    if not allow_other and (idx < 0).any():
        bad = sorted({str(v) for v in values[idx < 0]})[:10]
        raise InputError(f"{what}: label(s) {bad} are not among the classes {list(classes)}")
    return idx


def confusion(
    y_true: np.ndarray | Sequence,
    y_pred: np.ndarray | Sequence,
    classes: Sequence,
    *,
    sample_weight: np.ndarray | Sequence[float] | None = None,
) -> xr.Dataset:
    """Confusion matrix on `classes`: `counts (true, predicted)` (weighted if `sample_weight`),
    `percent (true, predicted)` each row normalised to 100 (the paper's Fig. 3; NaN for a class
    with no reference unit), and `unassigned (true)`: units whose prediction is not one of the
    classes (a cluster no class voted for), counted in the row totals, so they count as errors.
    Every `y_true` must be one of `classes`.
    """
    y_true = np.asarray(y_true, dtype=object)
    y_pred = np.asarray(y_pred, dtype=object)
    classes = list(classes)
    if y_true.shape != y_pred.shape:
        raise InputError(f"confusion: y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}")
    w = np.ones(y_true.shape) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    t = _index(y_true, classes, "confusion: y_true", allow_other=False)
    p = _index(y_pred, classes, "confusion: y_pred", allow_other=True)
    k = len(classes)
    counts = np.zeros((k, k + 1))  # last column: predictions outside the classes
    np.add.at(counts, (t, np.where(p < 0, k, p)), w)
    rows = counts.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        percent = np.where(rows > 0, 100.0 * counts[:, :k] / np.where(rows > 0, rows, 1), np.nan)
    if sample_weight is None or np.all(np.mod(w, 1) == 0):  # pixel counts stay integers
        counts = counts.astype(np.int64)
    cls = np.asarray(classes, dtype=object)
    return xr.Dataset(
        {
            "counts": (("true", "predicted"), counts[:, :k], {"long_name": "reference class (rows) vs predicted"}),
            "percent": (("true", "predicted"), percent, {"units": "%", "long_name": "row-normalised confusion"}),
            UNASSIGNED: (("true",), counts[:, k], {"long_name": "units predicted as no class"}),
        },
        coords={"true": cls, "predicted": cls},
    )


def scores_from_confusion(cm: xr.Dataset) -> dict:
    """Overall accuracy, Cohen's kappa, per-class precision / recall / F1 / support and macro
    F1 from a `confusion()` Dataset. A ratio with a zero denominator is 0 (scikit-learn's
    `zero_division=0`)."""
    c = cm["counts"].values.astype(np.float64)
    un = cm[UNASSIGNED].values.astype(np.float64)
    n = c.sum() + un.sum()
    if n == 0:
        raise InputError("scores: no labelled unit to evaluate")
    diag = np.diag(c)
    rows = c.sum(1) + un  # reference totals
    cols = c.sum(0)  # predicted totals (the unassigned column has no reference row)
    po = diag.sum() / n
    pe = (rows * cols).sum() / n**2
    kappa = float((po - pe) / (1 - pe)) if pe < 1 else (1.0 if po == 1 else 0.0)

    def ratio(a, b):
        return np.divide(a, b, out=np.zeros_like(a), where=b > 0)

    precision, recall = ratio(diag, cols), ratio(diag, rows)
    f1 = ratio(2 * precision * recall, precision + recall)
    classes = [str(v) for v in cm["true"].values]
    per_class = {
        cl: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": float(rows[i]),
        }
        for i, cl in enumerate(classes)
    }
    present = rows > 0
    return {
        "overall_accuracy": float(po),
        "kappa": kappa,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "n": float(n),
        "unassigned": float(un.sum()),
        "per_class": per_class,
    }


def scores(
    y_true: np.ndarray | Sequence,
    y_pred: np.ndarray | Sequence,
    classes: Sequence,
    *,
    sample_weight: np.ndarray | Sequence[float] | None = None,
) -> dict:
    """`scores_from_confusion(confusion(y_true, y_pred, classes, sample_weight=...))`."""
    return scores_from_confusion(confusion(y_true, y_pred, classes, sample_weight=sample_weight))


def check_vote(vote: str, *, option: str = "vote") -> None:
    """Raise `InputError` unless `vote` is a voting unit (`VOTE_UNITS`); `option` names it."""
    if vote not in VOTE_UNITS:
        raise InputError(f"{option} must be {' or '.join(map(repr, VOTE_UNITS))}, found {vote!r}")


def split_parcels(
    parcel_ids: np.ndarray | Sequence[int],
    *,
    labels: np.ndarray | Sequence | None = None,
    test_fraction: float = TEST_FRACTION,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split parcels (never pixels) into sorted (train_ids, test_ids).

    With `labels`, stratified: in each class, round(test_fraction * n) parcels go to test, but a
    class with at least 2 parcels keeps one on each side, and a class of 1 stays in train (it
    must be able to vote). `test_fraction=0` holds nothing out (every parcel in train).
    Hand-written rather than scikit-learn's `train_test_split`, which refuses classes of one
    parcel. Deterministic for `seed`.
    """
    ids = np.asarray(parcel_ids)
    if not 0.0 <= test_fraction < 1.0:
        raise InputError(f"split_parcels: test_fraction must be in [0, 1), found {test_fraction}")
    if np.unique(ids).size != ids.size:
        raise InputError("split_parcels: duplicated parcel ids")
    groups = (
        np.zeros(ids.size, dtype=np.int64)
        if labels is None
        else np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)[1]
    )
    rng = np.random.default_rng(seed)
    test = np.zeros(ids.size, dtype=bool)
    for g in np.unique(groups):
        members = np.sort(ids[groups == g])
        n = members.size
        n_test = int(round(test_fraction * n))
        if n >= 2 and test_fraction > 0:
            n_test = min(max(n_test, 1), n - 1)
        else:
            n_test = 0
        chosen = rng.permutation(members)[:n_test]
        test[np.isin(ids, chosen)] = True
    return np.sort(ids[~test]), np.sort(ids[test])


# --------------------------------------------------------------------------- per-parcel evaluation


@dataclass
class Evaluation:
    """What `evaluate_parcels` found: the cluster -> class mapping, the split, and the
    confusion matrices and scores at the pixel level (held-out parcels' pixels) and at the
    parcel level (each held-out parcel's majority cluster). `evaluated_on` says which parcels
    were scored (`HELD_OUT`, or `ALL_PARCELS` when none could be held out), `note` why."""

    vote: str
    mapping: dict[int, Hashable]
    classes: list
    train_ids: np.ndarray
    test_ids: np.ndarray
    confusion_pixels: xr.Dataset
    confusion_parcels: xr.Dataset
    scores_pixels: dict
    scores_parcels: dict
    predicted: pd.Series = field(default_factory=pd.Series)
    evaluated_on: str = HELD_OUT
    note: str = ""

    @property
    def held_out(self) -> int:
        """Number of parcels held out of the vote (0: the scores are on the voting parcels)."""
        return 0 if self.evaluated_on == ALL_PARCELS else int(self.test_ids.size)

    def to_dict(self) -> dict:
        return {
            "vote": self.vote,
            "cluster_class": {str(k): str(v) for k, v in sorted(self.mapping.items())},
            "classes": [str(c) for c in self.classes],
            "n_train_parcels": int(self.train_ids.size),
            "n_test_parcels": int(self.test_ids.size),
            "held_out": self.held_out,
            "evaluated_on": self.evaluated_on,
            **({"note": self.note} if self.note else {}),
            "pixels": self.scores_pixels,
            "parcels": self.scores_parcels,
        }


def evaluate_parcels(
    per_parcel: xr.Dataset,
    labels: pd.Series,
    *,
    vote: VoteUnit = VOTE,
    test_fraction: float = TEST_FRACTION,
    seed: int = 0,
) -> Evaluation:
    """Vote on the training parcels, evaluate on the held-out ones.

    When no parcel is held out (`test_fraction=0`, or every class has a single parcel), the
    scores are computed on all labelled parcels, those that voted, with an
    `EvaluationWarning`; `Evaluation.evaluated_on` and `note` say so, `test_ids` is empty.
    `per_parcel` needs `cluster_pixels (parcel, centre)` and `cluster (parcel)` (from
    `aggregate_parcels`); `labels` the class per parcel id (null or "" = unlabelled, left out).
    `vote="pixels"`: each labelled pixel of a training parcel votes for its cluster;
    `vote="parcels"`: each training parcel votes once, with its majority cluster.
    """
    check_vote(vote)
    if "cluster_pixels" not in per_parcel:
        raise InputError("evaluate_parcels: no cluster counts per parcel; run `slamgeo cluster` first")
    ids = per_parcel["parcel"].values
    lab = labels.reindex(ids)
    has_pixels = per_parcel["cluster_pixels"].values.sum(1) > 0
    use = _labelled(lab.to_numpy()) & has_pixels
    if not use.any():
        raise InputError("evaluate_parcels: no labelled parcel has clustered pixels on the grid")
    classes = sorted(pd.unique(lab[use]).tolist())
    train_ids, test_ids = split_parcels(ids[use], labels=lab[use].to_numpy(), test_fraction=test_fraction, seed=seed)
    evaluated_on, note, scored_ids = HELD_OUT, "", test_ids
    if test_ids.size == 0:
        why = (
            "test_fraction is 0"
            if test_fraction == 0
            else f"too few parcels: {ids[use].size} labelled parcel(s), and a class needs at least 2 to hold one out"
        )
        evaluated_on, scored_ids = ALL_PARCELS, train_ids
        note = (
            f"no parcel held out ({why}): the scores are computed on all labelled parcels, those that voted, "
            "so they are optimistic"
        )
        warnings.warn(f"evaluate_parcels: {note}", EvaluationWarning, stacklevel=2)
    cp = per_parcel["cluster_pixels"].transpose("parcel", "centre").values
    majority = per_parcel["cluster"].values
    k = cp.shape[1]
    pos = pd.Series(np.arange(ids.size), index=ids)
    tr, te = pos[train_ids].to_numpy(), pos[scored_ids].to_numpy()
    lab_values = lab.to_numpy()
    if vote == "pixels":
        clusters = np.tile(np.arange(k), tr.size)
        mapping = majority_vote(clusters, np.repeat(lab_values[tr], k), weights=cp[tr].ravel())
    else:
        mapping = majority_vote(majority[tr], lab_values[tr])
    # pixel level: each (held-out parcel, cluster) pair weighs its pixel count
    y_true = np.repeat(lab_values[te], k)
    y_pred = apply_vote(np.tile(np.arange(k), te.size), mapping)
    w = cp[te].ravel()
    cm_pix = confusion(y_true, y_pred, classes, sample_weight=w)
    cm_par = confusion(lab_values[te], apply_vote(majority[te], mapping), classes)
    predicted = pd.Series(apply_vote(majority, mapping), index=ids, name="predicted")
    return Evaluation(
        vote=vote,
        mapping=mapping,
        classes=classes,
        train_ids=train_ids,
        test_ids=test_ids,
        confusion_pixels=cm_pix,
        confusion_parcels=cm_par,
        scores_pixels=scores_from_confusion(cm_pix),
        scores_parcels=scores_from_confusion(cm_par),
        predicted=predicted,
        evaluated_on=evaluated_on,
        note=note,
    )


__all__ = [
    "ALL_PARCELS",
    "HELD_OUT",
    "Evaluation",
    "EvaluationWarning",
    "apply_vote",
    "check_vote",
    "confusion",
    "evaluate_parcels",
    "majority_vote",
    "scores",
    "scores_from_confusion",
    "split_parcels",
]
