"""`slamgeo explain CUBE.zarr MODEL_DIR --out RESULTS.zarr`."""

from __future__ import annotations

from typing import Optional

import typer

from slamgeo.cli._app import app


@app.command("explain")
def explain_cmd(
    cube: str = typer.Argument(..., help="Input cube (Zarr store written by `slamgeo ingest`)."),
    model_dir: str = typer.Argument(..., help="Model directory (or URL) written by `slamgeo train`."),
    out: str = typer.Option(..., "--out", "-o", help="Results Zarr store (created, or resumed); an existing location must be an empty folder or a slamgeo results store."),
    scale: Optional[str] = typer.Option(None, help="Grad-SLAM scaling: minmax, maxabs, abs, centred, none (default: the library's)."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated encoder blocks (default: all conv blocks)."),
    batch_size: int = typer.Option(4096, help="Pixels per Grad-SLAM batch."),
    importance_dtype: str = typer.Option("float32", help="float32, or float16 to halve the largest output."),
    overwrite: bool = typer.Option(False, help="Replace a slamgeo results store of another run at --out (never a folder holding anything else)."),
    scheduler: Optional[str] = typer.Option(None, help="Address of an existing Dask scheduler (default: a LocalCluster)."),
    workers: Optional[int] = typer.Option(None, help="LocalCluster worker processes (default: one per core)."),
    threads: int = typer.Option(1, help="Threads per LocalCluster worker."),
    gpu: bool = typer.Option(False, help="Run tasks only on workers with the Dask resource GPU=1."),
    zarr_format: int = typer.Option(2, help="Zarr format of a new results store (2: GDAL reads it; or 3)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Encode every pixel and compute its Grad-SLAM date importance, chunk by chunk, with Dask."""
    from slamgeo.explain import ExplainOptions, explain
    from slamgeo.gradslam import DEFAULT_SCALE
    from slamgeo.runtime import ClusterOptions, dask_client

    opts = ExplainOptions(
        layers=tuple(s.strip() for s in layers.split(",") if s.strip()) if layers else None,
        scale=scale or DEFAULT_SCALE,
        batch_size=batch_size,
        importance_dtype=importance_dtype,  # type: ignore[arg-type]
    )
    with dask_client(ClusterOptions(scheduler=scheduler, n_workers=workers, threads_per_worker=threads)) as client:
        rep = explain(cube, model_dir, out, options=opts, client=client, overwrite=overwrite,
                      gpu_resources=gpu, zarr_format=zarr_format, progress=progress)
    typer.echo(
        f"wrote {rep.out}: {rep.blocks_computed} block(s) computed, {rep.blocks_skipped} already done, "
        f"{rep.valid_pixels} valid pixels explained in the store, {rep.seconds:.1f} s"
    )
