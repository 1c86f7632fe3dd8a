# Every target sets itself up with pip in a local virtual environment; nothing is installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Installs are redone only when pyproject.toml changes.
STAMP := $(VENV)/.installed-all

.PHONY: test lint typecheck check serve clean

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[train,serve,dev]'
	touch $@

# Serving needs only the serve extra (no torch), in its own environment.
SERVE_VENV := .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed-serve

serve: $(SERVE_STAMP)
	@if [ -x $(SERVE_VENV)/bin/scene-serve ]; then \
		$(SERVE_VENV)/bin/scene-serve --model models/default/model.onnx --host 127.0.0.1 --port 8000; \
	else \
		echo "make serve: the inference service (scene-serve) is not built yet; see the README's status." >&2; \
		exit 1; \
	fi

$(SERVE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install --quiet --upgrade pip
	$(SERVE_VENV)/bin/pip install --quiet -e '.[serve]'
	touch $@

clean:
	rm -rf $(VENV) $(SERVE_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
