# Every target sets up .venv from the pinned requirements first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

TRIALS ?= 20
WORKERS ?= 1
PORT ?= 8080
# Unset CONFIG or STUDY: each command's own default (`python -m search <command> --help`).
OPTS = $(if $(CONFIG),--config '$(CONFIG)') $(if $(STORAGE),--storage '$(STORAGE)') $(if $(STUDY),--study '$(STUDY)')
DATA = $(if $(DATA_DIR),--data-dir '$(DATA_DIR)')
RUN = --trials $(TRIALS) --workers $(WORKERS) $(if $(TIMEOUT),--timeout '$(TIMEOUT)') $(DATA) $(V)
V = $(if $(filter 1,$(VERBOSE)),--verbose)

.PHONY: setup search worker test dashboard export retrain report bench
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

search: setup
	$(PY) -m search search $(OPTS) $(RUN)

worker: setup
	$(PY) -m search worker $(OPTS) $(RUN)

test: setup
	$(PY) -m pytest -q tests

dashboard: setup
	$(PY) -m search dashboard --port $(PORT) $(if $(CONFIG),--config '$(CONFIG)') $(if $(STORAGE),--storage '$(STORAGE)')

export: setup
	$(PY) -m search export $(OPTS) $(if $(TOP),--top $(TOP))

# CONFIG=exports/<study>/best.yaml; a study config or STUDY means that study's best.yaml.
retrain: setup
	$(PY) -m search retrain $(OPTS) $(DATA) $(if $(filter 1,$(FULL)),--full) $(V)

report: setup
	$(PY) -m search report $(OPTS) $(if $(TOP),--top $(TOP))

# Speed, overhead, memory, pruning and storage figures (about 12 min on 2 cores); not in `test`.
bench: setup
	$(PY) -m bench $(DATA)
