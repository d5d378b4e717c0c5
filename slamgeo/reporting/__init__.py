"""The report: its inputs (`readers`), one function per figure (`figures`) and the HTML page
(`page`).

A figure function raises `FigureSkipped` when its inputs do not allow the figure (a variable, a
class, a finite value it needs is not there); the page lists that figure as skipped, with the
message, and goes on. Bad input from the user (a date that is not a date, a file that is not
there) stays a `slamgeo.errors.InputError`.
"""

from slamgeo.errors import SlamgeoError


class FigureSkipped(SlamgeoError, ValueError):
    """The inputs do not allow this figure; the message says what is missing (the report shows
    it in its list of skipped figures)."""


__all__ = ["FigureSkipped"]
