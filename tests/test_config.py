"""The season pipeline's configuration: the `dask:` section, and one default per setting shared
by the configuration, the Python functions and the command line (`slamgeo.schema`)."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml

from slamgeo import schema
from slamgeo.errors import ConfigError
from slamgeo.pipeline.config import PipelineConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = {"season": {"name": "2017"}, "output": "/tmp/out"}


def _cli_defaults(command: str) -> dict:
    from slamgeo.cli import app

    return {p.name: p.default for p in typer.main.get_command(app).commands[command].params}


def _defaults(fn) -> dict:
    return {
        k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty
    }


# --------------------------------------------------------------------------- dask:


def test_the_old_cluster_key_is_refused_naming_dask():
    with pytest.raises(ConfigError, match=r"cluster: renamed to dask: \(the Dask scheduler and workers"):
        parse_config(dict(MINIMAL, cluster={"n_workers": 2}))


def test_the_old_cluster_key_is_refused_in_a_yaml_file(tmp_path):
    p = tmp_path / "season.yaml"
    p.write_text(yaml.safe_dump(dict(MINIMAL, cluster={"scheduler": "tcp://127.0.0.1:8786"})))
    with pytest.raises(ConfigError, match=rf"{p.name}: cluster: renamed to dask:"):
        load_config(p)


def test_the_dask_section_sets_the_cluster():
    cfg = parse_config(
        dict(MINIMAL, dask={"scheduler": "tcp://127.0.0.1:8786", "n_workers": 3, "threads_per_worker": 2})
    )
    assert (cfg.dask.scheduler, cfg.dask.n_workers, cfg.dask.threads_per_worker) == ("tcp://127.0.0.1:8786", 3, 2)
    with pytest.raises(ConfigError, match=r"dask\.workers: unknown key"):
        parse_config(dict(MINIMAL, dask={"workers": 2}))


def test_kmeans_is_the_k_means_section():
    cfg = parse_config(dict(MINIMAL, kmeans={"k": 5, "sample_size": 500}))
    assert (cfg.kmeans.k, cfg.kmeans.sample_size) == (5, 500)
    assert cfg.dask.scheduler is None and cfg.dask.n_workers is None


# --------------------------------------------------------------------------- one default each


def test_configuration_defaults_are_the_schema_defaults():
    cfg = PipelineConfig.model_validate(MINIMAL)
    t, g, k = cfg.model.train, cfg.gradslam, cfg.kmeans
    assert cfg.chunk == schema.CHUNK == 512
    assert (t.sample_size, t.max_epochs) == (schema.TRAIN_SAMPLE_SIZE, schema.TRAIN_MAX_EPOCHS) == (100_000, 30)
    assert (t.patience, t.val_fraction, t.batch_size, t.lr) == (
        schema.TRAIN_PATIENCE,
        schema.TRAIN_VAL_FRACTION,
        schema.TRAIN_BATCH_SIZE,
        schema.TRAIN_LR,
    )
    assert (k.k, k.sample_size) == (schema.KMEANS_K, schema.KMEANS_SAMPLE_SIZE)
    assert (g.batch_size, g.max_gap_days) == (schema.EXPLAIN_BATCH_SIZE, schema.MAX_GAP_DAYS)


def test_library_defaults_are_the_schema_defaults():
    from slamgeo.io.cube import chunk_cube
    from slamgeo.io.ingest import ingest, load
    from slamgeo.jobs.cluster import KMEANS_DEFAULTS, cluster, cluster_store, fit_kmeans
    from slamgeo.jobs.explain import ExplainOptions
    from slamgeo.method.gradslam import grad_slam
    from slamgeo.method.train import train

    for fn in (ingest, load, chunk_cube):
        assert _defaults(fn)["chunk"] == schema.CHUNK, fn.__name__
    tr = _defaults(train)
    assert (tr["sample_size"], tr["max_epochs"], tr["patience"], tr["val_fraction"], tr["batch_size"], tr["lr"]) == (
        schema.TRAIN_SAMPLE_SIZE,
        schema.TRAIN_MAX_EPOCHS,
        schema.TRAIN_PATIENCE,
        schema.TRAIN_VAL_FRACTION,
        schema.TRAIN_BATCH_SIZE,
        schema.TRAIN_LR,
    )
    d = _defaults(fit_kmeans)
    expected = (schema.KMEANS_K, schema.KMEANS_SAMPLE_SIZE, schema.KMEANS_MAX_ITER, schema.KMEANS_TOL)
    assert (d["k"], d["sample_size"], d["max_iter"], d["tol"]) == expected
    # cluster takes the fit's options by keyword (KMeansOptions); unset ones are KMEANS_DEFAULTS
    assert {key: d[key] for key in KMEANS_DEFAULTS} == KMEANS_DEFAULTS
    assert _defaults(cluster)["k"] == schema.KMEANS_K
    assert _defaults(cluster_store)["k"] == schema.KMEANS_K
    opts = ExplainOptions()
    assert (opts.scale, opts.batch_size, opts.reference_size, opts.importance_dtype) == (
        schema.GRADSLAM_SCALE,
        schema.EXPLAIN_BATCH_SIZE,
        schema.REFERENCE_SIZE,
        schema.IMPORTANCE_DTYPE,
    )
    gs = _defaults(grad_slam)
    assert (gs["scale"], gs["batch_size"]) == (schema.GRADSLAM_SCALE, schema.GRADSLAM_BATCH_SIZE)


def test_parcel_and_cluster_defaults_are_the_schema_defaults():
    """The parcel table's columns, the vote, the held-out share and the wait for Dask workers:
    one default each, in the functions, the command line and the configuration."""
    from slamgeo.io.parcels import check_parcels, read_parcels
    from slamgeo.jobs.metrics import evaluate_parcels, split_parcels
    from slamgeo.jobs.pairs import parcel_class_codes
    from slamgeo.jobs.parcels import parcels
    from slamgeo.jobs.runtime import ClusterOptions

    columns = (schema.ID_COLUMN, schema.CLASS_COLUMN)
    for fn in (read_parcels, check_parcels, parcels, parcel_class_codes):
        d = _defaults(fn)
        assert (d["id_column"], d["class_column"]) == columns, fn.__name__
    assert _defaults(parcels)["vote"] == _defaults(evaluate_parcels)["vote"] == schema.VOTE
    for fn in (parcels, evaluate_parcels, split_parcels):
        assert _defaults(fn)["test_fraction"] == schema.TEST_FRACTION, fn.__name__
    cfg = PipelineConfig.model_validate(MINIMAL)
    p = cfg.parcels
    assert (p.id_column, p.class_column, p.vote, p.test_fraction) == (*columns, schema.VOTE, schema.TEST_FRACTION)
    assert cfg.gradslam.importance_dtype == schema.IMPORTANCE_DTYPE
    cli = _cli_defaults("parcels")
    assert (cli["id_column"], cli["class_column"], cli["vote"], cli["test_fraction"]) == (
        *columns,
        schema.VOTE,
        schema.TEST_FRACTION,
    )
    assert _cli_defaults("explain")["importance_dtype"] == schema.IMPORTANCE_DTYPE
    cl = _cli_defaults("cluster")
    assert (cl["max_iter"], cl["tol"]) == (schema.KMEANS_MAX_ITER, schema.KMEANS_TOL)
    waits = [_cli_defaults(c)["wait_for_workers"] for c in ("explain", "cluster", "parcels")]
    waits += [ClusterOptions().wait_for_workers, cfg.dask.wait_for_workers]
    assert waits == [schema.WAIT_FOR_WORKERS] * 5


def _renamed_names(path: Path) -> list[str]:
    """Module-level aliases in `path`: `A = B` or `A = schema.B` (a second name for one value),
    and `from slamgeo.schema import B as A`."""
    found = []
    for node in ast.parse(path.read_text()).body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        named = isinstance(value, ast.Name) or (
            isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name) and value.value.id == "schema"
        )
        if named and value is not None and targets and isinstance(targets[0], ast.Name) and targets[0].id.isupper():
            found.append(f"{targets[0].id} = {ast.unparse(value)}")
        if isinstance(node, ast.ImportFrom) and node.module == "slamgeo.schema":
            found += [f"{a.name} as {a.asname}" for a in node.names if a.asname and a.asname != a.name]
    return found


def test_no_module_gives_a_shared_name_a_second_name():
    """A name or a default of `slamgeo.schema` is used under its own name: no `DEFAULT_X = X`."""
    renamed = {
        str(p.relative_to(ROOT)): found
        for p in sorted((ROOT / "slamgeo").rglob("*.py"))
        if (found := _renamed_names(p))
    }
    assert renamed == {}


def test_command_line_defaults_are_the_schema_defaults():
    assert _cli_defaults("ingest")["chunk"] == schema.CHUNK
    tr = _cli_defaults("train")
    assert (tr["sample_size"], tr["epochs"], tr["patience"], tr["val_fraction"], tr["batch_size"], tr["lr"]) == (
        schema.TRAIN_SAMPLE_SIZE,
        schema.TRAIN_MAX_EPOCHS,
        schema.TRAIN_PATIENCE,
        schema.TRAIN_VAL_FRACTION,
        schema.TRAIN_BATCH_SIZE,
        schema.TRAIN_LR,
    )
    cl = _cli_defaults("cluster")
    assert (cl["k"], cl["sample_size"]) == (schema.KMEANS_K, schema.KMEANS_SAMPLE_SIZE)
    assert _cli_defaults("explain")["batch_size"] == schema.EXPLAIN_BATCH_SIZE


def test_help_shows_the_shared_defaults():
    env = dict(os.environ, COLUMNS="240", TERM="dumb", NO_COLOR="1")

    def help_line(command: str, option: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "slamgeo", command, "--help"], capture_output=True, text=True, env=env, check=True
        ).stdout
        return next(line for line in out.splitlines() if option in line)

    assert f"[default: {schema.TRAIN_SAMPLE_SIZE}]" in help_line("train", "--sample-size")
    assert f"[default: {schema.TRAIN_MAX_EPOCHS}]" in help_line("train", "--epochs")
    assert f"[default: {schema.CHUNK}]" in help_line("ingest", "--chunk")


def test_the_demo_sets_its_own_sizes():
    """The demo does not rely on the defaults: a change of a default does not change it."""
    for path in (ROOT / "pipelines" / "demo.yaml", ROOT / "slamgeo" / "pipeline" / "demo.yaml"):
        raw = yaml.safe_load(path.read_text())
        assert raw["chunk"] == 128
        assert (raw["model"]["train"]["sample_size"], raw["model"]["train"]["max_epochs"]) == (20000, 12)
        assert "cluster" not in raw


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_configuration_is_valid(path):
    cfg = load_config(path)
    assert cfg.chunk >= 16


# --------------------------------------------------------------------------- the module itself


def test_schema_imports_only_the_standard_library():
    tree = ast.parse((ROOT / "slamgeo" / "schema.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
    code = (
        "import sys, slamgeo.io.storage, slamgeo.schema; "
        "print(sorted(m for m in ('xarray', 'torch', 'matplotlib', 'numpy', 'pandas', 'zarr') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_storage_kinds_and_season_paths_use_the_schema_names():
    from slamgeo.io import storage
    from slamgeo.pipeline.steps import SeasonPaths

    assert (storage.CHECKPOINT.marker, storage.PARCELS.marker, storage.REPORT.marker, storage.SCENE.marker) == (
        schema.MODEL_MARKER,
        schema.PARCELS_MARKER,
        schema.REPORT_MARKER,
        schema.SCENE_MARKER,
    )
    assert storage.KIND_ATTR == schema.KIND_ATTR
    p = SeasonPaths(Path("/season"))
    assert [
        Path(x).name for x in (p.cube, p.aligned, p.model, p.results, p.parcels, p.report, p.state, p.manifests)
    ] == [
        "cube.zarr",
        "cube_model_dates.zarr",
        "model",
        "results.zarr",
        "parcels",
        "report",
        "pipeline_state.json",
        "manifests",
    ]


# --------------------------------------------------------------------------- report: pairs


def test_report_pairs_are_two_different_classes():
    cfg = parse_config(dict(MINIMAL, report={"pairs": [["cotton", "pepper"]], "confused_pairs": 2}))
    assert cfg.report.pairs == [("cotton", "pepper")] and cfg.report.confused_pairs == 2
    with pytest.raises(ConfigError, match=r"report\.pairs.*'cotton' paired with itself"):
        parse_config(dict(MINIMAL, report={"pairs": [["cotton", "cotton"]]}))
    with pytest.raises(ConfigError, match=r"report\.pairs"):
        parse_config(dict(MINIMAL, report={"pairs": [["cotton", "pepper", "maize"]]}))


def test_report_classes_need_labelled_parcels():
    """Class names in the report name classes of labelled parcels: a parcels file, or the
    synthetic scene's own; without either the configuration is refused when read."""
    tiffs = {"kind": "geotiff", "paths": ["tiffs/"]}
    for report in ({"pairs": [["cotton", "pepper"]]}, {"class_groups": {"alike": ["cotton", "pepper"]}}):
        key = next(iter(report))
        with pytest.raises(
            ConfigError,
            match=rf"^configuration: report\.{key} name classes of labelled parcels.*"
            r"set parcels\.path",
        ):
            parse_config(dict(MINIMAL, input=tiffs, report=report))
        parse_config(dict(MINIMAL, input=tiffs, report=report, parcels={"path": "fields.gpkg"}))
        parse_config(dict(MINIMAL, report=report))  # synthetic: the scene's parcels
        parse_config(dict(MINIMAL, input=tiffs, report={**report, "enabled": False}))
    # a table input carries its labels: class groups may name them, pairs need parcels
    table = {"kind": "table", "paths": ["lpis.parquet"]}
    parse_config(dict(MINIMAL, input=table, report={"class_groups": {"meadows": ["longterm_meadows"]}}))
    with pytest.raises(ConfigError, match=r"report\.pairs name classes of labelled parcels"):
        parse_config(dict(MINIMAL, input=table, report={"pairs": [["maize", "sunflower"]]}))


# --------------------------------------------------------------------------- season drift


def test_model_retrain_is_one_of_the_schema_modes():
    assert parse_config(MINIMAL).model.retrain == schema.RETRAIN == "auto"
    for mode in schema.RETRAIN_MODES:
        assert parse_config({**MINIMAL, "model": {"retrain": mode, "reuse": "latest"}}).model.retrain == mode
    with pytest.raises(ConfigError, match=r"model\.retrain: .*'auto', 'never' or 'always'"):
        parse_config({**MINIMAL, "model": {"retrain": "sometimes"}})


def test_synthetic_drift_options_are_checked_and_reach_make_scene():
    from slamgeo.synth import make_scene

    cfg = parse_config({**MINIMAL, "input": {"synthetic": {"calendar_shift_days": 45, "crop_mix": {"maize": 2}}}})
    options = cfg.input.synthetic.scene_options()
    assert options["calendar_shift_days"] == 45 and options["crop_mix"] == {"maize": 2.0}
    assert set(options) <= set(inspect.signature(make_scene).parameters)  # every option is make_scene's
    bad = [
        ({"calendar_shift_days": schema.CALENDAR_SHIFT_MAX_DAYS + 1}, r"calendar_shift_days: .*less than or equal"),
        ({"calendar_shift_days": 1.5}, r"calendar_shift_days: .*integer"),
        ({"crop_mix": {"rice": 1}}, r"crop_mix: unknown class 'rice'"),
        ({"crop_mix": {"maize": -1}}, r"crop_mix: the weight of 'maize'"),
    ]
    for synthetic, message in bad:
        with pytest.raises(ConfigError, match=rf"input\.synthetic\.{message}"):
            parse_config({**MINIMAL, "input": {"synthetic": synthetic}})


def test_a_scene_without_drift_dumps_as_before():
    """The ingest step fingerprints the input section's dump: without drift it holds no drift key,
    so the scenes of existing runs keep their fingerprints; with one it does."""
    plain = parse_config(MINIMAL).input.model_dump()["synthetic"]
    assert "calendar_shift_days" not in plain and "crop_mix" not in plain
    moved = parse_config({**MINIMAL, "input": {"synthetic": {"calendar_shift_days": -10}}}).input.model_dump()
    assert moved["synthetic"]["calendar_shift_days"] == -10 and "crop_mix" not in moved["synthetic"]
