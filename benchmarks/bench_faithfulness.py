"""Deletion curves on the synthetic scene: how faithful is each date-importance map?

Draws the synthetic Sentinel-1 scene (`slamgeo.synth.make_scene`, 61 dates), trains the CAE on
it (`slamgeo.method.train.train`), samples labelled valid pixels, and for every Grad-SLAM scaling, for
gradient x input and for integrated gradients (captum) measures with `slamgeo.method.faithfulness.deletion`
how far each embedding dimension moves when the k dates ranked highest are deleted (linear
interpolation from the neighbours), against k random dates. Ratio > 1: the map points at dates
that matter to the encoder; ratio < 1: it points at dates that matter less than chance.

Also: for the two classes whose distinctive window the scene records (pepper and sweet potato
differ from cotton only there), the share of the class-mean |importance| that falls in that
window, against the uniform share; and the cost of each method (pixels/s of one pass on these
pixels, indicative only: benchmarks/bench_gradslam.py measures throughput properly).

Prints a Markdown table and writes benchmarks/results/bench_faithfulness.json.
Usage: python benchmarks/bench_faithfulness.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from slamgeo.method.faithfulness import deletion, gradient_x_input, integrated_gradients
from slamgeo.method.gradslam import grad_slam, reference_map
from slamgeo.method.train import train
from slamgeo.schema import SCALES
from slamgeo.synth import CLASSES, DISTINCTIVE_WINDOWS, make_scene

RESULTS = Path(__file__).resolve().parent / "results"


def labelled_pixels(scene, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` random valid labelled pixels: dB series `(n, 2, T)` and class ids `(n,)`."""
    vv = scene.cube["VV"].values  # (T, y, x)
    vh = scene.cube["VH"].values
    cls = np.asarray(scene.class_id.values)
    ok = (cls >= 0) & np.isfinite(vv).all(0) & np.isfinite(vh).all(0)
    iy, ix = np.nonzero(ok)
    pick = np.random.default_rng(seed).choice(len(iy), size=min(n, len(iy)), replace=False)
    iy, ix = iy[pick], ix[pick]
    x = np.stack([vv[:, iy, ix].T, vh[:, iy, ix].T], axis=1).astype(np.float32)
    return x, cls[iy, ix]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small scene, short training, few pixels")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_faithfulness.json")
    args = ap.parse_args()
    quick = args.quick
    size, sample, epochs = (128, 4000, 4) if quick else (384, 40_000, 12)
    n_pix, ks, n_random = (300, [2, 8], 4) if quick else (2000, [1, 2, 4, 8, 16], 8)
    arch = {"channels": [16, 32, 64], "hidden": [32, 16]} if quick else None  # None: the paper's 64/128/256

    t0 = time.perf_counter()
    scene = make_scene(size=size, seed=0)
    model = train(scene.cube, sample_size=sample, max_epochs=epochs, patience=3, seed=0, arch=arch, progress=False)
    t_train = time.perf_counter() - t0
    enc = model.model.encoder.eval()
    x_db, cls = labelled_pixels(scene, n_pix, seed=1)
    x = torch.from_numpy(model.standardise(x_db))
    x_ref = torch.from_numpy(model.standardise(labelled_pixels(scene, 2000, seed=2)[0]))
    ref = reference_map(enc, x_ref)

    maps, cost = {}, {}
    for scale in SCALES:
        t = time.perf_counter()
        maps[f"grad_slam:{scale}"] = grad_slam(enc, x, scale=scale, reference=ref)
        cost[f"grad_slam:{scale}"] = len(x) / (time.perf_counter() - t)
    t = time.perf_counter()
    maps["gradient_x_input"] = gradient_x_input(enc, x)
    cost["gradient_x_input"] = len(x) / (time.perf_counter() - t)
    t = time.perf_counter()
    maps["integrated_gradients"] = integrated_gradients(enc, x, n_steps=32)
    cost["integrated_gradients"] = len(x) / (time.perf_counter() - t)

    curves = {}
    for name, imp in maps.items():
        r = deletion(enc, x, imp, ks, n_random=n_random, seed=0)
        std = r["embedding_std"]
        curves[name] = {
            "ratio": r["ratio"].T.tolist(),  # (D, K)
            "top_over_std": (r["top"] / std).T.tolist(),
            "random_over_std": (r["baseline"] / std).T.tolist(),
        }

    # known windows of the scene: pepper and sweet potato differ from cotton only there
    doy = model.day_of_year.astype(float)
    windows = {}
    for crop, (a, b) in DISTINCTIVE_WINDOWS.items():
        sel = cls == CLASSES.index(crop)
        inside = (doy >= a) & (doy <= b)
        if sel.sum() < 5 or not inside.any():
            continue
        row = {"pixels": int(sel.sum()), "uniform_share": float(inside.mean())}
        for name, imp in maps.items():
            prof = imp[torch.from_numpy(sel)].mean(0).abs()  # (D, T)
            row[name] = (prof[:, inside].sum(-1) / prof.sum(-1)).tolist()
        windows[crop] = row

    res = {
        "setup": {
            "scene_size": size,
            "dates": int(x.shape[-1]),
            "train_sample": sample,
            "max_epochs": epochs,
            "arch": model.config.to_dict(),
            "pixels": int(len(x)),
            "ks": ks,
            "n_random": n_random,
            "best_val_loss": model.meta["losses"]["best_val"],
            "train_s": t_train,
            "load_avg": [round(v, 2) for v in os.getloadavg()],
        },
        "deletion": curves,
        "distinctive_window_share": windows,
        "pixels_per_s": cost,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))

    n_dims = len(next(iter(curves.values()))["ratio"])
    print(
        f"scene {size}x{size}, {x.shape[-1]} dates, {len(x)} pixels, D = {n_dims}, "
        f"trained in {t_train:.0f} s (val loss {res['setup']['best_val_loss']:.3f}), load {res['setup']['load_avg']}"
    )
    print("\nDeletion: embedding displacement, top-k dates / k random dates (ratio), per dimension")
    head = " | ".join(f"k={k}" for k in ks)
    for d in range(n_dims):
        print(f"\n| map (dim {d}) | {head} | pixels/s (one pass) |\n|---|" + "---|" * len(ks) + "---|")
        for name, c in curves.items():
            print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in c["ratio"][d]) + f" | {cost[name]:.0f} |")
    print(
        "\nRandom-date displacement / embedding std, per dim:",
        [[round(v, 3) for v in row] for row in next(iter(curves.values()))["random_over_std"]],
    )
    for crop, row in windows.items():
        print(
            f"\n{crop}: share of the class-mean |importance| in its distinctive window "
            f"(uniform {row['uniform_share']:.2f}), per dim:"
        )
        for name in maps:
            print(f"  {name:24s} " + "  ".join(f"{v:.2f}" for v in row[name]))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
