"""The six stages on the package face, in one process, and their store twins giving the same
data; the layers: nothing below the command line imports it, prints, or starts a Dask client."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import ROOT

import slamgeo

pytestmark = pytest.mark.timeout(600)

STAGES = "load train explain cluster parcels report pairs faithfulness".split()
TWINS = "ingest explain_store cluster_store parcels_store pairs_store".split()

ONE_PROCESS = """
import json, slamgeo
from slamgeo.synth import make_scene, write_scene
write_scene(make_scene(size=48, n_dates=16, seed=0), "scene")
cube = slamgeo.load(["scene"], chunk=24)
model = slamgeo.train(cube, sample_size=1500, max_epochs=2, progress=False)
res = slamgeo.cluster(slamgeo.explain(cube, model).persist(), k=5)
par = slamgeo.parcels(res, cube, "scene/parcels.gpkg", test_fraction=0.0)
page = slamgeo.report(res, par, "report", cube=cube, model=model)
print(json.dumps({"page": str(page), "vars": sorted(map(str, res.data_vars)), "oa": par.metrics["pixels"]["overall_accuracy"],
                  "parcels": len(par.table)}))
"""


def test_the_six_stages_run_in_one_python_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", ONE_PROCESS], cwd=tmp_path, capture_output=True, text=True, timeout=500
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"embedding", "importance", "recon_error", "cluster", "cluster_centre", "cluster_size"} <= set(out["vars"])
    assert 0.0 <= out["oa"] <= 1.0 and out["parcels"] > 0
    page = tmp_path / out["page"]
    assert page.is_file() and "<img" in page.read_text()
    assert not (tmp_path / "report" / "notes.txt").exists()
    # with the model, the page holds the class pairs and the deletion curves, as the pipeline's
    drawn = {f["key"] for f in json.loads((tmp_path / "report" / "report.json").read_text())["figures"] if f["file"]}
    assert "faithfulness_deletion" in drawn and any(k.startswith("pair_") for k in drawn), drawn


def test_the_package_face_names_every_stage_and_twin():
    for name in STAGES + TWINS:
        assert callable(getattr(slamgeo, name)), name
        assert name in dir(slamgeo) and name in slamgeo.__all__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        slamgeo.nope  # noqa: B018


def test_importing_slamgeo_loads_no_heavy_library():
    code = (
        "import sys, slamgeo; print(json.dumps(sorted(m for m in ('torch', 'dask', 'matplotlib') if m in sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _calls(path: Path) -> set[str]:
    return {
        node.func.id if isinstance(node.func, ast.Name) else node.func.attr
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute))
    }


LIBRARY = [
    p
    for sub in ("io", "synth", "method", "jobs", "reporting", "pipeline")
    for p in (ROOT / "slamgeo" / sub).rglob("*.py")
]


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT / "slamgeo")))
def test_nothing_below_the_command_line_imports_it(path):
    assert not {m for m in _imports(path) if m.startswith("slamgeo.cli") or m in ("typer", "click")}


@pytest.mark.parametrize(
    "path",
    [p for p in LIBRARY if p.parent.name != "pipeline" and p.name != "runtime.py"],
    ids=lambda p: str(p.relative_to(ROOT / "slamgeo")),
)
def test_library_modules_neither_print_nor_start_a_dask_client(path):
    """The stages use the caller's client (or the pipeline's, from `jobs.runtime.dask_client`)
    and report through return values, warnings and progress bars."""
    assert not {"print", "dask_client", "LocalCluster", "Client"} & _calls(path)


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    """A small results store (explain_store on a trained model) and its cube and parcels."""
    from slamgeo.synth import make_scene, write_scene

    tmp = tmp_path_factory.mktemp("stages")
    write_scene(make_scene(size=48, n_dates=16, seed=1), tmp / "scene")
    slamgeo.ingest([tmp / "scene"], tmp / "cube.zarr", chunk=24, progress=False)
    cube = xr.open_zarr(tmp / "cube.zarr", decode_coords="all")
    slamgeo.train(cube, out_dir=tmp / "model", sample_size=1500, max_epochs=2, progress=False)
    slamgeo.explain_store(tmp / "cube.zarr", tmp / "model", tmp / "results.zarr", progress=False)
    return tmp


def test_cluster_and_its_store_twin_give_the_same_clusters(explained):
    from slamgeo.io.cube import open_results

    in_memory = slamgeo.cluster(open_results(explained / "results.zarr"), k=4, seed=3)
    fit = slamgeo.cluster_store(explained / "results.zarr", 4, seed=3)
    stored = open_results(explained / "results.zarr")
    np.testing.assert_array_equal(in_memory["cluster"].values, stored["cluster"].values)
    np.testing.assert_allclose(in_memory["cluster_centre"].values, stored["cluster_centre"].values)
    assert fit.centres.shape == (4, 2)


def test_parcels_and_its_store_twin_give_the_same_tables(explained):
    from slamgeo.io.cube import open_cube, open_results

    if "cluster" not in open_results(explained / "results.zarr"):
        slamgeo.cluster_store(explained / "results.zarr", 4, seed=3)
    res, cube = open_results(explained / "results.zarr"), open_cube(explained / "cube.zarr")
    mem = slamgeo.parcels(res, cube, explained / "scene" / "parcels.gpkg", test_fraction=0.3, seed=1)
    out = explained / "parcels"
    stored = slamgeo.parcels_store(
        explained / "results.zarr",
        explained / "scene" / "parcels.gpkg",
        out,
        cube=explained / "cube.zarr",
        test_fraction=0.3,
        seed=1,
    )
    back = xr.open_zarr(out / "parcels.zarr")
    for name in ("importance", "VV", "n_pixels", "cluster"):
        np.testing.assert_allclose(mem.per_parcel[name].values, back[name].values, equal_nan=True)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pixels"] == mem.metrics["pixels"] == stored.metrics["pixels"]
    assert metrics["results_path"] == str(explained / "results.zarr")
    # the report draws the same confusion from the result as from the folder
    from slamgeo.jobs.parcels import read_parcels_outputs

    parts, missing = read_parcels_outputs(out)
    assert not missing
    for level in ("pixels", "parcels"):
        np.testing.assert_array_equal(parts[f"confusion_{level}"].to_numpy(), mem.confusion(level).to_numpy())


def test_the_report_in_a_notebook_is_the_pipelines_page(explained, tmp_path):
    """`slamgeo.report(..., model=...)` after the in-memory parcels stage draws the figures the
    season pipeline's report step draws from the stores (the faithfulness stage, `pairs_store`,
    then `make_report` on the parcels folder): the same report.json, captions included."""
    import shutil

    from slamgeo.io.cube import open_cube, open_results
    from slamgeo.method.checkpoint import load_model
    from slamgeo.reporting.page import make_report

    store = tmp_path / "results.zarr"
    shutil.copytree(explained / "results.zarr", store)
    if "cluster" not in open_results(store):
        slamgeo.cluster_store(store, 4, seed=3)
    gpkg, cube, model = (
        explained / "scene" / "parcels.gpkg",
        open_cube(explained / "cube.zarr"),
        load_model(explained / "model"),
    )
    pairs = [("wheat", "maize")]

    # in a notebook
    res = open_results(store)
    par = slamgeo.parcels(res, cube, gpkg, test_fraction=0.0)
    slamgeo.report(res, par, tmp_path / "notebook", cube=cube, model=model, pairs=pairs, title="season")

    # as the pipeline's report step does
    slamgeo.parcels_store(store, gpkg, tmp_path / "parcels", cube=explained / "cube.zarr", test_fraction=0.0)
    curves = slamgeo.faithfulness(open_results(store), cube, model)
    done = slamgeo.pairs_store(
        store, tmp_path / "parcels", cube=explained / "cube.zarr", model=explained / "model", pairs=pairs, polygons=gpkg
    )
    assert done and done[-1] == pairs[0]
    make_report(
        open_results(store),
        tmp_path / "pipeline",
        cube=cube,
        parcels_dir=tmp_path / "parcels",
        faithfulness=curves,
        title="season",
    )

    def figures(folder):
        return json.loads((folder / "report.json").read_text())["figures"]

    assert figures(tmp_path / "notebook") == figures(tmp_path / "pipeline")
    drawn = [f["key"] for f in figures(tmp_path / "pipeline") if f["file"]]
    assert "faithfulness_deletion" in drawn and "pair_wheat_maize" in drawn, drawn
