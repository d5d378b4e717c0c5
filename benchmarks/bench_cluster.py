"""k-Means and per-parcel aggregation: slamgeo (Dask, out of core) against in-memory baselines.

k-Means on a `(dim, y, x)` embedding of Gaussian blobs: `slamgeo.jobs.cluster.fit_kmeans` against
scikit-learn `KMeans` (k-means++, n_init=1, in memory) and dask-ml `KMeans` started from the
same initial centres (the only init of dask-ml 2025.1 that is both usable and good). Reported:
wall time and the squared inertia, computed here the same way for all three.

Aggregation of `importance (dim, time, y, x)` over a parcel raster: `slamgeo.jobs.parcels.
aggregate_parcels` (flox on Dask) against numpy `bincount` per (dim, time) channel in memory,
and (with --quick) a plain loop over parcels. Reported: wall time and the largest difference.

    python benchmarks/bench_cluster.py [--quick] [--size N] [--k K]

Prints a table and writes benchmarks/results/bench_cluster.json (.quick.json with --quick). Runs on the threaded Dask
scheduler of this process (no cluster), so that the numbers compare compute, not transport.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import dask
import numpy as np
import xarray as xr


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _sq_inertia(x: np.ndarray, centres: np.ndarray, batch: int = 1 << 18) -> float:
    total = 0.0
    for s in range(0, x.shape[0], batch):
        d = ((x[s : s + batch, None, :] - centres[None]) ** 2).sum(-1)
        total += float(d.min(1).sum())
    return total


def bench_kmeans(size: int, k: int, d: int, chunk: int, seed: int = 0) -> dict:
    from dask_ml.cluster import KMeans as DaskKMeans
    from sklearn.cluster import KMeans

    from slamgeo.jobs.cluster import fit_kmeans, kmeans_init, sample_embeddings

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (k, d))
    e = centres[rng.integers(0, k, (size, size))] + rng.normal(0, 1.2, (size, size, d))
    e = e.transpose(2, 0, 1).astype(np.float32)
    emb = xr.DataArray(e, dims=("dim", "y", "x")).chunk({"y": chunk, "x": chunk})
    x = e.reshape(d, -1).T.astype(np.float64)

    ours, t_ours = _timed(lambda: fit_kmeans(emb, k, seed=seed))
    sk, t_sk = _timed(lambda: KMeans(n_clusters=k, random_state=seed, n_init=1).fit(x))
    sample, _ = sample_embeddings(emb, 100_000, seed=seed)
    init = kmeans_init(sample, k, seed=seed)
    xd = emb.data.reshape(d, -1).T.rechunk((chunk * chunk, d))
    dk, t_dk = _timed(lambda: DaskKMeans(n_clusters=k, init=init, max_iter=100, tol=1e-4).fit(xd))
    return {
        "pixels": size * size,
        "dim": d,
        "k": k,
        "chunk": chunk,
        "slamgeo": {"seconds": t_ours, "inertia": ours.inertia, "n_iter": ours.n_iter},
        "sklearn": {"seconds": t_sk, "inertia": _sq_inertia(x, sk.cluster_centers_), "n_iter": int(sk.n_iter_)},
        "dask_ml_same_init": {
            "seconds": t_dk,
            "inertia": _sq_inertia(x, dk.cluster_centers_.astype(np.float64)),
            "n_iter": int(dk.n_iter_),
        },
    }


def bench_aggregate(size: int, t: int, d: int, chunk: int, parcel_px: int, loop: bool, seed: int = 0) -> dict:
    from slamgeo.jobs.parcels import aggregate_parcels

    rng = np.random.default_rng(seed)
    imp = rng.random((d, t, size, size), dtype=np.float32)
    emb = rng.normal(size=(d, size, size)).astype(np.float32)
    # square parcels of parcel_px pixels a side, ids 1.., a quarter of the grid without parcel
    side = size // parcel_px
    pid = (np.arange(size)[:, None] // parcel_px) * side + np.arange(size)[None, :] // parcel_px + 1
    pid = np.where(rng.random((size, size)) < 0.25, 0, pid).astype(np.int32)
    ids = np.arange(1, side * side + 1)
    results = xr.Dataset(
        {"importance": (("dim", "time", "y", "x"), imp), "embedding": (("dim", "y", "x"), emb)},
        coords={"dim": np.arange(d), "time": np.arange(t)},
    ).chunk({"y": chunk, "x": chunk})
    parcel_id = xr.DataArray(pid, dims=("y", "x")).chunk({"y": chunk, "x": chunk})

    agg, t_flox = _timed(lambda: aggregate_parcels(results, None, parcel_id, ids))

    def numpy_bincount():
        flat = pid.ravel()
        n = np.bincount(flat, minlength=ids.max() + 1)[ids]
        chan = imp.reshape(d * t, -1)
        sums = np.stack([np.bincount(flat, weights=c, minlength=ids.max() + 1)[ids] for c in chan])
        return (sums / n).T.reshape(ids.size, d, t)

    ref, t_np = _timed(numpy_bincount)
    out = {
        "pixels": size * size,
        "dim": d,
        "time": t,
        "parcels": int(ids.size),
        "chunk": chunk,
        "importance_MB": imp.nbytes / 1e6,
        "slamgeo_flox": {"seconds": t_flox},
        "numpy_bincount": {"seconds": t_np, "max_abs_diff": float(np.nanmax(np.abs(agg["importance"].values - ref)))},
    }
    if loop:

        def numpy_loop():
            return np.stack([imp[:, :, pid == i].mean(-1) for i in ids])

        ref2, t_loop = _timed(numpy_loop)
        out["numpy_loop"] = {
            "seconds": t_loop,
            "max_abs_diff": float(np.nanmax(np.abs(agg["importance"].values - ref2))),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds), with the parcel loop baseline")
    ap.add_argument("--size", type=int, default=None, help="grid side in pixels (default 1024, quick 256)")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--out", default=None, help="JSON path (default results/bench_cluster[.quick].json)")
    args = ap.parse_args()
    name = "bench_cluster.quick.json" if args.quick else "bench_cluster.json"
    args.out = args.out or str(Path(__file__).parent / "results" / name)
    size = args.size or (256 if args.quick else 1024)
    dask.config.set(scheduler="threads")
    km = bench_kmeans(size, args.k, d=2, chunk=min(256, size))
    ag = bench_aggregate(
        size if args.quick else min(size, 768), t=31, d=2, chunk=min(256, size), parcel_px=16, loop=args.quick
    )
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "quick": args.quick,
        "kmeans": km,
        "aggregate": ag,
    }
    print(f"k-Means, {km['pixels']} pixels, D={km['dim']}, k={km['k']}:")
    for name in ("slamgeo", "sklearn", "dask_ml_same_init"):
        r = km[name]
        print(
            f"  {name:18s} {r['seconds']:8.2f} s  inertia {r['inertia']:.6g}  "
            f"({r['inertia'] / km['sklearn']['inertia']:.4f} x sklearn)  iterations {r['n_iter']}"
        )
    print(f"aggregation, {ag['pixels']} pixels, importance {ag['importance_MB']:.0f} MB, {ag['parcels']} parcels:")
    for name in ("slamgeo_flox", "numpy_bincount", "numpy_loop"):
        if name in ag:
            r = ag[name]
            diff = f"  max |diff| {r['max_abs_diff']:.2e}" if "max_abs_diff" in r else ""
            print(f"  {name:18s} {r['seconds']:8.2f} s{diff}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
