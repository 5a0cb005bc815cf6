# hightpr: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCE_DATA ?= ../shared/data
export HIGHTPR_DATA_DIR ?= $(CURDIR)/data
ARGS ?=

.PHONY: help setup test test-slow lint data data-tiny data-mri train

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup:  ## create .venv and install hightpr with its dev extras
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps 'libauc==2.0.1'  # loss=libauc_*: its modules need only our deps

test:  ## the fast test suite (slow tests are skipped)
	$(BIN)/pytest -q

test-slow:  ## the slow tests too (real-data training runs)
	$(BIN)/pytest -q -m "slow or not slow"

lint:  ## ruff
	$(BIN)/ruff check .

data:  ## prepare under $HIGHTPR_DATA_DIR every offline source in $SOURCE_DATA (CIFAR-10, Melanoma, AdrenalMNIST3D)
	$(BIN)/python -m hightpr.data.prepare cifar10 --from $(SOURCE_DATA)/cifar10/cifar10-jpg.tar.gz
	@if [ -f $(SOURCE_DATA)/melanoma/train.csv ]; then \
	  $(BIN)/python -m hightpr.data.prepare melanoma --from $(SOURCE_DATA)/melanoma; fi
	@if ls $(SOURCE_DATA)/medmnist3d/adrenalmnist3d*.npz >/dev/null 2>&1; then \
	  $(BIN)/python -m hightpr.data.prepare adrenal3d --from $(SOURCE_DATA)/medmnist3d; fi

data-tiny:  ## a tiny synthetic CIFAR-10 for smoke tests (python train.py dataset=tiny)
	$(BIN)/python -m hightpr.data.prepare tiny

data-mri:  ## SYNTHETIC MRI-style volumes at 1:2 and 1:8 (python train.py dataset=volumes model=cnn3d_dual)
	$(BIN)/python -m hightpr.data.prepare synthetic-mri --ratio 2
	$(BIN)/python -m hightpr.data.prepare synthetic-mri --ratio 8

train:  ## python train.py $(ARGS), e.g. make train ARGS="trainer=cpu_quick seed=3"
	$(BIN)/python train.py $(ARGS)
