"""`slamgeo train CUBE.zarr --out MODEL_DIR`."""

from __future__ import annotations

import typer

from slamgeo import schema
from slamgeo.cli import options as opt
from slamgeo.cli._app import app


@app.command("train")
def train_cmd(
    cube: str = typer.Argument(..., help="Input cube (Zarr store written by `slamgeo ingest`)."),
    out: str = opt.out("Model directory or URL to write (model.safetensors + model.json)."),
    sample_size: int = typer.Option(
        schema.TRAIN_SAMPLE_SIZE, help="Pixels drawn from the cube (stratified over its spatial chunks)."
    ),
    val_fraction: float = typer.Option(
        schema.TRAIN_VAL_FRACTION, help="Share of the sample held out for validation and early stopping."
    ),
    epochs: int = typer.Option(
        schema.TRAIN_MAX_EPOCHS, help="Maximum number of epochs (early stopping may end sooner)."
    ),
    patience: int = typer.Option(
        schema.TRAIN_PATIENCE, help="Stop after this many epochs without a better validation loss."
    ),
    batch_size: int = typer.Option(schema.TRAIN_BATCH_SIZE, help="Mini-batch size."),
    lr: float = typer.Option(schema.TRAIN_LR, help="Adam learning rate."),
    seed: int = typer.Option(0, help="Seed of sampling, initialisation and shuffling (a CPU run is reproducible)."),
    device: str = typer.Option("auto", help="auto (CUDA if available), cpu, cuda or cuda:N."),
    bf16: bool = typer.Option(False, "--bf16", help="bfloat16 autocast for the forward pass."),
    gap_fill: bool = typer.Option(
        False, "--gap-fill", help="Gap-fill pixels with missing dates (linear in time) instead of skipping them."
    ),
    embed_dim: int | None = typer.Option(None, help="Embedding dimension D (default: the model's, 2)."),
    threads: int | None = typer.Option(
        None,
        help="torch CPU threads while training (default: torch's; 1 is often fastest for small models on shared cores).",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a slamgeo checkpoint at --out (never a folder holding anything else)."
    ),
    progress: bool = typer.Option(True, help="Show a progress bar with the losses."),
) -> None:
    """Train the CAE on a sample of the cube's pixels and write a checkpoint."""
    from slamgeo.io.cube import open_cube
    from slamgeo.method.train import train

    ds = open_cube(cube)
    tm = train(
        ds,
        out_dir=out,
        overwrite=overwrite,
        inputs=[cube],
        sample_size=sample_size,
        val_fraction=val_fraction,
        max_epochs=epochs,
        patience=patience,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        bf16=bf16,
        gap_fill=gap_fill,
        arch={"embed_dim": embed_dim} if embed_dim is not None else None,
        threads=threads,
        progress=progress,
    )
    t, losses = tm.meta["training"], tm.meta["losses"]
    typer.echo(
        f"wrote {out}: {t['n_train']} training / {t['n_val']} validation pixels, "
        f"{t['epochs_run']} epoch(s) on {t['device']} (best {t['best_epoch']}); "
        f"train loss {losses['train'][t['best_epoch'] - 1]:.4f}, validation loss {losses['best_val']:.4f} "
        f"(per-date mean: {losses['baseline_val_per_date_mean']:.4f})"
    )
