"""The reader of a STAC ItemCollection JSON file (a local file or a URL): its Items
(`read_item_collection`), loaded onto one grid by the archive loader
(`slamgeo.io.readers.archive.open_items`), and the asset files they name (`stac_assets`, for the
input fingerprint). Relative asset hrefs are resolved from the JSON's folder (a local folder or
a URL); asset URLs are handed to GDAL as they are (`storage.gdal_s3_options`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np

from slamgeo.errors import InputError
from slamgeo.io import storage
from slamgeo.io.readers._common import _one_line, _suffix, _to_datetime64, resolve_href
from slamgeo.io.readers.conventions import band_units, match

if TYPE_CHECKING:
    import pystac
    import xarray as xr

    from slamgeo.io.readers import ReadRequest

SUMMARY = "a STAC ItemCollection (.json, .geojson) of GeoTIFF/COG assets"
GRID = True  # loaded onto the grid the user asks for
STAC_SUFFIXES = (".json", ".geojson")


def read_item_collection(path: storage.Location) -> list[pystac.Item]:
    """The Items of an ItemCollection JSON (or of a single Item); `InputError` naming the file
    for a file that is not JSON or not STAC."""
    import pystac

    try:
        text = storage.read_text(path)
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a JSON file ({_one_line(exc)})") from exc
    try:
        if isinstance(data, dict) and data.get("type") == "Feature":
            return [pystac.Item.from_dict(data)]
        if not (isinstance(data, dict) and data.get("type") == "FeatureCollection"):
            found = data.get("type") if isinstance(data, dict) else type(data).__name__
            raise InputError(f"{path}: expected a STAC ItemCollection (type FeatureCollection), found {found!r}")
        return list(pystac.ItemCollection.from_dict(data))
    except (pystac.STACError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path}: not a valid STAC ItemCollection ({_one_line(exc)})") from exc


def stac_assets(path: str | Path) -> list[tuple[str, np.datetime64, str, str, str]]:
    """The rasters a STAC ItemCollection names, read from the JSON only (by the conventions of
    `slamgeo.io.readers.conventions`): `(where, time, polarisation or "" for a multi-band asset,
    href, units)` per asset; local hrefs are checked to exist."""
    path = storage.location(path)
    items = read_item_collection(path)
    if not items:
        raise InputError(f"{path}: the ItemCollection has no items")
    out: list[tuple[str, np.datetime64, str, str, str]] = []
    for item in items:
        where = f"{path} (item {item.id})"
        when = item.datetime or item.common_metadata.start_datetime
        if when is None:
            raise InputError(f"{where}: no datetime or start_datetime")
        conv, pols = match(item, where)
        for key in dict.fromkeys(k for k, _ in pols.values()):  # a multi-band asset once
            asset = item.assets[key]
            pol = next(p for p, (k, _) in pols.items() if k == key) if conv.assets else ""
            bands = asset.extra_fields.get("raster:bands")
            first = bands[0] if isinstance(bands, list) and bands and isinstance(bands[0], dict) else {}
            href = resolve_href(asset.href, storage.parent(path))
            if _is_local(href) and not Path(href).exists():
                raise InputError(f"{where}: asset {asset.href!r} not found at {href}")
            out.append((where, _to_datetime64(when), pol, href, band_units(conv, first)))
    return out


def _is_local(href: str) -> bool:
    return not urlparse(href).scheme and not href.startswith("/vsi")


# --- the reader ----------------------------------------------------------------------------------


def can_open(source: storage.Location) -> bool:
    return _suffix(source) in STAC_SUFFIXES and storage.isfile(source)


def open(sources: Sequence[storage.Location], request: ReadRequest) -> xr.Dataset:
    """The Items of the ItemCollection, loaded onto the grid the request asks for (lazy)."""
    from slamgeo.io.readers.archive import load_items

    path = sources[0]
    return load_items(read_item_collection(path), request, where=str(path), base=storage.parent(path))


def inputs(sources: Sequence[storage.Location], *, ds: xr.Dataset | None = None) -> list[str | Path]:
    """The JSON and the asset files it names: those the loader read when `ds` (the loaded cube)
    is given, else those the JSON names."""
    hrefs = ds.attrs.get("asset_hrefs", []) if ds is not None else [a[3] for a in stac_assets(sources[0])]
    return [sources[0], *hrefs]


def negative_share(sources: Sequence[storage.Location], time: np.datetime64, band: str) -> float | None:
    """Share of negative raw values of `band` on the date `time`, in the date's linear-power
    asset (to explain a date without valid pixels: values in dB read as linear power)."""
    from slamgeo.io.readers.geotiff import describe_tiff, share_negative

    found = (
        (describe_tiff(href, time=when, where=w), pol)
        for w, when, pol, href, units in stac_assets(sources[0])
        if when == time and pol in ("", band) and units == "linear"
    )
    return share_negative(found, time, band)


__all__ = [
    "STAC_SUFFIXES",
    "can_open",
    "inputs",
    "negative_share",
    "open",
    "read_item_collection",
    "stac_assets",
]
