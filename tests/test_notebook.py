"""docs/quickstart.ipynb runs from top to bottom in a fresh kernel of this environment: no cell
fails, the metrics cell prints an overall accuracy, the two figure cells show PNG images and
the report cell's index.html exists. The notebook runs from a temporary copy, so the file in
docs/ keeps no outputs."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "quickstart.ipynb"
CELL_TIMEOUT_S = 300

# prepended to the copy: where the kernel's Python lives
_WHICH_PYTHON = "import sys\nprint(sys.executable)\nprint(sys.prefix)"


def _stdout(cell) -> str:
    return "".join(
        o.get("text", "")
        for o in cell.get("outputs", [])
        if o.get("output_type") == "stream" and o.get("name") == "stdout"
    )


def _tagged(nb, tag: str) -> list:
    return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]


def test_the_repository_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    assert all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    copy = tmp_path / NOTEBOOK.name
    shutil.copyfile(NOTEBOOK, copy)
    nb = nbformat.read(copy, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(_WHICH_PYTHON, id="which-python"))

    # the notebook's temporary scene folder and the workers' spill space go under tmp_path
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        startup_timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / "quickstart.executed.ipynb")  # for a look after a failure

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, [f"{e.ename}: {e.evalue}" for e in errors]

    executable, prefix = _stdout(nb.cells[0]).split()
    assert executable == sys.executable
    assert Path(prefix).resolve() == Path(sys.prefix).resolve()

    (metrics,) = _tagged(nb, "metrics")
    assert re.search(r"overall accuracy: [01]\.\d{3}", _stdout(metrics)), _stdout(metrics)

    figures = _tagged(nb, "figure")
    assert len(figures) == 2
    for cell in figures:
        assert any("image/png" in o.get("data", {}) for o in cell.outputs), cell.source

    (report,) = _tagged(nb, "report")
    index = Path(_stdout(report).strip().splitlines()[-1])
    assert index.name == "index.html" and index.is_file(), _stdout(report)
    assert index.is_relative_to(tmp_path)
