"""Where Grad-SLAM's time goes, per op group, on the benchmark's input (torch.profiler, CPU).

Same setup as bench_gradslam.py: default model (CAEConfig(): 64/128/256 channels, T = 61, D = 2),
all default layers, "centred" scaling with a reference map, the embedding returned. The
functions of `slamgeo.method.gradslam` are wrapped in profiler ranges for the run (restored
afterwards), and every aten op's self CPU time is charged to one group by the innermost range
and the op's name. `--module PATH` profiles another copy of gradslam.py (an earlier version,
say) on the same input.

Prints the table and writes benchmarks/results/profile_gradslam[_<tag>].json.
Usage: python benchmarks/profile_gradslam.py [--pixels N] [--batch-size B] [--module PATH --tag NAME]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_module  # noqa: E402

from slamgeo import schema
from slamgeo.method import blockwise, gradslam
from slamgeo.method.model import CAE, CAEConfig

RESULTS = Path(__file__).resolve().parent / "results"

# profiler ranges: function of gradslam (or torch) -> range name
RANGES = {
    "check_series": "checks",
    "_check_reference": "checks",
    "_direct_forward": "forward",
    "_blocks_forward": "forward",
    "_hooked_forward": "forward",
    "_direct_backward": "backward",
    "_maps_from_graph": "backward",
    "_unpool": "unpool",
    "_shortcut_alpha": "shortcut",
    "_pool_elu": "pool",
    "_pool2": "pool",
    "_elu_slope": "elu",
    "resample": "resample",
    "scale_maps": "scale",
    "_kernel_parts": "kernel",
    "_head_weight": "kernel",
    "_consumer_kernel": "kernel",
    "consumer_kernel": "kernel",
    "_run": "run",
}


def group_of(op: str, ranges: list[str]) -> str:
    """The group of an aten op from the profiler ranges around it (innermost last)."""
    inner = ranges[-1] if ranges else ""
    backward = "backward" in ranges or any(r.startswith("backward d=") for r in ranges)
    if inner in ("resample", "scale", "checks", "kernel"):
        return {
            "resample": "resampling to the T dates",
            "scale": "scaling (max |.| over time)",
            "checks": "input checks",
            "kernel": "the consumer's kernel V (once per call)",
        }[inner]
    if "pool" in ranges or "Pool" in op or "max_pool" in op or "maximum" in op or "scatter" in op:
        return "pooling: forward and gradient routing" if "unpool" not in ranges else "backward: ELU' + unpooling"
    if "unpool" in ranges:
        return "backward: ELU' + unpooling"
    if "shortcut" in ranges:
        return "backward: first block's Eq. 4 through the next conv (V)"
    if "convolution" in op or "conv1d" in op or "ConvolutionBackward" in op:
        return "backward: conv input gradient" if backward else "forward: convolutions"
    if "elu" in ranges or "elu" in op.lower():
        return "backward: ELU slopes" if backward else "forward: ELU (+ its slope)"
    if op in ("aten::bmm",):
        return "Eq. 3: alpha x A"
    if op in ("aten::linear", "aten::addmm", "aten::mm", "aten::matmul", "aten::t"):
        return "backward: head matmuls and Eq. 4" if backward else "forward: head Linear"
    if backward:
        return "backward: other (means, sums, autograd glue)"
    if "forward" in ranges:
        return "forward: other"
    if inner == "run":
        return "chunking and concatenation"
    return "merge and centring (grad_slam)"


@functools.cache
def _load(path: str | None):
    if path is None:
        return gradslam
    return load_module(path, "gradslam_under_test")


def wrapped(mod):
    """Wrap the module's functions (and, for the installed gradslam, those of its blockwise
    executor; and torch.autograd.grad, per call) in profiler ranges; returns a function that
    undoes it."""
    saved = {}
    for m in [mod, blockwise] if mod is gradslam else [mod]:
        for name, label in RANGES.items():
            fn = getattr(m, name, None)
            if fn is None or not callable(fn):
                continue
            saved[m, name] = fn

            def wrap(*a, _fn=fn, _label=label, **k):
                with record_function(_label):
                    return _fn(*a, **k)

            setattr(m, name, wrap)
    grad = torch.autograd.grad
    count = [0]

    def grad_wrap(*a, **k):
        count[0] += 1
        with record_function(f"backward d={(count[0] - 1) % 2}"):
            return grad(*a, **k)

    torch.autograd.grad = grad_wrap

    def undo():
        for (m, name), fn in saved.items():
            setattr(m, name, fn)
        torch.autograd.grad = grad

    return undo


def breakdown(prof) -> dict[str, float]:
    """Self CPU ms per group, every aten op charged once."""
    labels = set(RANGES.values()) | {"grad_slam"}
    out: dict[str, float] = defaultdict(float)
    for ev in prof.events():
        if ev.name in labels or ev.name.startswith("backward d=") or ev.name.startswith("ProfilerStep"):
            continue
        ranges, p = [], ev.cpu_parent
        names = []
        while p is not None:
            if p.name in labels or p.name.startswith("backward d="):
                ranges.append(p.name)
            names.append(p.name)
            p = p.cpu_parent
        ranges.reverse()
        op = ev.name
        if any("evaluate_function" in n for n in names):
            ranges.append("backward")
            op = next((n for n in names if "evaluate_function" in n), op) + " " + op
        out[group_of(op, ranges)] += ev.self_cpu_time_total / 1e3
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixels", type=int, default=8192)
    ap.add_argument("--batch-size", type=int, default=schema.GRADSLAM_BATCH_SIZE)
    ap.add_argument("--repeats", type=int, default=3, help="profiled runs; the fastest is kept")
    ap.add_argument("--module", type=str, default=None, help="path of another gradslam.py to profile")
    ap.add_argument("--tag", type=str, default=None)
    args = ap.parse_args()
    mod = _load(args.module)
    torch.manual_seed(0)
    encoder = CAE(CAEConfig()).encoder.eval()
    x = torch.randn(args.pixels, 2, 61)
    ref = mod.reference_map(encoder, x[:1024])

    def run():
        with record_function("grad_slam"):
            mod.grad_slam(encoder, x, reference=ref, return_embedding=True, batch_size=args.batch_size)

    run()  # warm-up
    load = os.getloadavg()
    best = None
    undo = wrapped(mod)
    try:
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run()
            wall = time.perf_counter() - t0
            groups = breakdown(prof)
            if best is None or sum(groups.values()) < sum(best[1].values()):
                best = (wall, groups)
    finally:
        undo()
    assert best is not None
    wall, groups = best
    total = sum(groups.values())
    rows = sorted(groups.items(), key=lambda kv: -kv[1])
    res = {
        "module": args.module or "slamgeo.method.gradslam",
        "pixels": args.pixels,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "load_avg_before": [round(v, 2) for v in load],
        "load_avg_after": [round(v, 2) for v in os.getloadavg()],
        "wall_s_profiled": wall,
        "self_cpu_ms_total": total,
        "groups": [{"group": g, "ms": round(ms, 2), "share": round(ms / total, 3)} for g, ms in rows],
    }
    out = RESULTS / (f"profile_gradslam_{args.tag}.json" if args.tag else "profile_gradslam.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"{res['module']}: {args.pixels} pixels, batch {args.batch_size}, load {res['load_avg_before']}")
    print("| op group | ms | share |\n| --- | ---: | ---: |")
    for g, ms in rows:
        print(f"| {g} | {ms:.1f} | {100 * ms / total:.1f} % |")
    print(f"| total (self CPU, summed over threads' ops) | {total:.1f} | 100 % |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
