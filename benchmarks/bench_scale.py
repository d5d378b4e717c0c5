"""How the season pipeline's steps scale with the scene: time, memory, tasks and graph bytes.

    .venv/bin/python benchmarks/bench_scale.py             # 256, 512, 1024, 2048 px, 61 dates, chunk 512
    .venv/bin/python benchmarks/bench_scale.py --quick     # 256 and 512 px, 24 dates (a few minutes)
    .venv/bin/python benchmarks/bench_scale.py --sizes 256,512,1024 --deadline 14:45   # stop in time

For each size N (an N x N synthetic scene, `make_scene` + `write_scene`: per-date GeoTIFFs and
the parcels), the season pipeline (`slamgeo.pipeline.steps.run_pipeline`, from a generated
YAML: GeoTIFF input, the default chunk of 512, a LocalCluster of 2 workers x 1 thread) runs
ingest -> train (a checkpoint reused) -> align -> explain -> cluster -> parcels -> report in a
fresh Python process. The model is trained once (on the smallest scene, modest epochs, the
default architecture) and its checkpoint reused for every size (`model.checkpoint`), so the
train step is the reuse only; training is timed apart. On the largest size, one more step,
`parcels_grid`, runs the parcels stage (`parcels_store`) with about 100 000 square parcels
(`slamgeo.synth.grid_parcels`) to rasterise and aggregate.

Per step (each pipeline step's runner is wrapped; the library is not changed):
- seconds, pixels per second and seconds per pixel (all N^2 pixels of the scene);
- peak RSS summed over the whole process tree (the driver, which holds the client, the
  scheduler and the nannies, plus the worker processes), polled with psutil every 0.2 s from
  the parent; also the driver's own peak;
- tasks: a scheduler plugin counts the tasks that entered the scheduler (`update_graph`) and the
  tasks computed (processing -> memory) during the step;
- graph bytes: the serialised size of every graph the client sends (`update-graph`, measured
  as distributed measures it for its warning), their count and the largest;
- distributed's "Sending large graph" warnings, caught with a logging handler
  (`logging.captureWarnings`, every occurrence: the filter is set to "always"), with sizes.

The scene is written (and the model trained) in a separate process without a Dask client,
timed as `synth`/`train` and left out of the goals. With `--s3`, the 1024 scene runs again
with the pipeline's output on a moto S3 server on loopback and the requests per step are
counted from the server's request log (optional, slow).

CPU seconds per step: the driver's (`getrusage(RUSAGE_SELF)` in the pipeline's process: the
client, the LocalCluster's scheduler and nannies) and the workers' (each worker process's own
`psutil` CPU times, asked with `client.run` before and after the step), and the driver's share
of their sum, per step and over the run. `--placement driver` runs ingest with the driver's
threads and training in the driver's torch (as the pipeline did before they moved to the
workers); `--placement workers` (default) ingests under the client and trains with
`slamgeo.jobs.training.train_on_cluster` (put in place of the step's `train` in the child).
`--fresh-training` trains a model in the pipeline (`model.train`) instead of reusing one.

Goals, printed and stored as booleans: each step's s/px at the largest size <= 1.25x its
figure at 512; peak tree memory at the largest size <= 1.5x that at 512; no "Sending large
graph" warning at any size; tasks and graph bytes grow at most linearly with the number of
spatial blocks (from 512 to the largest size: growth <= the growth of the blocks).

Writes `benchmarks/results/bench_scale.json` (`bench_scale.quick.json` with --quick) after
every size, and a log-log figure of seconds per pixel against pixels, one line per step, to
`docs/figures/bench_scale.png` (`benchmarks/results/bench_scale.quick.png` with --quick). The machine is shared
(2 cores, other jobs): absolute times are noisy, each size runs once (no best-of: a size takes
minutes), and the load average is recorded before and after each run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, MiB, TreeRSS, load_average, machine_info, write_result  # noqa: E402

STEPS = ("ingest", "train", "align", "explain", "cluster", "parcels", "drift", "report")
GOAL_TIME_RATIO = 1.25
GOAL_MEMORY_RATIO = 1.5
CLASS_GROUPS = {
    "alike": ["cotton", "sweet potato", "pepper"],
    "cereals and summer crops": ["wheat", "maize", "sunflower", "chickpea"],
    "flat": ["fallow", "quinoa", "alfalfa"],
}

# --------------------------------------------------------------------------- child processes

# The scene (and, once, the model), without a Dask client: nothing here is part of the goals.
SYNTH_CHILD = r"""
import json, sys, time
args = json.loads(sys.argv[1])
import dask
dask.config.set(scheduler="threads")
from slamgeo.synth import make_scene, write_scene
out = {}
t0 = time.perf_counter()
scene = make_scene(size=args["size"], n_dates=args["dates"], seed=0, chunk=args["chunk"])
out["make_scene_s"] = time.perf_counter() - t0
t0 = time.perf_counter()
written = write_scene(scene, args["scene"], overwrite=True, n_grid_parcels=args["grid_parcels"])
out["write_scene_s"] = time.perf_counter() - t0
out["parcels"] = int(len(scene.parcels))
out["valid_pixels"] = int((~scene.cube["VV"].isel(time=0).isnull()).sum())
if args["model"]:
    from slamgeo.method.train import train
    t0 = time.perf_counter()
    train(scene.cube, out_dir=args["model"], overwrite=True, sample_size=args["sample_size"],
          max_epochs=args["epochs"], patience=3, seed=0, progress=False)
    out["train_s"] = time.perf_counter() - t0
out["files"] = {k: str(v) for k, v in written.items()}
print(json.dumps(out))
"""

# One size through the season pipeline on a fresh LocalCluster, every step instrumented.
PIPELINE_CHILD = r"""
import json, logging, sys, threading, time, warnings
args = json.loads(sys.argv[1])

# "Sending large graph" warnings: every occurrence, through logging
warnings.filterwarnings("always", message="Sending large graph")
logging.captureWarnings(True)
large = []
class LargeGraphHandler(logging.Handler):
    def emit(self, record):
        msg = record.getMessage()
        if "Sending large graph" in msg:
            size = msg.split("Sending large graph of size", 1)[1].split(".\n", 1)[0].strip()
            large.append({"step": current[0], "size": size, "t": time.time()})
logging.getLogger("py.warnings").addHandler(LargeGraphHandler())
logging.getLogger("py.warnings").propagate = False

current = [None]
graphs = []  # (step, serialised bytes)
from distributed import Client
from distributed.utils import nbytes
_send = Client._send_to_scheduler
def send_to_scheduler(self, msg):
    if isinstance(msg, dict) and msg.get("op") == "update-graph" and "expr_ser" in msg:
        s = msg["expr_ser"]
        graphs.append((current[0], int(sum(map(nbytes, [s.header] + list(s.frames))))))
    return _send(self, msg)
Client._send_to_scheduler = send_to_scheduler

from distributed.diagnostics.plugin import SchedulerPlugin
class Counts(SchedulerPlugin):
    name = "bench-scale-counts"
    def __init__(self):
        self.submitted = 0
        self.computed = 0
        self.erred = 0
        self.graphs = 0
    def update_graph(self, scheduler, *, tasks=(), **kwargs):
        self.submitted += len(tasks)
        self.graphs += 1
    def transition(self, key, start, finish, *a, **k):
        if finish == "memory" and start == "processing":
            self.computed += 1
        elif finish == "erred":
            self.erred += 1

import slamgeo.pipeline.steps as ps
from slamgeo.jobs.runtime import ClusterOptions, dask_client
from slamgeo.pipeline.config import load_config

counts = Counts()
records = {}

# tasks run by Dask's local schedulers (ingest writes its cube with local threads, by design)
from dask.callbacks import Callback
class LocalCount(Callback):
    def __init__(self):
        super().__init__()
        self.tasks = 0
        self.graphs = 0
    def _start_state(self, dsk, state):
        self.graphs += 1
    def _posttask(self, key, result, dsk, state, worker_id):
        self.tasks += 1
local = LocalCount()
local.register()

def snapshot():
    return {"submitted": counts.submitted, "computed": counts.computed, "erred": counts.erred,
            "scheduler_graphs": counts.graphs, "client_graphs": len(graphs),
            "local_tasks": local.tasks, "local_graphs": local.graphs}

s3_log = args.get("s3_log")
def s3_requests():
    if not s3_log:
        return None
    with open(s3_log, errors="replace") as f:
        lines = [ln for ln in f if '"GET ' in ln or '"PUT ' in ln or '"HEAD ' in ln or '"POST ' in ln or '"DELETE ' in ln]
    out = {}
    for ln in lines:
        verb = ln.split('"', 1)[1].split(" ", 1)[0]
        out[verb] = out.get(verb, 0) + 1
    return out

import resource
def driver_cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)  # this process: client, scheduler, nannies
    return ru.ru_utime + ru.ru_stime
def _own_cpu():
    import psutil
    t = psutil.Process().cpu_times()
    return t.user + t.system + t.children_user + t.children_system
def workers_cpu():
    # each worker process's own CPU seconds (RUSAGE_CHILDREN counts only exited children)
    if CLIENT[0] is None:
        return 0.0
    return float(sum(CLIENT[0].run(_own_cpu).values()))
CLIENT = [None]

def measured(name, fn):
    def run():
        current[0] = name
        c0, g0, w0, r0 = snapshot(), len(graphs), time.time(), s3_requests()
        k0 = workers_cpu()
        d0 = driver_cpu()
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            secs = time.perf_counter() - t0
            d1 = driver_cpu()
            k1 = workers_cpu()
            w1, c1, r1 = time.time(), snapshot(), s3_requests()
            sizes = [b for _, b in graphs[g0:]]
            cpu_d, cpu_w = d1 - d0, k1 - k0
            rec = {"seconds": secs, "window": [w0, w1],
                   "driver_cpu_s": round(cpu_d, 3), "workers_cpu_s": round(cpu_w, 3),
                   "driver_cpu_share": round(cpu_d / (cpu_d + cpu_w), 4) if cpu_d + cpu_w > 0 else None,
                   "tasks_submitted": c1["submitted"] - c0["submitted"],
                   "tasks_computed": c1["computed"] - c0["computed"],
                   "tasks_erred": c1["erred"] - c0["erred"],
                   "local_scheduler_tasks": c1["local_tasks"] - c0["local_tasks"],
                   "local_scheduler_graphs": c1["local_graphs"] - c0["local_graphs"],
                   "graphs": len(sizes), "graph_bytes": sum(sizes), "largest_graph_bytes": max(sizes, default=0),
                   "large_graph_warnings": [w["size"] for w in large if w["step"] == name]}
            if r0 is not None:
                rec["s3_requests"] = {k: r1.get(k, 0) - r0.get(k, 0) for k in r1}
                rec["s3_requests_total"] = sum(rec["s3_requests"].values())
            records[name] = rec
            current[0] = None
    return run

def wrap(step):
    orig = getattr(ps._Season, f"step_{step}")
    def method(self):
        fp, run, outputs = orig(self)
        return fp, measured(step, run), outputs
    setattr(ps._Season, f"step_{step}", method)

# Where ingest and training run. "driver": ingest with this process's threads and training in
# this process's torch (the pipeline before its steps moved to the workers). "workers": ingest
# under the client (read and written by the workers) and training as one task on a worker
# (`slamgeo.jobs.training.train_on_cluster`, put in place of the step's `train` here).
if args.get("placement") == "driver":
    import dask
    orig_ingest = ps._Season.step_ingest
    def step_ingest(self):
        fp, run, outputs = orig_ingest(self)
        def local():
            with dask.config.set(scheduler="threads"):
                return run()
        return fp, local, outputs
    ps._Season.step_ingest = step_ingest
else:
    import slamgeo.method.train as mt
    from slamgeo.jobs.training import train_on_cluster
    def train_there(ds, *, out_dir=None, overwrite=False, inputs=(), progress=True, **options):
        return train_on_cluster(inputs[0], out_dir=out_dir, overwrite=overwrite, inputs=inputs, **options)
    mt.train = train_there
for step in ps.STEPS:
    wrap(step)

cfg = load_config(args["config"])
copts = ClusterOptions(n_workers=args["workers"], threads_per_worker=args["threads"], dashboard=False)
t0 = time.perf_counter()
with dask_client(copts, quiet=True) as client:
    client.wait_for_workers(args["workers"])
    client.cluster.scheduler.add_plugin(counts)  # the LocalCluster's scheduler lives in this process
    CLIENT[0] = client
    cluster_s = time.perf_counter() - t0
    summary = ps.run_pipeline(cfg, client=client, quiet=True)
    status = {s.name: s.status for s in summary.steps}
    errors = {s.name: s.error for s in summary.steps if s.error}
    if args.get("grid_parcels"):
        from slamgeo.jobs.parcels import parcels_store
        season = summary.season_dir
        run = measured("parcels_grid", lambda: parcels_store(
            str(season) + "/results.zarr", args["grid_parcels"], str(season) + "/parcels_grid",
            cube=str(season) + "/cube.zarr", overwrite=True, id_column="parcel_id", class_column="crop",
            vote="pixels", test_fraction=0.3, seed=0))
        run()
        status["parcels_grid"] = "done"
print(json.dumps({"cluster_start_s": cluster_s, "status": status, "errors": errors, "steps": records,
                  "large_graph_warnings_outside_steps": [w["size"] for w in large if w["step"] is None]}))
"""


# --------------------------------------------------------------------------- the parent


class TreeRSSWithRoot(TreeRSS):
    """`TreeRSS` that also keeps the root process's own RSS (the driver: client and scheduler)."""

    def __init__(self, pid: int, interval: float):
        super().__init__(pid, interval)
        self.root_samples: list[tuple[float, int]] = []

    def poll(self) -> None:
        import psutil

        super().poll()
        try:
            self.root_samples.append((time.time(), self.root.memory_info().rss))
        except psutil.Error:
            pass

    def root_peak(self, start: float, end: float) -> int:
        vals = [v for t, v in self.root_samples if start <= t <= end]
        return max(vals) if vals else 0


def run_tree(code: str, args: dict, *, interval: float, log: Path, timeout: float | None = None):
    """Run `code` in a fresh interpreter, polling its process tree; returns (last JSON, poller)."""
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(args)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=ROOT,
            env={**os.environ, **args.get("env", {})},
        )
        poller = TreeRSSWithRoot(proc.pid, interval)
        poller.start()
        try:
            out, _ = proc.communicate(timeout=timeout)
        finally:
            poller.stop()
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}), see {log}:\n{log.read_text()[-3000:]}")
    lines = [ln for ln in out.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"child printed no JSON, see {log}:\n{out[-2000:]}")
    return json.loads(lines[-1]), poller


def write_config(
    path: Path,
    *,
    output: Path,
    tiffs: Path,
    parcels: Path,
    model: Path,
    chunk: int,
    s3: str | None,
    fresh: dict | None = None,
):
    """The season's YAML; `fresh`: train a model in the pipeline with these `model.train`
    settings instead of reusing `model`."""
    import yaml

    cfg = {
        "season": {"name": "scale"},
        "output": s3 or str(output),
        "input": {"kind": "geotiff", "paths": [str(tiffs)]},
        "chunk": chunk,
        "model": {"train": fresh} if fresh else {"checkpoint": str(model)},
        "parcels": {"path": str(parcels), "id_column": "parcel_id", "class_column": "crop"},
        "report": {"class_groups": CLASS_GROUPS},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def blocks(size: int, chunk: int) -> int:
    return math.ceil(size / chunk) ** 2


def start_moto(log: Path) -> tuple[subprocess.Popen, str]:
    """A moto S3 server on a free loopback port in its own process, as tests/conftest.py starts
    it (`python -m moto.server`); its request log (one line per request) goes to `log`."""
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=5)
            return proc, endpoint
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the moto S3 server did not start on {endpoint}") from None
            time.sleep(0.1)


def run_size(
    size: int, args, work: Path, model: Path, *, grid_parcels: int, s3: bool = False, train: bool = False
) -> dict:
    scene = work / f"scene_{size}"
    synth_args = {
        "size": size,
        "dates": args.dates,
        "chunk": args.chunk,
        "scene": str(scene),
        "grid_parcels": grid_parcels,
        "model": str(model) if train and not args.fresh_training else None,
        "sample_size": args.sample_size,
        "epochs": args.epochs,
    }
    if not (scene / "scene.json").exists() or train or grid_parcels:
        load0 = load_average()
        synth, poller = run_tree(SYNTH_CHILD, synth_args, interval=args.poll, log=work / f"synth_{size}.log")
        synth["peak_tree_rss_mib"] = round(poller.peak() / MiB, 1)
        synth["load_before"], synth["load_after"] = load0, load_average()
    else:
        synth = {"reused": str(scene)}
    env: dict = {}
    moto = None
    s3_url = None
    s3_log = None
    if s3:
        s3_log = work / f"moto_{size}.log"
        moto, endpoint = start_moto(s3_log)
        env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        import s3fs

        s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint).mkdir("bench")
        s3_url = "s3://bench/scale"
    out = work / f"out_{size}{'_s3' if s3 else ''}"
    shutil.rmtree(out, ignore_errors=True)
    config = write_config(
        work / f"pipeline_{size}{'_s3' if s3 else ''}.yaml",
        output=out,
        tiffs=scene / "tiffs",
        parcels=scene / "parcels.gpkg",
        model=model,
        chunk=args.chunk,
        s3=s3_url,
        fresh={"sample_size": args.sample_size, "max_epochs": args.epochs, "patience": 3, "seed": 0}
        if args.fresh_training
        else None,
    )
    child_args = {
        "config": str(config),
        "workers": args.workers,
        "threads": args.threads,
        "grid_parcels": str(scene / "parcels_grid.gpkg") if grid_parcels else None,
        "s3_log": str(s3_log) if s3_log else None,
        "env": env,
        "placement": args.placement,
    }
    load0 = load_average()
    t0 = time.perf_counter()
    try:
        res, poller = run_tree(
            PIPELINE_CHILD, child_args, interval=args.poll, log=work / f"pipeline_{size}{'_s3' if s3 else ''}.log"
        )
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(10)
    wall = time.perf_counter() - t0
    px = size * size
    for rec in res["steps"].values():
        w0, w1 = rec.pop("window")
        rec["pixels_per_s"] = px / rec["seconds"] if rec["seconds"] > 0 else None
        rec["s_per_pixel"] = rec["seconds"] / px
        # a step shorter than the poll interval still gets the samples around it
        w0, w1 = w0 - args.poll, w1 + args.poll
        rec["peak_tree_rss_mib"] = round(poller.peak(w0, w1) / MiB, 1)
        rec["peak_driver_rss_mib"] = round(poller.root_peak(w0, w1) / MiB, 1)
    res.update(
        {
            "size": size,
            "pixels": px,
            "valid_pixels": synth.get("valid_pixels"),
            "blocks": blocks(size, args.chunk),
            "synth": synth,
            "wall_s": round(wall, 1),
            "peak_tree_rss_mib": round(poller.peak() / MiB, 1),
            "memory": poller.summary(),
            "load_before": load0,
            "load_after": load_average(),
            "s3": bool(s3),
            "cpu": cpu_shares(res["steps"]),
        }
    )
    if grid_parcels:
        res["grid_parcels"] = grid_parcels
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return res


def cpu_shares(steps: dict) -> dict:
    """The driver's CPU seconds against the workers', per step and over the pipeline's steps."""
    d = sum(r.get("driver_cpu_s", 0.0) for k, r in steps.items() if k in STEPS)
    w = sum(r.get("workers_cpu_s", 0.0) for k, r in steps.items() if k in STEPS)
    return {
        "driver_cpu_s": round(d, 2),
        "workers_cpu_s": round(w, 2),
        "driver_share": round(d / (d + w), 4) if d + w > 0 else None,
        "per_step": {k: r.get("driver_cpu_share") for k, r in steps.items()},
    }


# --------------------------------------------------------------------------- goals and output


def _tasks(rec: dict) -> int:
    """Tasks of a step: those sent to the distributed scheduler plus those run by local schedulers."""
    return rec["tasks_submitted"] + rec.get("local_scheduler_tasks", 0)


def evaluate(runs: dict[int, dict]) -> dict:
    """The goals, from the 512 run and the largest one measured."""
    sizes = sorted(runs)
    if 512 not in runs or len(sizes) < 2 or sizes[-1] <= 512:
        return {"evaluated": False, "why": "needs the 512 run and a larger one"}
    ref, big = runs[512], runs[sizes[-1]]
    block_growth = big["blocks"] / ref["blocks"]
    per_step: dict[str, dict] = {}
    for step in STEPS:
        a, b = ref["steps"].get(step), big["steps"].get(step)
        if not a or not b:
            continue
        t_ratio = b["s_per_pixel"] / a["s_per_pixel"]
        m_ratio = b["peak_tree_rss_mib"] / a["peak_tree_rss_mib"] if a["peak_tree_rss_mib"] else None
        task_growth = _tasks(b) / _tasks(a) if _tasks(a) else None
        byte_growth = b["graph_bytes"] / a["graph_bytes"] if a["graph_bytes"] else None
        per_step[step] = {
            "s_per_pixel_ratio": round(t_ratio, 3),
            "time_goal_met": t_ratio <= GOAL_TIME_RATIO,
            "peak_memory_ratio": None if m_ratio is None else round(m_ratio, 3),
            "memory_goal_met": None if m_ratio is None else m_ratio <= GOAL_MEMORY_RATIO,
            "tasks_growth": None if task_growth is None else round(task_growth, 3),
            "graph_bytes_growth": None if byte_growth is None else round(byte_growth, 3),
            "tasks_linear": task_growth is None or task_growth <= block_growth,
            "graph_bytes_linear": byte_growth is None or byte_growth <= block_growth,
        }
    warnings_any = {s: sum(len(r["large_graph_warnings"]) for r in runs[s]["steps"].values()) for s in sizes}

    # the whole run: the pipeline's steps (parcels_grid, run on the largest size only, apart)
    def run_peak(run: dict) -> float:
        return max(r["peak_tree_rss_mib"] for k, r in run["steps"].items() if k in STEPS)

    mem_ratio = run_peak(big) / run_peak(ref)
    return {
        "evaluated": True,
        "reference_size": 512,
        "largest_size": sizes[-1],
        "block_growth": block_growth,
        "per_step": per_step,
        "time_goal_met_all_steps": all(v["time_goal_met"] for v in per_step.values()),
        "time_goal_failed_steps": [k for k, v in per_step.items() if not v["time_goal_met"]],
        "peak_tree_rss_mib_pipeline_steps": {str(s): run_peak(runs[s]) for s in sizes},
        "memory_ratio_whole_run": round(mem_ratio, 3),
        "memory_goal_met_whole_run": mem_ratio <= GOAL_MEMORY_RATIO,
        "memory_goal_failed_steps": [k for k, v in per_step.items() if v["memory_goal_met"] is False],
        "large_graph_warnings_per_size": warnings_any,
        "no_large_graph_goal_met": not any(warnings_any.values()),
        "tasks_linear_goal_met": all(v["tasks_linear"] for v in per_step.values()),
        "graph_bytes_linear_goal_met": all(v["graph_bytes_linear"] for v in per_step.values()),
    }


TILE = 10_980  # one Sentinel-1 tile (Sentinel-2 MGRS grid, 10 m): 10 980 x 10 980 pixels
TILE_DATES = 61  # a year at a 6-day revisit
# steps run in the driver process (ingest with local threads, by design; the report's figures),
# not spread over the cluster's workers


SCHEDULER_TASKS_PER_S = 2_000  # a Dask scheduler's order of magnitude (about 0.5 ms of its CPU per task)
OBJECT_STORE_GBPS = 1.0  # aggregate object-store bandwidth assumed for the byte floor, GB/s


def _fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(a, b) of y = a + b x through the last two points (b from the last alone when there is one
    point or y does not grow; a >= 0)."""
    if len(points) == 2 and points[1][0] != points[0][0] and points[1][1] > points[0][1]:
        b = (points[1][1] - points[0][1]) / (points[1][0] - points[0][0])
        return max(points[1][1] - b * points[1][0], 0.0), b
    x, y = points[-1]
    return 0.0, y / x if x else 0.0


def capacity_plan(runs: dict[int, dict], *, chunk: int, workers: int, dates: int = 61) -> dict:
    """One tile of TILE x TILE pixels at 61 dates, from the two largest sizes measured: bytes,
    blocks, tasks per step (a + b * blocks), and hours on N CPU workers and on N GPU workers.

    Per step, from the CPU seconds measured (`driver_cpu_s`, `workers_cpu_s`): the workers'
    CPU seconds per pixel, divided by N (the work is spread over the blocks; one core per
    worker), both scaled by 61 / the measured dates (the steps' work is per pixel and date).
    The driver's CPU seconds are fitted as a + r * (the step's wall seconds) through the two
    sizes: a fixed serial part (opening stores, building graphs, drawing nothing) and a rate r
    (CPU seconds per wall second) at which it is busy alongside the workers while they compute
    (the event loop of the client, and in a LocalCluster the scheduler and the nannies, which
    live in the driver's process). The step then takes a + max(1, r) * W / N: the driver
    limits only where r reaches one core. The earlier, conservative reading (the driver's
    seconds fitted a + b * pixels and added to the workers', as if they never overlapped) is
    kept beside it (`hours_serial_driver`). Floors that no number of workers removes: the scheduler's task rate
    (`SCHEDULER_TASKS_PER_S`) and the object store's bandwidth (`OBJECT_STORE_GBPS`; the cube
    read by explain and the importance written). Without CPU figures (older runs) the
    per-worker wall time is used instead. Training is one task on a sample of fixed size: its
    wall seconds as measured, whatever the tile and N."""
    sizes = sorted(runs)[-2:]
    big = runs[sizes[-1]]
    measured_dates = int(big.get("dates") or dates)
    per_date = TILE_DATES / measured_dates
    px = TILE * TILE
    n_blocks = blocks(TILE, chunk)
    cube_bytes = px * TILE_DATES * 2 * 4
    plan: dict = {
        "tile_pixels": px,
        "dates": TILE_DATES,
        "measured_dates": measured_dates,
        "cube_bytes_float32_db": cube_bytes,
        "results_importance_bytes_float32": px * TILE_DATES * 2 * 4,  # (dim=2, time) per pixel
        "blocks": n_blocks,
        "chunk": chunk,
        "from_sizes": sizes,
        "measured_workers": workers,
        "assumption": "each step's workers' CPU seconds per pixel divided by N (one core per worker) plus the "
        "driver's CPU seconds (a + b * pixels through the two largest sizes, not divided), times 61 / the "
        "measured dates; the driver's seconds counted as if they never overlapped the workers' (conservative)",
        "floors": {
            "scheduler_tasks_per_s": SCHEDULER_TASKS_PER_S,
            "object_store_gb_per_s": OBJECT_STORE_GBPS,
        },
        "steps": {},
        "hours": {},
        "gpu": {},
    }
    total_tasks = 0.0
    for step, rec in big["steps"].items():
        if step in ("align", "drift", "parcels_grid"):
            continue
        have = [s for s in sizes if step in runs[s]["steps"]]
        tasks_a, tasks_b = _fit([(runs[s]["blocks"], _tasks(runs[s]["steps"][step])) for s in have])
        tasks = tasks_a + tasks_b * n_blocks
        total_tasks += tasks
        if step == "train":  # one task on one worker, on a sample of fixed size: not per pixel, not divided
            plan["steps"][step] = {
                "from": "cpu seconds",
                "one_task_seconds": round(rec["seconds"], 2),
                "tasks_extrapolated": round(tasks),
            }
            continue
        if "workers_cpu_s" in rec:
            w_per_px = rec["workers_cpu_s"] / big["pixels"] * per_date
            d_a, d_b = _fit([(runs[s]["pixels"], runs[s]["steps"][step]["driver_cpu_s"]) for s in have])
            r_a, rate = _fit(
                [(runs[s]["steps"][step]["seconds"], runs[s]["steps"][step]["driver_cpu_s"]) for s in have]
            )
            source = "cpu seconds"
        else:  # an older run: wall seconds, the driver's share unknown
            w_per_px, d_a, d_b, r_a, rate = rec["s_per_pixel"] * workers * per_date, 0.0, 0.0, 0.0, 0.0
            source = "wall seconds"
        plan["steps"][step] = {
            "from": source,
            "workers_cpu_s_per_pixel": w_per_px,
            "driver_cpu_s_fixed": round(d_a * per_date, 3),
            "driver_cpu_s_per_pixel": d_b * per_date,
            "driver_cpu_s_fixed_alongside": round(r_a, 3),
            "driver_cpu_s_per_wall_s": round(rate, 4),
            "tasks_extrapolated": round(tasks),
            "peak_tree_rss_mib_measured": rec.get("peak_tree_rss_mib"),
            "peak_driver_rss_mib_measured": rec.get("peak_driver_rss_mib"),
        }
    floor_s = total_tasks / SCHEDULER_TASKS_PER_S + 2 * cube_bytes / (OBJECT_STORE_GBPS * 1e9)
    plan["floors"]["tasks"] = round(total_tasks)
    plan["floors"]["hours"] = round(floor_s / 3600, 3)

    def hours(n: int, *, serial_driver: bool = False) -> dict:
        per, driver, limited = {}, {}, []
        for step, st in plan["steps"].items():
            if step == "train":
                per[step], driver[step] = st["one_task_seconds"] / 3600, 0.0
                continue
            w = px * st["workers_cpu_s_per_pixel"] / n
            if serial_driver:  # the driver's seconds grow per pixel and never overlap the workers'
                d = st["driver_cpu_s_fixed"] + px * st["driver_cpu_s_per_pixel"]
                per[step], driver[step] = (d + w) / 3600, d / 3600
                continue
            rate = st["driver_cpu_s_per_wall_s"]
            if rate >= 1:
                limited.append(step)
            a = st["driver_cpu_s_fixed_alongside"]
            per[step], driver[step] = (a + max(1.0, rate) * w) / 3600, (a + rate * w) / 3600
        total = sum(per.values())
        return {
            "per_step": {k: round(v, 3) for k, v in per.items()},
            "driver_hours": round(sum(driver.values()), 3),
            "total": round(total, 3),
            "limiting_step": max(per, key=lambda k: per[k]),
            "driver_share_of_time": round(sum(driver.values()) / total, 3) if total else None,
            "steps_limited_by_the_driver": limited,
        }

    for n in (1, 8, 32, 128):
        plan["hours"][str(n)] = hours(n)
    plan["hours_serial_driver"] = {str(n): hours(n, serial_driver=True) for n in (1, 8, 32, 128)}
    plan["gpu"] = {
        "formula": "hours(N_gpu) = explain: 120 560 400 / (N_gpu x R_gpu) / 3600, plus the other steps as on N CPU "
        "workers; R_gpu = explain pixels/s of one GPU worker at 61 dates (benchmarks/gpu_check.py)",
        "R_gpu_measured": None,
    }
    return plan


def plot(runs: dict[int, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(runs)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = [s for s in (*STEPS, "parcels_grid") if s != "train" and s != "align"]
    for step in names:
        pts = [(runs[s]["pixels"], runs[s]["steps"][step]["s_per_pixel"]) for s in sizes if step in runs[s]["steps"]]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, "o-" if step != "parcels_grid" else "s", label=step)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"pixels (N x N scene, {runs[sizes[0]].get('dates')} dates, chunk 512)")
    ax.set_ylabel("seconds per pixel")
    ax.set_title("slamgeo season pipeline: seconds per pixel vs scene size (2 workers x 1 thread)")
    ax.title.set_fontsize(9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(runs: dict[int, dict]) -> None:
    print()
    print(
        f"{'size':>5} {'step':<13} {'seconds':>8} {'px/s':>9} {'s/px':>9} {'peak MiB':>9} {'driver':>7} "
        f"{'tasks':>6} {'graphs':>6} {'graph KiB':>10} {'large':>5} {'drv cpu':>8} {'wrk cpu':>8} {'drv %':>6}"
    )
    for s in sorted(runs):
        for step, r in runs[s]["steps"].items():
            print(
                f"{s:>5} {step:<13} {r['seconds']:>8.1f} {r['pixels_per_s'] or 0:>9.0f} {r['s_per_pixel']:>9.2e} "
                f"{r['peak_tree_rss_mib']:>9.0f} {r['peak_driver_rss_mib']:>7.0f} {_tasks(r):>6} "
                f"{r['graphs']:>6} {r['graph_bytes'] / 1024:>10.1f} {len(r['large_graph_warnings']):>5} "
                f"{r.get('driver_cpu_s', 0):>8.1f} {r.get('workers_cpu_s', 0):>8.1f} "
                f"{100 * (r.get('driver_cpu_share') or 0):>5.0f}%"
            )
        if "cpu" in runs[s]:
            c = runs[s]["cpu"]
            print(
                f"{s:>5} {'all steps':<13} driver {c['driver_cpu_s']:.1f} CPU s, workers {c['workers_cpu_s']:.1f} "
                f"CPU s: driver share {100 * (c['driver_share'] or 0):.0f}%"
            )


def print_goals(goals: dict) -> None:
    if not goals.get("evaluated"):
        print(f"goals not evaluated: {goals.get('why')}")
        return
    big = goals["largest_size"]
    print()
    print(f"goals, {big}^2 against 512^2 (blocks x{goals['block_growth']:.0f}):")
    for step, g in goals["per_step"].items():
        print(
            f"  {step:<8} s/px x{g['s_per_pixel_ratio']:.2f} ({'met' if g['time_goal_met'] else 'NOT met'}, <= "
            f"{GOAL_TIME_RATIO}); peak memory x{g['peak_memory_ratio']} "
            f"({'met' if g['memory_goal_met'] else 'NOT met'}, <= {GOAL_MEMORY_RATIO}); tasks x{g['tasks_growth']}, "
            f"graph bytes x{g['graph_bytes_growth']} ({'linear' if g['tasks_linear'] and g['graph_bytes_linear'] else 'NOT linear'})"
        )
    print(
        f"  whole run peak memory x{goals['memory_ratio_whole_run']:.2f} "
        f"({'met' if goals['memory_goal_met_whole_run'] else 'NOT met'}); large-graph warnings per size "
        f"{goals['large_graph_warnings_per_size']} ({'met' if goals['no_large_graph_goal_met'] else 'NOT met'})"
    )


def print_plan(plan: dict) -> None:
    print()
    print(
        f"capacity plan, one {TILE} x {TILE} tile x {plan['dates']} dates: cube "
        f"{plan['cube_bytes_float32_db'] / 2**30:.1f} GiB (float32 dB), {plan['blocks']} blocks of {plan['chunk']}; "
        f"from the {' and '.join(f'{s}^2' for s in plan['from_sizes'])} runs at {plan['measured_dates']} dates"
    )
    for n, h in plan["hours"].items():
        steps = ", ".join(f"{k} {v:.3f}" for k, v in h["per_step"].items())
        limited = ", ".join(h.get("steps_limited_by_the_driver", [])) or "none"
        print(
            f"  {n:>3} workers: {h['total']:.3f} h ({steps}); driver busy {h['driver_hours']:.3f} h; "
            f"limiting: {h['limiting_step']}; steps limited by the driver: {limited}"
        )
    if "hours_serial_driver" in plan:
        print("  conservative (the driver's seconds per pixel, added to the workers'):")
        for n, h in plan["hours_serial_driver"].items():
            print(f"  {n:>3} workers: {h['total']:.3f} h; driver {h['driver_hours']:.3f} h")
    rates = {k: st["driver_cpu_s_per_wall_s"] for k, st in plan["steps"].items() if "driver_cpu_s_per_wall_s" in st}
    if rates:
        print(
            "  the driver's CPU seconds per wall second alongside the workers: "
            + ", ".join(f"{k} {v:.3f}" for k, v in rates.items())
        )
    fl = plan["floors"]
    print(
        f"  floors: {fl['tasks']} tasks at {fl['scheduler_tasks_per_s']}/s and the cube twice at "
        f"{fl['object_store_gb_per_s']} GB/s: {fl['hours']:.3f} h"
    )


def _figure_path(name: str) -> Path:
    """The full run's figure goes to the docs; a quick or other run's next to its JSON."""
    if name == "bench_scale":
        return ROOT / "docs" / "figures" / "bench_scale.png"
    return ROOT / "benchmarks" / "results" / f"{name}.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sizes", default="256,512,1024,2048", help="scene sizes, pixels per side")
    ap.add_argument("--quick", action="store_true", help="256 and 512 only, 24 dates, 5 000 grid parcels")
    ap.add_argument("--dates", type=int, default=None, help="dates per scene (default 61, quick 24)")
    ap.add_argument("--chunk", type=int, default=None, help="spatial chunk (default: slamgeo.schema.CHUNK)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sample-size", type=int, default=20_000, help="training pixels (trained once)")
    ap.add_argument("--epochs", type=int, default=8, help="training epochs (trained once)")
    ap.add_argument("--grid-parcels", type=int, default=None, help="parcels of parcels_grid on the largest size")
    ap.add_argument("--poll", type=float, default=0.2, help="RSS poll interval, seconds")
    ap.add_argument("--s3", action="store_true", help="also run 1024 (or the largest <= 1024) against moto S3")
    ap.add_argument("--deadline", default=None, help="HH:MM UTC: skip a size predicted to end after it")
    ap.add_argument("--model", type=Path, default=None, help="reuse this checkpoint (its dates) instead of training")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the pipeline outputs")
    ap.add_argument("--out", type=Path, default=None, help="JSON path")
    ap.add_argument("--figure", type=Path, default=None, help="PNG path")
    ap.add_argument("--from-json", type=Path, default=None, help="recompute goals, plan and figure of a saved run")
    ap.add_argument(
        "--placement",
        choices=("workers", "driver"),
        default="workers",
        help="ingest and training on the workers (default), or in the driver (local threads, in-process torch)",
    )
    ap.add_argument("--fresh-training", action="store_true", help="train in the pipeline instead of reusing a model")
    args = ap.parse_args()

    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        saved_runs = {int(k): v for k, v in saved["runs"].items()}
        st = saved["settings"]
        saved["goals"] = evaluate(saved_runs)
        saved["capacity_plan"] = (
            capacity_plan(saved_runs, chunk=st["chunk"], workers=st["workers"]) if len(saved_runs) >= 2 else None
        )
        write_result("bench_scale", saved, out=args.from_json)
        print_table(saved_runs)
        print_goals(saved["goals"])
        if saved["capacity_plan"]:
            print_plan(saved["capacity_plan"])
        if len(saved_runs) >= 2:
            figure = args.figure or _figure_path(args.from_json.stem)
            plot(saved_runs, figure)
            print(f"wrote {figure}")
        print(f"wrote {args.from_json}")
        return

    from slamgeo import schema

    sizes = [256, 512] if args.quick else sorted(int(s) for s in args.sizes.split(","))
    args.dates = args.dates or (24 if args.quick else 61)
    args.chunk = args.chunk or schema.CHUNK
    grid_n = args.grid_parcels if args.grid_parcels is not None else (5_000 if args.quick else 100_000)
    name = "bench_scale.quick" if args.quick else "bench_scale"
    out = args.out or Path("benchmarks/results") / f"{name}.json"
    figure = args.figure or (out.with_suffix(".png") if args.out else _figure_path(name))
    deadline = None
    if args.deadline:
        hh, mm = (int(v) for v in args.deadline.split(":"))
        now = dt.datetime.now(dt.UTC)
        deadline = now.replace(hour=hh, minute=mm, second=0, microsecond=0)

    info = machine_info()
    print(
        f"bench_scale: sizes {sizes}, {args.dates} dates, chunk {args.chunk}, {args.workers} workers x "
        f"{args.threads} thread; {info['cpus']} CPUs, load {info['load_average_1_5_15']}",
        flush=True,
    )
    t_all = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    model = args.model or work / "model"
    runs: dict[int, dict] = {}
    skipped: dict[int, str] = {}
    s3_run: dict | None = None
    result: dict = {}

    def save() -> None:
        goals = evaluate(runs)
        result.update(
            {
                "benchmark": "bench_scale",
                "quick": args.quick,
                "settings": {
                    "sizes": sizes,
                    "dates": args.dates,
                    "chunk": args.chunk,
                    "workers": args.workers,
                    "threads_per_worker": args.threads,
                    "training": {"trained_on": sizes[0], "sample_size": args.sample_size, "max_epochs": args.epochs}
                    if args.model is None
                    else {"checkpoint": str(args.model)},
                    "grid_parcels": grid_n,
                    "placement": args.placement,
                    "fresh_training": args.fresh_training,
                    "rss_poll_interval_s": args.poll,
                    "pixels": "all N^2 pixels of the scene (the swath edge's no-data ones included)",
                    "repeats": "1 per size (no best-of: each size takes minutes)",
                },
                "machine": info,
                "load_average_end": load_average(),
                "runs": {str(k): v for k, v in sorted(runs.items())},
                "skipped_sizes": {str(k): v for k, v in skipped.items()},
                "s3": s3_run,
                "goals": goals,
                "capacity_plan": capacity_plan(runs, chunk=args.chunk, workers=args.workers)
                if len(runs) >= 2
                else None,
                "wall_s": round(time.perf_counter() - t_all, 1),
            }
        )
        write_result(name, result, out=out)

    try:
        for i, size in enumerate(sizes):
            if deadline is not None and runs:
                last = runs[max(runs)]
                predicted = (last["wall_s"] + last["synth"].get("write_scene_s", 0) * 2) * size**2 / last["pixels"]
                if dt.datetime.now(dt.UTC) + dt.timedelta(seconds=predicted) > deadline:
                    skipped[size] = f"predicted {predicted / 60:.0f} min, past the deadline {args.deadline} UTC"
                    print(f"{size}^2 skipped: {skipped[size]}", flush=True)
                    continue
            largest = size == sizes[-1]
            print(f"{size}^2: scene{' and model' if i == 0 and args.model is None else ''} ...", flush=True)
            train = i == 0 and args.model is None
            r = run_size(size, args, work, model, grid_parcels=grid_n if largest else 0, train=train)
            r["dates"] = args.dates
            runs[size] = r
            steps = ", ".join(f"{k} {v['seconds']:.1f} s" for k, v in r["steps"].items())
            print(
                f"{size}^2: {steps}; peak tree RSS {r['peak_tree_rss_mib']:.0f} MiB, load {r['load_before'][0]}->"
                f"{r['load_after'][0]}",
                flush=True,
            )
            save()
        if args.s3:
            s3_size = max([s for s in runs if s <= 1024], default=None)
            if s3_size is None:
                s3_run = {"skipped": "no size <= 1024 measured"}
            else:
                print(f"{s3_size}^2 against moto S3 ...", flush=True)
                try:
                    s3_run = run_size(s3_size, args, work, model, grid_parcels=0, s3=True)
                except (SystemExit, RuntimeError) as exc:  # optional: recorded, not fatal
                    s3_run = {"size": s3_size, "failed": str(exc)[-2000:]}
                for step, rec in (s3_run.get("steps") or {}).items():
                    print(
                        f"  S3 {s3_size}^2 {step:<13} {rec['seconds']:>7.1f} s, {rec.get('s3_requests_total', 0):>6} "
                        f"requests {rec.get('s3_requests', {})}",
                        flush=True,
                    )
            save()
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print_table(runs)
    print_goals(result["goals"])
    if result.get("capacity_plan"):
        print_plan(result["capacity_plan"])
    if len(runs) >= 2:
        plot(runs, figure)
        print(f"wrote {figure}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
