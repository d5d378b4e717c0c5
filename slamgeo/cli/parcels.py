"""`slamgeo parcels RESULTS.zarr PARCELS --out DIR`: per-parcel and per-class importance,
majority voting of the clusters and accuracy figures on held-out parcels."""

from __future__ import annotations

import typer

from slamgeo.cli._app import app, check_cluster_options


@app.command("parcels")
def parcels_cmd(
    results: str = typer.Argument(..., help="Results Zarr store, clustered by `slamgeo cluster`."),
    parcels: str | None = typer.Argument(
        None, help="Parcels: GeoPackage, shapefile or GeoParquet, a path or a URL (optional for sample-form results)."
    ),
    out: str = typer.Option(
        ...,
        "--out",
        "-o",
        help="Output folder or URL (created; an existing one must be empty or, with --overwrite, a slamgeo parcels folder).",
    ),
    cube: str | None = typer.Option(None, help="Cube Zarr store, for the per-parcel and per-class VV/VH profiles."),
    id_column: str = typer.Option(
        "parcel_id", help="Column (or sample coordinate) holding positive integer parcel ids."
    ),
    class_column: str = typer.Option("crop", help="Column (or sample coordinate) holding the reference class."),
    all_touched: bool = typer.Option(
        False, help="A pixel belongs to every parcel it touches (default: pixel centre inside)."
    ),
    vote: str = typer.Option(
        "pixels", help="Majority voting unit: pixels (each labelled pixel votes) or parcels (one vote each)."
    ),
    test_fraction: float = typer.Option(
        0.3,
        help="Fraction of the parcels of each class held out for evaluation (0: none; the scores are then "
        "computed on the parcels that voted).",
    ),
    seed: int = typer.Option(0, help="Seed of the train/test split of the parcels."),
    layer: str | None = typer.Option(None, help="Layer of a multi-layer GeoPackage."),
    overwrite: bool = typer.Option(
        False, help="Replace a slamgeo parcels folder at --out (never a folder holding anything else)."
    ),
    scheduler: str | None = typer.Option(
        None,
        metavar="ADDRESS",
        help="Address of an existing Dask scheduler, tcp://HOST:PORT (default: a LocalCluster).",
    ),
    workers: int | None = typer.Option(None, help="LocalCluster worker processes (default: one per core)."),
    threads: int = typer.Option(1, help="Threads per LocalCluster worker."),
    wait_for_workers: float = typer.Option(
        600.0,
        metavar="SECONDS",
        help="With --scheduler: seconds to wait for a worker to join before giving up with an error; 0: at once.",
    ),
) -> None:
    """Rasterise parcels on the results' grid, aggregate importance, VV/VH and clusters per parcel
    (Dask, out of core), vote clusters into classes on training parcels, and score them on
    held-out parcels. Writes everything to --out at once, or nothing (on object storage:
    metrics.json is removed first and written last, so its presence means complete)."""
    from slamgeo.errors import InputError
    from slamgeo.jobs.parcels import parcels_store
    from slamgeo.jobs.runtime import ClusterOptions, dask_client

    if vote not in ("pixels", "parcels"):
        raise InputError(f"--vote must be 'pixels' or 'parcels', found {vote!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise InputError(f"--test-fraction must be in [0, 1), found {test_fraction}")
    check_cluster_options(scheduler=scheduler, workers=workers, threads=threads, wait_for_workers=wait_for_workers)
    from slamgeo.io import storage

    # refused before a cluster starts (parcels_store checks again)
    storage.claim_output(out, storage.PARCELS, overwrite=overwrite, inputs=[p for p in (results, parcels, cube) if p])
    with dask_client(
        ClusterOptions(
            scheduler=scheduler, n_workers=workers, threads_per_worker=threads, wait_for_workers=wait_for_workers
        )
    ):
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
