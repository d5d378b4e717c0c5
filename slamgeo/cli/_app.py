"""The typer application every command module registers on, and the checks its commands make
of their options before any work starts (each failure one line naming the option)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import typer

from slamgeo import schema

if TYPE_CHECKING:
    from slamgeo.jobs.runtime import ClusterOptions

app = typer.Typer(
    name="slamgeo",
    help="Explain what a convolutional autoencoder learns from Sentinel-1 time series (Grad-SLAM).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class CLIError(Exception):
    """An error for the user: printed as one line, exit code 1, no traceback."""


@app.callback()
def _root() -> None:
    """slamgeo: Sentinel-1 cubes -> CAE embeddings -> Grad-SLAM date importance -> crop clusters."""


def check_choice(option: str, value: object, choices: Iterable[object]) -> None:
    """`value` of `option` (such as "--scale") must be one of `choices`; else `InputError`."""
    from slamgeo.errors import InputError

    allowed = list(choices)
    if value not in allowed:
        raise InputError(f"{option} {value!r}: expected one of {', '.join(str(c) for c in allowed)}")


def check_at_least(option: str, value: float | None, low: float, why: str = "") -> None:
    """`value` of `option` must be `low` or more (None passes: the default); else `InputError`,
    with `why` (the unit, or where the bound comes from) in brackets."""
    from slamgeo.errors import InputError

    if value is not None and not value >= low:  # NaN fails too
        said = f" ({why})" if why else ""
        raise InputError(f"{option} must be {low:g} or more{said}, found {value}")


# --------------------------------------------------------------------------- the Dask options

SCHEDULER_HELP = "Address of an existing Dask scheduler, tcp://HOST:PORT (default: a LocalCluster)."
WAIT_HELP = "With --scheduler: seconds to wait for a worker to join before giving up with an error; 0: at once."


def scheduler_option(help: str = SCHEDULER_HELP) -> Any:
    """`--scheduler ADDRESS`: an existing Dask scheduler (default None: a LocalCluster)."""
    return typer.Option(None, metavar="ADDRESS", help=help)


def workers_option() -> Any:
    """`--workers N`: LocalCluster worker processes (default None: one per core)."""
    return typer.Option(None, help="LocalCluster worker processes (default: one per core).")


def threads_option() -> Any:
    """`--threads N`: threads per LocalCluster worker (default 1)."""
    return typer.Option(1, help="Threads per LocalCluster worker.")


def wait_for_workers_option(help: str = WAIT_HELP) -> Any:
    """`--wait-for-workers SECONDS` (default `schema.WAIT_FOR_WORKERS`)."""
    return typer.Option(schema.WAIT_FOR_WORKERS, metavar="SECONDS", help=help)


def cluster_options(
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
