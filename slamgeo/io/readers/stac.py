"""STAC ItemCollection JSON files: their Items (`_read_item_collection`, loaded onto one grid by
`slamgeo.io.readers.archive.open_items`) and the asset files they name (`stac_assets`, for the
input fingerprint). Relative asset hrefs are resolved from the JSON's folder (a local folder or
a URL); asset URLs are handed to GDAL as they are (`storage.gdal_s3_options`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np

from slamgeo.errors import InputError
from slamgeo.io import storage
from slamgeo.io.cube import BANDS
from slamgeo.io.readers._common import _one_line, _to_datetime64
from slamgeo.io.readers.geotiff import (
    TIFF_SUFFIXES,
)

if TYPE_CHECKING:
    import pystac


STAC_SUFFIXES = (".json", ".geojson")


def _resolve_href(href: str, base: storage.Location) -> str:
    """An asset href as rasterio opens it: URLs as they are, relative paths from the JSON's
    folder (a local folder or a URL)."""
    import posixpath

    parsed = urlparse(href)
    if parsed.scheme in ("http", "https", "s3", "gs", "az", "vsicurl") or href.startswith("/vsi"):
        return href
    if parsed.scheme == "file":
        return parsed.path
    if storage.is_url(base):
        scheme, _, rest = str(base).partition("://")
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, href))}"
    p = Path(href)
    return str(p if p.is_absolute() else (Path(base) / p).resolve())


def _raster_assets(item, where: str) -> dict[str, pystac.Asset]:
    """The GeoTIFF assets of an item: `{"VV": asset, "VH": asset}` for per-polarisation assets,
    else `{"": asset}` for one multi-band asset ("backscatter", or the only GeoTIFF)."""
    per_pol = {k.upper(): a for k, a in item.assets.items() if k.upper() in BANDS}
    if per_pol:
        return per_pol
    if "backscatter" in item.assets:
        return {"": item.assets["backscatter"]}
    tiffs = [
        a
        for a in item.assets.values()
        if "tiff" in (a.media_type or "") or urlparse(a.href).path.lower().endswith(TIFF_SUFFIXES)
    ]
    if len(tiffs) != 1:
        raise InputError(
            f"{where}: expected an asset 'backscatter' (or 'VV' and 'VH'), found assets {sorted(item.assets)}"
        )
    return {"": tiffs[0]}


def _read_item_collection(path: storage.Location):
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


def stac_assets(path: str | Path) -> list[tuple[str, np.datetime64, str, str]]:
    """The rasters a STAC ItemCollection names, read from the JSON only:
    `(where, time, polarisation or "", href)` per asset; local hrefs are checked to exist."""
    path = storage.location(path)
    items = _read_item_collection(path)
    if not items:
        raise InputError(f"{path}: the ItemCollection has no items")
    out = []
    for item in items:
        where = f"{path} (item {item.id})"
        when = item.datetime or item.common_metadata.start_datetime
        if when is None:
            raise InputError(f"{where}: no datetime or start_datetime")
        for pol, asset in _raster_assets(item, where).items():
            href = _resolve_href(asset.href, storage.parent(path))
            if _is_local(href) and not Path(href).exists():
                raise InputError(f"{where}: asset {asset.href!r} not found at {href}")
            out.append((where, _to_datetime64(when), pol, href))
    return out


def _is_local(href: str) -> bool:
    return not urlparse(href).scheme and not href.startswith("/vsi")


__all__ = [
    "STAC_SUFFIXES",
    "stac_assets",
]
