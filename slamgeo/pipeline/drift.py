"""A season against the season its model was trained on: `<output>/<season>/drift.json`.

The pipeline's drift step (after parcels) compares the season's results with the results of
the model's training season under the same output root (`slamgeo.jobs.drift.season_drift`),
each season's pixels labelled by its own parcels (the file its configuration named, from its
newest manifest), and writes the verdict. `read_drift` reads it back for the report,
`slamgeo seasons` and the `retrain: auto` decision.

drift.json: `{"reference_season", "season", "verdict": "keep" | "retrain", "reasons": [...],
"measures": {...}, "dates": [...], "thresholds": {...}, "n_valid": {...}}`.
"""

from __future__ import annotations

import json
from typing import Any

from slamgeo import schema
from slamgeo.errors import InputError, SlamgeoError
from slamgeo.io import storage
from slamgeo.io.records import load_json
from slamgeo.pipeline.config import PipelineConfig
from slamgeo.pipeline.state import read_manifest


def season_parcels(folder: storage.Location) -> dict[str, Any] | None:
    """The parcels a season used: `{"path", "id_column", "class_column", "all_touched"}` from
    its newest run manifest's configuration (a synthetic scene's own parcels when the
    configuration names none); None when the season has no manifest or no parcels."""
    manifests = storage.glob(storage.join(folder, schema.MANIFESTS_DIR), "run-*.json")
    if not manifests:
        return None
    cfg = read_manifest(manifests[-1]).configuration  # the names sort by start time
    parcels = dict(cfg.get("parcels") or {})
    path = parcels.get("path")
    if not path and (cfg.get("input") or {}).get("kind") == "synthetic":
        path = str(storage.join(folder, schema.SCENE_DIR, "parcels.gpkg"))
    if not path or not storage.exists(path):
        return None
    return {
        "path": path,
        "id_column": parcels.get("id_column", schema.ID_COLUMN),
        "class_column": parcels.get("class_column", schema.CLASS_COLUMN),
        "all_touched": bool(parcels.get("all_touched", False)),
    }


def _labels(results, parcels: dict[str, Any] | None):
    """(class codes on `results`' grid, class names) from `parcels`, or None."""
    if parcels is None or "y" not in results.dims:
        return None
    import geopandas as gpd

    from slamgeo.jobs.pairs import parcel_class_codes

    polygons = gpd.read_file(str(parcels["path"]))
    return parcel_class_codes(
        polygons,
        results,
        id_column=parcels["id_column"],
        class_column=parcels["class_column"],
        all_touched=parcels["all_touched"],
    )


def measure_drift(cfg: PipelineConfig, season_folder: storage.Location, reference: str) -> dict[str, Any]:
    """Compare the season at `season_folder` (configuration `cfg`, explained) with the season
    `reference` under the same output root (the model's training season); write and return
    drift.json's content. `InputError` when the reference season's results are not there."""
    from slamgeo.jobs.drift import season_drift, shared_class_codes
    from slamgeo.jobs.explain import open_results

    root = storage.location(cfg.output)
    ref_folder = storage.join(root, reference)
    ref_store = storage.join(ref_folder, schema.RESULTS_STORE)
    if not storage.exists(ref_store):
        raise InputError(
            f"{ref_store}: the results of season {reference}, whose model this season uses, are not there; "
            "the drift is measured against them (run that season, or set model.retrain: always)"
        )
    ref_results = open_results(ref_store)
    results = open_results(storage.join(season_folder, schema.RESULTS_STORE))
    ref_labels = _labels(ref_results, season_parcels(ref_folder))
    path = cfg.parcels.path or str(storage.join(season_folder, schema.SCENE_DIR, "parcels.gpkg"))
    own = {"path": path, **cfg.parcels.model_dump(include={"id_column", "class_column", "all_touched"})}
    labels = _labels(results, own if storage.exists(path) else None)
    kw: dict[str, Any] = {}
    if ref_labels is not None and labels is not None:
        a, b, names = shared_class_codes(ref_labels, labels)
        kw = {"reference_labels": a, "season_labels": b, "class_names": names}
    out = season_drift(ref_results, results, seed=cfg.kmeans.seed, **kw)
    doc = {"reference_season": reference, "season": cfg.season.name, **out}
    storage.write_text(storage.join(season_folder, schema.DRIFT_FILE), json.dumps(doc, indent=1))
    return doc


def read_drift(folder: storage.Location) -> dict[str, Any] | None:
    """The season's drift.json, or None when there is none or it cannot be read."""
    path = storage.join(folder, schema.DRIFT_FILE)
    try:
        doc = load_json(storage.read_bytes(path), path)
    except (FileNotFoundError, SlamgeoError):
        return None
    return doc if isinstance(doc, dict) and doc.get("verdict") in schema.DRIFT_VERDICTS else None


__all__ = ["measure_drift", "read_drift", "season_parcels"]
