"""The report's inputs: what it reads and prepares for the figures (`slamgeo.reporting.figures`).

- `save_curves`, `load_curves`, `curve_sets`: deletion curves as JSON, and their checked form;
- `read_groups`, `default_groups`: the class groups of Fig. 4;
- `sample_variables`: a bounded sample of pixels of some variables (a regional store is not
  read whole; `sample_lazy`, the same as Dask arrays), on which `most_important_date`
  (`date_score`) and `cluster_profiles` (`cluster_sums`) are computed as Dask reductions:
  only per-date and per-cluster sums reach the process that asks;
- `confusion_percent`, `normalised_importance`: the tables Fig. 3 and Fig. 4 show.

A parcels output folder is read by the stage that writes it
(`slamgeo.jobs.parcels.read_parcels_outputs`).

What a figure cannot be drawn from raises `slamgeo.reporting.FigureSkipped`; a file the user
names that is missing or unreadable raises `slamgeo.errors.InputError`.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array
import numpy as np
import pandas as pd
import xarray as xr
from dask.delayed import Delayed

from slamgeo.errors import InputError
from slamgeo.io import storage
from slamgeo.io.records import load_json
from slamgeo.reporting import FigureSkipped
from slamgeo.schema import CENTRE, CLASS, DIM, UNASSIGNED

SCAN_MAX_PIXELS = 200_000  # pixels kept to pick the default date, draw a scatter, average clusters
SCAN_MAX_BLOCKS = 16  # spatial chunks read for those samples (a regional store is not read whole)

# --------------------------------------------------------------------------- files


def curve_sets(curves: Mapping) -> dict[str, dict[str, np.ndarray]]:
    """One `deletion()` result, or a mapping name -> result, as name -> numpy arrays."""
    if not isinstance(curves, Mapping) or not curves:
        raise FigureSkipped(
            "faithfulness curves: expected the dict of slamgeo.method.faithfulness.deletion, or name -> such dicts"
        )
    if "k" in curves and "top" in curves:
        curves = {"Grad-SLAM": curves}
    out = {}
    for name, c in curves.items():
        if not isinstance(c, Mapping) or not {"k", "top", "baseline"} <= set(c):
            found = sorted(c) if isinstance(c, Mapping) else type(c).__name__
            raise FigureSkipped(f"faithfulness curves '{name}': expected keys k, top, baseline; found {found}")
        arrays = {key: _numpy(v) for key, v in c.items() if key in ("k", "top", "baseline", "ratio", "embedding_std")}
        k = arrays["k"].ravel()
        for key in ("top", "baseline"):
            a = arrays[key]
            arrays[key] = a = a[:, None] if a.ndim == 1 else a
            if a.shape[0] != k.size:
                raise FigureSkipped(
                    f"faithfulness curves '{name}': {key} has {a.shape[0]} rows for {k.size} values of k"
                )
        arrays["k"] = k
        if isinstance(c.get("baseline_name"), str):
            arrays["baseline_name"] = c["baseline_name"]
        out[str(name)] = arrays
    return out


def save_curves(curves: Mapping, path: str | Path) -> str | Path:
    """Write deletion curves (as `fig_deletion_curve` takes them) to a JSON file."""
    sets = curve_sets(curves)
    data = {n: {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in s.items()} for n, s in sets.items()}
    path = storage.location(path)
    storage.write_text(path, json.dumps(data, indent=1))
    return path


def load_curves(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Read deletion curves written by `save_curves` (or any JSON of the same form)."""
    path = storage.location(path)
    if not storage.isfile(path):
        raise InputError(f"{path}: no faithfulness JSON here")
    data = load_json(storage.read_text(path), path)
    try:
        return curve_sets(data)
    except FigureSkipped as exc:
        raise InputError(f"{path}: {exc}") from exc


def read_groups(path: str | Path) -> dict[str, list[str]]:
    """Class groups from a JSON or YAML file: a mapping group name -> list of class names."""
    import yaml

    path = storage.location(path)
    if not storage.exists(path):
        raise InputError(f"{path}: no class-groups file here")
    try:
        data = yaml.safe_load(storage.read_text(path))  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid JSON or YAML ({exc})") from exc
    if (
        not isinstance(data, dict)
        or not data
        or not all(isinstance(v, list) and v and all(isinstance(c, (str, int)) for c in v) for v in data.values())
    ):
        raise InputError(
            f"{path}: expected a mapping of group name to a list of class names, e.g. "
            f'{{"confusable": ["cotton", "sweet potato", "pepper"]}}; found {type(data).__name__}: {str(data)[:200]}'
        )
    return {str(k): [str(c) for c in v] for k, v in data.items()}


def default_groups(classes: Iterable[Any], size: int = 4, *, noun: str = "classes") -> dict[str, list[str]]:
    """Classes in groups of at most `size`, in order: {"classes 1-4": [...], ...}."""
    classes = [str(c) for c in classes]
    groups = {}
    for i in range(0, len(classes), size):
        last = min(i + size, len(classes))
        groups[f"{noun} {i + 1}-{last}" if last > i + 1 else f"{noun} {last}"] = classes[i:last]
    return groups


# --------------------------------------------------------------------------- samples and tables


def sample_regions(
    ds: xr.Dataset,
    names: Sequence[str],
    *,
    max_pixels: int = SCAN_MAX_PIXELS,
    max_blocks: int = SCAN_MAX_BLOCKS,
    seed: int = 0,
) -> tuple[list[str], list[dict[str, slice]]]:
    """The spatial dims S of `names[0]` ((y, x) or (sample,)) and the regions of the pixel
    sample of `sample_variables`: at most `max_blocks` spatial chunks (drawn at random,
    `seed`), each read with a regular stride that keeps at most ~`max_pixels` pixels in all.
    Each region lies within one spatial chunk."""
    ref = ds[names[0]]
    sdims = [str(d) for d in ref.dims if d not in (DIM, "time", CLASS, CENTRE)]
    if not sdims:
        raise FigureSkipped(f"{names[0]}: no spatial dimension in {tuple(ref.dims)}")
    chunks = next((ds[n].chunksizes for n in names if ds[n].chunks), {})
    bounds = {d: np.cumsum((0, *chunks[d])) if d in chunks else np.array([0, ds.sizes[d]]) for d in sdims}
    blocks = list(itertools.product(*(range(len(bounds[d]) - 1) for d in sdims)))
    if len(blocks) > max_blocks:
        pick = np.sort(np.random.default_rng(seed).choice(len(blocks), max_blocks, replace=False))
        blocks = [blocks[i] for i in pick]
    n_read = sum(int(np.prod([bounds[d][b + 1] - bounds[d][b] for d, b in zip(sdims, blk)])) for blk in blocks)
    step = max(1, math.ceil((n_read / max_pixels) ** (1 / len(sdims))))
    regions = [{d: slice(int(bounds[d][b]), int(bounds[d][b + 1]), step) for d, b in zip(sdims, blk)} for blk in blocks]
    return sdims, regions


def sample_lazy(ds: xr.Dataset, names: Sequence[str], **sample) -> dict[str, Any]:
    """`sample_variables` without computing: a Dask array per Dask-backed variable (the
    sample is then read and concatenated on the Dask workers), a numpy array otherwise."""
    if not names:
        return {}
    sdims, regions = sample_regions(ds, names, **sample)
    out: dict[str, Any] = {}
    for n in names:
        v = ds[n].transpose(*[d for d in ds[n].dims if d not in sdims], *sdims)
        parts = []
        for region in regions:
            a = v.isel(region).data
            parts.append(a.reshape(*a.shape[: a.ndim - len(sdims)], -1))
        out[n] = dask.array.concatenate(parts, axis=-1) if _is_dask(parts[0]) else np.concatenate(parts, axis=-1)
    return out


def sample_variables(ds: xr.Dataset, names: Sequence[str], **sample) -> dict[str, np.ndarray]:
    """Read a bounded sample of pixels of some variables, for statistics and scatters.

    The variables share spatial dims S ((y, x) or (sample,)); each comes back as an array
    `(*other dims, n)`, its non-spatial dims first in their order, pixels last, the same n
    pixels for every variable. A Dask-backed Dataset with more than `max_blocks` spatial
    chunks is read in `max_blocks` chunks drawn at random (`seed`), so a regional store is not
    read whole; within what is read, a regular stride keeps at most ~`max_pixels` pixels
    (`sample_regions`). One `dask.compute` for all the variables.
    """
    lazy = sample_lazy(ds, names, **sample)
    return {n: np.asarray(a) for n, a in zip(lazy, compute_together(list(lazy.values())))}


def _is_dask(a: Any) -> bool:
    return isinstance(a, dask.array.Array)


def as_delayed(values: Sequence[Any]) -> list[Any]:
    """Each Dask collection of `values` as one `dask.delayed` of its computed value (others as
    they are), for one `dask.compute` or `Client.compute` of collections of mixed kinds: Dask
    2026.8 hands the results of a Dask array, a `Delayed` and an xarray object computed together
    back in the wrong order."""
    return [dask.delayed(v) if dask.is_dask_collection(v) else v for v in values]


def compute_together(values: Sequence[Any]) -> list[Any]:
    """`values` computed in one `dask.compute` (on the workers under a distributed client), in order."""
    return list(dask.compute(*as_delayed(values))) if values else []


def date_score(importance: xr.DataArray, **sample) -> Any:
    """Mean |importance| per date `(time,)` float64 over the pixels of a sample
    (`sample_variables` options) and the embedding dimensions, NaN where none is finite;
    `importance (dim, time, *S)`. A Dask reduction when the importance is Dask-backed: only
    the `(time,)` sums and counts of each chunk leave the workers."""
    ordered = importance.transpose(DIM, "time", ...)
    imp = sample_lazy(ordered.to_dataset(name="importance"), ["importance"], **sample)["importance"]
    xp: Any = dask.array if _is_dask(imp) else np
    imp = xp.abs(imp.reshape(importance.sizes[DIM], importance.sizes["time"], -1)).astype(np.float64)
    total = xp.nansum(imp, axis=(0, 2))
    count = xp.isfinite(imp).sum(axis=(0, 2))
    return total / xp.where(count > 0, count, np.nan)


def pick_most_important(times: np.ndarray, score: np.ndarray) -> np.datetime64:
    """The date of the highest finite `score (time,)` (`date_score`), as datetime64[D]."""
    score = np.asarray(score, dtype=np.float64)
    if not np.isfinite(score).any():
        raise FigureSkipped("importance: no finite value to pick the most important date from")
    return np.datetime64(np.asarray(times)[int(np.nanargmax(score))], "D")


def most_important_date(importance: xr.DataArray, **sample) -> np.datetime64:
    """The date of highest mean |importance| over pixels and embedding dimensions, on a sample
    of pixels (`sample_variables` options). `importance (dim, time, *S)`."""
    (score,) = dask.compute(date_score(importance, **sample))
    return pick_most_important(importance["time"].values, score)


def _cluster_block_sums(cl: np.ndarray, imp: np.ndarray, vv: np.ndarray) -> dict[str, np.ndarray]:
    """Per cluster id of one block's sample: `ids (k,)`, `n (k,)` pixels, and the float64 sums
    and finite counts of `imp (dim, time, *S)` -> `(k, dim, time)` and `vv (time, *S)` -> `(k, time)`."""
    cl = np.asarray(cl).ravel()
    imp = np.asarray(imp).reshape(*np.shape(imp)[:2], -1)
    vv = np.asarray(vv).reshape(np.shape(vv)[0], -1)
    ids = np.unique(cl[cl >= 0]).astype(np.int64)
    out = {
        "ids": ids,
        "n": np.zeros(ids.size, np.int64),
        "imp_sum": np.zeros((ids.size, *imp.shape[:2])),
        "imp_count": np.zeros((ids.size, *imp.shape[:2]), np.int64),
        "vv_sum": np.zeros((ids.size, vv.shape[0])),
        "vv_count": np.zeros((ids.size, vv.shape[0]), np.int64),
    }
    for i, c in enumerate(ids):
        m = cl == c
        sub_imp, sub_vv = imp[..., m], vv[..., m]
        out["n"][i] = int(m.sum())
        out["imp_sum"][i] = np.nansum(sub_imp, axis=-1, dtype=np.float64)
        out["imp_count"][i] = np.isfinite(sub_imp).sum(axis=-1)
        out["vv_sum"][i] = np.nansum(sub_vv, axis=-1, dtype=np.float64)
        out["vv_count"][i] = np.isfinite(sub_vv).sum(axis=-1)
    return out


def _merge_sums(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """`_cluster_block_sums` of several blocks added up per cluster id."""
    ids = np.unique(np.concatenate([p["ids"] for p in parts]))
    out: dict[str, np.ndarray] = {"ids": ids}
    for key in ("n", "imp_sum", "imp_count", "vv_sum", "vv_count"):
        shape = (ids.size, *parts[0][key].shape[1:])
        acc = np.zeros(shape, dtype=parts[0][key].dtype)
        for p in parts:
            acc[np.searchsorted(ids, p["ids"])] += p[key]
        out[key] = acc
    return out


def cluster_sums(results: xr.Dataset, cube: xr.Dataset, *, band: str = "VV", max_pixels: int = SCAN_MAX_PIXELS) -> Any:
    """Per cluster, over a sample of pixels (`sample_regions`): pixel counts and the sums and
    finite counts of the importance `(k, dim, time)` and of the cube's `band` `(k, time)`, as
    a dict of arrays; a `dask.delayed` of it when the inputs are Dask-backed (each chunk of
    the sample is summed on a Dask worker, only `(k, dim, time)` sums leave it). Raises
    `FigureSkipped` when the results and the cube do not fit together."""
    from slamgeo.io.cube import spatial_dims

    if "cluster" not in results:
        raise FigureSkipped("cluster profiles: the results have no 'cluster' variable (run `slamgeo cluster`)")
    if band not in cube:
        raise FigureSkipped(f"cube: no '{band}' variable; found {sorted(map(str, cube.data_vars))}")
    sdims = spatial_dims(results["cluster"])
    if spatial_dims(cube[band]) != sdims or any(cube.sizes[d] != results.sizes[d] for d in sdims):
        raise FigureSkipped(
            f"cube: its grid {dict(cube[band].sizes)} differs from the results' {dict(results['cluster'].sizes)}"
        )
    if cube.sizes["time"] != results.sizes["time"]:
        raise FigureSkipped(f"cube: {cube.sizes['time']} dates, the results {results.sizes['time']}")
    merged = xr.Dataset(
        {
            "cluster": results["cluster"].variable,
            "importance": results["importance"].variable.transpose(DIM, "time", *sdims),
            band: cube[band].variable.transpose("time", *sdims),
        }
    )
    _, regions = sample_regions(merged, ["cluster", "importance", band], max_pixels=max_pixels)
    parts = []
    for region in regions:
        cl, imp, vv = (merged[n].isel(region).data for n in ("cluster", "importance", band))
        if any(_is_dask(a) for a in (cl, imp, vv)):
            parts.append(dask.delayed(_cluster_block_sums, pure=True)(cl, imp, vv))
        else:
            parts.append(_cluster_block_sums(cl, imp, vv))
    if any(isinstance(p, Delayed) for p in parts):
        return dask.delayed(_merge_sums, pure=True)(parts)
    return _merge_sums(parts)


def profiles_from_sums(
    sums: Mapping[str, np.ndarray],
    results: xr.Dataset,
    *,
    band: str = "VV",
    names: Mapping[int, str] | None = None,
) -> xr.Dataset:
    """`cluster_profiles` from the computed `cluster_sums`."""
    ids = np.asarray(sums["ids"])
    if ids.size == 0:
        raise FigureSkipped("cluster profiles: no clustered pixel in the sample")
    with np.errstate(invalid="ignore", divide="ignore"):
        imp = np.where(sums["imp_count"] > 0, sums["imp_sum"] / sums["imp_count"], np.nan)
        vv = np.where(sums["vv_count"] > 0, sums["vv_sum"] / sums["vv_count"], np.nan)
    labels = [f"cluster {c}" + (f": {(names or {})[int(c)]}" if (names or {}).get(int(c)) else "") for c in ids]
    imp_da = xr.DataArray(imp, dims=(CLASS, DIM, "time"))
    return xr.Dataset(
        {
            "importance": normalised_importance(imp_da, force=True),
            band: ((CLASS, "time"), vv, {"units": "dB"}),
            "n_pixels_sampled": ((CLASS,), np.asarray(sums["n"], dtype=np.int64)),
        },
        coords={CLASS: labels, DIM: results[DIM].values, "time": results["time"].values},
    )


def cluster_profiles(
    results: xr.Dataset,
    cube: xr.Dataset,
    *,
    band: str = "VV",
    names: Mapping[int, str] | None = None,
    max_pixels: int = SCAN_MAX_PIXELS,
) -> xr.Dataset:
    """Fig. 4's profiles per cluster instead of per class, from a subsample of pixels:
    `importance (class, dim, time)` (mean importance, min-max normalised over time) and
    `band (class, time)` (mean dB), `class` = "cluster c" (or "cluster c: class voted").
    The sums per cluster are a Dask reduction (`cluster_sums`)."""
    (sums,) = dask.compute(cluster_sums(results, cube, band=band, max_pixels=max_pixels))
    return profiles_from_sums(sums, results, band=band, names=names)


def _numpy(v: Any) -> np.ndarray:
    """A tensor, list or array as a numpy array (float64 where numeric)."""
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v, dtype=np.float64)


def normalised_importance(imp: xr.DataArray, *, force: bool = False) -> xr.DataArray:
    """Importance `(class, dim, time)` min-max normalised over time per (class, dim) (0 for a
    constant profile), unless already within [0, 1] and not `force`."""
    v = imp.values
    if not force and np.nanmin(v) >= 0 and np.nanmax(v) <= 1:
        return imp
    lo, hi = imp.min("time"), imp.max("time")
    span = hi - lo
    return xr.where(span > 0, (imp - lo) / span.where(span > 0), 0.0).where(np.isfinite(imp))


def confusion_percent(confusion: xr.Dataset | pd.DataFrame) -> pd.DataFrame:
    """Row-normalised confusion matrix in %: rows = reference class, columns = predicted class,
    plus an `unassigned` column when some units fell in a cluster no class voted for (so every
    row with reference units sums to 100; a row without any is NaN).

    `confusion`: the Dataset of `slamgeo.jobs.metrics.confusion` (`counts (true, predicted)`,
    optional `unassigned (true)`; one with only `percent` is taken as it is), or a DataFrame of
    counts as `slamgeo parcels` writes it (`confusion_pixels.csv`: index = reference class,
    columns = predicted classes and `unassigned`).
    """
    if isinstance(confusion, xr.Dataset):
        if "counts" in confusion:
            counts = confusion["counts"].transpose("true", "predicted").to_pandas().astype(float)
            if UNASSIGNED in confusion:
                counts[UNASSIGNED] = confusion[UNASSIGNED].values.astype(float)
        elif "percent" in confusion:
            return confusion["percent"].transpose("true", "predicted").to_pandas().astype(float)
        else:
            found = sorted(map(str, confusion.data_vars))
            raise FigureSkipped(f"confusion: expected a 'counts' or 'percent' variable, found {found}")
    elif isinstance(confusion, pd.DataFrame):
        counts = confusion.astype(float)
    else:
        raise FigureSkipped(
            f"confusion: expected an xarray Dataset or a pandas DataFrame, found {type(confusion).__name__}"
        )
    if counts.empty:
        raise FigureSkipped("confusion: the matrix is empty")
    if (counts.to_numpy() < 0).any():
        raise FigureSkipped(
            "confusion: negative counts; expected counts (pixels or parcels), not percentages of errors"
        )
    if UNASSIGNED in counts.columns and not (counts[UNASSIGNED] > 0).any():
        counts = counts.drop(columns=UNASSIGNED)
    rows = counts.sum(axis=1)
    pct = counts.div(rows.where(rows > 0), axis=0) * 100.0
    pct.index = [str(i) for i in pct.index]
    pct.columns = [str(c) for c in pct.columns]
    return pct


__all__ = [
    "as_delayed",
    "SCAN_MAX_BLOCKS",
    "SCAN_MAX_PIXELS",
    "cluster_profiles",
    "cluster_sums",
    "compute_together",
    "confusion_percent",
    "curve_sets",
    "date_score",
    "default_groups",
    "load_curves",
    "most_important_date",
    "normalised_importance",
    "pick_most_important",
    "profiles_from_sums",
    "read_groups",
    "sample_lazy",
    "sample_regions",
    "sample_variables",
    "save_curves",
]
