"""Readers of Sentinel-1 inputs, one module per source, registered by name in `READERS`.

Each reader opens its source as a lazy, validated cube of the contract (`slamgeo.io.cube`;
float32 dB `VV`, `VH`). Detection (`reader_for`) asks the readers in the order of `READERS`
whether they can open an input, so a reader of particular folders comes before the reader of
any folder; the pipeline configuration's `input.kind` takes the same names.

A reader module defines:

- `SUMMARY`: what it reads, in a few words (for messages and help);
- `can_open(source) -> bool`: whether it reads this location (a `Path` or a URL `str`), from
  its name and a look at the storage (no pixel, no header);
- `open(sources, request) -> xr.Dataset`: the lazy cube; `sources` holds one location, or
  several where `MANY` is true; `request` is a `ReadRequest` (chunk, time window, and the grid
  or search options where they apply);

and, where they apply: `MANY = True` (several inputs make one source: GeoTIFFs), `GRID = True`
(rasters loaded onto the grid the user asks for: `open` reads `request.grid` and
`request.report`), `SEARCH = True` (`open` reads `request.search`, and `inputs` takes `search`,
a `slamgeo.io.readers.stac_api.SearchOptions`), `inputs(sources, *, ds=None) -> list` (the files
that make the input, for its fingerprint: those the loader read when `ds`, the opened cube, is
given; default: `sources`) and `negative_share(sources, time, band) -> float | None` (the share
of negative raw values on a date, to explain a date without valid pixels; default: None).

The readers: `stac-api` (`stac_api`), `scene` (`scene`: a `slamgeo synth` output folder), `cube`
(`dataset`: NetCDF or Zarr), `geotiff`, `stac` (an ItemCollection JSON) and `table` (Parquet).
The raster readers share the odc-stac loader (`archive`), its STAC conventions
(`conventions`) and its grid (`grid`); all share the helpers of `_common`. The store writer and
the plausibility check are `slamgeo.io.ingest`'s.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slamgeo.errors import ConfigError
from slamgeo.schema import CHUNK

if TYPE_CHECKING:
    import numpy as np
    import xarray as xr

    from slamgeo.io.readers.grid import GridOptions
    from slamgeo.io.readers.stac_api import SearchOptions
    from slamgeo.io.storage import Location


@dataclass(frozen=True)
class ReadRequest:
    """What is asked of a reader: spatial tiles of `chunk` pixels, the time window `start`..`end`
    (ISO dates, inclusive, None = open), and where they apply the grid (rasters; None = the
    default grid), the search options (a STAC API; None = the defaults) and `report`, given the
    line saying which orbit and grid were chosen (None = log)."""

    chunk: int = CHUNK
    start: str | None = None
    end: str | None = None
    grid: GridOptions | None = None
    search: SearchOptions | None = None
    report: Callable[[str], None] | None = None


@dataclass(frozen=True)
class Reader:
    """One kind of input, read by the module `module` (imported when first used)."""

    name: str
    module: str

    def _impl(self) -> Any:
        return importlib.import_module(self.module)

    @property
    def summary(self) -> str:
        return str(self._impl().SUMMARY)

    @property
    def many(self) -> bool:
        """Several inputs make one source of this kind."""
        return bool(getattr(self._impl(), "MANY", False))

    @property
    def on_grid(self) -> bool:
        """Rasters loaded onto the grid the user asks for (it takes the grid options)."""
        return bool(getattr(self._impl(), "GRID", False))

    @property
    def searches(self) -> bool:
        """A search of a service (it takes the search options; its source is not a location)."""
        return bool(getattr(self._impl(), "SEARCH", False))

    def can_open(self, source: Location) -> bool:
        return bool(self._impl().can_open(source))

    def open(self, sources: Sequence[Location], request: ReadRequest) -> xr.Dataset:
        """The lazy cube of `sources`, read as `request` asks."""
        return self._impl().open(list(sources), request)

    def inputs(self, sources: Sequence[Location], *, ds: xr.Dataset | None = None, **search: Any) -> list[str | Path]:
        """The files that make the input, for its fingerprint (those the loader read when `ds`,
        the opened cube, is given); `search`: the search options of a searching reader."""
        found = getattr(self._impl(), "inputs", None)
        return list(sources) if found is None else list(found(list(sources), ds=ds, **search))

    def negative_share(self, sources: Sequence[Location], time: np.datetime64, band: str) -> float | None:
        """The share of negative raw values of `band` on the date `time`, or None if unknown."""
        share = getattr(self._impl(), "negative_share", None)
        return None if share is None else share(list(sources), time, band)


# The readers by name, in the order detection tries them.
READERS: dict[str, Reader] = {
    r.name: r
    for r in (
        Reader("stac-api", "slamgeo.io.readers.stac_api"),
        Reader("scene", "slamgeo.io.readers.scene"),
        Reader("cube", "slamgeo.io.readers.dataset"),
        Reader("geotiff", "slamgeo.io.readers.geotiff"),
        Reader("stac", "slamgeo.io.readers.stac"),
        Reader("table", "slamgeo.io.readers.table"),
    )
}


def reader_for(source: Location) -> Reader | None:
    """The first reader of `READERS` that can open `source`, or None."""
    return next((r for r in READERS.values() if r.can_open(source)), None)


def reader(kind: str) -> Reader:
    """The reader named `kind`; `ConfigError` naming the known kinds for another name."""
    if kind not in READERS:
        raise ConfigError(f"unknown input kind {kind!r}; the kinds are {', '.join(READERS)}")
    return READERS[kind]


__all__ = ["READERS", "ReadRequest", "Reader", "reader", "reader_for"]
