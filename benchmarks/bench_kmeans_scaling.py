"""k-Means with 1 and with 2 workers: which part divides and which does not.

`slamgeo.jobs.cluster.fit_kmeans` on a `(2, n, n)` float32 embedding of Gaussian blobs (chunks
of 512, `bench_cluster_driver.make_store`), persisted on a LocalCluster of 1, then 2, worker
processes x 1 thread. Per run: the wall time, the Lloyd passes (`_lloyd_pass`, timed in this
process: one round trip each) and the rest (the sample drawn and the seeding task, which runs
scikit-learn on one thread so that the centres are the same to the bit anywhere). Best of
`--rounds` per configuration.

    python benchmarks/bench_kmeans_scaling.py [--size 1024] [--rounds 3]

Writes benchmarks/results/bench_kmeans_scaling.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, machine_info, write_result  # noqa: E402
from bench_cluster_driver import make_store  # noqa: E402


def one_config(store: str, workers: int, rounds: int, k: int) -> dict:
    """Best-of-`rounds` wall time of `fit_kmeans` with `workers` workers, and its parts."""
    import xarray as xr
    from distributed import Client, LocalCluster, wait

    import slamgeo.jobs.cluster as kmeans

    passes: list[float] = []
    original = kmeans._lloyd_pass

    def timed_pass(*args, **kwargs):
        t0 = time.perf_counter()
        out = original(*args, **kwargs)
        passes.append(time.perf_counter() - t0)
        return out

    runs = []
    kmeans._lloyd_pass = timed_pass  # a benchmark's probe: the library is not changed
    try:
        with (
            LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            emb = xr.open_zarr(store)["embedding"].persist()
            wait(emb.data)
            client.run(lambda: __import__("sklearn.cluster"))  # the first import is not k-Means' cost
            for _ in range(rounds):
                passes.clear()
                load = load_average()
                t0 = time.perf_counter()
                fit = kmeans.fit_kmeans(emb, k)
                wall = time.perf_counter() - t0
                runs.append(
                    {
                        "wall_s": round(wall, 3),
                        "passes": len(passes),
                        "n_iter": fit.n_iter,
                        "passes_s": round(sum(passes), 3),
                        "seconds_per_pass": round(float(np.mean(passes)), 4),
                        "rest_s": round(wall - sum(passes), 3),
                        "load": load,
                    }
                )
                print(f"{workers} worker(s): {runs[-1]}", flush=True)
    finally:
        kmeans._lloyd_pass = original
    best = min(runs, key=lambda r: r["wall_s"])
    return {"workers": workers, "best": best, "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024, help="embedding side, pixels")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="slamgeo-kmeans-") as tmp:
        store = make_store(Path(tmp) / "results.zarr", args.size)
        configs = [one_config(store, w, args.rounds, args.k) for w in (1, 2)]
    one, two = configs[0]["best"], configs[1]["best"]
    result = {
        "benchmark": "bench_kmeans_scaling",
        "settings": vars(args) | {"out": str(args.out)},
        "machine": machine_info(),
        "configs": configs,
        "ratio_wall": round(two["wall_s"] / one["wall_s"], 3),
        "ratio_per_pass": round(two["seconds_per_pass"] / one["seconds_per_pass"], 3),
        "ratio_rest": round(two["rest_s"] / one["rest_s"], 3),
    }
    path = write_result("bench_kmeans_scaling", result, out=args.out)
    print(
        f"2 workers / 1 worker: wall x{result['ratio_wall']}, per Lloyd pass x{result['ratio_per_pass']}, "
        f"the rest (sample and seeding) x{result['ratio_rest']}; wrote {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
