"""Class-pair explanations: which dates separate (or confuse) two classes.

For classes A and B with mean embeddings m_A and m_B, the direction w = m_B - m_A is the line
from one class to the other in the embedding space. Grad-SLAM with the gradient target e . w
(`slamgeo.method.gradslam.grad_slam(target=w)`; Eq. 3-4 are linear in the target, so its raw
maps are exactly sum_d w_d L^d) says which dates move a pixel along that line: the dates that
tell the two classes apart, for the model. Cluster centres give the same for two clusters.

- `confused_pairs`: the most confused class pairs of a confusion table;
- `nearest_centre_pairs`, `cluster_labels`: the same for clusters, when there are no labels;
- `check_pairs`: pairs a user names, checked against the known classes;
- `pair_importance`: the contrastive importance of each pair on a bounded sample of the two
  classes' pixels, averaged per class and date: `pair_importance (pair, time)` (mean
  |importance| over both classes' pixels), `pair_importance_class (pair, member, time)`,
  `pair_direction (pair, dim)`, with the class names as coordinates `pair_a`, `pair_b`;
- `pairs`, the stage: which pairs (the most confused of the parcels' confusion table and the
  ones asked for; without labels, the nearest k-Means centres), the pixels' classes (the
  parcels rasterised on the results' grid), and their `pair_importance`, added to the results;
  `pairs_store`, its twin, appends the same variables to a results store.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import torch
import xarray as xr

from slamgeo.errors import InputError
from slamgeo.io.parcels import read_parcels
from slamgeo.io.series import fill_gaps, valid_mask
from slamgeo.jobs.faithfulness import run_scaling, submit_with_model
from slamgeo.jobs.parcels import ParcelsResult, read_parcels_outputs
from slamgeo.jobs.rasterize import rasterize_parcels
from slamgeo.method.checkpoint import TrainedModel
from slamgeo.method.gradslam import grad_slam
from slamgeo.schema import CLASS_COLUMN, CONFUSED_PAIRS, GRADSLAM_SCALE, ID_COLUMN, UNASSIGNED, Scale

PAIR = "pair"
MEMBER = "member"
# what `pair_importance` gives, and the coordinates only they use
PAIR_VARIABLES = ("pair_importance", "pair_importance_class", "pair_direction", "pair_pixels")
PAIR_COORDS = (PAIR, MEMBER, "pair_a", "pair_b")


def confused_pairs(confusion: pd.DataFrame, n: int = CONFUSED_PAIRS) -> list[tuple[str, str]]:
    """The `n` most confused class pairs of a confusion table (rows: reference class, columns:
    the class voted for its pixels or parcels, counts; an `unassigned` column is ignored).

    Each row is turned into shares of its total; the largest off-diagonal shares (class a
    going to class b) come first, each unordered pair once, ties broken by the names. A pair
    is returned as (reference class, the class it goes to)."""
    if n <= 0:
        return []
    counts = confusion.drop(columns=[UNASSIGNED], errors="ignore")
    totals = counts.sum(axis=1).to_numpy(dtype=float)
    rows = []
    for i, a in enumerate(counts.index):
        if totals[i] <= 0:
            continue
        for b in counts.columns:
            share = float(counts.loc[a, b]) / totals[i]
            if str(a) != str(b) and share > 0:
                rows.append((-share, str(a), str(b)))
    out: list[tuple[str, str]] = []
    seen: set[frozenset[str]] = set()
    for _, a, b in sorted(rows):
        key = frozenset((a, b))
        if key not in seen:
            seen.add(key)
            out.append((a, b))
        if len(out) == n:
            break
    return out


def nearest_centre_pairs(centres: np.ndarray, n: int = 3) -> list[tuple[str, str]]:
    """The `n` pairs of k-Means centres `(k, D)` closest to each other (the clusters a pixel
    hesitates between), as cluster names "cluster i" (`cluster_labels`), closest first."""
    c = np.asarray(centres, dtype=np.float64)
    d = np.linalg.norm(c[:, None, :] - c[None, :, :], axis=-1)
    i, j = np.triu_indices(len(c), k=1)
    order = np.lexsort((j, i, d[i, j]))[:n]
    return [(f"cluster {i[o]}", f"cluster {j[o]}") for o in order]


def class_codes(names: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Per-pixel class names -> (the classes, int16 codes into them; -1 where "" or "nan")."""
    uniq, inverse = np.unique(np.asarray(names).astype(str), return_inverse=True)
    classes = [str(u) for u in uniq]
    lut = np.array([-1 if c in ("", "nan") else i for i, c in enumerate(classes)], dtype=np.int16)
    return classes, lut[inverse].reshape(np.shape(names))


def cluster_labels(cluster: xr.DataArray) -> xr.DataArray:
    """The cluster map `(*S)` as names "cluster i" ("" where there is no cluster, -1)."""
    values = np.asarray(cluster.values)
    names = np.where(values >= 0, np.char.add("cluster ", values.astype(str)), "")
    return xr.DataArray(names, dims=cluster.dims)


def check_pairs(pairs: Sequence[Sequence[str]], classes: Sequence[str]) -> list[tuple[str, str]]:
    """`pairs` as (a, b) tuples of known class names; an `InputError` names what is wrong (not
    two names, an unknown class with the known ones listed, a class paired with itself)."""
    known = [str(c) for c in classes]
    out = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, str) or len(pair) != 2:
            raise InputError(f"pairs[{i}]: expected two class names, found {pair!r}")
        a, b = (str(c) for c in pair)
        for c in (a, b):
            if c not in known:
                raise InputError(f"pairs[{i}]: unknown class {c!r}; the classes are {sorted(known)}")
        if a == b:
            raise InputError(f"pairs[{i}]: {a!r} paired with itself; a pair needs two different classes")
        out.append((a, b))
    return out


def _series(cube: xr.Dataset, bands: Sequence[str], flat: np.ndarray, sdims: tuple[str, ...]) -> np.ndarray:
    """`(N, C, T)` dB series of the pixels at flat indices `flat` of the spatial grid: only those
    pixels come here (a lazy cube is indexed point-wise, `vindex`, every band in one compute)."""
    shape = tuple(cube.sizes[d] for d in sdims)
    idx = np.unravel_index(flat, shape)
    sel = {d: xr.DataArray(i, dims="pixel") for d, i in zip(sdims, idx)}
    parts = dask.compute(*[cube[b].isel(sel).transpose("pixel", "time").data for b in bands])
    return np.stack(parts, axis=1).astype(np.float32)


def _unique_names(block: np.ndarray) -> set[str]:
    return {str(u) for u in np.unique(np.asarray(block).astype(str))}


def _names_to_codes(block: np.ndarray, classes: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return lut[np.searchsorted(classes, np.asarray(block).astype(str))]


def label_codes(labels: xr.DataArray, classes: Sequence[str] | None = None) -> tuple[list[str], np.ndarray | da.Array]:
    """The classes and the int16 codes `(*S)` into them (-1: none) of per-pixel `labels`: class
    names ("" or "nan": none; the classes sorted, as `class_codes`), or codes into `classes` when
    given. Lazy labels stay lazy: their names are gathered block by block, only the distinct
    ones coming here, and the codes are looked up block by block."""
    if classes is not None:
        return [str(c) for c in classes], labels.data
    if not isinstance(labels.data, da.Array):
        return class_codes(np.asarray(labels.values))
    names = dask.compute(*[dask.delayed(_unique_names)(b) for b in labels.data.to_delayed().ravel()])
    known = sorted(set().union(*names))
    lut = np.array([-1 if c in ("", "nan") else i for i, c in enumerate(known)], dtype=np.int16)
    return known, da.map_blocks(_names_to_codes, labels.data, np.array(known), lut, dtype=np.int16)


def _member_block(emb: np.ndarray, codes: np.ndarray, n: int) -> np.ndarray:
    """A block's class codes `(*s)` int16 where the embedding `(D, *s)` is finite in every dim and
    the code `(1, *s)` is one of the `n` classes, else -1."""
    c = codes[0].astype(np.int64)
    ok = np.isfinite(emb).all(axis=0) & (c >= 0) & (c < n)
    return np.where(ok, c, -1).astype(np.int16)


def _class_sums(emb: np.ndarray, member: np.ndarray, n: int) -> np.ndarray:
    """A block's sums of the embedding `(D, *s)` over the pixels of each class (`member`, -1:
    none) and their counts: `(n, D + 1)` float64, the counts last."""
    m = member.ravel()
    ok = m >= 0
    X = emb.reshape(emb.shape[0], -1)[:, ok].astype(np.float64)
    out = np.empty((n, emb.shape[0] + 1))
    for d in range(emb.shape[0]):
        out[:, d] = np.bincount(m[ok], weights=X[d], minlength=n)
    out[:, -1] = np.bincount(m[ok], minlength=n)
    return out


def _band_members(band: np.ndarray, start: int, wanted: list[tuple[int, np.ndarray]]) -> list[np.ndarray]:
    """Flat indices (from `start`, the band's first pixel) of the members of given ranks of a
    class within a band of whole rows of member codes: per (class, sorted ranks) of `wanted`."""
    flat = band.ravel()
    return [start + np.flatnonzero(flat == c)[ranks] for c, ranks in wanted]


def _class_pixels(
    embedding: xr.DataArray, codes: np.ndarray | da.Array, n: int, sdims: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, Any, list[int]]:
    """Per class of the `n`: the mean embedding `(n, D)` float64 of its pixels whose embedding
    is finite (NaN for a class without one), per band of whole rows (C order) its count of
    those pixels `(bands, n)` int64, the bands of member codes (`_member_block`, a Dask array
    chunked in bands along the first spatial dim; kept on the workers under a distributed
    client) and each band's first flat index. The embedding is read once, block by block; only
    the per-block sums and counts come here."""
    from slamgeo.jobs.runtime import current_client

    emb = embedding.transpose("dim", *sdims).data
    emb = (emb if isinstance(emb, da.Array) else da.from_array(np.asarray(emb))).rechunk({0: -1})
    codes = codes if isinstance(codes, da.Array) else da.from_array(np.asarray(codes), chunks=emb.chunks[1:])
    codes = codes.rechunk(emb.chunks[1:])
    member = da.map_blocks(_member_block, emb, codes[None], n, drop_axis=0, dtype=np.int16)
    bands = member.rechunk({a: -1 for a in range(1, member.ndim)})
    parts = [
        dask.delayed(_class_sums)(e, m, n)
        for e, m in zip(emb.to_delayed().ravel(), member.to_delayed().ravel(), strict=True)
    ]
    if current_client() is not None:  # the member codes stay on the workers for the draw
        bands, *parts = dask.persist(bands, *parts)
    grid = member.numblocks
    sums = np.stack(dask.compute(*parts)).reshape(*grid, n, -1)
    per_band = sums.sum(axis=tuple(range(1, len(grid))))  # (bands, n, D + 1)
    totals = per_band.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = totals[:, :-1] / totals[:, -1:]
    row = int(np.prod(member.shape[1:]))
    starts = [int(o) * row for o in np.concatenate([[0], np.cumsum(member.chunks[0])[:-1]])]
    return means, per_band[:, :, -1].astype(np.int64), bands, starts


def _draw_pixels(
    ranks: list[tuple[int, np.ndarray]], band_counts: np.ndarray, bands: Any, starts: list[int]
) -> list[np.ndarray]:
    """The flat indices of the members of given ranks (C order) of classes, per (class, sorted
    ranks) of `ranks`: each band finds those of its own ranks, one task per band."""
    offsets = np.concatenate([np.zeros((1, band_counts.shape[1]), np.int64), np.cumsum(band_counts, axis=0)])
    wanted: dict[int, list[tuple[int, int, np.ndarray]]] = {}
    for i, (c, r) in enumerate(ranks):
        where = np.searchsorted(offsets[1:, c], r, side="right")
        for b in np.unique(where):
            wanted.setdefault(int(b), []).append((i, c, r[where == b] - offsets[b, c]))
    blocks = bands.to_delayed().ravel()
    order = sorted(wanted)
    found = dask.compute(
        *[dask.delayed(_band_members)(blocks[b], starts[b], [(c, r) for _, c, r in wanted[b]]) for b in order]
    )
    out: list[list[np.ndarray]] = [[] for _ in ranks]
    for b, got in zip(order, found, strict=True):  # bands in order: indices ascending
        for (i, _, _), idx in zip(wanted[b], got, strict=True):
            out[i].append(idx)
    return [np.concatenate(o) if o else np.empty(0, np.int64) for o in out]


def pair_profile(
    model: TrainedModel,
    x: np.ndarray,
    which: np.ndarray,
    w: np.ndarray,
    scale: Scale,
    reference: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contrastive Grad-SLAM of one pair on its drawn pixels: x `(N, C, T)` dB series (bands in
    the model's order, gaps filled here when the model fills them; series with no data left
    out), which `(N,)` the member of each (0: a, 1: b), w `(D,)` the direction, reference
    `(D, T)` float32 or None. Returns the mean importance per member and date `(2, T)` float32
    (NaN for a member without a pixel), the mean |importance| over both `(T,)` and the pixels
    explained per member `(2,)`. A pure function of its arguments: `pair_importance`'s task on
    a cluster, its call in-process otherwise."""
    if model.gap_fill:
        x = fill_gaps(x)
    keep = valid_mask(x)
    x, which = x[keep], which[keep]
    imp = grad_slam(
        model.model.encoder,
        torch.from_numpy(model.standardise(x)),
        scale=scale,
        reference=None if reference is None else torch.as_tensor(reference),
        target=torch.as_tensor(w, dtype=torch.float32),
    )
    assert isinstance(imp, torch.Tensor)
    values = imp.numpy()
    per_class = np.full((2, x.shape[-1]), np.nan, np.float32)
    # the mean per class and date (flox, through xarray's groupby)
    da = xr.DataArray(values, dims=("pixel", "time"), coords={"member": ("pixel", which)})
    means = da.groupby("member").mean()
    for m in means["member"].values:
        per_class[int(m)] = means.sel(member=m).values
    counts = np.array([int((which == 0).sum()), int((which == 1).sum())], np.int64)
    both = np.abs(values).mean(axis=0) if values.size else np.full(x.shape[-1], np.nan, np.float32)
    return per_class, both, counts


def pair_importance(
    model: TrainedModel,
    cube: xr.Dataset,
    embedding: xr.DataArray,
    labels: xr.DataArray,
    pairs: Sequence[tuple[str, str]],
    *,
    scale: Scale = GRADSLAM_SCALE,
    reference: np.ndarray | None = None,
    max_pixels: int = 5000,
    seed: int = 0,
    classes: Sequence[str] | None = None,
) -> xr.Dataset:
    """Contrastive Grad-SLAM importance of each class pair, per class and date.

    model: the trained model of the results; cube: its cube (dB, the model's dates);
    embedding: `(dim, *S)`; labels: the class name of every pixel `(*S)` ("" or NaN: none);
    pairs: (a, b) class names (`check_pairs`). For each pair, w = mean embedding of b's valid
    pixels - that of a's; at most `max_pixels` pixels of each class (drawn with `seed`) are
    explained with target e . w at `scale` ("centred" subtracts `reference` `(D, T)` projected
    on w). Returns `pair_importance (pair, time)`, the mean of |importance| over both classes'
    pixels (the two classes sit on either side of the scene's reference, so their signed maps
    cancel in the dates that separate them: the magnitude is what says how much a date
    separates them), `pair_importance_class (pair, member, time)` (signed, member "a", "b"),
    `pair_direction (pair, dim)` and `pair_pixels (pair, member)`, coordinates `pair_a`,
    `pair_b`, `time`.

    With `classes`, `labels` holds integer codes into `classes` (-1: none) instead of names: 2
    bytes a pixel where names take tens (`class_codes`), for large grids. Lazy embeddings and
    labels stay lazy (`label_codes`): the class means are a reduction over blocks (float64), and
    the pixels are drawn by rank within their class, each band of rows finding its own, so that
    this process holds per-class sums and the drawn pixels, never a per-pixel array.

    With a distributed client active (`slamgeo.jobs.runtime.current_client`), each pair's
    Grad-SLAM runs on a worker (`pair_profile`, the model broadcast once): the driver holds
    the drawn pixels and the profiles.
    """
    from slamgeo.jobs.runtime import current_client

    sdims = tuple(str(d) for d in embedding.dims[1:])
    if tuple(labels.dims) != sdims:
        raise InputError(f"labels must have the embedding's spatial dims {sdims}, found {tuple(labels.dims)}")
    classes, codes = label_codes(labels, classes)
    means, band_counts, bands, starts = _class_pixels(embedding, codes, len(classes), sdims)
    counts_of = band_counts.sum(axis=0)
    present = {classes[i] for i in np.flatnonzero(counts_of)}
    pairs = check_pairs(pairs, sorted(present - {"", "nan"}))
    code_of = {c: i for i, c in enumerate(classes)}
    if not pairs:
        raise InputError("pair_importance: no pair to explain")
    directions = np.zeros((len(pairs), means.shape[1]))
    for p, (a, b) in enumerate(pairs):
        directions[p] = means[code_of[b]] - means[code_of[a]]
        if not np.any(directions[p]):
            raise InputError(f"pair ({a!r}, {b!r}): the two classes have the same mean embedding; no direction")
    # the draw of `rng.choice(members, ...)`, as ranks among the members (numpy's choice from an
    # array takes its elements at the ranks `choice(len(array))` gives: the same pixels)
    rng = np.random.default_rng(seed)
    ranks = []
    for a, b in pairs:
        for c in (code_of[a], code_of[b]):
            n = int(counts_of[c])
            ranks.append((c, np.sort(rng.choice(n, size=min(max_pixels, n), replace=False))))
    drawn = _draw_pixels(ranks, band_counts, bands, starts)
    ref = None if reference is None else np.asarray(reference, dtype=np.float32)
    n_times = cube.sizes["time"]
    per_class = np.full((len(pairs), 2, n_times), np.nan, np.float32)
    both = np.full((len(pairs), n_times), np.nan, np.float32)
    counts = np.zeros((len(pairs), 2), np.int64)
    client = current_client()
    model_ref = None if client is None else client.scatter(model, broadcast=True, hash=False)
    done: list[Any] = []  # profiles, or futures of them
    for p in range(len(pairs)):
        pixels = drawn[2 * p : 2 * p + 2]
        x = _series(cube, model.bands, np.concatenate(pixels), sdims)
        which = np.repeat([0, 1], [d.size for d in pixels])
        args = (x, which, directions[p], scale, ref)
        if client is None:
            done.append(pair_profile(model, *args))
        else:  # on a worker; the next pair's pixels are read meanwhile
            done.append(submit_with_model(client, model_ref, pair_profile, *args))
    for p, part in enumerate(done):
        per_class[p], both[p], counts[p] = part if client is None else part.result()
    coords = {
        PAIR: np.arange(len(pairs)),
        "pair_a": (PAIR, [a for a, _ in pairs]),
        "pair_b": (PAIR, [b for _, b in pairs]),
        MEMBER: ["a", "b"],
        "time": cube["time"].values,
    }
    return xr.Dataset(
        {
            "pair_importance": (
                (PAIR, "time"),
                both,
                {"long_name": "mean |contrastive Grad-SLAM importance|, both classes", "scale": scale},
            ),
            "pair_importance_class": (
                (PAIR, MEMBER, "time"),
                per_class,
                {"long_name": "contrastive Grad-SLAM importance, mean per class"},
            ),
            "pair_direction": ((PAIR, "dim"), directions, {"long_name": "mean embedding of b minus that of a"}),
            "pair_pixels": ((PAIR, MEMBER), counts, {"long_name": "pixels explained per class"}),
        },
        coords=coords,
    )


def window_accuracy(importance: np.ndarray, times: np.ndarray, windows: Sequence[tuple[str, str]]) -> dict:
    """How well an importance profile `(T,)` points at known dates (the union of `windows`,
    inclusive (start, end) dates): the share of |importance| inside them divided by their share
    of the dates (1 = no better than flat), and the AUROC of |importance| as a score of the
    dates inside (`sklearn.metrics.roc_auc_score`; NaN when every date is inside or none)."""
    from sklearn.metrics import roc_auc_score

    t = np.asarray(times).astype("datetime64[D]")
    inside = np.zeros(t.shape, bool)
    for start, end in windows:
        inside |= (t >= np.datetime64(start, "D")) & (t <= np.datetime64(end, "D"))
    weight = np.abs(np.nan_to_num(np.asarray(importance, dtype=np.float64)))
    if not inside.any() or inside.all() or weight.sum() == 0:
        return {"share_ratio": float("nan"), "auroc": float("nan"), "dates_inside": int(inside.sum())}
    share = weight[inside].sum() / weight.sum()
    return {
        "share_ratio": float(share / inside.mean()),
        "auroc": float(roc_auc_score(inside, weight)),
        "dates_inside": int(inside.sum()),
    }


def separating_dates(importance: np.ndarray, times: np.ndarray, n: int = 3) -> list[str]:
    """The `n` dates of largest |importance| `(T,)`, in date order, as YYYY-MM-DD."""
    top = np.sort(np.argsort(-np.abs(np.nan_to_num(importance)), kind="stable")[:n])
    return [str(t)[:10] for t in np.asarray(times)[top]]


# --------------------------------------------------------------------------- the stage


def choose_pairs(
    confusion: pd.DataFrame | None,
    classes: Sequence[str],
    pairs: Sequence[Sequence[str]] | None = None,
    confused: int = CONFUSED_PAIRS,
) -> list[tuple[str, str]]:
    """The `confused` most confused pairs of `confusion` (`confused_pairs`; none without a
    table), then those of `pairs` (checked against `classes`, `check_pairs`) not among them."""
    chosen = confused_pairs(confusion, confused) if confusion is not None else []
    for a, b in check_pairs(pairs or [], classes):
        if {a, b} not in [set(p) for p in chosen]:
            chosen.append((a, b))
    return chosen


def parcel_class_codes(
    polygons: gpd.GeoDataFrame,
    like: xr.Dataset,
    *,
    id_column: str = ID_COLUMN,
    class_column: str = CLASS_COLUMN,
    all_touched: bool = False,
) -> tuple[xr.DataArray, list[str]]:
    """The class of every pixel of `like`'s grid `(y, x)` as int16 codes into the returned class
    names (-1: no parcel or no class), from `polygons` rasterised on it (`rasterize_parcels`),
    lazy and chunked as the rasterisation is: two bytes a pixel, where names take tens, and
    nothing held in this process until computed. The classes are the parcels'
    class values as text, sorted, without "" and "nan"."""
    ids = rasterize_parcels(polygons, like, all_touched=all_touched, id_column=id_column)
    lut = dict(zip(polygons[id_column].to_numpy().tolist(), polygons[class_column].astype(str)))
    classes = sorted(set(lut.values()) - {"", "nan"})
    code_of = {name: i for i, name in enumerate(classes)}
    keys = np.array(sorted(int(k) for k in lut), dtype=np.int64)
    table = np.array([code_of.get(lut[int(k)], -1) for k in keys], dtype=np.int16)

    def lookup(pid: np.ndarray) -> np.ndarray:  # parcel ids -> class codes, block by block
        if keys.size == 0:
            return np.full(pid.shape, -1, dtype=np.int16)
        i = np.clip(np.searchsorted(keys, pid), 0, keys.size - 1)
        return np.where(keys[i] == pid, table[i], np.int16(-1)).astype(np.int16)

    codes = xr.apply_ufunc(lookup, ids, dask="parallelized", output_dtypes=[np.int16])
    return xr.DataArray(codes.data, dims=ids.dims), classes  # lazy where the rasterisation is


def _parcels_parts(parcels: ParcelsResult | str | Path) -> tuple[dict, dict]:
    """The parcels stage's pieces (`ParcelsResult.parts`) and its settings (`metrics`)."""
    parts = parcels.parts() if isinstance(parcels, ParcelsResult) else read_parcels_outputs(parcels)[0]
    return parts, parts.get("metrics") or {}


def _pair_variables(
    results: xr.Dataset,
    parcels_or_classes: ParcelsResult | str | Path | xr.DataArray | None,
    pairs: Sequence[Sequence[str]] | None,
    confused: int,
    *,
    cube: xr.Dataset,
    model: TrainedModel,
    polygons: gpd.GeoDataFrame | str | Path | None,
    id_column: str | None,
    class_column: str | None,
    all_touched: bool | None,
    max_pixels: int,
    seed: int,
) -> xr.Dataset | None:
    """`pair_importance` of the chosen pairs (see `pairs`), or None when there is none."""
    if "embedding" not in results:
        raise InputError(f"results: no 'embedding' variable; found {sorted(map(str, results.data_vars))}")
    if not {"y", "x"} <= set(results["embedding"].dims) or confused + len(pairs or []) == 0:
        return None
    classes: list[str] | None
    if parcels_or_classes is None:  # the nearest k-Means centres, "cluster i"
        if "cluster_centre" not in results or "cluster" not in results:
            return None
        k = results["cluster_centre"].shape[0]
        classes = [f"cluster {i}" for i in range(k)]
        chosen = nearest_centre_pairs(results["cluster_centre"].values, confused)
        chosen += [p for p in check_pairs(pairs or [], classes) if set(p) not in [set(q) for q in chosen]]
        if not chosen:
            return None
        cl = results["cluster"]
        labels = xr.DataArray(cl.data.astype(np.int16), dims=cl.dims)  # -1: none; lazy where the store is
    elif isinstance(parcels_or_classes, xr.DataArray):  # the class name of every pixel
        classes, codes = label_codes(parcels_or_classes)
        labels = xr.DataArray(codes, dims=parcels_or_classes.dims)
        chosen = check_pairs(pairs or [], sorted(set(classes) - {"", "nan"}))
        if not chosen:
            return None
    else:
        parts, settings = _parcels_parts(parcels_or_classes)
        profiled = [str(v) for v in parts["profiles"]["class"].values] if "profiles" in parts else []
        chosen = choose_pairs(parts.get("confusion_pixels"), profiled, pairs, confused)
        if not chosen:
            return None
        id_column = id_column or settings.get("id_column", ID_COLUMN)
        class_column = class_column or settings.get("class_column", CLASS_COLUMN)
        all_touched = bool(settings.get("all_touched", False)) if all_touched is None else all_touched
        if polygons is None:
            table = parcels_or_classes.table if isinstance(parcels_or_classes, ParcelsResult) else None
            polygons = table if isinstance(table, gpd.GeoDataFrame) else settings.get("parcels_path")
        if polygons is None:
            raise InputError("pairs: the parcels' polygons are needed to label the pixels; pass polygons=")
        gdf = (
            polygons
            if isinstance(polygons, gpd.GeoDataFrame)
            else read_parcels(polygons, id_column=id_column, class_column=class_column, crs=results.rio.crs)
        )
        labels, classes = parcel_class_codes(
            gdf, results, id_column=id_column, class_column=class_column, all_touched=all_touched
        )
    scale, reference = run_scaling(results, model, cube)
    return pair_importance(
        model,
        cube,
        results["embedding"],
        labels,
        chosen,
        scale=scale,
        reference=reference,
        max_pixels=max_pixels,
        seed=seed,
        classes=classes,
    )


def pairs(
    results: xr.Dataset,
    parcels_or_classes: ParcelsResult | str | Path | xr.DataArray | None = None,
    pairs: Sequence[Sequence[str]] | None = None,
    confused: int = CONFUSED_PAIRS,
    *,
    cube: xr.Dataset,
    model: TrainedModel,
    polygons: gpd.GeoDataFrame | str | Path | None = None,
    id_column: str | None = None,
    class_column: str | None = None,
    all_touched: bool | None = None,
    max_pixels: int = 5000,
    seed: int = 0,
) -> xr.Dataset:
    """`results` plus the contrastive importance of class pairs (`pair_importance`'s
    `PAIR_VARIABLES`, replacing any there): which dates tell two classes apart, for the model.

    results: gridded results `(y, x)` of `cube` by `model` (`embedding`; `cluster` and
    `cluster_centre` for cluster pairs); sample-form results are given back as they are.
    `parcels_or_classes`:
    - the parcels stage's result (`ParcelsResult`) or its output folder: the `confused` most
      confused classes of its pixel confusion table, then the class `pairs` asked for; the
      pixels are labelled by the parcels rasterised on the results' grid (`parcel_class_codes`):
      `polygons` (a GeoDataFrame or a parcels file), by default the result's table or the file
      the folder's `metrics.json` names, with its `id_column`, `class_column`, `all_touched`;
    - a DataArray of class names `(y, x)` ("" or "nan": none): the `pairs` asked for;
    - None: the `confused` pairs of nearest k-Means centres ("cluster i"), then the `pairs`
      asked for among them.
    With no pair (none asked for, none confused), `results` come back as they are. Grad-SLAM
    runs at the run's scaling and reference map (`slamgeo.jobs.faithfulness.run_scaling`) on at
    most `max_pixels` pixels of each class, drawn with `seed`."""
    new = _pair_variables(
        results,
        parcels_or_classes,
        pairs,
        confused,
        cube=cube,
        model=model,
        polygons=polygons,
        id_column=id_column,
        class_column=class_column,
        all_touched=all_touched,
        max_pixels=max_pixels,
        seed=seed,
    )
    if new is None:
        return results
    old = [v for v in (*PAIR_VARIABLES, *PAIR_COORDS) if v in results.variables]
    return results.drop_vars(old).assign({v: new[v] for v in new.data_vars})


def pairs_store(
    results: str | Path,
    parcels: str | Path | None,
    *,
    cube: str | Path,
    model: str | Path,
    pairs: Sequence[Sequence[str]] | None = None,
    confused: int = CONFUSED_PAIRS,
    **options,
) -> list[tuple[str, str]]:
    """`pairs` on a results store (a path or a URL), its cube store and model folder, with the
    parcels stage's output folder `parcels` (None: cluster pairs); the pair variables
    (`PAIR_VARIABLES`) are written into the store (`slamgeo.jobs.cluster.append_variables`,
    replacing those there). `options`: those of `pairs` (`polygons`, `id_column`, ...).
    Returns the pairs explained, (a, b) class names; with none, the store is left as it was."""
    from slamgeo.io.cube import open_cube, open_results
    from slamgeo.jobs.cluster import append_variables
    from slamgeo.method.checkpoint import load_model

    ds = open_results(results)
    new = _pair_variables(
        ds,
        parcels,
        pairs,
        confused,
        cube=open_cube(str(cube)),
        model=load_model(model),
        polygons=options.pop("polygons", None),
        id_column=options.pop("id_column", None),
        class_column=options.pop("class_column", None),
        all_touched=options.pop("all_touched", None),
        max_pixels=options.pop("max_pixels", 5000),
        seed=options.pop("seed", 0),
    )
    if options:
        raise InputError(f"pairs_store: unknown option(s) {sorted(options)}")
    if new is None:
        return []
    append_variables(str(results), new, overwrite=True)
    return list(zip(map(str, new["pair_a"].values), map(str, new["pair_b"].values)))


__all__ = [
    "MEMBER",
    "PAIR",
    "PAIR_COORDS",
    "PAIR_VARIABLES",
    "check_pairs",
    "choose_pairs",
    "class_codes",
    "cluster_labels",
    "confused_pairs",
    "label_codes",
    "nearest_centre_pairs",
    "pair_importance",
    "pair_profile",
    "pairs",
    "pairs_store",
    "parcel_class_codes",
    "separating_dates",
    "window_accuracy",
]
