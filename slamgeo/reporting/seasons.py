"""The report's "season against season" section: a season beside the season its model was
trained on, from the drift step's drift.json (`slamgeo.pipeline.drift`) and both seasons'
parcels outputs.

- `season_profiles`: both seasons' class-mean VV (dB, from each season's class profiles)
  with the class-mean importance of the one model on each season (from drift.json), as one
  profiles Dataset on the model's dates, classes named "<class> (<season>)", for Fig. 4;
- `drift_table`: the verdict, the reasons, the measures the thresholds judge, and the dates
  whose importance moved most (HTML);
- `composition_table`: each class's share of the labelled pixels and of the pixels voted into
  it, in both seasons (HTML, from the pixel confusion matrices).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from slamgeo.reporting import FigureSkipped
from slamgeo.schema import CLASS, DIM

MOST_CHANGED = 2  # classes drawn in the figure (each twice): those whose importance moved most


def _importance(drift: Mapping[str, Any]) -> dict[str, Any]:
    imp = (drift.get("measures") or {}).get("importance")
    if not imp or not imp.get("classes"):
        raise FigureSkipped("drift.json has no per-class importance (the seasons' parcels were not both labelled)")
    return imp


def most_changed_classes(drift: Mapping[str, Any], n: int = MOST_CHANGED) -> list[str]:
    """The `n` classes whose importance moved most between the seasons (by drift.json's per-class
    change, mean over dates)."""
    imp = _importance(drift)
    change = ((drift.get("measures") or {}).get("classes") or {}).get("importance_change") or {}
    names = [str(c) for c in imp["classes"]]
    score = np.array([float(change.get(c, np.nan)) for c in names])  # class -> mean change over dates
    return [names[i] for i in np.argsort(np.where(np.isfinite(score), -score, np.inf), kind="stable")[:n]]


def season_profiles(
    drift: Mapping[str, Any], reference_profiles: xr.Dataset, profiles: xr.Dataset, classes: Sequence[str]
) -> xr.Dataset:
    """Profiles for `fig_class_importance`: for each of `classes` and each season, `VV (class,
    time)` dB from that season's class profiles and `importance (class, dim, time)`, the one
    model's class-mean importance on that season (drift.json); on the reference season's dates
    (the importance of both is on the model's dates; a VV profile on other dates, a season that
    trained its own model since, is interpolated onto them, a year apart)."""
    imp = _importance(drift)
    names = [str(c) for c in imp["classes"]]
    ref_name, name = str(drift.get("reference_season")), str(drift.get("season"))
    rows_vv, rows_imp, labels = [], [], []
    times = reference_profiles["time"].values
    for c in classes:
        if c not in names:
            raise FigureSkipped(f"class {c!r} is not compared in drift.json; compared: {names}")
        for season, prof, key in ((ref_name, reference_profiles, "reference"), (name, profiles, "season")):
            if "VV" not in prof or CLASS not in prof.dims or c not in [str(v) for v in prof[CLASS].values]:
                raise FigureSkipped(f"season {season}: no VV profile of class {c!r} in its class profiles")
            vv = prof["VV"].assign_coords({CLASS: [str(v) for v in prof[CLASS].values]}).sel({CLASS: c}).values
            rows_vv.append(_on_dates(np.asarray(vv, dtype=float), prof["time"].values, times))
            rows_imp.append(np.asarray(imp[key], dtype=float)[names.index(c)])
            labels.append(f"{c} ({season})")
    if any(i.shape[-1] != times.size for i in rows_imp):
        raise FigureSkipped("drift.json's importance is not on the reference season's dates")
    return xr.Dataset(
        {
            "VV": ((CLASS, "time"), np.stack(rows_vv)),
            "importance": ((CLASS, DIM, "time"), np.stack(rows_imp)),
        },
        coords={CLASS: labels, DIM: np.arange(rows_imp[0].shape[0]), "time": times},
    )


def _on_dates(values: np.ndarray, times: np.ndarray, onto: np.ndarray) -> np.ndarray:
    """A profile `values` on dates `times`, on the dates `onto` of another year: moved by the
    whole years between them (`year_shift`), interpolated linearly (NaN outside `times`)."""
    from slamgeo.jobs.season import year_shift

    moved = pd.DatetimeIndex(times) - pd.DateOffset(years=year_shift(onto, times))
    if moved.size == onto.size and (moved == pd.DatetimeIndex(onto)).all():
        return values
    x = moved.asi8.astype(float)
    ok = np.isfinite(values)
    return np.interp(pd.DatetimeIndex(onto).asi8.astype(float), x[ok], values[ok], left=np.nan, right=np.nan)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def drift_table(drift: Mapping[str, Any]) -> str:
    """The verdict, the reasons, each judged measure against its threshold, the dates whose
    importance moved most (HTML)."""
    measures = drift.get("measures") or {}
    summary = measures.get("summary") or {}
    limits = drift.get("thresholds") or {}
    rows: list[list[object]] = [
        ["verdict", f"{drift.get('verdict')} (season {drift.get('season')} against {drift.get('reference_season')})"]
    ]
    rows += [["reason", r] for r in drift.get("reasons") or []]
    rows += [[k, f"{v:.3g} (threshold {limits.get(k, '-')})"] for k, v in summary.items() if isinstance(v, float)]
    imp = measures.get("importance") or {}
    if imp.get("top_dates"):
        moved = ", ".join(f"{d} ({c:.2f})" for d, c in zip(imp["top_dates"], imp.get("top_changes", [])))
        rows.append(["dates whose importance moved most", moved])
    return _table(["", ""], rows)


def _shares(confusion: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(share of labelled pixels per reference class, share of pixels voted into each class)."""
    total = float(confusion.to_numpy().sum()) or 1.0
    return confusion.sum(axis=1) / total, confusion.sum(axis=0) / total


def composition_table(reference: pd.DataFrame, season: pd.DataFrame, names: tuple[str, str]) -> str:
    """Each class's share of the labelled pixels and of the pixels its clusters were voted
    into, in both seasons (HTML, %), from the pixel confusion matrices (rows: reference class,
    columns: class voted)."""
    (rt, rv), (st, sv) = _shares(reference), _shares(season)
    classes = sorted(
        set(map(str, rt.index)) | set(map(str, st.index)) | set(map(str, rv.index)) | set(map(str, sv.index))
    )

    def pct(s: pd.Series, c: str) -> str:
        s = s.rename(index=str)
        return f"{100 * float(s[c]):.1f}" if c in s.index else "-"

    a, b = names
    header = ["class", f"labelled {a}", f"voted {a}", f"labelled {b}", f"voted {b}"]
    return _table(header, [[c, pct(rt, c), pct(rv, c), pct(st, c), pct(sv, c)] for c in classes])


__all__ = ["composition_table", "drift_table", "most_changed_classes", "season_profiles"]
