"""The `slamgeo` command line: one module per command, registered on one typer app."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import typer

from slamgeo.cli._app import CLIError, app

# One module per command, each decorating `app`. A stage that has not landed yet has no
# module; it is left out of the app rather than shown as a command that cannot work.
_COMMAND_MODULES = (
    "synth",
    "ingest",
    "train",
    "explain",
    "cluster",
    "parcels",
    "report",
    "run",
    "demo",
)
for _name in _COMMAND_MODULES:
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")


@app.command()
def version() -> None:
    """Print the slamgeo version."""
    from slamgeo import __version__

    typer.echo(__version__)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 1."""
    from slamgeo.errors import SlamgeoError

    try:
        app()
    except (SlamgeoError, CLIError) as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)


__all__ = ["app", "main"]
