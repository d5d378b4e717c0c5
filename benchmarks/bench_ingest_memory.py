"""Peak memory of `slamgeo ingest` on a GeoTIFF stack of N x N pixels and of 2N x 2N pixels.

Ingest reads lazily and writes chunk by chunk, so a scene four times larger (2N x 2N) should
need about the same peak memory. Each ingest runs in its own Python process; its peak resident
set size is that process's `ru_maxrss`. Prints a table and writes
`benchmarks/results/ingest_memory.json` (`ingest_memory.quick.json` with --quick).

    .venv/bin/python benchmarks/bench_ingest_memory.py            # N = 2048, 24 dates
    .venv/bin/python benchmarks/bench_ingest_memory.py --quick    # N = 512, 6 dates

The stack is written here window by window (not with `slamgeo.synth`, which builds a whole
scene in memory) in the product format of the synthetic generator: two float32 bands "VV" and
"VH" of linear power, nodata 0, EPSG:32630, tiled, DEFLATE, tag ACQUISITION_DATE.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# Runs in a fresh interpreter: ingest, then report this process's own peak RSS (KiB on Linux).
RUNNER = """
import json, resource, sys, time
from slamgeo.io.ingest import ingest
t0 = time.perf_counter()
ingest(sys.argv[1:-2], sys.argv[-2], chunk=int(sys.argv[-1]), progress=False)
seconds = time.perf_counter() - t0
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_rss_mib": peak_kib / 1024, "seconds": seconds}))
"""

# Peak RSS of a process that only imports what ingest imports: the part that does not scale.
BASELINE = """
import json, resource
import slamgeo.io.ingest  # noqa: F401
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_stack(folder: Path, size: int, n_dates: int, *, block: int = 512, seed: int = 0) -> int:
    """Write `n_dates` GeoTIFFs of `size` x `size` pixels, window by window; returns bytes on disk."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=2,
        dtype="float32",
        crs="EPSG:32630",
        transform=from_origin(500000.0, 4200000.0, 10.0, 10.0),
        nodata=0.0,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
        zlevel=1,
    )
    d0 = dt.date(2023, 1, 1)
    for k in range(n_dates):
        date = d0 + dt.timedelta(days=6 * k)
        with rasterio.open(folder / f"S1_VVVH_{date:%Y%m%d}.tif", "w", **profile) as dst:
            dst.set_band_description(1, "VV")
            dst.set_band_description(2, "VH")
            dst.update_tags(ACQUISITION_DATE=date.isoformat())
            for r in range(0, size, block):
                for c in range(0, size, block):
                    h, w = min(block, size - r), min(block, size - c)
                    # Power around 0.05 (-13 dB) quantised to 1/4096 so DEFLATE has something to do.
                    power = np.round(rng.gamma(4.0, 0.0125, (2, h, w)) * 4096) / 4096
                    dst.write(power.astype(np.float32), window=Window(c, r, w, h))
    return sum(f.stat().st_size for f in folder.iterdir())


def run_child(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="N: the small scene is N x N pixels")
    parser.add_argument("--dates", type=int, default=24)
    parser.add_argument("--chunk", type=int, default=512, help="spatial chunk of the cube (pixels)")
    parser.add_argument("--quick", action="store_true", help="N = 512, 6 dates, chunk 256")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the stacks (a temp dir)")
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON to write (default benchmarks/results/ingest_memory[.quick].json)"
    )
    args = parser.parse_args()
    if args.quick:
        args.size, args.dates, args.chunk = 512, 6, 256
    if args.out is None:
        args.out = RESULTS / ("ingest_memory.quick.json" if args.quick else "ingest_memory.json")

    work = Path(tempfile.mkdtemp(prefix="slamgeo-bench-ingest-", dir=args.workdir))
    try:
        baseline = run_child(BASELINE)["peak_rss_mib"]
        runs = []
        for size in (args.size, 2 * args.size):
            stack = work / f"stack_{size}"
            t0 = time.perf_counter()
            disk = write_stack(stack, size, args.dates)
            write_s = time.perf_counter() - t0
            res = run_child(RUNNER, str(stack), str(work / f"cube_{size}.zarr"), str(args.chunk))
            cube_bytes = sum(f.stat().st_size for f in (work / f"cube_{size}.zarr").rglob("*") if f.is_file())
            runs.append(
                {
                    "size": size,
                    "dates": args.dates,
                    "stack_bytes_in_memory": 2 * 4 * args.dates * size * size,
                    "stack_bytes_on_disk": disk,
                    "cube_bytes_on_disk": cube_bytes,
                    "write_stack_s": round(write_s, 2),
                    "ingest_s": round(res["seconds"], 2),
                    "peak_rss_mib": round(res["peak_rss_mib"], 1),
                }
            )
            shutil.rmtree(stack)
            shutil.rmtree(work / f"cube_{size}.zarr")
            print(
                f"{size:>6} x {size:<6} {args.dates} dates: stack {runs[-1]['stack_bytes_in_memory'] / 2**20:8.0f} MiB,"
                f" ingest {res['seconds']:6.1f} s, peak RSS {res['peak_rss_mib']:7.1f} MiB",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    small, large = runs
    result = {
        "benchmark": "ingest_memory",
        "quick": args.quick,
        "chunk": args.chunk,
        "import_baseline_rss_mib": round(baseline, 1),
        "runs": runs,
        "data_ratio": large["stack_bytes_in_memory"] / small["stack_bytes_in_memory"],
        "peak_ratio": round(large["peak_rss_mib"] / small["peak_rss_mib"], 3),
        "peak_ratio_above_baseline": round(
            (large["peak_rss_mib"] - baseline) / max(small["peak_rss_mib"] - baseline, 1e-9), 3
        ),
        "machine": {"python": platform.python_version(), "cpus": _cpus(), "platform": platform.platform()},
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    print(
        f"import baseline {baseline:.1f} MiB; data x{result['data_ratio']:.0f} -> peak RSS x{result['peak_ratio']:.2f}"
        f" (x{result['peak_ratio_above_baseline']:.2f} above the baseline)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def _cpus() -> int:
    try:
        import os

        return len(os.sched_getaffinity(0))
    except AttributeError:
        return 0


if __name__ == "__main__":
    main()
