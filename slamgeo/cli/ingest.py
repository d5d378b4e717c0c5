"""`slamgeo ingest INPUT... --out CUBE.zarr`: any supported input -> the cube Zarr store."""

from __future__ import annotations

import typer

from slamgeo import schema
from slamgeo.cli._app import app


@app.command("ingest")
def ingest_command(
    inputs: list[str] = typer.Argument(
        ...,
        metavar="INPUT...",
        help="GeoTIFF files or folders (one file per date), a STAC ItemCollection JSON, "
        "a NetCDF/Zarr cube, or a Parquet table of per-parcel series.",
        show_default=False,
    ),
    out: str = typer.Option(
        ..., "--out", "-o", help="The cube Zarr store to write (a path or a URL).", show_default=False
    ),
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
) -> None:
    """Ingest Sentinel-1 backscatter into a cube: float32 dB VV/VH on (time, y, x) or (time, sample)."""
    from slamgeo.io.ingest import ingest, scene_tiffs

    for given in inputs:
        tiffs = scene_tiffs(given)
        if tiffs is not None:
            typer.echo(f"note: {given} is a slamgeo synth scene; reading its GeoTIFFs in {tiffs}")
    path = ingest(
        inputs, out, chunk=chunk, zarr_format=zarr_format, overwrite=overwrite, start=start, end=end, progress=progress
    )
    import xarray as xr

    with xr.open_zarr(str(path)) as ds:
        shape = " x ".join(f"{d} {n}" for d, n in ds.sizes.items())
        t = ds["time"].values
    typer.echo(f"wrote {path}: {shape}, {str(t.min())[:10]} .. {str(t.max())[:10]}")
