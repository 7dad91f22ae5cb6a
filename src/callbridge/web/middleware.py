"""ASGI middleware: body size limit, body timeout and security headers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_PREFIXES = ("/api/", "/dialplan/", "/webhooks/", "/healthz", "/readyz")


def html_wanted(path: str, accept: str) -> bool:
    """A person's browser asked (a page), not a program (the API): errors are pages, not JSON."""
    return not path.startswith(API_PREFIXES) and "text/html" in accept


class NulRefused:
    """Text with a NUL character is refused with 400 where it comes in: PostgreSQL cannot store
    one (SQLite would, and the two databases would disagree), and no name, note or number needs
    it. Looks at the path, the query string and JSON or form bodies (read whole: BodyLimit, the
    outer middleware, bounds them); a contacts file has its own rule (the import reports a row
    with a NUL as a bad row)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content_type = accept = b""
        for name, value in scope.get("headers", []):
            if name == b"content-type":
                content_type = value.lower()
            elif name == b"accept":
                accept = value
        path = scope.get("path", "")

        async def refuse() -> None:
            if html_wanted(path, accept.decode("latin-1")) and await BodyLimit._reject_page(
                scope, send, 400, _NUL_MESSAGE
            ):
                return
            await BodyLimit._reject(send, 400, "invalid_input", _NUL_MESSAGE)

        if "\x00" in path or b"%00" in scope.get("query_string", b""):
            await refuse()
            return
        if content_type.startswith(b"application/json"):
            needle = b"\\u0000"
        elif content_type.startswith(b"application/x-www-form-urlencoded"):
            needle = b"%00"
        else:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if needle in body:
            await refuse()
            return
        whole: Message = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that first hands out ``messages`` (already read), then the real ones."""

    async def replayed() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replayed


_NUL_MESSAGE = "text must not contain a NUL character (\\u0000)"


class BodyLimit:
    """Refuses bodies over ``max_bytes`` with 413, whether announced by Content-Length or streamed.

    ``limits`` gives some paths (file uploads) a limit of their own. A browser asking for a page
    gets the 413 as a page with the sentence, an API client as ``{"error": …}``."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        limits: Mapping[str, int] | None = None,
        messages: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.limits = dict(limits or {})
        self.messages = dict(messages or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        max_bytes = self.limits.get(path, self.max_bytes)
        accept = ""
        for name, value in scope.get("headers", []):
            if name == b"accept":
                accept = value.decode("latin-1")
        status, code, message = body_too_large(max_bytes)
        too_large = (status, code, self.messages.get(path, message))
        as_page = html_wanted(path, accept)

        async def reject(status: int, code: str, message: str) -> None:
            if as_page and await self._reject_page(scope, send, status, message):
                return
            await self._reject(send, status, code, message)

        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await reject(400, "bad_request", "Content-Length is not a number")
                    return
                if length > max_bytes:
                    await reject(*too_large)
                    return
        seen = 0
        started = False
        rejected = False

        async def limited_receive() -> Message:
            nonlocal seen, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    # Answer now; the app then sees a disconnect and whatever it answers is dropped.
                    rejected = True
                    if not started:
                        await reject(*too_large)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, tracking_send)

    @staticmethod
    async def _reject_page(scope: Scope, send: Send, status: int, message: str) -> bool:
        """The error page of the app's templates; False when there are none (a bare app)."""
        app = scope.get("app")
        templates = getattr(getattr(app, "state", None), "templates", None)
        if templates is None:
            return False
        page = templates.TemplateResponse(
            Request(scope),
            "error.html",
            {"status": status, "message": message, "user": None},
            status_code=status,
        )
        sent_start = False

        async def send_page(message: Message) -> None:
            nonlocal sent_start
            if message["type"] == "http.response.start":
                sent_start = True
                # This answer leaves before SecurityHeaders would see it.
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        async def no_body() -> Message:
            return {"type": "http.disconnect"}

        await page(scope, no_body, send_page)
        return sent_start

    @staticmethod
    async def _reject(send: Send, status: int, code: str, message: str) -> None:
        await send_error(send, status, code, message)


SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; "
        b"script-src 'self'; connect-src 'self' ws: wss:; frame-ancestors 'none'",
    ),
)
"""On every answer the hub gives (see :class:`SecurityHeaders`)."""


def body_too_large(max_bytes: int) -> tuple[int, str, str]:
    """The 413 answer for a body over ``max_bytes``: status, code, message."""
    return 413, "body_too_large", f"the request body is larger than {max_bytes} bytes"


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyTimeout:
    """Bounds the time a client may take to send its whole request body: a body dribbled in at
    a byte a second would otherwise hold a connection (and a worker's memory) for as long as the
    client likes. Past ``seconds`` the answer is 408 and the connection is closed."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.seconds <= 0:
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        complete = False
        started = False
        timed_out = False

        async def bounded_receive() -> Message:
            nonlocal complete, timed_out
            if timed_out:
                return {"type": "http.disconnect"}
            if complete:
                return await receive()  # waiting for a disconnect is not bounded
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                timed_out = True
                if not started:
                    await _answer_timeout(send)
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if timed_out:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, bounded_receive, tracking_send)


async def _answer_timeout(send: Send) -> None:
    # connection: close — the rest of the body is not worth waiting for.
    await send_error(send, 408, "request_timeout", "the request body took too long to arrive", close=True)


async def send_error(send: Send, status: int, code: str, message: str, *, close: bool = False) -> None:
    """An ``{"error": …}`` answer sent by a middleware, ahead of the app's own error handlers."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
