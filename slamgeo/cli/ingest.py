"""`slamgeo ingest INPUT... --out CUBE.zarr`: any supported input -> the cube Zarr store.

Rasters (GeoTIFFs, a STAC ItemCollection, a STAC API `stac+https://HOST/PATH`) are loaded onto
the grid named by --crs/--resolution/--bbox/--like, with odc-stac."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import typer

from slamgeo import schema
from slamgeo.cli import options as opt
from slamgeo.cli._app import app


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Print the input's warnings (`InputWarning`: a date tag against a file name, a short
    stack, a date without valid pixels) as one line `warning: ...` on stderr while the block
    runs; other warnings as Python prints them."""
    from slamgeo.io.readers._common import InputWarning

    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            if issubclass(category, InputWarning):
                typer.echo(f"warning: {' '.join(str(message).split())}", err=True)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


@app.command("ingest")
def ingest_command(
    inputs: list[str] = typer.Argument(
        ...,
        metavar="INPUT...",
        help="GeoTIFF files or folders (one file per date), a STAC ItemCollection JSON, a STAC API "
        "(stac+https://HOST/PATH), a NetCDF/Zarr cube, a Parquet table of per-parcel series, or a "
        "slamgeo synth output folder.",
        show_default=False,
    ),
    out: str = opt.out("The cube Zarr store to write (a path or a URL)."),
    chunk: int = typer.Option(schema.CHUNK, "--chunk", help="Spatial chunk size in pixels (samples for a table)."),
    zarr_format: int = typer.Option(2, "--zarr-format", help="Zarr format 2 (GDAL reads it) or 3."),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace a slamgeo cube at --out once the new one is complete (never a folder holding anything else or an input).",
    ),
    start: str | None = typer.Option(None, "--start", help="First date to keep (YYYY-MM-DD, inclusive)."),
    end: str | None = typer.Option(None, "--end", help="Last date to keep (YYYY-MM-DD, inclusive)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar while writing."),
    crs: str | None = typer.Option(
        None, "--crs", help="Output CRS, e.g. EPSG:32630 (projected). Default: the most common among the items."
    ),
    resolution: float | None = typer.Option(
        None, "--resolution", help="Pixel size in metres. Default: the items' native one."
    ),
    bbox: str | None = typer.Option(
        None, "--bbox", help="LON0,LAT0,LON1,LAT1 in degrees: the extent (and a STAC API's search box)."
    ),
    like: str | None = typer.Option(None, "--like", help="A parcels file whose extent is the output's."),
    orbit: str | None = typer.Option(
        None, "--orbit", help="ascending or descending. Default: the direction with the most acquisitions."
    ),
    relative_orbit: list[int] = typer.Option([], "--relative-orbit", help="Keep this relative orbit (repeatable)."),
    resampling: str = typer.Option("bilinear", "--resampling", help="bilinear (of linear power) or nearest."),
    collection: str | None = typer.Option(None, "--collection", help="STAC API: the collection to search."),
    datetime: str | None = typer.Option(
        None, "--datetime", help="STAC API: the time range to search, e.g. 2017-01-01/2017-12-31."
    ),
    sign: str | None = typer.Option(
        None, "--sign", help="STAC API: sign asset URLs (planetary-computer, from the pc extra)."
    ),
    max_pixels: int | None = typer.Option(
        None,
        "--max-pixels",
        help="Refuse a grid of more pixels per date than this (a guard; default 1e9).",
        show_default=False,
    ),
    max_blocks: int | None = typer.Option(
        None,
        "--max-blocks",
        help="Refuse a grid cut into more tiles of --chunk pixels than this (a guard; default 100000). "
        "Given, tiles under 16 pixels are allowed too.",
        show_default=False,
    ),
) -> None:
    """Ingest Sentinel-1 backscatter into a cube: float32 dB VV/VH on (time, y, x) or (time, sample)."""
    from slamgeo.io.ingest import ingest
    from slamgeo.io.readers import scene
    from slamgeo.io.readers.stac_api import is_stac_api

    for given in inputs:
        rasters = None if is_stac_api(given) else scene.rasters(given)
        if rasters is not None:
            typer.echo(f"note: {given} is a slamgeo synth scene; reading its backscatter in {rasters}")
    search = {k: v for k, v in (("collection", collection), ("datetime", datetime), ("sign", sign)) if v is not None}
    with one_line_warnings():
        path = ingest(
            inputs,
            out,
            chunk=chunk,
            zarr_format=zarr_format,
            overwrite=overwrite,
            start=start,
            end=end,
            progress=progress,
            report=typer.echo,
            crs=crs,
            resolution=resolution,
            bbox=bbox,
            like=like,
            orbit=orbit,
            relative_orbits=relative_orbit,
            resampling=resampling,
            max_pixels=max_pixels,
            max_blocks=max_blocks,
            **search,
        )
    import xarray as xr

    with xr.open_zarr(str(path)) as ds:
        shape = " x ".join(f"{d} {n}" for d, n in ds.sizes.items())
        t = ds["time"].values
    typer.echo(f"wrote {path}: {shape}, {str(t.min())[:10]} .. {str(t.max())[:10]}")
