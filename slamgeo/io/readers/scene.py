"""The reader of a `slamgeo synth` output folder (it holds `scene.json`): its backscatter is its
`tiffs/` folder (read as GeoTIFFs) or, written with `--archive`, its `archive/items.json` (read
as a STAC ItemCollection). Its other rasters (`truth.tif`) are not backscatter.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from slamgeo.errors import InputError
from slamgeo.io import storage
from slamgeo.io.readers import READERS, Reader
from slamgeo.io.scene import ARCHIVE_FILES, SCENE_ADVICE, SCENE_FILES, read_scene_meta

if TYPE_CHECKING:
    import numpy as np
    import xarray as xr

    from slamgeo.io.readers import ReadRequest

SUMMARY = "a slamgeo synth output folder (scene.json; its tiffs/ or archive/items.json)"
GRID = True  # loaded onto the grid the user asks for


def rasters(source: str | Path) -> storage.Location | None:
    """The backscatter of a scene folder: its `tiffs/` folder, or the `archive/items.json` of
    `--archive`; None when `source` is not a scene folder. Its `scene.json` is checked against
    its schema (`slamgeo.io.scene.SceneMeta`): `InputError` naming the file and the field."""
    p = storage.location(source)
    if not can_open(p):
        return None
    read_scene_meta(p, advice=f"{SCENE_ADVICE}, or ingest its {SCENE_FILES['tiffs']}/ folder")
    tiffs = storage.join(p, SCENE_FILES["tiffs"])
    if storage.isdir(tiffs):
        return tiffs
    items = storage.join(p, *ARCHIVE_FILES["items"].split("/"))
    return items if storage.exists(items) else None


def _inner(source: storage.Location) -> tuple[Reader, storage.Location]:
    """The reader of the scene's backscatter, and where it lies."""
    found = rasters(source)
    if found is None:
        raise InputError(
            f"{source}: a slamgeo synth scene without backscatter (no {SCENE_FILES['tiffs']}/ folder and no "
            f"{ARCHIVE_FILES['items']}){SCENE_ADVICE}"
        )
    return READERS["geotiff" if storage.isdir(found) else "stac"], found


# --- the reader ----------------------------------------------------------------------------------


def can_open(source: storage.Location) -> bool:
    return storage.isdir(source) and storage.exists(storage.join(source, SCENE_FILES["meta"]))


def open(sources: Sequence[storage.Location], request: ReadRequest) -> xr.Dataset:
    """The scene's backscatter, read by the reader of its GeoTIFFs or its ItemCollection (lazy)."""
    reader, found = _inner(sources[0])
    return reader.open([found], request)


def inputs(sources: Sequence[storage.Location], *, ds: xr.Dataset | None = None) -> list[str | Path]:
    """The files of the scene's backscatter (its other files are not the input)."""
    reader, found = _inner(sources[0])
    return reader.inputs([found], ds=ds)


def negative_share(sources: Sequence[storage.Location], time: np.datetime64, band: str) -> float | None:
    reader, found = _inner(sources[0])
    return reader.negative_share([found], time, band)


__all__ = [
    "can_open",
    "inputs",
    "negative_share",
    "open",
    "rasters",
]
