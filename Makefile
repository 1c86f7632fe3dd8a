# Every target sets itself up with pip in a local virtual environment; nothing is installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Installs are redone only when pyproject.toml changes.
STAMP := $(VENV)/.installed-all

.PHONY: test lint typecheck check serve model clean system-deps

# Outside CI (CI=true), tools that cannot be installed (no root, no apt-get) do not stop
# the suite: the tests that need them are skipped, and pytest's summary lists them with
# the command that installs the tools. PYTEST_ARGS picks tests, e.g. PYTEST_ARGS=tests/service.
PYTEST_ARGS ?=
test: $(STAMP)
	@$(MAKE) --no-print-directory system-deps $(if $(filter true,$(CI)),,SYSTEM_DEPS_OPTIONAL=1)
	$(if $(filter true,$(CI)),,SCENE_ALLOW_MISSING_TOOLS=1) $(BIN)/python -m pytest $(PYTEST_ARGS)

# The Debian tools some tests drive (headless Chromium, Prometheus with promtool,
# docker-compose, the hey load generator), installed here in the open rather than
# from inside the tests.
# Nothing happens when they are present; installing needs root and apt-get, and
# without them (or when apt-get fails) this fails, unless SYSTEM_DEPS_OPTIONAL=1.
SYSTEM_TOOLS := chromium:chromium promtool:prometheus docker-compose:docker-compose hey:hey
system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
		command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -z "$$missing" ]; then echo "system-deps: chromium, promtool, docker-compose and hey are present"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "system-deps: installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing && exit 0; \
		why="apt-get install failed"; \
	else why="installing them needs root and apt-get"; fi; \
	if [ -n "$(SYSTEM_DEPS_OPTIONAL)" ]; then \
		echo "system-deps: Debian packages missing:$$missing ($$why); the tests that need them will be skipped"; \
	else echo "system-deps: Debian packages missing:$$missing ($$why); run \`sudo make system-deps\`" >&2; exit 1; fi

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
	$(BIN)/pip install --quiet -e '.[train,serve,optics,dev]'
	touch $@

# Serving needs only the serve extra (no torch), in its own environment, and only the
# packages the serving image holds: scene_contract/ and service/ are installed from a
# copy of their own, so training/ cannot be imported there (docs/architecture.md).
# Reinstalled when either package changes.
SERVE_VENV := .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed-serve
SERVE_SOURCES := $(shell find scene_contract service -type f -not -path '*/__pycache__/*')
# The file `make serve` serves (SERVE_MODEL=FILE serves another scene-export file).
SERVE_MODEL ?= models/default/model.onnx

serve: $(SERVE_STAMP)
	$(SERVE_VENV)/bin/scene-serve --model $(SERVE_MODEL) --host 127.0.0.1 --port 8000

$(SERVE_STAMP): pyproject.toml README.md $(SERVE_SOURCES)
	[ -x $(SERVE_VENV)/bin/pip ] || { $(PYTHON) -m venv $(SERVE_VENV) && $(SERVE_VENV)/bin/pip install --quiet --upgrade pip; }
	rm -rf build/serve-src && mkdir -p build/serve-src
	cp -r pyproject.toml README.md scene_contract service build/serve-src/
	$(SERVE_VENV)/bin/pip install --quiet --force-reinstall --no-deps ./build/serve-src
	$(SERVE_VENV)/bin/pip install --quiet './build/serve-src[serve]'
	touch $@

# The bundled model (version 8), by the exact commands that made it: six training
# stages and a calibration. Stage 1 (configs/street.yaml, version 3's recipe): ESPNetv2
# started from the published Cityscapes weights, fine-tuned on CamVid frames (semantics
# and geometric pseudo-depth) and procedural scenes, 800 steps of 320x320 crops at
# 640x320 (about 75 minutes on 2 CPU cores). Stage 2 (configs/street_finetune.yaml,
# version 4): 600 more steps with instance offsets in 16-px units and a stride-8
# instance decoder (about 40 minutes). Stage 3 (configs/street_stage3.yaml, version
# 5): 800 more steps with half of every batch procedural (about 55 minutes). Stage 4
# (configs/street_stage4.yaml): 600 more steps, five in eight procedural (about 43
# minutes). Stage 5 (configs/street_stage5.yaml): 700 more steps, six in eight
# procedural (about 44 minutes). Stage 6 (configs/street_stage6.yaml): 700 more steps,
# three in eight CamVid, half of them with another frame's poles pasted in (about 42
# minutes). Then scene-calibrate
# fits per-class offsets on the semantic logits on the CamVid training frames (about 6
# minutes). Training runs in resumable chunks of at most an hour: run `make model`
# again after an interruption and it goes on from the last checkpoint. Nothing is
# downloaded: CAMVID_ROOT, ESPNETV2_WEIGHTS and REALDEPTH_ROOT name the files
# (docs/training.md says where to get them and their sha256).
# OMP_WAIT_POLICY=PASSIVE keeps torch's threads from spinning when other work shares
# the cores (3-5x slower steps otherwise).
CAMVID_ROOT ?= ../shared/camvid
ESPNETV2_WEIGHTS ?= ../shared/pretrained/espnetv2/espnetv2_s_2.0_city_1024x512.pth
REALDEPTH_ROOT ?= ../shared/realdepth
STAGE1_RUN := runs/street
STAGE2_RUN := runs/street_v4
STAGE3_RUN := runs/street_v5
STAGE4_RUN := runs/street_v6
STAGE5_RUN := runs/street_v7
MODEL_RUN := runs/street_v8
MODEL_CHECKPOINT := $(MODEL_RUN)/calibrated.pt
MODEL_DIR := models/default
TRAIN_SETTINGS := model.backbone_weights=$(ESPNETV2_WEIGHTS) data.camvid_root=$(CAMVID_ROOT) max_minutes=60
# $(call train_stage,CONFIG,RUN_DIR,EXTRA): train until RUN_DIR/metrics.json exists,
# resuming from RUN_DIR/last.pt after each chunk.
train_stage = until [ -f $(2)/metrics.json ]; do \
		OMP_WAIT_POLICY=PASSIVE $(BIN)/scene-train --config $(1) run_dir=$(2) $(TRAIN_SETTINGS) $(3) \
			$$([ -f $(2)/last.pt ] && echo resume=$(2)/last.pt) || exit 1; \
	done

model: $(STAMP)
	$(call train_stage,configs/street.yaml,$(STAGE1_RUN),)
	$(call train_stage,configs/street_finetune.yaml,$(STAGE2_RUN),init_from=$(STAGE1_RUN)/last.pt)
	$(call train_stage,configs/street_stage3.yaml,$(STAGE3_RUN),init_from=$(STAGE2_RUN)/last.pt)
	$(call train_stage,configs/street_stage4.yaml,$(STAGE4_RUN),init_from=$(STAGE3_RUN)/last.pt)
	$(call train_stage,configs/street_stage5.yaml,$(STAGE5_RUN),init_from=$(STAGE4_RUN)/last.pt)
	$(call train_stage,configs/street_stage6.yaml,$(MODEL_RUN),init_from=$(STAGE5_RUN)/last.pt)
	[ -f $(MODEL_CHECKPOINT) ] || OMP_WAIT_POLICY=PASSIVE $(BIN)/scene-calibrate \
		--checkpoint $(MODEL_RUN)/last.pt --camvid $(CAMVID_ROOT) --out $(MODEL_CHECKPOINT)
	$(BIN)/scene-eval --checkpoint $(MODEL_CHECKPOINT) --split test --seed 1000 --count 500 \
		--camvid $(CAMVID_ROOT) --camvid-grid $(MODEL_DIR)/camvid_predictions.png --camvid-sizes 800x400 960x480 \
		--realdepth $(REALDEPTH_ROOT) \
		--batchnorm-check \
		--out $(MODEL_DIR)/metrics.json --grid $(MODEL_DIR)/predictions.png
	$(BIN)/scene-export --checkpoint $(MODEL_CHECKPOINT) --out $(MODEL_DIR)/model.onnx --fp16-weights \
		--name scene-mtl-default --version 8
	cp $(MODEL_RUN)/sigma.png $(MODEL_DIR)/sigma.png

clean:
	rm -rf $(VENV) $(SERVE_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
