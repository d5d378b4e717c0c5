# The two commands of the README: `make run` (main job on the embedded default) and
# `make test`. Both create or reuse .venv and install the project with the pinned versions
# of constraints.txt; pyproject.toml keeps open ranges for users.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.slamgeo-installed
OUT    ?= demo-output

.PHONY: run test install clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/slamgeo demo $(OUT)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest

clean-demo:
	rm -rf $(OUT)
