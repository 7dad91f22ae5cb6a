"""How uvicorn serves the hub: timeouts and limits that keep slow or idle clients from holding
connections open (``callbridge serve`` and the demo use :func:`uvicorn_options`).

uvicorn bounds the idle time between requests (``timeout_keep_alive``) and the number of
connections (``limit_concurrency``), but not the time a client takes to send its request
headers: a client that sends a byte a second keeps its connection forever. The protocol below
adds that bound; :class:`callbridge.web.middleware.BodyTimeout` bounds the body.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from callbridge.config import Settings
from callbridge.services.agents import MAX_FRAME_BYTES

_TIMEOUT_BODY = b'{"error": {"code": "request_timeout", "message": "the request headers took too long"}}'
_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a bound on the time from the connection opening (or
    the first byte of a following keep-alive request) to the end of the request headers."""

    # ``None``: the hub's setting, read from the environment (a worker process that uvicorn
    # spawns imports this class by name; a class made at run time could not be sent to it).
    header_timeout: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.header_timeout is None:
            type(self).header_timeout = _configured_header_timeout()
        self._header_timer: asyncio.TimerHandle | None = None
        self._awaiting_headers = True
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None and self.header_timeout:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self.transport.is_closing():
            self.transport.write(_TIMEOUT_ANSWER)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            self._arm_header_timer()  # a following request on a kept-alive connection
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        self._awaiting_headers = True  # idle until the next request: keep-alive's timeout rules
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)


def _configured_header_timeout() -> float:
    return Settings().header_timeout_seconds


def http_protocol(header_timeout: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class with ``header_timeout`` seconds (uvicorn builds one per connection)."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout})


def uvicorn_options(settings: Settings, *, workers: int = 1) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` from the hub's settings.

    With several worker processes the protocol is named by its import path: uvicorn sends its
    configuration to each worker, and a class made here could not be; the workers then read
    the header timeout from the same environment as ``settings``."""
    return {
        "http": (
            "callbridge.web.server:HeaderTimeoutProtocol"
            if workers > 1
            else http_protocol(settings.header_timeout_seconds)
        ),
        "timeout_keep_alive": settings.keep_alive_seconds,
        # Over this many connections and running requests, new requests get 503 at once
        # instead of piling up until memory or file descriptors run out.
        "limit_concurrency": settings.max_connections or None,
        # uvicorn's default (16 KiB) bounds the size of the request line and headers.
        "h11_max_incomplete_event_size": 16 * 1024,
        # The largest WebSocket message any socket takes (an agent's batch; uvicorn's default is
        # 16 MiB). Bigger ones are refused with 1009 while they arrive, before being buffered.
        "ws_max_size": MAX_FRAME_BYTES,
    }
