"""`slamgeo parcels RESULTS.zarr PARCELS --out DIR`: per-parcel and per-class importance,
majority voting of the clusters and accuracy figures on held-out parcels."""

from __future__ import annotations

import typer

from slamgeo import schema
from slamgeo.cli import options as opt
from slamgeo.cli._app import app


@app.command("parcels")
def parcels_cmd(
    results: str = typer.Argument(..., help="Results Zarr store, clustered by `slamgeo cluster`."),
    parcels: str | None = typer.Argument(
        None, help="Parcels: GeoPackage, shapefile or GeoParquet, a path or a URL (optional for sample-form results)."
    ),
    out: str = opt.out(
        "Output folder or URL (created; an existing one must be empty or, with --overwrite, a slamgeo parcels folder)."
    ),
    cube: str | None = typer.Option(None, help="Cube Zarr store, for the per-parcel and per-class VV/VH profiles."),
    id_column: str = typer.Option(
        schema.ID_COLUMN, help="Column (or sample coordinate) holding positive integer parcel ids."
    ),
    class_column: str = typer.Option(
        schema.CLASS_COLUMN, help="Column (or sample coordinate) holding the reference class."
    ),
    all_touched: bool = typer.Option(
        False, help="A pixel belongs to every parcel it touches (default: pixel centre inside)."
    ),
    vote: str = typer.Option(
        schema.VOTE, help="Majority voting unit: pixels (each labelled pixel votes) or parcels (one vote each)."
    ),
    test_fraction: float = typer.Option(
        schema.TEST_FRACTION,
        help="Fraction of the parcels of each class held out for evaluation (0: none; the scores are then "
        "computed on the parcels that voted).",
    ),
    seed: int = typer.Option(0, help="Seed of the train/test split of the parcels."),
    layer: str | None = typer.Option(None, help="Layer of a multi-layer GeoPackage."),
    overwrite: bool = typer.Option(
        False, help="Replace a slamgeo parcels folder at --out (never a folder holding anything else)."
    ),
    scheduler: str | None = opt.scheduler(),
    workers: int | None = opt.workers(),
    threads: int = opt.threads(),
    wait_for_workers: float = opt.wait_for_workers(),
) -> None:
    """Rasterise parcels on the results' grid, aggregate importance, VV/VH and clusters per parcel
    (Dask, out of core), vote clusters into classes on training parcels, and score them on
    held-out parcels. Writes everything to --out at once, or nothing (on object storage:
    metrics.json is removed first and written last, so its presence means complete)."""
    from slamgeo.errors import InputError
    from slamgeo.jobs.metrics import check_vote
    from slamgeo.jobs.parcels import parcels_store
    from slamgeo.jobs.runtime import dask_client

    check_vote(vote, option="--vote")
    if not 0.0 <= test_fraction < 1.0:
        raise InputError(f"--test-fraction must be in [0, 1), found {test_fraction}")
    dask_options = opt.dask_cluster(
        scheduler=scheduler, workers=workers, threads=threads, wait_for_workers=wait_for_workers
    )
    from slamgeo.io import storage

    # refused before a cluster starts (parcels_store checks again)
    storage.claim_output(out, storage.PARCELS, overwrite=overwrite, inputs=[p for p in (results, parcels, cube) if p])
    with dask_client(dask_options):
        res = parcels_store(
            results,
            parcels,
            out,
            cube=cube,
            layer=layer,
            overwrite=overwrite,
            id_column=id_column,
            class_column=class_column,
            all_touched=all_touched,
            vote=vote,
            test_fraction=test_fraction,
            seed=seed,
        )
    for m in res.messages:
        typer.echo(f"note: {m}")
    ev = res.evaluation
    sp, sq = ev.scores_pixels, ev.scores_parcels
    scored = "held-out" if ev.held_out else "all (none held out)"
    typer.echo(
        f"wrote {out}: {len(res.table)} parcels ({ev.train_ids.size} train, {ev.test_ids.size} test), "
        f"{len(ev.classes)} classes, vote by {vote}; {scored} pixels: OA {100 * sp['overall_accuracy']:.1f} %, "
        f"kappa {sp['kappa']:.3f}; {scored} parcels: OA {100 * sq['overall_accuracy']:.1f} %, kappa {sq['kappa']:.3f}"
    )
