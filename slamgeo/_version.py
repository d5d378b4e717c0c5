"""The version of the installed slamgeo, for the package and for what its layers write.

Standard library only, so that `slamgeo.io.storage` (which stamps outputs with it) needs
nothing from the package's face.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("slamgeo")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
