# ortserve images. The default (last) stage is the server: ONNX Runtime + tokenizers + gRPC, no torch.
#   make image                                                  # both images with podman (see the README)
#   docker build -t ortserve:0.1.0 .                            # server
#   docker build --build-arg SERVER_EXTRA=server-slim -t ortserve:0.1.0-slim .   # server without the MLflow client
#   docker build --target export -t ortserve-export:0.1.0 .     # the export job (torch CPU, transformers, optimum)
#   docker run -p 50051:50051 -v /srv/models:/models -e ORTSERVE_MODELS="sentiment=/models/sentiment" ortserve:0.1.0
# `make image-test` (tests/test_image.py) runs the built server image under runc: read-only root, uid 10001, a mounted
# model, the cache on a writable mount; health, Classify, V2, this HEALTHCHECK inside, SIGTERM drain, cache reuse.
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: turn the source tree into a wheel ---------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
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
FROM ${PYTHON_IMAGE} AS export
# torch first, from PyTorch's CPU index: an unpinned torch from PyPI pulls a multi-GB CUDA build. A mirror of that
# index (or a local wheel directory served over HTTP) can stand in for it.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/ortserve/bin:$PATH
COPY --from=build /dist/*.whl /tmp/
RUN python -m venv /opt/ortserve \
    && /opt/ortserve/bin/pip install --index-url "${TORCH_INDEX_URL}" "torch==2.13.0" \
    && WHEEL="$(ls /tmp/ortserve-*.whl)" \
    && /opt/ortserve/bin/pip install "${WHEEL}[export]" \
    && rm /tmp/*.whl \
    && useradd --create-home --uid 10001 ortserve
USER ortserve
WORKDIR /home/ortserve
ENTRYPOINT ["ortserve", "export"]

# --- server-venv: the server's virtual environment, built apart so that the wheel and pip stay out of the image -----
FROM ${PYTHON_IMAGE} AS server-venv
# `server` reads every registry the MLflow client reads (SQLite and file stores included); `server-slim` leaves the
# MLflow client out (about 100 MB less): mounted artifact directories and MLflow registries served over HTTP only.
ARG SERVER_EXTRA=server
# The dependencies first, read from pyproject.toml alone: a change to the code or the README reinstalls the wheel only.
COPY pyproject.toml scripts/image/extra_requirements.py /tmp/requirements/
RUN python -m venv /opt/ortserve \
    && python /tmp/requirements/extra_requirements.py /tmp/requirements/pyproject.toml "${SERVER_EXTRA}" \
        > /tmp/requirements/requirements.txt \
    && /opt/ortserve/bin/pip install --no-cache-dir -r /tmp/requirements/requirements.txt
COPY --from=build /dist/*.whl /tmp/
# `pip check` fails the build if the wheel asks for something the step above did not install. pip and setuptools
# leave the venv once it is installed: nothing installs into a running server.
RUN WHEEL="$(ls /tmp/ortserve-*.whl)" \
    && /opt/ortserve/bin/pip install --no-cache-dir --no-deps "${WHEEL}[${SERVER_EXTRA}]" \
    && /opt/ortserve/bin/pip check \
    && /opt/ortserve/bin/pip uninstall --yes --quiet pip setuptools

# --- runtime: the server's venv, as a non-root user ----------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PATH=/opt/ortserve/bin:$PATH \
    ORTSERVE_HOST=0.0.0.0 \
    ORTSERVE_PORT=50051 \
    ORTSERVE_HTTP_PORT=8080 \
    ORTSERVE_CACHE_DIR=/var/cache/ortserve
# The cache directory belongs to the user, so that a volume mounted there (compose) starts out writable by it.
RUN useradd --create-home --uid 10001 ortserve \
    && install -d -o ortserve -g ortserve /var/cache/ortserve
COPY --from=server-venv /opt/ortserve /opt/ortserve
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
