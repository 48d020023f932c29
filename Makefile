# Every target sets up .venv from the pinned requirements first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

CONFIG ?= study_configs/cifar10.yaml
TRIALS ?= 20
WORKERS ?= 1
PORT ?= 8080
OPTS = $(if $(STORAGE),--storage '$(STORAGE)') $(if $(STUDY),--study '$(STUDY)')
DATA = $(if $(DATA_DIR),--data-dir '$(DATA_DIR)')

.PHONY: setup search worker test
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

search: setup
	$(PY) -m search search --config $(CONFIG) --trials $(TRIALS) --workers $(WORKERS) $(OPTS) $(DATA)

worker: setup
	$(PY) -m search worker --trials $(TRIALS) --workers $(WORKERS) $(OPTS) $(DATA)

test: setup
	$(PY) -m pytest -q tests
