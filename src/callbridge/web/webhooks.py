"""``POST /webhooks/yeastar/{key}``: the endpoint a PBX calls, served ahead of the whole app.

A PBX is not a browser: it has no session cookie and no CSRF token, and it wants its answer fast
(it retries on a timeout). :class:`CallbridgeApp` hands these requests to
:class:`YeastarWebhooks` before FastAPI's middleware stack, sessions, routing and dependency
solving: an ack costs a fraction of the CPU it did as a route, and the hub acknowledges several
times as many webhooks per second. What the middleware gave every answer, this handler gives
itself: the body limit (413, announced or streamed) and the security headers. Answers are those
of any API route: the PBX's success envelope, or ``{"error": {"code", "message"}}`` with the
status ``web/errors.py`` gives each domain error (401 forged or unsigned, 400 malformed, 413 too
large, 404 unknown key, 503 not stored, 405 for another method). Paths that name no key (or
more than one segment) go on to the app.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from callbridge.domain.errors import AuthenticationFailed, CallbridgeError, NotFound, PbxUnavailable
from callbridge.hub import Hub
from callbridge.pbx.yeastar.webhooks import ack_body
from callbridge.web.errors import status_for
from callbridge.web.middleware import SECURITY_HEADERS, BodyTimeout, body_too_large

log = logging.getLogger(__name__)

PREFIX = "/webhooks/yeastar/"
_JSON = (b"content-type", b"application/json")


class _Gone(Exception):
    """The client went away before its body was complete: nobody to answer."""


class _TooLarge(Exception):
    pass


class YeastarWebhooks:
    """The ASGI handler for ``POST /webhooks/yeastar/{key}``."""

    def __init__(self, hub: Hub, max_body_bytes: int) -> None:
        self.hub = hub
        self.max_body_bytes = max_body_bytes

    @staticmethod
    def key(scope: Scope) -> str:
        """The webhook key this request is for, or ``""`` when it is not a webhook request."""
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(PREFIX):
            return ""
        key = path[len(PREFIX) :]
        return "" if "/" in key else key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: list[tuple[bytes, bytes]] = [_JSON, *SECURITY_HEADERS]
        content: dict[str, object]
        try:
            if scope["method"] != "POST":
                headers.append((b"allow", b"POST"))
                status, content = (
                    405,
                    {"error": {"code": "method_not_allowed", "message": "Method Not Allowed"}},
                )
            else:
                status, content = 200, ack_body(await self._handle(self.key(scope), scope, receive))
        except _Gone:
            return
        except _TooLarge:
            status, code, message = body_too_large(self.max_body_bytes)
            content = {"error": {"code": code, "message": message}}
        except CallbridgeError as exc:
            status, content = status_for(exc), {"error": {"code": exc.code, "message": exc.message}}
            if isinstance(exc, AuthenticationFailed):
                headers.append((b"www-authenticate", b"Bearer"))
        except Exception:
            log.exception("unexpected error on POST %s", PREFIX + "…")  # the key is a credential
            status = 500
            content = {"error": {"code": "internal_error", "message": "something went wrong on our side"}}
        body = orjson.dumps(content)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, key: str, scope: Scope, receive: Receive) -> int:
        signature = None
        for header, value in scope["headers"]:
            if header == b"x-signature":
                signature = value.decode("latin-1")
            elif header == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                raise _TooLarge()
        name = self.hub.webhook_keys.get(key)
        if name is None:
            raise NotFound("no PBX listens at this webhook URL")
        handle: Any = getattr(self.hub.supervisor().get(name), "handle_webhook", None)
        if handle is None:
            raise PbxUnavailable("this PBX does not take webhooks")
        accepted: int = await handle(await self._body(receive), signature)
        return accepted

    async def _body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Gone()
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class CallbridgeApp(FastAPI):
    """The hub's app: FastAPI, with PBX webhooks answered before its middleware stack."""

    pbx_webhooks: YeastarWebhooks | None = None
    # Seconds a client may take to send a whole request body (0: no bound); see BodyTimeout.
    body_timeout: float = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.body_timeout > 0 and scope["type"] == "http":
            await BodyTimeout(self._dispatch, self.body_timeout)(scope, receive, send)
            return
        await self._dispatch(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.pbx_webhooks is not None and self.pbx_webhooks.key(scope):
            await self.pbx_webhooks(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


__all__ = ["CallbridgeApp", "YeastarWebhooks"]
