"""``POST /webhooks/yeastar/{key}``: the endpoint a PBX calls, served ahead of FastAPI's routing.

A PBX is not a browser: it has no session cookie and no CSRF token, and it wants its answer fast
(it retries on a timeout). Served as plain ASGI inside the body limit and the security headers but
in front of the session middleware, FastAPI's route matching and dependency solving, an ack costs
about half the CPU it did as a route. Answers are those of any API route: the PBX's success
envelope, or ``{"error": {"code", "message"}}`` with the status ``web/errors.py`` gives each
domain error (401 forged or unsigned, 400 malformed, 413 too large, 404 unknown key, 503 not
stored, 405 for another method). Other paths go on to the app.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from callbridge.domain.errors import AuthenticationFailed, CallbridgeError, NotFound, PbxUnavailable
from callbridge.hub import Hub
from callbridge.pbx.yeastar.webhooks import ack_body
from callbridge.web.errors import status_for

log = logging.getLogger(__name__)

PREFIX = "/webhooks/yeastar/"


class YeastarWebhooks:
    def __init__(self, app: ASGIApp, hub: Hub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        key = path[len(PREFIX) :] if path.startswith(PREFIX) else ""
        if scope["type"] != "http" or not key or "/" in key:
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
        content: dict[str, object]
        try:
            if scope["method"] != "POST":
                headers.append((b"allow", b"POST"))
                status, content = (
                    405,
                    {"error": {"code": "method_not_allowed", "message": "Method Not Allowed"}},
                )
            else:
                status, content = 200, ack_body(await self._handle(key, scope, receive))
        except ClientDisconnect:
            return  # gone (or cut off by the body limit, which has answered 413)
        except CallbridgeError as exc:
            status, content = status_for(exc), {"error": {"code": exc.code, "message": exc.message}}
            if isinstance(exc, AuthenticationFailed):
                headers.append((b"www-authenticate", b"Bearer"))
        except Exception:
            log.exception("unexpected error on POST %s", PREFIX + "…")  # the key is a credential
            status = 500
            content = {"error": {"code": "internal_error", "message": "something went wrong on our side"}}
        body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, key: str, scope: Scope, receive: Receive) -> int:
        name = self.hub.webhook_keys.get(key)
        if name is None:
            raise NotFound("no PBX listens at this webhook URL")
        handle: Any = getattr(self.hub.supervisor().get(name), "handle_webhook", None)
        if handle is None:
            raise PbxUnavailable("this PBX does not take webhooks")
        signature = None
        for header, value in scope["headers"]:
            if header == b"x-signature":
                signature = value.decode("latin-1")
                break
        accepted: int = await handle(await _body(receive), signature)
        return accepted


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


__all__ = ["YeastarWebhooks"]
