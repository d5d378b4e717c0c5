"""`slamgeo parcels RESULTS.zarr PARCELS --out DIR`: per-parcel and per-class importance,
majority voting of the clusters and accuracy figures on held-out parcels."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import typer

from slamgeo.cli._app import app

OUTPUTS = (
    "parcels.zarr",
    "parcels.parquet",
    "class_profiles.zarr",
    "metrics.json",
    "confusion_pixels.csv",
    "confusion_pixels_percent.csv",
    "confusion_parcels.csv",
    "confusion_parcels_percent.csv",
)


def _label_series(values, ids):
    """Class per parcel id as strings; "" for no class."""
    import pandas as pd

    s = pd.Series(values, index=ids, dtype=object, name="label")
    return s.where(s.notna(), "").astype(str).astype(object)


def _sample_labels(results, id_column: str, class_column: str):
    """Sample form: parcel id and class per sample from the results' coordinates."""
    import numpy as np
    import pandas as pd

    from slamgeo.errors import InputError

    for name, opt in ((id_column, "--id-column"), (class_column, "--class-column")):
        if name not in results.coords:
            found = sorted(str(c) for c in results.coords if results[c].dims == ("sample",))
            raise InputError(f"sample-form results: no '{name}' coordinate on sample ({opt}); found {found}")
    frame = pd.DataFrame({"id": results[id_column].values, "label": results[class_column].values})
    per = frame.groupby("id")["label"].agg(lambda v: pd.unique(v.dropna()).tolist())
    mixed = [int(i) for i, v in per.items() if len(v) > 1]
    if mixed:
        raise InputError(f"sample-form results: parcels {mixed[:10]} have samples of different classes")
    ids = per.index.to_numpy().astype(np.int64)
    return ids, [v[0] if v else None for v in per]


def _write_outputs(tmp: Path, per_parcel, summary, profiles, ev, info: dict) -> None:
    """Every output file into the (existing, empty) local folder `tmp`; metrics.json last."""
    import numpy as np

    per_parcel.to_zarr(tmp / "parcels.zarr", mode="w", zarr_format=2)
    profiles.to_zarr(tmp / "class_profiles.zarr", mode="w", zarr_format=2)
    summary.to_parquet(tmp / "parcels.parquet")  # GeoParquet when `summary` is a GeoDataFrame
    for level, cm in (("pixels", ev.confusion_pixels), ("parcels", ev.confusion_parcels)):
        counts = cm["counts"].to_pandas()
        counts["unassigned"] = cm["unassigned"].values
        counts.to_csv(tmp / f"confusion_{level}.csv")
        cm["percent"].to_pandas().round(4).to_csv(tmp / f"confusion_{level}_percent.csv")
    metrics = {**ev.to_dict(), **info}
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o)))


@app.command("parcels")
def parcels_cmd(
    results: str = typer.Argument(..., help="Results Zarr store, clustered by `slamgeo cluster`."),
    parcels: Optional[str] = typer.Argument(None, help="Parcels: GeoPackage, shapefile or GeoParquet, a path or a URL (optional for sample-form results)."),
    out: str = typer.Option(..., "--out", "-o", help="Output folder or URL (created; an existing one must be empty or, with --overwrite, a slamgeo parcels folder)."),
    cube: Optional[str] = typer.Option(None, help="Cube Zarr store, for the per-parcel and per-class VV/VH profiles."),
    id_column: str = typer.Option("parcel_id", help="Column (or sample coordinate) holding positive integer parcel ids."),
    class_column: str = typer.Option("crop", help="Column (or sample coordinate) holding the reference class."),
    all_touched: bool = typer.Option(False, help="A pixel belongs to every parcel it touches (default: pixel centre inside)."),
    vote: str = typer.Option("pixels", help="Majority voting unit: pixels (each labelled pixel votes) or parcels (one vote each)."),
    test_fraction: float = typer.Option(
        0.3, help="Fraction of the parcels of each class held out for evaluation (0: none; the scores are then "
        "computed on the parcels that voted)."),
    seed: int = typer.Option(0, help="Seed of the train/test split of the parcels."),
    layer: Optional[str] = typer.Option(None, help="Layer of a multi-layer GeoPackage."),
    overwrite: bool = typer.Option(False, help="Replace a slamgeo parcels folder at --out (never a folder holding anything else)."),
    scheduler: Optional[str] = typer.Option(None, help="Address of an existing Dask scheduler (default: a LocalCluster)."),
    workers: Optional[int] = typer.Option(None, help="LocalCluster worker processes (default: one per core)."),
    threads: int = typer.Option(1, help="Threads per LocalCluster worker."),
) -> None:
    """Rasterise parcels on the results' grid, aggregate importance, VV/VH and clusters per parcel
    (Dask, out of core), vote clusters into classes on training parcels, and score them on
    held-out parcels. Writes everything to --out at once, or nothing (on object storage:
    metrics.json is removed first and written last, so its presence means complete)."""
    import geopandas as gpd
    import numpy as np
    import pandas as pd

    from slamgeo import __version__, storage
    from slamgeo.cli.cluster import open_results_store
    from slamgeo.cube import open_cube
    from slamgeo.errors import InputError
    from slamgeo.metrics import UNASSIGNED, EvaluationWarning, evaluate_parcels
    from slamgeo.parcels import (
        OVERLAP_RULE,
        aggregate_parcels,
        class_profiles,
        rasterize_parcels,
        read_parcels,
        results_spatial_dims,
    )
    from slamgeo.runtime import ClusterOptions, dask_client

    if vote not in ("pixels", "parcels"):
        raise InputError(f"--vote must be 'pixels' or 'parcels', found {vote!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise InputError(f"--test-fraction must be in [0, 1), found {test_fraction}")
    out = storage.location(out)
    storage.claim_output(out, storage.PARCELS, overwrite=overwrite,
                         inputs=[p for p in (results, parcels, cube) if p])
    ds = open_results_store(results)
    if "importance" not in ds:
        raise InputError(f"{results}: no 'importance' variable; found {sorted(map(str, ds.data_vars))}")
    if "cluster" not in ds:
        raise InputError(f"{results}: no 'cluster' variable; run `slamgeo cluster {results}` first")
    sdims = results_spatial_dims(ds)
    cb = open_cube(cube) if cube else None
    gdf = None
    messages: list[str] = []
    info: dict = {
        "slamgeo_version": __version__,
        "results_path": str(results),
        "parcels_path": str(parcels) if parcels else None,
        "cube_path": cube,
        "id_column": id_column,
        "class_column": class_column,
        "test_fraction": test_fraction,
        "seed": seed,
    }
    if sdims == ("y", "x"):
        if parcels is None:
            raise InputError("gridded results need a PARCELS file (GeoPackage, shapefile or GeoParquet)")
        gdf = read_parcels(parcels, id_column=id_column, class_column=class_column, crs=ds.rio.crs, layer=layer)
        parcel_id = rasterize_parcels(gdf, ds, all_touched=all_touched, id_column=id_column)
        ids = gdf[id_column].to_numpy()
        labels = _label_series(gdf[class_column].to_numpy(), ids)
        info.update(all_touched=all_touched, overlap_rule=OVERLAP_RULE, repaired_ids=gdf.attrs["repaired_ids"],
                    overlapping_pairs=[list(p) for p in gdf.attrs["overlaps"]])
        if gdf.attrs["repaired_ids"]:
            messages.append(f"repaired {len(gdf.attrs['repaired_ids'])} invalid geometr(y/ies) with make_valid "
                            f"(ids {gdf.attrs['repaired_ids'][:10]})")
        if gdf.attrs["overlaps"]:
            messages.append(f"{len(gdf.attrs['overlaps'])} pair(s) of parcels overlap; their shared pixels go to the "
                            f"smaller parcel (pairs {gdf.attrs['overlaps'][:5]})")
    else:
        ids, lab = _sample_labels(ds, id_column, class_column)
        parcel_id = ds[id_column]
        labels = _label_series(lab, ids)
        if parcels is not None:
            gdf = read_parcels(parcels, id_column=id_column, class_column=class_column, layer=layer)

    with dask_client(ClusterOptions(scheduler=scheduler, n_workers=workers, threads_per_worker=threads)):
        per_parcel = aggregate_parcels(ds, cb, parcel_id, ids)
    no_pixels = ids[per_parcel["n_pixels"].values == 0]
    if no_pixels.size:
        messages.append(f"{no_pixels.size} parcel(s) have no pixel on the grid (ids {no_pixels[:10].tolist()})")
    info["parcels_without_pixels"] = no_pixels.tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EvaluationWarning)  # said below as a note, and in metrics.json
        ev = evaluate_parcels(per_parcel, labels, vote=vote, test_fraction=test_fraction, seed=seed)  # type: ignore[arg-type]
    if ev.note:
        messages.append(ev.note)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profiles = class_profiles(per_parcel, labels)
    messages.extend(str(w.message) for w in caught)
    info["classes_without_pixels"] = profiles.attrs["classes_without_pixels"]

    split = np.full(ids.size, "", dtype=object)
    split[np.isin(ids, ev.train_ids)] = "train"
    split[np.isin(ids, ev.test_ids)] = "test"
    per_parcel = per_parcel.assign_coords(
        label=("parcel", labels.to_numpy().astype(str)),
        split=("parcel", split.astype(str)),
        predicted=("parcel", ev.predicted.reindex(ids).to_numpy().astype(str)),
    )
    per_parcel.attrs.update({k: json.dumps(v) if isinstance(v, (list, dict)) else v
                             for k, v in info.items() if v is not None and k != "overlapping_pairs"})
    per_parcel.attrs["vote"] = vote
    per_parcel["cluster_class"] = (
        ("centre",),
        np.array([str(ev.mapping.get(c, UNASSIGNED)) for c in per_parcel["centre"].values]),
        {"long_name": f"class voted for each cluster (by {vote}, on the training parcels)"},
    )
    profiles.attrs["classes_without_pixels"] = json.dumps(profiles.attrs["classes_without_pixels"])
    profiles = profiles.assign_coords({"class": profiles["class"].values.astype(str)})
    table = pd.DataFrame({
        id_column: ids, class_column: labels.to_numpy(), "split": split,
        "n_pixels": per_parcel["n_pixels"].values, "n_valid": per_parcel["n_valid"].values,
        "cluster": per_parcel["cluster"].values, "predicted": per_parcel["predicted"].values,
    })
    for d in range(per_parcel.sizes["dim"]):
        table[f"embedding_{d}"] = per_parcel["embedding"].values[:, d]
    if gdf is not None:
        geoms = gdf.set_index(id_column).geometry.reindex(ids)
        summary = gpd.GeoDataFrame(table, geometry=geoms.to_numpy(), crs=gdf.crs)
    else:
        summary = table
        messages.append("no parcel geometries (sample form without PARCELS): parcels.parquet is a plain Parquet table")

    with storage.staged_folder(out, storage.PARCELS) as tmp:
        _write_outputs(tmp, per_parcel, summary, profiles, ev, info)
    for m in messages:
        typer.echo(f"note: {m}")
    sp, sq = ev.scores_pixels, ev.scores_parcels
    scored = "held-out" if ev.held_out else "all (none held out)"
    typer.echo(
        f"wrote {out}: {ids.size} parcels ({ev.train_ids.size} train, {ev.test_ids.size} test), "
        f"{len(ev.classes)} classes, vote by {vote}; {scored} pixels: OA {100 * sp['overall_accuracy']:.1f} %, "
        f"kappa {sp['kappa']:.3f}; {scored} parcels: OA {100 * sq['overall_accuracy']:.1f} %, kappa {sq['kappa']:.3f}"
    )
