"""The report page: every figure its inputs allow (`slamgeo.reporting.figures`), as PNGs and one
self-contained HTML page.

`make_report` draws what its inputs allow, writes every figure as a PNG into `out_dir` and an
`index.html` that embeds them (base64, so the page is one file), lists the figures it could not
draw with the reason, and writes `report.json` (the same list, for programs). `out_dir` may be a
local folder or an fsspec URL (`s3://bucket/report`); the folder is staged and published whole
(`slamgeo.io.storage.staged_folder`: a rename locally; on object storage `index.html` is
removed first and uploaded last), so its presence means the report is complete.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

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
    DPI,
    date_label,
    fig_class_importance,
    fig_cluster_map,
    fig_confusion,
    fig_deletion_curve,
    fig_embedding_scatter,
    fig_importance_map,
    fig_recon_error_map,
    pick_date,
    slug,
)
from slamgeo.reporting.readers import cluster_profiles, default_groups, most_important_date, sample_variables
from slamgeo.reporting.seasons import composition_table, drift_table, most_changed_classes, season_profiles
from slamgeo.schema import CLASS, CONFUSED_PAIRS, REPORT_MARKER

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
    """The figures drawn so far: their items, and each PNG's bytes by file name."""

    def __init__(self) -> None:
        self.items: list[ReportItem] = []
        self.pngs: dict[str, bytes] = {}
        self.tables: list[tuple[str, str]] = []  # (heading, HTML table) shown before the figures

    def add(self, key: str, title: str, caption: str, draw) -> None:
        """Draw a figure (a callable returning a Figure) and save it; `FigureSkipped` skips it."""
        item = ReportItem(key=key, title=title, caption=caption)
        try:
            fig = draw()
        except FigureSkipped as exc:
            item.skipped = str(exc)
        else:
            name = f"{key}.png"
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=DPI)
            self.pngs[name] = buf.getvalue()
            item.file = name
        self.items.append(item)

    def skip(self, key: str, title: str, reason: str) -> None:
        self.items.append(ReportItem(key=key, title=title, skipped=reason))


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
            lambda cm=parts[key], t=fig_title: fig_confusion(cm, title=t),
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
                lambda p=prof, c=list(classes), g=gname: fig_class_importance(
                    p, c, title=f"Mean VV coloured by Grad-SLAM date importance: {g}"
                ),
            )
    else:
        rep.skip("fig4_class_importance", "Fig. 4: class profiles coloured by importance", missing["profiles"])

    # per-cluster profiles (needs the cube)
    cprof = None
    if cube is None:
        rep.skip("cluster_importance", "Cluster profiles coloured by importance", "no cube given (--cube)")
    elif "cluster" not in results:
        rep.skip(
            "cluster_importance",
            "Cluster profiles coloured by importance",
            "the results have no 'cluster' variable (run `slamgeo cluster`)",
        )
    else:
        try:
            cprof = cluster_profiles(results, cube, names=names)
        except FigureSkipped as exc:
            rep.skip("cluster_importance", "Cluster profiles coloured by importance", str(exc))
        else:
            for gname, labels in default_groups(cprof[CLASS].values, noun="clusters").items():
                rep.add(
                    f"cluster_importance_{slug(gname)}",
                    f"Cluster profiles: {gname}",
                    "Mean VV (dB) of a sample of each cluster's pixels, coloured by their mean Grad-SLAM "
                    "importance (min-max normalised over time): what the model sees, without labels.",
                    lambda p=cprof, c=labels: fig_class_importance(
                        p,
                        c,
                        title="Mean VV per cluster coloured by Grad-SLAM date importance",
                        legend_title="cluster" + (": class voted" if names else ""),
                    ),
                )

    # class pairs (or, without labels, cluster pairs): the contrastive importance of the
    # direction between two classes' mean embeddings
    if "pair_importance_class" in results:
        pair_profiles = parts.get("profiles")
        if pair_profiles is None and cprof is not None and not names:
            pair_profiles = cprof  # cluster pairs: profiles named "cluster i"
        _pair_figures(rep, results, pair_profiles, pair_truth)

    if drift is not None:
        _season_section(rep, drift, reference_parcels_dir, parts)

    # maps
    no_map = "sample-form results (dims (dim, sample)): a table of parcels or points has no map"
    if not gridded:
        for key, head in (
            ("map_cluster", "Cluster map"),
            ("map_importance", "Importance map"),
            ("map_recon_error", "Reconstruction-error map"),
        ):
            rep.skip(key, head, no_map)
    else:
        if "cluster" in results:
            rep.add(
                "map_cluster",
                "Cluster map",
                "k-Means cluster of every pixel (grey: no data)"
                + ("; the colour bar names the class each cluster was voted into." if names else "."),
                lambda: fig_cluster_map(results["cluster"], names=names or None),
            )
        else:
            rep.skip("map_cluster", "Cluster map", "the results have no 'cluster' variable (run `slamgeo cluster`)")
        if "importance" in results:
            try:
                when = date if date is not None else most_important_date(results["importance"])
                pick_date(results["time"].values, when)
            except (FigureSkipped, InputError) as exc:  # no finite importance; a date outside the acquisitions
                rep.skip("map_importance", "Importance map", str(exc))
            else:
                how = "the date asked for" if date is not None else "the date of highest mean |importance|"
                rep.add(
                    "map_importance",
                    f"Importance map, {date_label(when)}",
                    f"Grad-SLAM importance of every pixel on {how}, per embedding dimension.",
                    lambda: fig_importance_map(results["importance"], when),
                )
        else:
            rep.skip("map_importance", "Importance map", "the results have no 'importance' variable")
        if "recon_error" in results:
            rep.add(
                "map_recon_error",
                "Reconstruction-error map",
                "Mean squared reconstruction error of the autoencoder per pixel (standardised units): "
                "high where the pixel's series is unlike what the model learnt.",
                lambda: fig_recon_error_map(results["recon_error"]),
            )
        else:
            rep.skip("map_recon_error", "Reconstruction-error map", "the results have no 'recon_error' variable")

    # embedding scatters
    lab = None if gridded else _sample_labels(results)
    if lab is not None:
        cname, cda = lab
        rep.add(
            "embedding_samples_class",
            "Embedding coloured by class",
            f"Embedding of each sample coloured by its reference class ('{cname}').",
            lambda: fig_embedding_scatter(*_scatter_inputs(results, cname), title="CAE embedding of the samples"),
        )
    if "cluster" in results:
        rep.add(
            "embedding_pixels_cluster",
            "Embedding coloured by cluster",
            "Embedding of a random sample of pixels, coloured by their k-Means cluster.",
            lambda: fig_embedding_scatter(
                *_scatter_inputs(results, "cluster"),
                title="CAE embedding of the pixels",
                label_name="cluster" + (": class voted" if names else ""),
                names={c: f"{c}: {n}" for c, n in names.items()},
            ),
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
                lambda: fig_embedding_scatter(pp["embedding"], pp["label"], title="Mean CAE embedding of the parcels"),
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
            lambda: fig_deletion_curve(faithfulness),
        )

    manifest = {"title": title, "figures": [asdict(i) for i in rep.items]}
    with storage.staged_folder(out, storage.REPORT) as tmp:  # index.html is the marker, written last
        for name, png in rep.pngs.items():
            (tmp / name).write_bytes(png)
        (tmp / "report.json").write_text(json.dumps(manifest, indent=2))
        (tmp / REPORT_MARKER).write_text(_html(title, rep.items, rep.pngs, results.attrs, metrics, rep.tables))
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
        lambda: fig_class_importance(
            prof := season_profiles(drift, ref_parts["profiles"], parts["profiles"], most_changed_classes(drift)),
            [str(c) for c in prof[CLASS].values],
            title=f"Season {name} against season {ref}: mean VV coloured by importance",
        ),
    )


def _scatter_inputs(results: xr.Dataset, label_var: str) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings `(n, D)` and labels `(n,)` of a sample of pixels."""
    sub = sample_variables(results, ["embedding", label_var])
    return sub["embedding"].T, sub[label_var]


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
            lambda d=ds, c=[a, b]: fig_class_importance(d, c, title=f"{c[0]} vs {c[1]}: contrastive date importance"),
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
