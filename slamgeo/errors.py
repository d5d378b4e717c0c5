"""Errors meant for the user: what was expected, what was found, and where."""


class SlamgeoError(Exception):
    """Base class; the CLI prints these as one line and exits with code 1."""


class InputError(SlamgeoError, ValueError):
    """Bad input data: a file, a variable, a date, a grid that does not fit."""


class CheckpointError(SlamgeoError, ValueError):
    """A model checkpoint that is missing, altered, or does not fit the data."""


class ConfigError(SlamgeoError, ValueError):
    """A configuration that does not validate."""


class OutputError(SlamgeoError, OSError):
    """An output location that may not be written: it holds inputs or files slamgeo did not
    write, it is a file, or it cannot be created or written."""


def one_line(exc: BaseException | str) -> str:
    """A message or an exception as one line (runs of white space, line breaks included, become
    one space): a text as it is; a slamgeo error's message; `PATH: cause` for an OS error that
    names paths; otherwise the exception's type and message."""
    if isinstance(exc, (str, SlamgeoError)):
        text = str(exc)
    elif isinstance(exc, OSError) and (exc.filename or exc.filename2):
        paths = [str(p) for p in (exc.filename, exc.filename2) if p]
        text = f"{' -> '.join(paths)}: {exc.strerror or exc}"
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


class SeasonLocked(OutputError):
    """Another run of the same season holds its lock (`slamgeo.pipeline.lock`). The CLI exits
    with `exit_code` (75, sysexits' EX_TEMPFAIL: try again later) instead of 1."""

    exit_code = 75
