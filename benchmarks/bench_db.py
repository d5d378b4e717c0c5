"""Linear power -> dB: `slamgeo.io.cube.linear_to_db` (one date at a time through reused float64
buffers) against the same formula with fresh temporaries per date (`np.where` over a float64 copy,
as the readers did before), on a `(61, 512, 512)` float32 block; best of `--rounds` alternating
rounds, the outputs checked equal bit for bit.

    python benchmarks/bench_db.py [--dates 61] [--side 512] [--rounds 5]

Writes benchmarks/results/bench_db.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, machine_info, write_result  # noqa: E402


def fresh_temporaries(power: np.ndarray) -> np.ndarray:
    """The formula with a new float64 copy and `np.where` temporaries per date: the baseline."""
    out = np.empty(power.shape, np.float32)
    for i in range(power.shape[0]):
        p = power[i].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[i] = np.where((p > 0) & np.isfinite(p), 10.0 * np.log10(np.where(p > 0, p, 1.0)), np.nan)
    return out


def main() -> int:
    from slamgeo.io.cube import linear_to_db

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dates", type=int, default=61)
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    power = np.random.default_rng(0).gamma(1.0, 0.05, (args.dates, args.side, args.side)).astype(np.float32)
    power[0, 0, :3] = (-32768, 0, np.nan)
    assert np.array_equal(linear_to_db(power).view(np.uint32), fresh_temporaries(power).view(np.uint32))
    times: dict[str, list[float]] = {"linear_to_db": [], "fresh_temporaries": []}
    loads = []
    for _ in range(args.rounds):
        loads.append(load_average())
        for name, fn in (("linear_to_db", linear_to_db), ("fresh_temporaries", fresh_temporaries)):
            t0 = time.perf_counter()
            fn(power)
            times[name].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    result = {
        "benchmark": "bench_db",
        "settings": vars(args),
        "machine": machine_info(),
        "loads": loads,
        "seconds": times,
        "best_s": best,
        "speedup": round(best["fresh_temporaries"] / best["linear_to_db"], 2),
        "mpix_per_s": {k: round(power.size / v / 1e6, 1) for k, v in best.items()},
    }
    path = write_result("bench_db", result)
    print(
        f"{power.shape} float32: linear_to_db {best['linear_to_db']:.3f} s, fresh temporaries "
        f"{best['fresh_temporaries']:.3f} s: x{result['speedup']}; wrote {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
