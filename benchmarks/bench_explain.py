"""Throughput and peak memory of the Zarr-to-Zarr `explain` job against an in-memory baseline.

    .venv/bin/python benchmarks/bench_explain.py             # 512 x 512 and 1024 x 1024, 61 dates, chunks 256
    .venv/bin/python benchmarks/bench_explain.py --quick     # 128 and 256, 24 dates, chunks 64
    .venv/bin/python benchmarks/bench_explain.py --size 256 --chunk 128   # what fits ~10 min on 2 loaded cores

A synthetic scene (`make_scene`) is written once as a cube store (Zarr format 2) and a model
with the DEFAULT architecture is trained on it once, quickly (the architecture sets the cost).
Then each measurement runs in a fresh Python process whose whole process tree is polled with
psutil every 50 ms for its summed RSS (the driver, which also hosts the LocalCluster's
scheduler and nannies, plus the worker processes):

(a) `explain_store(cube, model, out)` on a LocalCluster sized to the machine, for each `--configs`
    entry "WxT" (W worker processes x T threads; default 2x1 and 1x2 on 2 cores, and 2x1:notrim,
    the same cluster with workers started without distributed's MALLOC_TRIM_THRESHOLD_=65536,
    which would make every torch allocation an mmap/munmap with fresh page faults; workers now
    undo it themselves with `slamgeo.jobs.runtime.relax_malloc_trim`, so 2x1:notrim is the control
    that the fix is complete: it should match 2x1). Pixels per
    second = valid pixels / wall time of the whole `explain` call (opening the cube, the
    "centred" reference map, the output template, every block computed and written, the
    final consolidation); the cluster's start is timed apart. The run is instrumented
    (without changing the library) to split that time: reference map (driver), blocks
    (cluster), and inside the workers explain_array, lock waits and Zarr writes, plus the
    task stream's busy time per worker.
(b) the in-memory baseline: the same cube loaded into one NumPy array `(N, C, T)` dB, pushed
    through `explain_array(model, x, options, reference)` in one process with
    `torch.set_num_threads(cpus)`, same options and batch size; the reference map is given
    (its cost is timed apart). (b) runs before and after every (a) run, and each (a) is
    compared with the mean of the two around it: ratio (a)/(b), the target being >= 0.85.
    Also reported: the ratio for the blocks alone (without the reference map), against (b)
    with its reference map, and CPU seconds (b)/(a) (user + system of all processes; less
    sensitive than wall time to other work on the machine).
(c) peak memory of the whole explain run (sum of RSS of the process tree) for the cube and for
    one four times larger (the cube tiled 2 x 2, same chunks), with the first config; reported:
    both peaks and their ratio (target <= 1.25).

Prints a table and writes `benchmarks/results/bench_explain.json` (`bench_explain.quick.json`
with --quick), with the machine load (1/5/15-minute load average) before and after each run:
other processes on the machine slow every figure, ratios within one run less so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, cpu_count, load_average, machine_info, make_inputs, run_child, tile_cube, write_result  # noqa: E402

# --------------------------------------------------------------------------- child processes

# (a) explain on a fresh LocalCluster; instrumented by wrapping functions (the library is untouched).
EXPLAIN_CHILD = r'''
import json, sys, time
args = json.loads(sys.argv[1])
import numpy as np
import slamgeo.jobs.explain as ex
from slamgeo.jobs.runtime import ClusterOptions, dask_client

phases = {}
def timed(name, fn):
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0
    return wrapper
ex.scene_reference = timed("reference_s", ex.scene_reference)
ex._run = timed("blocks_s", ex._run)

def install_timers():
    """In each worker: time explain_array, the torch lock waits and the Zarr region writes."""
    import time, torch, xarray as xr
    import slamgeo.jobs.explain as ex
    if getattr(ex, "_bench_times", None) is not None:
        return
    t = ex._bench_times = {"explain_array_s": 0.0, "block_arrays_s": 0.0, "lock_wait_s": 0.0,
                           "to_zarr_s": 0.0, "blocks": 0, "pixels": 0, "torch_threads": []}
    f_arr, f_blk, f_mod, f_zarr = ex.explain_array, ex._explain_block_arrays, ex._model_on_device, xr.Dataset.to_zarr
    def explain_array(model, x, **kw):
        t0 = time.perf_counter()
        try:
            return f_arr(model, x, **kw)
        finally:
            t["explain_array_s"] += time.perf_counter() - t0
            t["blocks"] += 1
            t["pixels"] += len(x)
            n = torch.get_num_threads()
            if n not in t["torch_threads"]:
                t["torch_threads"].append(n)
    def block_arrays(*a, **k):
        t0 = time.perf_counter()
        try:
            return f_blk(*a, **k)
        finally:
            t["block_arrays_s"] += time.perf_counter() - t0
    class TimedLock:
        def __init__(self, lock):
            self.lock = lock
        def __enter__(self):
            t0 = time.perf_counter()
            self.lock.acquire()
            t["lock_wait_s"] += time.perf_counter() - t0
            return self
        def __exit__(self, *exc):
            self.lock.release()
    def model_on_device(model, device):
        m, lock = f_mod(model, device)
        return m, TimedLock(lock)
    def to_zarr(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return f_zarr(self, *a, **k)
        finally:
            t["to_zarr_s"] += time.perf_counter() - t0
    ex.explain_array, ex._explain_block_arrays, ex._model_on_device = explain_array, block_arrays, model_on_device
    xr.Dataset.to_zarr = to_zarr

def collect():
    import os
    import slamgeo.jobs.explain as ex
    return dict(getattr(ex, "_bench_times", None) or {}, env={
        k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "SLAMGEO_CORES_PER_WORKER")})

def cpu_seconds():
    import psutil
    c = psutil.Process().cpu_times()
    return c.user + c.system

if args.get("notrim"):
    # workers without distributed's default MALLOC_TRIM_THRESHOLD_=65536 (see --configs)
    import dask
    dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})
t0 = time.perf_counter()
opts = ex.ExplainOptions(batch_size=args["batch_size"])
copts = ClusterOptions(n_workers=args["workers"], threads_per_worker=args["threads"], dashboard=False)
with dask_client(copts, quiet=True) as client:
    client.wait_for_workers(args["workers"])
    cluster_s = time.perf_counter() - t0
    client.run(install_timers)
    from distributed import get_task_stream
    cpu_w0 = client.run(cpu_seconds)
    cpu_d0 = cpu_seconds()
    w0 = time.time()
    with get_task_stream(client) as ts:
        t1 = time.perf_counter()
        rep = ex.explain_store(args["cube"], args["model"], args["out"], options=opts, client=client, overwrite=True,
                         progress=False)
        explain_s = time.perf_counter() - t1
    w1 = time.time()
    cpu_d1 = cpu_seconds()
    cpu_w1 = client.run(cpu_seconds)
    workers = client.run(collect)
    stream = ts.data

from dask.utils import key_split
busy, by_prefix = {}, {}
for rec in stream:
    for ss in rec.get("startstops", ()):
        d = ss["stop"] - ss["start"]
        k = (key_split(rec["key"]), ss["action"])
        by_prefix[k] = by_prefix.get(k, 0.0) + d
        if ss["action"] == "compute":
            busy[rec["worker"]] = busy.get(rec["worker"], 0.0) + d
print(json.dumps({
    "window": [w0, w1],
    "cluster_start_s": cluster_s,
    "explain_s": explain_s,
    "reference_s": phases.get("reference_s", 0.0),
    "blocks_s": phases.get("blocks_s", 0.0),
    "valid_pixels": rep.valid_pixels,
    "blocks": rep.blocks_total,
    "cpu_s": (cpu_d1 - cpu_d0) + sum(cpu_w1[k] - cpu_w0[k] for k in cpu_w0 if k in cpu_w1),
    "cpu_s_driver": cpu_d1 - cpu_d0,
    "workers": list(workers.values()),
    "task_seconds": {f"{p}:{a}": round(v, 3) for (p, a), v in sorted(by_prefix.items(), key=lambda kv: -kv[1])},
    "worker_busy_s": sorted(round(v, 2) for v in busy.values()),
}))
'''

# (b) the in-memory baseline: one process, torch on all cores, no Dask in the timed part.
BASELINE_CHILD = r"""
import json, sys, time
args = json.loads(sys.argv[1])
import torch
torch.set_num_threads(args["threads"])
import dask
import numpy as np
from slamgeo.method.checkpoint import load_model
from slamgeo.io.cube import open_cube
from slamgeo.jobs.explain import ExplainOptions, explain_array, scene_reference

model = load_model(args["model"])
cube = open_cube(args["cube"])
opts = ExplainOptions(batch_size=args["batch_size"])
t0 = time.perf_counter()
stacked = np.stack([cube[b].values for b in model.bands])  # (C, T, y, x)
c, t = stacked.shape[:2]
x = np.ascontiguousarray(stacked.reshape(c, t, -1).transpose(2, 0, 1))
del stacked
load_s = time.perf_counter() - t0
t0 = time.perf_counter()
with dask.config.set(scheduler="threads"):
    ref = scene_reference(model, cube, opts)
reference_s = time.perf_counter() - t0
w0 = time.time()
c0 = time.process_time()
t0 = time.perf_counter()
emb, imp, err = explain_array(model, x, options=opts, reference=ref)
compute_s = time.perf_counter() - t0
cpu_s = time.process_time() - c0
w1 = time.time()
print(json.dumps({"window": [w0, w1], "load_s": load_s, "reference_s": reference_s, "compute_s": compute_s,
                  "cpu_s": cpu_s,
                  "pixels": int(x.shape[0]), "valid_pixels": int(np.isfinite(err).sum()),
                  "torch_threads": torch.get_num_threads()}))
"""


# --sweep: where the time goes, in one process, on a fixed sample of valid pixels; the
# configurations are interleaved and repeated, and each keeps its best time, so that a
# machine busy with other work skews them less.
SWEEP_CHILD = r"""
import json, sys, time
args = json.loads(sys.argv[1])
import numpy as np, torch, zarr, tempfile, shutil
from slamgeo.method.checkpoint import load_model
from slamgeo.io.cube import open_cube
from slamgeo.jobs.explain import ExplainOptions, explain_array, _block_pixels
from slamgeo.method.gradslam import grad_slam, reference_map
from slamgeo.io.sample import sample_series

model = load_model(args["model"])
cube = open_cube(args["cube"])
x = sample_series(cube, args["pixels"], seed=2, bands=model.bands)
n = len(x)
xs = torch.from_numpy(model.standardise(x))
enc = model.model.encoder
layers = list(enc.blocks.values())
ref = reference_map(enc, xs[:2048], layers)
tasks = {}
for th in args["threads"]:
    for bs in args["batch_sizes"]:
        tasks[f"explain_array threads={th} batch_size={bs}"] = (th, lambda bs=bs: explain_array(
            model, x, options=ExplainOptions(batch_size=bs), reference=ref.numpy()))
    for gb in args["grad_batches"]:
        tasks[f"grad_slam only threads={th} grad_slam batch_size={gb}"] = (th, lambda gb=gb: grad_slam(
            enc, xs, layers, scale="centred", reference=ref, return_embedding=True, batch_size=gb))
    tasks[f"reference_map threads={th}"] = (th, lambda: reference_map(enc, xs, layers))
best = {k: float("inf") for k in tasks}
for _ in range(args["repeats"]):
    for k, (th, fn) in tasks.items():
        torch.set_num_threads(th)
        t0 = time.perf_counter()
        fn()
        best[k] = min(best[k], time.perf_counter() - t0)

# one block's plumbing outside explain_array: stacking bands into pixels and writing the outputs
c = args["chunk"]
t_dim = cube.sizes["time"]
bands = [cube[b].isel(y=slice(0, c), x=slice(0, c)).values for b in model.bands]
t0 = time.perf_counter(); px = _block_pixels(bands); stack_s = time.perf_counter() - t0
d = model.model.cfg.embed_dim
imp = np.random.default_rng(0).standard_normal((px.shape[0], d, t_dim)).astype(np.float32)
t0 = time.perf_counter(); moved = np.ascontiguousarray(np.moveaxis(imp, 0, -1).reshape(d, t_dim, c, c)); move_s = time.perf_counter() - t0
tmp = tempfile.mkdtemp()
try:
    arr = zarr.create_array(tmp + "/imp.zarr", shape=moved.shape, chunks=moved.shape, dtype="float32", zarr_format=2)
    t0 = time.perf_counter(); arr[...] = moved; write_s = time.perf_counter() - t0
finally:
    shutil.rmtree(tmp)
print(json.dumps({
    "pixels": n,
    "pixels_per_s": {k: n / v for k, v in best.items()},
    "block": {"pixels": c * c, "stack_bands_s": stack_s, "reorder_importance_s": move_s, "zarr_write_importance_s": write_s,
              "importance_mib": moved.nbytes / 2**20},
}))
"""


def run_sweep(cube: Path, model: Path, chunk: int, cpus: int, pixels: int, repeats: int) -> dict:
    args = {
        "cube": str(cube),
        "model": str(model),
        "chunk": chunk,
        "pixels": pixels,
        "repeats": repeats,
        "threads": sorted({1, cpus}),
        "batch_sizes": [1024, 4096, 16384],
        "grad_batches": [256, 1024, 4096],
    }
    load0 = load_average()
    res = run_child(SWEEP_CHILD, json.dumps(args))
    res["load_before"], res["load_after"] = load0, load_average()
    return res


def run_explain(
    cube: Path,
    model: Path,
    out: Path,
    workers: int,
    threads: int,
    batch_size: int,
    interval: float,
    notrim: bool = False,
) -> dict:
    args = {
        "cube": str(cube),
        "model": str(model),
        "out": str(out),
        "workers": workers,
        "threads": threads,
        "batch_size": batch_size,
        "notrim": notrim,
    }
    load0 = load_average()
    res = run_child(EXPLAIN_CHILD, json.dumps(args), interval=interval)
    res["load_before"], res["load_after"] = load0, load_average()
    res["pixels_per_s"] = res["valid_pixels"] / res["explain_s"]
    res["pixels_per_s_blocks_only"] = res["valid_pixels"] / res["blocks_s"] if res["blocks_s"] else None
    res["config"] = f"{workers}x{threads}" + (":notrim" if notrim else "")
    res["out_bytes"] = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    shutil.rmtree(out, ignore_errors=True)
    return res


def run_baseline(cube: Path, model: Path, threads: int, batch_size: int, interval: float) -> dict:
    args = {"cube": str(cube), "model": str(model), "threads": threads, "batch_size": batch_size}
    load0 = load_average()
    res = run_child(BASELINE_CHILD, json.dumps(args), interval=interval)
    res["load_before"], res["load_after"] = load0, load_average()
    res["pixels_per_s"] = res["valid_pixels"] / res["compute_s"]
    return res


def print_sweep(sw: dict) -> None:
    print(f"sweep ({sw['pixels']} px, best of repeats; load {sw['load_before'][0]}->{sw['load_after'][0]}):")
    for k, v in sw["pixels_per_s"].items():
        print(f"  {k:<55} {v:>8.0f} px/s")
    b = sw["block"]
    print(
        f"  one {b['pixels']}-px block: stack bands {b['stack_bands_s']:.3f} s, reorder importance "
        f"{b['reorder_importance_s']:.3f} s, Zarr write of importance ({b['importance_mib']:.0f} MiB) "
        f"{b['zarr_write_importance_s']:.3f} s",
        flush=True,
    )


def _fmt_load(r: dict) -> str:
    a, b = r.get("load_before") or ["?"], r.get("load_after") or ["?"]
    return f"{a[0]}->{b[0]}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512, help="N: the cube is N x N pixels, the large one 2N x 2N")
    p.add_argument("--dates", type=int, default=61)
    p.add_argument("--chunk", type=int, default=256, help="spatial chunk of both cubes (pixels)")
    p.add_argument("--batch-size", type=int, default=None, help="ExplainOptions.batch_size (default: its default)")
    p.add_argument(
        "--configs",
        default=None,
        help="LocalCluster shapes 'WxT[:notrim],...' (default 'CPUSx1,1xCPUS,CPUSx1:notrim', e.g. "
        "2x1,1x2,2x1:notrim); ':notrim' starts the workers without distributed's default "
        "MALLOC_TRIM_THRESHOLD_=65536 (distributed.nanny.pre-spawn-environ)",
    )
    p.add_argument("--sample-size", type=int, default=20_000, help="training sample (pixels)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs")
    p.add_argument("--model", type=Path, default=None, help="use this model directory instead of training one")
    p.add_argument("--skip-large", action="store_true", help="skip (c), the 2N x 2N cube")
    p.add_argument(
        "--sweep",
        action="store_true",
        help="also profile in one process: batch sizes, torch threads, reference map, block plumbing",
    )
    p.add_argument("--sweep-only", action="store_true", help="only the --sweep profile (no cluster runs)")
    p.add_argument("--sweep-pixels", type=int, default=4096)
    p.add_argument("--sweep-repeats", type=int, default=2)
    p.add_argument("--poll", type=float, default=0.05, help="RSS polling interval (s)")
    p.add_argument("--quick", action="store_true", help="N = 128, 24 dates, chunks 64, a model trained briefly")
    p.add_argument("--workdir", type=Path, default=None, help="where the cubes go (a temporary directory)")
    p.add_argument("--out", type=Path, default=None, help="JSON to write")
    args = p.parse_args()
    if args.quick:
        args.size, args.dates, args.chunk, args.sample_size, args.epochs = 128, 24, 64, 4000, 1
    cpus = cpu_count()
    configs = []
    for c in (args.configs or f"{cpus}x1,1x{cpus},{cpus}x1:notrim").split(","):
        shape, _, flag = c.partition(":")
        w, t = (int(v) for v in shape.split("x"))
        configs.append((w, t, flag == "notrim"))
    if args.out is None:
        args.out = RESULTS / ("bench_explain.quick.json" if args.quick else "bench_explain.json")

    from slamgeo.jobs.explain import ExplainOptions

    batch_size = args.batch_size or ExplainOptions().batch_size
    info = machine_info()
    print(f"machine: {cpus} cpus, load {info['load_average_1_5_15']}, torch {info['versions']['torch']}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="slamgeo-bench-explain-", dir=args.workdir))
    t_all = time.perf_counter()
    try:
        inputs = make_inputs(
            work,
            size=args.size,
            n_dates=args.dates,
            chunk=args.chunk,
            sample_size=args.sample_size,
            max_epochs=args.epochs,
            model_dir=args.model,
        )
        cube, model = inputs["cube"], inputs["model"]
        print(
            f"inputs: scene {args.size}^2 x {args.dates} dates in {inputs['scene_s']} s, "
            f"model trained in {inputs['train_s']} s",
            flush=True,
        )

        sweep = None
        if args.sweep or args.sweep_only:
            sweep = run_sweep(cube, model, args.chunk, cpus, args.sweep_pixels, args.sweep_repeats)
            print_sweep(sweep)
        if args.sweep_only:
            path = write_result(
                "bench_explain",
                {
                    "benchmark": "bench_explain",
                    "sweep_only": True,
                    "machine": info,
                    "settings": vars(args),
                    "sweep": sweep,
                },
                out=args.out,
            )
            print(f"wrote {path}")
            return

        # (b) brackets every (a): b0, a1, b1, a2, b2, ...; each (a) is compared with the mean of
        # the two (b) runs around it, so that a change of load during the run skews it less.
        bases: list[dict] = []

        def baseline() -> dict:
            b = run_baseline(cube, model, cpus, batch_size, args.poll)
            bases.append(b)
            print(
                f"(b) in-memory explain_array, torch threads {b['torch_threads']}: {b['valid_pixels']} px in "
                f"{b['compute_s']:.1f} s = {b['pixels_per_s']:.0f} px/s, {b['cpu_s']:.1f} CPU s (reference map "
                f"{b['reference_s']:.1f} s), load {_fmt_load(b)}",
                flush=True,
            )
            return b

        baseline()
        runs = []
        for w, t, notrim in configs:
            r = run_explain(cube, model, work / f"out_{w}x{t}.zarr", w, t, batch_size, args.poll, notrim)
            runs.append(r)
            print(
                f"(a) explain {r['config']}: {r['valid_pixels']} px in {r['explain_s']:.1f} s = {r['pixels_per_s']:.0f} px/s"
                f" ({r['reference_s']:.1f} s reference map, {r['blocks_s']:.1f} s blocks; {r['cpu_s']:.1f} CPU s),"
                f" peak RSS {r['memory']['peak_tree_rss_mib']:.0f} MiB, load {_fmt_load(r)}",
                flush=True,
            )
            b_before, b_after = bases[-1], baseline()
            r["baseline_pixels_per_s"] = (b_before["pixels_per_s"] + b_after["pixels_per_s"]) / 2
            r["baseline_with_reference_pixels_per_s"] = (
                sum(b["valid_pixels"] / (b["compute_s"] + b["reference_s"]) for b in (b_before, b_after)) / 2
            )
            r["baseline_cpu_s"] = (b_before["cpu_s"] + b_after["cpu_s"]) / 2
            r["ratio"] = r["pixels_per_s"] / r["baseline_pixels_per_s"]
            print(f"    ratio (a)/(b) {r['ratio']:.3f} against the mean of the (b) runs before and after", flush=True)
        large = None
        if not args.skip_large:
            t0 = time.perf_counter()
            cube2 = tile_cube(cube, work / f"cube_{2 * args.size}.zarr", chunk=args.chunk)
            tile_s = time.perf_counter() - t0
            w, t, notrim = configs[0]
            large = run_explain(cube2, model, work / "out_large.zarr", w, t, batch_size, args.poll, notrim)
            large["tile_s"] = round(tile_s, 2)
            print(
                f"(c) explain {large['config']} on {2 * args.size}^2: {large['valid_pixels']} px in {large['explain_s']:.1f} s = "
                f"{large['pixels_per_s']:.0f} px/s, peak RSS {large['memory']['peak_tree_rss_mib']:.0f} MiB,"
                f" load {_fmt_load(large)}",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # ------------------------------------------------------------------ summary
    small = runs[0]
    rows = []
    for i, b in enumerate(bases):
        rows.append(
            (
                f"(b) explain_array #{i + 1}",
                f"1 proc x {b['torch_threads']} torch threads",
                b["valid_pixels"],
                b["compute_s"],
                b["pixels_per_s"],
                None,
                b["cpu_s"],
                b["memory"]["peak_tree_rss_mib"],
                _fmt_load(b),
            )
        )
    for r in runs:
        rows.append(
            (
                f"(a) explain {args.size}^2",
                f"{r['config']} (workers x threads)",
                r["valid_pixels"],
                r["explain_s"],
                r["pixels_per_s"],
                r["ratio"],
                r["cpu_s"],
                r["memory"]["peak_tree_rss_mib"],
                _fmt_load(r),
            )
        )
    if large:
        rows.append(
            (
                f"(c) explain {2 * args.size}^2",
                f"{large['config']} (workers x threads)",
                large["valid_pixels"],
                large["explain_s"],
                large["pixels_per_s"],
                None,
                large["cpu_s"],
                large["memory"]["peak_tree_rss_mib"],
                _fmt_load(large),
            )
        )
    print()
    print(
        f"{'run':<26} {'where':<28} {'valid px':>9} {'seconds':>8} {'px/s':>7} {'(a)/(b)':>7} {'CPU s':>7} "
        f"{'peak MiB':>9}  load(1m)"
    )
    for row in rows:
        ratio = "" if row[5] is None else f"{row[5]:.3f}"
        print(
            f"{row[0]:<26} {row[1]:<28} {row[2]:>9} {row[3]:>8.1f} {row[4]:>7.0f} {ratio:>7} {row[6]:>7.1f} "
            f"{row[7]:>9.0f}  {row[8]}"
        )
    best = max(runs, key=lambda r: r["ratio"])
    summary = {
        "baseline_pixels_per_s_all_runs": [round(b["pixels_per_s"], 1) for b in bases],
        "explain_pixels_per_s": {r["config"]: round(r["pixels_per_s"], 1) for r in runs},
        "ratio_explain_to_baseline": {r["config"]: round(r["ratio"], 3) for r in runs},
        "ratio_blocks_only_to_baseline": {
            r["config"]: round(r["valid_pixels"] / r["blocks_s"] / r["baseline_pixels_per_s"], 3) for r in runs
        },
        "ratio_explain_to_baseline_with_its_reference_map": {
            r["config"]: round(r["pixels_per_s"] / r["baseline_with_reference_pixels_per_s"], 3) for r in runs
        },
        "cpu_seconds_baseline_over_explain": {r["config"]: round(r["baseline_cpu_s"] / r["cpu_s"], 3) for r in runs},
        "reference_map_share_of_explain": {r["config"]: round(r["reference_s"] / r["explain_s"], 3) for r in runs},
        "best_config": best["config"],
        "throughput_target_met": best["ratio"] >= 0.85,
    }
    if large:
        ratio = large["memory"]["peak_tree_rss_mib"] / small["memory"]["peak_tree_rss_mib"]
        summary.update(
            {
                "peak_rss_mib_small": small["memory"]["peak_tree_rss_mib"],
                "peak_rss_mib_large": large["memory"]["peak_tree_rss_mib"],
                "peak_ratio_large_to_small": round(ratio, 3),
                "memory_target_met": ratio <= 1.25,
            }
        )
        print(
            f"peak memory {small['memory']['peak_tree_rss_mib']:.0f} MiB ({args.size}^2) -> "
            f"{large['memory']['peak_tree_rss_mib']:.0f} MiB ({2 * args.size}^2): x{ratio:.2f} (target <= 1.25)"
        )
    print(
        "throughput (a)/(b): "
        + ", ".join(f"{k} {v:.3f}" for k, v in summary["ratio_explain_to_baseline"].items())
        + " (target >= 0.85); blocks only: "
        + ", ".join(f"{k} {v:.3f}" for k, v in summary["ratio_blocks_only_to_baseline"].items())
        + "; reference map share of explain: "
        + ", ".join(f"{k} {v:.2f}" for k, v in summary["reference_map_share_of_explain"].items())
    )
    result = {
        "benchmark": "bench_explain",
        "quick": args.quick,
        "settings": {
            "size": args.size,
            "large_size": None if args.skip_large else 2 * args.size,
            "dates": args.dates,
            "chunk": args.chunk,
            "batch_size": batch_size,
            "configs": [f"{w}x{t}" + (":notrim" if n else "") for w, t, n in configs],
            "explain_options": dataclasses.asdict(ExplainOptions(batch_size=batch_size)),
            "architecture": "default CAEConfig (64/128/256 channels, kernels 7/5/3, hidden 128/64, D=2)",
            "training": {
                "sample_size": args.sample_size,
                "max_epochs": args.epochs,
                "model": str(args.model) if args.model else "trained here",
            },
            "baseline_torch_threads": bases[0]["torch_threads"],
            "rss_poll_interval_s": args.poll,
            "zarr_format": 2,
        },
        "machine": info,
        "load_average_end": load_average(),
        "inputs": {k: v for k, v in inputs.items() if k.endswith("_s")},
        "summary": summary,
        "baseline_runs": bases,
        "explain_runs": runs,
        "large": large,
        "sweep": sweep,
        "wall_s": round(time.perf_counter() - t_all, 1),
    }
    path = write_result("bench_explain", result, out=args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
