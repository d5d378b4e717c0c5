"""`slamgeo synth OUT_DIR`: write a synthetic Sentinel-1 scene and its ground truth (with
`--archive`, as a Sentinel-1 archive in Planetary Computer's sentinel-1-rtc conventions)."""

from __future__ import annotations

import json

import typer

from slamgeo import schema
from slamgeo.cli._app import app


@app.command("synth")
def synth_cmd(
    out_dir: str = typer.Argument(
        ...,
        help="Folder or URL to create (GeoTIFFs, stac.json, parcels.gpkg, phenology.csv, truth.tif; "
        "with --archive, archive/ instead of the GeoTIFFs and stac.json).",
    ),
    size: int = typer.Option(512, help="Scene width and height in 10 m pixels."),
    seed: int = typer.Option(0, help="Random seed (the same seed gives the same scene)."),
    n_dates: int = typer.Option(
        61,
        help=f"Number of acquisitions on the regular grid (at least {schema.TRAIN_MIN_DATES} "
        "once --missing-dates are taken off: a model trains on no fewer).",
    ),
    start: str = typer.Option("2017-01-03", help="First acquisition date (YYYY-MM-DD)."),
    step_days: int = typer.Option(6, help="Days between acquisitions."),
    missing_dates: int = typer.Option(0, help="Acquisitions to drop at random (never the first or last)."),
    irregular: bool = typer.Option(
        False, "--irregular", help="Move each date but the first by up to (step-1)//2 days."
    ),
    rain_events: int = typer.Option(0, help="Dates on which rain raises VV over the whole scene."),
    enl: float = typer.Option(4.4, help="Equivalent number of looks of the speckle."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a slamgeo scene at OUT_DIR (never a folder holding anything else)."
    ),
    archive: bool = typer.Option(
        False,
        "--archive",
        help="Write a Sentinel-1 archive (archive/items.json, collection.json, COGs in two UTM zones, "
        "ascending and descending passes) instead of tiffs/ and stac.json.",
    ),
    grid_parcels: int = typer.Option(
        0, "--grid-parcels", help="Also write parcels_grid.gpkg: N rectangular parcels tiling the scene (benchmarks)."
    ),
) -> None:
    """Draw a synthetic Sentinel-1 scene (parcels, 16 crop classes, speckle) and write it as real products."""
    from slamgeo.errors import InputError
    from slamgeo.io import storage
    from slamgeo.synth import check_trainable_dates, make_scene, write_archive, write_scene

    if grid_parcels < 0:
        raise InputError(f"--grid-parcels must be 0 (none) or more, found {grid_parcels}")
    check_trainable_dates(n_dates, missing_dates)  # a scene too short to train on is of no use downstream
    storage.claim_output(out_dir, storage.SCENE, overwrite=overwrite)  # before minutes of drawing
    scene = make_scene(
        size=size,
        seed=seed,
        n_dates=n_dates,
        start=start,
        step_days=step_days,
        missing_dates=missing_dates,
        irregular=irregular,
        rain_events=rain_events,
        enl=enl,
    )
    write = write_archive if archive else write_scene
    paths = write(scene, out_dir, overwrite=overwrite, n_grid_parcels=grid_parcels)
    times = scene.cube["time"].values
    typer.echo(
        f"scene: {size} x {size} pixels, {len(scene.parcels)} parcels, {times.size} dates "
        f"{str(times[0])[:10]} .. {str(times[-1])[:10]}, rain on "
        f"{', '.join(str(d.date()) for d in scene.rain_dates) or 'no date'}"
    )
    folder = "cogs" if archive else "tiffs"
    n_tif = len(storage.glob(paths[folder], "*.tif"))
    for kind, path in paths.items():
        extra = f" ({n_tif} {'COGs' if archive else 'GeoTIFFs'})" if kind == folder else ""
        if kind == "items":
            extra = f" ({len(json.loads(storage.read_text(path))['features'])} STAC items)"
        typer.echo(f"wrote {kind:12s} {path}{extra}")
