"""`slamgeo run CONFIG.yaml`: the season pipeline."""

from __future__ import annotations

from pathlib import Path

import typer

from slamgeo.cli import options as opt
from slamgeo.cli._app import CLIError, app


def run_config(
    config: str | Path,
    *,
    force: bool,
    dry_run: bool,
    output: str | None = None,
    quiet: bool = False,
    scheduler: str | None = None,
    gpu_resources: bool | None = None,
    wait_for_workers: float | None = None,
    season: str | None = None,
) -> None:
    """Load, run, print the tally; exit non-zero when a step failed. `season` fills `{season}`
    in the configuration (and is the season's name unless the file sets one). SIGINT and SIGTERM stop
    the run as `slamgeo.jobs.runtime.Interrupted` (the step is recorded as interrupted; the
    command's exit code is 128 + the signal number). `scheduler`, `gpu_resources` and
    `wait_for_workers` (None: the configuration's) override those keys of `dask:`."""
    from slamgeo.io import storage
    from slamgeo.jobs.runtime import interrupt_handlers
    from slamgeo.pipeline.config import load_config
    from slamgeo.pipeline.steps import run_pipeline

    if output and not storage.is_url(output):
        output = str(Path(output).resolve())  # an option's relative path: from the current folder
    with interrupt_handlers():
        cfg = load_config(config, overrides={"output": output} if output else None, season=season)
        cfg = with_dask_overrides(
            cfg, scheduler=scheduler, gpu_resources=gpu_resources, wait_for_workers=wait_for_workers
        )
        summary = run_pipeline(cfg, force=force, dry_run=dry_run, quiet=quiet)
    tally = ", ".join(f"{n} {k}" for k, n in summary.tally().items())
    typer.echo(f"season {cfg.season.name}: {tally} -> {summary.season_dir}")
    for s in summary.steps:
        if s.status == "failed":
            typer.echo(f"error: {s.name} failed: {s.error}", err=True)
    if summary.manifest:
        typer.echo(f"manifest: {summary.manifest}")
    report = storage.join(summary.season_dir, "report", "index.html")
    if not dry_run and storage.exists(report):
        typer.echo(f"report: {report}")
    if summary.failed:
        raise typer.Exit(code=1)


def with_dask_overrides(
    cfg,
    *,
    scheduler: str | None = None,
    gpu_resources: bool | None = None,
    wait_for_workers: float | None = None,
):
    """`cfg` with `dask.scheduler`, `dask.gpu_resources` and `dask.wait_for_workers` replaced by
    the options given (not None), validated like the file's."""
    from slamgeo.pipeline.config import parse_config

    dask_changes: dict = {}
    if scheduler:
        dask_changes["scheduler"] = scheduler
    if gpu_resources is not None:
        dask_changes["gpu_resources"] = gpu_resources
    if wait_for_workers is not None:
        dask_changes["wait_for_workers"] = wait_for_workers
    if not dask_changes:
        return cfg
    raw = cfg.model_dump()
    raw["dask"] = {**raw["dask"], **dask_changes}
    return parse_config(raw, where="slamgeo run options")


RUN_HELP = "\n\n".join(
    [
        "Run the season pipeline: ingest -> train (or reuse) -> align -> explain -> cluster -> parcels -> report.",
        "Outputs go to <output>/<season name>/. A relative `output:` in the configuration is resolved against "
        "the configuration file's folder, not the current folder. A second run skips the steps whose inputs "
        "did not change.",
        "Ctrl-C (SIGINT) or SIGTERM stops the run within seconds, with exit code 130 or 143; the step is "
        "recorded as interrupted in pipeline_state.json and the run's manifest. Running again resumes.",
        "One configuration for every season: `{season}` in any value of the file (paths, dates, output "
        "names, numbers) is filled in with --season 2024, which is also the season's name unless the file "
        "sets season.name; write {{ and }} for literal braces. A second run of the same season while one "
        "is going on is refused (exit code 75; its lock is <output>/<season>/.slamgeo-lock). See "
        "docs/schedule.md for cron, systemd, Airflow and Prefect.",
        "On a cluster: --scheduler tcp://host:8786 runs the Dask steps on an existing scheduler (SLURM, "
        "Kubernetes, dask-cuda; see docs/cluster.md) and --gpu-resources sends explain's tasks to workers "
        "started with `--resources GPU=1` only. A scheduler that does not answer within Dask's "
        "distributed.comm.timeouts.connect (30 s; DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=120s to change "
        "it), or that has no worker for the tasks within --wait-for-workers seconds, stops the run "
        "with an error.",
    ]
)


@app.command("run", help=RUN_HELP)
def run_cmd(
    config: str = typer.Argument(
        ...,
        help="Pipeline configuration (YAML, a path or a URL); see pipelines/. "
        "Relative paths in it (output, input paths, parcels, checkpoint) are resolved "
        "against the configuration file's folder.",
    ),
    force: bool = typer.Option(False, help="Redo every step, even those whose inputs did not change."),
    dry_run: bool = typer.Option(False, help="Say which steps would run, and do nothing."),
    output: str = typer.Option(
        None,
        help="Override the configuration's output folder (a path or a URL such as "
        "s3://bucket/prefix); a relative path is taken from the current folder.",
    ),
    season: str | None = typer.Option(
        None,
        metavar="SEASON",
        help="Fill `{season}` in the configuration with this value (2024); also the season's name "
        "unless the configuration sets season.name.",
    ),
    scheduler: str | None = typer.Option(
        None,
        metavar="ADDRESS",
        help="Address of an existing Dask scheduler, tcp://HOST:PORT (tcp://host:8786); overrides "
        "dask.scheduler of the configuration (default: the configuration's, else a LocalCluster).",
    ),
    gpu_resources: bool | None = typer.Option(
        None,
        "--gpu-resources/--no-gpu-resources",
        help="Run explain's tasks only on workers with the Dask resource GPU=1 (started with "
        "`--resources GPU=1`); each uses CUDA if it has a device, else its CPU. Overrides "
        "dask.gpu_resources (default: the configuration's, else off).",
    ),
    wait_for_workers: float | None = typer.Option(
        None,
        metavar="SECONDS",
        help="With a scheduler: seconds to wait for a worker (with --gpu-resources, one with the resource "
        "GPU) to join before stopping with an error; 0: at once. Overrides dask.wait_for_workers "
        "(default: the configuration's, else 600).",
    ),
) -> None:
    """Run the season pipeline: ingest -> train (or reuse) -> align -> explain -> cluster -> parcels -> report."""
    from slamgeo.io import storage

    opt.check_cluster_options(scheduler=scheduler, wait_for_workers=wait_for_workers)
    if not storage.exists(config):
        raise CLIError(f"{config}: configuration file not found")
    run_config(
        config,
        force=force,
        dry_run=dry_run,
        output=output,
        scheduler=scheduler,
        gpu_resources=gpu_resources,
        wait_for_workers=wait_for_workers,
        season=season,
    )
