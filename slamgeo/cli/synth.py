"""`slamgeo synth OUT_DIR`: write a synthetic Sentinel-1 scene and its ground truth (with
`--archive`, as a Sentinel-1 archive in Planetary Computer's sentinel-1-rtc conventions)."""

from __future__ import annotations

import json

import typer

from slamgeo import schema
from slamgeo.cli._app import app


def parse_crop_mix(text: str) -> dict[str, float]:
    """`--crop-mix` "maize=3,sugar beet=0.5" as {"maize": 3.0, "sugar beet": 0.5} ("": none);
    the classes and weights are checked by `slamgeo.synth.check_crop_mix`."""
    from slamgeo.errors import InputError
    from slamgeo.synth import check_crop_mix

    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.rpartition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = None
        if not sep or not name.strip() or weight is None:
            raise InputError(f"--crop-mix: expected CLASS=WEIGHT pairs separated by commas, found {part!r}")
        mix[name.strip()] = weight
    check_crop_mix(mix)
    return mix


# the command's options that are `make_scene`'s, passed on by name
SCENE_OPTIONS = (
    "size",
    "seed",
    "n_dates",
    "start",
    "step_days",
    "missing_dates",
    "irregular",
    "rain_events",
    "enl",
    "calendar_shift_days",
)


@app.command("synth")
def synth_cmd(
    ctx: typer.Context,
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
    calendar_shift_days: int = typer.Option(
        0,
        "--calendar-shift-days",
        help=f"Drift: move every crop's calendar (sowing, growth, harvest) by N days, later when positive "
        f"(at most {schema.CALENDAR_SHIFT_MAX_DAYS}); the weather stays.",
    ),
    crop_mix: str = typer.Option(
        "",
        "--crop-mix",
        help="Drift: the classes' shares of the parcels as CLASS=WEIGHT pairs separated by commas "
        "(maize=3,wheat=0); a class left out weighs 1.",
    ),
) -> None:
    """Draw a synthetic Sentinel-1 scene (parcels, 16 crop classes, speckle) and write it as real products."""
    from slamgeo.errors import InputError
    from slamgeo.io import storage
    from slamgeo.synth import check_trainable_dates, make_scene, write_archive, write_scene

    if grid_parcels < 0:
        raise InputError(f"--grid-parcels must be 0 (none) or more, found {grid_parcels}")
    mix = parse_crop_mix(crop_mix)
    check_trainable_dates(n_dates, missing_dates)  # a scene too short to train on is of no use downstream
    storage.claim_output(out_dir, storage.SCENE, overwrite=overwrite)  # before minutes of drawing
    options = {name: ctx.params[name] for name in SCENE_OPTIONS}  # as typer parsed them
    scene = make_scene(**options, crop_mix=mix)
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
