"""The typer application every command module registers on."""

import typer

app = typer.Typer(
    name="slamgeo",
    help="Explain what a convolutional autoencoder learns from Sentinel-1 time series (Grad-SLAM).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class CLIError(Exception):
    """An error for the user: printed as one line, exit code 1, no traceback."""


@app.callback()
def _root() -> None:
    """slamgeo: Sentinel-1 cubes -> CAE embeddings -> Grad-SLAM date importance -> crop clusters."""
