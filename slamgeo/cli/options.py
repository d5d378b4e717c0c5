"""The options commands share, as typer option factories (`opt.out(help)`, `opt.scheduler()`,
...), and the Dask options checked and turned into the cluster to start or join
(`dask_cluster`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from slamgeo import schema
from slamgeo.cli._app import check_at_least

if TYPE_CHECKING:
    from slamgeo.jobs.runtime import ClusterOptions


def out(help: str) -> Any:
    """`--out / -o LOCATION`, required: where a command writes (a path or a URL)."""
    return typer.Option(..., "--out", "-o", metavar="LOCATION", help=help, show_default=False)


# --------------------------------------------------------------------------- the Dask options

SCHEDULER_HELP = "Address of an existing Dask scheduler, tcp://HOST:PORT (default: a LocalCluster)."
WAIT_HELP = "With --scheduler: seconds to wait for a worker to join before giving up with an error; 0: at once."


def scheduler(help: str = SCHEDULER_HELP) -> Any:
    """`--scheduler ADDRESS`: an existing Dask scheduler (default None: a LocalCluster)."""
    return typer.Option(None, metavar="ADDRESS", help=help)


def workers() -> Any:
    """`--workers N`: LocalCluster worker processes (default None: one per core)."""
    return typer.Option(None, help="LocalCluster worker processes (default: one per core).")


def threads() -> Any:
    """`--threads N`: threads per LocalCluster worker (default 1)."""
    return typer.Option(1, help="Threads per LocalCluster worker.")


def wait_for_workers(help: str = WAIT_HELP) -> Any:
    """`--wait-for-workers SECONDS` (default `schema.WAIT_FOR_WORKERS`)."""
    return typer.Option(schema.WAIT_FOR_WORKERS, metavar="SECONDS", help=help)


def dask_cluster(
    *,
    scheduler: str | None,
    workers: int | None,
    threads: int,
    wait_for_workers: float,
    gpu: bool = False,
) -> ClusterOptions:
    """The Dask options of a command, checked (`check_cluster_options`), as the cluster to start
    or join (`slamgeo.jobs.runtime.dask_client`)."""
    from slamgeo.jobs.runtime import ClusterOptions

    check_cluster_options(scheduler=scheduler, workers=workers, threads=threads, wait_for_workers=wait_for_workers)
    return ClusterOptions(
        scheduler=scheduler,
        n_workers=workers,
        threads_per_worker=threads,
        gpu_resources=gpu,
        wait_for_workers=wait_for_workers,
    )


def check_cluster_options(
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    wait_for_workers: float | None = None,
) -> None:
    """The Dask options of a command: `--scheduler` an address a client can connect to,
    `--workers` and `--threads` 1 or more, `--wait-for-workers` 0 seconds or more."""
    from slamgeo.jobs.runtime import check_scheduler_address

    if scheduler is not None:
        check_scheduler_address(scheduler, where="--scheduler")
    check_at_least("--workers", workers, 1)
    check_at_least("--threads", threads, 1)
    check_at_least("--wait-for-workers", wait_for_workers, 0, "seconds")
