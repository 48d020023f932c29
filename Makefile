# Every target sets up .venv from the pinned requirements first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

WORKERS ?= auto
PORT ?= 8080
# HOST: not ?=, so that a shell's own HOST variable (tcsh sets one) never moves the dashboard.
HOST = 127.0.0.1
# Values reach `python -m search` through the environment (SEARCH_<FLAG>, see its --help), never
# through a recipe's text: a password in STORAGE is not echoed nor shown by `ps`, and no quote,
# space or '$' in a value can break or extend a command; each is passed exactly as typed.
unexport STORAGE STUDY CONFIG DATA_DIR TRIALS WORKERS PORT TOP HOST SEEDS TIMEOUT TOTAL
export SEARCH_STORAGE = $(value STORAGE)
export SEARCH_STUDY = $(value STUDY)
export SEARCH_CONFIG = $(value CONFIG)
export SEARCH_DATA_DIR = $(value DATA_DIR)
export SEARCH_TRIALS = $(value TRIALS)
export SEARCH_WORKERS = $(value WORKERS)
export SEARCH_PORT = $(value PORT)
export SEARCH_TOP = $(value TOP)
export SEARCH_HOST = $(value HOST)
export SEARCH_SEEDS = $(value SEEDS)
export SEARCH_TIMEOUT = $(value TIMEOUT)
export SEARCH_TOTAL = $(value TOTAL)
V = $(if $(filter 1,$(VERBOSE)),--verbose)

.PHONY: setup search worker test dashboard export confirm retrain report bench
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

search: setup
	$(PY) -m search search $(V)

worker: setup
	$(PY) -m search worker $(V)

test: setup
	$(PY) -m pytest -q tests

dashboard: setup
	$(PY) -m search dashboard $(if $(filter 1,$(ALLOW_WRITES)),--allow-writes)

export: setup
	$(PY) -m search export

# The TOP trials (default 3) and the baseline, SEEDS runs each (default 3), in <study>.confirm.
confirm: setup
	$(PY) -m search confirm

# CONFIG=exports/<study>/best.yaml; a study config or STUDY means that study's best.yaml.
retrain: setup
	$(PY) -m search retrain $(if $(filter 1,$(FULL)),--full) $(V)

report: setup
	$(PY) -m search report

# Speed, overhead, memory, pruning and storage figures (about 12 min on 2 cores); not in `test`.
bench: setup
	$(PY) -m bench $${SEARCH_DATA_DIR:+--data-dir "$$SEARCH_DATA_DIR"}
