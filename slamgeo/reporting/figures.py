"""The report's figures: one function per figure, each taking data and returning a matplotlib `Figure` (usable from a
notebook, where a bare `Figure` displays itself):

- `fig_confusion`: the paper's Fig. 3, the row-normalised confusion matrix (%);
- `fig_class_importance`: the paper's Fig. 4, per-class mean VV (dB) against date, the line
  coloured by the normalised Grad-SLAM importance, one row per embedding dimension;
- `fig_cluster_map`, `fig_importance_map` (one date), `fig_recon_error_map`: maps of a
  gridded results store (a `sample`-form store has no map), from `slamgeo.reporting.maps`;
- `fig_embedding_scatter`: embeddings coloured by class (or cluster), at most 20 000 points;
- `fig_deletion_curve`: the faithfulness (deletion) curves of `slamgeo.method.faithfulness.deletion`,
  Grad-SLAM's top-k dates against k random dates, and other attributions when given.

The page that gathers them is `slamgeo.reporting.page.make_report`; what they are drawn from
is read and prepared in `slamgeo.reporting.readers`. A figure its inputs do not allow raises
`slamgeo.reporting.FigureSkipped`; a date that is not one, or is outside the acquisitions,
`slamgeo.errors.InputError`.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot, so
no display is needed and no global figure state accumulates. Maps read a strided subsample of
large grids (at most `MAX_MAP_SIDE` per side, `map_raster`: lazily, so on the Dask workers when
the grid is Dask-backed), so a store larger than memory is fine; `slamgeo.reporting.maps`
draws them from that raster.
`slamgeo.reporting.render` draws figures as PNGs, on the Dask workers when a client is active.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib import colormaps
from matplotlib import dates as mdates
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator

from slamgeo.reporting import FigureSkipped
from slamgeo.reporting.maps import (
    DPI,
    IMPORTANCE_CMAP,
    MapView,
    _axis_labels,
    _check_dims,
    _extent,
    _figure,
    _grid,
    _palette,
    date_label,
    draw_cluster_map,
    draw_importance_map,
    draw_recon_error_map,
    parse_date,
    pick_date,
)
from slamgeo.reporting.readers import confusion_percent, curve_sets, normalised_importance
from slamgeo.schema import BANDS, CLASS, DIM

MAX_MAP_SIDE = 1200  # pixels a side of a map's raster: larger grids are shown strided (the PNGs are ~1000 px wide)
MAX_SCATTER_POINTS = 20_000
LINESTYLES: tuple[Literal["-", "--", "-.", ":"], ...] = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_SUBSEGMENTS = 6  # each date interval of a Fig. 4 line is drawn as this many coloured pieces

# --------------------------------------------------------------------------- small helpers


def _date_axis(ax, times: np.ndarray | None = None) -> None:
    """Concise date ticks (months, the year once); with `times`, ticks only within their span
    (the axis may extend beyond it to make room for labels)."""
    loc = mdates.AutoDateLocator(minticks=4, maxticks=10)
    if times is not None and len(times) > 1:
        t = mdates.date2num(np.asarray(times, dtype="datetime64[ns]"))
        pad = 0.02 * (t.max() - t.min())
        lo, hi = t.min() - pad, t.max() + pad
        ticks = [v for v in loc.tick_values(*mdates.num2date([lo, hi])) if lo <= v <= hi]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
    else:
        ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", str(text)).strip("_").lower() or "group"


# --------------------------------------------------------------------------- Fig. 3


def fig_confusion(
    confusion: xr.Dataset | pd.DataFrame,
    *,
    title: str = "Confusion matrix (row-normalised)",
    fmt: str | None = None,
) -> Figure:
    """The paper's Fig. 3: the row-normalised confusion matrix in %, each cell annotated.

    `confusion`: see `slamgeo.reporting.readers.confusion_percent`. `fmt`: the cell format (default ".1f" up to 10
    classes, ".0f" beyond). Cells without reference units read "n/a".
    """
    pct = confusion_percent(confusion)
    values = pct.to_numpy()
    n_rows, n_cols = values.shape
    fmt = fmt or (".1f" if n_rows <= 10 else ".0f")
    side = max(5.0, 0.55 * max(n_rows, n_cols) + 3.0)
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot()
    cmap = colormaps["Blues"].with_extremes(bad="#eeeeee")
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=100, aspect="equal")
    fontsize = 9 if n_rows <= 10 else 7.5
    for i in range(n_rows):
        for j in range(n_cols):
            v = values[i, j]
            text = "n/a" if np.isnan(v) else format(v, fmt)
            colour = "white" if np.isfinite(v) and v > 60 else ("0.6" if v == 0 else "black")
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=fontsize)
    ax.set_xticks(range(n_cols), labels=list(pct.columns), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n_rows), labels=list(pct.index))
    ax.set_xlabel("predicted class (majority vote of the clusters)")
    ax.set_ylabel("reference class")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the reference class (%)")
    return fig


# --------------------------------------------------------------------------- Fig. 4


def importance_segments(
    times: np.ndarray, values: np.ndarray, importance: np.ndarray, *, n_sub: int = _SUBSEGMENTS
) -> tuple[np.ndarray, np.ndarray]:
    """Line pieces of a profile coloured by importance, for a `LineCollection`.

    `times (T,)` datetime64, `values (T,)` (dB), `importance (T,)` in [0, 1]. Each interval
    between two dates with finite value and importance is cut into `n_sub` pieces, linearly
    interpolated. Returns `segments (n, 2, 2)` in (matplotlib date number, value) and the
    importance of each piece `(n,)`, interpolated at its middle.
    """
    t = mdates.date2num(np.asarray(times, dtype="datetime64[ns]"))
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(importance, dtype=np.float64)
    s = np.linspace(0.0, 1.0, n_sub + 1)
    segs, cols = [], []
    for i in range(t.size - 1):
        if not (np.isfinite(v[i : i + 2]).all() and np.isfinite(w[i : i + 2]).all()):
            continue
        tt = t[i] + s * (t[i + 1] - t[i])
        vv = v[i] + s * (v[i + 1] - v[i])
        pts = np.stack([tt, vv], axis=1)
        segs.append(np.stack([pts[:-1], pts[1:]], axis=1))
        mid = (s[:-1] + s[1:]) / 2
        cols.append(w[i] + mid * (w[i + 1] - w[i]))
    if not segs:
        return np.zeros((0, 2, 2)), np.zeros(0)
    return np.concatenate(segs), np.concatenate(cols)


def _end_labels(ax, times: np.ndarray, lines: Sequence[np.ndarray], names: Sequence[str]) -> None:
    """Name each line just right of its last point, spread vertically so names do not overlap."""
    t = mdates.date2num(np.asarray(times, dtype="datetime64[ns]"))
    ends: list[list[Any]] = []  # [y, x, name]
    for v, name in zip(lines, names):
        ok = np.flatnonzero(np.isfinite(v))
        if ok.size:
            ends.append([float(v[ok[-1]]), float(t[ok[-1]]), str(name)])
    if not ends:
        return
    lo, hi = ax.get_ylim()
    gap = 0.07 * (hi - lo)
    ends.sort()
    for i in range(1, len(ends)):
        ends[i][0] = max(ends[i][0], ends[i - 1][0] + gap)
    shift = max(0.0, ends[-1][0] - hi)  # keep the top label inside the axes
    span = t[-1] - t[0] if t.size > 1 else 1.0
    for y, x, name in ends:
        ax.annotate(
            name,
            (x, y - shift),
            xytext=(x + 0.015 * span, y - shift),
            fontsize=8.5,
            va="center",
            ha="left",
            color="0.15",
        )
    longest = max(len(name) for _, _, name in ends)
    ax.set_xlim(t[0] - 0.02 * span, t[-1] + (0.03 + 0.0125 * longest) * span)


def fig_class_importance(
    profiles: xr.Dataset,
    classes: Sequence[str],
    *,
    band: str = "VV",
    title: str | None = None,
    importance: str = "importance",
    class_dim: str = CLASS,
    legend_title: str = "class",
) -> Figure:
    """The paper's Fig. 4: for each class, its mean `band` profile (dB) against date, the line
    coloured by the class's normalised Grad-SLAM importance (0..1, one colour bar), one row
    per embedding dimension. Classes differ by line style and marker (legend).

    `profiles`: `slamgeo.jobs.parcels.class_profiles` output: `importance (class, dim, time)`
    (min-max normalised per class and dim; one outside [0, 1] is normalised here) and
    `VV (class, time)` in dB. `classes`: the classes to draw, in order (a few, 2-6, read best).
    """
    for name in (importance, band):
        if name not in profiles:
            hint = " (run `slamgeo parcels` with --cube to get the VV/VH profiles)" if name in BANDS else ""
            found = sorted(map(str, profiles.data_vars))
            raise FigureSkipped(f"class profiles: no '{name}' variable{hint}; found {found}")
    if class_dim not in profiles.dims:
        raise FigureSkipped(f"class profiles: no '{class_dim}' dimension; found dims {tuple(profiles.dims)}")
    available = [str(c) for c in profiles[class_dim].values]
    classes = [str(c) for c in classes]
    if not classes:
        raise FigureSkipped("fig_class_importance: no class to draw")
    missing = [c for c in classes if c not in available]
    if missing:
        raise FigureSkipped(f"class profiles: class(es) {missing} not found; available: {available}")
    prof = profiles.assign_coords({class_dim: available})
    imp = normalised_importance(prof[importance].transpose(class_dim, DIM, "time"))
    vv = prof[band].transpose(class_dim, "time")
    times = prof["time"].values
    dims = list(imp[DIM].values)
    cmap = colormaps[IMPORTANCE_CMAP]
    norm = Normalize(0.0, 1.0)
    fig = _figure(11, 1.2 + 3.2 * len(dims))
    axes = fig.subplots(len(dims), 1, sharex=True, squeeze=False)[:, 0]
    handles = []
    for row, (ax, d) in enumerate(zip(axes, dims)):
        for k, c in enumerate(classes):
            v = vv.sel({class_dim: c}).values
            w = imp.sel({class_dim: c, DIM: d}).values
            segs, cols = importance_segments(times, v, w)
            lc = LineCollection(
                segs,  # type: ignore[arg-type]  # an (n, 2, 2) array is a sequence of segments
                cmap=cmap,
                norm=norm,
                linewidths=2.6,
                linestyles=LINESTYLES[k % len(LINESTYLES)],
                label=c,
            )
            lc.set_array(cols)
            ax.add_collection(lc)
            ok = np.isfinite(v) & np.isfinite(w)
            ax.scatter(
                times[ok],
                v[ok],
                c=w[ok],
                cmap=cmap,
                norm=norm,
                marker=MARKERS[k % len(MARKERS)],
                s=22,
                edgecolors="black",
                linewidths=0.4,
                zorder=3,
            )
            if row == 0:
                n = ""
                if "n_parcels" in prof:
                    n = f" ({int(prof['n_parcels'].sel({class_dim: c}))} parcels)"
                handles.append(
                    Line2D(
                        [],
                        [],
                        color="black",
                        linestyle=LINESTYLES[k % len(LINESTYLES)],
                        marker=MARKERS[k % len(MARKERS)],
                        markerfacecolor="white",
                        label=f"{c}{n}",
                    )
                )
        ax.autoscale_view()
        _end_labels(ax, times, [vv.sel({class_dim: c}).values for c in classes], classes)
        ax.set_ylabel(f"mean {band} (dB)")
        ax.set_title(f"embedding dimension {d}", fontsize=10, loc="left")
        ax.grid(True, alpha=0.3)
    _date_axis(axes[-1], times)
    axes[-1].set_xlabel("acquisition date")
    axes[0].legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), title=legend_title, fontsize=9, frameon=False
    )
    fig.colorbar(
        ScalarMappable(norm=norm, cmap=cmap),
        ax=list(axes),
        location="right",
        shrink=0.9,
        label="normalised Grad-SLAM importance (0 = least, 1 = most)",
    )
    fig.suptitle(title or f"Mean {band} profile coloured by Grad-SLAM date importance: {', '.join(classes)}")
    return fig


# --------------------------------------------------------------------------- maps


def map_raster(da: xr.DataArray, max_side: int | None = None) -> tuple[xr.DataArray, MapView]:
    """A strided view of `da`'s (y, x) grid (its other dims first) with at most `max_side`
    (default `MAX_MAP_SIDE`) pixels per side, lazy when `da` is Dask-backed, and how to draw it."""
    full = da.transpose(..., "y", "x")
    ny, nx = full.sizes["y"], full.sizes["x"]
    step = max(1, math.ceil(max(ny, nx) / (max_side or MAX_MAP_SIDE)))
    thin = full.isel(y=slice(None, None, step), x=slice(None, None, step)) if step > 1 else full
    ext, origin = _extent(full)
    xlabel, ylabel, plain = _axis_labels(full)
    return thin, MapView((ny, nx), step, ext, origin, xlabel, ylabel, plain)


def importance_raster(
    importance: xr.DataArray, date, max_side: int | None = None
) -> tuple[xr.DataArray, MapView, dict[str, Any]]:
    """The importance `(dim, time, y, x)` on the acquisition nearest `date`, as `map_raster`
    `(dim, y', x')`, and the labels of the figure: `dims` (list), `when` (the acquisition shown),
    `asked` (the date asked for), `scale` (the importance's scaling, "" if none)."""
    importance = _grid(importance, "importance")
    _check_dims(importance, (DIM, "time", "y", "x"), "importance")
    i, when = pick_date(importance["time"].values, date)
    thin, view = map_raster(importance.isel(time=i).transpose(DIM, "y", "x"), max_side)
    labels = {
        "dims": [str(d) for d in importance[DIM].values],
        "when": date_label(when),
        "asked": date_label(parse_date(date)),
        "scale": str(importance.attrs.get("scale") or ""),
    }
    return thin, view, labels


def fig_cluster_map(
    cluster: xr.DataArray,
    *,
    names: Mapping[int, str] | None = None,
    title: str = "k-Means clusters of the embeddings",
) -> Figure:
    """Map of `cluster (y, x)` (int, -1 = no data, drawn light grey), one colour per cluster,
    colour bar ticks labelled with the cluster id (and the class it was voted into, `names`:
    cluster id -> class, as in metrics.json's `cluster_class`)."""
    cluster = _grid(cluster, "cluster")
    _check_dims(cluster, ("y", "x"), "cluster")
    thin, view = map_raster(cluster)
    k = int(cluster.attrs.get("k", 0))
    return draw_cluster_map(np.asarray(thin.values), view, k=k, names=names, title=title)


def fig_importance_map(importance: xr.DataArray, date, *, title: str | None = None) -> Figure:
    """Map of the Grad-SLAM importance `(dim, time, y, x)` on the acquisition nearest `date`,
    one panel per embedding dimension, one shared colour bar (diverging for the signed
    scalings "maxabs"/"centred", 0..1 for "minmax"/"abs", the 2-98 % range for "none")."""
    thin, view, labels = importance_raster(importance, date)
    return draw_importance_map(np.asarray(thin.values), view, labels, title=title)


def fig_recon_error_map(recon_error: xr.DataArray, *, title: str = "Reconstruction error of the autoencoder") -> Figure:
    """Map of `recon_error (y, x)` (mean squared error per pixel); colour scale 0 .. 99th
    percentile (the colour bar extends beyond), no data light grey."""
    recon_error = _grid(recon_error, "recon_error")
    _check_dims(recon_error, ("y", "x"), "recon_error")
    thin, view = map_raster(recon_error)
    units = str(recon_error.attrs.get("units", "standardised units squared"))
    return draw_recon_error_map(np.asarray(thin.values), view, units=units, title=title)


# --------------------------------------------------------------------------- embedding scatter


def _as_points(embedding, labels) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, D) embeddings and (N,) labels from arrays or DataArrays (other dims flattened)."""
    if isinstance(embedding, xr.DataArray):
        if DIM not in embedding.dims:
            raise FigureSkipped(f"embedding: expected a '{DIM}' dimension, found dims {embedding.dims}")
        other = [d for d in embedding.dims if d != DIM]
        names = [str(v) for v in embedding[DIM].values]  # positions when `dim` has no coordinate
        if isinstance(labels, xr.DataArray):
            labels = labels.transpose(*other).values.ravel()
        emb = embedding.transpose(*other, DIM).values.reshape(-1, embedding.sizes[DIM])
    else:
        emb = np.asarray(embedding)
        if emb.ndim == 1:
            emb = emb[:, None]
        if emb.ndim != 2:
            raise FigureSkipped(f"embedding: expected (N, D) points, found shape {emb.shape}")
        names = [str(i) for i in range(emb.shape[1])]
    labels = np.asarray(labels.values if isinstance(labels, (xr.DataArray, pd.Series)) else labels).ravel()
    if labels.shape[0] != emb.shape[0]:
        raise FigureSkipped(f"labels: {labels.shape[0]} values for {emb.shape[0]} embeddings")
    return emb.astype(np.float64), labels, names


def _valid_labels(labels: np.ndarray) -> np.ndarray:
    s = pd.Series(labels, dtype=object)
    ok = ~(s.isna() | (s.astype(str) == ""))
    numeric = pd.to_numeric(s, errors="coerce")
    return (ok & ~(numeric < 0)).to_numpy()


def fig_embedding_scatter(
    embedding,
    labels,
    *,
    max_points: int = MAX_SCATTER_POINTS,
    seed: int = 0,
    title: str = "CAE embeddings",
    label_name: str = "class",
    names: Mapping | None = None,
) -> Figure:
    """Scatter of embeddings coloured by label.

    `embedding`: `(N, D)` array, or a DataArray with a `dim` dimension (other dims are
    flattened, e.g. `(dim, y, x)`); `labels`: `(N,)` (or a DataArray on the other dims):
    class names or cluster ids; NaN, "" and negative ids are left out, as are non-finite
    embeddings. `names`: label -> text shown in the legend (e.g. cluster id -> "3: maize").
    At most `max_points` points, drawn at random (`seed`). D = 2: the two
    dimensions; D > 2: the first two principal components; D = 1: the value per label.
    """
    emb, lab, dim_names = _as_points(embedding, labels)
    keep = np.isfinite(emb).all(1) & _valid_labels(lab)
    emb, lab = emb[keep], lab[keep]
    n_total = emb.shape[0]
    if n_total == 0:
        raise FigureSkipped("embedding scatter: no point with a finite embedding and a label")
    if n_total > max_points:
        pick = np.sort(np.random.default_rng(seed).choice(n_total, max_points, replace=False))
        emb, lab = emb[pick], lab[pick]
    cats = pd.unique(pd.Series(lab))
    try:
        cats = sorted(cats, key=lambda c: float(c))
    except (TypeError, ValueError):
        cats = sorted(cats, key=str)
    colours = _palette(len(cats))
    d = emb.shape[1]
    fig = _figure(9.5, 6.5)
    ax = fig.add_subplot()
    if d == 1:
        pos = {c: i for i, c in enumerate(cats)}
        y = np.array([pos[c] for c in lab]) + np.random.default_rng(seed).uniform(-0.3, 0.3, lab.size)
        xy = np.stack([emb[:, 0], y], 1)
        ax.set_yticks(range(len(cats)), labels=[str(c) for c in cats])
        ax.set_xlabel(f"embedding dimension {dim_names[0]}")
        ax.set_ylabel(label_name)
    elif d == 2:
        xy = emb
        ax.set_xlabel(f"embedding dimension {dim_names[0]}")
        ax.set_ylabel(f"embedding dimension {dim_names[1]}")
    else:
        centred = emb - emb.mean(0)
        _, sv, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
        share = sv**2 / max((sv**2).sum(), 1e-300) * 100
        ax.set_xlabel(f"principal component 1 of the {d}-D embedding ({share[0]:.0f} % of variance)")
        ax.set_ylabel(f"principal component 2 ({share[1]:.0f} % of variance)")
    n_shown = xy.shape[0]
    size, alpha = (4, 0.6) if n_shown > 5000 else ((12, 0.7) if n_shown > 500 else (36, 0.9))
    order = np.random.default_rng(seed + 1).permutation(xy.shape[0])  # no class drawn wholly on top
    col_of = {c: colours[i] for i, c in enumerate(cats)}
    ax.scatter(
        xy[order, 0],
        xy[order, 1],
        c=[col_of[c] for c in lab[order]],
        s=size,
        alpha=alpha,
        linewidths=0,
        rasterized=True,
    )
    shown_name = {str(k): str(v) for k, v in (names or {}).items()}
    handles = [
        Line2D([], [], linestyle="", marker="o", markersize=7, color=col_of[c], label=shown_name.get(str(c), str(c)))
        for c in cats
    ]
    ax.legend(
        handles=handles,
        title=label_name,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
        fontsize=9,
        ncols=1 if len(cats) <= 24 else 2,
    )
    ax.grid(True, alpha=0.3)
    shown = f"{xy.shape[0]:,} of {n_total:,} points" if n_total > xy.shape[0] else f"{n_total:,} points"
    ax.set_title(f"{title} ({shown})")
    return fig


# --------------------------------------------------------------------------- faithfulness


def fig_deletion_curve(curves: Mapping, *, title: str = "Faithfulness: deleting the most important dates") -> Figure:
    """Deletion curves, one panel per embedding dimension: the mean displacement |E(x') - E(x)|
    of that dimension against the number k of dates deleted, for each explanation's top-k
    dates (solid) and for the baseline (dashed: k random dates, unless `baseline_name` says
    otherwise), in units of the embedding's standard deviation when `embedding_std` is given.

    `curves`: the dict `slamgeo.method.faithfulness.deletion` returns (tensors or arrays or lists; taken
    as Grad-SLAM's), or a mapping explanation name -> such a dict (e.g. from
    `slamgeo.method.faithfulness.deletion_curves`, or read back with `slamgeo.reporting.readers.load_curves`).
    """
    sets = curve_sets(curves)
    first = next(iter(sets.values()))
    n_dims = first["top"].shape[1]
    fig = _figure(1.5 + 4.6 * min(n_dims, 3), 1.3 + 3.6 * math.ceil(n_dims / 3))
    axes = fig.subplots(math.ceil(n_dims / 3), min(n_dims, 3), squeeze=False).ravel()
    colours = _palette(max(len(sets), 1))

    use_std = all(
        s.get("embedding_std") is not None and s["embedding_std"].size >= n_dims and np.all(s["embedding_std"] > 0)
        for s in sets.values()
    )

    def scaled(a: np.ndarray, arrays: dict, d: int) -> np.ndarray:
        return a / arrays["embedding_std"][d] if use_std else a

    baselines = [s["baseline"] for s in sets.values()]
    shared_base = all(b.shape == baselines[0].shape and np.allclose(b, baselines[0], equal_nan=True) for b in baselines)
    for d, ax in enumerate(axes):
        if d >= n_dims:
            ax.set_visible(False)
            continue
        for (name, s), colour in zip(sets.items(), colours):
            ax.plot(
                s["k"],
                scaled(s["top"][:, d], s, d),
                marker="o",
                color=colour,
                linewidth=2,
                label=f"{name}: top-k dates",
            )
            if not shared_base:
                ax.plot(
                    s["k"],
                    scaled(s["baseline"][:, d], s, d),
                    linestyle="--",
                    marker=".",
                    color=colour,
                    label=f"{name}: {s.get('baseline_name', 'k random dates')}",
                )
        if shared_base:
            ax.plot(
                first["k"],
                scaled(first["baseline"][:, d], first, d),
                linestyle="--",
                marker=".",
                color="0.35",
                label=first.get("baseline_name", "k random dates"),
            )
        ax.set_xlabel("k, dates deleted (replaced by interpolation)")
        ax.set_ylabel("mean |Δ embedding|" + (" / std of the embedding" if use_std else ""))
        ax.set_title(f"embedding dimension {d}", fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=9)
    fig.suptitle(title)
    return fig


__all__ = [
    "DPI",
    "MAX_MAP_SIDE",
    "MAX_SCATTER_POINTS",
    "date_label",
    "fig_class_importance",
    "fig_cluster_map",
    "fig_confusion",
    "fig_deletion_curve",
    "fig_embedding_scatter",
    "fig_importance_map",
    "fig_recon_error_map",
    "importance_raster",
    "importance_segments",
    "map_raster",
    "parse_date",
    "pick_date",
    "slug",
]
