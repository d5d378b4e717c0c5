"""The wheel: built from the sources, installed on its own, it carries the demo configuration
that `slamgeo demo` runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGED_DEMO = "slamgeo/pipeline/demo.yaml"

# Run in the fresh environment: where slamgeo and the demo configuration come from.
LOOKUP = """
import slamgeo
from slamgeo.cli.demo import demo_config
from slamgeo.pipeline.config import load_config
with demo_config() as path:
    cfg = load_config(path)
    print(slamgeo.__file__)
    print(path)
    print(cfg.season.name, cfg.input.kind)
"""


def test_the_repository_demo_configuration_is_the_packaged_one():
    assert (ROOT / "pipelines" / "demo.yaml").read_bytes() == (ROOT / PACKAGED_DEMO).read_bytes()


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args[:4]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_the_installed_wheel_runs_the_demo_command_with_its_own_configuration(tmp_path):
    """Build the wheel from a copy of the sources, install it (no dependencies) into a fresh
    virtual environment that reads its dependencies from this interpreter's site-packages (a
    `.pth` path: the editable install's own `.pth` files there are not run), and check from a
    folder outside the repository that slamgeo, `slamgeo demo --help` and the demo
    configuration all come from the installed wheel."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    src = tmp_path / "src"  # the build's scratch files stay out of the working tree
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "slamgeo", src / "slamgeo", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp_path / "wheels"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            str(src),
            "-w",
            str(wheels),
        ],
        cwd=tmp_path,
        env=env,
    )
    (wheel,) = wheels.glob("slamgeo-*.whl")
    assert PACKAGED_DEMO in zipfile.ZipFile(wheel).namelist()

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path, env=env
        ).strip()
    )
    (site / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)],
        cwd=tmp_path,
        env=env,
    )

    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    out = _run([str(venv / "bin" / "slamgeo"), "demo", "--help"], cwd=run_dir, env=env)
    assert "Usage" in out and "demo" in out
    module, config, summary = _run([str(python), "-c", LOOKUP], cwd=run_dir, env=env).strip().splitlines()[-3:]
    site = site.resolve()
    assert Path(module).resolve().is_relative_to(site / "slamgeo"), module
    assert Path(config).resolve() == site / PACKAGED_DEMO, config
    assert Path(config).read_bytes() == (ROOT / PACKAGED_DEMO).read_bytes()
    assert summary == "2017 synthetic"
