"""Throughput of Grad-SLAM against encoding alone and against one Grad-CAM call per layer per dimension.

One run, default model (CAEConfig(): 64/128/256 channels, T = 61, D = 2), on this machine:
  (a) encode only                      pixels/s  (no_grad forward)
  (b) grad_slam, all default layers, D = 2, default scaling, with the embedding  pixels/s
  (c) naive: captum LayerGradCam(relu_attributions=False) per layer per dimension, plus the
      same resampling, scaling and merge                                             pixels/s
  the machine's ceiling: float32 GEMM (4096^3) FLOP/s, best of a few
  FLOPs per pixel of (b) (torch FlopCounterMode) and (b)'s achieved FLOP rate / ceiling
  where (b)'s time goes (torch.profiler, self CPU time per op)
  levers: (b) at other batch sizes, with oneDNN off, through the encoder's own forward pass,
  hooks and one autograd pass per dimension (the path for other encoders), and that without
  the linear shortcut.
  --compare PATH: another gradslam.py (an earlier version, say) timed as (b') in the same
  alternating rounds, so that before and after see the same machine load.

Prints everything and writes benchmarks/results/bench_gradslam.json.
Usage: python benchmarks/bench_gradslam.py [--quick] [--pixels N] [--batch-size B] [--threads K] [--compare PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_module  # noqa: E402

from slamgeo import schema
from slamgeo.method import gradslam
from slamgeo.method.gradslam import default_layers, grad_slam, reference_map, resample, scale_maps
from slamgeo.method.model import CAE, CAEConfig

RESULTS = Path(__file__).resolve().parent / "results"


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up (oneDNN primitive creation, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def gemm_ceiling(repeats: int, n: int = 4096) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_time(lambda: a @ b, repeats)


def naive_grad_cam(encoder, x, ref, batch_size):
    """(c): one LayerGradCam call per layer and per dimension, then the same resample/scale/merge."""
    from captum.attr import LayerGradCam

    layers = default_layers(encoder)
    n_dims, n_times = ref.shape
    out = []
    for i in range(0, x.shape[0], batch_size):
        xc = x[i : i + batch_size]
        maps = []
        for layer in layers:
            cam = LayerGradCam(encoder, layer)
            per_dim = [cam.attribute(xc, target=d, relu_attributions=False)[:, 0] for d in range(n_dims)]
            maps.append(resample(torch.stack(per_dim, 1).detach(), n_times))
        merged = torch.stack(maps).mean(0)
        out.append(scale_maps(merged - ref, "maxabs"))
    return torch.cat(out)


def encode(encoder, x, batch_size):
    with torch.no_grad():
        return torch.cat([encoder(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def profile_ops(fn, top: int = 12) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    rows = sorted(prof.key_averages(), key=lambda r: r.self_cpu_time_total, reverse=True)
    total = sum(r.self_cpu_time_total for r in rows)
    return [
        {
            "op": r.key,
            "self_ms": round(r.self_cpu_time_total / 1e3, 2),
            "share": round(r.self_cpu_time_total / total, 3),
        }
        for r in rows[:top]
    ]


def main() -> None:
    warnings.filterwarnings("ignore", message="TF32 acceleration")  # from toggling oneDNN
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small run (fewer pixels, repeats)")
    ap.add_argument("--pixels", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=schema.GRADSLAM_BATCH_SIZE)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    ap.add_argument("--out", type=Path, default=None, help="default: results/bench_gradslam[_<threads>t].json")
    ap.add_argument("--compare", type=Path, default=None, help="another gradslam.py, timed as (b') alongside (b)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out is None:
        args.out = RESULTS / (f"bench_gradslam_{args.threads}t.json" if args.threads else "bench_gradslam.json")
    n = args.pixels or (2048 if args.quick else 8192)
    repeats = args.repeats or (2 if args.quick else 5)
    bs = args.batch_size

    torch.manual_seed(0)
    encoder = CAE(CAEConfig()).encoder.eval()
    x = torch.randn(n, 2, 61)
    ref = reference_map(encoder, x[:1024])
    load_before = os.getloadavg()

    # interleaved rounds, best of each: the methods see the same machine load
    fns = {
        "a": lambda: encode(encoder, x, bs),
        "b": lambda: grad_slam(encoder, x, reference=ref, return_embedding=True, batch_size=bs),
        "c": lambda: naive_grad_cam(encoder, x, ref, bs),
    }
    if args.compare is not None:
        prev = load_module(args.compare, "gradslam_compared")
        fns["b_prev"] = lambda: prev.grad_slam(encoder, x, reference=ref, return_embedding=True, batch_size=bs)
    best = {k: float("inf") for k in fns}
    ceiling = 0.0
    loads = []
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        ceiling = max(ceiling, gemm_ceiling(2))
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
        loads.append(round(os.getloadavg()[0], 2))
    t_a, t_b, t_c = best["a"], best["b"], best["c"]

    # (b) and (c) compute the same thing
    b = grad_slam(encoder, x[:256], reference=ref)
    c = naive_grad_cam(encoder, x[:256], ref, bs)
    max_diff = (b - c).abs().max().item()

    xs = x[:bs]
    with FlopCounterMode(display=False) as fc:
        grad_slam(encoder, xs, reference=ref, return_embedding=True, batch_size=bs)
    flops_b = fc.get_total_flops() / xs.shape[0]
    with FlopCounterMode(display=False) as fc:
        encode(encoder, xs, bs)
    flops_a = fc.get_total_flops() / xs.shape[0]
    with FlopCounterMode(display=False) as fc:
        naive_grad_cam(encoder, xs, ref, bs)
    flops_c = fc.get_total_flops() / xs.shape[0]

    # levers, on 4 batches' worth of pixels, each against (b) in the same round
    xl = x[: 4 * bs]
    nl = xl.shape[0]

    def patched(plain: bool, shortcut: bool):
        """(b) through the encoder's own forward pass and hooks, with or without the shortcut."""

        def run():
            saved = gradslam.plain_blocks, gradslam._linear_consumer
            if not plain:
                gradslam.plain_blocks = lambda enc, layers: False
            if not shortcut:
                gradslam._linear_consumer = lambda enc, layer: None  # every layer by autograd to its output
            try:
                grad_slam(encoder, xl, reference=ref, batch_size=bs)
            finally:
                gradslam.plain_blocks, gradslam._linear_consumer = saved

        return run

    def onednn_off():
        with torch.backends.mkldnn.flags(enabled=False):
            grad_slam(encoder, xl[: bs // 4], reference=ref, batch_size=bs)

    variants = {
        f"batch_size={size}": (lambda size=size: grad_slam(encoder, xl, reference=ref, batch_size=size))
        for size in (256, 512, 2048, 4096)
    }
    variants["autograd_per_dimension"] = patched(False, True)
    variants["autograd_per_dimension_no_shortcut"] = patched(False, False)
    variants["default"] = lambda: grad_slam(encoder, xl, reference=ref, batch_size=bs)
    levers = {}
    for name, fn in variants.items():
        levers[name] = nl / best_time(fn, max(1, repeats // 2))
    levers["onednn_off"] = (bs // 4) / best_time(onednn_off, 1)
    ops = profile_ops(lambda: grad_slam(encoder, x[: 2 * bs], reference=ref, batch_size=bs))

    res = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_avg_before": [round(v, 2) for v in load_before],
            "load_avg_after": [round(v, 2) for v in os.getloadavg()],
            "load_avg_1min_per_round": loads,
        },
        "setup": {
            "pixels": n,
            "batch_size": bs,
            "repeats": repeats,
            "T": 61,
            "D": 2,
            "layers": 3,
            "scale": schema.GRADSLAM_SCALE,
        },
        "pixels_per_s": {"a_encode": n / t_a, "b_grad_slam": n / t_b, "c_naive_layergradcam": n / t_c},
        "speedup_b_over_c": t_c / t_b,
        "compare": None
        if args.compare is None
        else {
            "module": str(args.compare),
            "pixels_per_s": n / best["b_prev"],
            "speedup_over_c": t_c / best["b_prev"],
            "b_speedup_over_it": best["b_prev"] / t_b,
        },
        "b_cost_over_a": t_b / t_a,
        "flops_per_pixel": {"a_encode": flops_a, "b_grad_slam": flops_b, "c_naive": flops_c},
        "gemm_ceiling_flops": ceiling,
        "b_achieved_flops": flops_b * n / t_b,
        "b_fraction_of_ceiling": flops_b * n / t_b / ceiling,
        "a_fraction_of_ceiling": flops_a * n / t_a / ceiling,
        "b_vs_c_max_abs_diff": max_diff,
        "levers_b_pixels_per_s": levers,
        "b_profile_top_ops": ops,
        "targets": {
            "speedup_b_over_c >= 8": t_c / t_b >= 8,
            "b_fraction_of_ceiling >= 0.85": flops_b * n / t_b / ceiling >= 0.85,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    pps = res["pixels_per_s"]
    print(f"machine: {res['machine']}")
    print(
        f"pixels/s  (a) encode {pps['a_encode']:9.0f}   (b) grad_slam {pps['b_grad_slam']:8.0f}   "
        f"(c) naive LayerGradCam {pps['c_naive_layergradcam']:7.0f}"
    )
    print(f"(b) is {res['speedup_b_over_c']:.2f}x faster than (c); costs {res['b_cost_over_a']:.2f}x encoding")
    if res["compare"]:
        cmp = res["compare"]
        print(
            f"(b') {cmp['module']}: {cmp['pixels_per_s']:.0f} pixels/s, {cmp['speedup_over_c']:.2f}x (c); "
            f"(b) is {cmp['b_speedup_over_it']:.2f}x (b')"
        )
    print(f"load (1 min) per round: {loads}")
    print(f"MFLOP/pixel  (a) {flops_a / 1e6:.2f}  (b) {flops_b / 1e6:.2f}  (c) {flops_c / 1e6:.2f}")
    print(
        f"GEMM ceiling {ceiling / 1e9:.1f} GFLOP/s; (b) achieves {res['b_achieved_flops'] / 1e9:.1f} GFLOP/s = "
        f"{100 * res['b_fraction_of_ceiling']:.0f} % (encode: {100 * res['a_fraction_of_ceiling']:.0f} %)"
    )
    print(f"(b) vs (c) max |diff| {max_diff:.2e}")
    print("levers (b) pixels/s:", {k: round(v) for k, v in levers.items()})
    print("where (b)'s time goes:")
    for row in ops:
        print(f"  {row['op']:45s} {row['self_ms']:9.1f} ms  {100 * row['share']:5.1f} %")
    print(f"targets: {res['targets']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
