"""Helpers shared by the benchmark scripts (not part of the library).

- `machine_info()`: CPU count, load average, torch threads, versions: what to print next to figures.
- `write_result(name, data)`: `benchmarks/results/<name>.json`.
- `make_inputs(...)`: a synthetic scene written once as a cube store (Zarr format 2) and a model
  trained once on it, quickly, with the default architecture.
- `tile_cube(src, dst)`: the cube tiled 2 x 2 (four times the pixels, same chunks), written
  chunk by chunk without holding it in memory.
- `TreeRSS`: polls the summed resident set size of a process and all its descendants.
- `run_child(code, *args)`: runs Python code in a fresh interpreter, polls its process tree,
  and returns the JSON it printed last with the memory peaks.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MiB = 2**20


def load_module(path: str | Path, name: str):
    """The Python file at `path` imported as the module `name` (another copy of a slamgeo module,
    timed or profiled beside the installed one)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict:
    import psutil
    import torch

    from slamgeo.io.provenance import versions

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": cpu_count(),
        "memory_total_mib": round(psutil.virtual_memory().total / MiB),
        "memory_available_mib": round(psutil.virtual_memory().available / MiB),
        "load_average_1_5_15": load_average(),
        "torch_threads_default": torch.get_num_threads(),
        "cuda_available": bool(torch.cuda.is_available()),
        "versions": versions(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def write_result(name: str, data: dict, *, out: Path | None = None) -> Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


# ------------------------------------------------------------------------------- inputs


def make_inputs(
    work: Path,
    *,
    size: int,
    n_dates: int,
    chunk: int,
    sample_size: int,
    max_epochs: int,
    seed: int = 0,
    model_dir: Path | None = None,
    device: str = "cpu",
) -> dict:
    """Write `work/cube_<size>.zarr` from `make_scene` and train a model (default architecture)
    into `work/model` unless `model_dir` is given. Returns paths and timings."""
    from slamgeo.method.train import train
    from slamgeo.synth import make_scene

    work.mkdir(parents=True, exist_ok=True)
    cube_path = work / f"cube_{size}.zarr"
    t0 = time.perf_counter()
    scene = make_scene(size=size, n_dates=n_dates, seed=seed, chunk=chunk)
    scene.cube.to_zarr(cube_path, zarr_format=2, mode="w")
    scene_s = time.perf_counter() - t0
    train_s = 0.0
    if model_dir is None:
        model_dir = work / "model"
        t0 = time.perf_counter()
        train(
            scene.cube,
            out_dir=model_dir,
            overwrite=True,
            sample_size=sample_size,
            max_epochs=max_epochs,
            progress=False,
            seed=seed,
            device=device,
        )
        train_s = time.perf_counter() - t0
    return {"cube": cube_path, "model": Path(model_dir), "scene_s": round(scene_s, 2), "train_s": round(train_s, 2)}


def tile_cube(src: Path, dst: Path, *, chunk: int) -> Path:
    """Write the cube at `src` tiled 2 x 2 (2N x 2N pixels, the grid continued east and south),
    chunked `chunk` x `chunk`, to `dst` (Zarr format 2): lazily, chunk by chunk."""
    import dask.array as da
    import numpy as np
    import xarray as xr

    from slamgeo.io.cube import BANDS, chunk_cube, open_cube

    cube = open_cube(str(src))
    y, x = cube["y"].values, cube["x"].values
    dy, dx = (y[1] - y[0]) if y.size > 1 else -10.0, (x[1] - x[0]) if x.size > 1 else 10.0
    y2 = np.concatenate([y, y + dy * y.size])
    x2 = np.concatenate([x, x + dx * x.size])
    data = {}
    for b in BANDS:
        a = cube[b].data
        data[b] = (("time", "y", "x"), da.block([[a, a], [a, a]]), dict(cube[b].attrs))
    out = xr.Dataset(data, coords={"time": cube["time"].values, "y": y2, "x": x2}, attrs=dict(cube.attrs))
    out.rio.write_crs(cube.rio.crs, inplace=True)
    out.rio.write_transform(out.rio.transform(recalc=True), inplace=True)
    out = chunk_cube(out, chunk)
    for b in BANDS:
        out[b].encoding = {}
    out.to_zarr(dst, zarr_format=2, mode="w")
    return dst


# ------------------------------------------------------------------------------- memory


class TreeRSS(threading.Thread):
    """Polls sum(RSS) of process `pid` and all its descendants every `interval` seconds.

    `samples`: (unix time, total bytes, number of processes). `peak_by_pid`: pid -> (depth in
    the tree, peak RSS bytes, name), depth 0 being `pid` itself.
    """

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []
        self.peak_by_pid: dict[int, list] = {}
        self._halt = threading.Event()

    def _depths(self) -> dict:
        import psutil

        depth = {self.root.pid: (self.root, 0)}
        try:
            kids = self.root.children(recursive=True)
        except psutil.Error:
            return depth
        for p in kids:  # parents come before their children in psutil's recursive listing
            try:
                parent = p.ppid()
            except psutil.Error:
                continue
            depth[p.pid] = (p, depth.get(parent, (None, 0))[1] + 1)
        return depth

    def poll(self) -> None:
        import psutil

        total, n = 0, 0
        for pid, (proc, depth) in self._depths().items():
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            n += 1
            rec = self.peak_by_pid.get(pid)
            if rec is None:
                try:
                    name = " ".join(proc.cmdline()[:3])[:80]
                except psutil.Error:
                    name = "?"
                self.peak_by_pid[pid] = [depth, rss, name]
            elif rss > rec[1]:
                rec[1] = rss
        if n:
            self.samples.append((time.time(), total, n))

    def run(self) -> None:
        while not self._halt.is_set():
            self.poll()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def peak(self, start: float | None = None, end: float | None = None) -> int:
        vals = [s[1] for s in self.samples if (start is None or s[0] >= start) and (end is None or s[0] <= end)]
        return max(vals) if vals else 0

    def summary(self, start: float | None = None, end: float | None = None) -> dict:
        by_depth: dict[int, list[int]] = {}
        for depth, rss, _ in self.peak_by_pid.values():
            by_depth.setdefault(depth, []).append(rss)
        return {
            "peak_tree_rss_mib": round(self.peak() / MiB, 1),
            "peak_tree_rss_in_window_mib": round(self.peak(start, end) / MiB, 1),
            "samples": len(self.samples),
            "max_processes": max((s[2] for s in self.samples), default=0),
            "peak_rss_per_process_mib_by_depth": {
                str(d): sorted((round(v / MiB, 1) for v in vals), reverse=True) for d, vals in sorted(by_depth.items())
            },
        }


def run_child(
    code: str, *args: str, interval: float = 0.05, env: dict | None = None, timeout: float | None = None
) -> dict:
    """Run `code` in a fresh interpreter (args in sys.argv[1:]), polling its process tree.

    The child prints one JSON object on its last stdout line; it may include `window`:
    [start, end] unix times of the part to report the memory peak of. Returns that object with
    `memory` added.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    poller = TreeRSS(proc.pid, interval)
    poller.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        poller.stop()
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{err.strip()[-3000:]}")
    lines = [ln for ln in out.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"child printed no JSON:\n{out[-2000:]}\n{err[-2000:]}")
    res = json.loads(lines[-1])
    window = res.get("window") or [None, None]
    res["memory"] = poller.summary(*window)
    return res
