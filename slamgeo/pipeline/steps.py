"""The season pipeline: ingest -> train (or reuse) -> align -> explain -> cluster -> parcels -> report.

Each step has a fingerprint made of its own configuration and its upstream steps'
fingerprints. A step whose fingerprint is recorded as done in the season's state file
(`<output>/<season>/pipeline_state.json`) and whose outputs exist is skipped; a changed
fingerprint redoes that step and, through the chain, everything downstream; `force` redoes all.
An interrupted explain resumes where it stopped (its store records finished blocks). Each
season writes to its own folder, so a scheduled 2018 run never touches 2017. Each run writes a
manifest (versions, configuration, per-step status and timings, figures) and ends with a tally
of done / skipped / failed, in the manner of odc-stats' `run`.

The output (and every input) may be a local folder or an fsspec URL (`s3://bucket/prefix`);
`slamgeo.io.storage` serves both. An output "exists" for the skip rule only when it is complete:
a Zarr store with `slamgeo_complete` set, a folder with its marker file (`model.json`,
`metrics.json`, `index.html`), so a step killed half-way on object storage is redone. The
state file and the manifests are single files, written whole.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from slamgeo import schema
from slamgeo.errors import InputError, SlamgeoError, one_line
from slamgeo.io import storage
from slamgeo.io.provenance import fingerprint, versions
from slamgeo.jobs.runtime import Interrupted
from slamgeo.pipeline.config import PipelineConfig

STEPS = ("ingest", "train", "align", "explain", "cluster", "parcels", "report")


@dataclass
class StepResult:
    name: str
    status: str  # "done", "skipped", "failed", "interrupted", "not run" (after a failure or an interrupt),
    # "disabled", "would run", "would skip"
    seconds: float = 0.0
    fingerprint: str = ""
    info: dict = field(default_factory=dict)
    error: str | None = None


@dataclass
class RunSummary:
    season_dir: storage.Location  # a Path, or a URL
    steps: list[StepResult]
    manifest: storage.Location | None

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
    """Where a season's outputs live: below `root`, a local folder (`Path`) or a URL (`str`)."""

    root: storage.Location

    def _at(self, name: str) -> storage.Location:
        return storage.join(self.root, name)

    @property
    def scene(self) -> storage.Location:
        return self._at(schema.SCENE_DIR)

    @property
    def cube(self) -> storage.Location:
        return self._at(schema.CUBE_STORE)

    @property
    def model(self) -> storage.Location:
        return self._at(schema.MODEL_DIR)

    @property
    def aligned(self) -> storage.Location:
        return self._at(schema.ALIGNED_STORE)

    @property
    def results(self) -> storage.Location:
        return self._at(schema.RESULTS_STORE)

    @property
    def parcels(self) -> storage.Location:
        return self._at(schema.PARCELS_DIR)

    @property
    def report(self) -> storage.Location:
        return self._at(schema.REPORT_DIR)

    @property
    def state(self) -> storage.Location:
        return self._at(schema.STATE_FILE)

    @property
    def manifests(self) -> storage.Location:
        return self._at(schema.MANIFESTS_DIR)


# The file whose presence means a folder output is complete (see slamgeo.io.storage): written
# last by its stage.
MODEL_MARKER = schema.MODEL_MARKER
PARCELS_MARKER = schema.PARCELS_MARKER
REPORT_MARKER = schema.REPORT_MARKER
SCENE_MARKER = schema.SCENE_MARKER


def _ready(output: storage.Location) -> bool:
    """True when a step output is there and complete: a Zarr store marked complete, or a file."""
    if storage.name(output).endswith(".zarr"):
        from slamgeo.io.cube import is_complete

        return is_complete(output)
    return storage.exists(output)


def _read_state(path: storage.Location) -> dict:
    try:
        return json.loads(storage.read_text(path))
    except FileNotFoundError:
        return {"steps": {}}
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: the pipeline state file is not valid JSON ({exc}); remove it or run with --force"
        ) from exc


def _write_state(path: storage.Location, state: dict) -> None:
    storage.write_text(path, json.dumps(state, indent=2, default=str))  # whole or not at all


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


# --------------------------------------------------------------------------- the steps


class _Season:
    """Runs the steps of one season; each `step_*` returns (fingerprint, runner)."""

    def __init__(
        self,
        cfg: PipelineConfig,
        paths: SeasonPaths,
        *,
        force: bool,
        client,
        quiet: bool,
        start_client: Callable[[], object] | None = None,
    ):
        """`client`: a distributed Client, or None; then `start_client()` gives one when the
        first step is about to run (None: steps use Dask's default scheduler)."""
        self.cfg, self.paths, self.force, self.client, self.quiet = cfg, paths, force, client, quiet
        self.start_client = start_client
        self.fp: dict[str, str] = {}

    # ingest ---------------------------------------------------------------
    def step_ingest(self):
        c = self.cfg
        inputs = c.input.model_dump()
        if c.input.kind == "stac-api":  # what the search finds now is the input
            from slamgeo.io.ingest import input_fingerprint
            from slamgeo.io.readers.archive import SearchOptions, search_items

            box = tuple(c.input.bbox) if c.input.bbox else None
            found = search_items(
                c.input.paths[0], SearchOptions(c.input.collection, c.input.datetime, box, c.input.sign)
            )
            inputs["fingerprint"] = input_fingerprint(sorted(a.href for i in found for a in i.assets.values()))
        elif c.input.kind != "synthetic":
            from slamgeo.io.ingest import detect_source, input_fingerprint

            _, files = detect_source(c.input.paths)
            if c.input.like:
                files = [*files, storage.location(c.input.like)]
            inputs["fingerprint"] = input_fingerprint(files)
        fp = fingerprint({"input": inputs, "start": c.season.start, "end": c.season.end, "chunk": c.chunk})

        def run() -> dict:
            from slamgeo.io.ingest import ingest

            def ingest_from(sources) -> None:
                ingest(
                    sources,
                    self.paths.cube,
                    chunk=c.chunk,
                    start=c.season.start,
                    end=c.season.end,
                    overwrite=True,
                    progress=not self.quiet,
                    report=lambda line: _say(f"  ingest: {line}", self.quiet),
                    **c.input.grid(),
                )

            if c.input.kind != "synthetic":
                ingest_from(c.input.paths)
            else:
                from slamgeo.io.synth import make_scene, write_archive, write_scene

                s = c.input.synthetic
                scene = make_scene(
                    size=s.size,
                    seed=s.seed,
                    n_dates=s.n_dates,
                    start=s.start,
                    step_days=s.step_days,
                    missing_dates=s.missing_dates,
                    irregular=s.irregular,
                    rain_events=s.rain_events,
                )
                write = write_archive if s.archive else write_scene
                rasters = "items" if s.archive else "tiffs"
                if storage.is_local(self.paths.scene):
                    written = write(scene, self.paths.scene, overwrite=True)
                    ingest_from([str(written[rasters])])
                else:
                    # GeoTIFFs are read by GDAL, which does not share fsspec's settings: the scene
                    # is written and ingested locally, then uploaded (parcels reads it from there)
                    with storage.staged_folder(self.paths.scene, storage.SCENE) as tmp:
                        written = write(scene, tmp, overwrite=True)
                        ingest_from([str(written[rasters])])
            from slamgeo.io.cube import open_cube

            cube = open_cube(str(self.paths.cube))
            return {"dates": int(cube.sizes["time"]), "shape": dict(cube.sizes)}

        return fp, run, [self.paths.cube]

    # train ----------------------------------------------------------------
    def step_train(self):
        c = self.cfg
        if c.model.checkpoint:
            from slamgeo.io.checkpoint import load_model

            tm = load_model(c.model.checkpoint)
            fp = fingerprint({"reuse": tm.checksum})

            def run() -> dict:
                return {"reused": c.model.checkpoint, "model_checksum": tm.checksum}

            return fp, run, [storage.join(c.model.checkpoint, MODEL_MARKER)]
        # `threads` is left out of the fingerprint while unset, so that states written before
        # the option existed stay valid
        train_opts = c.model.train.model_dump(exclude={"threads"} if c.model.train.threads is None else None)
        fp = fingerprint({"train": train_opts, "ingest": self.fp["ingest"]})

        def run() -> dict:
            from slamgeo.io.cube import open_cube
            from slamgeo.method.train import train

            t = c.model.train
            tm = train(
                open_cube(str(self.paths.cube)),
                out_dir=self.paths.model,
                overwrite=True,
                inputs=[str(self.paths.cube)],
                sample_size=t.sample_size,
                val_fraction=t.val_fraction,
                max_epochs=t.max_epochs,
                patience=t.patience,
                batch_size=t.batch_size,
                lr=t.lr,
                seed=t.seed,
                device=t.device,
                gap_fill=t.gap_fill,
                arch={"embed_dim": t.embed_dim},
                threads=t.threads,
                progress=not self.quiet,
            )
            return {"model_checksum": tm.checksum}

        return fp, run, [storage.join(self.paths.model, MODEL_MARKER)]

    @property
    def model_dir(self) -> storage.Location:
        return storage.location(self.cfg.model.checkpoint) if self.cfg.model.checkpoint else self.paths.model

    # align ----------------------------------------------------------------
    def _needs_alignment(self) -> bool:
        from slamgeo.io.checkpoint import load_model
        from slamgeo.io.cube import open_cube

        cube_dates = open_cube(str(self.paths.cube))["time"].values
        model_dates = load_model(self.model_dir).dates
        return cube_dates.shape != model_dates.shape or not np.array_equal(cube_dates, model_dates)

    def step_align(self):
        c = self.cfg
        fp = fingerprint({"train": self.fp["train"], "ingest": self.fp["ingest"], "gap": c.gradslam.max_gap_days})

        def run() -> dict:
            if not self._needs_alignment():
                storage.remove_output(self.paths.aligned, storage.CUBE)  # an earlier one would be used
                return {"aligned": False, "note": "cube dates equal the model's dates"}
            from slamgeo.io.checkpoint import load_model
            from slamgeo.io.cube import open_cube, write_cube
            from slamgeo.jobs.season import resample_cube

            tm = load_model(self.model_dir)
            cube = open_cube(str(self.paths.cube))
            out = resample_cube(cube, tm.dates, bands=tm.bands, max_gap_days=c.gradslam.max_gap_days)
            write_cube(out, self.paths.aligned, overwrite=True, progress=not self.quiet, inputs=[self.paths.cube])
            return {
                "aligned": True,
                "source_dates": int(cube.sizes["time"]),
                "model_dates": int(len(tm.dates)),
                "max_gap_days": c.gradslam.max_gap_days,
            }

        return fp, run, []

    @property
    def explain_input(self) -> storage.Location:
        return self.paths.aligned if _ready(self.paths.aligned) else self.paths.cube

    # explain ----------------------------------------------------------------
    def step_explain(self):
        c = self.cfg
        fp = fingerprint({"gradslam": c.gradslam.model_dump(), "align": self.fp["align"], "train": self.fp["train"]})

        def run() -> dict:
            from slamgeo.jobs.explain import ExplainOptions, explain_store
            from slamgeo.method.gradslam import DEFAULT_SCALE

            g = c.gradslam
            opts = ExplainOptions(
                layers=tuple(g.layers) if g.layers else None,
                scale=g.scale or DEFAULT_SCALE,
                batch_size=g.batch_size,
                importance_dtype=g.importance_dtype,
            )
            # a store from an interrupted run of this same step is resumed; one from other
            # options or inputs (a changed fingerprint) is replaced
            previous = self.state_steps.get("explain", {})
            overwrite = self.force or previous.get("fingerprint") not in (None, fp)
            rep = explain_store(
                self.explain_input,
                self.model_dir,
                self.paths.results,
                options=opts,
                client=self.client,
                overwrite=overwrite,
                gpu_resources=c.dask.gpu_resources,  # block and reference tasks need GPU=1
                progress=not self.quiet,
            )
            return {
                "blocks_computed": rep.blocks_computed,
                "blocks_resumed_from_disk": rep.blocks_skipped,
                "valid_pixels": rep.valid_pixels,
            }

        return fp, run, [self.paths.results]

    # cluster ----------------------------------------------------------------
    def step_cluster(self):
        c = self.cfg
        fp = fingerprint({"kmeans": c.kmeans.model_dump(), "explain": self.fp["explain"]})

        def run() -> dict:
            from slamgeo.jobs.cluster import cluster_store

            fit = cluster_store(
                self.paths.results, c.kmeans.k, overwrite=True, sample_size=c.kmeans.sample_size, seed=c.kmeans.seed
            )
            return {"k": c.kmeans.k, "inertia": float(fit.inertia), "n_iter": int(fit.n_iter)}

        return fp, run, [self.paths.results]

    # parcels ----------------------------------------------------------------
    def _parcels_file(self) -> str | None:
        p = self.cfg.parcels
        if p.path:
            return p.path
        if self.cfg.input.kind == "synthetic":
            return str(storage.join(self.paths.scene, "parcels.gpkg"))
        return None

    def step_parcels(self):
        c = self.cfg
        path = self._parcels_file()
        parcels_fp = None
        if path and storage.exists(path):
            from slamgeo.io.ingest import input_fingerprint

            parcels_fp = input_fingerprint([storage.location(path)])
        fp = fingerprint({"parcels": c.parcels.model_dump(), "file": parcels_fp, "cluster": self.fp["cluster"]})

        def run() -> dict:
            from slamgeo.jobs.parcels import parcels_store

            res = parcels_store(
                self.paths.results,
                path,
                self.paths.parcels,
                cube=self.explain_input,
                overwrite=True,
                id_column=c.parcels.id_column,
                class_column=c.parcels.class_column,
                all_touched=c.parcels.all_touched,
                vote=c.parcels.vote,
                test_fraction=c.parcels.test_fraction,
                seed=c.parcels.seed,
            )
            for m in res.messages:
                _say(f"[parcels] note: {m}", self.quiet)
            scored = "held_out" if res.evaluation.held_out else "all"
            return {
                f"{scored}_{level}": {m: scores[m] for m in ("overall_accuracy", "kappa") if m in scores}
                for level, scores in (
                    ("pixels", res.evaluation.scores_pixels),
                    ("parcels", res.evaluation.scores_parcels),
                )
            }

        return fp, run, [storage.join(self.paths.parcels, PARCELS_MARKER)]

    # report ----------------------------------------------------------------
    def step_report(self):
        c = self.cfg
        fp = fingerprint({"report": c.report.model_dump(), "parcels": self.fp["parcels"]})

        def run() -> dict:
            from slamgeo.io.cube import open_cube
            from slamgeo.jobs.explain import open_results
            from slamgeo.reporting.page import make_report

            results = open_results(self.paths.results)
            faith = self._faithfulness(results)
            parcels_ready = _ready(storage.join(self.paths.parcels, PARCELS_MARKER))
            pairs = self._pairs(results, labelled=parcels_ready)
            if pairs:
                results = open_results(self.paths.results)
            html = make_report(
                results,
                self.paths.report,
                cube=open_cube(str(self.explain_input)),
                parcels_dir=self.paths.parcels if parcels_ready else None,
                class_groups=c.report.class_groups,
                date=c.report.date,
                faithfulness=faith,
                title=f"slamgeo season {c.season.name}",
                pair_truth=self._scene_windows() if pairs else None,
                overwrite=True,
                inputs=[self.paths.results, self.explain_input, self.paths.parcels],
            )
            return {
                "html": str(html),
                "figures": [str(p) for p in storage.glob(self.paths.report, "*.png")],
                "pairs": pairs,
            }

        return fp, run, [storage.join(self.paths.report, REPORT_MARKER)]

    def _pairs(self, results, *, labelled: bool) -> list[list[str]]:
        """Contrastive importance of the most confused class pairs and of the configured ones
        (without labelled parcels: of the nearest k-Means centres), written into the results
        store (`pair_importance`, ...); returns the pairs."""
        import numpy as np
        import xarray as xr

        from slamgeo.io.checkpoint import load_model
        from slamgeo.io.cube import open_cube
        from slamgeo.jobs.cluster import append_variables
        from slamgeo.jobs.pairs import (
            check_pairs,
            confused_pairs,
            nearest_centre_pairs,
            pair_importance,
        )
        from slamgeo.jobs.parcels import rasterize_parcels, read_parcels
        from slamgeo.reporting.figures import read_parcels_outputs

        c = self.cfg
        path = self._parcels_file()
        wanted = c.report.confused_pairs + len(c.report.pairs or [])
        if not {"y", "x"} <= set(results["embedding"].dims) or wanted == 0:
            return []
        ref = results.attrs.get("reference_map")
        options = {"scale": results.attrs["scale"], "reference": None if ref is None else np.asarray(ref, np.float32)}
        if path is None or not labelled:
            if "cluster_centre" not in results or c.report.confused_pairs == 0:
                return []
            pairs = nearest_centre_pairs(results["cluster_centre"].values, c.report.confused_pairs)
            cl = results["cluster"]
            labels = xr.DataArray(np.asarray(cl.values).astype(np.int16), dims=cl.dims)  # -1: none
            classes = [f"cluster {i}" for i in range(results["cluster_centre"].shape[0])]
        else:
            parts, _ = read_parcels_outputs(self.paths.parcels)
            classes = [str(v) for v in parts["profiles"]["class"].values] if "profiles" in parts else []
            confusion = parts.get("confusion_pixels")
            pairs = confused_pairs(confusion, c.report.confused_pairs) if confusion is not None else []
            for a, b in check_pairs(c.report.pairs or [], classes):
                if {a, b} not in [set(p) for p in pairs]:
                    pairs.append((a, b))
            if not pairs:
                return []
            gdf = read_parcels(
                path, id_column=c.parcels.id_column, class_column=c.parcels.class_column, crs=results.rio.crs
            )
            ids = rasterize_parcels(gdf, results, all_touched=c.parcels.all_touched, id_column=c.parcels.id_column)
            lut = dict(zip(gdf[c.parcels.id_column].to_numpy().tolist(), gdf[c.parcels.class_column].astype(str)))
            classes = sorted(set(lut.values()) - {"", "nan"})
            code_of = {name: i for i, name in enumerate(classes)}
            # class codes (int16) per pixel, not names: a few bytes a pixel on a regional grid
            pid = np.asarray(ids.values)
            uniq, inverse = np.unique(pid, return_inverse=True)
            table = np.array([code_of.get(lut.get(int(i), ""), -1) for i in uniq], dtype=np.int16)
            labels = xr.DataArray(table[inverse.ravel()].reshape(pid.shape), dims=ids.dims)
            del pid, inverse
        model, cube = load_model(self.model_dir), open_cube(str(self.explain_input))
        ds = pair_importance(model, cube, results["embedding"], labels, pairs, classes=classes, **options)
        append_variables(str(self.paths.results), ds, overwrite=True)
        return [list(p) for p in pairs]

    def _scene_windows(self) -> dict | None:
        """A synthetic scene's known distinctive windows (class -> (start, end)), else None."""
        if self.cfg.input.kind != "synthetic":
            return None
        try:
            return json.loads(storage.read_text(storage.join(self.paths.scene, SCENE_MARKER))).get(
                "distinctive_windows"
            )
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _faithfulness(self, results) -> dict | None:
        """Deletion curves on a sample of valid pixels (Grad-SLAM at the run's scaling and
        reference map)."""
        import torch

        from slamgeo.io.checkpoint import load_model
        from slamgeo.io.cube import open_cube
        from slamgeo.method.faithfulness import deletion_curves
        from slamgeo.method.train import sample_series

        tm = load_model(self.model_dir)
        x = sample_series(open_cube(str(self.explain_input)), 1000, seed=0, gap_fill=tm.gap_fill, bands=tm.bands)
        x = x[~np.isnan(x).any(axis=(1, 2))]
        if x.shape[0] < 10:
            return None
        ref = results.attrs.get(schema.REFERENCE_MAP_ATTR)
        ks = [k for k in (1, 2, 4, 8, 16) if k < x.shape[-1]]
        return deletion_curves(
            tm.model.encoder,
            torch.from_numpy(tm.standardise(x)),
            ks,
            methods=("gradslam",),
            scale=results.attrs["scale"],
            reference=None if ref is None else torch.tensor(ref, dtype=torch.float32),
        )

    # the loop ----------------------------------------------------------------
    def run(self, *, dry_run: bool = False) -> list[StepResult]:
        """Run the steps in order; they are also in `self.results` as they end. An interrupt
        (KeyboardInterrupt, `Interrupted`) is recorded (the step as "interrupted" in the
        results and the state file, the steps after it as "not run") and raised again."""
        self.results: list[StepResult] = []
        self._current: tuple[str, float] | None = None  # the step under way, since when
        self._running: str | None = None  # the last step whose work began
        try:
            return self._run_steps(self.results, dry_run=dry_run)
        except (KeyboardInterrupt, Interrupted) as exc:
            self._record_interrupt(exc)
            raise

    def _record_interrupt(self, exc: BaseException) -> None:
        """The step that was going on when `exc` came, as "interrupted"; the rest "not run"."""
        why = str(exc) if isinstance(exc, Interrupted) else "interrupted by SIGINT"
        ended = {r.name for r in self.results}
        if self._current is not None and self._current[0] not in ended:
            name, t0 = self._current
            secs = time.perf_counter() - t0
            fp = self.fp.get(name, "")
            if self._running == name:  # its work began: the state says so (a later run redoes it)
                self.state_steps[name] = {
                    "status": "interrupted",
                    "fingerprint": fp,
                    "error": why,
                    "started": self.state_steps.get(name, {}).get("started"),
                    "seconds": round(secs, 2),
                    "finished": dt.datetime.now(dt.UTC).isoformat(),
                }
                _write_state(self.paths.state, self.state)
            self.results.append(StepResult(name, "interrupted", secs, fp, error=why))
            _say(f"[{name}] {why}", self.quiet)
        self.results.extend(StepResult(n, "not run") for n in STEPS if n not in {r.name for r in self.results})

    def _run_steps(self, results: list[StepResult], *, dry_run: bool) -> list[StepResult]:
        self.state = _read_state(self.paths.state)
        self.state_steps = self.state.setdefault("steps", {})
        for name in STEPS:
            self._current = (name, time.perf_counter())
            if any(r.status == "failed" for r in results):  # the run stops at the first failure
                results.append(StepResult(name, "not run"))
                continue
            if name == "report" and not self.cfg.report.enabled:
                results.append(StepResult(name, "disabled"))
                _say(f"[{name}] disabled in the configuration", self.quiet)
                continue
            t0 = self._current[1]
            try:
                fp, runner, outputs = getattr(self, f"step_{name}")()
            except SlamgeoError as exc:
                results.append(StepResult(name, "failed", error=str(exc)))
                _say(f"[{name}] failed: {exc}", self.quiet)
                continue
            self.fp[name] = fp
            rec = self.state_steps.get(name, {})
            up_to_date = (
                not self.force
                and rec.get("status") == "done"
                and rec.get("fingerprint") == fp
                and all(_ready(o) for o in outputs)
            )
            if dry_run:
                results.append(StepResult(name, "would skip" if up_to_date else "would run", fingerprint=fp))
                _say(f"[{name}] {'up to date' if up_to_date else 'would run'} ({fp})", self.quiet)
                continue
            if up_to_date:
                results.append(StepResult(name, "skipped", fingerprint=fp, info=rec.get("info", {})))
                _say(f"[{name}] up to date, skipped", self.quiet)
                continue
            if self.client is None and self.start_client is not None:
                self.client = self.start_client()
            self._running = name
            self.state_steps[name] = {
                "status": "running",
                "fingerprint": fp,
                "started": dt.datetime.now(dt.UTC).isoformat(),
            }
            _write_state(self.paths.state, self.state)
            _say(f"[{name}] running", self.quiet)
            try:
                info = runner()
            except Exception as exc:  # noqa: BLE001 - recorded, tallied, and the run stops here
                msg = one_line(exc)
                self.state_steps[name].update(status="failed", error=msg)
                _write_state(self.paths.state, self.state)
                results.append(StepResult(name, "failed", time.perf_counter() - t0, fp, error=msg))
                _say(f"[{name}] failed: {msg}", self.quiet)
                if not isinstance(exc, (SlamgeoError, OSError)):  # a bug: its traceback helps
                    traceback.print_exc()
                continue
            secs = time.perf_counter() - t0
            self.state_steps[name] = {
                "status": "done",
                "fingerprint": fp,
                "seconds": round(secs, 2),
                "info": info,
                "finished": dt.datetime.now(dt.UTC).isoformat(),
            }
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
    LocalCluster (or connects to `cfg.dask.scheduler`) for the run.

    An interrupt (KeyboardInterrupt, `slamgeo.jobs.runtime.Interrupted`) stops the run: the step it
    came in is recorded as "interrupted" in the state file and the manifest, the cluster is
    stopped, and the interrupt is raised again. Running again resumes: finished steps are
    skipped, explain resumes its blocks."""
    from slamgeo.jobs.runtime import ClusterOptions, dask_client

    paths = SeasonPaths(storage.join(storage.location(cfg.output), cfg.season.name))
    storage.makedirs(paths.root)
    started = dt.datetime.now(dt.UTC)
    opts = ClusterOptions(
        scheduler=cfg.dask.scheduler,
        n_workers=cfg.dask.n_workers,
        threads_per_worker=cfg.dask.threads_per_worker,
        gpu_resources=cfg.dask.gpu_resources,
    )
    interrupt: BaseException | None = None
    season = None
    try:
        with contextlib.ExitStack() as stack:
            # The cluster starts when the first step is about to run: none for a run with nothing
            # to do (starting one takes seconds), and it is closed on the way out.
            start = None if client is not None else (lambda: stack.enter_context(dask_client(opts, quiet=quiet)))
            season = _Season(cfg, paths, force=force, client=client, start_client=start, quiet=quiet)
            steps = season.run(dry_run=dry_run)
    except (KeyboardInterrupt, Interrupted) as exc:  # recorded in the manifest, then raised again
        interrupt = exc
        steps = getattr(season, "results", None) or [StepResult(n, "not run") for n in STEPS]
    manifest = None
    if not dry_run:
        manifest = storage.join(paths.manifests, f"run-{started.strftime('%Y%m%dT%H%M%S%fZ')}.json")
        report_step = next((s for s in steps if s.name == "report" and s.info), None)
        storage.write_text(
            manifest,
            json.dumps(
                {
                    "started": started.isoformat(),
                    "finished": dt.datetime.now(dt.UTC).isoformat(),
                    "versions": versions(),
                    "configuration": cfg.model_dump(),
                    "steps": [
                        {
                            "name": s.name,
                            "status": s.status,
                            "seconds": round(s.seconds, 2),
                            "fingerprint": s.fingerprint,
                            "info": s.info,
                            "error": s.error,
                        }
                        for s in steps
                    ],
                    "figures": report_step.info.get("figures", []) if report_step else [],
                    "tally": RunSummary(paths.root, steps, None).tally(),
                },
                indent=2,
                default=str,
            ),
        )
    if interrupt is not None:
        if manifest is not None:
            _say(f"manifest: {manifest}; run again to resume", quiet)
        raise interrupt
    return RunSummary(paths.root, steps, manifest)


__all__ = ["STEPS", "RunSummary", "SeasonPaths", "StepResult", "run_pipeline"]
