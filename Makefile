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

.PHONY: setup search worker test dashboard export confirm retrain report bench
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

dashboard: setup
	$(PY) -m search dashboard --config $(CONFIG) --port $(PORT) $(if $(STORAGE),--storage '$(STORAGE)')

export: setup
	$(PY) -m search export --config $(CONFIG) $(OPTS) $(if $(TOP),--top $(TOP))

# The TOP trials (default 3) and the baseline, SEEDS runs each (default 3), in <study>.confirm.
confirm: setup
	$(PY) -m search confirm --config $(CONFIG) $(OPTS) $(DATA) --workers $(WORKERS) $(if $(TOP),--top $(TOP)) $(if $(SEEDS),--seeds $(SEEDS))

# CONFIG=exports/<study>/best.yaml; left at a study config, it means that study's best.yaml.
retrain: setup
	$(PY) -m search retrain --config $(CONFIG) $(if $(STUDY),--study '$(STUDY)') $(DATA) $(if $(filter 1,$(FULL)),--full) $(if $(SEEDS),--seeds $(SEEDS))

report: setup
	$(PY) -m search report $(OPTS) $(if $(TOP),--top $(TOP))

# Speed, overhead, memory, pruning and storage figures (about 12 min on 2 cores); not in `test`.
bench: setup
	$(PY) -m bench $(DATA)
