"""The `slamgeo` command line: one module per command, registered on one typer app."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import typer

from slamgeo.cli._app import CLIError, app

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
    """Entry point: user errors become one line on stderr and exit code 1; an interrupt
    (SIGINT, SIGTERM) one line and exit code 128 + the signal number."""
    from slamgeo.errors import SlamgeoError, one_line
    from slamgeo.jobs.runtime import Interrupted

    try:
        app()
    except Interrupted as exc:
        typer.echo(f"slamgeo: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (SlamgeoError, CLIError) as exc:
        _fail(str(exc))
    except OSError as exc:  # the file system refused: a read-only folder, a file where a folder goes
        _fail(one_line(exc))
    except Exception as exc:
        if not _is_storage_error(exc):
            raise
        urls = [a for a in sys.argv[1:] if "://" in a]  # the locations the user gave
        where = f"{', '.join(urls)}: " if urls else ""
        _fail(f"{where}object storage failed: {_one_line(exc)} (check AWS_ENDPOINT_URL and the credentials)")


def _fail(message: str) -> None:
    typer.echo(f"error: {_one_line(message)}", err=True)
    # Clients of a failed connection leave coroutines that complain when collected at exit;
    # the error is already said, in one line.
    sys.unraisablehook = lambda _: None
    sys.exit(1)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _is_storage_error(exc: BaseException) -> bool:
    """True for the connection and service errors of the object-storage clients (botocore,
    aiobotocore, aiohttp, s3fs), which do not derive from `OSError`."""
    return any(k.__module__.split(".")[0] in ("botocore", "aiobotocore", "aiohttp", "s3fs") for k in type(exc).__mro__)


__all__ = ["app", "main"]
