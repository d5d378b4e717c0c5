"""Embedding size D = 2, 4, 8: do more dimensions separate the crops (and the alike ones) better?

    python benchmarks/bench_embed_dim.py            # demo sizes: 256 scene, 20 000 px, 12 epochs
    python benchmarks/bench_embed_dim.py --quick    # 128 scene, 6 000 px, 5 epochs, WorldCereal 40 epochs

Prints Markdown tables and writes `benchmarks/results/bench_embed_dim.json`
(`bench_embed_dim.quick.json` with --quick), with `_common.machine_info()`.

For each D (`slamgeo.train(..., arch={"embed_dim": D})`, the default architecture otherwise):

1. Synthetic scene (`make_scene(size, n_dates=61, seed=0)`), the demo's training settings
   (sample 20 000, 12 epochs, patience 3, seed 0). k-Means (k = 16, scikit-learn, n_init 4) on
   the embeddings of the labelled pixels (as `bench_train.py`), and the same k-Means on a
   D-component PCA of the standardised raw series. For both: ARI against the crop class of every
   labelled pixel; ARI restricted to the pixels of the three alike classes (cotton, sweet potato,
   pepper: do their clusters differ?); and the held-out overall accuracy of the majority vote
   (the demo's rule: `slamgeo.jobs.metrics.split_parcels` 70/30 stratified by class with seed 0,
   each pixel of a training parcel votes for its cluster, scored on the held-out parcels' pixels),
   with the recall of pepper and sweet potato.
2. Contrastive explanations (`slamgeo.jobs.pairs.pair_importance`, the default "centred" scaling
   with the scene's reference map) of (cotton, pepper) and (cotton, sweet potato): the 3 dates of
   largest |pair_importance| (`separating_dates`) and the share of sum |pair_importance| inside the
   pair's distinctive window (`Scene.info["distinctive_windows"]`), next to the window's share of
   the dates (what a flat importance would give).
3. WorldCereal France 2023 (500 parcels, 36 dekads, gap-filled), training as `bench_train.py`
   (all parcels, batch 64, patience 15): ARI of k-Means (k = 16 and k = number of classes) on the
   coarse groups `level_2`, CAE vs a D-component PCA, over seeds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_info, write_result  # noqa: E402

import slamgeo  # noqa: E402
from slamgeo.io.series import fill_gaps  # noqa: E402
from slamgeo.jobs.metrics import apply_vote, majority_vote, scores, split_parcels  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORLDCEREAL = ROOT.parent / "shared" / "data" / "worldcereal" / "fra_2023_lpis_dekad.parquet"
DIMS = (2, 4, 8)
K = 16
ALIKE = ("cotton", "sweet potato", "pepper")
PAIRS = [("cotton", "pepper"), ("cotton", "sweet potato")]


# ------------------------------------------------------------------------------- scene


def _kmeans(feats: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(feats)


def vote_scores(clusters: np.ndarray, names: np.ndarray, pid: np.ndarray, train_ids: np.ndarray) -> dict:
    """Majority vote by the training parcels' pixels, scored on the other parcels' pixels."""
    tr = np.isin(pid, train_ids)
    mapping = majority_vote(clusters[tr], names[tr])
    classes = sorted(set(names.tolist()))
    s = scores(names[~tr], apply_vote(clusters[~tr], mapping), classes)
    return {
        "overall_accuracy": round(s["overall_accuracy"], 4),
        "kappa": round(s["kappa"], 4),
        "recall": {c: round(s["per_class"][c]["recall"], 4) for c in ALIKE},
        "classes_voted": len(set(mapping.values())),
    }


def cluster_figures(feats, cls, names, pid, train_ids) -> dict:
    pred = _kmeans(feats, K)
    alike = np.isin(names, ALIKE)
    return {
        "ari": round(float(adjusted_rand_score(cls, pred)), 4),
        "ari_alike": round(float(adjusted_rand_score(cls[alike], pred[alike])), 4),
        **vote_scores(pred, names, pid, train_ids),
    }


def window_share(imp: np.ndarray, times: np.ndarray, window: list[str]) -> tuple[float, float]:
    """Share of sum |imp| on the dates inside `window` [start, end], and the window's share of dates."""
    t = np.asarray(times, dtype="datetime64[D]")
    inside = (t >= np.datetime64(window[0][:10])) & (t <= np.datetime64(window[1][:10]))
    a = np.abs(np.nan_to_num(imp))
    return float(a[inside].sum() / a.sum()), float(inside.mean())


def scene_benchmark(
    size: int, sample: int, epochs: int, patience: int, threads, ref_size: int, max_pixels: int
) -> dict:
    from slamgeo.jobs.explain import ExplainOptions, scene_reference
    from slamgeo.jobs.pairs import pair_importance, separating_dates
    from slamgeo.synth import CLASSES, make_scene

    t0 = time.perf_counter()
    scene = make_scene(size=size, n_dates=61, seed=0)
    cube = scene.cube.compute()
    n_t = cube.sizes["time"]
    sy, sx = cube.sizes["y"], cube.sizes["x"]
    x_all = np.stack([cube[b].values.reshape(n_t, -1).T for b in ("VV", "VH")], axis=1)
    cls_all = scene.class_id.values.ravel().astype(int)
    pid_all = scene.parcel_id.values.ravel().astype(int)
    valid = ~np.isnan(x_all).any(axis=(1, 2))
    keep = valid & (cls_all >= 0)
    x, cls, pid = x_all[keep], cls_all[keep], pid_all[keep]
    names = np.array(CLASSES, dtype=object)[cls]
    name_grid = np.where(cls_all >= 0, np.array([*CLASSES, ""], dtype=object)[cls_all], "").astype(str)
    labels_da = xr.DataArray(name_grid.reshape(sy, sx), dims=("y", "x"))
    parcels = scene.parcels
    train_ids, test_ids = split_parcels(
        parcels["parcel_id"].to_numpy(), labels=parcels["crop"].to_numpy(), test_fraction=0.3, seed=0
    )
    windows = scene.info["distinctive_windows"]
    out: dict = {
        "scene_size": size,
        "n_dates": int(n_t),
        "labelled_pixels": int(keep.sum()),
        "parcels": int(len(parcels)),
        "test_parcels": int(test_ids.size),
        "sample_size": sample,
        "max_epochs": epochs,
        "patience": patience,
        "k": K,
        "distinctive_windows": windows,
        "scene_s": round(time.perf_counter() - t0, 1),
        "by_dim": {},
    }
    for d in DIMS:
        t0 = time.perf_counter()
        tm = slamgeo.train(
            cube,
            sample_size=sample,
            max_epochs=epochs,
            patience=patience,
            seed=0,
            arch={"embed_dim": d},
            progress=False,
            threads=threads,
            device="cpu",
        )
        train_s = time.perf_counter() - t0
        emb = tm.embed(x)
        z = tm.standardise(x).reshape(len(x), -1)
        pca = PCA(n_components=d, random_state=0).fit(z)
        row = {
            "train_s": round(train_s, 1),
            "epochs_run": tm.meta["training"]["epochs_run"],
            "best_epoch": tm.meta["training"]["best_epoch"],
            "best_val_loss": round(tm.meta["losses"]["best_val"], 4),
            "pca_explained_variance": round(float(pca.explained_variance_ratio_.sum()), 4),
            "cae": cluster_figures(emb, cls, names, pid, train_ids),
            "pca": cluster_figures(pca.transform(z), cls, names, pid, train_ids),
        }
        # contrastive explanations of the alike pairs
        t1 = time.perf_counter()
        grid = np.full((d, sy * sx), np.nan, np.float32)
        grid[:, valid] = tm.embed(x_all[valid]).T
        emb_da = xr.DataArray(grid.reshape(d, sy, sx), dims=("dim", "y", "x"))
        opts = ExplainOptions(reference_size=ref_size)
        import dask

        with dask.config.set(scheduler="synchronous"):
            ref = scene_reference(tm, cube, opts)
        pi = pair_importance(
            tm, cube, emb_da, labels_da, PAIRS, scale=opts.scale, reference=ref, max_pixels=max_pixels, seed=0
        )
        times = cube["time"].values
        row["pairs"] = {}
        for p, (a, b) in enumerate(PAIRS):
            imp = pi["pair_importance"].isel(pair=p).values
            share, flat = window_share(imp, times, windows[b])
            row["pairs"][f"{a} vs {b}"] = {
                "top3_dates": separating_dates(imp, times, 3),
                "window": windows[b],
                "share_in_window": round(share, 4),
                "window_share_of_dates": round(flat, 4),
                "pixels": [int(v) for v in pi["pair_pixels"].isel(pair=p).values],
                "direction_norm": round(float(np.linalg.norm(pi["pair_direction"].isel(pair=p).values)), 4),
            }
        row["explain_s"] = round(time.perf_counter() - t1, 1)
        out["by_dim"][str(d)] = row
        c, q = row["cae"], row["pca"]
        print(
            f"scene D={d}: train {train_s:.0f}s ({row['epochs_run']} ep), ARI CAE {c['ari']:.3f} / PCA {q['ari']:.3f}, "
            f"OA CAE {c['overall_accuracy']:.3f} / PCA {q['overall_accuracy']:.3f}, "
            + "; ".join(f"{k}: {v['top3_dates']} {v['share_in_window']:.2f}" for k, v in row["pairs"].items()),
            flush=True,
        )
    return out


# ------------------------------------------------------------------------------- WorldCereal


def worldcereal_benchmark(seeds: list[int], epochs: int, threads, min_parcels: int = 10) -> dict:
    from slamgeo.io.readers.table import open_table

    ds = open_table(WORLDCEREAL, start="2023-01-01", end="2023-12-31").compute()
    coarse = ds["level_2"].values.astype(str)
    x = fill_gaps(np.stack([ds[b].values.T for b in ("VV", "VH")], axis=1))
    usable = ~np.isnan(x).any(axis=(1, 2)) & (coarse != "")
    names, counts = np.unique(coarse[usable], return_counts=True)
    major = set(names[counts >= min_parcels])
    label_sets = {"level_2": usable, f"level_2_min{min_parcels}": usable & np.isin(coarse, list(major))}
    out: dict = {
        "dates": int(ds.sizes["time"]),
        "epochs_max": epochs,
        "patience": 15,
        "seeds": seeds,
        "gap_fill": True,
        "label_sets": {
            k: {"parcels": int(m.sum()), "classes": int(np.unique(coarse[m]).size)} for k, m in label_sets.items()
        },
        "by_dim": {},
    }
    for d in DIMS:
        runs = []
        t0 = time.perf_counter()
        for seed in seeds:
            tm = slamgeo.train(
                ds,
                sample_size=len(ds["sample"]),
                max_epochs=epochs,
                patience=15,
                batch_size=64,
                seed=seed,
                gap_fill=True,
                arch={"embed_dim": d},
                progress=False,
                threads=threads,
                device="cpu",
            )
            run = {"seed": seed, "epochs_run": tm.meta["training"]["epochs_run"]}
            for set_name, m in label_sets.items():
                labels = np.unique(coarse[m], return_inverse=True)[1]
                emb, z = tm.embed(x[m]), tm.standardise(x[m]).reshape(int(m.sum()), -1)
                feats = {"cae": emb, "pca": PCA(n_components=d, random_state=seed).fit_transform(z)}
                for k in sorted({K, int(labels.max() + 1)}):
                    for method, f in feats.items():
                        pred = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(f)
                        run[f"{set_name}/k{k}/{method}"] = round(float(adjusted_rand_score(labels, pred)), 4)
            runs.append(run)
        summary = {
            key: {
                "mean": round(float(np.mean([r[key] for r in runs])), 4),
                "std": round(float(np.std([r[key] for r in runs])), 4),
            }
            for key in runs[0]
            if "/" in key
        }
        out["by_dim"][str(d)] = {"runs": runs, "summary": summary, "wall_s": round(time.perf_counter() - t0, 1)}
        print(
            f"worldcereal D={d}: "
            + ", ".join(f"{k} {v['mean']:.3f}" for k, v in summary.items() if k.startswith("level_2/")),
            flush=True,
        )
    return out


# ------------------------------------------------------------------------------- tables


def markdown(res: dict) -> str:
    lines = []
    s = res.get("scene")
    if s:
        lines += [
            f"Synthetic scene {s['scene_size']}² ({s['labelled_pixels']} labelled pixels, {s['parcels']} parcels, "
            f"{s['test_parcels']} held out), k = {K}, training {s['sample_size']} px / {s['max_epochs']} epochs:",
            "",
            "| D | ARI CAE | ARI PCA | ARI alike CAE | ARI alike PCA | OA CAE | OA PCA | recall pepper CAE / PCA "
            "| recall sweet potato CAE / PCA | epochs | train s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for d, r in s["by_dim"].items():
            c, q = r["cae"], r["pca"]
            lines.append(
                f"| {d} | {c['ari']:.3f} | {q['ari']:.3f} | {c['ari_alike']:.3f} | {q['ari_alike']:.3f} "
                f"| {c['overall_accuracy']:.3f} | {q['overall_accuracy']:.3f} "
                f"| {c['recall']['pepper']:.2f} / {q['recall']['pepper']:.2f} "
                f"| {c['recall']['sweet potato']:.2f} / {q['recall']['sweet potato']:.2f} "
                f"| {r['epochs_run']} | {r['train_s']:.0f} |"
            )
        lines += [
            "",
            "Contrastive explanations (pair_importance, centred): top-3 dates by |importance|, share of "
            "sum |importance| in the distinctive window (flat importance would give the window's share of dates):",
            "",
            "| D | pair | top-3 dates | share in window | window's share of dates |",
            "| --- | --- | --- | --- | --- |",
        ]
        for d, r in s["by_dim"].items():
            for name, p in r["pairs"].items():
                lines.append(
                    f"| {d} | {name} | {', '.join(p['top3_dates'])} | {p['share_in_window']:.2f} "
                    f"| {p['window_share_of_dates']:.2f} |"
                )
    w = res.get("worldcereal")
    if w:
        n = len(w["seeds"])
        lines += [
            "",
            f"WorldCereal France 2023, ARI on level_2 (mean ± std over {n} seed(s), max {w['epochs_max']} epochs):",
            "",
            "| D | set | k | CAE | PCA |",
            "| --- | --- | --- | --- | --- |",
        ]
        for d, r in w["by_dim"].items():
            keys = sorted({k.rsplit("/", 1)[0] for k in r["summary"]})
            for key in keys:
                set_name, k = key.split("/")
                c, q = r["summary"][f"{key}/cae"], r["summary"][f"{key}/pca"]
                lines.append(
                    f"| {d} | {set_name} | {k[1:]} | {c['mean']:.3f} ± {c['std']:.3f} | {q['mean']:.3f} ± {q['std']:.3f} |"
                )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run (a few minutes on 2 cores)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for training (default 1)")
    ap.add_argument("--seeds", type=int, default=None, help="WorldCereal seeds (default: 1 quick, 3 full)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["scene", "worldcereal"])
    args = ap.parse_args()
    q = args.quick
    torch.manual_seed(0)
    t_all = time.perf_counter()
    res: dict = {"quick": q, "dims": list(DIMS), "machine": machine_info()}
    if "scene" not in args.skip:
        res["scene"] = scene_benchmark(
            size=128 if q else 256,
            sample=6000 if q else 20_000,
            epochs=5 if q else 12,
            patience=3,
            threads=args.threads,
            ref_size=5000 if q else 20_000,
            max_pixels=2000 if q else 5000,
        )
    if "worldcereal" not in args.skip:
        seeds = list(range(args.seeds or (1 if q else 3)))
        res["worldcereal"] = worldcereal_benchmark(seeds, 40 if q else 200, args.threads)
    res["wall_s"] = round(time.perf_counter() - t_all, 1)
    res["machine"]["load_average_end"] = machine_info()["load_average_1_5_15"]
    table = markdown(res)
    res["table_markdown"] = table
    print()
    print(table)
    print(f"\nwall {res['wall_s']:.0f} s")
    path = write_result("bench_embed_dim.quick" if q else "bench_embed_dim", res)
    print(f"wrote {path.relative_to(ROOT)}")
    assert path.parent == RESULTS


if __name__ == "__main__":
    main()
