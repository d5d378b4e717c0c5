"""Drawing the report's figures as PNGs: on the Dask workers when a distributed client is
active, in this process otherwise.

A figure is a `FigureJob`: a module-level drawing function (`slamgeo.reporting.figures`,
`slamgeo.reporting.maps`, or one below) and its inputs. Inputs are small numpy, pandas or
xarray objects, or Dask collections (a map's thinned raster, a sample of pixels) that are
computed where the figure is drawn: `render_all` computes them on the workers
(`Client.compute`) and hands the futures to the drawing tasks, so their values never pass
through this process; inputs over `SCATTER_BYTES` are sent once (`Client.scatter`) rather
than inside a task. Every figure is submitted at once and gathered; a figure that raises
`FigureSkipped` comes back as the reason, wherever it was drawn. Without a client, the Dask
inputs are computed in one `dask.compute` and the figures drawn here, one after the other.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dask
from dask.sizeof import sizeof

from slamgeo.reporting import FigureSkipped
from slamgeo.reporting.maps import DPI
from slamgeo.reporting.readers import as_delayed, compute_together

if TYPE_CHECKING:
    from distributed import Client
    from matplotlib.figure import Figure

SCATTER_BYTES = 1_000_000  # an input larger than this is scattered to the workers, not put in a task
RENDER_PREFIX = "report-figure"  # the key prefix of the drawing tasks (task stream, dashboard)

Rendered = tuple[bytes | None, str | None]  # (PNG bytes, None) or (None, why the figure was skipped)


@dataclass
class FigureJob:
    """One figure to draw: `draw(*args, **kwargs)` returns a matplotlib Figure; `key` names it."""

    key: str
    draw: Callable[..., Figure]
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


def render_png(draw: Callable[..., Figure], args: Sequence[Any], kwargs: Mapping[str, Any]) -> Rendered:
    """Draw a figure and encode it as PNG (`DPI`): (the PNG bytes, None), or (None, the
    reason) when the drawing raises `FigureSkipped`."""
    try:
        fig = draw(*args, **kwargs)
    except FigureSkipped as exc:
        return None, str(exc)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue(), None


def _lazy(value: Any) -> bool:
    return dask.is_dask_collection(value)


def render_all(jobs: Sequence[FigureJob], client: Client | None = None) -> list[Rendered]:
    """Every job's PNG (or skip reason), in order: drawn as tasks on the workers of `client`
    (all submitted at once), or here without one."""
    if not jobs:
        return []
    slots = [(i, where) for i, job in enumerate(jobs) for where in [*range(len(job.args)), *job.kwargs]]
    args = [list(job.args) for job in jobs]
    kwargs = [dict(job.kwargs) for job in jobs]

    def get(i: int, where: int | str) -> Any:
        return args[i][where] if isinstance(where, int) else kwargs[i][where]

    def put(i: int, where: int | str, value: Any) -> None:
        if isinstance(where, int):
            args[i][where] = value
        else:
            kwargs[i][where] = value

    lazy = [(i, w) for i, w in slots if _lazy(get(i, w))]
    if client is None:
        for (i, w), value in zip(lazy, compute_together([get(i, w) for i, w in lazy])):
            put(i, w, value)
        return [render_png(job.draw, a, k) for job, a, k in zip(jobs, args, kwargs)]

    for (i, w), fut in zip(lazy, client.compute(as_delayed([get(i, w) for i, w in lazy]))):
        put(i, w, fut)
    big = [(i, w) for i, w in slots if (i, w) not in lazy and sizeof(get(i, w)) > SCATTER_BYTES]
    if big:
        for (i, w), fut in zip(big, client.scatter([get(i, w) for i, w in big], hash=False)):
            put(i, w, fut)
    futures = [
        client.submit(render_png, job.draw, a, k, key=f"{RENDER_PREFIX}-{job.key}-{uuid.uuid4().hex}", pure=False)
        for job, a, k in zip(jobs, args, kwargs)
    ]
    return list(client.gather(futures))


# --------------------------------------------------------------------------- drawing helpers


def draw_embedding_sample(embedding, labels, **options) -> Figure:
    """`fig_embedding_scatter` of a sample of pixels: `embedding (D, n)`, `labels (n,)`."""
    from slamgeo.reporting.figures import fig_embedding_scatter

    return fig_embedding_scatter(embedding.T, labels, **options)


def draw_season(drift: Mapping, reference, profiles, *, title: str) -> Figure:
    """The "season against season" Fig. 4: both seasons' profiles (`season_profiles`) of the
    classes whose importance moved most."""
    from slamgeo.reporting.figures import fig_class_importance
    from slamgeo.reporting.seasons import most_changed_classes, season_profiles

    prof = season_profiles(drift, reference, profiles, most_changed_classes(drift))
    return fig_class_importance(prof, [str(c) for c in prof["class"].values], title=title)


__all__ = ["FigureJob", "draw_embedding_sample", "draw_season", "render_all", "render_png"]
