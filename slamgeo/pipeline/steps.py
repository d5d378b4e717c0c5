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
`slamgeo.io.storage` serves both. A step is skipped only while its outputs are all there and
complete (`slamgeo.pipeline.outputs`): a Zarr store with `slamgeo_complete` set and every
variable the step writes (a variable removed by hand is noticed), a folder with its marker
file (`model.json`, `metrics.json`, `index.html`) and the other files the step writes, so a
step killed half-way on object storage, or an output removed since, is redone, and every step
after it; the log line says why. The configuration is checked against its inputs (parcels'
classes, checkpoint, dates) before the first step (`slamgeo.pipeline.checks`). Every output a
step replaces goes through `slamgeo.io.storage.claim_output`, so a file slamgeo did not write
inside one fails the step, untouched. The state file and the manifests are single files,
written whole.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import dask
import numpy as np

from slamgeo import schema
from slamgeo.errors import SlamgeoError, one_line
from slamgeo.io import storage
from slamgeo.io.provenance import fingerprint, versions
from slamgeo.jobs.runtime import Interrupted
from slamgeo.pipeline import outputs as expected
from slamgeo.pipeline.config import PipelineConfig
from slamgeo.pipeline.state import STEPS, manifest_json, read_state, state_json


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


# a season's outputs, below its folder: attribute of `SeasonPaths` -> name
_SEASON_FILES = {
    "scene": schema.SCENE_DIR,
    "cube": schema.CUBE_STORE,
    "model": schema.MODEL_DIR,
    "aligned": schema.ALIGNED_STORE,
    "results": schema.RESULTS_STORE,
    "parcels": schema.PARCELS_DIR,
    "report": schema.REPORT_DIR,
    "state": schema.STATE_FILE,
    "manifests": schema.MANIFESTS_DIR,
    "drift": schema.DRIFT_FILE,
}


@dataclass(frozen=True)
class SeasonPaths:
    """Where a season's outputs live: below `root`, a local folder (`Path`) or a URL (`str`);
    one attribute per output (`_SEASON_FILES`)."""

    root: storage.Location
    scene: storage.Location = field(init=False)
    cube: storage.Location = field(init=False)
    model: storage.Location = field(init=False)
    aligned: storage.Location = field(init=False)
    results: storage.Location = field(init=False)
    parcels: storage.Location = field(init=False)
    report: storage.Location = field(init=False)
    state: storage.Location = field(init=False)
    manifests: storage.Location = field(init=False)
    drift: storage.Location = field(init=False)

    def __post_init__(self) -> None:
        for attr, name in _SEASON_FILES.items():
            object.__setattr__(self, attr, storage.join(self.root, name))


PAIR_VARIABLES = ("pair_importance", "pair_importance_class")  # what the report adds to the results


def _ready(output: storage.Location) -> bool:
    """True when a step output is there and complete: a Zarr store marked complete, or a file."""
    if storage.name(output).endswith(".zarr"):
        from slamgeo.io.cube import is_complete

        return is_complete(output)
    return storage.exists(output)


def _read_state(path: storage.Location) -> dict:
    return read_state(path)  # checked against its schema: one line naming the file and the field


def _write_state(path: storage.Location, state: dict) -> None:
    storage.write_text(path, state_json(state))  # whole or not at all


_LAST_RUN = {
    "running": "its last run did not finish",
    "interrupted": "its last run was interrupted",
    "failed": "its last run failed",
}


def _because(why: str | None) -> str:
    """The reason of a log line, after a colon; nothing when there is none to give."""
    return f": {why}" if why else ""


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
        self.redone: str | None = None  # the first step of this run that runs (or would run)
        self.state_steps: dict = {}

    # ingest ---------------------------------------------------------------
    def step_ingest(self):
        c = self.cfg
        inputs = c.input.model_dump()
        if c.input.kind != "synthetic":
            from slamgeo.io.ingest import detect_source, input_fingerprint
            from slamgeo.io.readers import READERS
            from slamgeo.io.readers.stac_api import SearchOptions

            # the paths must be of the kind the configuration names (its reader reads them)
            kind, files = detect_source(c.input.paths, kind=c.input.kind)
            if READERS[kind].searches:  # what the search finds now is the input
                box = tuple(c.input.bbox) if c.input.bbox else None
                search = SearchOptions(c.input.collection, c.input.datetime, box, c.input.sign)
                files = READERS[kind].inputs(files, search=search)
            elif c.input.like:
                files = [*files, storage.location(c.input.like)]
            inputs["fingerprint"] = input_fingerprint(files)
        fp = fingerprint({"input": inputs, "start": c.season.start, "end": c.season.end, "chunk": c.chunk})

        def run() -> dict:
            from slamgeo.io.ingest import ingest

            def ingest_from(sources, kind: str | None = None, here: bool = False) -> None:
                """Read and write on the run's workers (`here`: on this process's threads)."""
                with dask.config.set(scheduler="threads" if here else self.client):
                    ingest(
                        sources,
                        self.paths.cube,
                        kind=kind,
                        chunk=c.chunk,
                        start=c.season.start,
                        end=c.season.end,
                        overwrite=True,
                        progress=not self.quiet,
                        report=lambda line: _say(f"  ingest: {line}", self.quiet),
                        **c.input.grid(),
                    )

            # what is there now is replaced only when it is slamgeo's own, with nothing else
            # inside: refused here, before minutes of drawing and reading
            storage.claim_output(self.paths.cube, storage.CUBE, overwrite=True)
            if c.input.kind != "synthetic":
                ingest_from(c.input.paths, c.input.kind)
            else:
                from slamgeo.synth import make_scene, write_archive, write_scene

                storage.claim_output(self.paths.scene, storage.SCENE, overwrite=True)
                s = c.input.synthetic
                scene = make_scene(**s.scene_options())
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
                        ingest_from([str(written[rasters])], here=True)  # a local folder
            from slamgeo.io.cube import open_cube

            cube = open_cube(str(self.paths.cube))
            return {"dates": int(cube.sizes["time"]), "shape": dict(cube.sizes)}

        made = [expected.store(self.paths.cube, all_listed=True)]
        if c.input.kind == "synthetic":  # what parcels and report read from the scene
            made += [expected.path(storage.join(self.paths.scene, f)) for f in (schema.SCENE_MARKER, "parcels.gpkg")]
        return fp, run, made

    # train ----------------------------------------------------------------
    def step_train(self):
        c = self.cfg
        if c.model.checkpoint:
            from slamgeo.method.checkpoint import load_model

            tm = load_model(c.model.checkpoint)
            fp = fingerprint({"reuse": tm.checksum})

            def run() -> dict:
                from slamgeo.pipeline.seasons import model_season

                return {"reused": c.model.checkpoint, "model_checksum": tm.checksum, "model_season": model_season(c)}

            return fp, run, [expected.path(storage.join(c.model.checkpoint, schema.MODEL_MARKER))]
        # `threads` is left out of the fingerprint while unset, so that states written before
        # the option existed stay valid
        train_opts = c.model.train.model_dump(exclude={"threads"} if c.model.train.threads is None else None)
        fp = fingerprint({"train": train_opts, "ingest": self.fp["ingest"]})

        def run() -> dict:
            from slamgeo.jobs.training import train_on_cluster

            t = c.model.train
            tm = train_on_cluster(  # one task on one worker (a GPU worker under gpu_resources)
                self.paths.cube,
                client=self.client,
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
            return {"model_checksum": tm.checksum, "model_season": c.season.name}

        return (
            fp,
            run,
            [expected.path(storage.join(self.paths.model, f)) for f in (schema.MODEL_MARKER, schema.WEIGHTS_FILE)],
        )

    @property
    def model_dir(self) -> storage.Location:
        return storage.location(self.cfg.model.checkpoint) if self.cfg.model.checkpoint else self.paths.model

    # align ----------------------------------------------------------------
    def _needs_alignment(self) -> bool:
        from slamgeo.io.cube import open_cube
        from slamgeo.method.checkpoint import load_model

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
            from slamgeo.io.cube import open_cube, write_cube
            from slamgeo.jobs.season import resample_cube
            from slamgeo.method.checkpoint import load_model

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

        # the resampled cube, when the run recorded as done wrote one
        aligned = self.state_steps.get("align", {}).get("info", {}).get("aligned")
        return fp, run, [expected.store(self.paths.aligned, all_listed=True)] if aligned else []

    @property
    def explain_input(self) -> storage.Location:
        return self.paths.aligned if _ready(self.paths.aligned) else self.paths.cube

    # explain ----------------------------------------------------------------
    def step_explain(self):
        c = self.cfg
        fp = fingerprint({"gradslam": c.gradslam.model_dump(), "align": self.fp["align"], "train": self.fp["train"]})
        # A store of an unfinished run of this same step is resumed. One of other options or
        # inputs (another fingerprint), of a run recorded as done (its outputs are incomplete,
        # or a step before was redone), or of an unknown run under a redone step is replaced.
        previous = dict(self.state_steps.get("explain", {}))  # read now: the loop records "running"
        after_redone = self.redone is not None  # a step before this one runs in this run

        def run() -> dict:
            from slamgeo.jobs.explain import ExplainOptions, explain_store

            g = c.gradslam
            opts = ExplainOptions(
                layers=tuple(g.layers) if g.layers else None,
                scale=g.scale or schema.GRADSLAM_SCALE,
                batch_size=g.batch_size,
                importance_dtype=g.importance_dtype,
            )
            overwrite = (
                self.force
                or after_redone
                or previous.get("fingerprint") not in (None, fp)
                or previous.get("status") == "done"
            )
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

        return fp, run, [expected.store(self.paths.results, (*schema.EXPLAIN_VARIABLES, schema.BLOCK_DONE))]

    # cluster ----------------------------------------------------------------
    def step_cluster(self):
        c = self.cfg
        fp = fingerprint({"kmeans": c.kmeans.model_dump(), "explain": self.fp["explain"]})

        def run() -> dict:
            from slamgeo.jobs.cluster import cluster_store

            # the clustering is replaced inside the store: only in slamgeo's own, holding nothing else
            storage.claim_output(self.paths.results, storage.RESULTS, overwrite=True)
            fit = cluster_store(
                self.paths.results, c.kmeans.k, overwrite=True, sample_size=c.kmeans.sample_size, seed=c.kmeans.seed
            )
            return {"k": c.kmeans.k, "inertia": float(fit.inertia), "n_iter": int(fit.n_iter)}

        return fp, run, [expected.store(self.paths.results, schema.CLUSTER_VARIABLES)]

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

        from slamgeo.jobs.parcels import PARCELS_OUTPUTS

        return fp, run, [expected.path(storage.join(self.paths.parcels, f)) for f in PARCELS_OUTPUTS.values()]

    # drift ----------------------------------------------------------------
    def step_drift(self):
        """The season against its model's training season (`slamgeo.pipeline.drift`); nothing
        to compare when the model is the season's own or comes from elsewhere."""
        from slamgeo.pipeline.drift import measure_drift
        from slamgeo.pipeline.seasons import model_season

        c = self.cfg
        found = model_season(c)
        against = found if found not in (None, c.season.name) else None
        ref_state = _read_state(storage.join(storage.location(c.output), against, schema.STATE_FILE)) if against else {}
        ref_fp = ref_state.get("steps", {}).get("explain", {}).get("fingerprint")
        fp = fingerprint({"drift": against, "reference": ref_fp, "parcels": self.fp["parcels"]})

        def run() -> dict:
            if against is None:
                return {"reference_season": None}
            doc = measure_drift(c, self.paths.root, against)
            why = f": {'; '.join(doc['reasons'])}" if doc["reasons"] else ""
            _say(f"  drift: {doc['verdict']} (against season {against}){why}", self.quiet)
            return {"reference_season": against, "verdict": doc["verdict"], "reasons": doc["reasons"]}

        return fp, run, [expected.path(storage.join(self.paths.root, schema.DRIFT_FILE))] if against else []

    # report ----------------------------------------------------------------
    def step_report(self):
        c = self.cfg
        fp = fingerprint({"report": c.report.model_dump(), "parcels": self.fp["parcels"]})

        def run() -> dict:
            from slamgeo.io.cube import open_cube
            from slamgeo.jobs.explain import open_results
            from slamgeo.jobs.faithfulness import start_faithfulness
            from slamgeo.method.checkpoint import load_model
            from slamgeo.pipeline.drift import read_drift
            from slamgeo.pipeline.seasons import report_title
            from slamgeo.reporting.page import make_report

            # both are replaced (the report) or written into (pairs into the results store) only
            # when they are slamgeo's own, holding nothing else: refused before the work
            inputs = [self.paths.results, self.explain_input, self.paths.parcels]
            storage.claim_output(self.paths.report, storage.REPORT, overwrite=True, inputs=inputs)
            storage.claim_output(self.paths.results, storage.RESULTS, overwrite=True)
            results = open_results(self.paths.results)
            cube = open_cube(str(self.explain_input))
            drift = read_drift(self.paths.root)  # the season against its model's: a section
            ref = storage.join(storage.parent(self.paths.root), str(drift and drift["reference_season"]))
            faith_curves = start_faithfulness(results, cube, load_model(self.model_dir))  # beside the pairs
            parcels_ready = _ready(storage.join(self.paths.parcels, schema.PARCELS_MARKER))
            pairs = self._pairs(labelled=parcels_ready)
            faith = faith_curves()
            if pairs:
                results = open_results(self.paths.results)
            html = make_report(
                results,
                self.paths.report,
                cube=cube,
                parcels_dir=self.paths.parcels if parcels_ready else None,
                class_groups=c.report.class_groups,
                date=c.report.date,
                faithfulness=faith,
                title=report_title(c),  # names the season of a reused model
                pair_truth=self._scene_windows() if pairs else None,
                overwrite=True,
                inputs=inputs,
                drift=drift,
                reference_parcels_dir=None if drift is None else storage.join(ref, schema.PARCELS_DIR),
            )
            return {
                "html": str(html),
                "figures": [str(p) for p in storage.glob(self.paths.report, "*.png")],
                "pairs": pairs,
            }

        made = [expected.path(storage.join(self.paths.report, f)) for f in (schema.REPORT_MARKER, "report.json")]
        info = self.state_steps.get("report", {}).get("info", {})  # of the run recorded as done
        made += [expected.path(storage.join(self.paths.report, storage.name(f))) for f in info.get("figures", [])]
        if info.get("pairs"):
            made.append(expected.store(self.paths.results, PAIR_VARIABLES))
        return fp, run, made

    def _pairs(self, *, labelled: bool) -> list[list[str]]:
        """Contrastive importance of the most confused class pairs and of the configured ones
        (without labelled parcels: of the nearest k-Means centres), written into the results
        store (`slamgeo.jobs.pairs.pairs_store`); returns the pairs."""
        from slamgeo.jobs.pairs import pairs_store

        c = self.cfg
        path = self._parcels_file()
        labelled = labelled and path is not None
        done = pairs_store(
            self.paths.results,
            self.paths.parcels if labelled else None,
            cube=self.explain_input,
            model=self.model_dir,
            pairs=c.report.pairs if labelled else None,
            confused=c.report.confused_pairs,
            polygons=path,
            id_column=c.parcels.id_column,
            class_column=c.parcels.class_column,
            all_touched=c.parcels.all_touched,
        )
        return [list(p) for p in done]

    def _scene_windows(self) -> dict | None:
        """A synthetic scene's known distinctive windows (class -> (start, end)), else None."""
        if self.cfg.input.kind != "synthetic":
            return None
        from slamgeo.io.scene import read_scene_meta

        try:
            meta = read_scene_meta(self.paths.scene)  # checked against its schema
        except FileNotFoundError:
            return None
        return {c: list(w) for c, w in meta.distinctive_windows.items()}

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

    def _why_run(self, rec: dict, fp: str, outputs: list[expected.Output], *, dry_run: bool) -> str | None:
        """Why a step must run (a phrase; "" for a step never run here), None when it is up to
        date: recorded as done with fingerprint `fp`, after no redone step, and its `outputs`
        all there and complete."""
        if self.force:
            return "forced"
        status = rec.get("status")
        if status is None:
            return ""
        if status != "done":
            return _LAST_RUN.get(status, f"its last run ended {status}")
        if rec.get("fingerprint") != fp:
            return "its configuration or inputs changed"
        if self.redone is not None:
            return f"{self.redone} {'would run' if dry_run else 'was redone'} before it"
        return expected.missing(outputs, root=self.paths.root)

    def _run_steps(self, results: list[StepResult], *, dry_run: bool) -> list[StepResult]:
        self.redone = None
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
            why = self._why_run(rec, fp, outputs, dry_run=dry_run)
            up_to_date = why is None
            if not up_to_date and self.redone is None:
                self.redone = name  # every step after it is redone too
            if dry_run:
                results.append(StepResult(name, "would skip" if up_to_date else "would run", fingerprint=fp))
                _say(f"[{name}] {'up to date' if up_to_date else 'would run' + _because(why)} ({fp})", self.quiet)
                continue
            if up_to_date:
                results.append(StepResult(name, "skipped", fingerprint=fp, info=rec.get("info", {})))
                _say(f"[{name}] up to date, skipped", self.quiet)
                if name == "ingest":
                    self._check_labels()
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
            _say(f"[{name}] running{_because(why)}", self.quiet)
            try:  # the run's client is every step's scheduler, also when it is not the default one
                with dask.config.set(scheduler=self.client) if self.client is not None else contextlib.nullcontext():
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
            if name == "ingest":
                self._check_labels()
        return results

    def _check_labels(self) -> None:
        """The report's class names against a table input's labels, once its cube is there and
        before training (`ConfigError`, which stops the run)."""
        from slamgeo.pipeline.checks import check_cube_classes

        check_cube_classes(self.cfg, self.paths.cube)


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
    skipped, explain resumes its blocks.

    `model.reuse: latest` takes the newest model trained by another season under the same
    output (`slamgeo.pipeline.seasons`), else the season trains. A run (not a dry run) holds
    the season's lock (`slamgeo.pipeline.lock`) from the first write to the manifest: a second
    run of the same season at the same time stops with `SeasonLocked`."""
    from slamgeo.pipeline.checks import check_inputs
    from slamgeo.pipeline.lock import season_lock
    from slamgeo.pipeline.seasons import retrain_on_drift, with_reused_model

    cfg, reused = with_reused_model(cfg)
    if reused is not None:
        _say(f"[train] reusing the model of season {reused.season} ({reused.checkpoint})", quiet)
    check_inputs(cfg)  # the configuration against its inputs, before anything is written
    paths = SeasonPaths(storage.join(storage.location(cfg.output), cfg.season.name))
    storage.makedirs(paths.root)
    with contextlib.ExitStack() as locked:
        if not dry_run:
            locked.enter_context(season_lock(paths.root, season=cfg.season.name))
        summary = _run_season(cfg, paths, force=force, dry_run=dry_run, client=client, quiet=quiet)
        own = None if dry_run or summary.failed else retrain_on_drift(cfg, reused, paths.root)
        if own is not None and reused is not None:  # `retrain: auto` and the season drifted
            _say(
                f"[drift] season {cfg.season.name} drifted from season {reused.season}: it trains its own model", quiet
            )
            summary = _run_season(own, paths, force=force, dry_run=False, client=client, quiet=quiet)
        return summary


def _run_season(
    cfg: PipelineConfig, paths: SeasonPaths, *, force: bool, dry_run: bool, client, quiet: bool
) -> RunSummary:
    """The run of `run_pipeline`, once the configuration is checked and the lock taken."""
    from slamgeo.jobs.runtime import ClusterOptions, dask_client
    from slamgeo.pipeline.seasons import model_season

    started = dt.datetime.now(dt.UTC)
    opts = ClusterOptions(**cfg.dask.model_dump())  # the same names
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
            manifest_json(  # checked against its schema, `slamgeo.pipeline.state.RunManifest`
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
                    "model_season": model_season(cfg),
                },
            ),
        )
    if interrupt is not None:
        if manifest is not None:
            _say(f"manifest: {manifest}; run again to resume", quiet)
        raise interrupt
    return RunSummary(paths.root, steps, manifest)


__all__ = ["STEPS", "RunSummary", "SeasonPaths", "StepResult", "run_pipeline"]
