"""What the blocking and the asyncio client share: their settings, and one place that documents them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .channel import ChannelConfig, RetryPolicy, read_root_certificates
from .convert import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_CONCURRENCY, bearer_metadata, check_batching

#: Server address when neither the caller nor `ORTSERVE_TARGET` names one.
DEFAULT_TARGET = "localhost:50051"


def default_target() -> str:
    """`ORTSERVE_TARGET`, else `DEFAULT_TARGET`: the address used by callers that take no explicit target."""
    return os.environ.get("ORTSERVE_TARGET", DEFAULT_TARGET)


#: Seconds each request may take unless the call says otherwise (gRPC's own default is no deadline at all).
DEFAULT_TIMEOUT_S = 10.0


class ClientBase:
    """Settings of a client of one ortserve server or a set of replicas.

    `target`: `host:port`, `dns:///host:port`, or replicas as `ipv4:10.0.0.1:50051,10.0.0.2:50051`; calls are spread
    over every address round-robin. `timeout`: default seconds per request. `chunk_size`: most texts per request (keep
    it at or under the server's `max_texts_per_request`, 256 by default). `max_concurrency`: requests of one
    `classify` in flight at once. `token`: sent as `authorization: Bearer <token>` on every call.
    `root_certificates` (PEM bytes, PEM text or a file path) or `tls=True` switch to TLS; `tls_server_name` overrides
    the name checked in the server certificate. `client_certificate` and `client_key` (PEM bytes, text or file
    paths) are presented to a server that requires client certificates (mutual TLS). `retry`: gRPC retries of
    UNAVAILABLE and CANCELLED (a restarting replica; None disables them). `load_balancing`, `health_check_service`,
    `keepalive_time_s`, `channel_options` and `trace_context` (the caller's OpenTelemetry trace context goes with
    every call where opentelemetry is installed): see `ChannelConfig`.
    Failed calls raise `InferenceError`.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        token: str | None = None,
        root_certificates: bytes | str | Path | None = None,
        tls: bool = False,
        tls_server_name: str | None = None,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 - frozen, so one shared default is safe
        load_balancing: str = "round_robin",
        health_check_service: str | None = None,
        keepalive_time_s: float = 60.0,
        channel_options: Sequence[tuple[str, Any]] = (),
        client_certificate: bytes | str | Path | None = None,
        client_key: bytes | str | Path | None = None,
        trace_context: bool = True,
    ):
        check_batching(chunk_size, max_concurrency)
        self.config = ChannelConfig(
            target=target,
            root_certificates=read_root_certificates(root_certificates),
            tls=tls,
            tls_server_name=tls_server_name,
            load_balancing=load_balancing,
            retry=retry,
            health_check_service=health_check_service,
            keepalive_time_s=keepalive_time_s,
            extra_options=tuple(channel_options),
            client_certificate=read_root_certificates(client_certificate, "client certificate"),
            client_key=read_root_certificates(client_key, "client key"),
            trace_context=trace_context,
        )
        if (client_certificate is None) != (client_key is None):
            raise ValueError("client_certificate and client_key go together: give both or neither")
        self.target = target
        self.timeout = timeout
        self.chunk_size = chunk_size
        self.max_concurrency = max_concurrency
        self._metadata = bearer_metadata(token)
        self._closed = False
        self._init_transport()

    def _init_transport(self) -> None:
        """Set up the client's own channel state; called at the end of `__init__`."""
        raise NotImplementedError
