"""The reader of a STAC API search (`stac+https://HOST/PATH`): the Items of a collection in a time
range and a lon/lat box (pystac-client), signed when the catalogue needs it, loaded onto one
grid by the archive loader (`slamgeo.io.readers.archive.open_items`).
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slamgeo.errors import ConfigError, InputError
from slamgeo.io import storage
from slamgeo.io.readers._common import _one_line
from slamgeo.io.readers.grid import check_bbox

if TYPE_CHECKING:
    import pystac
    import xarray as xr

    from slamgeo.io.readers import ReadRequest

SUMMARY = "a STAC API search (stac+https://HOST/PATH)"
GRID = True  # loaded onto the grid the user asks for
SEARCH = True  # takes the search options (collection, datetime, bbox, sign)

STAC_API_PREFIX = "stac+"


def _not_an_api(url: str, api: str, found: str | None) -> str:
    """The one line for a `stac+` URL that is a static STAC document, not an API's landing page."""
    what = {
        "FeatureCollection": "a static ItemCollection (a FeatureCollection)",
        "Feature": "a single STAC Item",
        "Collection": "a STAC Collection",
        "Catalog": "a static STAC catalogue without item search",
    }.get(found or "", f"a JSON document of type {found}")
    advice = (
        f"to read its items, give the URL without the stac+ prefix ({api}); for a search, give the STAC API's "
        "root URL (its landing page)"
        if found in ("FeatureCollection", "Feature")
        else "give the STAC API's root URL (its landing page, which links to /search)"
    )
    return f"{url}: not a STAC API landing page: it is {what}; {advice}"


def is_stac_api(source: str | Path) -> bool:
    return str(source).startswith((STAC_API_PREFIX + "http://", STAC_API_PREFIX + "https://"))


@dataclass(frozen=True)
class SearchOptions:
    """A STAC API search: collection id, datetime ("2017-01-01/2017-12-31"), lon/lat bbox, and
    an optional signing hook for catalogues that need signed asset URLs ("planetary-computer",
    or a function `Item -> Item`)."""

    collection: str | None = None
    datetime: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    sign: str | Callable[[Any], Any] | None = None
    max_items: int | None = None


def signer(sign: str | Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """The signing hook named by `sign`: None, "planetary-computer" (the `planetary-computer`
    package, from the `pc` extra), or a callable taken as it is."""
    if sign is None or callable(sign):
        return sign
    if sign == "planetary-computer":
        try:
            import planetary_computer
        except ImportError as exc:
            raise ConfigError(
                "sign=planetary-computer needs the planetary-computer package: pip install 'slamgeo[pc]'"
            ) from exc
        return planetary_computer.sign_inplace
    raise ConfigError(f"unknown signing hook {sign!r}; known: planetary-computer")


def search_items(url: str, search: SearchOptions) -> list[pystac.Item]:
    """Items of a STAC API search (pystac-client), signed when asked. `url` may carry the
    `stac+` prefix. Raises `InputError` when the API cannot be reached, is not a STAC API (a
    static ItemCollection, Collection or catalogue served over HTTP), or finds nothing."""
    import pystac_client
    import pystac_client.errors
    import pystac_client.exceptions
    import pystac_client.warnings
    import requests

    api = url[len(STAC_API_PREFIX) :] if url.startswith(STAC_API_PREFIX) else url
    sign = signer(search.sign)
    bbox = list(check_bbox(search.bbox)) if search.bbox is not None else None
    try:
        with warnings.catch_warnings():
            # a static catalogue advertises no conformance: said below, in one line
            warnings.simplefilter("ignore", pystac_client.warnings.PystacClientWarning)
            client = pystac_client.Client.open(api, modifier=sign)
        if not search.collection:
            raise ConfigError(f"{url}: a STAC API search needs a collection (for example sentinel-1-rtc)")
        found = client.search(
            collections=[search.collection], datetime=search.datetime, bbox=bbox, max_items=search.max_items
        )
        items = list(found.items())
    except pystac_client.errors.ClientTypeError as exc:
        kind = re.search(r"found type=(\w+)", str(exc))
        raise InputError(_not_an_api(url, api, kind.group(1) if kind else None)) from exc
    except pystac_client.warnings.DoesNotConformTo as exc:
        raise InputError(_not_an_api(url, api, "Catalog")) from exc
    except (requests.RequestException, pystac_client.exceptions.APIError, OSError) as exc:
        raise InputError(f"{api}: the STAC API cannot be reached or refused the search ({_one_line(exc)})") from exc
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise InputError(f"{api}: not a usable STAC API search ({_one_line(exc)})") from exc
    if not items:
        what = ", ".join(
            f"{k}={v}"
            for k, v in (("collection", search.collection), ("datetime", search.datetime), ("bbox", bbox))
            if v is not None
        )
        raise InputError(f"{api}: no items found ({what})")
    return [copy.copy(i) for i in items]


# --- the reader ----------------------------------------------------------------------------------


def can_open(source: storage.Location) -> bool:
    return is_stac_api(source)


def open(sources: Sequence[storage.Location], request: ReadRequest) -> xr.Dataset:
    """The Items the search finds, loaded onto the grid the request asks for (lazy)."""
    from slamgeo.io.readers.archive import load_items

    items = search_items(str(sources[0]), request.search or SearchOptions())
    return load_items(items, request, where=str(sources[0]))


def inputs(
    sources: Sequence[storage.Location], *, ds: xr.Dataset | None = None, search: SearchOptions | None = None
) -> list[str | Path]:
    """The items found are the input: their assets, by URL (those the loader read when `ds`, the
    loaded cube, is given; else those the search finds now)."""
    if ds is not None:
        return sorted(ds.attrs.get("asset_hrefs", []))
    found = search_items(str(sources[0]), search or SearchOptions())
    return sorted(a.href for i in found for a in i.assets.values())


__all__ = [
    "STAC_API_PREFIX",
    "SearchOptions",
    "can_open",
    "inputs",
    "is_stac_api",
    "open",
    "search_items",
    "signer",
]
