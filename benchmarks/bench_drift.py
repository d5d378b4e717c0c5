"""Season drift (`slamgeo.jobs.drift.season_drift`) on existing pipeline outputs: the measures
and the verdict of each season against the model's season, and the time drift takes against
the time of the explain step that made the season's results (goal: drift <= 10 % of explain).

    python benchmarks/bench_drift.py OUTPUT REFERENCE SEASON [SEASON ...] [--rounds 3]
        [--no-labels] [--local-cluster] [--name bench_drift]

OUTPUT is a pipeline output root (`<OUTPUT>/<season>/results.zarr`); REFERENCE the season the
model was trained on; each SEASON one explained with that model. Labels come from each
season's parcels stage (`<OUTPUT>/<season>/parcels`, `slamgeo.jobs.drift.parcel_labels`)
unless --no-labels. Times are the best of --rounds, the seasons alternating within a round;
the explain time is the explain step's `seconds` in the season's pipeline_state.json. Runs on
the threaded Dask scheduler of this process, or on a LocalCluster of 2 workers x 1 thread with
--local-cluster (as the pipeline does). Prints a table and writes
benchmarks/results/<name>.json with the machine's load average.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, write_result  # noqa: E402

MEASURES = (
    "recon_median_ratio",
    "recon_share_above_p95",
    "embedding_energy_ratio",
    "class_centroid_move",
    "importance_shift",
    "importance_lag_days",
)


def _explain_seconds(season_dir: Path) -> float | None:
    try:
        state = json.loads((season_dir / "pipeline_state.json").read_text())
        return float(state["steps"]["explain"]["seconds"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def _one(output: Path, reference: str, season: str, labels: bool) -> tuple[dict, float, float]:
    """(drift result, seconds for the labels, seconds for season_drift)."""
    from slamgeo.io.cube import open_results
    from slamgeo.jobs.drift import parcel_labels, season_drift, shared_class_codes

    ref = open_results(output / reference / "results.zarr")
    sea = open_results(output / season / "results.zarr")
    t0 = time.perf_counter()
    kw: dict = {}
    if labels:
        ref_lab = parcel_labels(output / reference / "parcels", ref)
        sea_lab = parcel_labels(output / season / "parcels", sea)
        ref_codes, sea_codes, names = shared_class_codes(ref_lab, sea_lab)
        kw = {"reference_labels": ref_codes, "season_labels": sea_codes, "class_names": names}
    t1 = time.perf_counter()
    out = season_drift(ref, sea, **kw)
    return out, t1 - t0, time.perf_counter() - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output", type=Path)
    ap.add_argument("reference")
    ap.add_argument("seasons", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-labels", action="store_true")
    ap.add_argument("--local-cluster", action="store_true")
    ap.add_argument("--name", default="bench_drift")
    args = ap.parse_args()

    import dask

    stack = contextlib.ExitStack()
    if args.local_cluster:
        from distributed import Client, LocalCluster

        cluster = stack.enter_context(
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        )
        client = stack.enter_context(Client(cluster, set_as_default=False))
        stack.enter_context(dask.config.set(scheduler=client))
    else:
        stack.enter_context(dask.config.set(scheduler="threads"))
    rows: dict[str, dict] = {}
    results: dict[str, dict] = {}
    with stack:
        for r in range(args.rounds):
            for season in args.seasons:
                out, t_labels, t_drift = _one(args.output, args.reference, season, not args.no_labels)
                row = rows.setdefault(season, {"labels_s": [], "drift_s": []})
                row["labels_s"].append(round(t_labels, 3))
                row["drift_s"].append(round(t_drift, 3))
                if r == 0:
                    results[season] = out
    table = []
    for season, row in rows.items():
        explain = _explain_seconds(args.output / season)
        best = min(row["drift_s"])
        best_all = min(a + b for a, b in zip(row["labels_s"], row["drift_s"]))
        res = results[season]
        summary = res["measures"]["summary"]
        table.append(
            {
                "season": season,
                "verdict": res["verdict"],
                **{m: summary.get(m) for m in MEASURES},
                "top_dates": res["measures"].get("importance", {}).get("top_dates"),
                "reasons": res["reasons"],
                "drift_s_best": best,
                "labels_and_drift_s_best": best_all,
                "explain_s": explain,
                "drift_over_explain": round(best_all / explain, 4) if explain else None,
                "timings": row,
                "embedding": res["measures"]["embedding"],
                "recon_error": res["measures"]["recon_error"],
            }
        )
    head = f"{'season':16s} {'verdict':8s} " + " ".join(f"{m[:14]:>14s}" for m in MEASURES)
    head += f" {'drift s':>8s} {'explain s':>9s} {'ratio':>6s}"
    print(head)
    for t in table:
        vals = " ".join(f"{t[m]:14.3f}" if t[m] is not None else f"{'-':>14s}" for m in MEASURES)
        ratio = f"{t['drift_over_explain']:6.3f}" if t["drift_over_explain"] is not None else "     -"
        explain = f"{t['explain_s']:9.1f}" if t["explain_s"] is not None else "        -"
        print(f"{t['season']:16s} {t['verdict']:8s} {vals} {t['labels_and_drift_s_best']:8.2f} {explain} {ratio}")
    for t in table:
        if t["reasons"]:
            print(f"{t['season']}: " + "; ".join(t["reasons"]))
    path = write_result(
        args.name,
        {
            "output": str(args.output),
            "reference": args.reference,
            "labels": not args.no_labels,
            "scheduler": "LocalCluster 2 x 1" if args.local_cluster else "threads",
            "seasons": table,
            "machine": machine_info(),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
