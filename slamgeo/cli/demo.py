"""`slamgeo demo OUT_DIR`: the whole pipeline on the embedded default (a synthetic scene)."""

from __future__ import annotations

from pathlib import Path

import typer

from slamgeo.cli._app import app

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "pipelines" / "demo.yaml"


@app.command("demo")
def demo_cmd(
    out: str = typer.Argument("demo-output", help="Output folder."),
    force: bool = typer.Option(False, help="Redo every step."),
) -> None:
    """Generate a synthetic Sentinel-1 scene and run the season pipeline on it, on a LocalCluster."""
    from slamgeo.cli.run import run_config

    config = DEMO_CONFIG
    if not config.exists():  # installed without the source tree: the packaged copy
        config = Path(__file__).resolve().parents[1] / "pipelines" / "demo.yaml"
    run_config(config, force=force, dry_run=False, output=str(Path(out).resolve()))
