"""slamgeo: Grad-SLAM explanations of a convolutional autoencoder on Sentinel-1 cubes, with Dask."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("slamgeo")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
