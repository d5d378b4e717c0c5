"""`slamgeo explain CUBE.zarr MODEL_DIR --out RESULTS.zarr`."""

from __future__ import annotations

import typer

from slamgeo import schema
from slamgeo.cli import options as opt
from slamgeo.cli._app import app, check_at_least, check_choice

WAIT_HELP = (
    "With --scheduler: seconds to wait for a worker (with --gpu, one with the resource GPU) to join "
    "before giving up with an error; 0: at once."
)
CONNECT_HELP = (
    " Connecting gives up after Dask's distributed.comm.timeouts.connect (30 s; "
    "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT)."
)


@app.command("explain")
def explain_cmd(
    cube: str = typer.Argument(..., help="Input cube (Zarr store written by `slamgeo ingest`)."),
    model_dir: str = typer.Argument(..., help="Model directory (or URL) written by `slamgeo train`."),
    out: str = opt.out(
        "Results Zarr store (created, or resumed); an existing location must be an empty folder or a slamgeo results store."
    ),
    scale: str | None = typer.Option(
        None, help=f"Grad-SLAM scaling: {', '.join(schema.SCALES)} (default: the library's)."
    ),
    layers: str | None = typer.Option(
        None, help="Comma-separated encoder blocks, such as block1,block3 (default: all conv blocks)."
    ),
    batch_size: int = typer.Option(schema.EXPLAIN_BATCH_SIZE, help="Pixels per Grad-SLAM batch."),
    importance_dtype: str = typer.Option(
        schema.IMPORTANCE_DTYPE, help="float32, or float16 to halve the largest output."
    ),
    overwrite: bool = typer.Option(
        False, help="Replace a slamgeo results store of another run at --out (never a folder holding anything else)."
    ),
    scheduler: str | None = opt.scheduler(opt.SCHEDULER_HELP + CONNECT_HELP),
    workers: int | None = opt.workers(),
    threads: int = opt.threads(),
    gpu: bool = typer.Option(False, help="Run tasks only on workers with the Dask resource GPU=1."),
    wait_for_workers: float = opt.wait_for_workers(WAIT_HELP),
    zarr_format: int = typer.Option(
        schema.ZARR_FORMAT, help="Zarr format of a new results store: 2 (GDAL reads it) or 3."
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Encode every pixel and compute its Grad-SLAM date importance, chunk by chunk, with Dask."""
    from slamgeo.errors import InputError
    from slamgeo.io import storage
    from slamgeo.jobs.explain import ExplainOptions, explain_store, unknown_layers
    from slamgeo.jobs.runtime import dask_client
    from slamgeo.method.checkpoint import load_model

    # every option, before the model is read, the output touched or a cluster started
    if scale is not None:
        check_choice("--scale", scale, schema.SCALES)
    check_choice("--importance-dtype", importance_dtype, schema.IMPORTANCE_DTYPES)
    check_choice("--zarr-format", zarr_format, schema.ZARR_FORMATS)
    check_at_least("--batch-size", batch_size, 1)
    cluster = opt.dask_cluster(
        scheduler=scheduler, workers=workers, threads=threads, wait_for_workers=wait_for_workers, gpu=gpu
    )
    names = tuple(s.strip() for s in layers.split(",") if s.strip()) if layers is not None else None
    if layers is not None and not names:
        raise InputError(f"--layers {layers!r}: no block name; give encoder blocks such as block1,block3")
    opts = ExplainOptions(
        layers=names,
        scale=scale or schema.GRADSLAM_SCALE,
        batch_size=batch_size,
        importance_dtype=importance_dtype,  # type: ignore[arg-type]
    )
    if names:  # the model's own blocks (explain_store checks again)
        model = load_model(model_dir)
        unknown = unknown_layers(model, names)
        if unknown:
            blocks = ", ".join(model.model.encoder.blocks)
            raise InputError(
                f"--layers {layers!r}: no block {', '.join(unknown)} in the encoder of {model_dir}; it has {blocks}"
            )

    # refused before a cluster starts (explain_store checks again)
    storage.claim_output(out, storage.RESULTS, overwrite=overwrite, inputs=[cube, model_dir], resume=True)
    with dask_client(cluster) as client:
        rep = explain_store(
            cube,
            model_dir,
            out,
            options=opts,
            client=client,
            overwrite=overwrite,
            gpu_resources=gpu,
            zarr_format=zarr_format,
            progress=progress,
        )
    typer.echo(
        f"wrote {rep.out}: {rep.blocks_computed} block(s) computed, {rep.blocks_skipped} already done, "
        f"{rep.valid_pixels} valid pixels explained in the store, {rep.seconds:.1f} s"
    )
