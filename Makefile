# Usage: make test | make run | make install | make lock | make clean
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= ../shared/data/movielens-100k-mm
OUT    ?= artifacts

.PHONY: install test run lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"

# Re-install only when the dependency set changes.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest

run: install
	$(BIN)/fusionrec data validate configs/datasets/movielens-100k-mm.yaml --out $(OUT)/movielens-100k-mm/validated

lock: | $(BIN)/python
	{ head -n 2 constraints.txt; $(BIN)/pip freeze --exclude-editable | sed -e 's/^torch==\(.*\)+cpu/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
