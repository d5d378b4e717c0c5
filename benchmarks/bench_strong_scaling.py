"""Strong scaling of the season pipeline: every step with 1 worker and with 2 workers on the
same scene, and the ratio of their wall times (2 workers / 1 worker; 0.5 is perfect).

    .venv/bin/python benchmarks/bench_strong_scaling.py                 # 1024 px, 24 dates
    .venv/bin/python benchmarks/bench_strong_scaling.py --size 512 --dates 24

Each configuration is one `benchmarks/bench_scale.py` run (a fresh process tree: the scene
written, a LocalCluster of N workers x 1 thread, the pipeline from GeoTIFFs with a model trained
in the pipeline, `--fresh-training`), in the order 1, 2, 1, 2 ... for `--rounds` rounds; each
step's time is the best of its rounds. The scene and the model are drawn with the same seeds, so
both configurations do the same work. The goal: every step at most 0.65x the 1-worker time.

A step that is one task (training on one worker, with its worker's threads) cannot scale with
more workers of one thread each: its ratio says so rather than being left out. The machine has
2 cores, so 2 workers of one thread is its whole width; the load average is recorded per run.

Writes `benchmarks/results/bench_strong_scaling.json` (per configuration and round, the step
seconds and CPU seconds of driver and workers; the ratios; the goal per step).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import RESULTS, load_average, machine_info, write_result

GOAL = 0.65
HERE = Path(__file__).resolve().parent


def one_run(size: int, dates: int, workers: int, out: Path) -> dict:
    """One bench_scale run of `size` with `workers` workers x 1 thread; its run record."""
    cmd = [
        sys.executable,
        str(HERE / "bench_scale.py"),
        "--sizes",
        str(size),
        "--dates",
        str(dates),
        "--workers",
        str(workers),
        "--threads",
        "1",
        "--fresh-training",
        "--out",
        str(out),
        "--figure",
        str(out.with_suffix(".png")),
    ]
    load = load_average()
    subprocess.run(cmd, check=True)
    run = json.loads(out.read_text())["runs"][str(size)]
    run["load_before_run"] = load
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1024, help="scene side, pixels")
    ap.add_argument("--dates", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=1, help="alternating rounds (best of them per step)")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_strong_scaling.json")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_strong_"))
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for r in range(args.rounds):
        for n in (1, 2):
            print(f"round {r + 1}: {n} worker(s), {args.size}² x {args.dates} dates", flush=True)
            runs[n].append(one_run(args.size, args.dates, n, work / f"w{n}_r{r}.json"))

    def best(n: int, step: str) -> float | None:
        times = [run["steps"][step]["seconds"] for run in runs[n] if step in run.get("steps", {})]
        return min(times) if times else None

    steps = [s for s in runs[1][0]["steps"] if s in runs[2][0]["steps"]]
    rows = {}
    for step in steps:
        one, two = best(1, step), best(2, step)
        if one is None or two is None:
            continue
        ratio = two / one if one > 0 else None
        rows[step] = {
            "seconds_1_worker": round(one, 2),
            "seconds_2_workers": round(two, 2),
            "ratio": None if ratio is None else round(ratio, 3),
            # steps under a second (align, drift) are bookkeeping: no goal
            "goal_met": None if one < 1.0 or ratio is None else ratio <= GOAL,
        }
    total1 = min(run["wall_s"] for run in runs[1])
    total2 = min(run["wall_s"] for run in runs[2])
    result = {
        "benchmark": "bench_strong_scaling",
        "settings": {"size": args.size, "dates": args.dates, "rounds": args.rounds, "threads_per_worker": 1},
        "machine": machine_info(),
        "goal": f"every step's wall time with 2 workers <= {GOAL}x that with 1",
        "steps": rows,
        "pipeline_wall_s": {"1_worker": total1, "2_workers": total2, "ratio": round(total2 / total1, 3)},
        "runs": {str(n): v for n, v in runs.items()},
        "load_average_end": load_average(),
    }
    path = write_result("bench_strong_scaling", result, out=args.out)
    print(f"\n{'step':<10} {'1 worker s':>11} {'2 workers s':>12} {'ratio':>7}  goal <= {GOAL}")
    for step, row in rows.items():
        met = {True: "met", False: "NOT met", None: "-"}[row["goal_met"]]
        print(f"{step:<10} {row['seconds_1_worker']:>11.1f} {row['seconds_2_workers']:>12.1f} {row['ratio']:>7}  {met}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
