"""Ingest: Sentinel-1 inputs -> the cube of docs/design.md (float32 dB `VV`, `VH`; CF grid mapping).

Each kind of input is read by one reader of the registry `slamgeo.io.readers.READERS`, found
from the paths (`detect_source`: the first reader, in the registry's order, that can open them):

- `geotiff`: GeoTIFFs, one per date (files, or folders of `*.tif`): two bands described "VV" and
  "VH", or single-band files per polarisation (`..._VV.tif` / `..._VH.tif`), linear power;
- `stac`: a STAC ItemCollection JSON, one Item per date, whose GeoTIFF/COG assets follow one of
  the conventions of `slamgeo.io.readers.conventions` (linear power or dB);
- `stac-api`: a STAC API search (`stac+https://HOST/PATH`);
- `cube`: a NetCDF file or Zarr store holding a cube (openEO names `S1-SIGMA0-VV`/`VH` and dim
  `t`, or `VV`/`VH` and `time`), as uint16 digital numbers, linear power, or dB (`units: dB`);
- `table`: a long Parquet table of per-parcel or per-point series (WorldCereal style), which
  becomes a `(time, sample)` cube with the labels as coordinates;
- `scene`: a `slamgeo synth` output folder, read through its GeoTIFFs or its archive's Items.

Rasters are read lazily with Dask and written chunk by chunk (`slamgeo.io.cube.write_cube`), so
a stack larger than memory ingests in bounded memory. Inputs are only ever opened for reading.
Under a distributed client the workers read the inputs and write the chunks (`check_workers_see`
first checks that they see the local inputs); otherwise this process's threads do.
Before the store is marked complete its values are checked to be backscatter (`check_plausible`).

Inputs and the output may be fsspec URLs (`s3://bucket/cube.zarr`): Zarr stores and Parquet
tables are read through fsspec, a NetCDF file is downloaded once (fsspec's simplecache).
GeoTIFF and STAC URLs are handed to GDAL as they are (rasterio reads `s3://` as `/vsis3/`),
with GDAL's endpoint settings derived from `AWS_ENDPOINT_URL` when GDAL's own are not set
(`storage.gdal_s3_options`); an fsspec URL folder of GeoTIFFs is listed with fsspec.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import dask
import numpy as np
import rasterio
import rasterio.errors
import xarray as xr

from slamgeo.errors import ConfigError, InputError, OutputError, SlamgeoError
from slamgeo.io import storage
from slamgeo.io.cube import BANDS, check_zarr_format, write_cube
from slamgeo.io.readers import READERS, ReadRequest, reader, reader_for
from slamgeo.io.readers._common import InputWarning, _dates_text, _one_line, _suffix, parse_time_window
from slamgeo.io.readers.archive import GDAL_CACHE_BYTES
from slamgeo.io.readers.grid import GridOptions, Orbit, Resampling, check_bbox, parse_bbox
from slamgeo.io.readers.stac_api import SearchOptions
from slamgeo.schema import CHUNK, TRAIN_MIN_DATES, ZARR_FORMAT

WORKERS_ANSWER = 60.0  # seconds the Dask workers are given to say whether they see the inputs

if TYPE_CHECKING:
    import distributed


# --- source detection ----------------------------------------------------------------------------


def _detect(source: storage.Location) -> str:
    """The kind of one input: the first reader of `READERS` that can open it."""
    found = reader_for(source)
    if found is not None:
        return found.name
    if not storage.exists(source):
        raise InputError(f"{source}: no such file or folder")
    kinds = "; ".join(f"{name}: {r.summary}" for name, r in READERS.items())
    raise InputError(f"{source}: unrecognised input type {_suffix(source) or '(no suffix)'}; expected one of {kinds}")


def detect_source(inputs: Sequence[str | Path], *, kind: str | None = None) -> tuple[str, list[storage.Location]]:
    """Which reader of `slamgeo.io.readers.READERS` fits `inputs` (local paths or fsspec URLs):
    several inputs only for a reader of several (GeoTIFF files and folders), else exactly one.
    `kind`, when given, is the reader the inputs must be for (the configuration's `input.kind`).
    Returns the reader's name and the inputs as locations (`Path`, or URL `str`). Raises
    `InputError` naming the bad path (`ConfigError` for an unknown `kind`)."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    wanted = reader(kind) if kind is not None else None
    paths = [storage.location(p) for p in inputs]
    if not paths:
        raise InputError(f"no input given: expected {'; or '.join(r.summary for r in READERS.values())}")
    kinds = [_detect(p) for p in paths]
    for p, k in zip(paths, kinds):
        if wanted is not None and k != wanted.name:
            raise InputError(
                f"{p}: reads as {READERS[k].summary} (kind {k!r}), not as {wanted.summary} (kind {wanted.name!r}); "
                f"give the kind {k!r} (input.kind in a configuration), or an input of kind {wanted.name!r}"
            )
    if len(paths) > 1:
        for p, k in zip(paths, kinds):
            if k != kinds[0] or not READERS[k].many:
                several = ", ".join(name for name, r in READERS.items() if r.many)
                raise InputError(
                    f"{p}: several inputs can only be of kind {several}; a {k} input ({READERS[k].summary}) must be "
                    "the only input"
                )
    return kinds[0], paths


# --- plausibility of the backscatter -------------------------------------------------------------


PLAUSIBLE_MEDIAN_DB = (-40.0, 5.0)  # the median of a date's valid pixels lies in this range (dB)
LINEAR_LIMIT_DB = 30.0  # a median above this (linear power 1e3) is not backscatter (dB)
IMPOSSIBLE_DB = 40.0  # a value above this (linear power 1e4) is not backscatter, not even a corner reflector (dB)
IMPOSSIBLE_SHARE = 0.01  # a date with more than this share of valid pixels above IMPOSSIBLE_DB is refused
LOW_VALID_SHARE = 0.01  # a date with fewer valid pixels than this share is ingested with a warning
_HIST_EDGES = np.arange(-100.0, 100.25, 0.5)  # dB bin edges; two more bins take what lies outside


class BackscatterWarning(InputWarning):
    """A date with no, or very few, valid pixels: ingested as it is, but worth a look."""


def check_dates(ds: xr.Dataset, where: str) -> None:
    """A cube without dates is refused; one with fewer than `TRAIN_MIN_DATES` gives an
    `InputWarning` naming the count, the dates and the minimum for training (such a cube can
    be read and aligned, but not trained on)."""
    times = np.asarray(ds["time"].values)
    if times.size == 0:
        raise InputError(f"{where}: no date to ingest")
    if times.size < TRAIN_MIN_DATES:
        span = str(times.min())[:10] if times.size == 1 else f"{str(times.min())[:10]} .. {str(times.max())[:10]}"
        warnings.warn(
            f"{where}: only {times.size} date(s) ({span}); training a model needs at least {TRAIN_MIN_DATES} dates "
            "(the default model's 3 pooling blocks halve the series 3 times), so `slamgeo train` will refuse this "
            "cube; widen the time window or add dates",
            InputWarning,
            stacklevel=3,
        )


def _block_histogram(block: np.ndarray) -> np.ndarray:
    """`(T, ...)` dB block -> `(T, NB, 1, ...)` counts of its finite values per bin of
    `_HIST_EDGES` (bin 0: below -100 dB, bin NB-1: +100 dB and above)."""
    t = block.shape[0]
    flat = np.asarray(block).reshape(t, -1)
    finite = np.isfinite(flat)
    nb = _HIST_EDGES.size + 1
    bins = np.searchsorted(_HIST_EDGES, np.where(finite, flat, 0.0), side="right")
    codes = (np.arange(t)[:, None] * nb + bins)[finite]
    counts = np.bincount(codes, minlength=t * nb).reshape(t, nb)
    return counts.reshape(t, nb, *([1] * (block.ndim - 1)))


def _time_first(ds: xr.Dataset, band: str):
    import dask.array

    var = ds[band]
    return dask.array.asarray(var.transpose("time", *(d for d in var.dims if d != "time")).data)


def _lazy_histograms(ds: xr.Dataset) -> dict:
    nb = _HIST_EDGES.size + 1
    lazy = {}
    for band in BANDS:
        data = _time_first(ds, band)
        per_block = data.map_blocks(
            _block_histogram,
            new_axis=1,
            dtype=np.int64,
            chunks=(data.chunks[0], (nb,), *[(1,) * len(c) for c in data.chunks[1:]]),
        )
        lazy[band] = per_block.sum(axis=tuple(range(2, per_block.ndim)))
    return lazy


def _lazy_equal_counts(ds: xr.Dataset):
    """`(T,)` lazy counts of the pixels where VV and VH are both valid and equal."""
    vv, vh = (_time_first(ds, band) for band in BANDS)
    same = (vv == vh) & np.isfinite(vv)
    return same.sum(axis=tuple(range(1, same.ndim)))


def backscatter_histograms(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Per band, counts `(T, NB)` int64 of the valid (finite) dB values of each date in the bins
    of `_HIST_EDGES`, computed in one pass chunk by chunk (memory: a few chunks per thread)."""
    (out,) = dask.compute(_lazy_histograms(ds))
    return {b: np.asarray(h, dtype=np.int64) for b, h in out.items()}


def _median_db(counts: np.ndarray) -> np.ndarray:
    """`(T, NB)` histogram -> `(T,)` median in dB to 0.5 dB (bin centre); -inf / +inf when it
    lies beyond -100 / +100 dB; NaN for a date without a valid value."""
    n = counts.sum(1)
    k = np.argmax(counts.cumsum(1) >= np.maximum(n, 1)[:, None] / 2, axis=1)
    centres = np.concatenate([[-np.inf], (_HIST_EDGES[:-1] + _HIST_EDGES[1:]) / 2, [np.inf]])
    return np.where(n > 0, centres[k], np.nan)


def check_plausible(
    ds: xr.Dataset,
    *,
    where: str = "cube",
    negative_share: Callable[[np.datetime64, str], float | None] | None = None,
) -> None:
    """Refuse a cube (`VV`, `VH` in dB on `(time, ...)`) whose values are not backscatter.

    Per band and date, over the valid (finite) pixels, in one chunked pass
    (`backscatter_histograms`): the median must lie in `PLAUSIBLE_MEDIAN_DB`, and at most
    `IMPOSSIBLE_SHARE` of the pixels may lie above `IMPOSSIBLE_DB` (so a few corner reflectors
    pass, a fill value does not). The `InputError` names the band, the dates and the likely
    encoding (linear power x 1000 as digital numbers, a fill value, dB read as linear power).
    A date whose VH equals its VV on every valid pixel (a copy) is refused.
    A cube without any valid pixel, or a band without any on every date, is refused; a date
    without a valid pixel (or with fewer than `LOW_VALID_SHARE`) gives a `BackscatterWarning`,
    unless `negative_share(time, band)` (the share of negative values in the date's raw input,
    None if unknown) says that the input holds dB already, which is refused.
    """
    lazy_hists, lazy_equal = dask.compute(_lazy_histograms(ds), _lazy_equal_counts(ds))  # one pass
    hists = {b: np.asarray(h, dtype=np.int64) for b, h in lazy_hists.items()}
    equal = np.asarray(lazy_equal, dtype=np.int64)
    times = np.asarray(ds["time"].values)
    n_pixels = int(np.prod([n for d, n in ds[BANDS[0]].sizes.items() if d != "time"]))
    span = f"{str(times.min())[:10]} .. {str(times.max())[:10]}" if times.size else "no date"

    def negative(idx: np.ndarray, band: str) -> float | None:
        return None if negative_share is None or idx.size == 0 else negative_share(times[idx[0]], band)

    valid = {b: h.sum(1) for b, h in hists.items()}
    empty_bands = [b for b in BANDS if not valid[b].any()]
    if empty_bands:
        share = negative(np.arange(times.size), empty_bands[0])
        hint = (
            "the input values are negative: values look like dB already, read here as linear power"
            if share is not None and share > 0.5
            else "every value is no data, zero or negative (values already in dB, read as linear power?)"
        )
        raise InputError(
            f"{where}: no valid {'/'.join(empty_bands)} backscatter on any of the {times.size} date(s) ({span}): {hint}"
        )
    copied = np.flatnonzero((valid["VV"] > 0) & (equal == valid["VV"]) & (equal == valid["VH"]))
    if copied.size:
        raise InputError(
            f"{where}: VH equals VV on every valid pixel on {_dates_text(times, copied)}: the VH data is a copy "
            "of VV (one file given for both?); give the VH backscatter"
        )
    impossible_from = int(np.searchsorted(_HIST_EDGES, IMPOSSIBLE_DB)) + 1
    for band in BANDS:
        h, n = hists[band], valid[band]
        median = _median_db(h)
        high = h[:, impossible_from:].sum(1) / np.maximum(n, 1)
        lo, hi = PLAUSIBLE_MEDIAN_DB
        fill = np.flatnonzero((n > 0) & ((median > LINEAR_LIMIT_DB) | (high > IMPOSSIBLE_SHARE)))
        scaled = np.flatnonzero((n > 0) & (median > hi) & (median <= LINEAR_LIMIT_DB) & (high <= IMPOSSIBLE_SHARE))
        dark = np.flatnonzero((n > 0) & (median < lo))
        for idx, hint in (
            (
                fill,
                f"linear power above 1e3 is not backscatter (a fill value such as 1e38, or digital numbers?); "
                f"{100 * high[fill[:1]].max(initial=0):.0f} % of the valid pixels above +{IMPOSSIBLE_DB:.0f} dB",
            ),
            (scaled, "looks like DN scaled by 1000 (linear power x 1000 stored as integers): divide by 1000"),
            (dark, "far below the noise floor: values look scaled down (linear power x 1e-3 or less?)"),
        ):
            if idx.size:
                m = median[idx[0]]
                m_text = f"{m:+.1f} dB" if np.isfinite(m) else ("above +100 dB" if m > 0 else "below -100 dB")
                expected = f" (expected {lo:+.0f} .. {hi:+.0f} dB)" if not lo <= m <= hi else ""
                raise InputError(
                    f"{where}: implausible {band} backscatter on {_dates_text(times, idx)}: median {m_text}{expected}; "
                    f"{hint}"
                )
    for band in BANDS:
        n = valid[band]
        none = np.flatnonzero(n == 0)
        share = negative(none, band)
        if share is not None and share > 0.5:
            raise InputError(
                f"{where}: no valid {band} pixel on {_dates_text(times, none)}: {100 * share:.0f} % of the input "
                "values are negative: values look like dB already, read here as linear power"
            )
        few = np.flatnonzero((n > 0) & (n < LOW_VALID_SHARE * n_pixels))
        for idx, what in ((none, "no valid pixel"), (few, f"fewer than {100 * LOW_VALID_SHARE:g} % valid pixels")):
            if idx.size:
                warnings.warn(
                    f"{where}: {band} has {what} on {_dates_text(times, idx)}; kept as they are (no data is NaN)",
                    BackscatterWarning,
                    stacklevel=2,
                )


def _negative_share(kind: str, paths: Sequence[storage.Location], time: np.datetime64, band: str) -> float | None:
    """Share of negative values among the non-zero raw values of `band` on the date `time`, from
    the reader (GeoTIFF and STAC inputs read one window of that date's file; None for other
    kinds or when it cannot be read). Used only to explain a date without valid pixels."""
    try:
        return READERS[kind].negative_share(paths, time, band)
    except (InputError, rasterio.errors.RasterioError, OSError):
        return None


# --- dispatch and ingest -------------------------------------------------------------------------


def open_source(
    inputs: Sequence[str | Path],
    *,
    chunk: int = CHUNK,
    start: str | None = None,
    end: str | None = None,
    grid: GridOptions | None = None,
    search: SearchOptions | None = None,
    report: Callable[[str], None] | None = None,
    kind: str | None = None,
) -> xr.Dataset:
    """Open any supported input as a lazy, validated contract cube (see the module doc), with the
    reader `detect_source` finds (or the reader `kind`, checked to fit).

    Rasters (GeoTIFFs, a STAC ItemCollection, a STAC API search, a synth scene) are loaded onto
    the grid that `grid` names (`slamgeo.io.readers.grid`); cubes and tables are read as they
    are, and refuse grid options; only a STAC API takes `search`."""
    if chunk < 1:
        raise ConfigError(f"chunk must be a positive number of pixels, found {chunk}")
    parse_time_window(start, end)
    grid = grid or GridOptions()
    kind, paths = detect_source(inputs, kind=kind)
    source = READERS[kind]
    if not source.searches and search is not None and search != SearchOptions():
        searching = ", ".join(name for name, r in READERS.items() if r.searches)
        raise ConfigError(f"{paths[0]}: collection, datetime and sign apply to a search ({searching}) only")
    if not source.on_grid and not grid.is_default:
        rasters = ", ".join(name for name, r in READERS.items() if r.on_grid)
        raise ConfigError(
            f"{paths[0]}: crs, resolution, bbox, like, orbit and resampling apply to rasters ({rasters}); "
            f"a {kind} input is read as it is"
        )
    ds = source.open(paths, ReadRequest(chunk=chunk, start=start, end=end, grid=grid, search=search, report=report))
    check_dates(ds, str(paths[0]))
    return ds


def grid_options(
    *,
    crs: str | None = None,
    resolution: float | None = None,
    bbox: Sequence[float] | str | None = None,
    like: str | Path | None = None,
    orbit: Orbit | None = None,
    relative_orbits: Sequence[int] = (),
    resampling: Resampling = "bilinear",
    max_pixels: int | None = None,
    max_blocks: int | None = None,
) -> GridOptions:
    """`GridOptions` from keyword arguments (a bbox may be the text "LON0,LAT0,LON1,LAT1")."""
    box = parse_bbox(bbox) if isinstance(bbox, str) else (check_bbox(bbox) if bbox is not None else None)
    return GridOptions(
        crs=crs,
        resolution=resolution,
        bbox=box,
        like=like,
        orbit=orbit,
        relative_orbits=tuple(int(r) for r in relative_orbits),
        resampling=resampling,
        max_pixels=max_pixels,
        max_blocks=max_blocks,
    )


def _local_entry(f: Path, name: str, content_limit: int) -> str:
    st = f.stat()
    ident = hashlib.sha256(f.read_bytes()).hexdigest() if st.st_size <= content_limit else st.st_mtime_ns
    return json.dumps([name, st.st_size, ident])


def _object_entries(url: str) -> list[str]:
    """Per object at `url` (a file, or every object under a folder such as a Zarr store): its
    name, size and the store's change tag (ETag on S3, else the modification time), from
    listings only: nothing is downloaded."""
    fs, root = storage.filesystem(url)
    found = fs.find(root, detail=True) if fs.isdir(root) else {root: fs.info(root)}
    out = []
    for key, info in found.items():
        rel = key[len(root.rstrip("/")) :].lstrip("/") or storage.name(url)
        tag = next((info[k] for k in ("ETag", "etag", "mtime", "LastModified", "created") if info.get(k)), None)
        out.append(json.dumps([rel, info.get("size"), str(tag)]))
    return out


def input_fingerprint(files: Sequence[str | Path], *, content_limit: int = 16 * 2**20) -> str:
    """sha256 (hex) identifying the inputs, in any order: per local file its name, size and
    content hash (the modification time instead for files over `content_limit` bytes, costly to
    hash), every file of a local folder (a Zarr store) likewise; per fsspec URL, each object's
    name, size and change tag (`_object_entries`); a GDAL path (`/vsi...`) or an http(s) URL
    by its text."""
    entries = []
    for f in files:
        text = str(f)
        if text.startswith("/vsi") or urlparse(text).scheme in ("http", "https"):
            entries.append(json.dumps(["url", text]))
        elif storage.is_url(f):
            entries.extend(_object_entries(text))
        elif Path(f).is_dir():
            root = Path(f)
            entries.extend(
                _local_entry(q, q.relative_to(root).as_posix(), content_limit)
                for q in sorted(root.rglob("*"))
                if q.is_file()
            )
        else:
            entries.append(_local_entry(Path(f), Path(f).name, content_limit))
    # Sorted: the same files given in another order are the same input.
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


def _provenance(kind: str, paths: Sequence[storage.Location], ds: xr.Dataset) -> dict:
    """Root attributes of an ingested cube: where it came from (the reader's kind, the inputs
    given, and the fingerprint of the files the reader read), on which grid (rasters), and
    which slamgeo made it."""
    from slamgeo._version import __version__

    # a folder given whole (a Zarr store) is read whole by input_fingerprint
    files = READERS[kind].inputs(paths, ds=ds)
    grid = {k: ds.attrs[k] for k in ("grid",) if k in ds.attrs}
    return {
        "title": "Sentinel-1 backscatter cube (slamgeo)",
        "source_kind": kind,
        "source": [str(p) for p in paths],
        "input_fingerprint": input_fingerprint(files),
        **grid,
        "slamgeo_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _writing(exc: BaseException, out: storage.Location) -> bool:
    """True when the OS error `exc` names a path at or next to the output `out` (its
    temporary store), so the write failed, not the read."""
    out_path = Path(storage.filesystem(out)[1]).resolve()
    for f in (getattr(exc, "filename", None), getattr(exc, "filename2", None)):
        if f and str(Path(str(f)).resolve()).startswith(str(out_path)):
            return True
    return False


GRID_DOC = """
    Rasters (GeoTIFFs, a STAC ItemCollection JSON, or a STAC API given as
    `stac+https://HOST/PATH`) are loaded onto one grid with odc-stac: `crs` (default: the most
    common among the items), `resolution` in metres (default: native), `bbox` (lon0, lat0, lon1,
    lat1 in degrees) or `like` (a parcels file whose extent is taken; default: the union of the
    footprints), `orbit` ("ascending"/"descending"; default: the direction with the most
    acquisitions), `relative_orbits`, `resampling` ("bilinear" of linear power, or "nearest").
    A STAC API search takes `collection`, `datetime` ("2017-01-01/2017-12-31"), the same `bbox`,
    and `sign` ("planetary-computer" or a function `Item -> Item`). Guards, checked before any
    pixel is read: a grid over `max_pixels` pixels per date (default 1e9), a tiling into over
    `max_blocks` tiles of `chunk` pixels (default 100 000), tiles under 16 pixels that would
    open files more than 10 000 times (unless `max_blocks` is given), and footprints in separate
    areas when the extent is their union are refused. Fewer dates than training needs, and date
    tags that contradict file names, give an `InputWarning`.
    """


def _options(kw: dict) -> tuple[GridOptions, SearchOptions]:
    """Split keyword options into the grid's and the STAC API search's."""
    search = {k: kw.pop(k) for k in ("collection", "datetime", "sign", "max_items") if k in kw}
    grid = grid_options(**kw)
    return grid, SearchOptions(**search, bbox=grid.bbox) if search else SearchOptions()


def ingest(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    chunk: int = CHUNK,
    zarr_format: int = ZARR_FORMAT,
    overwrite: bool = False,
    start: str | None = None,
    end: str | None = None,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
    kind: str | None = None,
    **options,
) -> storage.Location:
    """Ingest `inputs` into the cube Zarr store `out` (a local path or an fsspec URL); returns
    its location (a `Path`, or the URL). `kind`: the reader (a name of
    `slamgeo.io.readers.READERS`) the inputs must be for; default: the one detected.

    Validates everything it can before writing (paths, dates, bands, items, the grid), then
    writes chunk by chunk (`slamgeo.io.cube.write_cube`: locally to a temporary store renamed
    into place once complete; on object storage in place, marked complete last). Errors are
    `InputError`/`ConfigError` naming the file and the problem; no output that looks complete
    is left when it is not. `report` gets the line saying which orbit and grid were chosen.
    """
    check_zarr_format(zarr_format)
    out = storage.location(out)
    grid, search = _options(dict(options))
    kind, paths = detect_source(inputs, kind=kind)
    storage.claim_output(out, storage.CUBE, overwrite=overwrite, inputs=_locations(kind, paths))
    with storage.gdal_s3_environ():  # GeoTIFFs on S3: GDAL reads them, in Dask's threads too
        ds = open_source(paths, chunk=chunk, start=start, end=end, grid=grid, search=search, report=report, kind=kind)
        assets = ds.attrs.get("asset_items", {})
        ds.attrs = _provenance(kind, paths, ds)
        return _ingest_opened(
            ds, kind, paths, out, zarr_format=zarr_format, overwrite=overwrite, progress=progress, assets=assets
        )


def load(
    inputs: Sequence[str | Path],
    *,
    chunk: int = CHUNK,
    start: str | None = None,
    end: str | None = None,
    report: Callable[[str], None] | None = None,
    kind: str | None = None,
    **options,
) -> xr.Dataset:
    """Sentinel-1 backscatter from `inputs` (any source `detect_source` knows, or of the reader
    `kind`) as a lazy cube of the contract: float32 dB `VV`, `VH` on `(time, y, x)` (or
    `(time, sample)` for a table), chunked `chunk` in space and whole in time, with its
    provenance as attributes. Nothing is written; `ingest` writes the same cube to a Zarr store
    (and checks its values).
    """
    grid, search = _options(dict(options))
    kind, paths = detect_source(inputs, kind=kind)
    ds = open_source(paths, chunk=chunk, start=start, end=end, grid=grid, search=search, report=report, kind=kind)
    ds.attrs = _provenance(kind, paths, ds)
    return ds


ingest.__doc__ = (ingest.__doc__ or "") + GRID_DOC
load.__doc__ = (load.__doc__ or "") + GRID_DOC


def _locations(kind: str, paths: Sequence[storage.Location]) -> list[storage.Location]:
    """The inputs that are locations (an output must not lie in or over them): all of them but
    a search's (a service's URL)."""
    return [] if READERS[kind].searches else list(paths)


def _failed_asset(message: str, assets: dict[str, str]) -> str:
    """ ", in item X, asset VV (FILE)" for the first asset file named in a read error, else ""."""
    for href, what in assets.items():
        if href in message:
            return f", in {what} ({href})"
    return ""


class _FailedReads(logging.Handler):
    """The files odc-stac names when a read fails (its exception carries GDAL's message only)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.uris: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.args and isinstance(record.args, tuple):
            self.uris.append(str(record.args[0]))


def _ingest_opened(ds, kind, paths, out, *, zarr_format, overwrite, progress, assets=None) -> storage.Location:
    failed = _FailedReads()
    odc_log = logging.getLogger("odc.loader._rio")
    odc_log.addHandler(failed)
    try:
        return _write_ingested(ds, kind, paths, out, zarr_format, overwrite, progress, assets or {}, failed)
    finally:
        odc_log.removeHandler(failed)


@contextlib.contextmanager
def _quiet_reprojection() -> Iterator[None]:
    """Silence rasterio's `NotGeoreferencedWarning` from `rasterio.warp.reproject` while the
    loader's threads read. Every reprojected read (odc-stac's, for a tile not on the file's own
    grid: another UTM zone, another resolution) wraps the output array in a MEM dataset, which
    has no geotransform for an instant; rasterio hides the warning that causes with
    `warnings.catch_warnings`, which is not thread-safe (Python < 3.14): with several reads at
    once one thread restores the filters another had changed, and "Dataset has no geotransform"
    is printed in the middle of a correct load. It says nothing about the input: only the
    warnings attributed to `rasterio.warp` are silenced (a file without georeferencing is warned
    about where it is opened, and refused where its header is read). The filters are put back
    on exit, which also undoes an "ignore every warning" that the same race can leave behind.
    `load` returns a lazy cube computed outside this block: there the warning may still show."""
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module=r"rasterio\.warp")
        yield


def _write_ingested(ds, kind, paths, out, zarr_format, overwrite, progress, assets, failed) -> storage.Location:
    # GDAL's block cache (default 5 % of RAM) would keep every block read until it is full, so
    # peak memory would grow with the scene; ingest reads each block once, so it is bounded
    # (`GDAL_CACHE_BYTES`): here for reads in this process, and on the workers through the
    # loader's GDAL settings (`archive.configure_gdal`), restored around every read there.
    # Under a distributed client the workers read and write: the inputs they are to read
    # are checked to be visible there first, and a failed read names its file from their log.
    client = _active_client()
    if client is not None:
        check_workers_see(client, _files_to_read(kind, paths, assets))
    local = contextlib.nullcontext() if client is not None else dask.config.set(scheduler="threads")
    try:
        with (
            rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES),
            local,
            _quiet_reprojection(),
            _on_workers(client) as worker_reads,
        ):
            try:
                return write_cube(
                    ds,
                    out,
                    zarr_format=zarr_format,
                    overwrite=overwrite,
                    progress=progress,
                    inputs=_locations(kind, paths),
                    check=lambda written: check_plausible(
                        written,
                        where=str(paths[0]),
                        negative_share=lambda t, band: _negative_share(kind, paths, t, band),
                    ),
                )
            except BaseException:
                failed.uris.extend(worker_reads())
                raise
    except Exception as exc:
        if isinstance(exc, SlamgeoError):
            raise
        # a worker's rasterio error comes back as a plain Exception (it does not unpickle):
        # a read failure all the same when a worker's loader named the file it failed on
        if not isinstance(exc, (rasterio.errors.RasterioError, OSError, RuntimeError, ValueError)) and not failed.uris:
            raise
        # odc-stac's own checks of a file (a band it lacks) are ValueErrors naming the file;
        # other ValueErrors are not about the input
        if isinstance(exc, ValueError) and not _failed_asset(_one_line(exc), assets):
            raise
        if storage.is_local(out) and _writing(exc, out):
            raise OutputError(f"{out}: writing the cube failed ({_one_line(exc)})") from exc
        why = _one_line(exc)
        where = _failed_asset(" ".join([why, *failed.uris]), assets)
        raise InputError(f"{paths[0]}: reading the {kind} input failed{where} while writing {out} ({why})") from exc


# --- ingest on the workers of a distributed client -----------------------------------------------


def _active_client() -> distributed.Client | None:
    """The distributed client Dask computes on here (the default one, or one set with
    `dask.config.set(scheduler=client)`), or None under a local scheduler."""
    from dask.base import get_scheduler

    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    owner = getattr(get_scheduler(), "__self__", None)
    return owner if isinstance(owner, Client) else None


def _files_to_read(kind: str, paths: Sequence[storage.Location], assets: dict[str, str]) -> list[str]:
    """The local files and folders the workers will open: the inputs given (a search's are a
    service) and the local asset files of a raster input."""
    found = [] if READERS[kind].searches else [str(p) for p in paths if storage.is_local(p)]
    for href in assets:
        if "://" not in href and not href.startswith("/vsi"):
            found.append(href)
    return list(dict.fromkeys(found))


def _missing_here(files: Sequence[str], sizes: dict[str, int | None]) -> list[str]:
    """Which of `files` this process cannot see as the driver does: absent, or (a file) of
    another size than `sizes` says. Run on each worker by `check_workers_see`."""
    import os

    missing = []
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            missing.append(f)
            continue
        if sizes.get(f) is not None and st.st_size != sizes[f]:
            missing.append(f)
    return missing


def check_workers_see(client: distributed.Client, files: Sequence[str | Path]) -> None:
    """Raise `InputError` (one line) unless every worker of `client` sees each local input file
    of `files` as this process does (it exists there, with the same size for a file): a worker
    on another machine, or started in another working directory for a relative path, cannot
    read what the driver can. Checked with one `client.run`, before any task is sent."""
    import os

    names = [str(f) for f in files]
    if not names:
        return
    sizes = {f: (os.stat(f).st_size if os.path.isfile(f) else None) for f in names if os.path.exists(f)}
    # `Client.run` has no time limit of its own: a worker whose event loop is held would stall
    # the ingest before it starts; the call is waited for WORKERS_ANSWER seconds at most
    ask = ThreadPoolExecutor(1, thread_name_prefix="slamgeo-workers-see")
    try:
        answers = ask.submit(client.run, _missing_here, names, sizes).result(timeout=WORKERS_ANSWER)
    except (OSError, TimeoutError) as exc:
        why = f"no answer within {WORKERS_ANSWER:g} s" if not str(exc) else _one_line(exc)
        raise InputError(f"{names[0]}: cannot ask the Dask workers whether they see the inputs ({why})") from exc
    finally:
        ask.shutdown(wait=False)
    blind = {w: m for w, m in answers.items() if m}
    if blind:
        worker, missing = next(iter(sorted(blind.items())))
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise InputError(
            f"{missing[0]}{more}: not visible to {len(blind)} of {len(answers)} Dask worker(s) (e.g. {worker}), "
            "which read the inputs; put the inputs on storage every worker sees (a shared file system, "
            "object storage) and give absolute paths"
        )


def _worker_reads() -> distributed.WorkerPlugin:
    """A Dask worker plugin for the time of one ingest: on each worker it keeps the files whose
    read failed (odc-stac's log names them; its exception carries GDAL's message only) and
    silences the same reprojection warnings as `_quiet_reprojection` does here. Made here, not
    at import, so that importing this module does not import distributed."""
    from distributed import WorkerPlugin
    from rasterio.errors import NotGeoreferencedWarning

    class WorkerReads(WorkerPlugin):
        def __init__(self) -> None:
            self.uris: list[str] = []
            self.handler: logging.Handler | None = None

        def setup(self, worker: object) -> None:
            uris = self.uris

            class Keep(logging.Handler):
                def emit(self, record: logging.LogRecord) -> None:
                    if record.args and isinstance(record.args, tuple):
                        uris.append(str(record.args[0]))

            self.handler = Keep(logging.ERROR)
            logging.getLogger("odc.loader._rio").addHandler(self.handler)
            warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module=r"rasterio\.warp")

        def teardown(self, worker: object) -> None:
            if self.handler is not None:
                logging.getLogger("odc.loader._rio").removeHandler(self.handler)

    return WorkerReads()


def _failed_on(dask_worker: object, name: str) -> list[str]:
    plugin = getattr(dask_worker, "plugins", {}).get(name)
    return list(getattr(plugin, "uris", []))


@contextlib.contextmanager
def _on_workers(client: distributed.Client | None) -> Iterator[Callable[[], list[str]]]:
    """With a client: `_WorkerReads` on its workers for the duration; yields a function that
    returns the files whose read failed on any worker (nothing without a client)."""
    if client is None:
        yield list
        return
    import uuid

    name = f"slamgeo-ingest-{uuid.uuid4().hex}"
    client.register_plugin(_worker_reads(), name=name)

    def failed() -> list[str]:
        with contextlib.suppress(Exception):
            return [u for uris in client.run(_failed_on, name=name).values() for u in uris]
        return []

    try:
        yield failed
    finally:
        with contextlib.suppress(Exception):
            client.unregister_worker_plugin(name)


__all__ = [
    "BackscatterWarning",
    "backscatter_histograms",
    "check_plausible",
    "check_workers_see",
    "detect_source",
    "grid_options",
    "ingest",
    "input_fingerprint",
    "load",
    "open_source",
]
