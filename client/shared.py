"""One `InferenceClient` per target and options per process, for code that has nowhere to keep a client.

The drop-in functions and the Spark UDF are plain functions called many times (per text, per Arrow batch); making a
channel per call would pay a TCP and HTTP/2 handshake each time. They ask `shared_client(...)` instead, which keeps
one client per distinct configuration for the life of the process (a Spark Python worker, a gunicorn worker).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from .sync_client import InferenceClient

_clients: dict[tuple[str, tuple[tuple[str, Any], ...]], InferenceClient] = {}
_lock = threading.Lock()


def shared_client(target: str, **options: Any) -> InferenceClient:
    """The process's client for `target` and `options` (keyword arguments of `InferenceClient`), made on first use.

    Thread-safe. Clients survive `fork()`: each one remakes its channel in the child (see `InferenceClient`).
    """
    key = (target, tuple(sorted(options.items())))
    client = _clients.get(key)
    if client is not None:
        return client
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = InferenceClient(target, **options)
        return client


def close_shared_clients() -> None:
    """Close every shared client (tests, or a worker that shuts down cleanly)."""
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # the parent's lock may have been held by a thread that does not exist in the child


os.register_at_fork(after_in_child=_after_fork_in_child)
