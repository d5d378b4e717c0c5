"""Check slamgeo on a CUDA GPU: results against the CPU, bf16, and pixels per second.

    .venv/bin/python benchmarks/gpu_check.py            # 256 x 256 scene, 61 dates (a few minutes)
    .venv/bin/python benchmarks/gpu_check.py --quick    # 128 x 128 scene (under 2 minutes)
    .venv/bin/python benchmarks/gpu_check.py --cube cube.zarr --model model_dir

Without --cube/--model, a synthetic scene is drawn (`make_scene`) and a model with the default
architecture is trained on it for a couple of epochs (on the GPU). Then:

1. Agreement CPU vs CUDA, float32, on a sample of valid pixels, with one reference map (the
   CPU's) for both: Grad-SLAM importance ("centred"), embedding and raw per-layer maps: max
   abs difference, and whether they agree within the tolerances below. Run twice on the GPU:
   "strict" (TF32 off for convolutions and matmuls) and with torch's defaults (cuDNN may run
   convolutions in TF32, which is what `explain` gets unless the user changes it). The
   reference map itself is also compared (CPU vs CUDA).
2. bf16 autocast on the GPU against float32: correlation of the importance (all values, and
   the mean per-pixel correlation along time) and of the embeddings.
3. Pixels per second of `explain_array` on the GPU at a few `ExplainOptions.batch_size`
   values (torch.cuda.synchronize around each timing), of `grad_slam` alone on device tensors
   at the same batch sizes (its own `batch_size` argument), of Grad-SLAM's blockwise executor
   at the largest batch with its activations in torch's layout (what CUDA runs) and
   channels-last (what the CPU runs), and of `explain_array` on the CPU (all cores) on a
   smaller sample, for scale.
4. A full Zarr-to-Zarr `explain` on a LocalCluster with one worker process (one thread) that
   uses the GPU: pixels per second of the whole call, and its embeddings against (3)'s.

Tolerances (float32, strict). Both devices compute the same float32 graph in another order
(cuDNN/cuBLAS reductions vs oneDNN/MKL), so the results differ by rounding, not by formula:
about sqrt(K) * 2^-24 relative per layer for sums of K <= 768 terms, compounded over six layers
forward and back, i.e. ~1e-5 relative on the raw maps and embeddings. Embeddings: rtol 1e-4,
atol 1e-4 x their standard deviation. Raw maps: both float32 results are also compared with a
float64 computation on the CPU (the same input and reference), and each layer's GPU map must be
within max(1e-4 x max |map|, 10 x the CPU float32 map's own error) of it: as accurate as the
tested CPU path to within an order of magnitude (a layer whose channel sums cancel has a
larger float32 error on any device, which a fixed bound on the CPU-GPU difference misreads).
Pixels with a max-pooling near-tie (`pooling_margins`: two dates of a pooled pair within 3e-6
relative in float64, 25 float32 ulps, in a block whose pooling routes the gradient) are left out
of that bound and counted: float32 on any device can route such a pair's gradient to the other
date, which changes that pixel's maps of the blocks below by far more than rounding. On the CPU
(`--device cpu --quick`, 2 048 pixels of a trained model): the first block's map 2.0e-4 from
float64 over all pixels, 1.9e-7 without the 3.6 % of pixels under that margin; the one pixel
over 1e-5 had a margin of 2.5e-7. The error over all pixels is reported beside it. The CPU-GPU difference is reported too. Importance is
(M - R) / max_t |M - R| in [-1, 1]; subtracting the reference R can cancel digits for pixels close
to the scene's mean, so its bound is absolute: 1e-3 (0.1 % of the colour scale, invisible in a
figure), required of 99.9 % of the pixels and reported for the worst one. With TF32
(cuDNN's default for convolutions on Ampere and later: a 10-bit mantissa, 2^-11 relative
rounding per product instead of 2^-24) the rounding is ~1000x larger, so that comparison is
reported against 2e-2 (importance) and 1e-2 relative (embeddings, raw maps), and not failed on.

Prints a summary with the card name and writes `benchmarks/results/gpu_check.json`
(`gpu_check.quick.json` with --quick). On a machine without CUDA it prints "no CUDA device:
nothing to check", writes a JSON saying so, and exits 0.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, MiB, cpu_count, load_average, machine_info, make_inputs, write_result  # noqa: E402

NO_CUDA = "no CUDA device: nothing to check"
TOL = {
    "strict": {
        "importance_atol": 1e-3,
        "importance_pixel_fraction": 0.999,
        "embedding_rtol": 1e-4,
        "embedding_atol_x_std": 1e-4,
        "maps_rel": 1e-4,
    },
    "tf32": {
        "importance_atol": 2e-2,
        "importance_pixel_fraction": 0.999,
        "embedding_rtol": 1e-2,
        "embedding_atol_x_std": 1e-2,
        "maps_rel": 1e-2,
    },
}


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@contextmanager
def tf32(enabled: bool):
    """TF32 for cuDNN convolutions and cuBLAS matmuls on or off, restored afterwards."""
    import torch

    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _gradslam(model, xs, ref, device, *, bf16: bool = False, float64: bool = False):
    """importance (N, D, T), embedding (N, D), raw layer maps, all float32 on the CPU.

    float64: a float64 copy of the encoder on the CPU (the result rounded to float32 at the end)."""
    import copy

    import torch

    from slamgeo.method.gradslam import grad_slam

    enc = copy.deepcopy(model.model.encoder).double() if float64 else model.model.encoder
    layers = list(enc.blocks.values())
    dtype = torch.float64 if float64 else torch.float32
    x = torch.as_tensor(xs, device=device, dtype=dtype)
    r = torch.as_tensor(ref, device=device, dtype=dtype)
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        out = grad_slam(enc, x, layers, scale="centred", reference=r, return_embedding=True, return_layer_maps=True)
    sync(device)
    return (
        out.importance.float().cpu().numpy(),
        out.embedding.float().cpu().numpy(),
        [m.float().cpu().numpy() for m in out.layer_maps],
    )


def error_vs_float64(got, exact, keep=None) -> dict:
    """max |float32 - float64| of each quantity, over the float64 quantity's max |.|; the layer
    maps over the pixels of `keep` (`(N,)` bool: those without a max-pooling near-tie,
    `pooling_margins`) and over all pixels."""
    import numpy as np

    def rel(a, b) -> float:
        return float(np.abs(a - b).max(initial=0.0) / max(float(np.abs(b).max(initial=0.0)), 1e-30))

    keep = np.ones(len(exact[1]), dtype=bool) if keep is None else keep
    return {
        "importance": rel(got[0], exact[0]),
        "embedding": rel(got[1], exact[1]),
        "layer_maps": [rel(g[keep], e[keep]) for g, e in zip(got[2], exact[2])],
        "layer_maps_all_pixels": [rel(g, e) for g, e in zip(got[2], exact[2])],
    }


POOLING_TIE = 3e-6  # relative gap of a max-pooling pair under which float32 may route it otherwise (25 ulp)


def pooling_margins(encoder, xs):
    """Per pixel `(N,)`, the smallest relative gap |z_odd - z_even| / (|z_odd| + |z_even|) of the
    max-pooling pairs whose choice routes Grad-SLAM's gradient (the blocks after the first), from
    a float64 forward pass on the CPU. A pair closer than float32's rounding of the convolutions
    (about 1e-6 relative) can be routed to the other date by another float32 computation (another
    device, another summation order): the gradient of max pooling jumps at a tie, so the maps of
    the blocks below it differ at that pixel by far more than rounding, on any device."""
    import copy

    import torch

    enc = copy.deepcopy(encoder).double().eval()
    h = torch.as_tensor(xs, dtype=torch.float64)
    margin = torch.full((h.shape[0],), float("inf"), dtype=torch.float64)
    with torch.no_grad():
        for i, block in enumerate(enc.blocks.values()):
            z = block[0](h)
            if i > 0 and z.shape[-1] >= 2:
                half = z.shape[-1] // 2
                even, odd = z[..., 0 : 2 * half : 2], z[..., 1 : 2 * half : 2]
                gap = (odd - even).abs() / (odd.abs() + even.abs()).clamp_min(1e-300)
                margin = torch.minimum(margin, gap.flatten(1).amin(1))
            h = block[2](block[1](z))
    return margin.numpy()


def variants_vs_float64(model_dev, xs, ref, device, exact, keep=None) -> dict:
    """Where the device's float32 error comes from, each variant's error against float64
    (`error_vs_float64`), TF32 off in all: cuDNN's deterministic algorithms; cuDNN off (torch's
    own convolutions); torch's fp32_precision "ieee" set through its newer per-backend settings
    alone (where this torch has them; torch refuses a mix with the older flags); and the whole computation in float64 on the device (its
    arithmetic and the executor's formulas, without float32's rounding). A variant that fails
    is reported as its error."""
    import torch

    backends = torch.backends

    def cudnn(**flags):
        @contextmanager
        def ctx():
            old = {k: getattr(backends.cudnn, k) for k in flags}
            try:
                for k, v in flags.items():
                    setattr(backends.cudnn, k, v)
                yield
            finally:
                for k, v in old.items():
                    setattr(backends.cudnn, k, v)

        return ctx

    @contextmanager
    def ieee():
        targets = [(backends.cuda.matmul, "fp32_precision"), (backends.cudnn.conv, "fp32_precision")]
        old = [(obj, name, getattr(obj, name)) for obj, name in targets if hasattr(obj, name)]
        if not old:
            raise RuntimeError("this torch has no fp32_precision settings")
        try:
            for obj, name, _ in old:
                setattr(obj, name, "ieee")
            yield
        finally:
            for obj, name, value in old:
                setattr(obj, name, value)

    out: dict = {}
    for name, ctx, float64 in (
        ("cudnn_deterministic", cudnn(deterministic=True, benchmark=False), False),
        ("cudnn_off", cudnn(enabled=False), False),
        ("fp32_precision_ieee", ieee, False),
        ("float64_on_device", cudnn(), True),
    ):
        legacy = tf32(False) if ctx is not ieee else nullcontext()  # torch refuses a mix of the two settings
        try:
            with ctx(), legacy:
                got = (
                    _gradslam_device64(model_dev, xs, ref, device) if float64 else _gradslam(model_dev, xs, ref, device)
                )
            out[name] = error_vs_float64(got, exact, keep)
        except Exception as exc:  # noqa: BLE001 - a diagnostic: report it and go on
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def _gradslam_device64(model_dev, xs, ref, device):
    """`_gradslam` with a float64 copy of the encoder on `device`."""
    import copy

    import torch

    from slamgeo.method.gradslam import grad_slam

    enc = copy.deepcopy(model_dev.model.encoder).double()
    x = torch.as_tensor(xs, device=device, dtype=torch.float64)
    r = torch.as_tensor(ref, device=device, dtype=torch.float64)
    out = grad_slam(
        enc, x, list(enc.blocks.values()), scale="centred", reference=r, return_embedding=True, return_layer_maps=True
    )
    sync(device)
    return (
        out.importance.float().cpu().numpy(),
        out.embedding.float().cpu().numpy(),
        [m.float().cpu().numpy() for m in out.layer_maps],
    )


def compare(cpu, dev, tol: dict, exact=None, keep=None) -> dict:
    """CPU float32 against the device's result; with `exact` (float64 on the CPU), the layer
    maps are judged by the device's error against it, relative to the CPU float32's own, over
    the pixels of `keep` (those without a max-pooling near-tie, `pooling_margins`)."""
    import numpy as np

    imp_c, emb_c, maps_c = cpu
    imp_g, emb_g, maps_g = dev
    d_imp = np.abs(imp_g - imp_c)
    per_pixel = d_imp.reshape(len(d_imp), -1).max(1)
    d_emb = np.abs(emb_g - emb_c)
    emb_atol = tol["embedding_atol_x_std"] * float(emb_c.std())
    maps_rel = [float(np.abs(g - c).max() / max(np.abs(c).max(), 1e-30)) for c, g in zip(maps_c, maps_g)]
    ok_imp = float((per_pixel <= tol["importance_atol"]).mean())
    res = {
        "importance_max_abs_diff": float(d_imp.max()),
        "importance_p999_abs_diff": float(np.quantile(per_pixel, 0.999)),
        "importance_fraction_of_pixels_within_atol": ok_imp,
        "embedding_max_abs_diff": float(d_emb.max()),
        "embedding_max_rel_diff": float((d_emb / np.maximum(np.abs(emb_c), 1e-12)).max()),
        "embedding_allclose": bool(np.allclose(emb_g, emb_c, rtol=tol["embedding_rtol"], atol=emb_atol)),
        "layer_maps_max_abs_diff_over_max_abs": maps_rel,
        "tolerances": tol,
    }
    maps_ok = max(maps_rel) <= tol["maps_rel"]
    if exact is not None:
        err_c, err_g = error_vs_float64(cpu, exact, keep), error_vs_float64(dev, exact, keep)
        bounds = [max(tol["maps_rel"], 10 * e) for e in err_c["layer_maps"]]
        res["error_vs_float64"] = {"cpu_float32": err_c, "device": err_g, "layer_map_bounds": bounds}
        maps_ok = all(g <= b for g, b in zip(err_g["layer_maps"], bounds))
    res["layer_maps_ok"] = bool(maps_ok)
    res["ok"] = bool(ok_imp >= tol["importance_pixel_fraction"] and res["embedding_allclose"] and maps_ok)
    return res


def correlation(a, b) -> dict:
    import numpy as np

    imp_a, emb_a = a[0], a[1]
    imp_b, emb_b = b[0], b[1]
    flat = float(np.corrcoef(imp_a.ravel(), imp_b.ravel())[0, 1])
    xa = imp_a - imp_a.mean(-1, keepdims=True)
    xb = imp_b - imp_b.mean(-1, keepdims=True)
    den = np.sqrt((xa**2).sum(-1) * (xb**2).sum(-1))
    per = np.where(den > 0, (xa * xb).sum(-1) / np.where(den > 0, den, 1), np.nan)
    return {
        "importance_correlation": flat,
        "importance_mean_per_pixel_correlation": float(np.nanmean(per)),
        "importance_p01_per_pixel_correlation": float(np.nanquantile(per, 0.01)),
        "importance_max_abs_diff": float(np.abs(imp_a - imp_b).max()),
        "importance_mean_abs_diff": float(np.abs(imp_a - imp_b).mean()),
        "embedding_correlation_per_dim": [
            float(np.corrcoef(emb_a[:, d], emb_b[:, d])[0, 1]) for d in range(emb_a.shape[1])
        ],
    }


def throughput(fn, n_pixels: int, device, repeats: int = 1) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return n_pixels * repeats / (time.perf_counter() - t0)


def raw_maps_by_layout(encoder, x, layers, device, batch: int) -> dict:
    """Pixels/s of Grad-SLAM's blockwise executor (embedding and raw maps of every block, one
    call of `batch` pixels) with its activations in torch's `(N, K, t)` layout (what CUDA runs)
    and channels-last (what the CPU runs), on `device`: whether channels-last pays there too."""
    from slamgeo.method.blockwise import blockwise_maps

    xb = x[:batch]
    out = {"pixels": int(xb.shape[0])}
    for name, channels_last in (("torch_layout", False), ("channels_last", True)):
        try:
            blockwise_maps(encoder, xb, layers, {}, channels_last=channels_last)  # warm-up
            pps = throughput(
                lambda c=channels_last: blockwise_maps(encoder, xb, layers, {}, channels_last=c), len(xb), device, 3
            )
            out[name] = round(pps, 1)
        except Exception as exc:  # noqa: BLE001 - a diagnostic: report it and go on
            out[name] = f"{type(exc).__name__}: {exc}"
    return out


def full_explain(cube: Path, model_dir: Path, out: Path, batch_size: int, threads: int = 1) -> dict:
    """`explain` on a LocalCluster with one worker process of `threads` threads that sees the GPU,
    as `slamgeo run --gpu-resources` runs it: the tasks annotated with the resource GPU, the
    worker declaring GPU = its threads (threads > 1: several blocks in flight, their reads,
    encodes and writes beside the GPU's work)."""
    from slamgeo.jobs.explain import ExplainOptions, explain_store
    from slamgeo.jobs.runtime import ClusterOptions, dask_client

    def worker_cuda():
        import torch

        return {
            "cuda": torch.cuda.is_available(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "max_memory_allocated_mib": torch.cuda.max_memory_allocated() / MiB if torch.cuda.is_available() else 0,
        }

    t0 = time.perf_counter()
    opts = ClusterOptions(n_workers=1, threads_per_worker=threads, dashboard=False, gpu_resources=True)
    with dask_client(opts, quiet=True) as client:
        client.wait_for_workers(1)
        start_s = time.perf_counter() - t0
        before = list(client.run(worker_cuda).values())[0]
        t1 = time.perf_counter()
        rep = explain_store(
            cube,
            model_dir,
            out,
            options=ExplainOptions(batch_size=batch_size, device="auto"),
            client=client,
            overwrite=True,
            progress=False,
            gpu_resources=True,
        )
        secs = time.perf_counter() - t1
        after = list(client.run(worker_cuda).values())[0]
    return {
        "threads_per_worker": threads,
        "cluster_start_s": round(start_s, 2),
        "explain_s": round(secs, 2),
        "valid_pixels": rep.valid_pixels,
        "blocks": rep.blocks_total,
        "pixels_per_s": rep.valid_pixels / secs,
        "worker_before": before,
        "worker_after": after,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="128 x 128 scene, fewer pixels and batch sizes")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--dates", type=int, default=61)
    p.add_argument("--chunk", type=int, default=128)
    p.add_argument("--cube", type=Path, default=None, help="a cube store (Zarr) instead of a synthetic scene")
    p.add_argument("--model", type=Path, default=None, help="a model directory (with --cube: else one is trained)")
    p.add_argument("--compare-pixels", type=int, default=8192, help="pixels for the CPU/GPU comparison")
    p.add_argument("--cpu-pixels", type=int, default=4096, help="pixels for the CPU throughput, for scale")
    p.add_argument("--batch-sizes", default="1024,4096,16384,65536")
    p.add_argument("--explain-batch-size", type=int, default=None, help="batch size of the full explain run")
    p.add_argument("--explain-threads", default="1,4", help="threads of the one GPU worker, one run each")
    p.add_argument("--skip-explain", action="store_true", help="skip the full Zarr-to-Zarr explain run")
    p.add_argument("--device", default=None, help=argparse.SUPPRESS)  # "cpu": exercise the code without a GPU
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.quick:
        args.size, args.chunk, args.compare_pixels, args.cpu_pixels = 128, 64, 2048, 1024
        args.batch_sizes = "1024,8192"
    if args.out is None:
        args.out = RESULTS / ("gpu_check.quick.json" if args.quick else "gpu_check.json")

    import numpy as np
    import torch

    info = machine_info()
    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        print(NO_CUDA)
        path = write_result(
            "gpu_check",
            {
                "benchmark": "gpu_check",
                "cuda": False,
                "status": "skipped",
                "message": NO_CUDA,
                "quick": args.quick,
                "machine": info,
            },
            out=args.out,
        )
        print(f"wrote {path}")
        return 0

    from slamgeo.io.cube import open_cube
    from slamgeo.io.sample import sample_series
    from slamgeo.jobs.explain import ExplainOptions, explain_array
    from slamgeo.method.checkpoint import load_model
    from slamgeo.method.gradslam import reference_map

    cuda = torch.device(device).type == "cuda"
    card = torch.cuda.get_device_name(0) if cuda else f"(no GPU: {device})"
    print(
        f"device: {card}; torch {torch.__version__}, CUDA {torch.version.cuda}; {cpu_count()} cpus, "
        f"load {load_average()}",
        flush=True,
    )
    torch.set_num_threads(cpu_count())
    t_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="slamgeo-gpu-check-"))
    result: dict = {
        "benchmark": "gpu_check",
        "cuda": cuda,
        "device": card,
        "quick": args.quick,
        "machine": info,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    if cuda:
        props = torch.cuda.get_device_properties(0)
        result["gpu"] = {
            "name": card,
            "memory_mib": round(props.total_memory / MiB),
            "capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "tf32_defaults": {
                "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
                "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            },
        }
    try:
        # ------------------------------------------------------------------ inputs
        if args.cube is not None:
            cube_path = args.cube
            if args.model is None:
                from slamgeo.method.train import train

                t0 = time.perf_counter()
                train(
                    open_cube(str(cube_path)),
                    out_dir=work / "model",
                    sample_size=20_000,
                    max_epochs=2,
                    progress=False,
                    device=device,
                )
                result["train_s"] = round(time.perf_counter() - t0, 1)
            model_dir = args.model or work / "model"
        else:
            inputs = make_inputs(
                work,
                size=args.size,
                n_dates=args.dates,
                chunk=args.chunk,
                sample_size=5000 if args.quick else 20_000,
                max_epochs=2,
                model_dir=args.model,
                device=device,
            )
            cube_path, model_dir = inputs["cube"], inputs["model"]
            result["inputs"] = {k: v for k, v in inputs.items() if k.endswith("_s")}
        model_cpu = load_model(model_dir)
        model_dev = model_cpu.to(device)
        cube = open_cube(str(cube_path))
        x = sample_series(cube, args.compare_pixels, seed=1, bands=model_cpu.bands)
        x = x[np.isfinite(x).all(axis=(1, 2))]
        xs = model_cpu.standardise(x)
        print(f"inputs ready: {x.shape[0]} pixels to compare, {time.perf_counter() - t_all:.0f} s", flush=True)

        # ------------------------------------------------------------------ 1. CPU vs GPU
        layers_c = list(model_cpu.model.encoder.blocks.values())
        layers_g = list(model_dev.model.encoder.blocks.values())
        n_ref = min(len(xs), 4096)
        ref_cpu = reference_map(model_cpu.model.encoder, torch.from_numpy(xs[:n_ref]), layers_c).numpy()
        with tf32(False):
            ref_dev = (
                reference_map(model_dev.model.encoder, torch.from_numpy(xs[:n_ref]).to(device), layers_g).cpu().numpy()
            )
        cpu = _gradslam(model_cpu, xs, ref_cpu, "cpu")
        exact = _gradslam(model_cpu, xs, ref_cpu, "cpu", float64=True)
        margins = pooling_margins(model_cpu.model.encoder, xs)
        keep = margins >= POOLING_TIE
        with tf32(False):
            strict = _gradslam(model_dev, xs, ref_cpu, device)
        default = _gradslam(model_dev, xs, ref_cpu, device)  # torch's TF32 defaults
        result["agreement"] = {
            "pixels": int(len(xs)),
            "reference_map_max_abs_diff_over_max_abs": float(np.abs(ref_dev - ref_cpu).max() / np.abs(ref_cpu).max()),
            "pooling_near_ties": {
                "threshold": POOLING_TIE,
                "pixels": int((~keep).sum()),
                "smallest_margin": float(margins.min(initial=float("inf"))),
            },
            "float32_strict": compare(cpu, strict, TOL["strict"], exact, keep),
            "float32_torch_defaults": compare(cpu, default, TOL["tf32"], exact, keep),
        }
        if cuda:
            result["agreement"]["float32_strict_variants_error_vs_float64"] = variants_vs_float64(
                model_dev, xs, ref_cpu, device, exact, keep
            )
            print(
                f"  float32 variants against float64: {result['agreement']['float32_strict_variants_error_vs_float64']}"
            )
        s = result["agreement"]["float32_strict"]
        e = s["error_vs_float64"]
        print(
            f"CPU vs {device} float32 (TF32 off): importance max |diff| {s['importance_max_abs_diff']:.2e}, "
            f"embedding max |diff| {s['embedding_max_abs_diff']:.2e}; layer maps' error against float64 "
            f"(relative to max |map|, {int(keep.sum())} pixels without a max-pooling near-tie): CPU "
            f"{', '.join(f'{v:.1e}' for v in e['cpu_float32']['layer_maps'])}, "
            f"{device} {', '.join(f'{v:.1e}' for v in e['device']['layer_maps'])}; all pixels: CPU "
            f"{', '.join(f'{v:.1e}' for v in e['cpu_float32']['layer_maps_all_pixels'])}, "
            f"{device} {', '.join(f'{v:.1e}' for v in e['device']['layer_maps_all_pixels'])} -> "
            f"{'OK' if s['ok'] else 'MISMATCH'}",
            flush=True,
        )
        d = result["agreement"]["float32_torch_defaults"]
        print(
            f"CPU vs {device} float32 (torch defaults, TF32 convs): importance max |diff| "
            f"{d['importance_max_abs_diff']:.2e}, embedding max |diff| {d['embedding_max_abs_diff']:.2e}",
            flush=True,
        )

        # ------------------------------------------------------------------ 2. bf16 autocast
        try:
            with tf32(False):
                bf = _gradslam(model_dev, xs, ref_cpu, device, bf16=True)
            result["bf16_vs_float32"] = correlation(strict, bf)
            b = result["bf16_vs_float32"]
            print(
                f"bf16 autocast vs float32: importance correlation {b['importance_correlation']:.4f} "
                f"(mean per pixel {b['importance_mean_per_pixel_correlation']:.4f}), max |diff| "
                f"{b['importance_max_abs_diff']:.3f}",
                flush=True,
            )
        except Exception as exc:  # noqa: BLE001 - report, and go on with the rest
            result["bf16_vs_float32"] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"bf16 autocast failed: {exc}", flush=True)

        # ------------------------------------------------------------------ 3. throughput
        from slamgeo.method.gradslam import grad_slam

        stacked = np.stack([cube[b].values for b in model_cpu.bands])
        c, t = stacked.shape[:2]
        x_all = np.ascontiguousarray(stacked.reshape(c, t, -1).transpose(2, 0, 1))
        del stacked
        n_valid = int(np.isfinite(x_all).all(axis=(1, 2)).sum())
        x_valid = torch.from_numpy(model_cpu.standardise(x_all[np.isfinite(x_all).all(axis=(1, 2))])).to(device)
        ref_t = torch.as_tensor(ref_cpu, device=device)
        enc_g = model_dev.model.encoder
        explain_array(
            model_dev, x_all[:2048], options=ExplainOptions(batch_size=1024, device=device), reference=ref_cpu
        )  # warm-up
        rows = []
        for bs in [int(v) for v in args.batch_sizes.split(",")]:
            opts = ExplainOptions(batch_size=bs, device=device)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            pps = throughput(
                lambda opts=opts: explain_array(model_dev, x_all, options=opts, reference=ref_cpu), n_valid, device
            )
            peak = torch.cuda.max_memory_allocated() / MiB if cuda else None
            pps_gs = throughput(
                lambda bs=bs: grad_slam(
                    enc_g, x_valid, layers_g, scale="centred", reference=ref_t, return_embedding=True, batch_size=bs
                ),
                n_valid,
                device,
            )
            peak_gs = torch.cuda.max_memory_allocated() / MiB if cuda else None
            rows.append(
                {
                    "batch_size": bs,
                    "explain_array_pixels_per_s": round(pps, 1),
                    "grad_slam_pixels_per_s": round(pps_gs, 1),
                    "peak_gpu_memory_mib": None if peak is None else round(max(peak, peak_gs), 1),
                }
            )
            print(
                f"  batch {bs:>6}: explain_array {pps:>10.0f} px/s, grad_slam(batch_size={bs}) {pps_gs:>10.0f} px/s",
                flush=True,
            )
        layouts = raw_maps_by_layout(enc_g, x_valid, layers_g, device, max(r["batch_size"] for r in rows))
        print(f"  raw maps (the blockwise executor) by activation layout: {layouts}", flush=True)
        n_cpu = min(args.cpu_pixels, len(x))
        cpu_pps = throughput(
            lambda: explain_array(model_cpu, x[:n_cpu], options=ExplainOptions(device="cpu"), reference=ref_cpu),
            n_cpu,
            "cpu",
        )
        result["throughput"] = {
            "pixels": n_valid,
            "rows": rows,
            "cpu_explain_array_pixels_per_s": round(cpu_pps, 1),
            "cpu_threads": torch.get_num_threads(),
            "cpu_pixels": n_cpu,
            "raw_maps_by_layout": layouts,
        }
        best = max(rows, key=lambda r: r["explain_array_pixels_per_s"])
        result["throughput"]["best_gpu_speedup_vs_cpu"] = round(best["explain_array_pixels_per_s"] / cpu_pps, 1)
        print(
            f"  CPU ({torch.get_num_threads()} threads) explain_array: {cpu_pps:.0f} px/s; best GPU x"
            f"{result['throughput']['best_gpu_speedup_vs_cpu']}",
            flush=True,
        )

        # ------------------------------------------------------------------ 4. full explain
        if not args.skip_explain:
            import xarray as xr

            bs = args.explain_batch_size or best["batch_size"]
            runs = []
            for threads in [int(v) for v in args.explain_threads.split(",")]:
                out = work / f"results_{threads}.zarr"
                fe = full_explain(cube_path, model_dir, out, bs, threads)
                fe["batch_size"] = bs
                res = xr.open_zarr(str(out))
                ref_store = np.asarray(res.attrs["reference_map"], np.float32) if "reference_map" in res.attrs else None
                emb_mem, _, _ = explain_array(
                    model_dev, x_all, options=ExplainOptions(batch_size=bs, device=device), reference=ref_store
                )
                emb_zarr = res["embedding"].values.reshape(res.sizes["dim"], -1).T
                ok = np.isfinite(emb_mem).all(1)
                fe["embedding_max_abs_diff_vs_explain_array"] = float(np.abs(emb_zarr[ok] - emb_mem[ok]).max())
                fe["explain_vs_explain_array_best"] = round(fe["pixels_per_s"] / best["explain_array_pixels_per_s"], 3)
                runs.append(fe)
                print(
                    f"explain on a LocalCluster (1 worker x {threads} threads, GPU {fe['worker_after']['cuda']}): "
                    f"{fe['valid_pixels']} px in {fe['explain_s']} s = {fe['pixels_per_s']:.0f} px/s "
                    f"({fe['explain_vs_explain_array_best']} of explain_array's best), "
                    f"cluster start {fe['cluster_start_s']} s",
                    flush=True,
                )
            result["explain_runs"] = runs
            result["explain"] = max(runs, key=lambda r: r["pixels_per_s"])
        result["status"] = "ok" if result["agreement"]["float32_strict"]["ok"] else "mismatch"
    finally:
        shutil.rmtree(work, ignore_errors=True)
        result["wall_s"] = round(time.perf_counter() - t_all, 1)
        result["load_average_end"] = load_average()
        path = write_result("gpu_check", result, out=args.out)
        print(f"wrote {path} ({result['wall_s']} s)")
    return 0 if result.get("status") == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
