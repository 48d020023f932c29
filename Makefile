# Every target sets up .venv from the pinned requirements first: the runtime pins
# (requirements.txt), and for `test` the test tools too (requirements-dev.txt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

# Values reach `python -m search` through the environment (SEARCH_<FLAG>, see its --help), never
# through a recipe's text: a password in STORAGE is not echoed nor shown by `ps`, and no quote,
# space or '$' in a value can break or extend a command; each is passed exactly as typed.
# A variable given to make (`make export STORAGE=...`, or STORAGE in the environment) becomes
# SEARCH_STORAGE; one not given leaves a SEARCH_STORAGE set in the environment as it is, and
# the command's own default (--help) applies when neither is set.
PASSED := STORAGE STUDY CONFIG DATA_DIR TRIALS TOTAL WORKERS PORT TOP SEEDS TIMEOUT
$(foreach name,$(PASSED),$(if $(filter-out undefined,$(origin $(name))),\
  $(eval export SEARCH_$(name) = $$(value $(name)))))
# HOST only from make's command line: a shell's own HOST variable (tcsh sets one) never moves
# the dashboard.
ifeq ($(origin HOST),command line)
export SEARCH_HOST = $(value HOST)
endif
# (after the test above: unexport defines a variable that was not)
unexport $(PASSED) HOST
V = $(if $(filter 1,$(VERBOSE)),--verbose)

.PHONY: setup search worker test dashboard export confirm retrain report bench
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

search: setup
	$(PY) -m search search $(V)

worker: setup
	$(PY) -m search worker $(V)

# Two pytest processes (pytest-xdist); skip reasons (-rs) and the 15 slowest tests; a hang fails
# after 600 s (pyproject.toml).
test: $(VENV)/.dev-installed
	$(PY) -m pytest -q -rs -n 2 --durations=15 tests

dashboard: setup
	$(PY) -m search dashboard $(if $(filter 1,$(ALLOW_WRITES)),--allow-writes) $(V)

export: setup
	$(PY) -m search export $(V)

# The TOP trials (default 3) and the baseline, SEEDS runs each (default 3), in <study>.confirm.
confirm: setup
	$(PY) -m search confirm $(V)

# CONFIG=exports/<study>/best.yaml; a study config or STUDY means that study's best.yaml.
retrain: setup
	$(PY) -m search retrain $(if $(filter 1,$(FULL)),--full) $(V)

report: setup
	$(PY) -m search report $(V)

# Speed, overhead, memory, pruning and storage figures (about 12 min on 2 cores); not in `test`.
bench: setup
	$(PY) -m bench $${SEARCH_DATA_DIR:+--data-dir "$$SEARCH_DATA_DIR"}
