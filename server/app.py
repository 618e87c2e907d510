"""Assembles and runs the gRPC server: the Inference service, health, reflection, signals and shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from ortserve.contract.settings import SERVER_HTTP, configure_mlflow_client
from ortserve.v1 import inference_pb2 as pb
from ortserve.v1 import inference_pb2_grpc as pb_grpc
from ortserve.v2 import grpc_predict_v2_pb2 as pb_v2
from ortserve.v2 import grpc_predict_v2_pb2_grpc as pb_v2_grpc

from .challenger import ChallengerWatcher, RegistryWriteBack, build_challengers
from .errors import ServerStartError
from .interceptors.chain import build_interceptors
from .interceptors.observing import ObservabilityInterceptor
from .model_table import ModelTable, ServedModel
from .observability.logs import NativeStderrCapture
from .observability.metrics import ServerMetrics
from .observability.metrics_endpoint import MetricsEndpoint, ScrapeSecurity
from .observability.tracing import configure_tracing
from .result_cache import ResultCache
from .security.bearer_tokens import TokenAuthenticator
from .security.tls_credentials import server_credentials
from .service import InferenceService, RequestLimits
from .settings import ServerSettings
from .sources.open_source import open_source, registry_named
from .thread_priority import model_thread_pool
from .transport import InferenceServicer
from .transport_v2 import REQUEST_SCREENS, InferenceV2Servicer
from .types import ModelState
from .watcher import VersionWatcher

if TYPE_CHECKING:
    from .http.listener import HttpListener

log = logging.getLogger("ortserve.server")

INFERENCE_SERVICE = pb.DESCRIPTOR.services_by_name["Inference"].full_name
#: The Open Inference Protocol (KServe V2) service, on the same port and over the same InferenceService.
INFERENCE_V2_SERVICE = pb_v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
#: Health service name of the whole server (the gRPC convention is the empty string).
SERVER_HEALTH = ""
#: Health service name that is SERVING as soon as the server answers, whatever its models do: for liveness probes,
#: which must not restart a process that is loading or retrying a model (readiness probes use SERVER_HEALTH).
LIVENESS_HEALTH = "liveness"
#: Health service names answered without a token when tokens are on (unless --auth-health): the server's, not a
#: model's, so that a caller without a token cannot learn which models are served.
OPEN_HEALTH = frozenset({SERVER_HEALTH, LIVENESS_HEALTH, INFERENCE_SERVICE, INFERENCE_V2_SERVICE})


class OrtServer:
    """One gRPC server serving the models of `settings`. Use `start`, then `wait`, then `stop`."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.port = 0
        # Registry requests fail in seconds, not minutes, so an outage is noticed while polling.
        configure_mlflow_client(SERVER_HTTP, settings.registry_timeout_s)
        if settings.malloc_mmap_threshold_bytes:  # before models load: their files' bytes then go back when freed
            from .memory import set_malloc_mmap_threshold

            set_malloc_mmap_threshold(settings.malloc_mmap_threshold_bytes)
        if settings.shared_arena:  # before the first session: every model then allocates from one arena
            from .memory import register_shared_cpu_arena

            register_shared_cpu_arena()
        # A thread per run slot of every model, plus one per model for its express lane (see batcher.py); as many
        # again for each model's challenger.
        threads = sum(
            (settings.runs_for(spec) + 1) * (2 if settings.rollout(spec)[0] else 1) for spec in settings.models
        )
        # Model threads run below the event loop's priority (settings.model_thread_nice, thread_priority.py).
        self._executor = model_thread_pool(max(2, threads), "ortserve-model", settings.model_thread_nice)
        self._health = health_aio.HealthServicer()
        models = [
            ServedModel(
                spec.name,
                open_source(spec.uri, settings.cache_dir, settings.tracking_uri),
                self._executor,
                settings.batch_limits(spec),
                settings.session_config(spec),
            )
            for spec in settings.models
        ]
        self.table = ModelTable(models, listener=self._on_state_change)
        # Challengers (server/challenger.py): a table, watcher and registry write-back of their own.
        self.challenger_table, self.challengers = build_challengers(settings, self.table, self._executor)
        self.service = InferenceService(
            self.table,
            RequestLimits(settings.max_texts_per_request, settings.max_text_chars, settings.max_request_chars),
            ResultCache(settings.result_cache_bytes),
            {challenger.champion.name: challenger for challenger in self.challengers},
            {spec.name: settings.long_text_policy(spec) for spec in settings.models},
        )
        self.watcher = VersionWatcher(self.table, settings.poll_interval)
        self.challenger_watcher = ChallengerWatcher(self.challenger_table, settings.poll_interval, self.challengers)
        self.write_back = RegistryWriteBack(self.challengers, settings.challenger_report_interval_s)
        # Observability (metrics, request ids for logs, traces): one interceptor, only when something is on; it runs
        # inside the request id and outside error mapping and authentication, so refused calls are counted too.
        self.metrics = (
            ServerMetrics(self.table, challengers=self.challengers) if settings.metrics_port is not None else None
        )
        self.metrics_endpoint: MetricsEndpoint | None = None
        self.tracer = configure_tracing(settings.tracing, settings.otlp_endpoint)
        observing = self.metrics is not None or self.tracer is not None or settings.log_format == "json"
        observability = [ObservabilityInterceptor(self.table, self.metrics, self.tracer)] if observing else []
        # One token check for both doors: the token file is read once, and a reload applies to gRPC and HTTP alike.
        authenticator = TokenAuthenticator.from_sources(settings.auth_token_file, settings.auth_token_env)
        # Every RPC of every service passes this one chain (request id, observability, error → status, auth).
        self._server = grpc.aio.server(
            interceptors=build_interceptors(
                settings, authenticator, extra=observability, open_health=OPEN_HEALTH, screens=REQUEST_SCREENS
            ),
            # gRPC turns SO_REUSEPORT on by default: a second server on a port in use would then start without error
            # and take half the connections. Off unless asked for, so that binding a port in use fails at start.
            options=[("grpc.so_reuseport", 1 if settings.reuse_port else 0)],
            # Overload is shed in the gRPC core, before any Python runs for a call: refusing in Python costs about as
            # much as answering, so at 10x overload the server would spend itself on refusals (see BENCHMARKS.md).
            maximum_concurrent_rpcs=settings.concurrent_rpc_limit(),
        )
        self._tls = server_credentials(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
        self.http: HttpListener | None = None
        if settings.http_port is not None:
            # Imported here: a server without an HTTP port does not load uvicorn.
            from .http.assembly import http_listener

            self.http = http_listener(
                settings,
                self.service,
                accepting=lambda: not self._draining,
                authenticator=authenticator,
                metrics=self.metrics,
                tracer=self.tracer,
            )
        self.http_port = 0
        self._stopped = asyncio.Event()
        self._skip_drain = asyncio.Event()
        self._draining = False

    async def _on_state_change(self, name: str, state: ModelState) -> None:
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        await self._health.set(name, serving if state is ModelState.SERVING else not_serving)
        overall = serving if self.service.all_serving() else not_serving
        await self._health.set(SERVER_HEALTH, overall)
        await self._health.set(INFERENCE_SERVICE, overall)
        await self._health.set(INFERENCE_V2_SERVICE, overall)

    async def start(self) -> int:
        """Bind, start answering (health NOT_SERVING), then load every model; return the bound port."""
        pb_grpc.add_InferenceServicer_to_server(InferenceServicer(self.service), self._server)
        pb_v2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceV2Servicer(self.service, accepting=lambda: not self._draining), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        if self.settings.reflection:
            health_service = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
            reflection.enable_server_reflection(
                (INFERENCE_SERVICE, INFERENCE_V2_SERVICE, health_service, reflection.SERVICE_NAME), self._server
            )
        for name in [SERVER_HEALTH, INFERENCE_SERVICE, INFERENCE_V2_SERVICE, *(m.name for m in self.table)]:
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.http is not None:
            self.http.bind()  # before anything is announced: a port in use stops the start with one line
        if self.metrics is not None and self.settings.metrics_port is not None:
            metrics_host = self.settings.metrics_host or self.settings.host
            self.metrics_endpoint = MetricsEndpoint(
                self.metrics.registry,
                metrics_host,
                self.settings.metrics_port,
                ScrapeSecurity.chosen(
                    self.settings.metrics_tls,
                    self.settings.tls_cert_file,
                    self.settings.tls_key_file,
                    self.settings.metrics_auth_env,
                ),
            )
            scheme = self.metrics_endpoint.scheme
            log.info("metrics on %s://%s:%d/metrics", scheme, metrics_host, self.metrics_endpoint.port)
        address = f"{self.settings.host}:{self.settings.port}"
        try:
            # gRPC core writes its own line about a failed bind to stderr: held back, as the error below says it in
            # one line; kept in the debug log.
            with NativeStderrCapture() as grpc_core:
                if self._tls is None:
                    self.port = self._server.add_insecure_port(address)
                else:
                    self.port = self._server.add_secure_port(address, self._tls[0])
            grpc_core.release()
        except RuntimeError:  # grpc reports a failed bind as a bare RuntimeError, whatever the cause
            log.debug("binding %s failed: %s", address, grpc_core.text.strip())
            raise ServerStartError(
                f"cannot listen on port {self.settings.port} of {self.settings.host}: it is in use by another process "
                "(or the address is not this machine's); stop that process, or pass --port with a free port "
                "(--port 0 picks one)"
            ) from None
        await self._server.start()
        await self._health.set(LIVENESS_HEALTH, health_pb2.HealthCheckResponse.SERVING)
        log.info("ortserve listening on %s:%d (%s)", self.settings.host, self.port, self._protection())
        registry = registry_named([spec.uri for spec in self.settings.models], self.settings.tracking_uri)
        if registry is not None:
            log.info("models:/ URIs resolve in the MLflow registry at %s", registry)
        if self.http is not None:
            self.http_port = await self.http.start()
            scheme = "https" if self.http.tls else "http"
            log.info("HTTP on %s://%s:%d (docs at /docs)", scheme, self.settings.host, self.http_port)
        # Sessions are created on the loop's default executor (asyncio.to_thread): ONNX Runtime's threads inherit
        # the priority of the thread that creates them, so that executor's threads run below the loop too.
        asyncio.get_running_loop().set_default_executor(
            model_thread_pool(min(32, (os.cpu_count() or 1) + 4), "ortserve-load", self.settings.model_thread_nice)
        )
        await asyncio.gather(self.table.load_all(), self.challenger_table.load_all())
        serving = sum(m.state is ModelState.SERVING for m in self.table)
        log.info("%d of %d models serving", serving, len(self.settings.models))
        self.watcher.start()
        self.challenger_watcher.start()
        for challenger in self.challengers:
            challenger.feeder.start()
        self.write_back.start()
        return self.port

    def _protection(self) -> str:
        """How the port is protected, in words for the start-up log line."""
        settings = self.settings
        tls = "plaintext" if self._tls is None else ("mutual TLS" if settings.tls_client_ca_file else "TLS")
        tokens = settings.auth_token_file is not None or bool(settings.auth_token_env)
        return f"{tls}, {'bearer tokens required' if tokens else 'no authentication'}"

    async def wait(self) -> None:
        await self._stopped.wait()

    async def stop(self, grace: float | None = None, drain: float | None = None) -> None:
        """Drain, then stop: report NOT_SERVING and keep answering for `drain` seconds (default `drain_period_s`) so
        that load balancers stop sending; then refuse new calls with UNAVAILABLE, let accepted calls finish (up to
        `grace` seconds, default `grace_period_s`), and release the models. No accepted call is cancelled unless
        the grace period runs out."""
        grace = self.settings.grace_period_s if grace is None else grace
        drain = self.settings.drain_period_s if drain is None else drain
        # A server that never bound its port (a failed start) has nothing to announce: the start's error says it all.
        lifecycle = logging.INFO if self.port else logging.DEBUG
        log.log(
            lifecycle,
            "shutting down: NOT_SERVING, answering for %.1fs more, then finishing in-flight calls (grace %.1fs)",
            drain,
            grace,
        )
        self._draining = True  # V2 ServerReady/ModelReady turn false with gRPC health
        await self.watcher.stop()
        await self.challenger_watcher.stop()
        await self._health.enter_graceful_shutdown()
        if drain > 0:
            try:
                await asyncio.wait_for(self._skip_drain.wait(), drain)
            except asyncio.TimeoutError:
                pass
        # Refuse at the transport (HTTP/2 GOAWAY, listener closed): clients learn at once that this replica is gone
        # and send elsewhere (UNAVAILABLE, retried), instead of each call having to be refused one by one. Calls
        # already handed to ortserve finish within the grace; the few that reached the transport but not the service
        # in the same instant are cancelled by gRPC, and the client retries those too (see client RetryPolicy).
        # Both doors stop together: each refuses new connections and gives the calls it accepted the same grace.
        if self.http is not None:
            await asyncio.gather(self._server.stop(grace), self.http.stop(grace))
        else:
            await self._server.stop(grace)
        unanswered = sum(model.batcher.calls_in_flight for model in self.table)
        if unanswered:
            log.warning("grace period over with %d calls unanswered: they were cancelled", unanswered)
        for challenger in self.challengers:
            await challenger.feeder.stop()
        await self.write_back.stop()
        await asyncio.gather(self.table.close(), self.challenger_table.close())
        for challenger in self.challengers:
            challenger.close()
        self._executor.shutdown(wait=True)
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.stop()
        if self.tracer is not None:
            self.tracer.shutdown()
        self._stopped.set()
        log.log(lifecycle, "stopped")

    def skip_drain(self) -> None:
        """End the drain period of a `stop` in progress now (a second signal: the operator wants out)."""
        self._skip_drain.set()


async def serve(settings: ServerSettings) -> None:
    """Run a server until SIGTERM or SIGINT, then shut it down gracefully.

    SIGTERM (what Kubernetes and process managers send) drains first for `drain_period_s`; SIGINT (Ctrl-C) and a
    second signal skip the drain. Either way, accepted calls finish within `grace_period_s`.
    """
    server = OrtServer(settings)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    drain = settings.drain_period_s

    def on_signal(signum: signal.Signals) -> None:
        nonlocal drain
        if stop_requested.is_set() or signum == signal.SIGINT:
            drain = 0.0
            server.skip_drain()
        stop_requested.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    start = loop.create_task(server.start())
    stop = loop.create_task(stop_requested.wait())
    await asyncio.wait({start, stop}, return_when=asyncio.FIRST_COMPLETED)
    if start.done() and start.exception() is not None:
        stop.cancel()
        await server.stop(grace=0, drain=0)
        raise start.exception()  # type: ignore[misc]
    await stop
    if not start.done():
        start.cancel()
    await server.stop(drain=drain)
