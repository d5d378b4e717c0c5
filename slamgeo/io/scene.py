"""The folder of a synthetic scene (`slamgeo synth`, `slamgeo.synth.write_scene` and
`write_archive`): the files it holds and the schema of its `scene.json`, read back by ingest
and by the pipeline. The generator itself is `slamgeo.synth`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from slamgeo.io.records import IsoDate, Record, check_record, load_json
from slamgeo.schema import SCENE_MARKER

# The files of a scene folder by kind (relative paths); `write_scene`, `write_archive` return them.
SCENE_FILES = {
    "tiffs": "tiffs",
    "stac": "stac.json",
    "parcels": "parcels.gpkg",
    "phenology": "phenology.csv",
    "truth": "truth.tif",
    "meta": SCENE_MARKER,
}
ARCHIVE_DIR = "archive"
ARCHIVE_FILES = {
    "archive": ARCHIVE_DIR,
    "items": f"{ARCHIVE_DIR}/items.json",
    "collection": f"{ARCHIVE_DIR}/collection.json",
    "cogs": f"{ARCHIVE_DIR}/cogs",
    "parcels": "parcels.gpkg",
    "phenology": "phenology.csv",
    "truth": "truth.tif",
    "meta": SCENE_MARKER,
}
GRID_PARCELS_FILE = "parcels_grid.gpkg"


class SceneParams(Record):
    """`params` of scene.json: the arguments of `make_scene`."""

    size: int
    seed: int
    n_dates: int
    enl: float | None = None
    rain_events: int | None = None
    missing_dates: int | None = None
    irregular: bool | None = None
    step_days: int | None = None
    start: IsoDate | None = None


class SceneMeta(Record):
    """The shape of `scene.json`, checked when it is written and when it is read back
    (`read_scene_meta`). Dates are ISO strings; fields not listed here are kept."""

    params: SceneParams
    dates: list[IsoDate]
    rain_dates: list[IsoDate] = []
    season_year: int | None = None
    swath_edge: str | None = None
    rain: dict[str, float] = {}
    distinctive_windows: dict[str, Annotated[list[IsoDate], Field(min_length=2, max_length=2)]] = {}
    confusable: list[str] = []
    classes: list[str] = []
    calendars: dict[str, dict[str, Any]] = {}
    archive: bool = False
    archive_layout: dict[str, Any] | None = None


SCENE_ADVICE = "; write the scene again (slamgeo synth --overwrite)"


def read_scene_meta(folder: str | Path, *, advice: str = SCENE_ADVICE) -> SceneMeta:
    """The `scene.json` of a scene folder (a local folder or a URL), checked against
    `SceneMeta`; raises `InputError` naming the file and the field (with `advice` appended),
    FileNotFoundError when there is none."""
    from slamgeo.io import storage

    path = storage.join(storage.location(folder), SCENE_MARKER)
    data = load_json(storage.read_bytes(path), path, advice=advice)
    return check_record(data, SceneMeta, path, advice=advice)


__all__ = [
    "ARCHIVE_DIR",
    "ARCHIVE_FILES",
    "GRID_PARCELS_FILE",
    "SCENE_ADVICE",
    "SCENE_FILES",
    "SceneMeta",
    "SceneParams",
    "read_scene_meta",
]
