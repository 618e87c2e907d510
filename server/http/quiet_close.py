"""Closing a listening socket without resetting connections: what the HTTP door does before it stops listening.

Closing a listening socket resets every connection the kernel has accepted but the server has not yet picked up
(its accept queue). The client of such a connection has already sent its request and reads "connection reset by
peer": it cannot know whether the request ran, so a rolling restart loses it. Before closing, the listener therefore
stops new handshakes (`refuse_new_connections`: a socket filter drops new SYNs, so a client's connect retries and
then finds the port closed, which is safe to resend elsewhere), lets the event loop pick up what the queue already
holds (`wait_for_accept_queue`), and only then closes. Linux only; elsewhere both are no-ops.
"""

from __future__ import annotations

import asyncio
import ctypes
import socket
import struct
import sys
import time

#: `SO_ATTACH_FILTER` (Linux's asm-generic/socket.h; Python's socket module does not name it).
_SO_ATTACH_FILTER = 26

#: A classic BPF program run on every packet that reaches the listening socket, with the packet starting at its TCP
#: header: drop a bare SYN (a new handshake; flags byte 13 has SYN without ACK), keep everything else (the last ACK of
#: a handshake already under way, which completes it into the queue). Each instruction: code, jt, jf, k.
_DROP_NEW_SYNS = (
    (0x30, 0, 0, 13),  # A = packet[13]: the TCP flags
    (0x54, 0, 0, 0x12),  # A &= SYN | ACK
    (0x15, 0, 1, 0x02),  # if A == SYN: next, else skip one
    (0x06, 0, 0, 0),  # return 0: drop
    (0x06, 0, 0, 0xFFFFFFFF),  # return all: keep
)

#: Where `tcp_info.tcpi_unacked` sits (8 one-byte fields, then rto, ato, snd_mss, rcv_mss): for a listening socket
#: the kernel reports its accept queue's length there.
_TCPI_UNACKED_OFFSET = 24


def refuse_new_connections(sock: socket.socket) -> bool:
    """Stop `sock` from completing new handshakes while it keeps listening; False where this is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    program = b"".join(struct.pack("HBBI", *instruction) for instruction in _DROP_NEW_SYNS)
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(_DROP_NEW_SYNS), ctypes.addressof(buffer))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError:
        return False
    return True


def accept_queue_length(sock: socket.socket) -> int | None:
    """Connections the kernel accepted on listening `sock` that the server has not picked up; None if unknown."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):
        return None
    if len(info) < _TCPI_UNACKED_OFFSET + 4:
        return None
    return int(struct.unpack_from("I", info, _TCPI_UNACKED_OFFSET)[0])


async def wait_for_accept_queue(sock: socket.socket, settle_s: float = 0.05, limit_s: float = 1.0) -> None:
    """Return once `sock`'s accept queue has stayed empty for `settle_s` (handshakes under way land in it, and the
    requests of connections just picked up get read), or after `limit_s` at most."""
    deadline = time.monotonic() + limit_s
    empty_since: float | None = None
    while (now := time.monotonic()) < deadline:
        queued = accept_queue_length(sock)
        if queued is None:  # not Linux: give what is under way the settle time, nothing more to go by
            await asyncio.sleep(settle_s)
            return
        if queued:
            empty_since = None
        elif empty_since is None:
            empty_since = now
        elif now - empty_since >= settle_s:
            return
        await asyncio.sleep(0.005)
