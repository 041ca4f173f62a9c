# Two commands do all of the setup on a fresh machine:
#   make book   builds the website, every chapter executed  -> _build/html/index.html
#               (with a reveal.js deck of slides per chapter -> _build/html/slides/)
#   make book-student  the same website without the worked solutions -> _build/html-student/
#   make pdf    builds the same book as one PDF              -> _build/latex/explaining-cnns.pdf
#   make problem-sets  the graded problem sets (otter-grader)  -> _build/problem_sets/weekNN/
#   make test   unit tests, the type checker, the linter, the wheel in a fresh venv, every chapter under nbval,
#               a strict book build, the PDF, the problem sets graded, the browser test, the Colab-start simulation
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
# Chapters that explain the same trained SmallCNNs train them once per build and share them here
# (xai_helpers.training.train_small_cnn); emptied at the start of every run that executes the book.
export XAI_MODEL_CACHE := $(ROOT)/_build/models

.PHONY: venv book book-student slides pdf latex-tools problem-sets test test-robustness test-unit typecheck lint test-wheel test-api test-notebooks test-book test-book-student test-slides test-pdf test-problem-sets test-site test-colab screenshots chromium mathjax reveal bench notebooks clean

# MathJax is served by the site itself (no CDN): a pinned npm release, checked against its
# registry integrity hash, unpacked into _build/mathjax/_static/mathjax/ and copied into the site by
# html_extra_path in _config.yml. Only the one combined script and its web fonts are kept (1.7 MB).
MATHJAX_VERSION := 3.2.2
MATHJAX_INTEGRITY := sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==
MATHJAX_DIR := $(ROOT)/_build/mathjax/_static/mathjax
MATHJAX := $(MATHJAX_DIR)/tex-chtml-full.js
SITE_DIR ?= $(ROOT)/_build/html

# reveal.js for the lecture decks, fetched and checked as MathJax is: a pinned npm release and its
# registry integrity hash. Only the files the decks load are kept (book/_ext/make_slides.py copies
# them into each site's slides/ folder); its themes embed their fonts, so nothing else is needed.
REVEAL_VERSION := 6.0.2
REVEAL_INTEGRITY := sha512-JYIg5D9aoxoaLeb84O+OvAwsKWdIavVgEDScxtYEXFCT6t6TQrhNtSgogcjdCpdLsWglhJn3zyE3fUOwiH5KEg==
REVEAL_DIR := $(ROOT)/_build/reveal.js
REVEAL := $(REVEAL_DIR)/dist/reveal.js
REVEAL_FILES := dist/reveal.css dist/reveal.js dist/theme/white.css dist/plugin/notes.js LICENSE
MAKE_SLIDES := $(BIN)/python book/_ext/make_slides.py --reveal $(REVEAL_DIR)

# The student edition: the same website without the worked solutions (book/_ext/xai_book_solutions.py),
# built in its own folder (its own doctrees) and moved to _build/html-student.
STUDENT_DIR := $(ROOT)/_build/html-student
STUDENT_BUILD := $(ROOT)/_build/student
STUDENT_INTO_PLACE := rm -rf $(STUDENT_DIR) && mv $(STUDENT_BUILD)/_build/html $(STUDENT_DIR)

# The graded problem sets, one per week of the course plan (problem_sets/README.md): each master
# problem_sets/weekNN.md (MyST, solutions and tests marked for otter-grader) becomes a notebook, and
# `otter assign` splits it into _build/problem_sets/weekNN/student/weekNN.ipynb (blank answers,
# public tests) and _build/problem_sets/weekNN/autograder/ (the solution, and a zip with every test,
# hidden ones included, for `otter run` or Gradescope). The student notebooks go into each website
# built, under problem_sets/, where the teaching page links them.
PROBLEM_SETS := $(ROOT)/_build/problem_sets
PROBLEM_SETS_INTO = mkdir -p $(1)/problem_sets && cp $(PROBLEM_SETS)/week*/student/week*.ipynb $(1)/problem_sets/
PROBLEM_SETS_INTO_SITES := for d in $(SITE_DIR) $(STUDENT_DIR); do \
	  if [ -d $$d ]; then $(call PROBLEM_SETS_INTO,$$d); fi; done

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@echo "== creating $(VENV) from requirements.txt"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

mathjax: $(MATHJAX)

$(MATHJAX):
	@echo "== fetching MathJax $(MATHJAX_VERSION) from the npm registry"
	rm -rf $(ROOT)/_build/mathjax-pack $(ROOT)/_build/mathjax && mkdir -p $(ROOT)/_build/mathjax-pack $(MATHJAX_DIR)
	cd $(ROOT)/_build/mathjax-pack && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null
	test "sha512-$$(openssl dgst -sha512 -binary $(ROOT)/_build/mathjax-pack/mathjax-$(MATHJAX_VERSION).tgz | base64 -w0)" = "$(MATHJAX_INTEGRITY)"
	tar -xzf $(ROOT)/_build/mathjax-pack/mathjax-$(MATHJAX_VERSION).tgz -C $(ROOT)/_build/mathjax-pack
	mkdir -p $(MATHJAX_DIR)/output/chtml/fonts
	cp -r $(ROOT)/_build/mathjax-pack/package/es5/output/chtml/fonts/woff-v2 $(MATHJAX_DIR)/output/chtml/fonts/
	cp $(ROOT)/_build/mathjax-pack/package/LICENSE $(MATHJAX_DIR)/LICENSE
	cp $(ROOT)/_build/mathjax-pack/package/es5/tex-chtml-full.js $(MATHJAX)
	rm -rf $(ROOT)/_build/mathjax-pack

reveal: $(REVEAL)

$(REVEAL):
	@echo "== fetching reveal.js $(REVEAL_VERSION) from the npm registry"
	rm -rf $(ROOT)/_build/reveal-pack $(REVEAL_DIR) && mkdir -p $(ROOT)/_build/reveal-pack
	cd $(ROOT)/_build/reveal-pack && npm pack --silent reveal.js@$(REVEAL_VERSION) >/dev/null
	test "sha512-$$(openssl dgst -sha512 -binary $(ROOT)/_build/reveal-pack/reveal.js-$(REVEAL_VERSION).tgz | base64 -w0)" = "$(REVEAL_INTEGRITY)"
	tar -xzf $(ROOT)/_build/reveal-pack/reveal.js-$(REVEAL_VERSION).tgz -C $(ROOT)/_build/reveal-pack
	for f in $(REVEAL_FILES); do mkdir -p $(REVEAL_DIR)/$$(dirname $$f) && \
	  cp $(ROOT)/_build/reveal-pack/package/$$f $(REVEAL_DIR)/$$f; done
	rm -rf $(ROOT)/_build/reveal-pack

# The website, then a deck of slides per chapter from the notebooks the build executed.
book: $(STAMP) $(MATHJAX) $(REVEAL) problem-sets
	rm -rf $(XAI_MODEL_CACHE)
	$(JB) -n -W --keep-going
	$(MAKE_SLIDES) --executed $(ROOT)/_build/jupyter_execute --out $(ROOT)/_build/html/slides
	$(call PROBLEM_SETS_INTO,$(ROOT)/_build/html)
	@echo "The book is at $(ROOT)/_build/html/index.html"

# The student edition, executed afresh as `make book` is (the decks leave the solutions out too).
book-student: $(STAMP) $(MATHJAX) $(REVEAL) problem-sets
	rm -rf $(XAI_MODEL_CACHE)
	XAI_BOOK_EDITION=student $(JB) --path-output $(STUDENT_BUILD) -n -W --keep-going
	$(STUDENT_INTO_PLACE)
	$(MAKE_SLIDES) --executed $(STUDENT_BUILD)/_build/jupyter_execute --out $(STUDENT_DIR)/slides
	$(call PROBLEM_SETS_INTO,$(STUDENT_DIR))
	@echo "The student edition is at $(STUDENT_DIR)/index.html"

# The decks again, into the website built last (after `make book`; `make test` runs test-slides).
slides: $(STAMP) $(REVEAL)
	$(MAKE_SLIDES) --executed $(ROOT)/_build/jupyter_execute --out $(SITE_DIR)/slides

# The problem sets, assigned afresh (a few seconds each; no notebook is executed here), and copied
# into the websites already built.
problem-sets: $(STAMP)
	rm -rf $(PROBLEM_SETS) && mkdir -p $(PROBLEM_SETS)/masters
	for f in problem_sets/week*.md; do w=$$(basename $${f%.md}); \
	  $(BIN)/jupytext --quiet --to ipynb --output $(PROBLEM_SETS)/masters/$$w.ipynb $$f; \
	  $(BIN)/python -m otter assign $(PROBLEM_SETS)/masters/$$w.ipynb $(PROBLEM_SETS)/$$w >/dev/null; done
	$(PROBLEM_SETS_INTO_SITES)
	@echo "The problem sets are in $(PROBLEM_SETS)/weekNN/{student,autograder}"

# The book as one PDF, through Sphinx's LaTeX builder and XeLaTeX (configured under latex: and
# sphinx.config.latex_* in _config.yml, arranged by book/_ext/xai_book_latex.py). --all re-reads
# every page, so every chapter is executed again (about 13 min on a quiet 2-core machine), exactly
# as `make book` does, and `make pdf` works on its own in a fresh clone. The empty _build/mathjax
# only quiets the check of html_extra_path (a warning, fatal under -W); the PDF does not use MathJax.
PDF_BUILD := $(JB) --builder pdflatex --all -n -W --keep-going
# Every page of the website links the book's PDF at its root, explaining-cnns.pdf: the website
# build copies the PDF there when it exists and puts a one-page stand-in there when it does not
# (book/_ext/xai_book_html.py); a PDF built after the website is copied over the stand-in here.
PDF := $(ROOT)/_build/latex/explaining-cnns.pdf
PDF_INTO_SITE := if [ -d $(ROOT)/_build/html ]; then cp $(PDF) $(ROOT)/_build/html/explaining-cnns.pdf; fi
pdf: $(STAMP) latex-tools
	mkdir -p $(ROOT)/_build/mathjax
	rm -rf $(XAI_MODEL_CACHE)
	$(PDF_BUILD)
	$(PDF_INTO_SITE)
	@echo "The PDF is at $(PDF)"

# make test executes the book once: test-notebooks runs every chapter under nbval, and the plugin
# book/_ext/xai_nbval_cache.py stores each chapter that passed in this jupyter-cache folder (emptied
# first); test-book and test-pdf build the website and the PDF from it. The folder carries a
# fingerprint of xai_helpers and the requirements, and is emptied when they change
# (book/_ext/xai_book_execution.py), so a build never shows outputs of other code.
EXECUTION_CACHE := $(ROOT)/_build/.execution_cache

# XeLaTeX, latexmk, the fonts (GNU FreeFont for text, DejaVu Sans Mono for code) and poppler-utils
# (the PDF test reads the PDF with it), installed from Debian only when one is missing. No
# recommends: they would add a Java runtime and several hundred MB that the book does not use.
LATEX_PACKAGES := latexmk texlive-xetex texlive-latex-extra texlive-fonts-recommended fonts-freefont-otf fonts-dejavu-core poppler-utils
latex-tools:
	@missing=$$(for p in $(LATEX_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "== installing" $$missing "(Debian packages)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; fi

test: test-unit typecheck lint test-wheel test-api test-notebooks test-book test-book-student test-slides test-pdf test-problem-sets test-site test-colab

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests -q --ignore=tests/site --ignore=tests/colab --ignore=tests/packaging --ignore=tests/docs --ignore=tests/pdf --ignore=tests/problem_sets

# The type checker, configured in pyproject.toml ([tool.mypy]).
typecheck: $(STAMP)
	$(BIN)/python -m mypy

# The linter, configured in pyproject.toml ([tool.ruff]): pycodestyle, pyflakes, import order.
lint: $(STAMP)
	$(BIN)/ruff check xai_helpers tests benchmarks

# The wheel, built from a snapshot of the working tree, installed into a fresh venv outside the
# repository (dependencies seen from .venv, no download) and run there (about 20 s).
test-wheel: $(STAMP)
	$(BIN)/python -m pytest tests/packaging -q -p no:cacheprovider

# The API reference page (book/api.md) alone, strict, no chapter executed: every module and every
# name of each __all__ must be on it (about 15 s; test-book then builds it with the whole book).
test-api: $(STAMP)
	$(BIN)/python -m pytest tests/docs -q -p no:cacheprovider

# nbval collects .ipynb only: convert the MyST chapters into a scratch folder first. Each chapter
# that passes is stored for test-book and test-pdf (see EXECUTION_CACHE above).
test-notebooks: $(STAMP)
	rm -rf $(NOTEBOOKS) $(EXECUTION_CACHE) $(XAI_MODEL_CACHE) && mkdir -p $(NOTEBOOKS)
	for f in $$(grep -l '^jupytext:' book/*.md); do \
	  $(BIN)/jupytext --quiet --to ipynb --output $(NOTEBOOKS)/$$(basename $${f%.md}).ipynb $$f; done
	cd $(NOTEBOOKS) && XAI_BOOK_EXECUTION_CACHE=$(EXECUTION_CACHE) PYTHONPATH=$(ROOT)/book/_ext \
	  $(ROOT)/$(BIN)/python -m pytest --nbval-lax -p xai_nbval_cache -p no:cacheprovider -q .

# The strict website build, from test-notebooks' execution (a chapter missing from it is executed here).
test-book: $(STAMP) $(MATHJAX)
	XAI_BOOK_EXECUTION_CACHE=$(EXECUTION_CACHE) $(JB) -n -W --keep-going

# The student edition, strict, from the same execution (nothing is executed again).
test-book-student: $(STAMP) $(MATHJAX)
	XAI_BOOK_EXECUTION_CACHE=$(EXECUTION_CACHE) XAI_BOOK_EDITION=student $(JB) --path-output $(STUDENT_BUILD) -n -W --keep-going
	$(STUDENT_INTO_PLACE)

# A deck per chapter from the same execution, into both websites (test-site opens one).
test-slides: $(STAMP) $(REVEAL)
	$(MAKE_SLIDES) --cache $(EXECUTION_CACHE) --out $(SITE_DIR)/slides --out $(STUDENT_DIR)/slides

# The PDF, built as make pdf does but from test-book's execution (EXECUTION_CACHE), then read back:
# pages, images, chapter titles, references, equations, the bibliography, glyphs (tests/pdf).
# XAI_PDF_REQUIRED: here a missing PDF fails instead of skipping.
test-pdf: $(STAMP) latex-tools
	mkdir -p $(ROOT)/_build/mathjax
	XAI_BOOK_EXECUTION_CACHE=$(EXECUTION_CACHE) $(PDF_BUILD)
	$(PDF_INTO_SITE)
	XAI_PDF_REQUIRED=1 $(BIN)/python -m pytest tests/pdf -q -p no:cacheprovider

# Every problem set, built by `make problem-sets`, graded with `otter run` as a lecturer would
# (tests/problem_sets, about a minute): the master's solution gets full marks, the student notebook
# as handed out gets none, and it holds no solution and no hidden test. Then the student notebooks
# go into the websites built before (test-site follows links to them from the teaching page).
test-problem-sets: $(STAMP) problem-sets
	XAI_PROBLEM_SETS_DIR=$(PROBLEM_SETS) $(BIN)/python -m pytest tests/problem_sets -q -p no:cacheprovider
	$(PROBLEM_SETS_INTO_SITES)

# Headless Chromium opens every page of the built site (run test-book or book first; in make test
# the PDF is built before, so the site must serve it), a page of the student edition and a deck
# of slides. It also builds and checks the small fixture book of tests/site/fixture_book, in both
# editions (a few seconds). SITE_DIR=... checks another build. Under `make test` the student edition
# and the decks must be there; on their own, the tests of what was not built are skipped. The
# problem sets are assigned and copied into the sites first (the teaching page links them).
test-site: $(STAMP) chromium problem-sets
	XAI_SITE_DIR=$(SITE_DIR) XAI_STUDENT_SITE_DIR=$(STUDENT_DIR) \
	  XAI_TEACHING_KIT_REQUIRED=$(if $(filter test,$(MAKECMDGOALS)),1,) \
	  $(BIN)/python -m pytest tests/site -q -p no:cacheprovider

# Refresh the README's screenshots from the current build.
screenshots: $(STAMP) chromium
	XAI_SITE_DIR=$(SITE_DIR) XAI_SCREENSHOT_DIR=$(ROOT)/docs/screenshots $(BIN)/python -m pytest tests/site -q -p no:cacheprovider -k screenshots

chromium:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  echo "== installing chromium and chromium-driver (Debian packages)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; fi

# A Colab start, simulated: a fresh venv with torch + torchvision (+ a kernel), then chapter 01
# run end to end with google.colab present, so that its setup cell installs xai_helpers.
test-colab: $(STAMP)
	$(BIN)/python -m pytest tests/colab -q -p no:cacheprovider -m colab

# Colab opens notebooks, not MyST: every chapter book/NN_*.md gets a book/NN_*.ipynb beside it,
# without outputs (tests/test_notebooks_sync.py fails when one is missing or out of date).
# --update keeps the cell ids of unchanged cells, so regenerating leaves unchanged notebooks alone.
# Colab renders plain Markdown: book/_ext/colab_markdown.py then rewrites the MyST roles and
# directives of the text cells (citations as "(Author, year)", equation numbers, admonitions...).
notebooks: $(STAMP)
	for f in book/[0-9][0-9]_*.md; do \
	  $(BIN)/jupytext --quiet --update --to ipynb --output $${f%.md}.ipynb $$f; done
	for nb in book/[0-9][0-9]_*.ipynb; do [ -f "$${nb%.ipynb}.md" ] || rm -v "$$nb"; done
	$(BIN)/python book/_ext/colab_markdown.py book/[0-9][0-9]_*.ipynb

# The robustness sweep (tests/robustness/sweep.py): every trained-model finding of the book over
# training seeds 0-9 under five numerical settings, with the worst margin of each claim. Hours on
# two cores, so not part of `make test`; run it before changing a chapter that trains models.
# ROBUSTNESS_ARGS=... passes options (--seeds, --settings, --only).
test-robustness: $(STAMP)
	rm -f $(ROOT)/_build/robustness.jsonl
	env -u XAI_MODEL_CACHE $(BIN)/python tests/robustness/sweep.py --out $(ROOT)/_build/robustness.jsonl $(ROBUSTNESS_ARGS)

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f; done

clean:
	rm -rf _build book/_build .pytest_cache
