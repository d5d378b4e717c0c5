"""Where k-Means' CPU goes on a LocalCluster: the driver's share of `cluster_store`.

`slamgeo.jobs.cluster.cluster_store` on a results store holding a `(2, n, n)` float32 embedding of
Gaussian blobs (chunks of 512), on a LocalCluster of 2 worker processes x 1 thread. Per run: the
wall time, the driver's CPU seconds (`getrusage(RUSAGE_SELF)`: this process, which also hosts
the scheduler) and the workers' (`psutil` CPU times asked with `client.run` before and after).
`--root DIR` imports slamgeo from DIR/slamgeo instead (another version of the package, in this
process and in the workers): run it alternately with and without, to compare two versions
under the same load.

    python benchmarks/bench_cluster_driver.py [--sizes 512 1024] [--rounds 3] [--root DIR] [--out NAME]

Writes benchmarks/results/<NAME>.json (bench_cluster_driver by default).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, machine_info, write_result  # noqa: E402


def make_store(path: Path, n: int, *, d: int = 2, k: int = 16, chunk: int = 512, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (k, d))
    e = centres[rng.integers(0, k, (n, n))] + rng.normal(0, 1.2, (n, n, d))
    e = e.transpose(2, 0, 1).astype(np.float32)
    e[:, :16, :16] = np.nan
    emb = xr.DataArray(e, dims=("dim", "y", "x"), coords={"dim": np.arange(d)}, name="embedding")
    ds = emb.chunk({"y": chunk, "x": chunk}).to_dataset()
    ds.attrs["slamgeo_complete"] = True
    ds.to_zarr(path, mode="w", zarr_format=2)
    return str(path)


def use_root(root: str) -> None:
    """Import slamgeo from `root` (ahead of the installed, editable, one)."""
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__name__", repr(f))]
    sys.path.insert(0, root)


def driver_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _own_cpu() -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


def _module_file() -> str:
    return str(getattr(sys.modules.get("slamgeo.jobs.cluster"), "__file__", None))


def workers_cpu(client) -> float:
    return float(sum(client.run(_own_cpu).values()))


def measure(client, fn) -> dict:
    w0, d0, t0 = workers_cpu(client), driver_cpu(), time.perf_counter()
    fit = fn()
    secs, d1 = time.perf_counter() - t0, driver_cpu()
    w1 = workers_cpu(client)
    return {
        "seconds": round(secs, 3),
        "driver_cpu_s": round(d1 - d0, 3),
        "workers_cpu_s": round(w1 - w0, 3),
        "driver_share": round((d1 - d0) / max(d1 - d0 + w1 - w0, 1e-9), 3),
        "n_iter": int(fit.n_iter),
        "inertia": float(fit.inertia),
        "load": load_average(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--root", help="a folder holding another version of the slamgeo package")
    ap.add_argument("--out", default="bench_cluster_driver")
    args = ap.parse_args()
    preload = []
    if args.root:
        use_root(args.root)
        preload = [
            f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import bench_cluster_driver as b; b.use_root({args.root!r})"
        ]

    from distributed import Client, LocalCluster

    from slamgeo.jobs import cluster as kc
    from slamgeo.schema import KMEANS_SAMPLE_SIZE

    out: dict = {
        "machine": machine_info(),
        "k": args.k,
        "sample_size": KMEANS_SAMPLE_SIZE,
        "root": args.root,
        "module": kc.__file__,
        "runs": {},
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, preload=preload) as lc,
        Client(lc),
    ):
        from distributed import get_client

        client = get_client()
        for n in args.sizes:
            store = make_store(Path(tmp) / f"r{n}.zarr", n)
            kc.cluster_store(store, args.k, overwrite=True, seed=0)  # warm-up: imports (sklearn) everywhere
            out["worker_modules"] = sorted(set(client.run(_module_file).values()))
            for r in range(args.rounds):
                rec = measure(client, lambda s=store: kc.cluster_store(s, args.k, overwrite=True, seed=0))
                out["runs"].setdefault(str(n), []).append(rec)
                print(n, r, rec, flush=True)
        summary = {}
        for key, recs in out["runs"].items():
            summary[key] = {
                "best_driver_cpu_s": min(r["driver_cpu_s"] for r in recs),
                "median_driver_cpu_s": float(np.median([r["driver_cpu_s"] for r in recs])),
                "median_workers_cpu_s": float(np.median([r["workers_cpu_s"] for r in recs])),
                "median_seconds": float(np.median([r["seconds"] for r in recs])),
                "median_driver_share": float(np.median([r["driver_share"] for r in recs])),
            }
        out["summary"] = summary
    print(json.dumps(out["summary"], indent=1))
    write_result(args.out, out)


if __name__ == "__main__":
    main()
