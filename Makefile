# The pipeline's verbs. Each target is a thin call of `bertrt <stage>`; the
# stages themselves refuse stale inputs by hash, Make only orders them.
#   make install all DATA=path/to/train-sample.csv     (the main job, CPU)
#   make all TASK=close-reason RUN=runs/close-reason   (the 5-class close reason)
#   make dev test                                       (the test suite)
PYTHON ?= python
DATA   ?= ../shared/data/train-sample.csv
RUN    ?= runs/default
CONFIG ?= configs/default.yaml
SET    ?=
# Kaggle task: closed (open vs closed) or close-reason (the 5-class target);
# empty = the config's data.task (closed by default)
TASK   ?=
IMAGE  ?= bertrt-trt:latest
PYTRITON ?= 0.7.0
BERTRT := $(PYTHON) -m bertrt
# User values reach the shell single-quoted ($(call q,...)): a path with spaces,
# quotes or $ stays one argument. (SET is split on spaces by make: one KEY=VALUE per word.)
q = '$(subst ','\'',$(1))'
ARGS    = --run-dir $(call q,$(RUN)) --config $(call q,$(CONFIG)) $(foreach s,$(SET),--set $(call q,$(s)))

.PHONY: install dev serve-deps serve-env all data import train export calibrate qat build-engine bench evaluate \
        presets test lint typecheck imports gpu-check docker-build docker-run clean-run check-data

# CPU torch first: 2.13.0 is on this machine's disk; an unpinned torch would
# pull a multi-GB CUDA build.
install:
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e .

dev: install
	$(PYTHON) -m pip install -e '.[dev,serve,demo,qlora,scale,qat]'
	# The stubs' metadata requires the full tensorrt package (NVIDIA's index): skip deps.
	$(PYTHON) -m pip install --no-deps tensorrt-stubs==10.13.0.35.1
	# The live-server tests (tests/unit/test_serve.py): see serve-deps, serve-env.
	$(PYTHON) -m pip install --no-deps nvidia-pytriton==$(PYTRITON)
	$(PYTHON) -m bertrt.serve.stub_env

# `bertrt serve` (docs/serving.md) runs the tritonserver binary nvidia-pytriton
# ships. Its metadata pins numpy<2, which would downgrade NumPy and break
# pandas 3: it goes in with --no-deps (its Python API is not used).
serve-deps:
	$(PYTHON) -m pip install -e '.[serve]'
	$(PYTHON) -m pip install --no-deps nvidia-pytriton==$(PYTRITON)

# Under NumPy 2, Triton's Python-backend stub (built against NumPy 1.x), which
# runs the served model, uses a venv of its own: numpy<2 (and pandas<3) over
# this interpreter's packages, cached under ~/.cache/bertrt (`bertrt serve`
# builds it on first use otherwise). Prints its path.
serve-env:
	$(PYTHON) -m bertrt.serve.stub_env

check-data:
	@test -f $(call q,$(DATA)) || { \
	  echo DATA=$(call q,$(DATA))": no such file."; \
	  echo "Download train-sample.csv from the Kaggle competition 'Predict Closed Questions on"; \
	  echo "Stack Overflow' (kaggle competitions download -c predict-closed-questions-on-stack-overflow)"; \
	  echo "and run: make all DATA=path/to/train-sample.csv"; exit 2; }

all: train export calibrate build-engine bench

data: check-data
	$(BERTRT) data --data $(call q,$(DATA)) $(if $(TASK),--task $(call q,$(TASK))) $(ARGS)

train: data
	$(BERTRT) train $(ARGS)

# A classifier trained elsewhere instead of `train` (README, "Optimize a model you already
# have"): MODEL= a save_pretrained directory, a peft adapter directory or a hub id; DATA= its
# file; LABELS=a,b renames the model's classes; IMPORT="--text-column text" (no
# --label-column: an unlabelled file) or any other `bertrt import` option.
MODEL  ?=
LABELS ?=
IMPORT ?=
import:
	@test -n $(call q,$(MODEL)) || { echo "make import: give MODEL=DIR (or a hub id) and DATA=FILE"; exit 2; }
	$(BERTRT) import --model $(call q,$(MODEL)) --data $(call q,$(DATA)) \
	  $(if $(LABELS),--labels $(call q,$(LABELS))) $(if $(TASK),--task $(call q,$(TASK))) $(IMPORT) $(ARGS)

export:
	$(BERTRT) export $(ARGS)

calibrate:
	$(BERTRT) calibrate $(ARGS)

# ModelOpt INT8 Q/DQ models, post-training and QAT (docs/qat.md; needs the qat extra).
qat:
	$(BERTRT) qat $(ARGS)

# Exit code 3 = no NVIDIA GPU or no TensorRT here: say so and let `make all`
# go on to the benchmark with the backends that exist.
build-engine:
	@$(BERTRT) build-engine $(ARGS); rc=$$?; \
	if [ $$rc -eq 3 ]; then echo "build-engine: skipped (see the line above); bench goes on without TensorRT"; \
	else exit $$rc; fi

bench:
	$(PYTHON) bench/compare.py $(ARGS)

presets: check-data
	$(PYTHON) scripts/preset_table.py --data $(call q,$(DATA)) $(if $(TASK),--task $(call q,$(TASK)))

lint:
	ruff check src tests bench scripts
	ruff format --check src tests bench scripts

# tensorrt-stubs ships no py.typed and some invalid syntax: scripts/trt_stubs.py
# copies a repaired version to build/trt-stubs so mypy really checks every
# TensorRT call (builder in engines/, runner in runners/trt_runner.py) against
# the 10.13 API; the rest of the package is type-checked in the same run.
typecheck:
	$(PYTHON) scripts/trt_stubs.py build/trt-stubs
	MYPYPATH=build/trt-stubs mypy src/bertrt

# The package's layers (docs/architecture.md), contracts in pyproject.toml [tool.importlinter].
imports:
	lint-imports

test: lint typecheck imports
	hadolint Dockerfile.trt
	$(PYTHON) -m pytest -q; rc=$$?; [ $$rc -eq 5 ] && echo "pytest collected no tests" && rc=1; exit $$rc

gpu-check:
	bash scripts/gpu_check.sh $(call q,$(RUN))

docker-build:
	docker build -f Dockerfile.trt -t $(IMAGE) .

docker-run: check-data
	mkdir -p runs
	docker run --rm --gpus all --ipc=host \
	  -v "$$(realpath $(call q,$(DATA)))":/data/train-sample.csv:ro \
	  -v "$(abspath runs)":/workspace/bertrt/runs \
	  $(call q,$(IMAGE)) make all DATA=/data/train-sample.csv RUN=$(call q,$(RUN))
