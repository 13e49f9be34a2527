# Entry points of the workspace. Each target sets itself up: it installs uv with pip when
# it is missing, then `uv sync --frozen` installs the locked environment into .venv, with its
# bytecode compiled once at install: each process then starts seconds sooner, also where
# PYTHONDONTWRITEBYTECODE keeps Python from caching it (importing torch, e3nn and wandb from
# source takes about 10 s on a 2-core machine).
#   make train-bond ARGS="--epochs 5 --device cuda:1"
#   make train-bond GPUS=0,1,2,3        (one model, data-parallel on four GPUs)
#   make train-both BOND_GPU=0 PAIRWISE_GPU=1
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
ARGS ?=
RUNS_DIR ?= runs
BOND_GPU ?= 0
PAIRWISE_GPU ?= 1
BOND_ARGS ?=
PAIRWISE_ARGS ?=
GPUS ?=
PACKAGE ?= pairwise
comma := ,
# make evaluate / make sample: the latest run of PACKAGE (bond or pairwise) unless RUN names a checkpoint
PACKAGE_DIR = $(PACKAGE)_vae
RUN ?= $(lastword $(sort $(wildcard $(RUNS_DIR)/$(PACKAGE_DIR)/*/best.pt)))
STAMP := $(shell date +%Y%m%d-%H%M%S)
# GPUS=0,1 -> those GPUs only, and one data-parallel process on each
GPU_ENV = $(if $(GPUS),CUDA_VISIBLE_DEVICES=$(GPUS))
GPU_ARGS = $(if $(GPUS),--devices $(words $(subst $(comma), ,$(GPUS))))

.PHONY: help setup train-bond train-pairwise train-both evaluate sample check-run compare lint test test-all test-workspace test-bond test-pairwise bench scaling gpu-check dataset clean-venv

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

setup:  ## install uv if missing, then the locked environment (.venv)
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || { \
		echo "uv not found: installing it with pip"; \
		$(PYTHON) -m pip install --quiet uv || $(PYTHON) -m pip install --quiet --user --break-system-packages uv; }
	$(UV) sync --frozen --compile-bytecode

train-bond: setup  ## train the bond-length VAE on the embedded AIB9 data (ARGS="...", GPUS=0,1)
	$(GPU_ENV) $(UV) run --frozen bond-vae-train --output-dir $(RUNS_DIR)/bond_vae $(GPU_ARGS) $(ARGS)

train-pairwise: setup  ## train the pairwise-distance VAE on the embedded AIB9 data (ARGS="...", GPUS=0,1)
	$(GPU_ENV) $(UV) run --frozen pairwise-vae-train --output-dir $(RUNS_DIR)/pairwise_vae $(GPU_ARGS) $(ARGS)

train-both: setup  ## both trainings at once, on BOND_GPU and PAIRWISE_GPU (ARGS, BOND_ARGS, PAIRWISE_ARGS)
	BOND_GPU="$(BOND_GPU)" PAIRWISE_GPU="$(PAIRWISE_GPU)" RUNS_DIR="$(RUNS_DIR)" ARGS="$(ARGS)" \
		BOND_ARGS="$(BOND_ARGS)" PAIRWISE_ARGS="$(PAIRWISE_ARGS)" scripts/train_both.sh

evaluate: setup check-run  ## report of a run's model on its reference: PACKAGE=bond|pairwise, RUN=.../best.pt (default: latest), ARGS
	$(UV) run --frozen $(PACKAGE)-vae-evaluate $(RUN) --output $(dir $(RUN))evaluation-$(STAMP) $(ARGS)

sample: setup check-run  ## conformations from a run's model (.npz + .pdb): PACKAGE=bond|pairwise, RUN=.../best.pt (default: latest), ARGS
	$(UV) run --frozen $(PACKAGE)-vae-sample $(RUN) --output $(dir $(RUN))samples-$(STAMP) $(ARGS)

check-run:
	@case "$(PACKAGE)" in bond|pairwise) ;; *) echo "error: PACKAGE=$(PACKAGE): expected bond or pairwise" >&2; exit 2;; esac
	@test -n "$(RUN)" || { echo "error: no run with a best.pt under $(RUNS_DIR)/$(PACKAGE_DIR)/: train one (make train-$(PACKAGE)) or name it with RUN=" >&2; exit 2; }
	@test -f "$(RUN)" || { echo "error: RUN=$(RUN): no such checkpoint" >&2; exit 2; }

compare: setup  ## evaluate the latest bond and pairwise runs on one reference: comparison.md + figures (ARGS="--bond RUN --pairwise RUN")
	$(UV) run --frozen python scripts/compare_runs.py --runs $(RUNS_DIR) $(ARGS)

lint: setup  ## ruff: formatting and lint rules (configured in pyproject.toml)
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen ruff check .

test: setup  ## the fast suite (CPU, no slow tests): the workspace's tests and each package's alone in its own environment, side by side (ARGS="..." runs pytest ARGS in .venv instead)
ifeq ($(strip $(ARGS)),)
	$(MAKE) --no-print-directory -j3 --output-sync=target test-workspace test-bond test-pairwise
else
	$(UV) run --frozen pytest $(ARGS)
endif

test-all: setup  ## the whole suite, slow tests included (several processes, torch.compile, wheels, make train-both): what CI runs
	$(MAKE) --no-print-directory -j3 --output-sync=target test-workspace test-bond test-pairwise TEST_MARKERS=

# the three parts of `make test`, run side by side: most tests are small and use one core each.
# TEST_MARKERS picks tests by marker (pytest -m); empty: all of them (make test-all sets it so).
# Each package's environment is new each time: its bytecode is compiled up front (about 40 CPU-s
# for torch's 11,000 files) only for the whole suite, whose many processes each import torch; the
# fast suite's few processes compile what they import (about 8 CPU-s)
TEST_MARKERS ?= not slow
PYTEST_MARKERS = $(if $(strip $(TEST_MARKERS)),-m "$(TEST_MARKERS)")
COMPILE_BYTECODE = $(if $(strip $(TEST_MARKERS)),,--compile-bytecode)
# the whole suite names its slowest tests, to keep CI's time in view
PYTEST_DURATIONS = $(if $(strip $(TEST_MARKERS)),,--durations=12)
test-workspace:
	OMP_NUM_THREADS=1 $(UV) run --frozen pytest $(PYTEST_MARKERS) $(PYTEST_DURATIONS) --ignore=tests/bond_vae --ignore=tests/pairwise_vae

test-bond:
	OMP_NUM_THREADS=1 $(UV) run --frozen --isolated $(COMPILE_BYTECODE) --package bond-vae --extra md pytest -p no:cacheprovider $(PYTEST_MARKERS) $(PYTEST_DURATIONS) tests/bond_vae

test-pairwise:
	OMP_NUM_THREADS=1 $(UV) run --frozen --isolated $(COMPILE_BYTECODE) --package pairwise-vae --extra md pytest -p no:cacheprovider $(PYTEST_MARKERS) $(PYTEST_DURATIONS) tests/pairwise_vae

bench: setup  ## training/sampling throughput, memory, FLOPs and MFU of both packages (ARGS="--json FILE")
	$(UV) run --frozen python scripts/bench.py $(ARGS)

scaling: setup  ## step time and peak memory of both packages against atom count, 58 to 1,044 atoms (ARGS="--json FILE")
	$(UV) run --frozen python scripts/scaling.py $(ARGS)

gpu-check: setup  ## on a machine with a GPU: CUDA tests, bench, one-epoch train-both, DDP; one summary table (~10 min)
	$(UV) run --frozen python scripts/gpu_check.py $(ARGS)

dataset: setup  ## simulate an MD ensemble with OpenMM: AIB9 or a chiral peptide (ARGS="--system a4ga4 --output FILE")
	$(UV) sync --frozen --compile-bytecode --group dataset
	$(UV) run --frozen --group dataset python scripts/make_dataset.py $(ARGS)

clean-venv:  ## remove the environment (.venv); runs/ and data/ are kept
	rm -rf .venv
