"""The season's records: `pipeline_state.json` and the run manifests `manifests/run-*.json`.

Their shapes are defined here once (`PipelineState`, `RunManifest`): the pipeline validates
each before writing it (`state_json`, `manifest_json`) and after reading it back
(`read_state`, `read_manifest`). A state file that is not JSON, or JSON of another shape, is
refused with one line naming the file and the field (`InputError`) before any step runs.
"""

from __future__ import annotations

from typing import Any

from slamgeo.io import storage
from slamgeo.io.records import Record, check_record, load_json, record_json

# the season pipeline, in order
STEPS = ("ingest", "train", "align", "explain", "cluster", "parcels", "drift", "report")

STATE_ADVICE = "; remove it to run every step again"


class StepRecord(Record):
    """One step in the state file: its last status ("running", "done", "failed",
    "interrupted"), the fingerprint it ran with, and when and how long."""

    status: str
    fingerprint: str = ""
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    info: dict[str, Any] = {}
    error: str | None = None


class PipelineState(Record):
    """`pipeline_state.json`: the steps by name."""

    steps: dict[str, StepRecord] = {}


class ManifestStep(Record):
    """One step of a run as its manifest records it."""

    name: str
    status: str
    seconds: float
    fingerprint: str
    info: dict[str, Any]
    error: str | None


class RunManifest(Record):
    """`manifests/run-<start>.json`: when, the versions, the configuration, each step, the
    report's figures and the tally of statuses; `model_season`: the season whose model the
    run used (None: a checkpoint from elsewhere, or a manifest written before the field)."""

    started: str
    finished: str
    versions: dict[str, str]
    configuration: dict[str, Any]
    steps: list[ManifestStep]
    figures: list[str]
    tally: dict[str, int]
    model_season: str | None = None


def read_state(path: storage.Location) -> dict:
    """The state file at `path` as a dict (`{"steps": {}}` when there is none), checked
    against `PipelineState`; raises `InputError` naming the file and the field."""
    try:
        text = storage.read_bytes(path)
    except FileNotFoundError:
        return {"steps": {}}
    what = f"{path}: the pipeline state file"
    state = load_json(text, what, advice=STATE_ADVICE)
    check_record(state, PipelineState, what, advice=STATE_ADVICE)
    state.setdefault("steps", {})
    return state


def state_json(state: dict) -> str:
    """The state as the JSON text to write, checked against `PipelineState`."""
    return record_json(state, PipelineState)


def manifest_json(manifest: dict) -> str:
    """A run's manifest as the JSON text to write, checked against `RunManifest`."""
    return record_json(manifest, RunManifest)


def read_manifest(path: storage.Location) -> RunManifest:
    """A run manifest, checked against `RunManifest`; raises `InputError` naming the file and
    the field (FileNotFoundError when there is none)."""
    data = load_json(storage.read_bytes(path), path)
    return check_record(data, RunManifest, path)


__all__ = [
    "ManifestStep",
    "PipelineState",
    "RunManifest",
    "StepRecord",
    "manifest_json",
    "read_manifest",
    "read_state",
    "state_json",
]
