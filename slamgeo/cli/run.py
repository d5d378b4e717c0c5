"""`slamgeo run CONFIG.yaml`: the season pipeline."""

from __future__ import annotations

from pathlib import Path

import typer

from slamgeo.cli._app import CLIError, app


def run_config(config: str | Path, *, force: bool, dry_run: bool, output: str | None = None,
               quiet: bool = False) -> None:
    """Load, run, print the tally; exit non-zero when a step failed."""
    from slamgeo import storage
    from slamgeo.config import load_config
    from slamgeo.pipeline import run_pipeline

    cfg = load_config(config, overrides={"output": output} if output else None)
    summary = run_pipeline(cfg, force=force, dry_run=dry_run, quiet=quiet)
    tally = ", ".join(f"{n} {k}" for k, n in summary.tally().items())
    typer.echo(f"season {cfg.season.name}: {tally} -> {summary.season_dir}")
    for s in summary.steps:
        if s.status == "failed":
            typer.echo(f"  {s.name} failed: {s.error}", err=True)
    if summary.manifest:
        typer.echo(f"manifest: {summary.manifest}")
    report = storage.join(summary.season_dir, "report", "index.html")
    if not dry_run and storage.exists(report):
        typer.echo(f"report: {report}")
    if summary.failed:
        raise typer.Exit(code=1)


@app.command("run")
def run_cmd(
    config: str = typer.Argument(..., help="Pipeline configuration (YAML, a path or a URL); see pipelines/."),
    force: bool = typer.Option(False, help="Redo every step, even those whose inputs did not change."),
    dry_run: bool = typer.Option(False, help="Say which steps would run, and do nothing."),
    output: str = typer.Option(None, help="Override the configuration's output folder (a path or a URL such as s3://bucket/prefix)."),
) -> None:
    """Run the season pipeline: ingest -> train (or reuse) -> align -> explain -> cluster -> parcels -> report."""
    from slamgeo import storage

    if not storage.exists(config):
        raise CLIError(f"{config}: configuration file not found")
    run_config(config, force=force, dry_run=dry_run, output=output)
