"""Reading one WebSocket frame the hub can use: text, and no bigger than the socket allows.

Both sockets (the agents' link and the browsers' live socket) speak JSON text. What they cannot
use closes the connection with the standard code saying why (RFC 6455 §7.4.1), never 1011 and
never without a close frame:

* 1003 a binary frame (unsupported data);
* 1007 text that is not JSON (invalid payload data);
* 1008 JSON the protocol cannot use (policy violation);
* 1009 a frame over the socket's size cap (message too big).

``callbridge serve`` also gives uvicorn a cap (``ws_max_size`` in :func:`callbridge.web.server.
uvicorn_options`), which refuses a frame with 1009 while it arrives, before it is buffered whole;
the check here holds under any server and for sockets with a smaller cap.
"""

from __future__ import annotations

from fastapi import WebSocket, WebSocketDisconnect

CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009


class FrameRefused(Exception):
    """A frame the hub will not use: close with ``code`` and ``reason`` (at most 123 bytes)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason[:120]


def too_big(text: str, limit: int) -> bool:
    """Whether ``text`` takes more than ``limit`` bytes in UTF-8 (encoded only when it may)."""
    if len(text) > limit:
        return True
    return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit


async def receive_text(ws: WebSocket, limit: int) -> str:
    """The next text frame; FrameRefused for a binary or oversized one, WebSocketDisconnect when
    the peer went away."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    text = message.get("text")
    if not isinstance(text, str):
        raise FrameRefused(CLOSE_UNSUPPORTED, "binary frames are not accepted; send JSON text")
    if too_big(text, limit):
        raise FrameRefused(CLOSE_TOO_BIG, f"a frame is at most {limit} bytes")
    return text
