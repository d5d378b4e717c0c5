"""The typer application every command module registers on, and the checks its commands make
of their options before any work starts (each failure one line naming the option)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    pass

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


def check_choice(option: str, value: object, choices: Iterable[object]) -> None:
    """`value` of `option` (such as "--scale") must be one of `choices`; else `InputError`."""
    from slamgeo.errors import InputError

    allowed = list(choices)
    if value not in allowed:
        raise InputError(f"{option} {value!r}: expected one of {', '.join(str(c) for c in allowed)}")


def check_at_least(option: str, value: float | None, low: float, why: str = "") -> None:
    """`value` of `option` must be `low` or more (None passes: the default); else `InputError`,
    with `why` (the unit, or where the bound comes from) in brackets."""
    from slamgeo.errors import InputError

    if value is not None and not value >= low:  # NaN fails too
        said = f" ({why})" if why else ""
        raise InputError(f"{option} must be {low:g} or more{said}, found {value}")
