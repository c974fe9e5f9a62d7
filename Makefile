# Usage: make test | make run | make install | make lock | make clean
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= ../shared/data/movielens-100k-mm
OUT    ?= artifacts

.PHONY: install test run stop lock clean

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

ML := $(OUT)/movielens-100k-mm

# The main job on movielens-100k-mm: validate, embed, build and serve the features, train, evaluate,
# then serve the champion (predictor + transformer, left running; `make stop` stops them) and ask it.
run: install
	$(BIN)/fusionrec data validate configs/datasets/movielens-100k-mm.yaml --out $(ML)/validated
	$(BIN)/fusionrec embed $(ML)/validated --out $(ML)/embeddings
	$(BIN)/fusionrec features build $(ML)/validated --embeddings $(ML)/embeddings --out $(ML)/features
	$(BIN)/fusionrec features apply --data-dir $(ML)/features
	$(BIN)/fusionrec features materialize --data-dir $(ML)/features
	$(BIN)/fusionrec train $(ML)/validated --embeddings $(ML)/embeddings --models $(ML)/models
	$(BIN)/fusionrec evaluate $(ML)/validated --embeddings $(ML)/embeddings --out $(ML)/evaluation \
	    --models fusion,mostpop,bpr_mf,cornac_bpr,cornac_vbpr
	FUSIONREC__FEATURES__DATA_DIR=$(ML)/features $(BIN)/fusionrec serve --detach --storage-uri $(ML)/models
	$(BIN)/fusionrec recommend --user 42 --k 10
	@echo "both servers are still up (transformer: http://127.0.0.1:8080); 'make stop' stops them"

stop:
	$(BIN)/fusionrec serve --stop

lock: | $(BIN)/python
	{ head -n 2 constraints.txt; $(BIN)/pip freeze --exclude-editable | sed -e 's/^torch==\(.*\)+cpu/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
