"""Why a connection failed, in words that name the fix.

gRPC reports most transport failures as UNAVAILABLE with a detail that does not say what to change: plaintext to a
TLS port and mutual TLS without a client certificate both read `Socket closed`. When a call fails that way, the
client looks once at the server's first address with the standard library (a TCP connect, then a TLS handshake that
verifies nothing, since it only asks whether the port speaks TLS and wants a client certificate) and says what to
do. It runs only on that failure path, never on a working call, and it sends no request data.
"""

from __future__ import annotations

import re
import socket
import ssl

from .channel import ChannelConfig, target_addresses
from .errors import InferenceError

#: Seconds each step of the look (connect, handshake, waiting for a client-certificate alert) may take.
PROBE_TIMEOUT_S = 1.0

#: Where the client's TLS settings go, named in hints.
ROOT_CERTIFICATES_KNOBS = "--root-certificates / ORTSERVE_ROOT_CERTIFICATES / root_certificates="
CLIENT_CERTIFICATE_KNOBS = (
    "--client-certificate and --client-key / ORTSERVE_CLIENT_CERTIFICATE and ORTSERVE_CLIENT_KEY / "
    "client_certificate= and client_key="
)

#: Details gRPC gives for failures of the connection itself (not answers of a server).
_TRANSPORT_FAILURE = re.compile(
    r"failed to connect|connections to all backends failing|Socket closed|Connection reset|Connection refused|"
    r"handshake|Broken pipe|errors resolving|DNS resolution failed|Endpoint read failed|Timeout occurred",
    re.IGNORECASE,
)


def explained(failure: InferenceError, config: ChannelConfig) -> InferenceError:
    """`failure` with a hint naming the fix when it is a connection failure the client can explain, else itself."""
    if failure.code.name != "UNAVAILABLE" or failure.hint or not _TRANSPORT_FAILURE.search(failure.details):
        return failure
    hint = connection_hint(config, failure.details)
    return failure.replaced(hint=hint) if hint else failure


def connection_hint(config: ChannelConfig, details: str) -> str | None:
    """What to change so that a client configured by `config` can connect, judging by gRPC's `details` and by a look
    at the server's first address; None when nothing clear can be said."""
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return (
            "the server's certificate is not signed by the root certificates this client trusts: pass the CA "
            f"certificate that issued it ({ROOT_CERTIFICATES_KNOBS})"
        )
    if match := re.search(r"Peer name (\S+) is not in peer certificate", details):
        return (
            f"the server's certificate does not name {match[1]}: dial a name the certificate carries, or set the "
            "name to check (tls_server_name= in Python)"
        )
    addresses = target_addresses(config.target)
    if not addresses:
        return None
    host, _, port_text = addresses[0].rpartition(":")
    host, port = host.strip("[]"), int(port_text)
    where = addresses[0]
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        return f"the host name {host!r} of target {config.target!r} does not resolve: check the target"
    try:
        with socket.socket(family, kind, protocol) as raw:
            raw.settimeout(PROBE_TIMEOUT_S)
            raw.connect(address)
            speaks_tls, wants_client_certificate = _tls_probe(raw, host)
    except ConnectionRefusedError:
        return (
            f"nothing listens on {where} (connection refused): start the server, or point the client at its "
            "address (the target: --target or ORTSERVE_TARGET)"
        )
    except OSError:
        return None  # a timeout or a network error: gRPC's own words are as good as any
    return _tls_hint(config, where, speaks_tls, wants_client_certificate)


def _tls_probe(raw: socket.socket, host: str) -> tuple[bool, bool]:
    """(does the port speak TLS, does it refuse a client without a certificate), from one handshake that trusts
    anything and presents no certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with context.wrap_socket(raw, server_hostname=host or None) as tls:
            try:
                # TLS 1.3: a server that requires a client certificate says so after the handshake, with an alert;
                # one that does not sends its HTTP/2 SETTINGS (or waits for ours).
                first = tls.recv(1)
            except (ssl.SSLError, ConnectionError):
                return True, True
            except TimeoutError:
                return True, False
            return True, not first  # no byte: the server closed the connection after the handshake
    except ssl.SSLError as exc:
        # TLS 1.2 asks for the certificate within the handshake and fails it; a plaintext port answers a ClientHello
        # with bytes that are no TLS record (or closes).
        if "CERTIFICATE_REQUIRED" in str(exc) or "HANDSHAKE_FAILURE" in str(exc):
            return True, True
        return False, False
    except (ConnectionError, TimeoutError):
        return False, False


def _tls_hint(config: ChannelConfig, where: str, speaks_tls: bool, wants_client_certificate: bool) -> str | None:
    mutual = f"; it also requires a client certificate (mutual TLS): {CLIENT_CERTIFICATE_KNOBS}"
    if speaks_tls and not config.secure:
        return (
            f"the server at {where} speaks TLS and this client plaintext: pass the CA certificate that issued the "
            f"server's ({ROOT_CERTIFICATES_KNOBS}), or tls=True for a publicly trusted certificate"
            + (mutual if wants_client_certificate else "")
        )
    if not speaks_tls and config.secure:
        return (
            f"the server at {where} speaks plaintext and this client TLS: drop the root certificates "
            f"({ROOT_CERTIFICATES_KNOBS}) and tls=, or turn TLS on at the server (--tls-cert-file, --tls-key-file)"
        )
    if speaks_tls and wants_client_certificate:
        if config.client_certificate is None:
            return f"the server at {where} requires a client certificate (mutual TLS): pass {CLIENT_CERTIFICATE_KNOBS}"
        return (
            f"the server at {where} closed the TLS handshake: it may not trust this client certificate (it must be "
            "issued by a CA in the server's --tls-client-ca-file)"
        )
    return None
