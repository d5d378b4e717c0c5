"""The season pipeline: ingest -> train (or reuse) -> align -> explain -> cluster -> parcels -> report.

Each step has a fingerprint made of its own configuration and its upstream steps'
fingerprints. A step whose fingerprint is recorded as done in the season's state file
(`<output>/<season>/pipeline_state.json`) and whose outputs exist is skipped; a changed
fingerprint redoes that step and, through the chain, everything downstream; `force` redoes all.
An interrupted explain resumes where it stopped (its store records finished blocks). Each
season writes to its own folder, so a scheduled 2018 run never touches 2017. Each run writes a
manifest (versions, configuration, per-step status and timings, figures) and ends with a tally
of done / skipped / failed, in the manner of odc-stats' `run`.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slamgeo.config import PipelineConfig
from slamgeo.errors import InputError, SlamgeoError
from slamgeo.provenance import fingerprint, versions

STEPS = ("ingest", "train", "align", "explain", "cluster", "parcels", "report")


@dataclass
class StepResult:
    name: str
    status: str  # "done", "skipped", "failed", "would run", "would skip"
    seconds: float = 0.0
    fingerprint: str = ""
    info: dict = field(default_factory=dict)
    error: str | None = None


@dataclass
class RunSummary:
    season_dir: Path
    steps: list[StepResult]
    manifest: Path | None

    @property
    def failed(self) -> bool:
        return any(s.status == "failed" for s in self.steps)

    def tally(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.steps:
            out[s.status] = out.get(s.status, 0) + 1
        return out


@dataclass(frozen=True)
class SeasonPaths:
    """Where a season's outputs live (local folders)."""

    root: Path

    @property
    def scene(self) -> Path:
        return self.root / "scene"

    @property
    def cube(self) -> Path:
        return self.root / "cube.zarr"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def aligned(self) -> Path:
        return self.root / "cube_model_dates.zarr"

    @property
    def results(self) -> Path:
        return self.root / "results.zarr"

    @property
    def parcels(self) -> Path:
        return self.root / "parcels"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def state(self) -> Path:
        return self.root / "pipeline_state.json"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"


def _read_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {"steps": {}}
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: the pipeline state file is not valid JSON ({exc}); remove it or run with --force")


def _write_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(path)


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


# --------------------------------------------------------------------------- the steps


class _Season:
    """Runs the steps of one season; each `step_*` returns (fingerprint, runner)."""

    def __init__(self, cfg: PipelineConfig, paths: SeasonPaths, *, force: bool, client, quiet: bool):
        self.cfg, self.paths, self.force, self.client, self.quiet = cfg, paths, force, client, quiet
        self.fp: dict[str, str] = {}

    # ingest ---------------------------------------------------------------
    def step_ingest(self):
        c = self.cfg
        inputs = c.input.model_dump()
        if c.input.kind != "synthetic":
            from slamgeo.ingest import detect_source, input_fingerprint

            _, files = detect_source(c.input.paths)
            inputs["fingerprint"] = input_fingerprint(files)
        fp = fingerprint({"input": inputs, "start": c.season.start, "end": c.season.end, "chunk": c.chunk})

        def run() -> dict:
            from slamgeo.ingest import ingest

            sources = c.input.paths
            if c.input.kind == "synthetic":
                from slamgeo.synth import make_scene, write_scene

                s = c.input.synthetic
                scene = make_scene(size=s.size, seed=s.seed, n_dates=s.n_dates, start=s.start, step_days=s.step_days,
                                   missing_dates=s.missing_dates, irregular=s.irregular, rain_events=s.rain_events)
                written = write_scene(scene, self.paths.scene, overwrite=True)
                sources = [str(written["tiffs"])]
            ingest(sources, self.paths.cube, chunk=c.chunk, start=c.season.start, end=c.season.end,
                   overwrite=True, progress=not self.quiet)
            from slamgeo.cube import open_cube

            cube = open_cube(str(self.paths.cube))
            return {"dates": int(cube.sizes["time"]), "shape": dict(cube.sizes)}

        return fp, run, [self.paths.cube]

    # train ----------------------------------------------------------------
    def step_train(self):
        c = self.cfg
        if c.model.checkpoint:
            from slamgeo.checkpoint import load_model

            tm = load_model(c.model.checkpoint)
            fp = fingerprint({"reuse": tm.checksum})

            def run() -> dict:
                return {"reused": c.model.checkpoint, "model_checksum": tm.checksum}

            return fp, run, [Path(c.model.checkpoint)]
        fp = fingerprint({"train": c.model.train.model_dump(), "ingest": self.fp["ingest"]})

        def run() -> dict:
            from slamgeo.cube import open_cube
            from slamgeo.train import train

            t = c.model.train
            tm = train(open_cube(str(self.paths.cube)), out_dir=self.paths.model, overwrite=True,
                       sample_size=t.sample_size, val_fraction=t.val_fraction, max_epochs=t.max_epochs,
                       patience=t.patience, batch_size=t.batch_size, lr=t.lr, seed=t.seed, device=t.device,
                       gap_fill=t.gap_fill, arch={"embed_dim": t.embed_dim}, progress=not self.quiet)
            return {"model_checksum": tm.checksum}

        return fp, run, [self.paths.model]

    @property
    def model_dir(self) -> Path:
        return Path(self.cfg.model.checkpoint) if self.cfg.model.checkpoint else self.paths.model

    # align ----------------------------------------------------------------
    def _needs_alignment(self) -> bool:
        from slamgeo.checkpoint import load_model
        from slamgeo.cube import open_cube

        cube_dates = open_cube(str(self.paths.cube))["time"].values
        model_dates = load_model(self.model_dir).dates
        return cube_dates.shape != model_dates.shape or not np.array_equal(cube_dates, model_dates)

    def step_align(self):
        c = self.cfg
        fp = fingerprint({"train": self.fp["train"], "ingest": self.fp["ingest"], "gap": c.gradslam.max_gap_days})

        def run() -> dict:
            if not self._needs_alignment():
                return {"aligned": False, "note": "cube dates equal the model's dates"}
            from slamgeo.checkpoint import load_model
            from slamgeo.cube import open_cube, write_cube
            from slamgeo.season import resample_cube

            tm = load_model(self.model_dir)
            cube = open_cube(str(self.paths.cube))
            out = resample_cube(cube, tm.dates, bands=tm.bands, max_gap_days=c.gradslam.max_gap_days)
            write_cube(out, self.paths.aligned, overwrite=True, progress=not self.quiet)
            return {"aligned": True, "source_dates": int(cube.sizes["time"]), "model_dates": int(len(tm.dates)),
                    "max_gap_days": c.gradslam.max_gap_days}

        return fp, run, []

    @property
    def explain_input(self) -> Path:
        return self.paths.aligned if self.paths.aligned.exists() else self.paths.cube

    # explain ----------------------------------------------------------------
    def step_explain(self):
        c = self.cfg
        fp = fingerprint({"gradslam": c.gradslam.model_dump(), "align": self.fp["align"], "train": self.fp["train"]})

        def run() -> dict:
            from slamgeo.explain import ExplainOptions, explain
            from slamgeo.gradslam import DEFAULT_SCALE

            g = c.gradslam
            opts = ExplainOptions(layers=tuple(g.layers) if g.layers else None, scale=g.scale or DEFAULT_SCALE,
                                  batch_size=g.batch_size, importance_dtype=g.importance_dtype)
            # a store from an interrupted run of this same step is resumed; one from other
            # options or inputs (a changed fingerprint) is replaced
            previous = self.state_steps.get("explain", {})
            overwrite = self.force or previous.get("fingerprint") not in (None, fp)
            rep = explain(self.explain_input, self.model_dir, self.paths.results, options=opts, client=self.client,
                          overwrite=overwrite, progress=not self.quiet)
            return {"blocks_computed": rep.blocks_computed, "blocks_resumed_from_disk": rep.blocks_skipped,
                    "valid_pixels": rep.valid_pixels}

        return fp, run, [self.paths.results]

    # cluster ----------------------------------------------------------------
    def step_cluster(self):
        c = self.cfg
        fp = fingerprint({"kmeans": c.kmeans.model_dump(), "explain": self.fp["explain"]})

        def run() -> dict:
            import xarray as xr

            from slamgeo.cli.cluster import append_variables
            from slamgeo.cluster import assign_clusters, centres_dataarray, fit_kmeans
            from slamgeo.explain import open_results

            ds = open_results(self.paths.results)
            fit = fit_kmeans(ds["embedding"], c.kmeans.k, sample_size=c.kmeans.sample_size, seed=c.kmeans.seed)
            labels = assign_clusters(ds["embedding"], fit.centres)
            append_variables(str(self.paths.results), xr.merge([labels.to_dataset(), centres_dataarray(fit)]),
                             overwrite=True)
            return {"k": c.kmeans.k, "inertia": float(fit.inertia), "n_iter": int(fit.n_iter)}

        return fp, run, [self.paths.results]

    # parcels ----------------------------------------------------------------
    def _parcels_file(self) -> str | None:
        p = self.cfg.parcels
        if p.path:
            return p.path
        if self.cfg.input.kind == "synthetic":
            return str(self.paths.scene / "parcels.gpkg")
        return None

    def step_parcels(self):
        c = self.cfg
        path = self._parcels_file()
        parcels_fp = None
        if path and Path(path).exists():
            from slamgeo.ingest import input_fingerprint

            parcels_fp = input_fingerprint([Path(path)])
        fp = fingerprint({"parcels": c.parcels.model_dump(), "file": parcels_fp, "cluster": self.fp["cluster"]})

        def run() -> dict:
            from slamgeo.cli.parcels import parcels_cmd

            scheduler = self.client.scheduler.address if self.client is not None else None
            parcels_cmd(
                results=str(self.paths.results), parcels=Path(path) if path else None, out=self.paths.parcels,
                cube=str(self.explain_input), id_column=c.parcels.id_column, class_column=c.parcels.class_column,
                all_touched=c.parcels.all_touched, vote=c.parcels.vote, test_fraction=c.parcels.test_fraction,
                seed=c.parcels.seed, layer=None, overwrite=True, scheduler=scheduler, workers=None, threads=1,
            )
            metrics = json.loads((self.paths.parcels / "metrics.json").read_text())
            return {f"held_out_{k}": {m: metrics[k][m] for m in ("overall_accuracy", "kappa") if m in metrics[k]}
                    for k in ("pixels", "parcels") if k in metrics}

        return fp, run, [self.paths.parcels]

    # report ----------------------------------------------------------------
    def step_report(self):
        c = self.cfg
        fp = fingerprint({"report": c.report.model_dump(), "parcels": self.fp["parcels"]})

        def run() -> dict:
            from slamgeo.cube import open_cube
            from slamgeo.explain import open_results
            from slamgeo.report import make_report

            results = open_results(self.paths.results)
            faith = self._faithfulness(results)
            html = make_report(results, self.paths.report, cube=open_cube(str(self.explain_input)),
                               parcels_dir=self.paths.parcels if self.paths.parcels.exists() else None,
                               class_groups=c.report.class_groups, date=c.report.date, faithfulness=faith,
                               title=f"slamgeo season {c.season.name}")
            return {"html": str(html), "figures": sorted(str(p) for p in self.paths.report.glob("*.png"))}

        return fp, run, [self.paths.report]

    def _faithfulness(self, results) -> dict | None:
        """Deletion curves on a sample of valid pixels (Grad-SLAM at the run's scaling)."""
        import torch

        from slamgeo.checkpoint import load_model
        from slamgeo.cube import open_cube
        from slamgeo.faithfulness import deletion
        from slamgeo.gradslam import grad_slam
        from slamgeo.train import sample_pixels

        tm = load_model(self.model_dir)
        x = sample_pixels(open_cube(str(self.explain_input)), 1000, seed=0, gap_fill=tm.gap_fill, bands=tm.bands)
        x = x[~np.isnan(x).any(axis=(1, 2))]
        if x.shape[0] < 10:
            return None
        xs = torch.from_numpy(tm.standardise(x))
        ref = results.attrs.get("reference_map")
        ref = None if ref is None else torch.tensor(ref, dtype=torch.float32)
        imp = grad_slam(tm.model.encoder, xs, scale=results.attrs["scale"], reference=ref)
        ks = [k for k in (1, 2, 4, 8, 16) if k < x.shape[-1]]
        curves = deletion(tm.model.encoder, xs, imp, ks)
        return {"grad-slam (" + results.attrs["scale"] + ")": {k: v.tolist() for k, v in curves.items()}}

    # the loop ----------------------------------------------------------------
    def run(self, *, dry_run: bool = False) -> list[StepResult]:
        self.state = _read_state(self.paths.state)
        self.state_steps = self.state.setdefault("steps", {})
        results: list[StepResult] = []
        for name in STEPS:
            t0 = time.perf_counter()
            try:
                fp, runner, outputs = getattr(self, f"step_{name}")()
            except SlamgeoError as exc:
                results.append(StepResult(name, "failed", error=str(exc)))
                _say(f"[{name}] failed: {exc}", self.quiet)
                break
            self.fp[name] = fp
            rec = self.state_steps.get(name, {})
            up_to_date = (not self.force and rec.get("status") == "done" and rec.get("fingerprint") == fp
                          and all(Path(o).exists() for o in outputs))
            if dry_run:
                results.append(StepResult(name, "would skip" if up_to_date else "would run", fingerprint=fp))
                _say(f"[{name}] {'up to date' if up_to_date else 'would run'} ({fp})", self.quiet)
                continue
            if up_to_date:
                results.append(StepResult(name, "skipped", fingerprint=fp, info=rec.get("info", {})))
                _say(f"[{name}] up to date, skipped", self.quiet)
                continue
            _say(f"[{name}] running", self.quiet)
            self.state_steps[name] = {"status": "running", "fingerprint": fp,
                                      "started": dt.datetime.now(dt.timezone.utc).isoformat()}
            _write_state(self.paths.state, self.state)
            try:
                info = runner()
            except Exception as exc:  # noqa: BLE001 - recorded, tallied, and the run stops here
                msg = str(exc) if isinstance(exc, SlamgeoError) else f"{type(exc).__name__}: {exc}"
                self.state_steps[name].update(status="failed", error=msg)
                _write_state(self.paths.state, self.state)
                results.append(StepResult(name, "failed", time.perf_counter() - t0, fp, error=msg))
                _say(f"[{name}] failed: {msg}", self.quiet)
                if not isinstance(exc, SlamgeoError):
                    traceback.print_exc()
                break
            secs = time.perf_counter() - t0
            self.state_steps[name] = {"status": "done", "fingerprint": fp, "seconds": round(secs, 2), "info": info,
                                      "finished": dt.datetime.now(dt.timezone.utc).isoformat()}
            _write_state(self.paths.state, self.state)
            results.append(StepResult(name, "done", secs, fp, info))
            _say(f"[{name}] done in {secs:.1f} s", self.quiet)
        return results


def run_pipeline(
    cfg: PipelineConfig,
    *,
    force: bool = False,
    dry_run: bool = False,
    client=None,
    quiet: bool = False,
) -> RunSummary:
    """Run (or with `dry_run`, plan) one season. `client`: a distributed Client; None starts a
    LocalCluster (or connects to `cfg.cluster.scheduler`) for the run."""
    from slamgeo.runtime import ClusterOptions, dask_client

    if "://" in cfg.output:
        raise InputError(f"{cfg.output}: the season pipeline writes to a local folder; object-storage output is "
                         "supported by the explain step (`slamgeo explain ... --out s3://...`)")
    paths = SeasonPaths(Path(cfg.output) / cfg.season.name)
    paths.root.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    if dry_run or client is not None:
        steps = _Season(cfg, paths, force=force, client=client, quiet=quiet).run(dry_run=dry_run)
    else:
        opts = ClusterOptions(scheduler=cfg.cluster.scheduler, n_workers=cfg.cluster.n_workers,
                              threads_per_worker=cfg.cluster.threads_per_worker)
        with dask_client(opts, quiet=quiet) as c:
            steps = _Season(cfg, paths, force=force, client=c, quiet=quiet).run()
    manifest = None
    if not dry_run:
        paths.manifests.mkdir(exist_ok=True)
        manifest = paths.manifests / f"run-{started.strftime('%Y%m%dT%H%M%S%fZ')}.json"
        report_step = next((s for s in steps if s.name == "report" and s.info), None)
        manifest.write_text(json.dumps({
            "started": started.isoformat(),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(),
            "versions": versions(),
            "configuration": cfg.model_dump(),
            "steps": [{"name": s.name, "status": s.status, "seconds": round(s.seconds, 2), "fingerprint": s.fingerprint,
                       "info": s.info, "error": s.error} for s in steps],
            "figures": report_step.info.get("figures", []) if report_step else [],
            "tally": RunSummary(paths.root, steps, None).tally(),
        }, indent=2, default=str))
    return RunSummary(paths.root, steps, manifest)


__all__ = ["STEPS", "RunSummary", "SeasonPaths", "StepResult", "run_pipeline"]
