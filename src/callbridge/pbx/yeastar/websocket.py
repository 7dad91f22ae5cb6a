"""Event subscription over the PBX's WebSocket, for hubs the PBX cannot reach with webhooks.

``wss://{host}/openapi/v1.0/subscribe?access_token=…``, then ``{"topic_list": [...]}`` and an
ack. The PBX closes sockets idle for 60 s, so a text ``heartbeat`` goes out every
``heartbeat_interval``. Tokens die after 30 minutes and the PBX says so with a 10004 frame:
we reconnect at once with a fresh token. Other failures reconnect with capped exponential
backoff. An empty topic list would *replace* the subscription with nothing, so it is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from callbridge.domain.errors import PbxUnavailable
from callbridge.pbx.yeastar.client import API_PATH, YeastarAuthFailed, YeastarClient, YeastarIpBlocked
from callbridge.pbx.yeastar.webhooks import WebhookMalformed, YeastarMessage, parse_envelope

log = logging.getLogger(__name__)

MessageHandler = Callable[[YeastarMessage], Awaitable[object]]


class _TokenDied(Exception):
    """The PBX sent a 10004 frame: reconnect now with a new token."""


def subscribe_url(base_url: str) -> str:
    scheme, _, rest = base_url.partition("://")
    ws_scheme = "wss" if scheme == "https" else "ws"
    return f"{ws_scheme}://{rest.rstrip('/')}{API_PATH}/subscribe"


class YeastarSubscription:
    def __init__(
        self,
        client: YeastarClient,
        topics: Sequence[int],
        on_message: MessageHandler,
        *,
        user_agent: str = "",
        heartbeat_interval: float = 30.0,
        open_timeout: float = 10.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        if not topics:
            raise ValueError("a Yeastar subscription needs at least one topic (an empty list unsubscribes)")
        self._client = client
        self._topics = [int(t) for t in topics]
        self._on_message = on_message
        self._user_agent = user_agent or None
        self._heartbeat_interval = heartbeat_interval
        self._open_timeout = open_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self.connected = False
        self.connects = 0
        self.last_message_at: datetime | None = None
        self.last_error = ""

    async def run(self) -> None:
        """Stay subscribed until cancelled; raises only on errors a retry cannot fix."""
        delay = self._backoff_initial
        while True:
            try:
                await self._session()
                delay = self._backoff_initial
            except _TokenDied:
                log.info("yeastar %s: WebSocket token expired; reconnecting", self._client.base_url)
                self._client.invalidate_token()
                delay = self._backoff_initial
                continue
            except (YeastarIpBlocked, YeastarAuthFailed):
                raise
            except (OSError, TimeoutError, WebSocketException, PbxUnavailable, ValueError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "yeastar %s: WebSocket down (%s); retrying in %.1fs",
                    self._client.base_url,
                    type(exc).__name__,
                    delay,
                )
            finally:
                self.connected = False
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))  # jitter: many hubs, one PBX
            delay = min(delay * 2, self._backoff_max)

    async def _session(self) -> None:
        token = await self._client.access_token()
        url = f"{subscribe_url(self._client.base_url)}?access_token={token}"
        async with connect(
            url,
            open_timeout=self._open_timeout,
            ping_interval=None,  # the PBX wants its own text heartbeat, not WS pings
            user_agent_header=self._user_agent,
            max_size=1 << 20,
        ) as ws:
            await ws.send(json.dumps({"topic_list": self._topics}))
            ack = await asyncio.wait_for(ws.recv(), self._open_timeout)
            self._check_ack(ack)
            self.connected = True
            self.connects += 1
            log.info("yeastar %s: subscribed to %d event types", self._client.base_url, len(self._topics))
            heartbeat = asyncio.create_task(self._heartbeat(ws))
            try:
                await self._receive(ws)
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await heartbeat

    def _check_ack(self, frame: str | bytes) -> None:
        try:
            data = json.loads(frame)
        except ValueError as exc:
            raise PbxUnavailable("Yeastar subscribe: unexpected answer") from exc
        code = data.get("errcode") if isinstance(data, dict) else None
        if code == 10004:
            raise _TokenDied
        if code != 0:
            raise PbxUnavailable(
                f"Yeastar subscribe refused: {data.get('errmsg') if isinstance(data, dict) else data}"
            )

    async def _heartbeat(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            await ws.send("heartbeat")

    async def _receive(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                text = frame.decode() if isinstance(frame, bytes) else frame
                if text.strip() == "heartbeat response":
                    continue
                try:
                    data = json.loads(text)
                except ValueError:
                    log.warning("yeastar %s: non-JSON WebSocket frame ignored", self._client.base_url)
                    continue
                if isinstance(data, dict) and "errcode" in data and "type" not in data:
                    if data.get("errcode") == 10004:
                        raise _TokenDied
                    continue  # late acks
                try:
                    message = parse_envelope(data)
                except WebhookMalformed as exc:
                    log.warning("yeastar %s: malformed event ignored: %s", self._client.base_url, exc)
                    continue
                self.last_message_at = datetime.now(UTC)
                await self._on_message(message)
        except ConnectionClosed as exc:
            raise PbxUnavailable(
                f"Yeastar WebSocket closed ({exc.rcvd.code if exc.rcvd else 'no code'})"
            ) from exc
        raise PbxUnavailable("Yeastar WebSocket closed by the PBX")
