"""ortserve server: serves exported ONNX text classifiers over gRPC (install with `pip install 'ortserve[server]'`).

Empty on purpose: importing one module (`ortserve.server.runtime` for the export's parity check,
`ortserve.server.healthcheck` for the container's probe) must not load the gRPC server, Prometheus and reflection.
Import what you need from its module, e.g. `from ortserve.server.app import OrtServer`.
"""
