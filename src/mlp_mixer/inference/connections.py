"""The server's connections bounded: a cap on how many are open, and deadlines for a request's headers and body.

uvicorn closes idle keep-alive connections but sets no deadline on a request that is still arriving and no cap on
connections: a few thousand clients sending one header byte every few seconds hold their sockets forever, and at
the process's file limit the server stops accepting anyone. :class:`ConnectionGuard` gives uvicorn's httptools
protocol (the fast one; :func:`protocol_class`) three bounds, the ones nginx has (``client_header_timeout``,
``client_body_timeout``, ``worker_connections``):

- a request's headers must be complete ``header_timeout_s`` after the connection opens, and be at most
  ``max_header_bytes``; else 408 (431) and the connection closes;
- a keep-alive connection closes ``keep_alive_s`` after its last response unless the next request's headers are
  complete by then (the same one timer, also uvicorn's ``timeout_keep_alive``: :func:`.serve.make_server`);
  longer than the clients' own idle expiry, so the server's close never crosses a client's next request;
- its body must be complete ``body_timeout_s`` after the headers; else 408 and the connection closes;
- at ``max_connections`` open connections, a new one closes the oldest connection that has no request in
  progress (one still sending its headers, or idle between keep-alive requests); when every connection has a
  request in progress, the new one gets 503 with ``Retry-After`` and is closed.

So slow clients cost a bounded number of sockets for a bounded time, and an ordinary client still gets in: the
connections it displaces are the ones doing nothing. Every close is counted (``on_close(reason)``), never logged
one by one (an attack must not fill the disk).

The process around them: :class:`DrainingServer` (SIGTERM drains, and the drain deadline holds whatever the clients
do), the open-file limit raised to fit the cap (:func:`raise_file_limit`), and freed buffers given back to the
system (:func:`return_freed_memory`).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import resource
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .options import DEFAULT_BODY_TIMEOUT_S, DEFAULT_HEADER_TIMEOUT_S, DEFAULT_KEEP_ALIVE_S, DEFAULT_MAX_CONNECTIONS

log = logging.getLogger("mlp_mixer.serve")
MAX_HEADER_BYTES = 64 * 1024  # request line and headers; nginx allows 4 x 8 kB by default
LINGER_S = 1.0  # how long a closed connection still reads (and drops) what its client sends: nginx's lingering_time


def _response(status: str, extra: bytes = b"") -> bytes:
    return f"HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n".encode() + extra + b"\r\n"


TIMEOUT = _response("408 Request Timeout")
HEADERS_TOO_LARGE = _response("431 Request Header Fields Too Large")
FULL = _response("503 Service Unavailable", b"retry-after: 1\r\n")
SHUTTING_DOWN = _response("503 Service Unavailable")


class ConnectionGuard:
    """The bounds shared by every connection of one server, and the connections without a request in progress.

    Args:
        max_connections: most open connections.
        header_timeout_s: deadline for a request's headers.
        body_timeout_s: deadline for a request's body, from its last header.
        keep_alive_s: deadline for the next request's headers on a keep-alive connection, from the last response.
        on_close: called with ``"header_timeout"``, ``"body_timeout"``, ``"headers_too_large"``, ``"evicted"``,
            ``"refused"``, ``"keep_alive"`` or ``"drain_deadline"`` for every connection the guard closes (counted
            in ``/metrics``).
        max_header_bytes: largest request line and headers.
    """

    def __init__(
        self,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
        on_close: Callable[[str], None] | None = None,
        max_header_bytes: int = MAX_HEADER_BYTES,
        keep_alive_s: float = DEFAULT_KEEP_ALIVE_S,
    ) -> None:
        for name, value in (
            ("max_connections", max_connections),
            ("header_timeout_s", header_timeout_s),
            ("body_timeout_s", body_timeout_s),
            ("keep_alive_s", keep_alive_s),
        ):
            if value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
        self.max_connections, self.max_header_bytes = max_connections, max_header_bytes
        self.header_timeout_s, self.body_timeout_s = header_timeout_s, body_timeout_s
        self.keep_alive_s = keep_alive_s
        self.on_close = on_close or (lambda reason: None)
        self.open = 0
        self.idle: OrderedDict[GuardedProtocol, None] = OrderedDict()  # no request in progress, oldest first

    def admit(self, connection: GuardedProtocol) -> bool:
        """Make room for a new connection (closing the oldest idle one at the cap); False: refuse it."""
        if self.open >= self.max_connections:
            victim = next(iter(self.idle), None)
            if victim is None:
                return False
            victim.close_with(TIMEOUT, "evicted")
        self.open += 1
        return True


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol under a :class:`ConnectionGuard` (``guard`` is set by :func:`protocol_class`)."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._admitted = False
        self._closing = False  # answered and half-closed by the guard: what arrives now is discarded
        self._header_bytes = 0  # of the request whose headers are arriving; -1 once they are complete

    # ------------------------------------------------------------------ connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.admit(self):
            self.close_with(FULL, "refused")
            return
        self._admitted = True
        self._waiting_for_request(self.guard.header_timeout_s, "header_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._admitted:
            self._admitted = False
            self.guard.open -= 1
            self.guard.idle.pop(self, None)
        super().connection_lost(exc)

    def close_with(self, response: bytes, reason: str) -> None:
        """Answer ``response`` (unless a response has begun) and close, counting ``reason``.

        The close lingers: the server sends its answer and its FIN, discards what the client still sends, and drops
        the socket when the client closes or a second later. Closing at once, with the client's bytes unread,
        would make the kernel reset the connection and the client would never read the answer. The connection
        stops counting against the cap at once.
        """
        self._cancel_timer()
        self.guard.idle.pop(self, None)
        if self._admitted:
            self._admitted = False
            self.guard.open -= 1
        if self.transport.is_closing() or self._closing:
            return
        self._closing = True
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            self.transport.write(response)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's next receive() says http.disconnect; its response goes nowhere
            cycle.message_event.set()
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.abort)
        else:
            self.transport.close()
        self.guard.on_close(reason)

    # ------------------------------------------------------------------ a request's phases
    def _waiting_for_request(self, seconds: float, reason: str) -> None:
        """No request in progress: the connection may be evicted, and its next headers have a deadline."""
        self.guard.idle[self] = None
        self._header_bytes = 0
        self._arm(seconds, reason)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._header_bytes >= 0:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._header_bytes > self.guard.max_header_bytes:  # still in the headers, and too many of them
            self.close_with(HEADERS_TOO_LARGE, "headers_too_large")

    def on_headers_complete(self) -> None:
        self.guard.idle.pop(self, None)
        self._header_bytes = -1
        self._arm(self.guard.body_timeout_s, "body_timeout")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self._admitted:
            self._waiting_for_request(self.guard.keep_alive_s, "keep_alive")

    # ------------------------------------------------------------------ the one timer
    def _arm(self, seconds: float, reason: str) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(seconds, self.close_with, TIMEOUT, reason)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def protocol_class(guard: ConnectionGuard) -> type[GuardedProtocol]:
    """The protocol class to give ``uvicorn.Config(http=...)`` for connections under ``guard``."""
    return type("GuardedProtocol", (GuardedProtocol,), {"guard": guard})


# --------------------------------------------------------------------------- the process


class DrainingServer(uvicorn.Server):
    """uvicorn's server whose first SIGTERM (or Ctrl-C) drains instead of stopping at once.

    While draining, ``/readyz`` says 503 (a load balancer takes the instance out), new requests get 503 rather than
    a refused connection, and the process exits once the requests in flight are answered or ``drain_timeout_s``
    has passed, whichever comes first: at the deadline the connections still open are closed, so a client that
    trickles its upload cannot hold the process. A second signal is uvicorn's own: stop now.
    """

    def __init__(self, config: uvicorn.Config, state: Any, drain_timeout_s: float = 30.0) -> None:
        super().__init__(config)
        self.state, self.drain_timeout_s, self._deadline = state, drain_timeout_s, float("inf")

    def drain(self) -> None:
        self.state.draining = True
        self._deadline = time.monotonic() + self.drain_timeout_s

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.state.draining:
            super().handle_exit(sig, frame)
        else:
            self.drain()

    async def on_tick(self, counter: int) -> bool:
        if getattr(self.state, "failure", None) is not None and not self.state.draining:
            log.error("%s; shutting down", self.state.failure)  # serve() exits non-zero with it
            self.drain()
        if self.state.draining and self.state.in_flight == 0:
            self.should_exit = True
        elif self.state.draining and time.monotonic() > self._deadline and not self.should_exit:
            # The deadline: requests still arriving get 503 and their connections close, so that their handlers
            # end (the body read sees the disconnect) rather than being cancelled mid-way.
            for connection in list(self.server_state.connections):
                if isinstance(connection, GuardedProtocol):
                    connection.close_with(SHUTTING_DOWN, "drain_deadline")
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list | None = None) -> None:
        """uvicorn's shutdown within what is left of the drain deadline; then every connection still open is
        closed (its request cancelled) so that the model's stop and the exit follow at once."""
        if self.state.draining:
            self.config.timeout_graceful_shutdown = max(0.1, self._deadline - time.monotonic())
        await super().shutdown(sockets)
        for connection in list(self.server_state.connections):
            connection.transport.close()


def return_freed_memory() -> None:
    """Large buffers (request bodies, decoded images) from mmap, given back to the system when freed: glibc's
    default threshold grows with each large free, after which such buffers come from the heap and freed
    megabytes stay in the process (1.3 GB after 100 concurrent 15 MB uploads)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return
    m_mmap_threshold = -3
    libc.mallopt(m_mmap_threshold, 1 << 20)


def raise_file_limit(max_connections: int) -> None:
    """The open-file limit raised to its hard limit, and a warning when the connection cap would not fit in it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and max_connections + 64 > soft:
        log.warning("--max-connections %d is near the open-file limit of %d: lower it", max_connections, soft)
