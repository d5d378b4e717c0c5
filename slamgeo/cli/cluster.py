"""`slamgeo cluster RESULTS.zarr --k 16`: k-Means on the embeddings, written into the store."""

from __future__ import annotations

import typer

from slamgeo import schema
from slamgeo.cli import options as opt
from slamgeo.cli._app import app, check_at_least


@app.command("cluster")
def cluster_cmd(
    results: str = typer.Argument(..., help="Results Zarr store written by `slamgeo explain`."),
    k: int = typer.Option(schema.KMEANS_K, "--k", "-k", help="Number of clusters."),
    seed: int = typer.Option(0, help="Seed of the sample and of the k-means++ initialisation."),
    sample_size: int = typer.Option(
        schema.KMEANS_SAMPLE_SIZE, help="Valid pixels sampled for the k-means++ initialisation."
    ),
    max_iter: int = typer.Option(schema.KMEANS_MAX_ITER, help="Most Lloyd passes over every valid pixel."),
    tol: float = typer.Option(
        schema.KMEANS_TOL, help="Stop when the squared centre shift is under tol x the mean variance."
    ),
    overwrite: bool = typer.Option(False, help="Replace a clustering already in the store."),
    scheduler: str | None = opt.scheduler(),
    workers: int | None = opt.workers(),
    threads: int = opt.threads(),
    wait_for_workers: float = opt.wait_for_workers(),
) -> None:
    """k-Means on the valid pixels' embeddings; adds `cluster` (-1 = no data), `cluster_centre
    (centre, dim)` and `cluster_size (centre)` to the results store."""
    from slamgeo.jobs.cluster import cluster_store
    from slamgeo.jobs.runtime import dask_client

    check_at_least("--k", k, 2)
    check_at_least("--sample-size", sample_size, k, "the --k initial centres are drawn from the sample")
    check_at_least("--max-iter", max_iter, 1)
    check_at_least("--tol", tol, 0)
    dask_options = opt.dask_cluster(
        scheduler=scheduler, workers=workers, threads=threads, wait_for_workers=wait_for_workers
    )
    with dask_client(dask_options):
        fit = cluster_store(
            results, k, overwrite=overwrite, sample_size=sample_size, max_iter=max_iter, tol=tol, seed=seed
        )
    state = "converged" if fit.converged else f"stopped at max_iter={max_iter}"
    typer.echo(
        f"wrote cluster, cluster_centre, cluster_size to {results}: k={k}, {fit.n_valid} valid pixels, "
        f"{fit.n_iter} Lloyd pass(es), {state}, inertia {fit.inertia:.6g}, "
        f"smallest cluster {int(fit.sizes.min())} pixels"
    )
