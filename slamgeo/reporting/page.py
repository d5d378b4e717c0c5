"""The report page: every figure its inputs allow (`slamgeo.reporting.figures`), as PNGs and one
self-contained HTML page.

`make_report` draws what its inputs allow, writes every figure as a PNG into `out_dir` and an
`index.html` that embeds them (base64, so the page is one file), lists the figures it could not
draw with the reason, and writes `report.json` (the same list, for programs). `out_dir` may be a
local folder or an fsspec URL (`s3://bucket/report`); the folder is staged and published whole
(`slamgeo.io.storage.staged_folder`: a rename locally; on object storage `index.html` is
removed first and uploaded last), so its presence means the report is complete.

Under a distributed client (`slamgeo.jobs.runtime.current_client`) this process only
orchestrates: what the page needs here (the date of the importance map, the per-cluster
profiles, the class-pair variables) is computed as Dask reductions in one `dask.compute`, and
every figure is drawn as a task on a worker (`slamgeo.reporting.render`), the maps from their
thinned rasters and the scatters from their pixel samples computed there; only per-date and
per-cluster sums and the PNGs come back. Without a client, the same runs in this process.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import dask
import numpy as np
import xarray as xr

from slamgeo.errors import InputError
from slamgeo.io import storage
from slamgeo.jobs import faithfulness as faithfulness_stage
from slamgeo.jobs import pairs as pairs_stage
from slamgeo.jobs.parcels import PARCELS_PARTS, ParcelsResult, read_parcels_outputs
from slamgeo.method.checkpoint import TrainedModel
from slamgeo.reporting import FigureSkipped
from slamgeo.reporting.figures import (
    fig_class_importance,
    fig_confusion,
    fig_deletion_curve,
    fig_embedding_scatter,
    importance_raster,
    map_raster,
    slug,
)
from slamgeo.reporting.maps import (
    _check_dims,
    _grid,
    date_label,
    draw_cluster_map,
    draw_importance_map,
    draw_recon_error_map,
)
from slamgeo.reporting.readers import (
    cluster_sums,
    compute_together,
    date_score,
    default_groups,
    pick_most_important,
    profiles_from_sums,
    sample_lazy,
)
from slamgeo.reporting.render import FigureJob, draw_embedding_sample, draw_season, render_all
from slamgeo.reporting.seasons import composition_table, drift_table
from slamgeo.schema import CLASS, CONFUSED_PAIRS, REPORT_MARKER

PAIR_VARIABLES = ("pair_importance", "pair_importance_class")  # the class-pair figures' inputs

# --------------------------------------------------------------------------- the report


@dataclass
class ReportItem:
    """One figure of the report: its file (None when skipped) and why it was skipped."""

    key: str
    title: str
    caption: str = ""
    file: str | None = None
    skipped: str | None = None


def _sample_labels(results: xr.Dataset) -> tuple[str, xr.DataArray] | None:
    """A class-like coordinate on `sample` (crop, class, label, ...) of sample-form results."""
    cands = [c for c in results.coords if results[c].dims == ("sample",) and results[c].dtype.kind in "OUS"]
    for pref in ("crop", "class", "label", "class_name"):
        if pref in cands:
            return pref, results[pref]
    return (cast(str, cands[0]), results[cands[0]]) if cands else None  # read from Zarr: str names


class _Report:
    """The figures of the page in order (drawn or skipped), the drawing each drawn one waits
    for, and the tables shown before the figures."""

    def __init__(self) -> None:
        self.items: list[ReportItem] = []
        self.jobs: list[tuple[ReportItem, FigureJob]] = []
        self.tables: list[tuple[str, str]] = []  # (heading, HTML table) shown before the figures

    def add(self, key: str, title: str, caption: str, draw, /, *args, **kwargs) -> None:
        """A figure `draw(*args, **kwargs)` (a module-level function returning a Figure; its
        inputs small, or Dask collections computed where it is drawn), drawn by `render`."""
        item = ReportItem(key=key, title=title, caption=caption)
        self.items.append(item)
        self.jobs.append((item, FigureJob(key, draw, args, kwargs)))

    def skip(self, key: str, title: str, reason: str) -> None:
        self.items.append(ReportItem(key=key, title=title, skipped=reason))

    def render(self) -> dict[str, bytes]:
        """Draw every figure (on the Dask workers under a distributed client,
        `slamgeo.reporting.render`); returns the PNG bytes by file name. A figure that raised
        `FigureSkipped` is marked skipped with the reason."""
        from slamgeo.jobs.runtime import current_client

        pngs = {}
        for (item, _), (png, why) in zip(self.jobs, render_all([j for _, j in self.jobs], current_client())):
            if png is None:
                item.skipped = why
            else:
                item.file = f"{item.key}.png"
                pngs[item.file] = png
        return pngs


def make_report(
    results: xr.Dataset,
    out_dir: str | Path,
    *,
    cube: xr.Dataset | None = None,
    parcels_dir: str | Path | ParcelsResult | None = None,
    class_groups: Mapping[str, Sequence[str]] | None = None,
    date=None,
    faithfulness: Mapping | None = None,
    title: str = "slamgeo report",
    overwrite: bool = False,
    inputs: Sequence[str | Path] = (),
    pair_truth: Mapping[str, Sequence[str]] | None = None,
    drift: Mapping | None = None,
    reference_parcels_dir: str | Path | None = None,
) -> storage.Location:
    """Draw every figure the inputs allow, write them as PNGs into `out_dir` (a folder, created,
    or an fsspec URL), and an `index.html` that embeds them (base64) with the metrics and the
    run's provenance, and lists the figures that could not be drawn with the reason; also
    `report.json` (the same list). `index.html` is the marker of a complete report. Returns the
    location of `index.html` (a `Path`, or a URL).

    `results`: results store (`embedding (dim, *S)`, `importance (dim, time, *S)`,
    `recon_error (*S)`, optional `cluster (*S)`; S = (y, x), or (sample,) where maps are
    skipped). `cube`: the cube (`VV (time, *S)` dB) for per-cluster Fig. 4 profiles.
    `parcels_dir`: the output folder of `slamgeo parcels` (confusion matrices, class profiles,
    per-parcel embeddings, metrics), or the `ParcelsResult` of `slamgeo.jobs.parcels.parcels`. `class_groups`: group name -> classes, one Fig. 4 per group
    (default: the classes in groups of 4). `date`: the date of the importance map (default: the
    date of highest mean |importance|). `faithfulness`: deletion curves (see
    `fig_deletion_curve`). `pair_truth`: class -> its known distinctive window (start, end
    dates; a synthetic scene's `distinctive_windows`), for a table of how well the class-pair
    explanations point at it. `drift`: a season's drift.json (`slamgeo.pipeline.drift`), for the
    "season against season" section, with `reference_parcels_dir`, the parcels outputs of the
    season the model was trained on. An existing `out_dir` must be empty or, with `overwrite`, a report
    folder holding nothing else and none of `inputs` (the locations the data came from)
    (`slamgeo.io.storage.claim_output`); it is replaced once the new report is complete
    (`slamgeo.io.storage.staged_folder`).
    """
    out = storage.location(out_dir)
    page = storage.join(out, REPORT_MARKER)
    storage.claim_output(out, storage.REPORT, overwrite=overwrite, inputs=inputs)
    rep = _Report()
    if "embedding" not in results:
        raise InputError(f"results: no 'embedding' variable; found {sorted(map(str, results.data_vars))}")
    gridded = {"y", "x"} <= set(results["embedding"].dims)
    parts: dict[str, Any] = {}
    missing: dict[str, str] = {}
    if isinstance(parcels_dir, ParcelsResult):
        parts = parcels_dir.parts()
    elif parcels_dir is not None:
        parts, missing = read_parcels_outputs(parcels_dir)
    else:
        missing = {k: "no parcels output folder given (--parcels-dir)" for k in PARCELS_PARTS}
    metrics = parts.get("metrics") or {}
    names = {int(k): str(v) for k, v in (metrics.get("cluster_class") or {}).items()}
    got, why = _reductions(results, cube, parts, gridded=gridded, date=date)
    parts = {**parts, **{k: got[k] for k in ("profiles", "per_parcel") if k in got}}

    # Fig. 3
    for level in ("pixels", "parcels"):
        key = f"confusion_{level}"
        head = f"Fig. 3: confusion matrix, held-out {level}"
        if key not in parts:
            rep.skip(f"fig3_{key}", head, missing[key])
            continue
        sc = metrics.get(level) or {}
        acc = (
            f"overall accuracy {100 * sc['overall_accuracy']:.1f} %, kappa {sc['kappa']:.3f}"
            if {"overall_accuracy", "kappa"} <= set(sc)
            else ""
        )
        fig_title = f"Confusion matrix, held-out {level} (row-normalised, %)" + (f"\n{acc}" if acc else "")
        rep.add(
            f"fig3_{key}",
            head,
            f"Rows: reference class of the held-out {level}; columns: the class voted for their cluster; "
            f"each row in % of the class's {level}" + (f"; {acc}." if acc else "."),
            fig_confusion,
            parts[key],
            title=fig_title,
        )

    # Fig. 4 per class group
    if "profiles" in parts:
        prof = parts["profiles"]
        groups = (
            dict(class_groups) if class_groups else default_groups(prof[CLASS].values if CLASS in prof.dims else [])
        )
        if not groups:
            rep.skip(
                "fig4_class_importance",
                "Fig. 4: class profiles coloured by importance",
                "the class profiles hold no class",
            )
        for gname, classes in groups.items():
            rep.add(
                f"fig4_class_importance_{slug(gname)}",
                f"Fig. 4: {gname}",
                "Mean VV (dB) of each class's pixels against date, coloured by the class's mean Grad-SLAM "
                "importance, min-max normalised over time per class and embedding dimension.",
                fig_class_importance,
                prof,
                list(classes),
                title=f"Mean VV coloured by Grad-SLAM date importance: {gname}",
            )
    else:
        rep.skip("fig4_class_importance", "Fig. 4: class profiles coloured by importance", missing["profiles"])

    # per-cluster profiles (needs the cube)
    cprof = None
    head = "Cluster profiles coloured by importance"
    if cube is None:
        rep.skip("cluster_importance", head, "no cube given (--cube)")
    elif "cluster" not in results:
        rep.skip("cluster_importance", head, "the results have no 'cluster' variable (run `slamgeo cluster`)")
    else:
        try:
            if "cluster_sums" not in got:
                raise FigureSkipped(why["cluster_sums"])
            cprof = profiles_from_sums(got["cluster_sums"], results, names=names)
        except FigureSkipped as exc:
            rep.skip("cluster_importance", head, str(exc))
        else:
            for gname, labels in default_groups(cprof[CLASS].values, noun="clusters").items():
                rep.add(
                    f"cluster_importance_{slug(gname)}",
                    f"Cluster profiles: {gname}",
                    "Mean VV (dB) of a sample of each cluster's pixels, coloured by their mean Grad-SLAM "
                    "importance (min-max normalised over time): what the model sees, without labels.",
                    fig_class_importance,
                    cprof,
                    labels,
                    title="Mean VV per cluster coloured by Grad-SLAM date importance",
                    legend_title="cluster" + (": class voted" if names else ""),
                )

    # class pairs (or, without labels, cluster pairs): the contrastive importance of the
    # direction between two classes' mean embeddings
    if "pairs" in got:
        pair_profiles = parts.get("profiles")
        if pair_profiles is None and cprof is not None and not names:
            pair_profiles = cprof  # cluster pairs: profiles named "cluster i"
        _pair_figures(rep, got["pairs"], pair_profiles, pair_truth)

    if drift is not None:
        _season_section(rep, drift, reference_parcels_dir, parts)

    # maps
    if not gridded:
        no_map = "sample-form results (dims (dim, sample)): a table of parcels or points has no map"
        for key, head in (
            ("map_cluster", "Cluster map"),
            ("map_importance", "Importance map"),
            ("map_recon_error", "Reconstruction-error map"),
        ):
            rep.skip(key, head, no_map)
    else:
        _maps(rep, results, names, date, got.get("score"))

    # embedding scatters
    lab = None if gridded else _sample_labels(results)
    if lab is not None:
        cname = lab[0]
        _scatter(
            rep,
            "embedding_samples_class",
            "Embedding coloured by class",
            f"Embedding of each sample coloured by its reference class ('{cname}').",
            results,
            cname,
            title="CAE embedding of the samples",
        )
    if "cluster" in results:
        _scatter(
            rep,
            "embedding_pixels_cluster",
            "Embedding coloured by cluster",
            "Embedding of a random sample of pixels, coloured by their k-Means cluster.",
            results,
            "cluster",
            title="CAE embedding of the pixels",
            label_name="cluster" + (": class voted" if names else ""),
            names={c: f"{c}: {n}" for c, n in names.items()},
        )
    elif lab is None:
        rep.skip(
            "embedding_pixels_cluster",
            "Embedding coloured by cluster",
            "the results have no 'cluster' variable (run `slamgeo cluster`)",
        )
    if "per_parcel" in parts:
        pp = parts["per_parcel"]
        if "label" in pp.coords and "embedding" in pp:
            rep.add(
                "embedding_parcels_class",
                "Embedding of the parcels coloured by class",
                "Mean embedding of each parcel's pixels, coloured by the parcel's reference class.",
                fig_embedding_scatter,
                pp["embedding"],
                pp["label"],
                title="Mean CAE embedding of the parcels",
            )
        else:
            rep.skip(
                "embedding_parcels_class",
                "Embedding of the parcels coloured by class",
                "parcels.zarr has no 'embedding' variable or 'label' coordinate",
            )
    else:
        rep.skip("embedding_parcels_class", "Embedding of the parcels coloured by class", missing["per_parcel"])

    # faithfulness
    if faithfulness is None:
        rep.skip(
            "faithfulness_deletion",
            "Faithfulness (deletion) curves",
            "no deletion curves given (pass the model to slamgeo.report, or compute them with "
            "slamgeo.faithfulness, save them with slamgeo.reporting.readers.save_curves and pass --faithfulness)",
        )
    else:
        rep.add(
            "faithfulness_deletion",
            "Faithfulness (deletion) curves",
            "How far an embedding dimension moves when the k dates an explanation ranks highest are deleted "
            "(replaced by interpolation), against k dates chosen at random: a faithful explanation moves it more.",
            fig_deletion_curve,
            faithfulness,
        )

    pngs = rep.render()
    manifest = {"title": title, "figures": [asdict(i) for i in rep.items]}
    with storage.staged_folder(out, storage.REPORT) as tmp:  # index.html is the marker, written last
        for name, png in pngs.items():
            (tmp / name).write_bytes(png)
        (tmp / "report.json").write_text(json.dumps(manifest, indent=2))
        (tmp / REPORT_MARKER).write_text(_html(title, rep.items, pngs, results.attrs, metrics, rep.tables))
    return page


def _season_section(rep: _Report, drift: Mapping, reference_dir: str | Path | None, parts: Mapping[str, Any]) -> None:
    """The season against the season its model was trained on: the drift table, the class
    composition of both seasons, and both seasons' class profiles coloured by importance."""
    ref, name = str(drift.get("reference_season")), str(drift.get("season"))
    rep.tables.append((f"Season against season: {name} against {ref}", drift_table(drift)))
    ref_parts: dict[str, Any] = {}
    why = f"no parcels outputs of season {ref}"
    if reference_dir is not None:
        try:
            ref_parts, missing = read_parcels_outputs(reference_dir)
        except InputError as exc:
            why = str(exc)
        else:
            why = missing.get("profiles", why)
    if "confusion_pixels" in ref_parts and "confusion_pixels" in parts:
        rep.tables.append(
            (
                f"Class composition, {ref} and {name} (% of labelled pixels)",
                composition_table(ref_parts["confusion_pixels"], parts["confusion_pixels"], (ref, name)),
            )
        )
    key, head = "season_against_season", f"Season against season: {name} against {ref}"
    if "profiles" not in ref_parts or "profiles" not in parts:
        rep.skip(key, head, why if "profiles" not in ref_parts else f"no class profiles of season {name}")
        return
    rep.add(
        key,
        head,
        f"Mean VV (dB) of the classes whose importance moved most, in season {ref} (the model's) and {name}, "
        "coloured by the one model's class-mean Grad-SLAM importance on each (min-max normalised per class); "
        "both on the model's dates.",
        draw_season,
        dict(drift),
        ref_parts["profiles"],
        parts["profiles"],
        title=f"Season {name} against season {ref}: mean VV coloured by importance",
    )


def _reductions(
    results: xr.Dataset, cube: xr.Dataset | None, parts: Mapping[str, Any], *, gridded: bool, date
) -> tuple[dict[str, Any], dict[str, str]]:
    """What the page needs in this process, computed together in one `dask.compute` (on the
    workers under a distributed client; only the reduced values come back): `score`, the mean
    |importance| per date (`date_score`, when no `date` is given); `cluster_sums`
    (`cluster_sums`); `pairs`, the class-pair variables; `profiles` and `per_parcel`, the
    parcels outputs still lazy. Returns them, and why a reduction could not be built."""
    want: dict[str, Any] = {}
    why: dict[str, str] = {}
    if gridded and "importance" in results and date is None:
        want["score"] = date_score(results["importance"])
    if cube is not None and "cluster" in results:
        try:
            if "importance" not in results:
                raise FigureSkipped("the results have no 'importance' variable")
            want["cluster_sums"] = cluster_sums(results, cube)
        except FigureSkipped as exc:
            why["cluster_sums"] = str(exc)
    if "pair_importance_class" in results:
        want["pairs"] = results[[v for v in PAIR_VARIABLES if v in results]]
    for key in ("profiles", "per_parcel"):
        if key in parts and dask.is_dask_collection(parts[key]):
            pp = parts[key]
            want[key] = pp[["embedding"]] if key == "per_parcel" and "embedding" in pp else pp
    return dict(zip(want, compute_together(list(want.values())))), why


def _grid_raster(results: xr.Dataset, name: str) -> tuple[xr.DataArray, xr.DataArray, Any]:
    """`results[name]` on the (y, x) grid, its strided raster and view (`map_raster`);
    `FigureSkipped` when it is not a map."""
    da = _grid(results[name], name)
    _check_dims(da, ("y", "x"), name)
    return (da, *map_raster(da))


def _grid_map(
    rep: _Report,
    results: xr.Dataset,
    name: str,
    item: tuple[str, str],
    caption: str,
    draw: Callable[..., Any],
    options: Callable[[xr.DataArray], dict[str, Any]],
) -> None:
    """The map of `results[name]` as the report's `item` (key, title), drawn by `draw` from its
    strided raster with `options(variable)`; skipped with the reason when it is not a map."""
    try:
        da, thin, view = _grid_raster(results, name)
    except FigureSkipped as exc:
        rep.skip(*item, str(exc))
        return
    rep.add(*item, caption, draw, thin.data, view, **options(da))


def _maps(rep: _Report, results: xr.Dataset, names: Mapping[int, str], date, score) -> None:
    """The cluster, importance (on `date`, else the date of highest `score`) and
    reconstruction-error maps: each a strided raster of the grid, computed where it is drawn."""
    if "cluster" in results:
        _grid_map(
            rep,
            results,
            "cluster",
            ("map_cluster", "Cluster map"),
            "k-Means cluster of every pixel (grey: no data)"
            + ("; the colour bar names the class each cluster was voted into." if names else "."),
            draw_cluster_map,
            lambda da: {"k": int(da.attrs.get("k", 0)), "names": names or None},
        )
    else:
        rep.skip("map_cluster", "Cluster map", "the results have no 'cluster' variable (run `slamgeo cluster`)")
    if "importance" in results:
        try:
            when = date if date is not None else pick_most_important(results["time"].values, score)
            thin, view, labels = importance_raster(results["importance"], when)
        except (FigureSkipped, InputError) as exc:  # no finite importance; a date outside the acquisitions
            rep.skip("map_importance", "Importance map", str(exc))
        else:
            how = "the date asked for" if date is not None else "the date of highest mean |importance|"
            rep.add(
                "map_importance",
                f"Importance map, {date_label(when)}",
                f"Grad-SLAM importance of every pixel on {how}, per embedding dimension.",
                draw_importance_map,
                thin.data,
                view,
                labels,
            )
    else:
        rep.skip("map_importance", "Importance map", "the results have no 'importance' variable")
    if "recon_error" in results:
        _grid_map(
            rep,
            results,
            "recon_error",
            ("map_recon_error", "Reconstruction-error map"),
            "Mean squared reconstruction error of the autoencoder per pixel (standardised units): "
            "high where the pixel's series is unlike what the model learnt.",
            draw_recon_error_map,
            lambda da: {"units": str(da.attrs.get("units", "standardised units squared"))},
        )
    else:
        rep.skip("map_recon_error", "Reconstruction-error map", "the results have no 'recon_error' variable")


def _scatter(rep: _Report, key: str, head: str, caption: str, results: xr.Dataset, label_var: str, **options) -> None:
    """An embedding scatter of a sample of pixels (`sample_lazy`: embeddings `(D, n)` and
    labels `(n,)`, read where the figure is drawn) coloured by `label_var`."""
    try:
        sub = sample_lazy(results, ["embedding", label_var])
    except FigureSkipped as exc:
        rep.skip(key, head, str(exc))
        return
    rep.add(key, head, caption, draw_embedding_sample, sub["embedding"], sub[label_var], **options)


# --------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
figure { margin: 2em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; margin-top: .4em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 90%; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f4f4f4; }
.skipped li { margin: .3em 0; }
code { background: #f4f4f4; padding: 0 .2em; }
"""

_PROVENANCE_KEYS = (
    "slamgeo_version",
    "model_checksum",
    "model_dir",
    "input",
    "input_fingerprint",
    "scale",
    "layers",
    "gap_fill",
    "importance_dtype",
)


def _metrics_html(metrics: dict) -> str:
    if not metrics:
        return ""
    rows = []
    for level in ("pixels", "parcels"):
        sc = metrics.get(level)
        if isinstance(sc, dict) and "overall_accuracy" in sc:
            rows.append(
                f"<tr><td>held-out {level}</td><td>{100 * sc['overall_accuracy']:.1f} %</td>"
                f"<td>{sc.get('kappa', float('nan')):.3f}</td><td>{sc.get('macro_f1', float('nan')):.3f}</td>"
                f"<td>{sc.get('n', float('nan')):,.0f}</td></tr>"
            )
    parts = ["<h2>Accuracy</h2>"]
    if rows:
        parts.append(
            "<table><tr><th>evaluated on</th><th>overall accuracy</th><th>kappa</th><th>macro F1</th>"
            "<th>units</th></tr>" + "".join(rows) + "</table>"
        )
    pix = metrics.get("pixels", {}).get("per_class") if isinstance(metrics.get("pixels"), dict) else None
    if pix:
        body = "".join(
            f"<tr><td>{html.escape(str(c))}</td><td>{v.get('precision', 0):.3f}</td><td>{v.get('recall', 0):.3f}</td>"
            f"<td>{v.get('f1', 0):.3f}</td><td>{v.get('support', 0):,.0f}</td></tr>"
            for c, v in pix.items()
        )
        parts.append(
            "<details><summary>Per-class scores (held-out pixels)</summary><table><tr><th>class</th>"
            "<th>precision</th><th>recall</th><th>F1</th><th>pixels</th></tr>" + body + "</table></details>"
        )
    if metrics.get("cluster_class"):
        body = "".join(
            f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
            for k, v in metrics["cluster_class"].items()
        )
        parts.append(
            "<details><summary>Class voted for each cluster</summary><table><tr><th>cluster</th>"
            "<th>class</th></tr>" + body + "</table></details>"
        )
    return "\n".join(parts)


def _html(
    title: str,
    items: list[ReportItem],
    pngs: Mapping[str, bytes],
    attrs: Mapping,
    metrics: dict,
    tables: Sequence[tuple[str, str]] = (),
) -> str:
    esc = html.escape
    prov = [(k, attrs[k]) for k in _PROVENANCE_KEYS if k in attrs]
    if "dates" in attrs:
        dates = str(attrs["dates"]).split(",")
        prov.append(("dates", f"{len(dates)} acquisitions, {dates[0]} .. {dates[-1]}"))
    body = [f"<h1>{esc(title)}</h1>"]
    if prov:
        body.append(
            "<h2>Run</h2><table>"
            + "".join(f"<tr><th>{esc(str(k))}</th><td><code>{esc(str(v))}</code></td></tr>" for k, v in prov)
            + "</table>"
        )
    body.append(_metrics_html(metrics))
    body.extend(f"<h2>{esc(head)}</h2>{table}" for head, table in tables)
    drawn = [i for i in items if i.file]
    skipped = [i for i in items if i.skipped]
    if drawn:
        links = "".join(f'<li><a href="#{esc(i.key)}">{esc(i.title)}</a></li>' for i in drawn)
        body.append(f"<h2>Figures</h2><ul>{links}</ul>")
    for i in drawn:
        assert i.file is not None  # `drawn` holds the items with a file
        data = base64.b64encode(pngs[i.file]).decode("ascii")
        body.append(
            f'<figure id="{esc(i.key)}"><h3>{esc(i.title)}</h3>'
            f'<img src="data:image/png;base64,{data}" alt="{esc(i.title)}" data-file="{esc(i.file)}">'
            f'<figcaption>{esc(i.caption)} <a href="{esc(i.file)}">{esc(i.file)}</a></figcaption></figure>'
        )
    if skipped:
        body.append(
            '<h2>Skipped figures</h2><ul class="skipped">'
            + "".join(
                f'<li id="skipped-{esc(i.key)}"><b>{esc(i.title)}</b>: {esc(i.skipped or "")}</li>' for i in skipped
            )
            + "</ul>"
        )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _pair_figures(
    rep: _Report, results: xr.Dataset, profiles: xr.Dataset | None, truth: Mapping[str, Sequence[str]] | None
) -> None:
    """One Fig. 4-style figure per class pair (`slamgeo.jobs.pairs.pair_importance`): both
    classes' mean VV, coloured by the contrastive importance; the caption names the dates that
    separate them most. `truth`: class -> its known distinctive window (start, end), for a
    table of how well each pair's importance points at it (`window_accuracy`)."""
    from slamgeo.jobs.pairs import separating_dates, window_accuracy

    rows = []

    times = results["pair_importance"]["time"].values
    for p in results["pair"].values:
        a, b = str(results["pair_a"].sel(pair=p).values), str(results["pair_b"].sel(pair=p).values)
        key, head = f"pair_{slug(a)}_{slug(b)}", f"Why {a} and {b} differ for the model"
        if profiles is None or not {a, b} <= {str(c) for c in profiles[CLASS].values}:
            rep.skip(key, head, "no class profiles of both classes (parcels outputs)")
            continue
        dates = separating_dates(results["pair_importance"].sel(pair=p).values, times)
        known = [(c, (str(truth[c][0]), str(truth[c][1]))) for c in (a, b) if truth and c in truth]
        if known:
            acc = window_accuracy(results["pair_importance"].sel(pair=p).values, times, [w for _, w in known])
            where = "; ".join(f"{c} {w[0]} .. {w[1]}" for c, w in known)
            rows.append((a, b, where, acc))
        vv = profiles["VV"].sel({CLASS: [a, b]})
        # |importance|: a date that moves a pixel strongly against the direction separates too
        imp = np.abs(results["pair_importance_class"].sel(pair=p).values)[:, None, :]  # (member, 1, time)
        ds = xr.Dataset(
            {"VV": vv, "importance": ((CLASS, "dim", "time"), imp)},
            coords={CLASS: [a, b], "dim": [0], "time": vv["time"].values},
        )
        rep.add(
            key,
            head,
            f"Mean VV (dB) of {a} and {b}, coloured by |Grad-SLAM importance| of the direction from {a}'s "
            f"mean embedding to {b}'s (min-max normalised over time per class). "
            f"The dates that separate {a} and {b} most: {', '.join(dates)}.",
            fig_class_importance,
            ds,
            [a, b],
            title=f"{a} vs {b}: contrastive date importance",
        )
    if rows:
        cells = "".join(
            f"<tr><td>{html.escape(a)} / {html.escape(b)}</td><td>{html.escape(w)}</td>"
            f"<td>{acc['share_ratio']:.2f}</td><td>{acc['auroc']:.2f}</td></tr>"
            for a, b, w, acc in rows
        )
        rep.tables.append(
            (
                "Class-pair explanations against the known truth",
                "<p>The share of |contrastive importance| inside the dates that truly separate the two classes, "
                "divided by those dates' share of the season (1 = no better than a flat map), and the AUROC of "
                "|importance| as a score of those dates.</p><table><tr><th>pair</th><th>known window</th>"
                f"<th>share / uniform</th><th>AUROC</th></tr>{cells}</table>",
            )
        )


def report(
    results: xr.Dataset,
    parcels: ParcelsResult | str | Path | None,
    out_dir: str | Path,
    *,
    cube: xr.Dataset | None = None,
    model: TrainedModel | None = None,
    pairs: Sequence[Sequence[str]] | None = None,
    confused: int = CONFUSED_PAIRS,
    overwrite: bool = False,
    **options,
) -> storage.Location:
    """The report of a run into `out_dir`: `make_report` with the parcels stage's result (or
    its output folder, or None). `options`: `class_groups`, `date`, `faithfulness`, `title`,
    `inputs`, `pair_truth`, `drift`, `reference_parcels_dir`. Returns the location of `index.html`.

    With the run's `model` (and its `cube`), the report holds what the season pipeline's does:
    the deletion curves (`slamgeo.jobs.faithfulness.faithfulness`) unless `faithfulness` is
    given, and the class-pair figures (`slamgeo.jobs.pairs.pairs`: the `confused` most confused
    classes of `parcels` and the `pairs` asked for; without parcels, the nearest k-Means
    centres) unless the results hold them already."""
    if model is None and pairs:
        raise InputError("report: pairs= needs model= and cube=, to explain the pairs")
    if model is not None:
        if cube is None:
            raise InputError("report: model= needs cube=, the cube the results were explained from")
        if options.get("faithfulness") is None:
            options["faithfulness"] = faithfulness_stage.faithfulness(results, cube, model)
        if "pair_importance_class" not in results:
            results = pairs_stage.pairs(results, parcels, pairs, confused, cube=cube, model=model)
    return make_report(results, out_dir, cube=cube, parcels_dir=parcels, overwrite=overwrite, **options)


__all__ = ["ReportItem", "make_report", "report"]
