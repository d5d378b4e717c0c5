"""`slamgeo report RESULTS.zarr --out DIR`: PNG figures and one self-contained HTML page."""

from __future__ import annotations

import typer

from slamgeo.cli import options as opt
from slamgeo.cli._app import app


@app.command("report")
def report_cmd(
    results: str = typer.Argument(..., help="Results Zarr store written by `slamgeo explain` (clustered or not)."),
    out: str = opt.out(
        "Output folder or URL for the PNGs, index.html and report.json (created; an existing one must be empty or a slamgeo report)."
    ),
    cube: str | None = typer.Option(
        None, help="Cube Zarr store: adds the per-cluster VV profiles coloured by importance."
    ),
    parcels_dir: str | None = typer.Option(
        None, "--parcels-dir", help="Output folder of `slamgeo parcels`: confusion matrices, class profiles, metrics."
    ),
    date: str | None = typer.Option(
        None, help="Date of the importance map, YYYY-MM-DD (default: the date of highest mean |importance|)."
    ),
    groups: str | None = typer.Option(
        None,
        help='JSON or YAML file of class groups for Fig. 4, e.g. {"confusable": ["cotton", "pepper"]} '
        "(default: the classes in groups of 4).",
    ),
    faithfulness: str | None = typer.Option(
        None, help="JSON of deletion curves (slamgeo.reporting.readers.save_curves) for the faithfulness figure."
    ),
    title: str = typer.Option("slamgeo report", help="Title of the HTML page."),
    overwrite: bool = typer.Option(
        False, help="Replace a slamgeo report at --out (never a folder holding anything else)."
    ),
) -> None:
    """Draw the report's figures (Fig. 3 confusion matrix, Fig. 4 class profiles coloured by
    Grad-SLAM importance, cluster / importance / reconstruction-error maps, embedding scatters,
    faithfulness curves) as PNGs and embed them in OUT/index.html; prints that path. A figure
    its inputs do not allow is listed in the page as skipped, with the reason. Every location
    may be a local path or an fsspec URL (s3://bucket/...)."""
    from slamgeo.errors import InputError
    from slamgeo.io import storage
    from slamgeo.io.cube import open_cube, open_results
    from slamgeo.reporting.figures import parse_date
    from slamgeo.reporting.page import make_report
    from slamgeo.reporting.readers import load_curves, read_groups

    if date is not None:
        try:
            parse_date(date)
        except InputError as exc:
            raise InputError(f"--date {date!r}: expected YYYY-MM-DD") from exc
    if parcels_dir is not None and not storage.isdir(parcels_dir):
        raise InputError(f"--parcels-dir {parcels_dir}: no such folder (expected what `slamgeo parcels --out` writes)")
    class_groups = read_groups(groups) if groups is not None else None
    curves = load_curves(faithfulness) if faithfulness is not None else None
    ds = open_results(results)
    cb = open_cube(cube) if cube else None
    page = make_report(
        ds,
        out,
        cube=cb,
        parcels_dir=parcels_dir,
        class_groups=class_groups,
        date=date,
        faithfulness=curves,
        title=title,
        overwrite=overwrite,
        inputs=[p for p in (results, cube, parcels_dir, groups, faithfulness) if p],
    )
    typer.echo(str(page))
