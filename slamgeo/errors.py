"""Errors meant for the user: what was expected, what was found, and where."""


class SlamgeoError(Exception):
    """Base class; the CLI prints these as one line and exits with code 1."""


class InputError(SlamgeoError, ValueError):
    """Bad input data: a file, a variable, a date, a grid that does not fit."""


class CheckpointError(SlamgeoError, ValueError):
    """A model checkpoint that is missing, altered, or does not fit the data."""


class ConfigError(SlamgeoError, ValueError):
    """A configuration that does not validate."""
