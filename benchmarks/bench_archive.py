"""Loading a Sentinel-1 archive (STAC items, COGs in two UTM zones) with slamgeo's odc-stac loader:
read throughput against a plain rasterio read of the same COGs, and the peak memory of ingest
for an area A and 4A.

The archives are `slamgeo.synth.write_archive` outputs (Planetary Computer `sentinel-1-rtc`
conventions: float32 linear-power COGs, 256 x 256 blocks, DEFLATE; every date an ascending pass
in two overlapping slices, "N" on the scene's EPSG:32630 grid and "S" reprojected to
EPSG:32629; every 5th date a descending pass, which the loader's default orbit choice drops),
written to a temporary folder.

Throughput, on the archive of the small size, in **Mpix/s = output pixels x dates x 2
polarisations / second**, best of `--repeats`:

- `rasterio` (baseline): the N-slice COGs of every ascending date read on their own grid with
  rasterio, window by window (512 x 512), into NumPy, nodata to NaN, 10 log10: the cheapest
  read of those bytes. One thread (`rasterio_1t`), and one thread per CPU over the files
  (`rasterio_Nt`, what Dask's threaded scheduler can use).
- `native_n_items`: `slamgeo.load` of the N items only, `crs=EPSG:32630, resolution=10` and
  `like=` a file whose extent is the N slice, so exactly the baseline's pixels; then
  `.compute()` under Dask's threaded scheduler. Its values are compared with the baseline's.
- `native_all_items`: the same grid from the whole items.json (the S slices overlapping its
  southern 1/3 are mosaicked in, reprojected: what a user asking for that extent gets).
- `two_zone`: the whole archive on EPSG:32630 at 10 m (both slices, mosaic + reprojection).
- `ingest_two_zone`: `slamgeo.ingest` of the same to a temporary Zarr store (reads, writes,
  and ingest's plausibility check, which reads the store back).

Memory: `slamgeo.ingest` of the archive of area A (N x N) and of 4A (2N x 2N), each in a fresh
interpreter, with the default chunk; peak RSS of that process sampled every 0.1 s by a psutil
thread (`_common.TreeRSS`) during ingest, minus its RSS just before ingest. Goal: ratio <= 1.25.
Also recorded: GDAL's block-cache limit and peak use during ingest (read from libgdal).
`--diagnose trace,1thread` repeats A and 4A under tracemalloc (the NumPy share of the peak) and on
one Dask thread (`dask.system.CPU_COUNT = 1`: ingest writes on a pool of that many threads, so
`num_workers` alone does not limit it). `--memory-repeats K` ingests each size K times and takes
each size's highest peak.

    .venv/bin/python benchmarks/bench_archive.py            # 512 / 1024 px, 61 dates (~10 min)
    .venv/bin/python benchmarks/bench_archive.py --quick    # 256 / 512 px, 12 dates

Writes `benchmarks/results/bench_archive.json` (`bench_archive.quick.json` with --quick).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, MiB, cpu_count, load_average, machine_info, run_child, write_result  # noqa: E402

GOAL_MEMORY_RATIO = 1.25
WINDOW = 512  # baseline read window (pixels)

# Runs in a fresh interpreter: ingest an items.json, the memory window being ingest alone.
RUNNER = """
import ctypes, gc, glob, json, os, sys, threading, time, tracemalloc
import psutil
import rasterio
from slamgeo.io.ingest import ingest
import odc.stac, dask.array, dask.system, xarray as xr  # noqa: F401  (imported before the window opens)
if os.environ.get("BENCH_DASK_THREADS"):  # ingest runs Dask on a pool of dask.system.CPU_COUNT threads
    dask.system.CPU_COUNT = int(os.environ["BENCH_DASK_THREADS"])
    dask.config.set(num_workers=dask.system.CPU_COUNT)
# GDAL's block cache, read from the libgdal rasterio loaded: its limit and its peak use.
lib = ctypes.CDLL(glob.glob(os.path.join(os.path.dirname(rasterio.__file__), "..", "rasterio.libs", "libgdal*"))[0])
lib.GDALGetCacheMax64.restype = lib.GDALGetCacheUsed64.restype = ctypes.c_int64
cache = {"used": 0, "max": 0, "min": 2**62}
halt, go = threading.Event(), threading.Event()
def poll():
    while not halt.is_set():
        if go.is_set():  # the limit in force while ingest runs
            cache["used"] = max(cache["used"], lib.GDALGetCacheUsed64())
            limit = lib.GDALGetCacheMax64()
            cache["max"], cache["min"] = max(cache["max"], limit), min(cache["min"], limit)
        halt.wait(0.05)
threading.Thread(target=poll, daemon=True).start()
trace = sys.argv[4] == "1"
gc.collect()
before = psutil.Process().memory_info().rss
if trace:  # NumPy reports its buffers to tracemalloc: the peak of live arrays
    tracemalloc.start()
t0 = time.time()
go.set()
ingest([sys.argv[1]], sys.argv[2], chunk=int(sys.argv[3]), progress=False, crs="EPSG:32630", resolution=10)
t1 = time.time()
traced = tracemalloc.get_traced_memory()[1] if trace else None
halt.set()
ds = xr.open_zarr(sys.argv[2])
print(json.dumps({"window": [t0 - 0.05, t1 + 0.05], "seconds": t1 - t0, "rss_before": before,
                  "shape": [ds.sizes["time"], ds.sizes["y"], ds.sizes["x"]], "gdal_cache_peak": cache["used"],
                  "gdal_cache_max_seen": cache["max"],
                  "gdal_cache_min_seen": cache["min"], "tracemalloc_peak": traced}))
"""


def best(fn, repeats: int) -> tuple[float, list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        out = None
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), [round(t, 3) for t in times], out


def mpix(pixels: int, seconds: float) -> float:
    return round(pixels / seconds / 1e6, 2)


# ------------------------------------------------------------------------------- the archive


def make_archive(folder: Path, size: int, n_dates: int) -> dict:
    from slamgeo.synth import make_scene, write_archive

    t0 = time.perf_counter()
    scene = make_scene(size=size, n_dates=n_dates)
    scene_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    paths = write_archive(scene, folder)
    write_s = time.perf_counter() - t0
    del scene
    archive = folder / "archive"
    items = json.loads((archive / "items.json").read_text())
    north = [f for f in items["features"] if f["id"].endswith("_N")]
    n_items = dict(items, features=north)
    (archive / "items_N.json").write_text(json.dumps(n_items))
    cogs = sorted(archive / f["assets"][p]["href"] for f in north for p in ("vv", "vh"))
    disk = sum(f.stat().st_size for f in (archive / "cogs").iterdir())
    return {
        "size": size,
        "dates": n_dates,
        "items": len(items["features"]),
        "items_json": archive / "items.json",
        "items_n_json": archive / "items_N.json",
        "north": north[0]["properties"],
        "north_cogs": cogs,
        "cogs_bytes": disk,
        "make_scene_s": round(scene_s, 2),
        "write_archive_s": round(write_s, 2),
        "paths": paths,
    }


def write_like(path: Path, props: dict) -> Path:
    """A one-polygon GeoPackage in EPSG:32630 whose extent is exactly the N slice's raster."""
    import geopandas as gpd
    from shapely.geometry import box

    a, _, c, _, e, f = props["proj:transform"][:6]
    h, w = props["proj:shape"]
    gdf = gpd.GeoDataFrame({"id": [1]}, geometry=[box(c, f + h * e, c + w * a, f)], crs=props["proj:code"])
    gdf.to_file(path, driver="GPKG")
    return path


# ------------------------------------------------------------------------------- baseline


def read_cog_db(path: Path) -> np.ndarray:
    """One COG band, window by window, to dB (NaN where nodata)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        out = np.empty((src.height, src.width), np.float32)
        nodata = src.nodata
        for r in range(0, src.height, WINDOW):
            for c in range(0, src.width, WINDOW):
                h, w = min(WINDOW, src.height - r), min(WINDOW, src.width - c)
                block = src.read(1, window=Window(c, r, w, h))
                block = np.where(block == nodata, np.float32(np.nan), block)
                with np.errstate(divide="ignore", invalid="ignore"):
                    out[r : r + h, c : c + w] = 10 * np.log10(block)
    return out


def rasterio_read(cogs: list[Path], threads: int) -> dict[str, np.ndarray]:
    if threads <= 1:
        arrays = [read_cog_db(p) for p in cogs]
    else:
        with ThreadPoolExecutor(threads) as pool:
            arrays = list(pool.map(read_cog_db, cogs))
    out = {}
    for pol in ("vv", "vh"):
        out[pol] = np.stack([a for p, a in zip(cogs, arrays, strict=True) if p.name.endswith(f"_{pol}.tif")])
    return out


# ------------------------------------------------------------------------------- loader


def load_compute(items: Path, **grid) -> tuple[dict, dict]:
    import dask

    import slamgeo

    t0 = time.perf_counter()
    cube = slamgeo.load([str(items)], report=lambda _: None, **grid)
    graph_s = time.perf_counter() - t0
    with dask.config.set(scheduler="threads"):
        vv, vh = dask.compute(cube["VV"].data, cube["VH"].data)
    shape = dict(cube.sizes)
    return {"VV": vv, "VH": vh}, {"graph_s": graph_s, "shape": [shape["time"], shape["y"], shape["x"]]}


def throughput(arch: dict, work: Path, repeats: int) -> dict:
    import warnings

    import slamgeo

    res: dict = {}
    threads = cpu_count()
    cogs = arch["north_cogs"]
    h, w = arch["north"]["proj:shape"]
    n_dates = len(cogs) // 2
    native_pix = n_dates * h * w * 2

    for name, t in (("rasterio_1t", 1), (f"rasterio_{threads}t", threads)):
        s, all_s, base = best(lambda t=t: rasterio_read(cogs, t), repeats)
        res[name] = {"seconds": round(s, 3), "all_seconds": all_s, "mpix_s": mpix(native_pix, s), "threads": t}
        print(f"  {name:<18} {native_pix / 1e6:7.1f} Mpix  {s:7.2f} s  {res[name]['mpix_s']:7.1f} Mpix/s", flush=True)
    baseline = base

    like = write_like(work / "north.gpkg", arch["north"])
    native = {"crs": "EPSG:32630", "resolution": 10, "like": str(like)}
    cases = (
        ("native_n_items", arch["items_n_json"], native),
        ("native_all_items", arch["items_json"], native),
        ("two_zone", arch["items_json"], {"crs": "EPSG:32630", "resolution": 10}),
    )
    caught: list[str] = []
    for name, items, grid in cases:
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter("always")
            s, all_s, out = best(lambda items=items, grid=grid: load_compute(items, **grid), repeats)
        caught += [f"{name}: {w.category.__name__}: {w.message}" for w in ws]
        arrays, info = out
        t_, y_, x_ = info["shape"]
        pix = t_ * y_ * x_ * 2
        res[name] = {
            "seconds": round(s, 3),
            "all_seconds": all_s,
            "graph_build_s_last": round(info["graph_s"], 3),
            "shape_time_y_x": info["shape"],
            "mpix_s": mpix(pix, s),
            "valid_share": round(float(np.isfinite(arrays["VV"]).mean()), 4),
        }
        if name.startswith("native"):
            same = [arrays[b].shape == baseline[p].shape for b, p in (("VV", "vv"), ("VH", "vh"))]
            if all(same):
                diffs = [float(np.nanmax(np.abs(arrays[b] - baseline[p]))) for b, p in (("VV", "vv"), ("VH", "vh"))]
                nan_agree = all(
                    bool((np.isnan(arrays[b]) == np.isnan(baseline[p])).all()) for b, p in (("VV", "vv"), ("VH", "vh"))
                )
                res[name]["max_abs_diff_db_vs_baseline"] = round(max(diffs), 6)
                res[name]["nan_mask_equal_to_baseline"] = nan_agree
            else:
                res[name]["shape_differs_from_baseline"] = True
        print(
            f"  {name:<18} {pix / 1e6:7.1f} Mpix  {s:7.2f} s  {res[name]['mpix_s']:7.1f} Mpix/s"
            f"  (graph {info['graph_s']:.2f} s, shape {info['shape']})",
            flush=True,
        )
        del arrays, out

    # ingest to a temporary Zarr store, same grid as two_zone
    def do_ingest():
        out = work / "tp_ingest.zarr"
        shutil.rmtree(out, ignore_errors=True)
        slamgeo.ingest(
            [str(arch["items_json"])], out, progress=False, report=lambda _: None, crs="EPSG:32630", resolution=10
        )
        return out

    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        s, all_s, _ = best(do_ingest, repeats)
    caught += [f"ingest: {w.category.__name__}: {w.message}" for w in ws]
    t_, y_, x_ = res["two_zone"]["shape_time_y_x"]
    pix = t_ * y_ * x_ * 2
    res["ingest_two_zone"] = {"seconds": round(s, 3), "all_seconds": all_s, "mpix_s": mpix(pix, s)}
    print(
        f"  {'ingest_two_zone':<18} {pix / 1e6:7.1f} Mpix  {s:7.2f} s  {res['ingest_two_zone']['mpix_s']:7.1f} Mpix/s"
    )
    shutil.rmtree(work / "tp_ingest.zarr", ignore_errors=True)

    base1 = res["rasterio_1t"]["mpix_s"]
    baseN = res[f"rasterio_{threads}t"]["mpix_s"]
    res["ratios"] = {
        f"native_n_items / rasterio_{threads}t": round(res["native_n_items"]["mpix_s"] / baseN, 3),
        "native_n_items / rasterio_1t": round(res["native_n_items"]["mpix_s"] / base1, 3),
        f"native_all_items / rasterio_{threads}t": round(res["native_all_items"]["mpix_s"] / baseN, 3),
        f"two_zone / rasterio_{threads}t": round(res["two_zone"]["mpix_s"] / baseN, 3),
        "ingest_two_zone / two_zone": round(res["ingest_two_zone"]["mpix_s"] / res["two_zone"]["mpix_s"], 3),
    }
    res["warnings"] = sorted(set(caught))[:20]
    return res


# ------------------------------------------------------------------------------- memory


def memory(arch: dict, work: Path, chunk: int, env: dict | None = None, tag: str = "", trace: bool = False) -> dict:
    out = work / f"mem_{arch['size']}{tag}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    r = run_child(RUNNER, str(arch["items_json"]), str(out), str(chunk), "1" if trace else "0", interval=0.1, env=env)
    shutil.rmtree(out, ignore_errors=True)
    peak = r["memory"]["peak_tree_rss_in_window_mib"]
    before = r["rss_before"] / MiB
    t_, y_, x_ = r["shape"]
    return {
        "size": arch["size"],
        "env": env or {},
        "shape_time_y_x": r["shape"],
        "cube_mib": round(t_ * y_ * x_ * 2 * 4 / MiB, 1),
        "ingest_s": round(r["seconds"], 2),
        "ingest_mpix_s": mpix(t_ * y_ * x_ * 2, r["seconds"]),
        "rss_before_mib": round(before, 1),
        "peak_rss_mib": peak,
        "peak_above_before_mib": round(peak - before, 1),
        "samples": r["memory"]["samples"],
        "gdal_cache_peak_mib": round(r["gdal_cache_peak"] / MiB, 1),
        "gdal_cache_limit_mib_min_max": [
            round(r["gdal_cache_min_seen"] / MiB, 1),
            round(r["gdal_cache_max_seen"] / MiB, 1),
        ],
        "numpy_tracemalloc_peak_mib": None if r["tracemalloc_peak"] is None else round(r["tracemalloc_peak"] / MiB, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="N: area A is N x N pixels, 4A is 2N x 2N")
    parser.add_argument("--dates", type=int, default=61)
    parser.add_argument("--chunk", type=int, default=None, help="spatial chunk (default: the cube contract's)")
    parser.add_argument("--repeats", type=int, default=3, help="timings are the best of this many")
    parser.add_argument("--quick", action="store_true", help="N = 256, 12 dates")
    parser.add_argument(
        "--diagnose",
        default="",
        help="comma list of extra ingests of A and 4A: trace (tracemalloc: NumPy's peak), 1thread (1 Dask thread)",
    )
    parser.add_argument("--memory-repeats", type=int, default=1, help="ingest each size this many times")
    parser.add_argument("--memory-only", action="store_true", help="skip the throughput part")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the archives (a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write")
    args = parser.parse_args()
    from slamgeo.schema import CHUNK

    if args.quick:
        args.size, args.dates = 256, 12
    chunk = args.chunk or CHUNK
    out = args.out or RESULTS / ("bench_archive.quick.json" if args.quick else "bench_archive.json")

    info = machine_info()
    print(
        f"cpus {info['cpus']}, load {info['load_average_1_5_15']}; sizes {args.size} / {2 * args.size}, "
        f"{args.dates} dates, chunk {chunk}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="slamgeo-bench-archive-", dir=args.workdir))
    result: dict = {"benchmark": "bench_archive", "quick": args.quick, "chunk": chunk, "dates": args.dates}
    try:
        archives = {}
        for size in (args.size, 2 * args.size):
            archives[size] = make_archive(work / f"scene_{size}", size, args.dates)
            a = archives[size]
            print(
                f"archive {size} px: {a['items']} items, {a['cogs_bytes'] / MiB:.0f} MiB of COGs, "
                f"make_scene {a['make_scene_s']} s, write_archive {a['write_archive_s']} s",
                flush=True,
            )
        result["archives"] = [
            {k: v for k, v in a.items() if k not in ("paths", "north_cogs", "north", "items_json", "items_n_json")}
            for a in archives.values()
        ]

        if not args.memory_only:
            print(f"throughput on the {args.size} px archive (Mpix = pixels x dates x 2 pols), best of {args.repeats}:")
            load0 = load_average()
            result["throughput"] = throughput(archives[args.size], work, args.repeats)
            result["throughput"]["load_average_before_after"] = [load0, load_average()]
            for k, v in result["throughput"]["ratios"].items():
                print(f"  {k:<34} x{v:.2f}")

        print("ingest peak memory (fresh process each, psutil every 0.1 s, minus RSS before ingest):")
        runs = []
        for size in [args.size, 2 * args.size] * args.memory_repeats:
            runs.append(memory(archives[size], work, chunk, tag=f"_{len(runs)}"))
            r = runs[-1]
            print(
                f"  {size:>5} px: cube {r['cube_mib']:7.0f} MiB, ingest {r['ingest_s']:6.1f} s "
                f"({r['ingest_mpix_s']:.1f} Mpix/s), RSS before {r['rss_before_mib']:.0f} MiB, "
                f"peak {r['peak_rss_mib']:.0f} MiB, +{r['peak_above_before_mib']:.0f} MiB; GDAL cache peak "
                f"{r['gdal_cache_peak_mib']:.0f} MiB (limit {r['gdal_cache_limit_mib_min_max']} MiB)",
                flush=True,
            )
        # With repeats, each size's highest peak (a peak is a maximum: the worst run counts).
        small = max((r for r in runs if r["size"] == args.size), key=lambda r: r["peak_above_before_mib"])
        large = max((r for r in runs if r["size"] == 2 * args.size), key=lambda r: r["peak_above_before_mib"])
        ratio = round(large["peak_above_before_mib"] / max(small["peak_above_before_mib"], 1e-9), 3)
        result["memory"] = {
            "runs": runs,
            "area_ratio": 4,
            "peak_above_before_mib_a_4a": [small["peak_above_before_mib"], large["peak_above_before_mib"]],
            "peak_above_before_ratio": ratio,
            "peak_rss_ratio": round(large["peak_rss_mib"] / small["peak_rss_mib"], 3),
            "goal": GOAL_MEMORY_RATIO,
            "goal_met": ratio <= GOAL_MEMORY_RATIO,
        }
        print(
            f"  4A / A: x{ratio:.2f} above the RSS before ingest (goal x{GOAL_MEMORY_RATIO}: "
            f"{'met' if ratio <= GOAL_MEMORY_RATIO else 'NOT met'}); whole RSS x{result['memory']['peak_rss_ratio']:.2f}"
        )
        if args.diagnose:
            diag = []
            variants = {"trace": (None, True), "1thread": ({"BENCH_DASK_THREADS": "1"}, False)}
            for name in args.diagnose.split(","):
                env, trace = variants[name]
                tag = f"_{name}"
                for size in (args.size, 2 * args.size):
                    diag.append(memory(archives[size], work, chunk, env=env, tag=tag, trace=trace))
                    r = diag[-1]
                    print(
                        f"  diag {tag[1:]}: {size} px: peak +{r['peak_above_before_mib']:.0f} MiB, "
                        f"NumPy peak {r['numpy_tracemalloc_peak_mib']} MiB, GDAL cache peak "
                        f"{r['gdal_cache_peak_mib']} MiB, {r['ingest_s']:.1f} s",
                        flush=True,
                    )
            result["memory"]["diagnose"] = diag
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["machine"] = {**info, "load_average_end": load_average()}
    path = write_result("bench_archive", result, out=out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
