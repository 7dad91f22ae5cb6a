"""How uvicorn serves the hub: timeouts and limits that keep slow or idle clients from holding
connections open (``callbridge serve`` and the demo use :func:`uvicorn_options`).

uvicorn bounds the idle time between requests (``timeout_keep_alive``) and the number of
connections (``limit_concurrency``), but not the time a client takes to send its request
headers: a client that sends a byte a second keeps its connection forever. The protocol below
adds that bound; :class:`callbridge.web.middleware.BodyTimeout` bounds the body.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from callbridge.config import Settings
from callbridge.services.agents import MAX_FRAME_BYTES

log = logging.getLogger(__name__)

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


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A socket listening on ``host:port`` with ``SO_REUSEPORT``: each worker process gets one of
    its own on the same address, and the kernel spreads new connections evenly over them.

    It listens from the start, in the supervisor: a connection the kernel gives to a worker that
    is still starting (or being replaced) waits in that socket's queue until the worker takes it,
    where a socket that was not listening yet would leave every early connection to the workers
    that were (measured: 200 clients connecting as the hub answered ready all went to one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class SpreadWorkers(Multiprocess):
    """uvicorn's worker supervisor, with a listening socket per worker instead of one shared.

    With one shared socket, whichever worker wakes first takes the connections that arrive
    together: 200 clients connecting at once were measured 171 to 33 over two workers, and the
    busy worker's clients waited three times as long. Sockets of their own, all bound with
    ``SO_REUSEPORT``, let the kernel spread connections by their addresses. A worker that dies is
    replaced on its own socket."""

    def __init__(self, config: Config, host: str, port: int) -> None:
        self.slots = [listening_socket(host, port, config.backlog) for _ in range(config.workers)]
        super().__init__(config, sockets=self.slots[:1])

    def _start(self, slot: int) -> Process:
        process = Process(self.config, [self.slots[slot]])
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self._start(slot) for slot in range(self.processes_num)]

    def restart_all(self) -> None:
        """Replaces each worker (SIGHUP), the new one serving before the old one is stopped."""
        for slot, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._start(slot)
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    log.error("a new worker was not ready in time; keeping the old one")
                return
            old.terminate()
            old.join()
            self.processes[slot] = new

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for slot, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung: make sure
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # would fail the same way again
                log.error("worker [%s] failed to start; stopping", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.info("worker [%s] died; starting another", process.pid)
            self.processes[slot] = self._start(slot)


def serve_workers(config: Config, host: str, port: int) -> None:
    """Run ``config.workers`` worker processes on ``host:port`` (see :class:`SpreadWorkers`)."""
    SpreadWorkers(config, host, port).run()
