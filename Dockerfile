# ortserve images. The default (last) stage is the server: ONNX Runtime + tokenizers + gRPC, no torch.
#   docker build -t ortserve .                                  # server
#   docker build --target export -t ortserve-export .           # the export job (torch CPU, transformers, optimum)
#   docker run -p 50051:50051 -v /srv/models:/models -e ORTSERVE_MODELS="sentiment=/models/sentiment" ortserve
# tests/test_dockerfile.py replays the server stage without a container engine (wheel → fresh venv → [server] →
# non-root user → this HEALTHCHECK passes).

# --- build: turn the source tree into a wheel ---------------------------------------------------------------------
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir "build>=1.2"
COPY pyproject.toml README.md ./
COPY cli cli
COPY client client
COPY server server
COPY export export
COPY contract contract
COPY protos protos
RUN python -m build --wheel --outdir /dist

# --- export: the batch job that turns registry models into ONNX artifacts (`ortserve export ...`) --------------------
FROM python:3.11-slim AS export
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/ortserve/bin:$PATH
COPY --from=build /dist/*.whl /tmp/
# torch first, from PyTorch's CPU index: an unpinned torch from PyPI pulls a multi-GB CUDA build.
RUN python -m venv /opt/ortserve \
    && /opt/ortserve/bin/pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
    && WHEEL="$(ls /tmp/ortserve-*.whl)" \
    && /opt/ortserve/bin/pip install "${WHEEL}[export]" \
    && rm /tmp/*.whl \
    && useradd --create-home --uid 10001 ortserve
USER ortserve
WORKDIR /home/ortserve
ENTRYPOINT ["ortserve", "export"]

# --- runtime: the [server] extra only, in a virtual environment, as a non-root user -------------------------------
FROM python:3.11-slim AS runtime
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/ortserve/bin:$PATH \
    ORTSERVE_HOST=0.0.0.0 \
    ORTSERVE_PORT=50051 \
    ORTSERVE_HTTP_PORT=8080 \
    ORTSERVE_CACHE_DIR=/var/cache/ortserve
COPY --from=build /dist/*.whl /tmp/
# The cache directory belongs to the user, so that a volume mounted there (compose) starts out writable by it.
RUN python -m venv /opt/ortserve \
    && WHEEL="$(ls /tmp/ortserve-*.whl)" \
    && /opt/ortserve/bin/pip install "${WHEEL}[server]" \
    && rm /tmp/*.whl \
    && useradd --create-home --uid 10001 ortserve \
    && install -d -o ortserve -g ortserve /var/cache/ortserve
USER 10001
WORKDIR /home/ortserve
# gRPC: ortserve.v1, the Open Inference Protocol (inference.GRPCInferenceService), health and reflection.
# HTTP: the same over REST/JSON (Open Inference Protocol, MLflow's /invocations, /docs); ORTSERVE_HTTP_PORT= turns it off.
EXPOSE 50051 8080
# SERVING only once every model is loaded and warmed up; start-period covers model download and load.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "ortserve.server.healthcheck"]
# SIGTERM (docker stop): drain, then finish in-flight calls within ORTSERVE_GRACE_PERIOD_S, then exit.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ortserve", "serve"]
