"""asyncio AMI client: one TCP session, ActionID-correlated actions, events in order.

What it guarantees (``reference/asterisk_ami.md`` §1):
* every network step has a timeout (connect, banner, login, each action, Ping);
* responses are matched to requests by globally unique ActionIDs (OriginateResponse is
  broadcast to every session, so ids must not collide across clients);
* ``EventList: start`` … ``Complete`` lists are gathered into one result;
* a Ping that gets no Pong in time closes the link (Asterisk has no TCP keepalive);
* ``run`` reconnects with capped exponential backoff, except after wrong credentials, which
  raise :class:`PbxRejected` at once (retrying would only trip fail2ban);
* nothing is ever re-sent after a reconnect: pending actions fail with
  :class:`PbxUnavailable`, so an Originate can never ring a customer twice;
* the reader never awaits consumers: events go to a synchronous callback (the tracker is
  fast), because Asterisk drops a session it cannot write to within 100 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import random
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from callbridge.domain.errors import PbxRejected, PbxTimeout, PbxUnavailable
from callbridge.pbx.asterisk.codec import AmiDecoder, Banner, FrameError, HeaderValue, Message, encode_action

log = logging.getLogger(__name__)

_EVENT_NAME = re.compile(r"^[A-Za-z0-9_]+$")

EventCallback = Callable[[Message, datetime], None]
ConnectCallback = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ClientSettings:
    host: str
    port: int = 5038
    username: str = ""
    secret: str = field(default="", repr=False)
    auth: str = "md5"  # "md5" (challenge/response; the secret never crosses the wire) or "plain"
    connect_timeout: float = 5.0
    action_timeout: float = 10.0
    # Asterisk waits 1 s before refusing a login; leave room for it.
    login_timeout: float = 5.0
    ping_interval: float = 10.0
    ping_timeout: float = 5.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    events: str = "on"  # Login "Events:" (on|off|class list)
    event_names: frozenset[str] | None = None  # deliver only these events (None = all)
    # With event_names set, also ask Asterisk (Action: Filter) not to send the others, so a
    # busy PBX does not flood the link; needs write=system, else we filter here alone.
    server_filter: bool = True


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[tuple[Message, list[Message]]]
    items: list[Message]
    is_list: bool = False
    response: Message | None = None


class AmiClient:
    def __init__(
        self,
        settings: ClientSettings,
        *,
        on_event: EventCallback | None = None,
        on_connect: ConnectCallback | None = None,
    ) -> None:
        self.settings = settings
        self.on_event = on_event
        self.on_connect = on_connect
        self._prefix = f"cb-{secrets.token_hex(6)}-"
        self._seq = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._event_waiters: dict[str, asyncio.Future[Message]] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._ping_task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._logged_in = False
        self.version = ""
        self.connections = 0
        self.last_error = ""
        self.last_event_at: datetime | None = None
        # Events read from the socket (before the event_names filter) and whether Asterisk
        # filters for us on this session.
        self.events_read = 0
        self.server_filtered = False

    # -- state ---------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._logged_in and self._writer is not None and not self._writer.is_closing()

    def new_action_id(self) -> str:
        return f"{self._prefix}{next(self._seq)}"

    # -- connection ----------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the TCP session and log in. Raises PbxUnavailable/PbxTimeout/PbxRejected."""
        s = self.settings
        # asyncio.timeout, not wait_for: on 3.11 wait_for turns a cancellation that races with
        # a finished connect into that connect's result, and the link would never stop.
        try:
            async with asyncio.timeout(s.connect_timeout):
                reader, writer = await asyncio.open_connection(s.host, s.port)
        except TimeoutError as exc:
            raise PbxTimeout(f"AMI {s.host}:{s.port}: no connection within {s.connect_timeout:g} s") from exc
        except OSError as exc:
            raise PbxUnavailable(f"AMI {s.host}:{s.port}: cannot connect ({exc.strerror or exc})") from exc
        self._reader, self._writer = reader, writer
        self._closed = asyncio.Event()
        banner: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._read_task = asyncio.create_task(self._read_loop(reader, banner), name="ami-reader")
        try:
            try:
                async with asyncio.timeout(s.connect_timeout):
                    self.version = await asyncio.shield(banner)
            except TimeoutError as exc:
                raise PbxTimeout(f"AMI {s.host}:{s.port}: no banner; is this an AMI port?") from exc
            await self._login()
            await self._install_filter()
        except BaseException:
            await self._teardown(PbxUnavailable("login did not complete"))
            raise
        self._logged_in = True
        self.connections += 1
        self._ping_task = asyncio.create_task(self._ping_loop(), name="ami-ping")
        log.info("AMI %s:%s: logged in as %s (AMI %s)", s.host, s.port, s.username, self.version)

    async def _login(self) -> None:
        s = self.settings
        fields: dict[str, HeaderValue] = {"Username": s.username, "Events": s.events}
        if s.auth == "md5":
            challenge = await self._request("Challenge", {"AuthType": "MD5"}, deadline=s.login_timeout)
            if challenge.get("Response") != "Success" or not challenge.get("Challenge"):
                raise PbxRejected(f"AMI login: MD5 challenge refused ({challenge.get('Message')})")
            key = hashlib.md5((challenge.get("Challenge") + s.secret).encode(), usedforsecurity=False)
            fields.update({"AuthType": "MD5", "Key": key.hexdigest()})
        else:
            fields["Secret"] = s.secret
        try:
            reply = await self._request("Login", fields, deadline=s.login_timeout)
        except PbxUnavailable as exc:
            # Asterisk closes the socket right after refusing a login; a close during login
            # with no answer is treated the same way only if we got no reply at all.
            raise PbxUnavailable(f"AMI login: connection lost ({exc.message})") from exc
        if reply.get("Response") != "Success":
            raise PbxRejected(
                f"AMI login as {s.username!r} refused: {reply.get('Message') or 'unknown reason'}"
                " (check the AMI username and secret in manager.conf)"
            )

    async def _install_filter(self) -> None:
        """Ask Asterisk to send only the events we use (legacy regex filter: every version)."""
        s = self.settings
        self.server_filtered = False
        names = s.event_names
        if not names or not s.server_filter or not all(_EVENT_NAME.match(n) for n in names):
            return
        # OriginateResponse is broadcast as an event: click-to-call waits for it.
        wanted = sorted(names | {"OriginateResponse"})
        # A prefix match on purpose ("Hangup" also lets HangupRequest through): anchoring the
        # end would depend on how each Asterisk version's regex sees the CRLF after the name.
        pattern = "Event: (" + "|".join(wanted) + ")"
        try:
            reply = await self._request(
                "Filter", {"Operation": "Add", "Filter": pattern}, deadline=s.action_timeout
            )
        except PbxTimeout:
            log.warning("AMI %s:%s: no answer to Filter; filtering events here", s.host, s.port)
            return
        if reply.get("Response") != "Success":
            log.info(
                "AMI %s:%s: Filter refused (%s; it needs write=system); filtering events here",
                s.host,
                s.port,
                reply.get("Message") or "no reason given",
            )
            return
        self.server_filtered = True

    async def close(self) -> None:
        """Log off politely (best effort) and close."""
        if self.connected:
            with contextlib.suppress(Exception):
                await self._request("Logoff", {}, deadline=1.0)
        await self._teardown(PbxUnavailable("AMI link closed"))

    async def _teardown(self, error: Exception) -> None:
        self._logged_in = False
        writer = self._writer
        self._writer = None
        cancelled = False
        if writer is not None:
            writer.close()
            try:
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            except asyncio.CancelledError:
                cancelled = True
            except Exception:  # noqa: S110 - the socket is going away; how it goes does not matter
                pass
        for task in (self._ping_task, self._read_task):
            if task is not None and task is not asyncio.current_task() and not task.done():
                task.cancel()
                try:
                    # wait() never raises the task's own outcome, only our cancellation, which
                    # must not be swallowed: the caller is stopping this link.
                    await asyncio.wait({task}, timeout=1.0)
                except asyncio.CancelledError:
                    cancelled = True
        self._ping_task = self._read_task = None
        self._fail_pending(error)
        self._closed.set()
        if cancelled:
            raise asyncio.CancelledError

    def _fail_pending(self, error: Exception) -> None:
        # Never re-send: a lost Originate response might mean the phone is already ringing.
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)
        self._pending.clear()
        for waiter in self._event_waiters.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._event_waiters.clear()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # -- reading -------------------------------------------------------------------------------

    async def _read_loop(self, reader: asyncio.StreamReader, banner: asyncio.Future[str]) -> None:
        decoder = AmiDecoder()
        reason: Exception = PbxUnavailable("AMI connection closed by the PBX")
        try:
            while True:
                try:
                    data = await reader.read(262144)
                except OSError as exc:
                    reason = PbxUnavailable(f"AMI read failed: {exc}")
                    break
                if not data:
                    break
                now = datetime.now(UTC)
                for record in decoder.feed(data):
                    if isinstance(record, Message):
                        self._dispatch(record, now)
                    elif isinstance(record, Banner):
                        if not banner.done():
                            banner.set_result(record.version)
                    elif isinstance(record, FrameError):
                        log.warning(
                            "AMI: dropped a malformed frame (%s, %s bytes)", record.reason, record.size
                        )
        finally:
            if not banner.done():
                banner.set_exception(PbxUnavailable("AMI connection closed before the banner"))
                banner.exception()  # mark retrieved: nobody may be waiting any more
            self._logged_in = False
            self._fail_pending(reason)
            self._closed.set()

    def _dispatch(self, msg: Message, now: datetime) -> None:
        aid = msg.get("ActionID")
        if "Response" in msg and "Event" not in msg:
            pending = self._pending.get(aid) if aid else None
            if pending is None:
                log.debug("AMI: response for unknown ActionID %s", aid)
                return
            if pending.is_list or msg.get("EventList").lower() == "start":
                pending.is_list = True
                pending.response = msg
                if msg.get("Response") != "Success":
                    self._finish(aid, msg)
                return
            self._finish(aid, msg)
            return
        if aid:
            pending = self._pending.get(aid)
            if pending is not None and pending.is_list:
                if msg.get("EventList").lower() == "complete":
                    self._finish(aid, pending.response or msg, complete=msg)
                else:
                    pending.items.append(msg)
                return
            waiter = self._event_waiters.pop(aid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(msg)
        self.last_event_at = now
        self.events_read += 1
        names = self.settings.event_names
        if self.on_event is not None and (names is None or msg.get("Event") in names):
            try:
                self.on_event(msg, now)
            except Exception:
                log.exception("AMI: event handler failed on %s", msg.get("Event"))

    def _finish(self, aid: str, response: Message, complete: Message | None = None) -> None:
        pending = self._pending.pop(aid, None)
        if pending is not None and not pending.future.done():
            pending.future.set_result((response, pending.items))

    # -- actions -------------------------------------------------------------------------------

    async def _request(
        self, action: str, fields: Mapping[str, HeaderValue], *, deadline: float, action_id: str = ""
    ) -> Message:
        response, _ = await self._exchange(action, fields, deadline=deadline, action_id=action_id)
        return response

    async def _exchange(
        self, action: str, fields: Mapping[str, HeaderValue], *, deadline: float, action_id: str = ""
    ) -> tuple[Message, list[Message]]:
        writer = self._writer
        if writer is None or writer.is_closing():
            raise PbxUnavailable(f"AMI link is down; {action} was not sent")
        aid = action_id or self.new_action_id()
        future: asyncio.Future[tuple[Message, list[Message]]] = asyncio.get_running_loop().create_future()
        self._pending[aid] = _Pending(future, [])
        try:
            writer.write(encode_action(action, fields, action_id=aid))
            async with asyncio.timeout(deadline):
                await writer.drain()
                return await future
        except TimeoutError as exc:
            raise PbxTimeout(f"AMI {action}: no answer within {deadline:g} s") from exc
        except OSError as exc:
            raise PbxUnavailable(f"AMI {action}: link failed ({exc})") from exc
        finally:
            self._pending.pop(aid, None)

    async def send_action(
        self,
        action: str,
        fields: Mapping[str, HeaderValue] | None = None,
        *,
        deadline: float | None = None,
        action_id: str = "",
    ) -> Message:
        """Send one action and return its response (``Response: Error`` is returned, not raised)."""
        if not self._logged_in:
            raise PbxUnavailable(f"AMI link is down; {action} was not sent")
        return await self._request(
            action, fields or {}, deadline=deadline or self.settings.action_timeout, action_id=action_id
        )

    async def send_list_action(
        self, action: str, fields: Mapping[str, HeaderValue] | None = None, *, deadline: float | None = None
    ) -> tuple[Message, list[Message]]:
        """Send a list action (CoreShowChannels, …) and return the response and every item."""
        if not self._logged_in:
            raise PbxUnavailable(f"AMI link is down; {action} was not sent")
        return await self._exchange(action, fields or {}, deadline=deadline or self.settings.action_timeout)

    def expect_event(self, action_id: str) -> asyncio.Future[Message]:
        """A future for the next event carrying ``action_id`` (e.g. OriginateResponse).
        Register it before sending the action; it fails with PbxUnavailable if the link drops."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._event_waiters[action_id] = future
        return future

    def forget_event(self, action_id: str) -> None:
        self._event_waiters.pop(action_id, None)

    # -- keepalive and reconnect -----------------------------------------------------------------

    async def _ping_loop(self) -> None:
        s = self.settings
        while True:
            await asyncio.sleep(s.ping_interval)
            try:
                reply = await self.send_action("Ping", deadline=s.ping_timeout)
                if reply.get("Response") != "Success":
                    log.warning("AMI: unexpected Ping answer %s", reply.get("Message"))
            except PbxUnavailable as exc:
                # PbxTimeout included: a half-open TCP link looks alive until we ask.
                log.warning("AMI %s:%s: keepalive failed (%s); reconnecting", s.host, s.port, exc.message)
                writer = self._writer
                if writer is not None:
                    writer.transport.abort()
                return

    async def run(self) -> None:
        """Stay connected until cancelled; raises PbxRejected on wrong credentials."""
        s = self.settings
        attempt = 0
        try:
            while True:
                try:
                    await self.connect()
                except PbxRejected as exc:
                    self.last_error = exc.message
                    log.error("AMI %s:%s: %s; not retrying", s.host, s.port, exc.message)
                    raise
                except PbxUnavailable as exc:
                    _raise_if_cancelling()
                    self.last_error = exc.message
                    delay = min(s.backoff_max, s.backoff_initial * (2**attempt))
                    delay *= 0.5 + random.random() / 2  # jitter: many agents must not reconnect in step
                    attempt += 1
                    log.warning("AMI %s:%s: %s; retry in %.1f s", s.host, s.port, exc.message, delay)
                    await asyncio.sleep(delay)
                    continue
                attempt = 0
                self.last_error = ""
                if self.on_connect is not None:
                    try:
                        await self.on_connect()
                    except PbxUnavailable as exc:
                        log.warning("AMI %s:%s: after login: %s", s.host, s.port, exc.message)
                await self._closed.wait()
                await self._teardown(PbxUnavailable("AMI connection lost"))
                self.last_error = "connection lost"
                log.warning("AMI %s:%s: connection lost; reconnecting", s.host, s.port)
                await asyncio.sleep(s.backoff_initial * (0.5 + random.random() / 2))
        finally:
            await self._teardown(PbxUnavailable("AMI link stopped"))

    def pending_count(self) -> int:
        return len(self._pending) + len(self._event_waiters)


def _raise_if_cancelling() -> None:
    """Honour a cancellation that a library call turned into an ordinary failure."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
