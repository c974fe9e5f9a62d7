# Usage: make test | make run | make stop | make bench [BENCH=name] | make install | make images | make lock | make clean
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= ../shared/data/movielens-100k-mm
OUT    ?= artifacts

.PHONY: install test run stop bench images lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"

# Re-install only when the dependency set changes.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

# The policy scanner lives in a virtual environment of its own (its pins would fight the project's).
CHECKOV := $(VENV)/tools/checkov/bin/checkov
$(CHECKOV): constraints-checkov.txt | $(BIN)/python
	$(PYTHON) -m venv $(VENV)/tools/checkov
	$(VENV)/tools/checkov/bin/pip install --quiet -r constraints-checkov.txt
	touch $@

install: $(VENV)/.installed $(CHECKOV)

test: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The main job: the training pipeline on the KFP local runner, end to end (validate, embed per modality,
# Feast features, train, evaluate against the baselines, gate, register, deploy), on movielens-100k-mm
# or, where the shared data is absent, on a synthetic set; the model servers stay up on the champion
# ('make stop' stops them) and are asked for a recommendation.
ifneq ($(wildcard $(DATA)/ratings.csv),)
CONTRACT := configs/datasets/movielens-100k-mm.yaml
NAME     := movielens-100k-mm
ASK      := 42
else
CONTRACT := $(OUT)/synthetic/dataset.yaml
NAME     := synthetic-1000u-500i-s0
ASK      := user-0000042
endif

$(OUT)/synthetic/dataset.yaml: | install
	$(BIN)/fusionrec data synth --out $(OUT)/synthetic --users 1000 --items 500

run: install $(CONTRACT)
	$(BIN)/fusionrec pipeline run --local --contract $(CONTRACT) --registry $(OUT)/$(NAME)/models --root $(OUT)/pipeline
	$(BIN)/fusionrec recommend --user $(ASK) --k 10
	@echo "the model server is still up (http://127.0.0.1:8080; serving.layout: collocated); 'make stop' stops it"

# The benchmarks: prepares what they need (reusing make run's caches), runs each, writes build/bench/<name>.json
# and build/bench/summary.md; 'python benchmarks/summary.py --publish' then regenerates the README's table.
bench: install
	$(BIN)/python benchmarks/run.py $(if $(BENCH),--only $(BENCH))

images:
	scripts/images.sh all cpu

stop:
	$(BIN)/fusionrec serve --stop

lock: | $(BIN)/python
	{ head -n 2 constraints.txt; $(BIN)/pip freeze --exclude-editable | sed -e 's/^torch==\(.*\)+cpu/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
