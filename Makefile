# Two commands do all the set-up on a fresh machine:
#   make test   create .venv from the pins, run the unit tests and nbval on the smoke profile
#   make book   create .venv, run the whole study (quick profile) through the workflow, build the book
# Variables: PROFILE (default quick), CORES (default: all cores).

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vstain-installed
PROFILE ?= quick
CORES ?= $(shell nproc)

.PHONY: venv sysdeps test test-fast test-notebooks test-book book workflow dryrun-paper clean-results help

help:
	@echo "make book   - set up .venv, run the study ($(PROFILE) profile), build book/_build/html"
	@echo "make test   - set up .venv, run pytest and nbval (smoke profile)"
	@echo "make test-fast - the unit tests without those marked slow (the loop while developing)"

# The venv is rebuilt only when the pins or the package metadata change: a second run installs nothing.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP) sysdeps

# PyVista renders off-screen through EGL (Debian: libegl-mesa0). Installed when missing and possible.
sysdeps:
	@if command -v dpkg >/dev/null && ! dpkg -s libegl-mesa0 >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -q libegl-mesa0 >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q libegl-mesa0 >/dev/null)) \
	      || echo "warning: could not install libegl-mesa0; 3D renderings will be skipped"; \
	  else echo "warning: libegl-mesa0 missing (sudo apt-get install libegl-mesa0); 3D renderings will be skipped"; fi; \
	fi

test: venv
	$(BIN)/python -m pytest -q tests vstain
	$(MAKE) --no-print-directory test-notebooks test-book

# The loop while developing: the unit tests and doctests without the slow ones (pipeline runs, training);
# `make test` still runs every test.
test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow" tests vstain

# nbval executes every chapter notebook top to bottom on the smoke profile (errors fail the target). The chapters
# read what the stages wrote, so the smoke workflow's stages run first (up to each stage's record, no notebooks).
test-notebooks: venv
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake -s workflow/Snakefile --cores $(CORES) --config profile=smoke \
	  --until evaluate frc volume uncertainty evaluate_he sweep register_cases
	VSTAIN_PROFILE=smoke PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -o addopts="" --nbval-lax notebooks

# The smoke workflow end to end: papermill chapters, then the book, checked page by page and in
# headless Chromium (Debian's chromium + chromium-driver; that check is skipped where they are missing).
test-book: venv
	VSTAIN_BUILD_BOOK=1 PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -rs tests/test_book_build.py tests/test_book_browser.py

workflow: venv
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake -s workflow/Snakefile --cores $(CORES) --config profile=$(PROFILE) --keep-going

book: venv
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake -s workflow/Snakefile all --cores $(CORES) --config profile=$(PROFILE)
	@echo "Book: $(abspath book/_build/html/index.html)"

dryrun-paper: venv
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake -s workflow/Snakefile all --dry-run --config profile=paper

clean-results:
	rm -rf results/$(PROFILE) book/_build book/chapters
