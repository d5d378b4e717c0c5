"""`slamgeo cluster RESULTS.zarr --k 16`: k-Means on the embeddings, written into the store."""

from __future__ import annotations

import shutil
import tempfile
from typing import Optional

import typer

from slamgeo.cli._app import app

NEW_VARIABLES = ("cluster", "cluster_centre", "cluster_size")


def open_results_store(path: str):
    """A complete results store (`slamgeo.cube.open_results`) that holds embeddings."""
    from slamgeo.cube import open_results
    from slamgeo.errors import InputError

    ds = open_results(path)
    if "embedding" not in ds:
        raise InputError(f"{path}: no 'embedding' variable; found {sorted(map(str, ds.data_vars))}")
    return ds


def _drop_arrays(store: str, names) -> None:
    import zarr

    group = zarr.open_group(store, mode="r+")
    for name in names:
        if name in group:
            del group[name]
    zarr.consolidate_metadata(store)


def append_variables(store: str, new, *, overwrite: bool) -> None:
    """Add the variables of `new` (an xarray Dataset) to the Zarr store `store` (a local path or
    an fsspec URL), all or nothing.

    The new variables are computed into a temporary local store first, so a failure
    while computing leaves `store` untouched; they are then copied in with `to_zarr(mode="a")`,
    and if that copy fails, the arrays it created are removed again. Coordinates already in the
    store are reused when equal; with `overwrite`, variables of the same names, and coordinates
    that only they use (a `centre` axis of another k), are removed just before the copy."""
    import numpy as np
    import xarray as xr
    import zarr

    from slamgeo.errors import InputError, OutputError

    old = xr.open_zarr(store, decode_coords="all")
    replace = [str(n) for n in new.data_vars if n in old.variables]
    if replace and not overwrite:
        raise InputError(f"{store}: already holds {replace}; pass --overwrite to replace them")
    same = []
    for c in new.coords:
        if c not in old.variables:
            continue
        if old[c].shape == new[c].shape and np.array_equal(old[c].values, new[c].values):
            same.append(c)
            continue
        users = [str(v) for v in old.variables if c in old[v].dims and v not in replace and v != c]
        if users or not overwrite:
            raise InputError(f"{store}: coordinate '{c}' differs from the store's (used by {users or replace})")
        replace.append(str(c))
    new = new.drop_vars(same)
    zarr_format = zarr.open_group(store, mode="r").metadata.zarr_format
    from slamgeo import storage

    # Staged on local disk: beside a local store, in a temporary folder for a URL (object
    # storage has no rename to gain from staging there; the copy below is what publishes).
    local = storage.is_local(store)
    where = str(storage.parent(storage.filesystem(store)[1])) if local else None
    try:
        folder = tempfile.mkdtemp(prefix=f".{storage.name(store)}.tmp-" if local else "slamgeo-append-", dir=where)
    except OSError as exc:
        raise OutputError(f"{store}: cannot write beside the results store ({exc.strerror or exc})") from exc
    tmp = f"{folder}/new.zarr"
    try:
        new.to_zarr(tmp, mode="w", zarr_format=zarr_format)
        staged = xr.open_zarr(tmp)
        # to_zarr(mode="a") replaces the group's attributes with the dataset's: keep the store's
        staged.attrs = dict(zarr.open_group(store, mode="r").attrs)
        for v in staged.variables.values():
            v.encoding.pop("preferred_chunks", None)
        if replace:
            _drop_arrays(store, replace)
        before = set(zarr.open_group(store, mode="r").keys())
        try:
            staged.to_zarr(store, mode="a")
        except BaseException:
            _drop_arrays(store, sorted(set(zarr.open_group(store, mode="r").keys()) - before))
            raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@app.command("cluster")
def cluster_cmd(
    results: str = typer.Argument(..., help="Results Zarr store written by `slamgeo explain`."),
    k: int = typer.Option(16, "--k", "-k", help="Number of clusters."),
    seed: int = typer.Option(0, help="Seed of the sample and of the k-means++ initialisation."),
    sample_size: int = typer.Option(100_000, help="Valid pixels sampled for the k-means++ initialisation."),
    max_iter: int = typer.Option(100, help="Most Lloyd passes over every valid pixel."),
    tol: float = typer.Option(1e-4, help="Stop when the squared centre shift is under tol x the mean variance."),
    overwrite: bool = typer.Option(False, help="Replace a clustering already in the store."),
    scheduler: Optional[str] = typer.Option(None, help="Address of an existing Dask scheduler (default: a LocalCluster)."),
    workers: Optional[int] = typer.Option(None, help="LocalCluster worker processes (default: one per core)."),
    threads: int = typer.Option(1, help="Threads per LocalCluster worker."),
) -> None:
    """k-Means on the valid pixels' embeddings; adds `cluster` (-1 = no data), `cluster_centre
    (centre, dim)` and `cluster_size (centre)` to the results store."""
    import xarray as xr

    from slamgeo.cluster import assign_clusters, centres_dataarray, fit_kmeans
    from slamgeo.runtime import ClusterOptions, dask_client

    ds = open_results_store(results)
    if not overwrite:
        clash = [n for n in NEW_VARIABLES if n in ds.variables]
        if clash:
            from slamgeo.errors import InputError

            raise InputError(f"{results}: already holds {clash}; pass --overwrite to replace them")
    with dask_client(ClusterOptions(scheduler=scheduler, n_workers=workers, threads_per_worker=threads)):
        fit = fit_kmeans(ds["embedding"], k, sample_size=sample_size, max_iter=max_iter, tol=tol, seed=seed)
        labels = assign_clusters(ds["embedding"], fit.centres)
        new = xr.merge([labels.to_dataset(), centres_dataarray(fit)])
        append_variables(results, new, overwrite=overwrite)
    state = "converged" if fit.converged else f"stopped at max_iter={max_iter}"
    typer.echo(
        f"wrote cluster, cluster_centre, cluster_size to {results}: k={k}, {fit.n_valid} valid pixels, "
        f"{fit.n_iter} Lloyd pass(es), {state}, inertia {fit.inertia:.6g}, "
        f"smallest cluster {int(fit.sizes.min())} pixels"
    )
