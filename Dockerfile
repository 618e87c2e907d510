# ortserve server image: ONNX Runtime + tokenizers + gRPC, no torch.
#   docker build -t ortserve .
#   docker run -p 50051:50051 -v /srv/models:/models -e ORTSERVE_MODELS="sentiment=/models/sentiment" ortserve

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

# --- runtime: the [server] extra only, in a virtual environment, as a non-root user -------------------------------
FROM python:3.11-slim AS runtime
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/ortserve/bin:$PATH \
    ORTSERVE_HOST=0.0.0.0 \
    ORTSERVE_PORT=50051
COPY --from=build /dist/*.whl /tmp/
RUN python -m venv /opt/ortserve \
    && WHEEL="$(ls /tmp/ortserve-*.whl)" \
    && /opt/ortserve/bin/pip install "${WHEEL}[server]" \
    && rm /tmp/*.whl \
    && useradd --create-home --uid 10001 ortserve
USER ortserve
WORKDIR /home/ortserve
EXPOSE 50051
# SERVING only once every model is loaded and warmed up; start-period covers model download and load.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "ortserve.server.healthcheck"]
# SIGTERM (docker stop) finishes in-flight calls within ORTSERVE_GRACE_PERIOD_S before exiting.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ortserve", "serve"]
