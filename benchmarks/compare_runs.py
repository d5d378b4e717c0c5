"""Compare the outputs of two runs of the season pipeline, array by array.

What a refactor must keep: the same cube, the same model weights, the same results arrays
(embedding, importance, reconstruction error, clusters) and the same parcels tables and
metrics, within float tolerance. Prints one line per array and writes
benchmarks/results/compare_runs.json; exits 1 when anything differs.

Usage: python benchmarks/compare_runs.py OLD_SEASON_DIR NEW_SEASON_DIR [--rtol 1e-5] [--atol 1e-6]
(for example demo-output-old/2017 and demo-output/2017, from `slamgeo demo` run by two versions).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

STORES = ("cube.zarr", "results.zarr", "parcels/parcels.zarr", "parcels/class_profiles.zarr")
SKIP = {"block_done"}  # bookkeeping, not a result


def _compare_arrays(name: str, a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> dict:
    row = {"array": name, "shape_old": list(a.shape), "shape_new": list(b.shape)}
    if a.shape != b.shape:
        return {**row, "equal": False, "why": "shapes differ"}
    if a.dtype.kind in "fc":
        same_nan = bool(np.array_equal(np.isnan(a), np.isnan(b)))
        diff = float(np.nanmax(np.abs(a - b))) if a.size and not np.all(np.isnan(a)) else 0.0
        ok = same_nan and bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))
        return {**row, "equal": ok, "max_abs_diff": diff, "same_nan": same_nan}
    return {**row, "equal": bool(np.array_equal(a, b))}


def compare(old: Path, new: Path, *, rtol: float, atol: float) -> list[dict]:
    rows = []
    for store in STORES:
        if not (old / store).exists() and not (new / store).exists():
            continue
        a, b = xr.open_zarr(old / store), xr.open_zarr(new / store)
        for name in sorted(set(a.variables) | set(b.variables)):
            if name in SKIP:
                continue
            if name not in a.variables or name not in b.variables:
                rows.append({"array": f"{store}:{name}", "equal": False, "why": "only in one run"})
                continue
            rows.append(_compare_arrays(f"{store}:{name}", a[name].values, b[name].values, rtol, atol))
    from safetensors.numpy import load_file

    wa, wb = load_file(old / "model" / "model.safetensors"), load_file(new / "model" / "model.safetensors")
    for key in sorted(set(wa) | set(wb)):
        rows.append(
            _compare_arrays(f"model:{key}", wa[key], wb[key], rtol, atol)
            if key in wa and key in wb
            else {"array": f"model:{key}", "equal": False, "why": "only in one run"}
        )
    ma = json.loads((old / "parcels" / "metrics.json").read_text())
    mb = json.loads((new / "parcels" / "metrics.json").read_text())
    for level in ("pixels", "parcels"):
        for key in ("overall_accuracy", "kappa"):
            x, y = ma[level][key], mb[level][key]
            rows.append({"array": f"metrics:{level}.{key}", "old": x, "new": y, "equal": bool(np.isclose(x, y))})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--atol", type=float, default=1e-6)
    args = ap.parse_args()
    rows = compare(args.old, args.new, rtol=args.rtol, atol=args.atol)
    for r in rows:
        extra = f" max |diff| {r['max_abs_diff']:.3g}" if "max_abs_diff" in r else ""
        print(
            f"{'same' if r['equal'] else 'DIFFERS':8s} {r['array']}{extra}{' (' + r['why'] + ')' if 'why' in r else ''}"
        )
    n_bad = sum(not r["equal"] for r in rows)
    print(f"{len(rows) - n_bad} of {len(rows)} arrays the same")
    write_result(
        "compare_runs",
        {
            "old": str(args.old),
            "new": str(args.new),
            "rtol": args.rtol,
            "atol": args.atol,
            "rows": rows,
            "all_equal": n_bad == 0,
        },
    )
    return 1 if n_bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
