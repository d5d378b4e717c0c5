"""Loading a Sentinel-1 archive (STAC items, COGs in two UTM zones) with slamgeo's odc-stac loader:
read throughput against a plain rasterio read of the same COGs, and the peak memory of ingest
for an area A and 4A.

The archives are `slamgeo.synth.write_archive` outputs (Planetary Computer `sentinel-1-rtc`
conventions: float32 linear-power COGs, 256 x 256 blocks, DEFLATE; every date an ascending pass
in two overlapping slices, "N" on the scene's EPSG:32630 grid and "S" reprojected to
EPSG:32629; every 5th date a descending pass, which the loader's default orbit choice drops),
written to a temporary folder.

Throughput, on the archive of the small size, in **Mpix/s = output pixels x dates x 2
polarisations / second**, best of `--repeats` (5) alternating rounds: each round runs every case
once, each loader case next to a plain read (which of the two goes first swaps every other
round), with the load average (`os.getloadavg()`) recorded per round:

- `rasterio` (baseline): the N-slice COGs of every ascending date read on their own grid with
  rasterio, window by window (512 x 512), into NumPy, nodata to NaN, 10 log10: the cheapest
  read of those bytes. One thread (`rasterio_1t`), and one thread per CPU over the files
  (`rasterio_Nt`, what Dask's threaded scheduler can use).
- `native_n_items`: `slamgeo.load` of the N items only, `crs=EPSG:32630, resolution=10` and
  `like=` a file whose extent is the N slice, so exactly the baseline's pixels; then
  `.compute()` under Dask's threaded scheduler (the time of `load`, the graph, and of the
  compute are recorded apart). Its values are checked in every round: the same NaN mask as the
  baseline's and within float32 rounding of it (the baseline's log10 is float32), and bit for
  bit those of `slamgeo.io.cube.linear_to_db` on the plain read's linear power.
- `native_n_items_large` / `rasterio_Nt_large`: the same on the north slice of the 2N archive
  (4x the pixels per file and item; the loader's cost per item is fixed).
- `native_all_items`: the same grid from the whole items.json (the S slices overlapping its
  southern 1/3 are mosaicked in, reprojected: what a user asking for that extent gets).
- `two_zone`: the whole archive on EPSG:32630 at 10 m (both slices, mosaic + reprojection).
- `ingest_two_zone`: `slamgeo.ingest` of the same to a temporary Zarr store (reads, writes,
  and ingest's plausibility check, which reads the store back).

Profile (`--profile`, or `--profile-only`: written to `bench_archive.profile.json`): the
same-grid load and the plain read phase by phase (`profile`), on Dask's synchronous scheduler
so that the phases add up, in the quietest of `--repeats` alternating rounds (and their mean);
both totals on threads too.

Memory: `slamgeo.ingest` of the archive of area A (N x N) and of 4A (2N x 2N), each in a fresh
interpreter, with the default chunk; peak RSS of that process sampled every 0.1 s by a psutil
thread (`_common.TreeRSS`) during ingest, minus its RSS just before ingest. Goal: ratio <= 1.25.
Also recorded: GDAL's block-cache limit and peak use during ingest (read from libgdal).
`--diagnose trace,1thread` repeats A and 4A under tracemalloc (the NumPy share of the peak) and on
one Dask thread (`dask.system.CPU_COUNT = 1`: ingest writes on a pool of that many threads, so
`num_workers` alone does not limit it). `--memory-repeats K` ingests each size K times and takes
each size's highest peak.

    .venv/bin/python benchmarks/bench_archive.py --profile --memory-repeats 2  # 512 / 1024 px, 61 dates (~7 min)
    .venv/bin/python benchmarks/bench_archive.py --quick    # 256 / 512 px, 12 dates
    .venv/bin/python benchmarks/bench_archive.py --profile-only --repeats 7  # the profile alone (~1 min)

Writes `benchmarks/results/bench_archive.json` (`bench_archive.quick.json` with --quick,
`bench_archive.profile.json` with --profile-only).
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
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        vv, vh = dask.compute(cube["VV"].data, cube["VH"].data)
    compute_s = time.perf_counter() - t0
    shape = dict(cube.sizes)
    return {"VV": vv, "VH": vh}, {
        "graph_s": graph_s,
        "compute_s": compute_s,
        "shape": [shape["time"], shape["y"], shape["x"]],
    }


def reference_db(cogs: list[Path]) -> dict[str, np.ndarray]:
    """The north-slice COGs read whole with rasterio (no data as NaN) and converted by
    `slamgeo.io.cube.linear_to_db`: what the loader must return on their own grid, bit for bit."""
    import rasterio

    from slamgeo.io.cube import linear_to_db

    out = {}
    for pol in ("vv", "vh"):
        stack = []
        for path in (p for p in cogs if p.name.endswith(f"_{pol}.tif")):
            with rasterio.open(path) as src:
                a = src.read(1)
                stack.append(np.where(a == src.nodata, np.float32(np.nan), a))
        out[pol] = linear_to_db(np.stack(stack))
    return out


def compare(arrays: dict, baseline: dict, reference: dict) -> dict:
    """The loader's arrays against the plain read's (float32 `10 log10`, so within rounding) and
    against `reference_db` (the same conversion as the loader's: identical)."""
    pairs = (("VV", "vv"), ("VH", "vh"))
    if any(arrays[b].shape != baseline[p].shape for b, p in pairs):
        return {"shape_differs_from_baseline": True}
    return {
        "max_abs_diff_db_vs_baseline": round(
            max(float(np.nanmax(np.abs(arrays[b] - baseline[p]))) for b, p in pairs), 6
        ),
        "nan_mask_equal_to_baseline": all(bool((np.isnan(arrays[b]) == np.isnan(baseline[p])).all()) for b, p in pairs),
        "identical_to_linear_to_db_of_plain_read": all(
            bool(np.array_equal(arrays[b], reference[p], equal_nan=True)) for b, p in pairs
        ),
    }


def throughput(arch: dict, large: dict | None, work: Path, rounds: int) -> dict:
    """Best of `rounds` alternating rounds: in each round every case runs once, a loader case
    after each plain read (their order swapped every other round), and the load average is
    recorded before each round. `large`: the 2N archive, whose north slice is timed too (4x the
    pixels per item: the loader's fixed cost per item is spread over more pixels)."""
    import warnings

    import slamgeo

    threads = cpu_count()
    plain_t = f"rasterio_{threads}t"
    cogs = arch["north_cogs"]
    h, w = arch["north"]["proj:shape"]
    native_pix = len(cogs) // 2 * h * w * 2
    like = write_like(work / "north.gpkg", arch["north"])
    native = {"crs": "EPSG:32630", "resolution": 10, "like": str(like)}

    def do_ingest():
        out = work / "tp_ingest.zarr"
        shutil.rmtree(out, ignore_errors=True)
        slamgeo.ingest(
            [str(arch["items_json"])], out, progress=False, report=lambda _: None, crs="EPSG:32630", resolution=10
        )
        shutil.rmtree(out, ignore_errors=True)
        return None

    # (plain read, loader) pairs, in the order of a round; a loader case is (items, grid) or ingest
    pairs: list[tuple[tuple | None, tuple | None]] = [
        ((plain_t, cogs, threads), ("native_n_items", arch["items_n_json"], native)),
        (("rasterio_1t", cogs, 1), ("native_all_items", arch["items_json"], native)),
        (None, ("two_zone", arch["items_json"], {"crs": "EPSG:32630", "resolution": 10})),
        (None, ("ingest_two_zone", None, None)),
    ]
    references = {"native_n_items": reference_db(cogs), "native_all_items": None}
    references["native_all_items"] = references["native_n_items"]
    pixels = {plain_t: native_pix, "rasterio_1t": native_pix}
    if large is not None:
        large_cogs = large["north_cogs"]
        lh, lw = large["north"]["proj:shape"]
        large_like = write_like(work / "north_large.gpkg", large["north"])
        large_grid = {"crs": "EPSG:32630", "resolution": 10, "like": str(large_like)}
        pairs.insert(
            1, ((f"{plain_t}_large", large_cogs, threads), ("native_n_items_large", large["items_n_json"], large_grid))
        )
        references["native_n_items_large"] = reference_db(large_cogs)
        pixels[f"{plain_t}_large"] = len(large_cogs) // 2 * lh * lw * 2

    times: dict[str, list[float]] = {}
    infos: dict[str, list[dict]] = {}
    checks: dict[str, list[dict]] = {}
    baselines: dict[str, dict] = {}
    log_rounds = []
    caught: list[str] = []
    for r in range(rounds):
        load = load_average()
        order = []
        for plain, loader in pairs:
            steps = [s for s in (("plain", plain), ("loader", loader)) if s[1] is not None]
            order += steps if r % 2 == 0 else steps[::-1]
        seconds = {}
        for kind, case in order:
            name = case[0]
            with warnings.catch_warnings(record=True) as ws:
                warnings.simplefilter("always")
                t0 = time.perf_counter()
                if kind == "plain":
                    out = rasterio_read(case[1], case[2])
                elif name == "ingest_two_zone":
                    out = do_ingest()
                else:
                    out = load_compute(case[1], **case[2])
                s = time.perf_counter() - t0
            caught += [f"{name}: {w.category.__name__}: {w.message}" for w in ws]
            seconds[name] = round(s, 3)
            times.setdefault(name, []).append(s)
            if kind == "plain":
                baselines[name] = out
            elif name != "ingest_two_zone":
                arrays, info = out
                infos.setdefault(name, []).append(info)
                t_, y_, x_ = info["shape"]
                pixels[name] = t_ * y_ * x_ * 2
                if name in references:
                    base = baselines[plain_t if not name.endswith("_large") else f"{plain_t}_large"]
                    checks.setdefault(name, []).append(compare(arrays, base, references[name]))
                if r == rounds - 1:
                    infos[name][-1]["valid_share"] = round(float(np.isfinite(arrays["VV"]).mean()), 4)
            del out
        log_rounds.append(
            {"round": r, "load_average_1_5_15": load, "order": [c[0] for _, c in order], "seconds": seconds}
        )
        print(
            f"  round {r + 1}/{rounds} (load {load}): " + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()),
            flush=True,
        )
    pixels["ingest_two_zone"] = pixels["two_zone"]

    res: dict = {"rounds": rounds, "per_round": log_rounds}
    for name, ts in times.items():
        s = min(ts)
        entry = {"seconds": round(s, 3), "all_seconds": [round(t, 3) for t in ts], "mpix_s": mpix(pixels[name], s)}
        if name.startswith("rasterio"):
            entry["threads"] = threads if not name.startswith("rasterio_1t") else 1
        if name in infos:
            best_round = int(np.argmin(ts))
            entry.update(
                graph_s_best_round=round(infos[name][best_round]["graph_s"], 3),
                compute_s_best_round=round(infos[name][best_round]["compute_s"], 3),
                graph_s_min=round(min(i["graph_s"] for i in infos[name]), 3),
                compute_s_min=round(min(i["compute_s"] for i in infos[name]), 3),
                shape_time_y_x=infos[name][-1]["shape"],
                valid_share=infos[name][-1].get("valid_share"),
            )
        if name in checks:
            rounds_checked = checks[name]
            entry.update(rounds_checked[-1])
            entry["identical_in_every_round"] = all(
                c.get("identical_to_linear_to_db_of_plain_read") for c in rounds_checked
            )
        res[name] = entry
        print(f"  {name:<24} {pixels[name] / 1e6:7.1f} Mpix  {s:7.2f} s  {entry['mpix_s']:7.1f} Mpix/s", flush=True)

    base1, baseN = res["rasterio_1t"]["mpix_s"], res[plain_t]["mpix_s"]
    ratios = {
        f"native_n_items / {plain_t}": round(res["native_n_items"]["mpix_s"] / baseN, 3),
        "native_n_items / rasterio_1t": round(res["native_n_items"]["mpix_s"] / base1, 3),
        f"native_n_items compute only / {plain_t}": round(
            res[plain_t]["seconds"] / res["native_n_items"]["compute_s_min"], 3
        ),
        f"native_all_items / {plain_t}": round(res["native_all_items"]["mpix_s"] / baseN, 3),
        f"two_zone / {plain_t}": round(res["two_zone"]["mpix_s"] / baseN, 3),
        "ingest_two_zone / two_zone": round(res["ingest_two_zone"]["mpix_s"] / res["two_zone"]["mpix_s"], 3),
    }
    if large is not None:
        ratios[f"native_n_items_large / {plain_t}_large"] = round(
            res["native_n_items_large"]["mpix_s"] / res[f"{plain_t}_large"]["mpix_s"], 3
        )
    # per round, the same-grid ratio (each loader run against the plain read of its own round)
    res["same_grid_ratio_per_round"] = [round(times[plain_t][r] / times["native_n_items"][r], 3) for r in range(rounds)]
    res["ratios"] = ratios
    res["warnings"] = sorted(set(caught))[:20]
    return res


# ------------------------------------------------------------------------------- profile


def profile(arch: dict, work: Path, rounds: int) -> dict:
    """Where the time of the same-grid load goes, phase by phase, against the plain read:
    each phase's wall time summed over its calls, on Dask's synchronous scheduler (one thread,
    so the phases add up to the total), in the round of the lowest total of `rounds`
    alternating rounds after a warm-up (and their mean); both totals on threads (the
    throughput case), best of the rounds. The loader's phases
    are timed by wrapping the functions named in the table (slamgeo's and odc-stac's)."""
    import collections
    import functools

    import dask
    import odc.loader._builder as builder
    import odc.loader._rio as rio
    import odc.stac
    import rasterio
    from rasterio.windows import Window

    from slamgeo.io import ingest as ingest_mod
    from slamgeo.io.readers import archive, conventions, stac

    acc: collections.defaultdict[str, float] = collections.defaultdict(float)
    recording = [False]  # the phases of the synchronous runs only

    def timed(owner, name: str, label: str) -> None:
        f = getattr(owner, name)

        @functools.wraps(f)
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                if recording[0]:
                    acc[label] += time.perf_counter() - t0

        setattr(owner, name, wrapper)

    gdal_read = rasterio.io.DatasetReader.read
    for owner, name, label in (
        (stac, "read_item_collection", "json"),
        (conventions, "_read_header", "headers"),
        (archive, "normalise_item", "normalise"),
        (archive, "output_grid", "grid"),
        (archive, "check_tiling", "grid"),
        (odc.stac, "load", "odc_graph"),
        (archive, "open_items", "open_items"),
        (ingest_mod, "_provenance", "provenance"),
        (conventions, "power_to_db", "db"),
        (rio, "_rio_read", "rio_read"),
        (rio, "_reproject_info_from_rio", "roi"),
        (rio, "_do_read", "do_read"),
        (builder, "_dask_loader_tyx", "task"),
        (rasterio.io.DatasetReader, "read", "gdal_read"),
    ):
        timed(owner, name, label)

    import slamgeo

    like = write_like(work / "north_profile.gpkg", arch["north"])
    grid = {"crs": "EPSG:32630", "resolution": 10, "like": str(like)}
    cogs = arch["north_cogs"]

    def loader(scheduler: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        cube = slamgeo.load([str(arch["items_n_json"])], report=lambda _: None, **grid)
        t1 = time.perf_counter()
        with dask.config.set(scheduler=scheduler):
            dask.compute(cube["VV"].data, cube["VH"].data)
        return t1 - t0, time.perf_counter() - t1

    def plain_one(path: Path) -> np.ndarray:  # read_cog_db, its steps timed
        t0 = time.perf_counter()
        with rasterio.open(path) as src:
            acc["p_open"] += time.perf_counter() - t0
            out = np.empty((src.height, src.width), np.float32)
            nodata = src.nodata
            for r in range(0, src.height, WINDOW):
                for c in range(0, src.width, WINDOW):
                    h, w = min(WINDOW, src.height - r), min(WINDOW, src.width - c)
                    t1 = time.perf_counter()
                    block = gdal_read(src, 1, window=Window(c, r, w, h))
                    t2 = time.perf_counter()
                    block = np.where(block == nodata, np.float32(np.nan), block)
                    t3 = time.perf_counter()
                    with np.errstate(divide="ignore", invalid="ignore"):
                        out[r : r + h, c : c + w] = 10 * np.log10(block)
                    acc["p_read"] += t2 - t1
                    acc["p_nodata"] += t3 - t2
                    acc["p_db"] += time.perf_counter() - t3
            t4 = time.perf_counter()
        acc["p_close"] += time.perf_counter() - t4
        return out

    def plain() -> float:
        t0 = time.perf_counter()
        arrays = [plain_one(p) for p in cogs]
        t1 = time.perf_counter()
        for pol in ("vv", "vh"):
            np.stack([a for p, a in zip(cogs, arrays, strict=True) if p.name.endswith(f"_{pol}.tif")])
        acc["p_stack"] += time.perf_counter() - t1
        return time.perf_counter() - t0

    loader("sync"), plain(), loader("threads")  # warm-up: imports, GDAL drivers, the page cache
    threaded: dict[str, list[float]] = {"loader": [], "loader_graph": [], "loader_compute": [], "plain": []}
    loads, sync_rounds = [], []
    for r in range(rounds):
        loads.append(load_average())
        acc.clear()
        recording[0] = True
        totals = {}
        for step in ("loader", "plain") if r % 2 == 0 else ("plain", "loader"):
            if step == "loader":
                totals["graph"], totals["compute"] = loader("sync")
            else:
                totals["plain"] = plain()
        recording[0] = False
        sync_rounds.append({**acc, **totals})
        # the throughput case: threads (the same functions, wrapped: a few microseconds a call)
        for step in ("loader", "plain") if r % 2 == 0 else ("plain", "loader"):
            if step == "loader":
                g, c = loader("threads")
                threaded["loader"].append(g + c)
                threaded["loader_graph"].append(g)
                threaded["loader_compute"].append(c)
            else:
                t0 = time.perf_counter()
                rasterio_read(cogs, cpu_count())
                threaded["plain"].append(time.perf_counter() - t0)

    def loader_rows(m: dict) -> list[tuple[str, float]]:
        return [
            ("load: parse the items JSON (pystac)", m["json"]),
            ("load: header checks (GDAL open of every file)", m["headers"]),
            ("load: normalise items (copies, hrefs, footprints)", m["normalise"] - m["headers"]),
            ("load: output grid and tiling guard (like= file read)", m["grid"]),
            ("load: odc-stac graph construction (odc.stac.load)", m["odc_graph"]),
            (
                "load: cube assembly (dB wrap, CRS attributes, checks)",
                m["open_items"] - m["normalise"] - m["grid"] - m["odc_graph"],
            ),
            ("load: provenance fingerprint (sha256 of every input file)", m["provenance"]),
            ("load: the rest of slamgeo.load", m["graph"] - m["open_items"] - m["provenance"] - m["json"]),
            ("compute: file open, GDAL env, band selection (odc-stac)", m["rio_read"] - m["roi"] - m["do_read"]),
            ("compute: read window / reprojection decision (odc-geo)", m["roi"]),
            ("compute: GDAL read (DEFLATE decode, copy out)", m["gdal_read"]),
            ("compute: no-data -> NaN remap (odc-stac)", m["do_read"] - m["gdal_read"]),
            ("compute: chunk fill and fuser paste (odc-stac)", m["task"] - m["rio_read"]),
            ("compute: dB conversion (power_to_db, float64 per date)", m["db"]),
            ("compute: Dask scheduling and the rest", m["compute"] - m["task"] - m["db"]),
        ]

    def plain_rows(m: dict) -> list[tuple[str, float]]:
        steps = ("p_open", "p_read", "p_nodata", "p_db", "p_close", "p_stack")
        return [
            ("open (rasterio.open)", m["p_open"]),
            ("GDAL read (DEFLATE decode, copy out)", m["p_read"]),
            ("no-data -> NaN (np.where)", m["p_nodata"]),
            ("dB (float32 10 log10)", m["p_db"]),
            ("close", m["p_close"]),
            ("stack the dates", m["p_stack"]),
            ("the rest (Python loop)", m["plain"] - sum(m[k] for k in steps)),
        ]

    def table(rows_: list[tuple[str, float]]) -> list[dict]:
        total = sum(v for _, v in rows_)
        return [{"phase": k, "seconds": round(v, 4), "share": round(v / total, 3)} for k, v in rows_]

    # the quietest round of each (the lowest total: the least disturbed by other processes), and the mean
    best_l = min(sync_rounds, key=lambda m: m["graph"] + m["compute"])
    best_p = min(sync_rounds, key=lambda m: m["plain"])
    mean = {k: sum(m[k] for m in sync_rounds) / rounds for k in sync_rounds[0]}
    return {
        "rounds": rounds,
        "load_average_per_round": loads,
        "scheduler": "synchronous (phases), threads (totals)",
        "loader_sync_total_s_per_round": [round(m["graph"] + m["compute"], 4) for m in sync_rounds],
        "plain_sync_total_s_per_round": [round(m["plain"], 4) for m in sync_rounds],
        "loader_sync_best_round": {"graph_s": round(best_l["graph"], 4), "compute_s": round(best_l["compute"], 4)},
        "loader_phases": table(loader_rows(best_l)),
        "plain_phases": table(plain_rows(best_p)),
        "loader_phases_mean": table(loader_rows(mean)),
        "plain_phases_mean": table(plain_rows(mean)),
        "threads_best_s": {k: round(min(v), 4) for k, v in threaded.items()},
        "threads_all_s": {k: [round(x, 4) for x in v] for k, v in threaded.items()},
    }


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
    parser.add_argument("--repeats", type=int, default=5, help="timings are the best of this many alternating rounds")
    parser.add_argument("--quick", action="store_true", help="N = 256, 12 dates")
    parser.add_argument(
        "--diagnose",
        default="",
        help="comma list of extra ingests of A and 4A: trace (tracemalloc: NumPy's peak), 1thread (1 Dask thread)",
    )
    parser.add_argument("--memory-repeats", type=int, default=1, help="ingest each size this many times")
    parser.add_argument("--memory-only", action="store_true", help="skip the throughput part")
    parser.add_argument("--profile", action="store_true", help="add the phase profile of the same-grid load")
    parser.add_argument("--profile-only", action="store_true", help="the phase profile alone (archive of size N only)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the archives (a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write")
    args = parser.parse_args()
    from slamgeo.schema import CHUNK

    if args.quick:
        args.size, args.dates = 256, 12
    chunk = args.chunk or CHUNK
    default_name = "bench_archive.profile.json" if args.profile_only else "bench_archive.json"
    out = args.out or RESULTS / ("bench_archive.quick.json" if args.quick else default_name)

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
        for size in (args.size,) if args.profile_only else (args.size, 2 * args.size):
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

        if args.profile or args.profile_only:
            print(f"phase profile of the same-grid load ({args.repeats} alternating rounds):", flush=True)
            result["profile"] = profile(archives[args.size], work, args.repeats)
            prof = result["profile"]
            for key in ("loader_phases", "plain_phases"):
                for row in prof[key]:
                    print(f"  {row['phase']:<62} {row['seconds']:7.4f} s  {100 * row['share']:5.1f} %")
                print()
            print(f"  threads, best: {prof['threads_best_s']}", flush=True)
        if args.profile_only:
            result["machine"] = {**info, "load_average_end": load_average()}
            print(f"wrote {write_result('bench_archive', result, out=out)}")
            return
        if not args.memory_only:
            print(
                f"throughput on the {args.size} px archive (and the north slice of the {2 * args.size} px one; "
                f"Mpix = pixels x dates x 2 pols), best of {args.repeats} alternating rounds:"
            )
            load0 = load_average()
            result["throughput"] = throughput(archives[args.size], archives[2 * args.size], work, args.repeats)
            result["throughput"]["load_average_before_after"] = [load0, load_average()]
            for k, v in result["throughput"]["ratios"].items():
                print(f"  {k:<44} x{v:.2f}")

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
