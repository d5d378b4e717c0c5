"""The report's maps of a gridded results store, drawn from their thinned raster, and the
canvas every figure is drawn on.

- `MapView`: how a raster of a (y, x) grid is drawn (the full grid's extent, origin, axis
  labels, the stride shown);
- `draw_cluster_map`, `draw_importance_map`, `draw_recon_error_map`: the maps from the
  computed raster (`(y', x')` or `(dim, y', x')` numpy) and its `MapView`: small inputs a Dask
  worker draws from (`slamgeo.reporting.render`). The raster and its view come from
  `slamgeo.reporting.figures.map_raster` (at most `MAX_MAP_SIDE` pixels a side, lazily), and
  `fig_cluster_map`, `fig_importance_map`, `fig_recon_error_map` there take the full variable;
- `parse_date`, `pick_date`, `date_label`: the dates of the importance map.

A map its inputs do not allow raises `slamgeo.reporting.FigureSkipped`; a date that is not
one, or is outside the acquisitions, `slamgeo.errors.InputError`. Figures are built on
`matplotlib.figure.Figure` with the Agg canvas, never through pyplot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize
from matplotlib.figure import Figure

from slamgeo.errors import InputError
from slamgeo.reporting import FigureSkipped

DPI = 110
IMPORTANCE_CMAP = "viridis"

# --------------------------------------------------------------------------- the canvas


def _figure(
    width: float, height: float, layout: Literal["constrained", "compressed", "tight"] = "constrained"
) -> Figure:
    """A figure on the Agg canvas; `layout="compressed"` for maps (fixed-aspect axes)."""
    fig = Figure(figsize=(width, height), layout=layout, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _palette(n: int) -> list:
    """n distinguishable colours: tab10 up to 10, then tab20 (dark shades first), then turbo."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        tab20 = colormaps["tab20"]
        order = list(range(0, 20, 2)) + list(range(1, 20, 2))
        return [tab20(order[i]) for i in range(n)]
    return [colormaps["turbo"](v) for v in np.linspace(0.05, 0.95, n)]


def _check_dims(da: xr.DataArray, dims: Sequence[str], name: str) -> None:
    if set(da.dims) != set(dims):
        raise FigureSkipped(f"{name}: expected dims {tuple(dims)}, found {tuple(da.dims)}")


# --------------------------------------------------------------------------- dates


def date_label(t) -> str:
    return str(np.datetime64(pd.Timestamp(t).to_datetime64(), "D"))


def parse_date(date) -> np.datetime64:
    """A date given as "YYYY-MM-DD" (ISO 8601), datetime64, Timestamp or datetime, as
    datetime64[ns]; anything else raises `InputError`."""
    try:
        when = pd.to_datetime(date, format="ISO8601") if isinstance(date, str) else pd.Timestamp(date)
    except (ValueError, TypeError) as exc:
        raise InputError(f"date {date!r}: expected YYYY-MM-DD") from exc
    if pd.isna(when):
        raise InputError(f"date {date!r}: expected YYYY-MM-DD")
    return when.tz_localize(None).to_datetime64() if when.tzinfo else when.to_datetime64()


def pick_date(times: np.ndarray, date) -> tuple[int, np.datetime64]:
    """Index of the acquisition nearest `date`; refuses a date outside the span (+- one step)."""
    when = parse_date(date)
    times = np.asarray(times, dtype="datetime64[ns]")
    step = np.diff(times).max() if times.size > 1 else np.timedelta64(0, "ns")
    if when < times[0] - step or when > times[-1] + step:
        raise InputError(
            f"date {date_label(when)}: outside the acquisitions {date_label(times[0])} .. {date_label(times[-1])}"
        )
    i = int(np.abs(times - when).argmin())
    return i, times[i]


# --------------------------------------------------------------------------- rasters


@dataclass(frozen=True)
class MapView:
    """How a thinned raster of a (y, x) grid is drawn: the full grid's `shape` (ny, nx), the
    `step` (1 pixel in `step` per side shown), the imshow `extent` of the full grid (None
    without coordinates) and `origin`, the axis labels, and whether tick labels are plain
    metres (a projected CRS)."""

    shape: tuple[int, int]
    step: int
    extent: tuple[float, float, float, float] | None
    origin: Literal["upper", "lower"]
    xlabel: str
    ylabel: str
    plain_ticks: bool = False


def _grid(da: xr.DataArray, name: str) -> xr.DataArray:
    if "y" not in da.dims or "x" not in da.dims:
        raise FigureSkipped(
            f"{name}: a map needs (y, x) dims; found {tuple(da.dims)} (sample-form results have no map)"
        )
    return da


def _extent(da: xr.DataArray) -> tuple[tuple[float, float, float, float] | None, Literal["upper", "lower"]]:
    """imshow extent from the full grid's coordinates, and the origin ('upper' when y falls)."""
    if "x" not in da.coords or "y" not in da.coords or da.sizes["x"] < 2 or da.sizes["y"] < 2:
        return None, "upper"
    x, y = da["x"].values.astype(float), da["y"].values.astype(float)
    dx, dy = abs(x[1] - x[0]), abs(y[1] - y[0])
    ext = (x.min() - dx / 2, x.max() + dx / 2, y.min() - dy / 2, y.max() + dy / 2)
    return ext, ("upper" if y[0] > y[-1] else "lower")


def _axis_labels(da: xr.DataArray) -> tuple[str, str, bool]:
    """x and y axis labels of a grid (its CRS), and whether its ticks are plain metres."""
    try:
        crs = da.rio.crs
    except Exception:  # noqa: BLE001 - no rioxarray grid mapping: label without the CRS
        crs = None
    if "x" not in da.coords or "y" not in da.coords:
        return "column (pixel)", "row (pixel)", False
    if crs is not None and crs.is_geographic:
        return "longitude (°)", "latitude (°)", False
    tag = f", {crs.to_string()}" if crs is not None else ""
    return f"x (m{tag})", f"y (m{tag})", True


def _map_size(view: MapView, n: int = 1) -> tuple[float, float]:
    aspect = view.shape[0] / max(view.shape[1], 1)
    w = min(6.5, 9.0 / aspect) if n == 1 else min(4.6, 7.0 / aspect)
    return 1.8 + n * w, (1.4 if n == 1 else 1.2) + w * aspect


def _label_axes(ax, view: MapView) -> None:
    ax.set_xlabel(view.xlabel)
    ax.set_ylabel(view.ylabel)
    if view.plain_ticks:
        ax.ticklabel_format(useOffset=False, style="plain")


def _shown(step: int) -> str:
    return f"1 pixel in {step} per side shown" if step > 1 else ""


# --------------------------------------------------------------------------- cluster map


def draw_cluster_map(
    values: np.ndarray,
    view: MapView,
    *,
    k: int = 0,
    names: Mapping[int, str] | None = None,
    title: str = "k-Means clusters of the embeddings",
) -> Figure:
    """`slamgeo.reporting.figures.fig_cluster_map` from its raster `values (y', x')` and `view`; `k`: the number of
    clusters (0: the largest id shown + 1)."""
    k = int(k) or int(np.nanmax(values, initial=-1)) + 1
    if names:
        k = max(k, max(int(c) for c in names) + 1)
    if k <= 0:
        raise FigureSkipped("cluster: no pixel has a cluster (every value is -1)")
    cmap = ListedColormap(_palette(k)).with_extremes(bad="#d9d9d9")
    norm = BoundaryNorm(np.arange(-0.5, k + 0.5), k)
    w, h = _map_size(view)
    fig = _figure(w + (1.5 if names else 0.6), h, layout="compressed")
    ax = fig.add_subplot()
    im = ax.imshow(
        np.ma.masked_less(values, 0),
        cmap=cmap,
        norm=norm,
        extent=view.extent,
        origin=view.origin,
        interpolation="nearest",
    )
    _label_axes(ax, view)
    ax.set_title(title + (f" ({_shown(view.step)})" if view.step > 1 else ""))
    cb = fig.colorbar(im, ax=ax, shrink=0.9, label="cluster" + (": class voted" if names else ""))
    ticks = np.arange(k) if k <= 32 else np.arange(0, k, math.ceil(k / 32))
    cb.set_ticks(ticks)  # type: ignore[arg-type]  # matplotlib takes any array-like of ticks
    names = {int(c): str(v) for c, v in (names or {}).items()}
    cb.set_ticklabels([f"{t}: {names[int(t)]}" if t in names else str(t) for t in ticks])
    cb.ax.tick_params(labelsize=8 if k > 12 else 9)
    return fig


# --------------------------------------------------------------------------- importance map


def _importance_norm(values: np.ndarray, scale: str | None) -> tuple[str, Normalize]:
    """Colour map and limits: -1..1 diverging for the signed scalings, 0..1 for "minmax"/"abs",
    otherwise symmetric diverging when the values have both signs, else the 2-98 % range."""
    if scale in ("maxabs", "centred"):
        return "RdBu_r", Normalize(-1.0, 1.0)
    if scale in ("minmax", "abs"):
        return IMPORTANCE_CMAP, Normalize(0.0, 1.0)
    lo, hi = np.nanpercentile(values, [2, 98])
    if lo < 0 < hi:
        m = max(abs(lo), abs(hi))
        return "RdBu_r", Normalize(-m, m)
    return IMPORTANCE_CMAP, Normalize(lo, hi if hi > lo else lo + 1e-12)


def draw_importance_map(
    values: np.ndarray, view: MapView, labels: Mapping[str, Any], *, title: str | None = None
) -> Figure:
    """`slamgeo.reporting.figures.fig_importance_map` from its raster `values (dim, y', x')`, `view` and `labels`
    (`slamgeo.reporting.figures.importance_raster`)."""
    values = np.asarray(values, dtype=np.float64)
    when, asked, scale = labels["when"], labels["asked"], labels.get("scale") or None
    if not np.isfinite(values).any():
        raise FigureSkipped(f"importance on {when}: no finite value (no data on that date?)")
    cmap_name, norm = _importance_norm(values, scale)
    cmap = colormaps[cmap_name].with_extremes(bad="#d9d9d9")
    n = values.shape[0]
    w, h = _map_size(view, n)
    fig = _figure(w, h + 0.3, layout="compressed")
    axes = fig.subplots(1, n, squeeze=False, sharex=True, sharey=True)[0]
    dims = list(labels.get("dims") or range(n))
    for ax, d, v in zip(axes, dims, values):
        im = ax.imshow(
            np.ma.masked_invalid(v),
            cmap=cmap,
            norm=norm,
            extent=view.extent,
            origin=view.origin,
            interpolation="nearest",
        )
        ax.set_title(f"embedding dimension {d}", fontsize=10)
        _label_axes(ax, view)
    for ax in axes[1:]:
        ax.set_ylabel("")
    nearest = f" (nearest acquisition to {asked})" if asked != when else ""
    fig.suptitle(
        title or f"Grad-SLAM date importance on {when}{nearest}" + (f", {_shown(view.step)}" if view.step > 1 else "")
    )
    lo, hi = np.nanmin(values), np.nanmax(values)
    assert norm.vmin is not None and norm.vmax is not None  # `_importance_norm` sets both
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[
        (bool(lo < norm.vmin), bool(hi > norm.vmax))
    ]
    fig.colorbar(
        im,
        ax=list(axes),
        shrink=0.85,
        extend=extend,
        label="Grad-SLAM importance" + (f" (scaling '{scale}')" if scale else ""),
    )
    return fig


# --------------------------------------------------------------------------- reconstruction error


def draw_recon_error_map(
    values: np.ndarray,
    view: MapView,
    *,
    units: str = "standardised units squared",
    title: str = "Reconstruction error of the autoencoder",
) -> Figure:
    """`slamgeo.reporting.figures.fig_recon_error_map` from its raster `values (y', x')` and `view`."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise FigureSkipped("recon_error: no finite value (no valid pixel)")
    hi = float(np.percentile(finite, 99))
    cmap = colormaps["magma"].with_extremes(bad="#d9d9d9")
    w, h = _map_size(view)
    fig = _figure(w + 0.6, h, layout="compressed")
    ax = fig.add_subplot()
    im = ax.imshow(
        np.ma.masked_invalid(values),
        cmap=cmap,
        vmin=0,
        vmax=hi if hi > 0 else 1e-12,
        extent=view.extent,
        origin=view.origin,
        interpolation="nearest",
    )
    _label_axes(ax, view)
    ax.set_title(
        f"{title}\nmedian {np.median(finite):.3g}, 99th percentile {hi:.3g}"
        + (f" ({_shown(view.step)})" if view.step > 1 else ""),
        fontsize=11,
    )
    fig.colorbar(im, ax=ax, shrink=0.9, extend="max", label=f"mean squared error ({units})")
    return fig


__all__ = [
    "DPI",
    "MapView",
    "date_label",
    "draw_cluster_map",
    "draw_importance_map",
    "draw_recon_error_map",
    "parse_date",
    "pick_date",
]
