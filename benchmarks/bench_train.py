"""Training throughput (samples per second) and how well the embeddings separate crop classes.

    python benchmarks/bench_train.py            # full: default 512 scene, WorldCereal over 5 seeds
    python benchmarks/bench_train.py --quick    # small: 128 scene, 1 seed, few steps

Prints and writes `benchmarks/results/bench_train.json` (`bench_train_quick.json` with --quick).

1. Step throughput: forward + backward + Adam on random batches `(B, 2, 61)`, for the paper's
   architecture (64/128/256) and a small one (8/16/32), on CPU and, when present, CUDA
   (float32 and bfloat16 autocast).
2. End-to-end `train()` on the synthetic scene: wall time per (pixel x epoch), sampling and
   validation included; then the adjusted Rand index (ARI) of k-Means (16 clusters) on the 2-D
   embeddings of the labelled pixels against the crop class, next to the same k-Means on a
   2-component PCA of the standardised raw series (the baseline the CAE has to beat).
3. The same comparison on the 500 real WorldCereal parcels (France 2023, 36 dekads, gap-filled),
   against the coarse classes (`level_2` of the WorldCereal legend), over several seeds.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score
from torch.nn import functional as F

from slamgeo.io.series import fill_gaps
from slamgeo.method.model import CAE, CAEConfig
from slamgeo.method.train import train

ROOT = Path(__file__).resolve().parents[1]
WORLDCEREAL = ROOT.parent / "shared" / "data" / "worldcereal" / "fra_2023_lpis_dekad.parquet"
ARCHS = {
    "paper": {},
    "small": {"channels": [8, 16, 32], "kernels": [5, 3, 3], "hidden": [32, 16]},
}


def step_throughput(
    arch: dict, device: str, bf16: bool, *, batch: int = 1024, steps: int = 20, threads: int | None = None
) -> float:
    """Training samples per second for forward + backward + Adam step on `(batch, 2, 61)`."""
    dev = torch.device(device)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _steps(arch, dev, bf16, batch, steps)
    finally:
        torch.set_num_threads(before)


def _steps(arch: dict, dev: torch.device, bf16: bool, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model = CAE(CAEConfig(n_times=61, **arch)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    x = torch.randn(batch, 2, 61, device=dev)

    def step():
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16):
            _, rec = model(x)
        loss = F.mse_loss(rec.float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def ari_pair(embedding: np.ndarray, z: np.ndarray, labels: np.ndarray, k: int, seed: int = 0) -> dict:
    """ARI of k-Means(k) on the embedding and on a 2-component PCA of the flattened series `z`."""
    pca = PCA(n_components=2, random_state=seed).fit_transform(z.reshape(len(z), -1))
    out = {}
    for name, feats in (("cae", embedding), ("pca", pca)):
        pred = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(feats)
        out[name] = float(adjusted_rand_score(labels, pred))
    return out


def scene_benchmark(
    size: int, sample_size: int, epochs: int, arch_name: str, device: str, batch: int, threads: int | None = None
) -> dict:
    from slamgeo.synth import make_scene

    scene = make_scene(size=size, seed=0)
    cube = scene.cube
    n_t = cube.sizes["time"]
    x = np.stack([cube[b].values.reshape(n_t, -1).T for b in ("VV", "VH")], axis=1)
    cls = scene.class_id.values.ravel()
    keep = (cls >= 0) & ~np.isnan(x).any(axis=(1, 2))
    x, cls = x[keep], cls[keep]

    t0 = time.perf_counter()
    tm = train(
        cube,
        sample_size=sample_size,
        max_epochs=epochs,
        patience=5,
        batch_size=batch,
        arch=ARCHS[arch_name],
        device=device,
        progress=True,
        seed=0,
        threads=threads,
    )
    wall = time.perf_counter() - t0
    t = tm.meta["training"]
    emb = tm.embed(x)
    ari = ari_pair(emb, tm.standardise(x), cls, k=16)
    return {
        "scene_size": size,
        "arch": arch_name,
        "device": t["device"],
        "cpu_threads": t["cpu_threads"],
        "sample_size": sample_size,
        "batch_size": batch,
        "epochs_run": t["epochs_run"],
        "best_epoch": t["best_epoch"],
        "train_wall_s": round(wall, 1),
        "end_to_end_samples_per_s": round(t["n_train"] * t["epochs_run"] / wall, 1),
        "best_val_loss": tm.meta["losses"]["best_val"],
        "baseline_val_loss_per_date_mean": tm.meta["losses"]["baseline_val_per_date_mean"],
        "labelled_pixels": int(len(cls)),
        "k": 16,
        "ari_cae": round(ari["cae"], 4),
        "ari_pca": round(ari["pca"], 4),
    }


def worldcereal_benchmark(
    seeds: list[int], arch_name: str, device: str, epochs: int, *, min_parcels: int = 10, threads: int | None = None
) -> dict:
    """Label sets: `level_2` (every parcel with a level-2 class) and `level_2_min{min_parcels}`
    (only the level-2 classes with at least `min_parcels` parcels); k = 16 and k = number of classes."""
    from slamgeo.io.readers.table import open_table

    ds = open_table(WORLDCEREAL, start="2023-01-01", end="2023-12-31").compute()
    coarse = ds["level_2"].values.astype(str)
    x = fill_gaps(np.stack([ds[b].values.T for b in ("VV", "VH")], axis=1))  # (sample, band, time) dB
    usable = ~np.isnan(x).any(axis=(1, 2)) & (coarse != "")
    names, counts = np.unique(coarse[usable], return_counts=True)
    major = set(names[counts >= min_parcels])
    label_sets = {
        "level_2": usable,
        f"level_2_min{min_parcels}": usable & np.isin(coarse, list(major)),
    }
    runs = []
    for seed in seeds:
        tm = train(
            ds,
            sample_size=len(ds["sample"]),
            max_epochs=epochs,
            patience=15,
            batch_size=64,
            arch=ARCHS[arch_name],
            device=device,
            progress=False,
            seed=seed,
            gap_fill=True,
            threads=threads,
        )
        run = {
            "seed": seed,
            "epochs_run": tm.meta["training"]["epochs_run"],
            "best_val_loss": tm.meta["losses"]["best_val"],
            "baseline_val_loss_per_date_mean": tm.meta["losses"]["baseline_val_per_date_mean"],
        }
        for set_name, m in label_sets.items():
            labels = np.unique(coarse[m], return_inverse=True)[1]
            emb, z = tm.embed(x[m]), tm.standardise(x[m])
            for k in sorted({16, int(labels.max() + 1)}):
                for method, v in ari_pair(emb, z, labels, k, seed).items():
                    run[f"{set_name}/k{k}/{method}"] = round(v, 4)
        runs.append(run)
    summary = {}
    for key in runs[0]:
        if "/" in key:
            vals = np.array([r[key] for r in runs])
            summary[key] = {"mean": round(float(vals.mean()), 4), "std": round(float(vals.std()), 4)}
    sets = {
        k: {
            "parcels": int(m.sum()),
            "classes": {str(c): int(n) for c, n in zip(*np.unique(coarse[m], return_counts=True))},
        }
        for k, m in label_sets.items()
    }
    return {
        "dates": int(ds.sizes["time"]),
        "arch": arch_name,
        "epochs_max": epochs,
        "gap_fill": True,
        "classes_from": "level_2 of crop_type_class_mappings.csv",
        "label_sets": sets,
        "runs": runs,
        "summary": summary,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run (a minute or two on a laptop)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda (training parts)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads for training (default: torch's)")
    ap.add_argument("--scene-arch", default="paper", choices=sorted(ARCHS))
    ap.add_argument("--scene-sample", type=int, default=None, help="pixels sampled for the scene training")
    ap.add_argument("--scene-epochs", type=int, default=None)
    ap.add_argument("--skip", nargs="*", default=[], choices=["steps", "scene", "worldcereal"])
    args = ap.parse_args()
    q = args.quick

    res: dict = {
        "quick": q,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if "steps" not in args.skip:
        res["step_throughput_samples_per_s"] = {}
        n_cpu = torch.get_num_threads()
        targets = [("cpu", False, 1)] + ([("cpu", False, n_cpu)] if n_cpu > 1 else [])
        targets += [("cuda", False, None), ("cuda", True, None)] if torch.cuda.is_available() else []
        for arch_name, arch in ARCHS.items():
            for dev, bf16, threads in targets:
                key = f"{arch_name}/{dev}{f'/{threads}thr' if threads else ''}{'/bf16' if bf16 else ''}"
                sps = step_throughput(arch, dev, bf16, steps=3 if q else (20 if dev == "cpu" else 200), threads=threads)
                res["step_throughput_samples_per_s"][key] = round(sps, 1)
                print(f"step throughput {key:18s} {sps:12.0f} samples/s", flush=True)
    if "scene" not in args.skip:
        size = 128 if q else 512
        sample = args.scene_sample or (6000 if q else 50_000)
        epochs = args.scene_epochs or (5 if q else 30)
        res["scene"] = scene_benchmark(
            size, sample, epochs, args.scene_arch, args.device, 256 if q else 1024, threads=args.threads
        )
        s = res["scene"]
        print(
            f"scene {size}: {s['end_to_end_samples_per_s']:.0f} samples/s end to end ({s['device']}), "
            f"val loss {s['best_val_loss']:.3f} vs per-date mean {s['baseline_val_loss_per_date_mean']:.3f}; "
            f"ARI k=16: CAE {s['ari_cae']:.3f}, PCA {s['ari_pca']:.3f}",
            flush=True,
        )
    if "worldcereal" not in args.skip:
        res["worldcereal"] = worldcereal_benchmark(
            [0] if q else [0, 1, 2, 3, 4], "paper", args.device, 40 if q else 200, threads=args.threads
        )
        w = res["worldcereal"]
        for key, v in w["summary"].items():
            n = w["label_sets"][key.split("/")[0]]
            print(
                f"worldcereal {key:24s} ({n['parcels']} parcels, {len(n['classes'])} classes) ARI "
                f"{v['mean']:.3f} +- {v['std']:.3f} over {len(w['runs'])} seed(s)",
                flush=True,
            )

    out = ROOT / "benchmarks" / "results" / ("bench_train_quick.json" if q else "bench_train.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.skip and out.exists():  # a partial run updates the parts it ran, keeps the others
        res = {**json.loads(out.read_text()), **res}
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
