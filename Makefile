# Two commands do all of the setup on a fresh machine:
#   make book   builds the website, every chapter executed  -> _build/html/index.html
#   make test   unit tests, every chapter under nbval, a strict book build, the browser test
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ROOT := $(CURDIR)
NOTEBOOKS := $(ROOT)/_build/nbval
JB := $(BIN)/jupyter-book build $(ROOT)/book --config $(ROOT)/_config.yml --toc $(ROOT)/_toc.yml
export XAI_BOOK_STATIC := 1
export PYTHONHASHSEED := 0
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: venv book test test-unit test-notebooks test-book bench notebooks clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@echo "== creating $(VENV) from requirements.txt"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

book: $(STAMP)
	$(JB) -n -W --keep-going
	@echo "The book is at $(ROOT)/_build/html/index.html"

test: test-unit test-notebooks test-book

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests -q

# nbval collects .ipynb only: convert the MyST chapters into a scratch folder first.
test-notebooks: $(STAMP)
	rm -rf $(NOTEBOOKS) && mkdir -p $(NOTEBOOKS)
	for f in $$(grep -l '^jupytext:' book/*.md); do \
	  $(BIN)/jupytext --quiet --to ipynb --output $(NOTEBOOKS)/$$(basename $${f%.md}).ipynb $$f; done
	cd $(NOTEBOOKS) && $(ROOT)/$(BIN)/python -m pytest --nbval-lax -p no:cacheprovider -q .

test-book: $(STAMP)
	$(JB) -n -W --keep-going

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f; done

clean:
	rm -rf _build book/_build .pytest_cache
