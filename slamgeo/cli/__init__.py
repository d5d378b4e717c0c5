"""The `slamgeo` command line: one module per command, registered on one typer app.

`main` is the entry point's policy for what reaches the terminal: a user error is one line
`error: ...` (exit code 1; 75 when another run holds the season's lock), an interrupt one line (exit code 128 + the signal number), a
warning one line `warning: ...`; library warnings a user can do nothing about
(`slamgeo.jobs.runtime.NOISY_WARNINGS`) are not shown. Options that typer rejects (a wrong
type, a missing argument) keep typer's usage message and exit code 2.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

import typer

from slamgeo.cli._app import CLIError, app
from slamgeo.errors import SlamgeoError, one_line

# One module per command, each decorating `app`. A command whose module is missing is left
# out of the app rather than shown as a command that cannot work.
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
    "seasons",
)
for _name in _COMMAND_MODULES:
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")


@app.command()
def version() -> None:
    """Print the slamgeo version."""
    from slamgeo._version import __version__

    typer.echo(__version__)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 1; an interrupt
    (SIGINT, SIGTERM, in any command) one line and exit code 128 + the signal number;
    warnings one line each, the libraries' noise left out (for the rest of the process: some
    come as it exits; the one-line format is undone on the way out, for a caller in the same
    process)."""
    from slamgeo.jobs.runtime import quiet_library_warnings

    quiet_library_warnings()
    saved_format, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        _run_app()
    finally:
        warnings.formatwarning = saved_format


def _run_app() -> None:
    from slamgeo.jobs.runtime import Interrupted, interrupt_handlers

    try:
        with interrupt_handlers():
            app()
    except Interrupted as exc:
        typer.echo(f"slamgeo: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (SlamgeoError, CLIError) as exc:
        _fail(str(exc), code=getattr(exc, "exit_code", 1))  # a season locked by another run: 75
    except OSError as exc:  # the file system refused: a read-only folder, a file where a folder goes
        _fail(one_line(exc))
    except Exception as exc:
        if not _is_storage_error(exc):
            raise
        urls = [a for a in sys.argv[1:] if "://" in a]  # the locations the user gave
        where = f"{', '.join(urls)}: " if urls else ""
        _fail(f"{where}object storage failed: {one_line(str(exc))} (check AWS_ENDPOINT_URL and the credentials)")


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {one_line(message)}", err=True)
    # Clients of a failed connection leave coroutines that complain when collected at exit;
    # the error is already said, in one line.
    sys.unraisablehook = lambda _: None
    sys.exit(code)


_PACKAGE = Path(__file__).resolve().parents[1]


def _format_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001 - warnings' signature
    """A warning as one line: `warning: MESSAGE`, and for a library's warning where it comes
    from (`warning: MESSAGE (RuntimeWarning, numpy/lib/nanfunctions.py:1215)`)."""
    text = f"warning: {one_line(str(message))}"
    path = Path(filename)
    if category.__module__.split(".")[0] == "slamgeo" or _PACKAGE in path.resolve().parents:
        return text + "\n"
    parts = path.parts
    where = "/".join(parts[parts.index("site-packages") + 1 :]) if "site-packages" in parts else path.name
    return f"{text} ({category.__name__}, {where}:{lineno})\n"


def _is_storage_error(exc: BaseException) -> bool:
    """True for the connection and service errors of the object-storage clients (botocore,
    aiobotocore, aiohttp, s3fs), which do not derive from `OSError`."""
    return any(k.__module__.split(".")[0] in ("botocore", "aiobotocore", "aiohttp", "s3fs") for k in type(exc).__mro__)


__all__ = ["app", "main"]
