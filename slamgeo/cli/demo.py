"""`slamgeo demo OUT_DIR`: the whole pipeline on the embedded default (a synthetic scene)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from importlib import resources
from pathlib import Path

import typer

from slamgeo.cli._app import app


def demo_config() -> AbstractContextManager[Path]:
    """The demo configuration shipped in the package (`slamgeo/pipeline/demo.yaml`), as a local
    file for as long as the context lasts: `with demo_config() as path: ...`."""
    return resources.as_file(resources.files("slamgeo") / "pipeline" / "demo.yaml")


@app.command("demo")
def demo_cmd(
    out: str = typer.Argument("demo-output", help="Output folder."),
    force: bool = typer.Option(False, help="Redo every step."),
) -> None:
    """Generate a synthetic Sentinel-1 scene and run the season pipeline on it, on a LocalCluster."""
    from slamgeo.cli.run import run_config

    with demo_config() as config:
        run_config(config, force=force, dry_run=False, output=str(Path(out).resolve()))
