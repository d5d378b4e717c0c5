"""`slamgeo cluster RESULTS.zarr --k 16`: k-Means on the embeddings, written into the store."""

from __future__ import annotations

import typer

from slamgeo import schema
from slamgeo.cli._app import app, check_at_least, check_cluster_options


@app.command("cluster")
def cluster_cmd(
    results: str = typer.Argument(..., help="Results Zarr store written by `slamgeo explain`."),
    k: int = typer.Option(schema.KMEANS_K, "--k", "-k", help="Number of clusters."),
    seed: int = typer.Option(0, help="Seed of the sample and of the k-means++ initialisation."),
    sample_size: int = typer.Option(
        schema.KMEANS_SAMPLE_SIZE, help="Valid pixels sampled for the k-means++ initialisation."
    ),
    max_iter: int = typer.Option(100, help="Most Lloyd passes over every valid pixel."),
    tol: float = typer.Option(1e-4, help="Stop when the squared centre shift is under tol x the mean variance."),
    overwrite: bool = typer.Option(False, help="Replace a clustering already in the store."),
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
    """k-Means on the valid pixels' embeddings; adds `cluster` (-1 = no data), `cluster_centre
    (centre, dim)` and `cluster_size (centre)` to the results store."""
    from slamgeo.jobs.cluster import cluster_store
    from slamgeo.jobs.runtime import ClusterOptions, dask_client

    check_at_least("--k", k, 2)
    check_at_least("--sample-size", sample_size, k, "the --k initial centres are drawn from the sample")
    check_at_least("--max-iter", max_iter, 1)
    check_at_least("--tol", tol, 0)
    check_cluster_options(scheduler=scheduler, workers=workers, threads=threads, wait_for_workers=wait_for_workers)
    with dask_client(
        ClusterOptions(
            scheduler=scheduler, n_workers=workers, threads_per_worker=threads, wait_for_workers=wait_for_workers
        )
    ):
        fit = cluster_store(
            results, k, overwrite=overwrite, sample_size=sample_size, max_iter=max_iter, tol=tol, seed=seed
        )
    state = "converged" if fit.converged else f"stopped at max_iter={max_iter}"
    typer.echo(
        f"wrote cluster, cluster_centre, cluster_size to {results}: k={k}, {fit.n_valid} valid pixels, "
        f"{fit.n_iter} Lloyd pass(es), {state}, inertia {fit.inertia:.6g}, "
        f"smallest cluster {int(fit.sizes.min())} pixels"
    )
