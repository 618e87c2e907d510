"""How the clients build their gRPC channel: target parsing, service config, keepalive, TLS; shared by sync and async.

Everything a channel needs lives in one frozen `ChannelConfig`, so the sync and async clients (and the process-wide
client cache) build identical channels from the same value and can compare configurations by equality.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from ortserve.v1 import inference_pb2 as pb

from .tracing import AsyncTracingInterceptor, traced_channel, tracing_available

#: Full name of the Inference service, from the generated descriptor (so a renamed proto package cannot drift).
INFERENCE_SERVICE = pb.DESCRIPTOR.services_by_name["Inference"].full_name


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Transparent retries of failed calls, done by gRPC itself from the service config.

    UNAVAILABLE, CANCELLED and RESOURCE_EXHAUSTED are retried by default. UNAVAILABLE means the call did not reach a
    model (a replica draining or restarting, a connection dropped, a model still loading). A CANCELLED that comes
    from the server means a replica stopped with the call still in its transport, not yet handed to ortserve (a call
    the caller cancels itself is never retried). Classify is a pure function of its request, so sending either
    again, to the next replica of the round-robin, is safe; with the server's drain (NOT_SERVING, then UNAVAILABLE,
    then stop), a rolling restart is invisible to callers.

    RESOURCE_EXHAUSTED means a replica is overloaded: it is retried, never at once. When the server says when
    (its `grpc-retry-pushback-ms` trailer, sent with every refusal of an overloaded model), gRPC waits that long;
    a refusal by the gRPC core's concurrency limit carries none, and gRPC waits a random time up to the current
    back-off bound, which doubles per attempt (jittered exponential back-off). Retry throttling stops retries
    altogether while most attempts fail. A call's deadline bounds all of it. DEADLINE_EXCEEDED is left to the
    caller: the time it had is spent. When a model refused the call at once for the work queued ahead of it, the
    refusal carries a pushback too, which the client hands to the caller as `InferenceError.retry_after_s`: a caller
    that sends the call again waits that long first (see `InferenceError`).
    """

    max_attempts: int = 5
    """Attempts in all, the first one included (gRPC caps this at 5)."""
    initial_backoff_s: float = 0.1
    """Upper bound of the first random back-off; each later bound is multiplied by `backoff_multiplier`."""
    max_backoff_s: float = 2.0
    """Largest back-off bound."""
    backoff_multiplier: float = 2.0
    """Growth of the back-off bound per attempt."""
    retryable_status_codes: tuple[str, ...] = ("UNAVAILABLE", "CANCELLED", "RESOURCE_EXHAUSTED")
    """Status names that are retried."""
    throttle_max_tokens: int = 100
    """Retry throttling (a token bucket per channel): every failure takes a token, every success gives back
    `throttle_token_ratio`; below half the bucket, gRPC stops retrying so a fleet-wide outage is not multiplied."""
    throttle_token_ratio: float = 1.0
    """With 1, retries go on while no more than about half of the attempts fail: one of two replicas restarting
    (half the first attempts refused, each retried on the other) is absorbed; a fleet-wide outage stops retries
    after ~50 failures. gRPC's example value of 0.1 stops them once a tenth of attempts fail, which a rolling
    restart of a small fleet exceeds."""


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """Everything that decides how a client's channel is built. Equal configs build equal channels."""

    target: str
    """`host:port`, `dns:///host:port` (every address the name resolves to), or several replicas as
    `ipv4:10.0.0.1:50051,10.0.0.2:50051`; a bare `a:1,b:2` list of IP literals gets the `ipv4:`/`ipv6:` scheme added."""
    root_certificates: bytes | None = None
    """PEM root certificates to verify the server with; setting it (or `tls`) makes the channel use TLS."""
    tls: bool = False
    """Use TLS with the system's root certificates when `root_certificates` is not given."""
    tls_server_name: str | None = None
    """Name to verify the server's certificate against instead of the target's host (`grpc.ssl_target_name_override`),
    for certificates that do not name the address dialled (tests, private CAs)."""
    load_balancing: str = "round_robin"
    """`round_robin` spreads calls over every resolved address; `pick_first` sticks to one connection."""
    retry: RetryPolicy | None = field(default_factory=RetryPolicy)
    """Retries done by gRPC; None disables them."""
    health_check_service: str | None = None
    """With a service name (`""` for the whole server, or a model name), round-robin only sends to replicas whose
    grpc.health.v1 status for it is SERVING: replicas still loading or draining for shutdown get no calls. Off by
    default because a replica with one failed model reports `""` NOT_SERVING and would get no calls at all."""
    keepalive_time_s: float = 60.0
    """Send an HTTP/2 ping after this long without activity on a connection that has calls in flight, so a dead
    peer (a replica killed without closing its sockets, a NAT that dropped the flow) is noticed before the deadline.
    Servers with default settings refuse pings more often than every 5 minutes *without data*; calls here are short,
    so pings are rare and each answer resets the server's count. Lower it only with a matching server setting."""
    keepalive_timeout_s: float = 20.0
    """How long to wait for the ping's answer before the connection is declared dead."""
    max_message_bytes: int = 16 * 1024 * 1024
    """Largest message received (responses with every label of hundreds of texts fit easily)."""
    extra_options: tuple[tuple[str, Any], ...] = ()
    """Further raw gRPC channel arguments, appended last (they win)."""
    client_certificate: bytes | None = None
    """PEM certificate chain this client presents to a server that requires client certificates (mutual TLS)."""
    client_key: bytes | None = None
    """PEM private key of `client_certificate`."""
    trace_context: bool = True
    """Send the caller's OpenTelemetry trace context with every call (a CLIENT span and its `traceparent`), so the
    server's spans join the caller's trace. Takes effect only where opentelemetry is installed (`ortserve[tracing]`);
    the slim client adds nothing."""

    def __post_init__(self) -> None:
        check_target(self.target)

    @property
    def secure(self) -> bool:
        return self.tls or self.root_certificates is not None or self.client_certificate is not None


#: Target schemes gRPC resolves; a target starting with one is passed through untouched.
_SCHEMES = ("ipv4:", "ipv6:", "dns:", "unix:", "unix-abstract:", "vsock:", "xds:")
#: Schemes whose targets name no TCP port (or get it from elsewhere): not checked for one.
_PORTLESS_SCHEMES = ("unix:", "unix-abstract:", "vsock:", "xds:")
#: Port `ortserve serve` listens on by default, suggested when a target names none.
DEFAULT_PORT = 50051
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_TLS_URL_SCHEMES = ("https", "grpcs")


def check_target(target: str) -> None:
    """Raise `ValueError` naming the fix for targets gRPC would misread: a URL (`http://host:port`: gRPC takes
    `http` for a host name) and an address with no port (gRPC would quietly dial 443)."""
    stripped = target.strip()
    url = _URL_SCHEME.match(stripped)
    if url and f"{url[1].lower()}:" not in _SCHEMES:
        address = stripped[url.end() :].rstrip("/")
        tls = (
            " and TLS on (root certificates: root_certificates=, --root-certificates or ORTSERVE_ROOT_CERTIFICATES; "
            "or tls=True for a publicly trusted certificate)"
            if url[1].lower() in _TLS_URL_SCHEMES
            else ""
        )
        raise ValueError(
            f"target {target!r} is a URL, but gRPC targets have no {url[1]}:// scheme: give {address!r}{tls}"
        )
    if not stripped or stripped.startswith(_PORTLESS_SCHEMES):
        return
    for address in _addresses(stripped):
        if not _has_port(address):
            host = f"[{address}]" if _is_ipv6(address) else address
            raise ValueError(
                f"target {target!r} names no port: give HOST:PORT, e.g. {host}:{DEFAULT_PORT} (the port ortserve "
                "serve listens on by default); gRPC would quietly dial 443"
            )


def target_addresses(target: str) -> list[str]:
    """The `HOST:PORT` addresses a target names (empty for schemes without TCP addresses, e.g. unix:)."""
    stripped = target.strip()
    if stripped.startswith(_PORTLESS_SCHEMES):
        return []
    return _addresses(stripped)


def _addresses(target: str) -> list[str]:
    if target.startswith(("ipv4:", "ipv6:")):
        target = target.split(":", 1)[1]
    elif target.startswith("dns:"):
        target = target[len("dns:") :]
        if target.startswith("//"):  # dns://[AUTHORITY]/NAME:PORT
            target = target[2:].split("/", 1)[-1]
    return [part.strip() for part in target.split(",") if part.strip()]


def _has_port(address: str) -> bool:
    if address.startswith("["):  # [IPv6]:PORT
        return re.fullmatch(r"\[[^\]]+\]:\d+", address) is not None
    if _is_ipv6(address):  # a bare IPv6 literal: its colons are not a port
        return False
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit())


def _is_ipv6(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).version == 6
    except ValueError:
        return False


def normalize_target(target: str) -> str:
    """Return `target` as a gRPC target URI, adding `ipv4:`/`ipv6:` to a bare comma-separated list of replicas.

    gRPC resolves a comma-separated list only under the `ipv4:` or `ipv6:` scheme, and only of IP literals; host
    names must go through one `dns:///name:port` that resolves to every replica.
    """
    target = target.strip()
    if not target:
        raise ValueError("the server target is empty; give HOST:PORT, dns:///HOST:PORT or ipv4:IP:PORT,IP:PORT")
    if "," not in target or target.startswith(_SCHEMES):
        return target
    addresses = [part.strip() for part in target.split(",") if part.strip()]
    kinds = {_ip_version(address) for address in addresses}
    if kinds == {4}:
        return "ipv4:" + ",".join(addresses)
    if kinds == {6}:
        return "ipv6:" + ",".join(addresses)
    raise ValueError(
        f"target {target!r}: a list of replicas must be IP:PORT literals of one family (e.g. "
        "ipv4:10.0.0.1:50051,10.0.0.2:50051); for host names use one dns:///NAME:PORT that resolves to every replica"
    )


def _ip_version(address: str) -> int | None:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        return ipaddress.ip_address(host.strip("[]")).version
    except ValueError:
        return None


def service_config(config: ChannelConfig) -> dict[str, Any]:
    """The gRPC service config of a channel: load balancing, retries and optional client-side health checking."""
    method: dict[str, Any] = {"name": [{"service": INFERENCE_SERVICE}]}
    document: dict[str, Any] = {"loadBalancingConfig": [{config.load_balancing: {}}], "methodConfig": [method]}
    if config.retry is not None:
        retry = config.retry
        method["retryPolicy"] = {
            "maxAttempts": retry.max_attempts,
            "initialBackoff": f"{retry.initial_backoff_s}s",
            "maxBackoff": f"{retry.max_backoff_s}s",
            "backoffMultiplier": retry.backoff_multiplier,
            "retryableStatusCodes": list(retry.retryable_status_codes),
        }
        document["retryThrottling"] = {
            "maxTokens": retry.throttle_max_tokens,
            "tokenRatio": retry.throttle_token_ratio,
        }
    if config.health_check_service is not None:
        document["healthCheckConfig"] = {"serviceName": config.health_check_service}
    return document


def channel_options(config: ChannelConfig) -> list[tuple[str, Any]]:
    """The channel arguments of `config`."""
    options: list[tuple[str, Any]] = [
        ("grpc.service_config", json.dumps(service_config(config))),
        # Our service config is the only one: do not let a DNS TXT record (or its lookup time) replace it.
        ("grpc.service_config_disable_resolution", 1),
        ("grpc.enable_retries", 1 if config.retry is not None else 0),
        ("grpc.keepalive_time_ms", int(config.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout_s * 1000)),
        # Ping only while calls are in flight: an idle client has nothing to protect, and servers punish idle pings.
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.max_receive_message_length", config.max_message_bytes),
    ]
    if config.tls_server_name:
        options.append(("grpc.ssl_target_name_override", config.tls_server_name))
    options.extend(config.extra_options)
    return options


def channel_credentials(config: ChannelConfig) -> grpc.ChannelCredentials | None:
    """TLS credentials when the config asks for TLS, else None (plaintext)."""
    if not config.secure:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=config.root_certificates,
        private_key=config.client_key,
        certificate_chain=config.client_certificate,
    )


def create_channel(config: ChannelConfig) -> grpc.Channel:
    """A blocking-API channel for `config`."""
    target, options, credentials = normalize_target(config.target), channel_options(config), channel_credentials(config)
    if credentials is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        channel = grpc.secure_channel(target, credentials, options=options)
    return traced_channel(channel) if _propagates_trace_context(config) else channel


def create_aio_channel(config: ChannelConfig) -> grpc.aio.Channel:
    """An asyncio channel for `config`; create it inside the event loop that will use it."""
    target, options, credentials = normalize_target(config.target), channel_options(config), channel_credentials(config)
    interceptors = [AsyncTracingInterceptor()] if _propagates_trace_context(config) else None
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)


def _propagates_trace_context(config: ChannelConfig) -> bool:
    # Without opentelemetry the interceptors would only pass calls through: leave them out of the slim client's path.
    return config.trace_context and tracing_available()


def read_root_certificates(certificates: bytes | str | Path | None, what: str = "root certificates") -> bytes | None:
    """Accept PEM bytes, PEM text, or a path to a PEM file; return PEM bytes. `what` names it in errors."""
    if certificates is None or isinstance(certificates, bytes):
        return certificates
    if isinstance(certificates, str) and "-----BEGIN" in certificates:
        return certificates.encode()
    path = Path(certificates)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None
