"""Parcels: per parcel and per class, out of core, from results on a grid or in sample form;
the clusters voted into classes and scored; the stage and its store twin.

The parcels are read and checked by `slamgeo.io.parcels` and put on the grid by
`slamgeo.jobs.rasterize` (their policies are said there). Here:
- per-parcel VV and VH are means of the dB values (not dB of the mean power), NaN ignored;
- parcels without a class (null in the class column) are aggregated but take no part in the
  voting, the metrics or the class profiles.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
from flox.xarray import xarray_reduce

from slamgeo._version import __version__
from slamgeo.errors import InputError
from slamgeo.io import storage
from slamgeo.io.cube import spatial_dims
from slamgeo.io.parcels import ParcelWarning, check_parcels, read_parcels
from slamgeo.jobs.cluster import CENTRE, DIM, NO_CLUSTER
from slamgeo.jobs.metrics import Evaluation, EvaluationWarning, check_vote, evaluate_parcels
from slamgeo.jobs.rasterize import OVERLAP_RULE, rasterize_parcels
from slamgeo.schema import (
    BANDS,
    CLASS,
    CLASS_COLUMN,
    ID_COLUMN,
    PARCEL,
    PARCELS_MARKER,
    TEST_FRACTION,
    UNASSIGNED,
    VOTE,
)


def _first_grid(ds: xr.Dataset) -> xr.DataArray:
    """A spatial-only view of a results Dataset (its dims include dim/time/block_*)."""
    for name in ("recon_error", "cluster", "parcel_id"):
        if name in ds:
            return ds[name]
    if "embedding" in ds:
        return ds["embedding"].isel({DIM: 0}, drop=True)
    raise InputError(f"expected a grid variable (recon_error, embedding, ...), found {sorted(map(str, ds.data_vars))}")


# --------------------------------------------------------------------------- aggregation


def results_spatial_dims(results: xr.Dataset) -> tuple[str, ...]:
    """`("y", "x")` or `("sample",)` for a results Dataset."""
    return spatial_dims(_first_grid(results))


def _check_aligned(a: xr.DataArray, b: xr.DataArray, what: str) -> None:
    for d in b.dims:
        if d in a.coords and d in b.coords and not np.array_equal(a[d].values, b[d].values):
            raise InputError(f"{what}: coordinate '{d}' differs from the results' grid")
        if a.sizes.get(d, b.sizes[d]) != b.sizes[d]:
            raise InputError(f"{what}: size of '{d}' is {b.sizes[d]}, the results have {a.sizes[d]}")


def aggregate_parcels(
    results: xr.Dataset,
    cube: xr.Dataset | None,
    parcel_id: xr.DataArray,
    ids: np.ndarray | Sequence[int],
    *,
    n_clusters: int | None = None,
) -> xr.Dataset:
    """Per-parcel statistics, out of core (flox `xarray_reduce` on the Dask arrays).

    Inputs share spatial dims `S` ((y, x) or (sample,)): `results` with `importance (dim, time,
    *S)` and `embedding (dim, *S)` (and `cluster (*S)`, -1 = none, if clustered), `cube` with
    `VV`, `VH (time, *S)` in dB (or None), `parcel_id (*S)` integer (0 = none).

    Returns, computed, indexed by `parcel` (= `ids`, in that order):
    `importance (parcel, dim, time)` and `embedding (parcel, dim)`: nanmean over the parcel's pixels;
    `VV`, `VH (parcel, time)`: nanmean of the dB values, with `VV_count`, `VH_count (parcel, time)`
    the finite values counted; `n_pixels (parcel)`: pixels of the parcel; `n_valid (parcel)`:
    those with a finite embedding; if clustered, `cluster_pixels (parcel, centre)` and the
    majority `cluster (parcel)` (ties: the smallest cluster; -1 when none). Parcels without
    pixels get NaN means and zero counts. Float results are float64 (inputs are cast per chunk).

    Memory: each chunk's partial result covers every parcel in `ids` (flox map-reduce with dense
    reindexing), about 16 x len(ids) x dim x time bytes per task: 200 MB for 100 000 parcels of
    61 dates. flox's sparse reindexing bounds it, but took 17.8 s against 6.6 s here for 16 000
    parcels (numba compilation included, ~15 s per process), so it is not used.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size == 0:
        raise InputError("aggregate_parcels: no parcel ids given")
    grid = _first_grid(results)
    sdims = spatial_dims(grid)
    if tuple(parcel_id.dims) != sdims:
        raise InputError(f"parcel_id: dims {parcel_id.dims}, expected {sdims}")
    _check_aligned(grid, parcel_id, "parcel_id")
    spatial_chunks = grid.variable.chunksizes  # coordinates may be chunked otherwise

    def bare(v: xr.DataArray, name: str) -> xr.DataArray:
        # positional from here on (grids were checked equal): only the non-spatial coords stay
        coords = {d: v[d].values for d in v.dims if d in v.coords and d not in sdims}
        return xr.DataArray(v.data, dims=v.dims, coords=coords, name=name)

    pid = bare(parcel_id, "parcel_id").astype(np.int64)
    if spatial_chunks:
        pid = pid.chunk({d: spatial_chunks[d] for d in sdims})
    means = {
        "importance": bare(results["importance"], "importance").astype(np.float64),
        "embedding": bare(results["embedding"], "embedding").astype(np.float64),
    }
    valid = np.isfinite(bare(results["embedding"], "valid")).all(DIM)  # type: ignore[call-overload]  # a DataArray
    counts = {"n_valid": valid.astype(np.int64), "n_pixels": xr.ones_like(pid, dtype=np.int64)}
    if cube is not None:
        for band in BANDS:
            if band not in cube:
                raise InputError(f"cube: missing band variable {band}")
            _check_aligned(grid, cube[band].isel(time=0, drop=True), f"cube {band}")
            v = bare(cube[band], band)
            if spatial_chunks:
                v = v.chunk({d: spatial_chunks[d] for d in sdims})
            means[band] = v.astype(np.float64)
            counts[f"{band}_count"] = np.isfinite(v).astype(np.int64)

    groups: dict[str, Any] = {"expected_groups": (ids,), "isbin": (False,)}
    parts = [
        xarray_reduce(xr.Dataset(means), pid, func="nanmean", **groups),
        xarray_reduce(xr.Dataset(counts), pid, func="sum", fill_value=0, **groups),
    ]
    if "cluster" in results:
        cl = bare(results["cluster"], "cluster").astype(np.int64)
        if n_clusters is None:
            n_clusters = results.sizes[CENTRE] if CENTRE in results.sizes else int(cl.max().compute()) + 1
        ones = xr.ones_like(cl, dtype=np.int64).rename("cluster_pixels")
        cp = xarray_reduce(
            ones, pid, cl, func="sum", fill_value=0, expected_groups=(ids, np.arange(n_clusters)), isbin=(False, False)
        )
        parts.append(cp.rename({"cluster": CENTRE}).to_dataset())
    parts = dask.compute(*parts)
    out = xr.merge([p.rename({"parcel_id": PARCEL}) for p in parts], compat="override", join="exact")
    if "cluster_pixels" in out:
        cp = out["cluster_pixels"].values
        majority = np.where(cp.sum(1) > 0, cp.argmax(1), NO_CLUSTER)
        out["cluster"] = (
            (PARCEL,),
            majority.astype(np.int32),
            {"long_name": "majority cluster of the parcel's pixels", "flag_meaning": "-1: none"},
        )
        out = out.assign_coords({CENTRE: np.arange(out.sizes[CENTRE])})
    out = out.sel({PARCEL: ids})  # flox returns the groups sorted; give them back in `ids` order
    order = [PARCEL, DIM, "time", CENTRE]
    out = out.transpose(*[d for d in order if d in out.dims])
    for name in ("n_pixels", "n_valid", "VV_count", "VH_count", "cluster_pixels"):
        if name in out:
            out[name] = out[name].astype(np.int64)
    out["importance"].attrs["long_name"] = "mean Grad-SLAM importance of the parcel's pixels"
    out["embedding"].attrs["long_name"] = "mean embedding of the parcel's pixels"
    for band in BANDS:
        if band in out:
            out[band].attrs.update(units="dB", long_name=f"mean of the parcel's {band} dB values")
    out["n_pixels"].attrs["long_name"] = "pixels of the parcel on the grid"
    out["n_valid"].attrs["long_name"] = "pixels of the parcel with a finite embedding"
    if "time" in results.coords and "time" in out.dims:
        out = out.assign_coords(time=results["time"].values)
    if DIM in results.coords:
        out = out.assign_coords({DIM: results[DIM].values})
    out.attrs = {k: v for k, v in parcel_id.attrs.items() if k in ("all_touched", "overlap_rule")}
    return out


def _labels_for(per_parcel: xr.Dataset, labels) -> pd.Series:
    ids = per_parcel[PARCEL].values
    if isinstance(labels, xr.DataArray):
        s = labels.to_series()
    elif isinstance(labels, pd.Series):
        s = labels
    else:
        s = pd.Series(np.asarray(labels), index=ids)
    if not s.index.is_unique:
        raise InputError("labels: duplicated parcel ids in the labels' index")
    missing = np.setdiff1d(ids, s.index.to_numpy())
    if missing.size:
        raise InputError(f"labels: no label entry for parcel(s) {missing[:10].tolist()}")
    return s.reindex(ids)


def _is_unlabelled(values: pd.Series) -> np.ndarray:
    return (values.isna() | (values.astype(str) == "")).to_numpy()


def _weighted_mean(values: np.ndarray, weights: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean of per-parcel means weighted by their counts (NaN where no weight): the mean over
    every pixel of the parcels, without re-reading the pixels."""
    w = np.where(np.isfinite(values), weights, 0).astype(np.float64)
    total = w.sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.nansum(np.where(w > 0, values, 0.0) * w, axis) / total, np.nan)


def minmax(profile: np.ndarray, axis: int = -1) -> np.ndarray:
    """(p - min) / (max - min) along `axis`; 0 where the profile is constant; NaN stays NaN."""
    lo = np.nanmin(profile, axis=axis, keepdims=True)
    hi = np.nanmax(profile, axis=axis, keepdims=True)
    span = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(
            span > 0, (profile - lo) / np.where(span > 0, span, 1.0), np.where(np.isnan(profile), np.nan, 0.0)
        )


def class_profiles(
    per_parcel: xr.Dataset,
    labels: xr.DataArray | pd.Series | np.ndarray,
    *,
    classes: Sequence | None = None,
) -> xr.Dataset:
    """Per-class profiles as in the paper's Fig. 4, from the per-parcel tables.

    `labels`: the class of each parcel (a DataArray on `parcel`, a Series indexed by parcel id,
    or an array in `per_parcel.parcel` order); null or "" = unlabelled, left out.
    Returns `importance (class, dim, time)`: the mean merged importance over the class's pixels
    (per-parcel means weighted by `n_valid`), min-max normalised over time per class and dim
    (0 for a constant profile); `importance_mean` the same before normalising; `VV`, `VH
    (class, time)` mean dB over the class's pixels (weighted by `VV_count`); `n_parcels`,
    `n_pixels`, `n_valid (class)`. A class without valid pixels is left out, with a
    `ParcelWarning` naming it; `attrs["classes_without_pixels"]` lists them.
    """
    lab = _labels_for(per_parcel, labels)
    labelled = ~_is_unlabelled(lab)
    if classes is None:
        classes = sorted(pd.unique(lab[labelled]).tolist())
    classes = list(classes)
    if not classes:
        raise InputError("class_profiles: no parcel has a class")
    lab_values = lab.to_numpy()
    imp = per_parcel["importance"].transpose(PARCEL, DIM, "time").values
    n_valid = per_parcel["n_valid"].values
    rows, empty = [], []
    for c in classes:
        m = labelled & (lab_values == c)
        if n_valid[m].sum() == 0:
            empty.append(c)
            continue
        row: dict[str, Any] = {
            "importance_mean": _weighted_mean(imp[m], n_valid[m][:, None, None]),
            "n_parcels": int(m.sum()),
            "n_pixels": int(per_parcel["n_pixels"].values[m].sum()),
            "n_valid": int(n_valid[m].sum()),
        }
        for band in BANDS:
            if band in per_parcel:
                row[band] = _weighted_mean(
                    per_parcel[band].transpose(PARCEL, "time").values[m],
                    per_parcel[f"{band}_count"].transpose(PARCEL, "time").values[m],
                )
        rows.append((c, row))
    if empty:
        warnings.warn(
            f"class(es) {empty} have no valid pixel on the grid (parcels outside it, or no data); "
            "left out of the class profiles",
            ParcelWarning,
            stacklevel=2,
        )
    if not rows:
        raise InputError(f"class_profiles: no class has a valid pixel (classes {classes})")
    names = [c for c, _ in rows]
    mean = np.stack([r["importance_mean"] for _, r in rows])  # (class, dim, time)
    data: dict[str, tuple[Any, ...]] = {
        "importance": (
            (CLASS, DIM, "time"),
            minmax(mean, axis=-1),
            {"long_name": "class mean importance, min-max normalised over time per class and dim"},
        ),
        "importance_mean": ((CLASS, DIM, "time"), mean, {"long_name": "class mean importance (pixel-weighted)"}),
        "n_parcels": ((CLASS,), np.array([r["n_parcels"] for _, r in rows])),
        "n_pixels": ((CLASS,), np.array([r["n_pixels"] for _, r in rows])),
        "n_valid": ((CLASS,), np.array([r["n_valid"] for _, r in rows])),
    }
    for band in BANDS:
        if band in per_parcel:
            data[band] = (
                (CLASS, "time"),
                np.stack([r[band] for _, r in rows]),
                {"units": "dB", "long_name": f"class mean {band} (mean of dB values)"},
            )
    coords = {CLASS: np.asarray(names, dtype=object if not np.issubdtype(np.asarray(names).dtype, np.number) else None)}
    coords[DIM] = per_parcel[DIM].values
    coords["time"] = per_parcel["time"].values
    out = xr.Dataset(data, coords=coords)
    out.attrs["classes_without_pixels"] = [str(c) for c in empty]
    return out


# --------------------------------------------------------------------------- the stage

PARCELS_OUTPUTS = {
    "per_parcel": "parcels.zarr",
    "profiles": "class_profiles.zarr",
    "table": "parcels.parquet",
    "confusion_pixels": "confusion_pixels.csv",
    "confusion_pixels_percent": "confusion_pixels_percent.csv",
    "confusion_parcels": "confusion_parcels.csv",
    "confusion_parcels_percent": "confusion_parcels_percent.csv",
    "metrics": PARCELS_MARKER,  # the marker of a complete parcels folder, written last
}


# the pieces the report and the class pairs draw from (`ParcelsResult.parts`), by their file
PARCELS_PARTS = {
    key: PARCELS_OUTPUTS[key] for key in ("confusion_pixels", "confusion_parcels", "profiles", "per_parcel", "metrics")
}


@dataclass
class ParcelsResult:
    """What the parcels stage gives.

    per_parcel: Dataset on `parcel` (mean importance `(parcel, dim, time)`, VV/VH profiles,
        embedding, n_pixels, n_valid, majority cluster; coordinates label, split, predicted)
        and `cluster_class (centre)`, the class voted for each cluster;
    classes: per-class profiles `(class, dim, time)` and `(class, time)` (`class_profiles`);
    evaluation: the vote, confusion matrices and scores (`slamgeo.jobs.metrics.Evaluation`);
    table: one row per parcel (a GeoDataFrame when the parcels have geometries);
    info: provenance and what was found (repairs, overlaps, parcels without pixels);
    messages: the same, as sentences for the user.
    """

    per_parcel: xr.Dataset
    classes: xr.Dataset
    evaluation: Evaluation
    table: pd.DataFrame
    info: dict
    messages: list[str]

    @property
    def metrics(self) -> dict:
        """Scores, mapping and provenance, as `metrics.json` holds them (JSON types)."""
        return json.loads(json.dumps({**self.evaluation.to_dict(), **self.info}, default=_json_default))

    def confusion(self, level: str) -> pd.DataFrame:
        """Counts `(class, voted class)` plus an `unassigned` column, for "pixels" or "parcels"."""
        cm = self.evaluation.confusion_pixels if level == "pixels" else self.evaluation.confusion_parcels
        counts = cm["counts"].to_pandas()
        counts[UNASSIGNED] = cm[UNASSIGNED].values
        return counts

    def parts(self) -> dict:
        """The pieces the report draws from (`PARCELS_PARTS`), as `read_parcels_outputs` reads
        them back from a parcels folder."""
        return {
            "confusion_pixels": self.confusion("pixels"),
            "confusion_parcels": self.confusion("parcels"),
            "profiles": self.classes,
            "per_parcel": self.per_parcel,
            "metrics": self.metrics,
        }


def _json_default(o):
    return o.tolist() if isinstance(o, np.ndarray) else o.item() if isinstance(o, np.generic) else str(o)


def _label_series(values, ids) -> pd.Series:
    """Class per parcel id as strings; "" for no class."""
    s = pd.Series(values, index=ids, dtype=object, name="label")
    return s.where(s.notna(), "").astype(str).astype(object)


def _sample_labels(results: xr.Dataset, id_column: str, class_column: str):
    """Sample form: parcel id and class per sample from the results' coordinates."""
    for col in (id_column, class_column):
        if col not in results.coords:
            found = sorted(str(c) for c in results.coords if results[c].dims == ("sample",))
            raise InputError(f"sample-form results: no '{col}' coordinate on sample; found {found}")
    frame = pd.DataFrame({"id": results[id_column].values, "label": results[class_column].values})
    per = frame.groupby("id")["label"].agg(lambda v: pd.unique(v.dropna()).tolist())
    mixed = [int(i) for i, v in per.items() if len(v) > 1]
    if mixed:
        raise InputError(f"sample-form results: parcels {mixed[:10]} have samples of different classes")
    ids = per.index.to_numpy().astype(np.int64)
    return ids, [v[0] if v else None for v in per]


def parcels(
    results: xr.Dataset,
    cube: xr.Dataset | None,
    polygons: gpd.GeoDataFrame | str | Path | None,
    *,
    id_column: str = ID_COLUMN,
    class_column: str = CLASS_COLUMN,
    all_touched: bool = False,
    vote: str = VOTE,
    test_fraction: float = TEST_FRACTION,
    seed: int = 0,
    provenance: dict | None = None,
) -> ParcelsResult:
    """Per-parcel and per-class importance, majority voting of the clusters into classes on
    training parcels, and scores on held-out parcels.

    results: clustered results (`embedding`, `importance`, `cluster`), gridded `(y, x)` or in
    sample form `(sample,)` with the id and class as sample coordinates. cube: the cube the
    results came from, for VV/VH profiles (or None). polygons: the parcels (a GeoDataFrame, or
    a file `read_parcels` reads; None for sample form), reprojected to the results' CRS. The
    aggregation is Dask work on the caller's scheduler (flox); the result is in memory.
    `provenance`: entries put first into the result's `info` (where the inputs came from).
    """
    check_vote(vote)
    if not 0.0 <= test_fraction < 1.0:
        raise InputError(f"test_fraction must be in [0, 1), found {test_fraction}")
    if "importance" not in results:
        raise InputError(f"results: no 'importance' variable; found {sorted(map(str, results.data_vars))}")
    if "cluster" not in results:
        raise InputError("results: no 'cluster' variable; cluster the embeddings first (slamgeo.cluster)")
    sdims = results_spatial_dims(results)
    gdf = None
    messages: list[str] = []
    info: dict = {
        **(provenance or {}),
        "id_column": id_column,
        "class_column": class_column,
        "test_fraction": test_fraction,
        "seed": seed,
    }
    if polygons is not None:
        crs = results.rio.crs if sdims == ("y", "x") else None
        gdf = (
            check_parcels(polygons, id_column=id_column, class_column=class_column, crs=crs)
            if isinstance(polygons, gpd.GeoDataFrame)
            else read_parcels(polygons, id_column=id_column, class_column=class_column, crs=crs)
        )
    if sdims == ("y", "x"):
        if gdf is None:
            raise InputError("gridded results need parcels (a GeoPackage, shapefile or GeoParquet)")
        parcel_id = rasterize_parcels(gdf, results, all_touched=all_touched, id_column=id_column)
        ids = gdf[id_column].to_numpy()
        labels = _label_series(gdf[class_column].to_numpy(), ids)
        info.update(
            all_touched=all_touched,
            overlap_rule=OVERLAP_RULE,
            repaired_ids=gdf.attrs["repaired_ids"],
            overlapping_pairs=[list(p) for p in gdf.attrs["overlaps"]],
        )
        if gdf.attrs["repaired_ids"]:
            messages.append(
                f"repaired {len(gdf.attrs['repaired_ids'])} invalid geometr(y/ies) with make_valid "
                f"(ids {gdf.attrs['repaired_ids'][:10]})"
            )
        if gdf.attrs["overlaps"]:
            messages.append(
                f"{len(gdf.attrs['overlaps'])} pair(s) of parcels overlap; their shared pixels go to the "
                f"smaller parcel (pairs {gdf.attrs['overlaps'][:5]})"
            )
    else:
        ids, lab = _sample_labels(results, id_column, class_column)
        parcel_id = results[id_column]
        labels = _label_series(lab, ids)

    per_parcel = aggregate_parcels(results, cube, parcel_id, ids)
    no_pixels = ids[per_parcel["n_pixels"].values == 0]
    if no_pixels.size:
        messages.append(f"{no_pixels.size} parcel(s) have no pixel on the grid (ids {no_pixels[:10].tolist()})")
    info["parcels_without_pixels"] = no_pixels.tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EvaluationWarning)  # said in `messages`, and in the metrics
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
    per_parcel.attrs.update(
        {
            k: json.dumps(v) if isinstance(v, (list, dict)) else v
            for k, v in info.items()
            if v is not None and k != "overlapping_pairs"
        }
    )
    per_parcel.attrs["vote"] = vote
    per_parcel["cluster_class"] = (
        ("centre",),
        np.array([str(ev.mapping.get(c, UNASSIGNED)) for c in per_parcel["centre"].values]),
        {"long_name": f"class voted for each cluster (by {vote}, on the training parcels)"},
    )
    profiles.attrs["classes_without_pixels"] = json.dumps(profiles.attrs["classes_without_pixels"])
    profiles = profiles.assign_coords({"class": profiles["class"].values.astype(str)})
    table = pd.DataFrame(
        {
            id_column: ids,
            class_column: labels.to_numpy(),
            "split": split,
            "n_pixels": per_parcel["n_pixels"].values,
            "n_valid": per_parcel["n_valid"].values,
            "cluster": per_parcel["cluster"].values,
            "predicted": per_parcel["predicted"].values,
        }
    )
    for d in range(per_parcel.sizes["dim"]):
        table[f"embedding_{d}"] = per_parcel["embedding"].values[:, d]
    if gdf is not None:
        geoms = gdf.set_index(id_column).geometry.reindex(ids)
        table = gpd.GeoDataFrame(table, geometry=geoms.to_numpy(), crs=gdf.crs)
    else:
        messages.append("no parcel geometries (sample form without parcels): the table has no geometry")
    return ParcelsResult(per_parcel, profiles, ev, table, info, messages)


def write_parcels_outputs(result: ParcelsResult, folder: Path) -> None:
    """Every output file of `result` into the (existing, empty) local folder `folder`;
    `metrics.json` last."""
    result.per_parcel.to_zarr(folder / PARCELS_OUTPUTS["per_parcel"], mode="w", zarr_format=2)
    result.classes.to_zarr(folder / PARCELS_OUTPUTS["profiles"], mode="w", zarr_format=2)
    result.table.to_parquet(folder / PARCELS_OUTPUTS["table"])  # GeoParquet for a GeoDataFrame
    for level in ("pixels", "parcels"):
        cm = result.evaluation.confusion_pixels if level == "pixels" else result.evaluation.confusion_parcels
        result.confusion(level).to_csv(folder / PARCELS_OUTPUTS[f"confusion_{level}"])
        cm["percent"].to_pandas().round(4).to_csv(folder / PARCELS_OUTPUTS[f"confusion_{level}_percent"])
    (folder / PARCELS_OUTPUTS["metrics"]).write_text(json.dumps(result.metrics, indent=2))


def read_parcels_outputs(folder: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """What `parcels_store` (`slamgeo parcels --out DIR`) wrote, as `ParcelsResult.parts` gives
    it: ({piece: data}, {piece: why it is missing}).

    Pieces (`PARCELS_PARTS`): `confusion_pixels`, `confusion_parcels` (DataFrames of counts),
    `profiles` (class profiles Dataset), `per_parcel` (Dataset, lazy), `metrics` (dict). A piece
    missing or unreadable is said in the second dict. Raises `InputError` when the folder does
    not exist."""
    folder = storage.location(folder)
    if not storage.isdir(folder):
        raise InputError(f"{folder}: no parcels output folder here (expected what `slamgeo parcels --out` writes)")
    found, missing = {}, {}
    for key, name in PARCELS_PARTS.items():
        path = storage.join(folder, name)
        if not storage.exists(path):
            missing[key] = f"{name} not found in {folder}"
            continue
        try:
            if name.endswith(".csv"):
                found[key] = pd.read_csv(io.BytesIO(storage.read_bytes(path)), index_col=0)
            elif name.endswith(".zarr"):  # per-parcel tables stay lazy: only what a figure uses is read
                found[key] = xr.open_zarr(str(path)).load() if key == "profiles" else xr.open_zarr(str(path))
            else:
                found[key] = json.loads(storage.read_text(path))
        except Exception as exc:  # noqa: BLE001 - any unreadable piece becomes a skipped figure
            missing[key] = f"{path}: unreadable ({type(exc).__name__}: {exc})"
    return found, missing


def parcels_store(
    results: str | Path,
    polygons: str | Path | None,
    out: str | Path,
    *,
    cube: str | Path | None = None,
    layer: str | None = None,
    overwrite: bool = False,
    **options,
) -> ParcelsResult:
    """`parcels` from a results store (and a cube store, a parcels file) into the folder `out`
    (a path or a URL): `PARCELS_OUTPUTS`, written at once (`slamgeo.io.storage.staged_folder`).
    `out` must be absent, empty or, with `overwrite`, a parcels folder holding nothing else
    and none of the inputs (`slamgeo.io.storage.claim_output`). `options`: those of `parcels`."""
    from slamgeo.io.cube import open_cube, open_results

    out = storage.location(out)
    storage.claim_output(out, storage.PARCELS, overwrite=overwrite, inputs=[p for p in (results, polygons, cube) if p])
    ds = open_results(results)
    cb = open_cube(cube) if cube else None
    provenance = {
        "slamgeo_version": __version__,
        "results_path": str(results),
        "parcels_path": str(polygons) if polygons else None,
        "cube_path": str(cube) if cube else None,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParcelWarning)  # repairs are in the result's messages
        gdf = None
        if polygons is not None:
            crs = ds.rio.crs if results_spatial_dims(ds) == ("y", "x") else None
            gdf = read_parcels(
                polygons,
                id_column=options.get("id_column", ID_COLUMN),
                class_column=options.get("class_column", CLASS_COLUMN),
                crs=crs,
                layer=layer,
            )
        res = parcels(ds, cb, gdf, provenance=provenance, **options)
    with storage.staged_folder(out, storage.PARCELS) as tmp:
        write_parcels_outputs(res, tmp)
    return res


__all__ = [
    "CLASS",
    "PARCELS_OUTPUTS",
    "PARCELS_PARTS",
    "ParcelsResult",
    "PARCEL",
    "aggregate_parcels",
    "class_profiles",
    "minmax",
    "parcels",
    "parcels_store",
    "read_parcels_outputs",
    "results_spatial_dims",
    "write_parcels_outputs",
]
