"""Class-pair explanations against a known truth: do they point at the dates that tell two classes apart?

For two classes a and b whose difference is confined to known dates, the contrastive
explanation (target e . w, w = mean embedding of b - that of a; `slamgeo.jobs.pairs`) should put
its mass on those dates. Two cases:

- the synthetic scene (`slamgeo.synth.make_scene`, 61 dates, a CAE trained on it with
  `slamgeo.method.train.train`): the confusable pairs whose difference the scene records
  (`DISTINCTIVE_WINDOWS`: pepper and sweet potato differ from cotton only within their window of
  the season; pepper and sweet potato differ within the union of the two windows);
- planted: 3 classes identical except within dates 15..19 of 36 (the data of the known-answer
  tests of Grad-SLAM), a small CAE trained here (300 Adam steps, seed 0), classes 0 -> 2.

For Grad-SLAM (every scaling, `slamgeo.method.attribution.GradSlam`, "centred" against the
reference map of a sample of the scene) and for gradient x input, integrated gradients and
occlusion (the same module, target=w), on held-out pixels of the two classes:
- window share: the share of sum_t |importance| on the true dates divided by the uniform share
  (true dates / all dates): 1 = no better than uniform; per pixel then averaged ("pixel"), and
  for each class's mean map, averaged over the two classes ("class mean"); also for the mean map
  over both classes' pixels ("both"), the `pair_importance` variable of `pair_importance`;
- AUROC of |importance| per date against the true dates (`sklearn.metrics.roc_auc_score`):
  0.5 = chance, 1 = every true date ranked above every other; per pixel then averaged, and for
  the class-mean maps (averaged over the two classes).

Prints Markdown tables and writes benchmarks/results/bench_pair_accuracy.json
(bench_pair_accuracy.quick.json with --quick).
Usage: python benchmarks/bench_pair_accuracy.py [--quick] [--size N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_info, write_result  # noqa: E402

from slamgeo.method.attribution import GradientXInput, GradSlam, IntegratedGradients, Occlusion  # noqa: E402
from slamgeo.method.gradslam import reference_map  # noqa: E402
from slamgeo.method.model import CAE, CAEConfig  # noqa: E402
from slamgeo.method.train import train  # noqa: E402
from slamgeo.schema import SCALES  # noqa: E402
from slamgeo.synth import CLASSES, DISTINCTIVE_WINDOWS, make_scene  # noqa: E402

# the planted case: 3 classes identical except within dates W0..W1-1 of T_WIN
T_WIN, W0, W1 = 36, 15, 20
AMPLITUDES = (-1.5, 0.0, 1.5)


def window_classes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(n, 2, 36)` standardised-like series and their class `(n,)`: one smooth profile per band
    plus N(0, 0.15) noise; class c adds AMPLITUDES[c] times a Hann bump on dates W0..W1-1 only."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, T_WIN)
    base = torch.stack([torch.sin(2 * np.pi * t), 0.7 * torch.cos(2 * np.pi * t) - 0.3])
    y = torch.arange(n) % len(AMPLITUDES)
    bump = torch.zeros(T_WIN)
    bump[W0:W1] = torch.hann_window(W1 - W0 + 2, periodic=False)[1:-1]
    x = base.expand(n, 2, T_WIN).clone()
    x += torch.tensor(AMPLITUDES)[y][:, None, None] * bump * torch.tensor([1.0, 0.6])[:, None]
    x += 0.15 * torch.randn(n, 2, T_WIN, generator=g)
    return x, y


def window_encoder(seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A small CAE (16/32/64 channels, D = 2) trained 300 Adam steps on `window_classes`, one
    thread; its encoder (eval mode) and the training series."""
    x, _ = window_classes(1536, seed=0)
    torch.manual_seed(seed)
    cae = CAE(
        CAEConfig(n_bands=2, n_times=T_WIN, embed_dim=2, channels=(16, 32, 64), kernels=(7, 5, 3), hidden=(32, 16))
    )
    opt = torch.optim.Adam(cae.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(300):
            xb = x[torch.randint(0, len(x), (256,), generator=g)]
            loss = nn.functional.mse_loss(cae(xb)[1], xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return cae.encoder.eval(), x


def scene_pixels(scene, classes: list[int], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `n` random valid pixels of each class in `classes` (all labelled classes if empty):
    dB series `(N, 2, T)` and class ids `(N,)`."""
    vv, vh = scene.cube["VV"].values, scene.cube["VH"].values  # (T, y, x)
    cls = np.asarray(scene.class_id.values)
    ok = (cls >= 0) & np.isfinite(vv).all(0) & np.isfinite(vh).all(0)
    rng = np.random.default_rng(seed)
    picks = []
    for c in classes or [None]:
        flat = np.flatnonzero(ok & (cls == c) if c is not None else ok)
        picks.append(np.sort(rng.choice(flat, size=min(n, flat.size), replace=False)))
    iy, ix = np.unravel_index(np.concatenate(picks), cls.shape)
    x = np.stack([vv[:, iy, ix].T, vh[:, iy, ix].T], axis=1).astype(np.float32)
    return x, cls[iy, ix]


# --------------------------------------------------------------------------------- measures


def window_share(imp: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per row of `imp` `(..., T)`: the share of sum_t |importance| on the true dates divided by
    the uniform share (NaN for an all-zero row)."""
    a = np.abs(imp)
    total = a.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return a[..., truth].sum(-1) / total / truth.mean()


def auroc(imp: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per row of `imp` `(N, T)`: the AUROC of |importance| against the true dates."""
    return np.array([roc_auc_score(truth, np.abs(row)) for row in np.atleast_2d(imp)])


def measure(imp: np.ndarray, which: np.ndarray, truth: np.ndarray) -> dict:
    """The measures of one map `(N, T)` of the two classes' pixels (`which`: 0 for a, 1 for b)."""
    class_means = np.stack([imp[which == m].mean(0) for m in (0, 1)])
    return {
        "share_pixel": float(np.nanmean(window_share(imp, truth))),
        "share_class_mean": float(np.mean(window_share(class_means, truth))),
        "share_both_mean": float(window_share(imp.mean(0), truth)),
        "auroc_pixel": float(auroc(imp, truth).mean()),
        "auroc_class_mean": float(auroc(class_means, truth).mean()),
        "share_class_mean_per_member": window_share(class_means, truth).tolist(),
        "auroc_class_mean_per_member": auroc(class_means, truth).tolist(),
    }


def explain_pair(
    enc: nn.Module,
    x: torch.Tensor,
    which: np.ndarray,
    w: torch.Tensor,
    ref: torch.Tensor,
    truth: np.ndarray,
    ig_steps: int,
) -> dict:
    """Every method's contrastive map of the pixels `x` for direction `w`, measured."""
    methods = {f"grad_slam:{s}": (GradSlam(enc, reference=ref), {"scale": s}) for s in SCALES}
    methods["gradient_x_input"] = (GradientXInput(enc), {})
    methods["integrated_gradients"] = (IntegratedGradients(enc, n_steps=ig_steps), {})
    methods["occlusion"] = (Occlusion(enc), {})
    out = {}
    for name, (method, kw) in methods.items():
        t = time.perf_counter()
        imp = method.attribute(x, target=w, **kw).numpy()
        seconds = time.perf_counter() - t
        out[name] = {**measure(imp, which, truth), "seconds": round(seconds, 3)}
    return out


def separation(e: torch.Tensor, which: np.ndarray) -> tuple[torch.Tensor, float]:
    """w = mean embedding of b - that of a, and |w| over the mean within-class spread."""
    sel = [torch.from_numpy(which == m) for m in (0, 1)]
    w = e[sel[1]].mean(0) - e[sel[0]].mean(0)
    spread = torch.stack([e[s].std(0) for s in sel]).mean(0).norm()
    return w, float(w.norm() / spread)


# --------------------------------------------------------------------------------- cases


def scene_case(size: int, sample: int, epochs: int, n_pix: int, n_mean: int, ig_steps: int) -> dict:
    t0 = time.perf_counter()
    scene = make_scene(size=size, n_dates=61, seed=0)
    t_scene = time.perf_counter() - t0
    arch = {"channels": [16, 32, 64], "hidden": [32, 16]}
    t0 = time.perf_counter()
    model = train(scene.cube, sample_size=sample, max_epochs=epochs, patience=3, seed=0, arch=arch, progress=False)
    t_train = time.perf_counter() - t0
    enc = model.model.encoder.eval()
    doy = model.day_of_year.astype(int)
    x_ref = torch.from_numpy(model.standardise(scene_pixels(scene, [], 2000, seed=2)[0]))
    ref = reference_map(enc, x_ref)

    pairs = [("cotton", c, DISTINCTIVE_WINDOWS[c]) for c in ("pepper", "sweet potato")]
    union = (min(v[0] for v in DISTINCTIVE_WINDOWS.values()), max(v[1] for v in DISTINCTIVE_WINDOWS.values()))
    pairs.append(("pepper", "sweet potato", union))
    results = {}
    for a, b, (lo, hi) in pairs:
        truth = (doy >= lo) & (doy <= hi)
        ids = [CLASSES.index(a), CLASSES.index(b)]
        x_db, cls = scene_pixels(scene, ids, n_mean, seed=1)
        x = torch.from_numpy(model.standardise(x_db))
        which = (cls == ids[1]).astype(int)
        with torch.no_grad():
            e = enc(x)
        w, sep = separation(e, which)  # from up to n_mean pixels per class
        rng = np.random.default_rng(3)
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(which == m))[:n_pix] for m in (0, 1)]))
        t0 = time.perf_counter()
        methods = explain_pair(enc, x[keep], which[keep], w, ref, truth, ig_steps)
        results[f"{a} -> {b}"] = {
            "a": a,
            "b": b,
            "window_doy": [int(lo), int(hi)],
            "true_dates": int(truth.sum()),
            "dates": int(truth.size),
            "uniform_share": float(truth.mean()),
            "pixels": [int((which[keep] == m).sum()) for m in (0, 1)],
            "pixels_for_w": [int((which == m).sum()) for m in (0, 1)],
            "separation": sep,
            "direction": w.tolist(),
            "explain_s": round(time.perf_counter() - t0, 2),
            "methods": methods,
        }
    setup = {
        "scene_size": size,
        "dates": 61,
        "train_sample": sample,
        "max_epochs": epochs,
        "arch": model.config.to_dict(),
        "best_val_loss": model.meta["losses"]["best_val"],
        "scene_s": round(t_scene, 2),
        "train_s": round(t_train, 2),
        "reference_pixels": int(len(x_ref)),
        "ig_steps": ig_steps,
    }
    return {"setup": setup, "pairs": results}


def planted_case(n_pix: int, ig_steps: int) -> dict:
    t0 = time.perf_counter()
    enc, x_train = window_encoder(seed=0)
    t_train = time.perf_counter() - t0
    ref = reference_map(enc, x_train[:1000])
    xt, yt = window_classes(3 * n_pix, seed=100)
    keep = (yt == 0) | (yt == 2)
    xt, which = xt[keep], (yt[keep] == 2).numpy().astype(int)
    with torch.no_grad():
        e = enc(xt)
    w, sep = separation(e, which)
    truth = np.zeros(T_WIN, bool)
    truth[W0:W1] = True
    t0 = time.perf_counter()
    methods = explain_pair(enc, xt, which, w, ref, truth, ig_steps)
    return {
        "setup": {"dates": T_WIN, "window": [W0, W1 - 1], "train_steps": 300, "train_s": round(t_train, 2)},
        "pairs": {
            "class 0 -> class 2": {
                "a": "0",
                "b": "2",
                "true_dates": int(truth.sum()),
                "dates": T_WIN,
                "uniform_share": float(truth.mean()),
                "pixels": [int((which == m).sum()) for m in (0, 1)],
                "separation": sep,
                "direction": w.tolist(),
                "explain_s": round(time.perf_counter() - t0, 2),
                "methods": methods,
            }
        },
    }


def print_case(title: str, case: dict) -> None:
    for name, pair in case["pairs"].items():
        print(
            f"\n{title}: {name}, {pair['true_dates']} of {pair['dates']} dates true "
            f"(uniform share {pair['uniform_share']:.2f}), pixels {pair['pixels']}, "
            f"|w| / within-class spread {pair['separation']:.1f}"
        )
        print(
            "\n| method | share / uniform, pixel | class mean | both-classes mean | AUROC, pixel | class mean | s |"
            "\n|---|---|---|---|---|---|---|"
        )
        for m, r in pair["methods"].items():
            print(
                f"| {m} | {r['share_pixel']:.2f} | {r['share_class_mean']:.2f} | {r['share_both_mean']:.2f} "
                f"| {r['auroc_pixel']:.3f} | {r['auroc_class_mean']:.3f} | {r['seconds']:.2f} |"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="128 x 128 scene, short training, few pixels")
    ap.add_argument("--size", type=int, default=None, help="scene side in pixels (default 256, quick 128)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    quick = args.quick
    size = args.size or (128 if quick else 256)
    sample, epochs = (4000, 4) if quick else (20_000, 8)
    n_pix, n_mean, ig_steps = (150, 2000, 16) if quick else (500, 5000, 32)
    out = args.out or RESULTS / ("bench_pair_accuracy.quick.json" if quick else "bench_pair_accuracy.json")

    t0 = time.perf_counter()
    planted = planted_case(n_pix, ig_steps)
    scene = scene_case(size, sample, epochs, n_pix, n_mean, ig_steps)
    total = time.perf_counter() - t0
    res = {
        "machine": machine_info(),
        "quick": quick,
        "total_s": round(total, 1),
        "measures": {
            "share": "sum_t |importance| on the true dates / sum_t |importance|, over the uniform share",
            "auroc": "roc_auc_score(true dates, |importance| per date)",
            "pixel": "per pixel, then averaged",
            "class_mean": "each class's mean signed map, then averaged over the two classes",
            "both_mean": "the mean signed map over both classes' pixels (pair_importance's pair_importance)",
        },
        "planted": planted,
        "scene": scene,
    }
    path = write_result("bench_pair_accuracy", res, out=out)

    s = scene["setup"]
    print(
        f"scene {s['scene_size']}x{s['scene_size']}, 61 dates, CAE {s['arch']['channels']} D = {s['arch']['embed_dim']}, "
        f"trained in {s['train_s']:.0f} s (val loss {s['best_val_loss']:.3f}); total {total:.0f} s; "
        f"load {res['machine']['load_average_1_5_15']}"
    )
    print_case("planted window", planted)
    print_case("scene", scene)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
