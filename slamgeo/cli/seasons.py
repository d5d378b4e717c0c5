"""`slamgeo seasons OUTPUT_ROOT`: one line per season of a scheduled pipeline."""

from __future__ import annotations

import json

import typer

from slamgeo.cli._app import app


@app.command("seasons")
def seasons_cmd(
    root: str = typer.Argument(..., help="The `output` of the season configuration (a folder or a URL)."),
    as_json: bool = typer.Option(False, "--json", help="Print the seasons as a JSON list instead of text."),
) -> None:
    """One line per season under OUTPUT_ROOT: its first and last dates, the season whose model it
    used, its steps done or failed, the parcels' overall accuracy and kappa, and the drift
    verdict ("-": not computed yet)."""
    from slamgeo.pipeline.seasons import list_seasons

    rows = list_seasons(root)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        typer.echo(f"{root}: no seasons yet")
        return
    for r in rows:
        typer.echo(r.line())
