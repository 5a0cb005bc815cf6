# hightpr: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# a folder with cifar10/cifar10-jpg.tar.gz, melanoma/, medmnist3d/ (offline sources)
SOURCE_DATA ?= data-sources
export HIGHTPR_DATA_DIR ?= $(CURDIR)/data
ARGS ?=
# Paper tables (docs/tables.md): make table-rankreg-t1 SCALE=cpu ROWS=acceptance DRY=1 LAUNCHER=slurm
SCALE ?= cpu
RESULTS ?= results
ROWS ?=
DRY ?=
LAUNCHER ?=
TEST_WORKERS ?= 2
OVERRIDES ?=
# make device-check (DEVICE=cpu QUICK=1 on a machine without a GPU); RUN_PY=python3 where no .venv exists
DEVICE ?= cuda
QUICK ?=
RUN_PY ?= $(BIN)/python
SITE ?= site
TABLES_CLI = $(BIN)/python -m hightpr.cli.tables
COMMON_FLAGS = --results $(RESULTS) $(foreach o,$(OVERRIDES),--override '$(o)')
TABLE_FLAGS = $(COMMON_FLAGS) --scale $(SCALE) $(if $(DRY),--dry) $(if $(LAUNCHER),--launcher $(LAUNCHER)) \
	$(if $(ROWS),--rows '$(ROWS)')
RENDER_FLAGS = $(COMMON_FLAGS) $(if $(filter command line environment,$(origin SCALE)),--scale $(SCALE))

.PHONY: help setup test test-slow test-slurm lint check-wheel data data-tiny data-mri train tables figures \
	device-check study-thresholds study-verdicts site status

help:  ## list the targets
	@grep -E '^[a-z%-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup:  ## create .venv and install hightpr with its dev extras
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps 'libauc==2.0.1'  # loss=libauc_*: its modules need only our deps

test:  ## the fast test suite (slow tests are skipped), on TEST_WORKERS processes (pytest-xdist)
	$(BIN)/pytest -q -n $(TEST_WORKERS)

test-slow:  ## the slow tests too (real-data training runs)
	$(BIN)/pytest -q -m "slow or not slow"

test-slurm:  ## hydra/launcher=slurm against a running SLURM (scripts/slurm_cluster.sh start; docs/clusters.md)
	$(BIN)/pytest -q -m slow tests/test_slurm_cluster.py

lint:  ## ruff
	$(BIN)/ruff check .

check-wheel:  ## build the wheel, install it apart from the source tree, run hightpr-train from another dir
	bash scripts/check_wheel.sh $(BIN)/python

data:  ## prepare under $HIGHTPR_DATA_DIR every source in $SOURCE_DATA (CIFAR-10, Melanoma, AdrenalMNIST3D)
	@if [ -f "$(SOURCE_DATA)/cifar10/cifar10-jpg.tar.gz" ]; then \
	  $(BIN)/python -m hightpr.data.prepare cifar10 --from "$(SOURCE_DATA)/cifar10/cifar10-jpg.tar.gz"; \
	else \
	  echo "error: no CIFAR-10 archive at $(SOURCE_DATA)/cifar10/cifar10-jpg.tar.gz: put it there (or make data SOURCE_DATA=<folder>), or download it with $(BIN)/python -m hightpr.data.prepare cifar10 --download" >&2; \
	  exit 2; fi
	@if [ -f "$(SOURCE_DATA)/melanoma/train.csv" ]; then \
	  $(BIN)/python -m hightpr.data.prepare melanoma --from "$(SOURCE_DATA)/melanoma"; fi
	@if ls "$(SOURCE_DATA)"/medmnist3d/adrenalmnist3d*.npz >/dev/null 2>&1; then \
	  $(BIN)/python -m hightpr.data.prepare adrenal3d --from "$(SOURCE_DATA)/medmnist3d"; fi

data-tiny:  ## a tiny synthetic CIFAR-10 for smoke tests (python train.py dataset=tiny)
	$(BIN)/python -m hightpr.data.prepare tiny

data-mri:  ## SYNTHETIC MRI-style volumes at 1:2 and 1:8 (python train.py dataset=volumes model=cnn3d_dual)
	$(BIN)/python -m hightpr.data.prepare synthetic-mri --ratio 2
	$(BIN)/python -m hightpr.data.prepare synthetic-mri --ratio 8

train:  ## python train.py $(ARGS), e.g. make train ARGS="trainer=cpu_quick seed=3"
	$(BIN)/python train.py $(ARGS)

table-%:  ## one paper table, e.g. table-rankreg-t1 (SCALE=paper|cpu|smoke ROWS= DRY=1 LAUNCHER=local|slurm)
	$(TABLES_CLI) run $* $(TABLE_FLAGS)

figure-%:  ## RankReg's figures: figure-rankreg-f3 (ROC), figure-rankreg-f4 (label noise); same options
	$(TABLES_CLI) run $* $(TABLE_FLAGS)

tables:  ## re-render every table from saved runs, training nothing (SCALE=... for one scale)
	$(TABLES_CLI) render $(RENDER_FLAGS)

figures:  ## re-render both figures from saved runs, training nothing
	$(TABLES_CLI) render --figures $(RENDER_FLAGS)

device-check:  ## the prepared GPU check: speed, memory, correctness, one JSON line (DEVICE=cpu QUICK=1 on a CPU)
	$(RUN_PY) scripts/device_check.py --device $(DEVICE) $(if $(QUICK),--quick) --results $(RESULTS)

study-verdicts:  ## size and power of the tables' comparison test (results/studies/; QUICK=1: about 2 minutes)
	$(BIN)/python scripts/study_verdicts.py $(if $(QUICK),--quick) --results $(RESULTS)

study-thresholds:  ## which validation threshold keeps its TPR promise (results/studies/; QUICK=1 for a short one)
	$(BIN)/python scripts/study_thresholds.py $(if $(QUICK),--quick) --results $(RESULTS)

site:  ## the results site from saved runs: $(SITE)/index.html (no server needed)
	$(BIN)/python -m hightpr.cli.site $(SITE) --results $(RESULTS)

status:  ## every planned run of every table at $(SCALE): finished / running / failed / missing
	$(BIN)/python -m hightpr.cli.status --scale $(SCALE) --results $(RESULTS)
