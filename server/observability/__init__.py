"""What the server tells operators: Prometheus `metrics`, OpenTelemetry `tracing`, `logs` (text or JSON), and the
`call_context` record of each call that all three read. The interceptor that fills them is
`ortserve.server.interceptors.observing`."""
