# ortserve: `make demo` runs registry → export → serve → answer; `make test` runs the suite. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_PORT ?= 50051

.PHONY: venv demo demo-server test protos lint bench clean

venv: $(STAMP)

# torch first, pinned: 2.13.0 is the CPU build on this machine's disk; an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/python scripts/demo.py --port $(DEMO_PORT)

# Serve what `make demo` exported, in the foreground, for the README's grpcurl commands (Ctrl-C stops it).
demo-server: venv
	$(BIN)/python scripts/demo.py --port $(DEMO_PORT) --serve-only

test: venv
	$(BIN)/python -m pytest

protos: venv
	$(BIN)/python protos/generate.py

lint: venv
	$(BIN)/ruff check cli client server export protos/generate.py tests scripts
	$(BIN)/mypy cli client server export

clean:
	rm -rf build dist demo-work *.egg-info
