"""Sentinel-1 archives as STAC Items -> the cube on a grid the user names, loaded with odc-stac.

Real archives are not on one grid: scenes lie in several UTM zones, footprints differ by orbit,
and a pass comes in two or three slices. Every raster input (an ItemCollection JSON, a STAC API
search, a folder of GeoTIFFs) becomes a list of STAC Items, and `open_items` loads them with
`odc.stac.load` onto one `odc.geo` GeoBox: reprojection, mosaicking of the slices of one pass and
the grouping by solar day are odc-stac's and GDAL's, not ours.

Steps (`open_items`):

1. Conventions (`slamgeo.io.readers.conventions`): each Item is brought to one form (assets
   `VV`/`VH`, their no-data value and units) by the table of conventions it follows.
2. Orbit (`choose_orbit`): one orbit direction (`sat:orbit_state`), by default the one with the
   most acquisitions, because mixing ascending and descending passes in one series adds a
   geometry signal that is not the crop; optionally some relative orbits only. Items without
   `sat:orbit_state` are said in the log (all of them) or refused by name (some of them).
3. Grid (`slamgeo.io.readers.grid`): the CRS, pixel size and extent asked for (or the items'),
   and the guards that refuse a grid or a tiling that would take hours, before any pixel is read.
4. Load: `groupby="solar_day"` (the slices of one pass are one time step; where nothing covers
   a pixel on a date it is NaN), bilinear resampling by default (nearest is an option), then dB
   (`conventions.to_db`). The result is lazy and chunked as the contract wants: the whole time
   axis in one chunk, spatial tiles of `chunk`, with no rechunk pass.

GDAL settings for remote COGs (`GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR`, HTTP retries, the S3
endpoint) are given to odc-stac (`configure_rio`), which captures them when the graph is built
and restores them around every read, so they reach Dask workers in other processes too; a
`rasterio.Env` in the client would not.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import xarray as xr

from slamgeo.errors import ConfigError, InputError
from slamgeo.io import storage
from slamgeo.io.cube import BANDS, validate_cube
from slamgeo.io.readers._common import _one_line, _to_datetime64, parse_time_window
from slamgeo.io.readers.conventions import check_layouts, normalise_item, to_db
from slamgeo.io.readers.grid import GridOptions, Orbit, check_tiling, output_grid
from slamgeo.schema import CHUNK

if TYPE_CHECKING:
    import pystac

    from slamgeo.io.readers import ReadRequest

log = logging.getLogger("slamgeo.ingest")

GDAL_REMOTE_OPTIONS = {  # for COGs over HTTP or S3 (GDAL's names; odc-stac's cloud defaults)
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
}
GDAL_CACHE_BYTES = 64 * 2**20  # GDAL's block cache around every read (bytes): each block is read once


# --- orbits --------------------------------------------------------------------------------------


def choose_orbit(
    items: Sequence[pystac.Item], orbit: Orbit | None, relative_orbits: Sequence[int], where: str
) -> tuple[list[pystac.Item], str]:
    """The items of one orbit direction (and of the given relative orbits), and a sentence
    saying what was chosen.

    Items without `sat:orbit_state` cannot be told ascending from descending: when none has it
    they are all kept and the sentence says so (with the relative orbits found, if any); when
    some have it and others not, `orbit` keeps the known ones of that direction (saying how many
    unknown were left out), a relative orbit (one direction) keeps its items, and otherwise the
    items are refused, naming those without it: keeping them would mix directions silently,
    dropping them would lose dates silently."""
    note = ""
    if relative_orbits:  # first: a relative orbit implies its direction
        wanted = {int(r) for r in relative_orbits}
        found_rel = sorted({int(r) for i in items if (r := i.properties.get("sat:relative_orbit")) is not None})
        items = [i for i in items if i.properties.get("sat:relative_orbit") in wanted]
        if not items:
            raise InputError(
                f"{where}: no acquisition on relative orbit(s) {sorted(wanted)}; the items have {found_rel or 'none'}"
            )
        note = f"relative orbit(s) {sorted(wanted)}"
    states = [item.properties.get("sat:orbit_state") for item in items]
    unknown = [i for i, s in zip(items, states) if s is None]
    passes: collections.Counter[str] = collections.Counter()
    for s, _ in {(s, _day(item)) for s, item in zip(states, items)}:  # a pass: a direction on a day
        if s is not None:
            passes[str(s).lower()] += 1
    kept = list(items)
    said = ""
    left_unknown = f"; left out {len(unknown)} item(s) without sat:orbit_state" if unknown else ""
    if orbit is not None:
        kept = [i for i, s in zip(items, states) if s is not None and str(s).lower() == orbit]
        if not kept:
            found = ", ".join(f"{k} ({n} passes)" for k, n in passes.items()) or "no sat:orbit_state"
            raise InputError(f"{where}: no {orbit} acquisition; the items have {found}")
        said = f"orbit: {orbit} ({passes[orbit]} passes), as asked{left_unknown}"
    elif unknown and not passes:
        tracks = sorted({int(r) for i in items if (r := i.properties.get("sat:relative_orbit")) is not None})
        hint = (
            f"; they are on relative orbits {tracks}: keep one track with --relative-orbit N (relative_orbits= "
            "in Python)"
            if len(tracks) > 1 and not relative_orbits
            else ""
        )
        said = (
            f"orbit: unknown for all {len(items)} items (no sat:orbit_state): ascending and descending passes "
            f"cannot be separated and are all kept{hint}"
        )
    elif unknown and not relative_orbits:
        names = ", ".join(i.id for i in unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        known = ", ".join(f"{n} {k} pass{'es' if n != 1 else ''}" for k, n in sorted(passes.items()))
        raise InputError(
            f"{where}: {len(unknown)} of {len(items)} items have no sat:orbit_state ({names}) while the others "
            f"are {known}: their direction is unknown, so ascending and descending passes cannot be separated; "
            "give orbit (--orbit ascending or descending) to keep only the known passes of that direction, "
            "or add sat:orbit_state to those items"
        )
    elif len(passes) > 1:
        best = max(sorted(passes), key=lambda k: passes[k])
        kept = [i for i, s in zip(items, states) if s is not None and str(s).lower() == best]
        others = ", ".join(f"{n} {k}" for k, n in passes.items() if k != best)
        said = (
            f"orbit: {best} ({passes[best]} passes), the direction with the most acquisitions; left out {others} "
            f"(mixing directions adds a viewing-geometry signal); choose with orbit{left_unknown}"
        )
    elif unknown:  # one relative orbit's items, some without sat:orbit_state: one direction all the same
        said = f"orbit: {next(iter(passes))} (the relative orbit's), {len(unknown)} item(s) without sat:orbit_state"
    note = "; ".join(n for n in (said, note) if n)
    return kept, note


def _day(item: pystac.Item) -> str:
    when = item.datetime or item.common_metadata.start_datetime
    return str(when)[:10]


# --- loading -------------------------------------------------------------------------------------


def configure_gdal() -> None:
    """GDAL settings captured by odc-stac with every graph it builds and restored around every
    read, on whichever worker runs it: `GDAL_REMOTE_OPTIONS`, the bounded block cache
    (`GDAL_CACHE_BYTES`), the S3 endpoint derived from `AWS_ENDPOINT_URL`
    (`storage.gdal_s3_options`), and the user's own GDAL variables."""
    import os

    from odc.stac import configure_rio

    # The user's own GDAL settings, and the non-secret AWS ones GDAL reads (credentials stay on
    # the workers' own environment or instance roles, never in a task graph).
    public = ("AWS_NO_SIGN_REQUEST", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_REQUEST_PAYER")
    # GDAL's block cache (default 5 % of RAM) would keep every block read until it is full, so a
    # worker's memory would grow with the scene: bounded to `GDAL_CACHE_BYTES` around each read,
    # on whichever process reads (GDAL applies GDAL_CACHEMAX when it is set); a GDAL_CACHEMAX
    # of the user's environment is left to GDAL, which reads it at start-up.
    user = {
        k: v
        for k, v in os.environ.items()
        if (k.startswith(("GDAL_", "CPL_", "AWS_S3_", "VSI_")) or k in public) and k != "GDAL_CACHEMAX"
    }
    cache = {} if "GDAL_CACHEMAX" in os.environ else {"GDAL_CACHEMAX": GDAL_CACHE_BYTES}
    options: dict[str, Any] = {**GDAL_REMOTE_OPTIONS, **storage.gdal_s3_options(), **cache, **user}
    configure_rio(**options)


def load_items(
    items: Sequence[pystac.Item], request: ReadRequest, *, where: str, base: storage.Location | None = None
) -> xr.Dataset:
    """`open_items` for a reader: the Items loaded as `request` asks (its grid, or the default)."""
    return open_items(
        items,
        grid=request.grid or GridOptions(),
        chunk=request.chunk,
        start=request.start,
        end=request.end,
        base=base,
        where=where,
        report=request.report,
    )


def open_items(
    items: Sequence[pystac.Item],
    *,
    grid: GridOptions = GridOptions(),
    chunk: int = CHUNK,
    start: str | None = None,
    end: str | None = None,
    base: storage.Location | None = None,
    where: str = "items",
    report: Callable[[str], None] | None = None,
) -> xr.Dataset:
    """STAC Items of Sentinel-1 backscatter -> the lazy contract cube `(time, y, x)` in dB on the
    grid `grid` asks for (see the module doc). `base`: the folder relative asset hrefs start
    from. `report` receives one line saying which orbit and grid were chosen (default: log).
    Raises `InputError`/`ConfigError` before any pixel is read for a bad item, orbit or grid
    (the guards of `output_geobox` and `check_tiling`)."""
    import odc.stac

    if chunk < 1:
        raise ConfigError(f"chunk must be a positive number of pixels, found {chunk}")
    say = report or log.info
    items = list(items)
    if not items:
        raise InputError(f"{where}: no items found")
    items = _in_window(items, start, end, where)
    items, orbit_note = choose_orbit(items, grid.orbit, grid.relative_orbits, where)
    footprints: dict = {}  # the items of one slice share a grid: its footprint is projected once
    normalised = [normalise_item(i, base=base, where=where, footprints=footprints) for i in items]
    layout = check_layouts(normalised, where)
    items = [n for n, _ in normalised]
    gbox, grid_note, boxes = output_grid(items, grid, where)
    check_tiling(gbox, boxes, chunk, grid.max_blocks, where)
    say("; ".join(n for n in (orbit_note, grid_note) if n))
    names = {pol: pol if layout[pol].count == 1 else f"{pol}.{layout[pol].index}" for pol in BANDS}
    configure_gdal()
    try:
        ds = odc.stac.load(
            items,
            bands=list(names.values()),
            geobox=gbox,
            groupby="solar_day",
            resampling=grid.resampling,
            chunks={"time": -1, "y": chunk, "x": chunk},
            fail_on_error=True,
        )
    except (ValueError, KeyError, RuntimeError) as exc:
        raise InputError(f"{where}: odc-stac cannot load the items ({_one_line(exc)})") from exc
    cube = xr.Dataset(
        {pol: to_db(ds[name], layout[pol]) for pol, name in names.items()},
        coords={"time": ds["time"].values.astype("datetime64[ns]")},
    )
    for pol in BANDS:
        cube[pol].attrs = {"units": "dB", "long_name": f"Sentinel-1 {pol} backscatter"}
    crs = gbox.crs
    assert crs is not None  # output_geobox always sets one
    cube = cube.assign_coords(spatial_ref=ds["spatial_ref"]).rio.write_crs(crs.to_wkt())
    cube = cube.rio.write_transform(gbox.affine)
    if cube.sizes["x"] == 0 or cube.sizes["y"] == 0:
        raise InputError(f"{where}: the requested extent holds no pixel")
    cube.attrs = {
        "grid": f"{f'EPSG:{crs.epsg}' if crs.epsg else crs.to_wkt()} {tuple(gbox.affine)[:6]} {gbox.shape.y}x{gbox.shape.x} {grid.resampling}",
        "asset_hrefs": sorted({a.href for i in items for a in i.assets.values()}),
        # which item and asset a file is, for a read error (dropped by ingest and load)
        "asset_items": {a.href: f"item {i.id}, asset {k}" for i in items for k, a in i.assets.items()},
    }
    return validate_cube(cube, where=where)


def _in_window(items: list[pystac.Item], start: str | None, end: str | None, where: str) -> list[pystac.Item]:
    parse_time_window(start, end)
    if start is None and end is None:
        return items
    times = pd.DatetimeIndex([_to_datetime64(i.datetime or i.common_metadata.start_datetime) for i in items])
    order = pd.Series(range(len(items)), index=times).sort_index()
    keep = order.loc[start:end].to_numpy()
    if keep.size == 0:
        raise InputError(
            f"{where}: no date between start={start} and end={end}; the items cover "
            f"{str(times.min())[:10]} .. {str(times.max())[:10]}"
        )
    return [items[k] for k in sorted(keep)]


__all__ = [
    "GDAL_CACHE_BYTES",
    "GDAL_REMOTE_OPTIONS",
    "choose_orbit",
    "configure_gdal",
    "open_items",
]
