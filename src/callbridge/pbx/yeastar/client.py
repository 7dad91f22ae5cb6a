"""Async client for the Yeastar P-Series OpenAPI (``/openapi/v1.0``), built on httpx.

What it takes care of, so callers do not have to:

- Tokens: one login per PBX at a time (an asyncio lock), refresh shortly before the 30-minute
  access token expires, re-login when the refresh token is refused, never more live tokens
  than the PBX allows (8), and a pause after repeated bad credentials, because five failed
  logins get the hub's IP blocked on the PBX.
- Errors: the PBX always answers HTTP 200 with an ``errcode``; non-zero codes become
  :class:`YeastarApiError` (a ``PbxRejected``) carrying the PBX's message. ``10004`` (token
  expired) refreshes and retries once; ``70004`` (IP blocked) raises :class:`YeastarIpBlocked`
  and the client stops talking to the PBX until :meth:`YeastarClient.reset_block`.
  httpx failures become ``PbxTimeout``/``PbxUnavailable``.
- Secrets: the token travels as the ``access_token`` query parameter (the PBX ignores
  ``Authorization``), so it is redacted from httpx's own request log lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx

from callbridge.domain.errors import PbxRejected, PbxTimeout, PbxUnavailable
from callbridge.pbx.yeastar.payloads import CallReport, Member, blank, parse_members

log = logging.getLogger(__name__)

API_PATH = "/openapi/v1.0"
DEFAULT_USER_AGENT = "callbridge-yeastar/0.1"
TOKEN_LIMIT = 8
_TOKEN_IN_TEXT = re.compile(r"(access_token=)[^&\s\"']+")


class _RedactTokens(logging.Filter):
    """httpx logs every request URL at INFO; our URLs carry the access token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                _TOKEN_IN_TEXT.sub(r"\1***", str(a)) if "access_token=" in str(a) else a
                for a in (record.args if isinstance(record.args, tuple) else (record.args,))
            )
        if isinstance(record.msg, str) and "access_token=" in record.msg:
            record.msg = _TOKEN_IN_TEXT.sub(r"\1***", record.msg)
        return True


_redactor = _RedactTokens()
for _name in ("httpx", "httpcore"):
    if _redactor not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_redactor)


# --------------------------------------------------------------------------- errors
class YeastarApiError(PbxRejected):
    """The PBX answered with a non-zero ``errcode``."""

    code = "yeastar_api_error"

    def __init__(
        self,
        errcode: int,
        errmsg: str,
        endpoint: str,
        invalid_params: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        detail = f"Yeastar {endpoint}: {errmsg or 'error'} (errcode {errcode})"
        if invalid_params:
            fields = ", ".join(str(p.get("field", "?")) for p in invalid_params)
            detail += f"; invalid: {fields}"
        super().__init__(detail)
        self.errcode = errcode
        self.errmsg = errmsg
        self.endpoint = endpoint
        self.invalid_params = tuple(invalid_params)


class YeastarTokenExpired(YeastarApiError):
    code = "yeastar_token_expired"


class YeastarAuthFailed(YeastarApiError):
    """Client ID / secret refused (or logins paused after repeated refusals)."""

    code = "yeastar_auth_failed"


class YeastarIpBlocked(YeastarApiError):
    """70004: the PBX blocked this hub's IP. Nothing retries this automatically."""

    code = "yeastar_ip_blocked"

    def __init__(self, errcode: int, errmsg: str, endpoint: str) -> None:
        super().__init__(errcode, errmsg, endpoint)
        self.message = (
            f"The Yeastar PBX blocked this hub's IP address ({errmsg or 'ACCOUNT IP BLOCKED'}). "
            "An administrator must unblock it in the PBX web portal under "
            "Security > Security Rules > Blocked IPs, check the API client ID/secret, "
            "then restart the link. callbridge has stopped calling this PBX."
        )
        self.args = (self.message,)


class YeastarTokenLimit(PbxRejected):
    """Logging in again would exceed the PBX's limit of live access tokens."""

    code = "yeastar_token_limit"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


ERRCODE_TOKEN_EXPIRED = 10004
ERRCODE_IP_BLOCKED = 70004
ERRCODE_NOT_FOUND = 60001


# --------------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    access_expires_in: int
    refresh_expires_in: int


@dataclass(frozen=True, slots=True)
class TokenStatus:
    """For status pages: never contains the tokens themselves."""

    state: Literal["none", "valid", "refreshable", "expired", "blocked"]
    access_expires_in: float | None
    refresh_expires_in: float | None
    logins: int
    refreshes: int


@dataclass(frozen=True, slots=True)
class CallActionResult:
    call_id: str


@dataclass(frozen=True, slots=True)
class CallInfo:
    call_id: str
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class Extension:
    id: int
    number: str
    caller_id_name: str
    email: str
    mobile: str
    presence_status: str
    online: bool


@dataclass(frozen=True, slots=True)
class ExtensionPage:
    total: int
    extensions: tuple[Extension, ...]


@dataclass(frozen=True, slots=True)
class RecordingLink:
    """A recording's download address; valid for 30 minutes from ``expires_at``'s start."""

    file: str
    path: str
    url: str = field(repr=False)  # contains the access token: hand out, never log
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class VoicemailMessage:
    """One message in an extension's mailbox (``vm/get``)."""

    msg_id: str  # the PBX's unique id of the message (what ``vm/download`` takes)
    file_name: str
    is_read: bool
    duration: int
    size: int
    caller_name: str
    caller_number: str
    time: str  # when it was left, as the PBX writes it


@dataclass(frozen=True, slots=True)
class CdrRecord:
    id: str
    uid: str
    time: str
    call_from: str
    call_to: str
    duration: int
    ring_duration: int
    talk_duration: int
    disposition: str
    call_type: str
    recording: str
    src_trunk: str
    dst_trunk: str
    did_number: str


@dataclass(frozen=True, slots=True)
class CdrPage:
    total: int
    records: tuple[CdrRecord, ...]


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _cdr_record(row: Mapping[str, Any]) -> CdrRecord:
    return CdrRecord(
        id=blank(row.get("id") or row.get("new_id")),
        uid=blank(row.get("uid")),
        time=blank(row.get("time")),
        call_from=blank(row.get("call_from")),
        call_to=blank(row.get("call_to")),
        duration=_int(row.get("duration")),
        ring_duration=_int(row.get("ring_duration")),
        talk_duration=_int(row.get("talk_duration")),
        disposition=blank(row.get("disposition")).upper(),
        call_type=blank(row.get("call_type")).lower(),
        recording=blank(row.get("recording")),
        src_trunk=blank(row.get("src_trunk")),
        dst_trunk=blank(row.get("dst_trunk")),
        did_number=blank(row.get("did_number")),
    )


def _voicemail(row: Mapping[str, Any]) -> VoicemailMessage:
    return VoicemailMessage(
        msg_id=blank(row.get("msg_id")),
        file_name=blank(row.get("file_name")),
        is_read=_int(row.get("is_read")) == 1,
        duration=max(0, _int(row.get("duration"))),
        size=max(0, _int(row.get("size"))),
        caller_name=blank(row.get("name")),
        caller_number=blank(row.get("number")),
        time=blank(row.get("time")),
    )


def _extension(row: Mapping[str, Any]) -> Extension:
    online = row.get("online_status")
    is_online = False
    if isinstance(online, Mapping):
        is_online = any(isinstance(v, Mapping) and _int(v.get("status")) == 1 for v in online.values())
    return Extension(
        id=_int(row.get("id")),
        number=blank(row.get("number")),
        caller_id_name=blank(row.get("caller_id_name")),
        email=blank(row.get("email_addr")),
        mobile=blank(row.get("mobile_number")),
        presence_status=blank(row.get("presence_status")),
        online=is_online,
    )


# --------------------------------------------------------------------------- client
@dataclass
class _Tokens:
    access: str = ""
    refresh: str = ""
    access_until: float = 0.0
    refresh_until: float = 0.0
    access_lifetime: float = 1800.0


class YeastarClient:
    """One PBX's OpenAPI. Safe to share between tasks; use as ``async with`` or ``aclose()``."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        user_agent: str = DEFAULT_USER_AGENT,
        timeout: float = 10.0,
        token_limit: int = TOKEN_LIMIT,
        refresh_margin: float = 300.0,
        max_auth_failures: int = 3,
        auth_pause: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._timeout = timeout
        self._token_limit = token_limit
        self._refresh_margin = refresh_margin
        self._max_auth_failures = max_auth_failures
        self._auth_pause = auth_pause
        self._clock = clock
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"User-Agent": user_agent or DEFAULT_USER_AGENT},
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
        )
        self._lock = asyncio.Lock()
        self._tokens = _Tokens()
        self._issued: list[float] = []  # when each live access token was issued
        self._auth_failures = 0
        self._auth_paused_until = 0.0
        self._blocked: YeastarIpBlocked | None = None
        self.logins = 0
        self.refreshes = 0

    async def __aenter__(self) -> YeastarClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self, *, revoke: bool = True) -> None:
        """Close the connection pool; by default revoke the token to free one of the 8 slots."""
        if revoke and self._tokens.access and self._clock() < self._tokens.access_until and not self._blocked:
            try:
                await self._send("GET", "del_token", params={"access_token": self._tokens.access})
            except Exception as exc:  # best effort: the token expires by itself anyway
                log.debug("yeastar %s: del_token failed: %s", self.base_url, exc)
            self._forget_tokens()
        await self._http.aclose()

    # ----------------------------------------------------------------- tokens
    def token_status(self) -> TokenStatus:
        now = self._clock()
        t = self._tokens
        access_left = t.access_until - now if t.access else None
        refresh_left = t.refresh_until - now if t.refresh else None
        state: Literal["none", "valid", "refreshable", "expired", "blocked"]
        if self._blocked is not None:
            state = "blocked"
        elif not t.access:
            state = "none"
        elif access_left is not None and access_left > 0:
            state = "valid"
        elif refresh_left is not None and refresh_left > 0:
            state = "refreshable"
        else:
            state = "expired"
        return TokenStatus(
            state=state,
            access_expires_in=max(access_left, 0.0) if access_left is not None else None,
            refresh_expires_in=max(refresh_left, 0.0) if refresh_left is not None else None,
            logins=self.logins,
            refreshes=self.refreshes,
        )

    @property
    def blocked(self) -> bool:
        return self._blocked is not None

    def reset_block(self) -> None:
        """An admin unblocked the IP (or fixed the credentials): allow requests again."""
        self._blocked = None
        self._auth_failures = 0
        self._auth_paused_until = 0.0

    def invalidate_token(self) -> None:
        """Forget the access token (the PBX said it expired); the refresh token is kept."""
        self._tokens.access_until = 0.0

    def _forget_tokens(self) -> None:
        self._tokens = _Tokens()

    def _needs_new_access(self, now: float) -> bool:
        t = self._tokens
        margin = min(self._refresh_margin, t.access_lifetime * 0.2)
        return not t.access or now >= t.access_until - margin

    async def access_token(self) -> str:
        """A valid access token, refreshing or logging in first if needed."""
        if self._blocked is not None:
            raise self._blocked
        if not self._needs_new_access(self._clock()):
            return self._tokens.access
        async with self._lock:
            # Another task may have renewed it while we waited for the lock.
            now = self._clock()
            if not self._needs_new_access(now):
                return self._tokens.access
            if self._tokens.refresh and now < self._tokens.refresh_until - 5:
                try:
                    await self._refresh()
                    return self._tokens.access
                except YeastarIpBlocked:
                    raise
                except YeastarApiError as exc:
                    log.info("yeastar %s: refresh refused (%s); logging in again", self.base_url, exc.errmsg)
            await self._login()
            return self._tokens.access

    def _store(self, data: Mapping[str, Any]) -> TokenPair:
        access = blank(data.get("access_token"))
        refresh = blank(data.get("refresh_token"))
        if not access or not refresh:
            raise PbxUnavailable(f"Yeastar {self.base_url}: token response without tokens")
        pair = TokenPair(
            access_token=access,
            refresh_token=refresh,
            access_expires_in=_int(data.get("access_token_expire_time")) or 1800,
            refresh_expires_in=_int(data.get("refresh_token_expire_time")) or 86400,
        )
        now = self._clock()
        self._tokens = _Tokens(
            access=pair.access_token,
            refresh=pair.refresh_token,
            access_until=now + pair.access_expires_in,
            refresh_until=now + pair.refresh_expires_in,
            access_lifetime=float(pair.access_expires_in),
        )
        self._issued.append(now)
        return pair

    def _live_issued(self, now: float) -> list[float]:
        lifetime = self._tokens.access_lifetime
        self._issued = [t for t in self._issued if now - t < lifetime]
        return self._issued

    async def _login(self) -> None:
        now = self._clock()
        if now < self._auth_paused_until:
            raise YeastarAuthFailed(
                -1,
                "login paused after repeated refused credentials (avoids an IP block); "
                "check the client ID and secret",
                "get_token",
            )
        live = self._live_issued(now)
        if len(live) >= self._token_limit:
            retry = live[0] + self._tokens.access_lifetime - now
            raise YeastarTokenLimit(
                f"Yeastar {self.base_url}: {len(live)} tokens already issued; the PBX allows "
                f"{self._token_limit}. Retry in {retry:.0f}s.",
                retry_after=retry,
            )
        body = {"username": self._client_id, "password": self._client_secret}
        try:
            data = await self._send("POST", "get_token", json=body)
        except YeastarIpBlocked:
            raise
        except YeastarApiError as exc:
            self._auth_failures += 1
            if self._auth_failures >= self._max_auth_failures:
                self._auth_paused_until = self._clock() + self._auth_pause
            log.warning(
                "yeastar %s: login refused (%s), %d in a row", self.base_url, exc.errmsg, self._auth_failures
            )
            raise YeastarAuthFailed(exc.errcode, exc.errmsg, "get_token", exc.invalid_params) from exc
        self._auth_failures = 0
        self._store(data)
        self.logins += 1
        log.info("yeastar %s: logged in to the OpenAPI", self.base_url)

    async def _refresh(self) -> None:
        data = await self._send("POST", "refresh_token", json={"refresh_token": self._tokens.refresh})
        self._store(data)
        self.refreshes += 1
        log.debug("yeastar %s: access token refreshed", self.base_url)

    # ----------------------------------------------------------------- requests
    async def _send(
        self,
        method: str,
        endpoint: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Mapping[str, Any] | None = None,
        api_path: str = API_PATH,
    ) -> dict[str, Any]:
        if self._blocked is not None:
            raise self._blocked
        url = f"{api_path}/{endpoint}"
        try:
            response = await self._http.request(method, url, params=params, json=json)
        except httpx.TimeoutException as exc:
            raise PbxTimeout(f"Yeastar {self.base_url}: {endpoint} timed out after {self._timeout}s") from exc
        except httpx.HTTPError as exc:
            raise PbxUnavailable(f"Yeastar {self.base_url}: {endpoint} failed: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise PbxUnavailable(f"Yeastar {self.base_url}: {endpoint} answered HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError as exc:
            raise PbxUnavailable(f"Yeastar {self.base_url}: {endpoint} answered non-JSON") from exc
        if not isinstance(data, dict):
            raise PbxUnavailable(f"Yeastar {self.base_url}: {endpoint} answered an unexpected shape")
        errcode = _int(data.get("errcode", -1))
        if errcode == 0:
            return data
        errmsg = blank(data.get("errmsg"))
        if errcode == ERRCODE_IP_BLOCKED:
            self._blocked = YeastarIpBlocked(errcode, errmsg, endpoint)
            log.error("yeastar %s: %s", self.base_url, self._blocked.message)
            raise self._blocked
        invalid = data.get("invalid_param_list")
        params_list = [p for p in invalid if isinstance(p, Mapping)] if isinstance(invalid, list) else []
        cls = YeastarTokenExpired if errcode == ERRCODE_TOKEN_EXPIRED else YeastarApiError
        raise cls(errcode, errmsg, endpoint, params_list)

    async def request(
        self,
        method: str,
        endpoint: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Mapping[str, Any] | None = None,
        api_path: str = API_PATH,
    ) -> dict[str, Any]:
        """An authenticated call; on 10004 the token is renewed and the call retried once."""
        for attempt in (1, 2):
            token = await self.access_token()
            query = {**(params or {}), "access_token": token}
            try:
                return await self._send(method, endpoint, params=query, json=json, api_path=api_path)
            except YeastarTokenExpired:
                if attempt == 2:
                    raise
                log.info("yeastar %s: token expired on %s; renewing and retrying", self.base_url, endpoint)
                if self._tokens.access == token:
                    self.invalidate_token()
        raise AssertionError("unreachable")  # pragma: no cover

    # ----------------------------------------------------------------- call control
    async def dial(
        self, caller: str, callee: str, *, auto_answer: bool = False, dial_permission: str = ""
    ) -> CallActionResult:
        """Ring ``caller`` (an extension) and, once it answers, dial ``callee``.

        Permission problems do not fail here: the PBX reports them later as 30015."""
        body: dict[str, Any] = {
            "caller": caller,
            "callee": callee,
            "auto_answer": "yes" if auto_answer else "no",
        }
        if dial_permission:
            body["dial_permission"] = dial_permission
        return self._call_result(await self.request("POST", "call/dial", json=body))

    async def hangup(self, channel_id: str) -> CallActionResult:
        return self._call_result(await self.request("POST", "call/hangup", json={"channel_id": channel_id}))

    async def transfer_blind(self, channel_id: str, number: str) -> CallActionResult:
        """``channel_id`` is the party being transferred (e.g. the trunk leg)."""
        body = {"type": "blind", "channel_id": channel_id, "number": number}
        return self._call_result(await self.request("POST", "call/transfer", json=body))

    async def transfer_attended(self, channel_id: str, number: str) -> CallActionResult:
        """Start a consultation: ``channel_id`` is the transferor's leg."""
        body = {"type": "attended", "channel_id": channel_id, "number": number}
        return self._call_result(await self.request("POST", "call/transfer", json=body))

    async def transfer_attended_operate(
        self, channel_id: str, operation: Literal["complete", "abort", "threeway", "swap"]
    ) -> CallActionResult:
        body = {"type": "attended", "channel_id": channel_id, "attended_operate": operation}
        return self._call_result(await self.request("POST", "call/transfer", json=body))

    async def hold(self, channel_id: str) -> CallActionResult:
        return self._call_result(await self.request("POST", "call/hold", json={"channel_id": channel_id}))

    async def unhold(self, channel_id: str) -> CallActionResult:
        return self._call_result(await self.request("POST", "call/unhold", json={"channel_id": channel_id}))

    async def accept_inbound(self, channel_id: str) -> CallActionResult:
        """Release a held trunk call (30016) for routing now. This does not answer it."""
        body = {"channel_id": channel_id}
        return self._call_result(await self.request("POST", "call/accept_inbound", json=body))

    async def refuse_inbound(self, channel_id: str) -> CallActionResult:
        body = {"channel_id": channel_id}
        return self._call_result(await self.request("POST", "call/refuse_inbound", json=body))

    async def query_calls(
        self, *, call_id: str = "", call_type: str = "", extension: str = ""
    ) -> tuple[CallInfo, ...]:
        """Calls in progress; an empty tuple when there are none (the PBX says 60001)."""
        params = {k: v for k, v in (("call_id", call_id), ("type", call_type), ("extension", extension)) if v}
        try:
            data = await self.request("GET", "call/query", params=params)
        except YeastarApiError as exc:
            if exc.errcode == ERRCODE_NOT_FOUND:
                return ()
            raise
        rows = data.get("data")
        out: list[CallInfo] = []
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, Mapping) and blank(row.get("call_id")):
                out.append(
                    CallInfo(call_id=blank(row.get("call_id")), members=parse_members(row.get("members")))
                )
        return tuple(out)

    @staticmethod
    def _call_result(data: Mapping[str, Any]) -> CallActionResult:
        return CallActionResult(call_id=blank(data.get("call_id")))

    # ----------------------------------------------------------------- data
    async def list_extensions(self, page: int = 1, page_size: int = 100) -> ExtensionPage:
        params = {"page": page, "page_size": page_size, "sort_by": "number", "order_by": "asc"}
        data = await self.request("GET", "extension/list", params=params)
        rows = data.get("data")
        items = tuple(_extension(r) for r in rows if isinstance(r, Mapping)) if isinstance(rows, list) else ()
        return ExtensionPage(total=_int(data.get("total_number")), extensions=items)

    async def iter_extensions(self, page_size: int = 100) -> AsyncIterator[Extension]:
        page = 1
        seen = 0
        while True:
            result = await self.list_extensions(page, page_size)
            for ext in result.extensions:
                yield ext
            seen += len(result.extensions)
            if not result.extensions or seen >= result.total:
                return
            page += 1

    async def recording_link(self, *, file: str = "", recording_id: str = "") -> RecordingLink:
        """The download address for a recording (from a CDR's ``recording`` file name)."""
        if not file and not recording_id:
            raise ValueError("give file or recording_id")
        params = {"file": file} if file else {"id": recording_id}
        data = await self.request("GET", "recording/download", params=params)
        path = blank(data.get("download_resource_url"))
        if not path.startswith("/"):
            raise PbxUnavailable(f"Yeastar {self.base_url}: recording/download without a download path")
        token = await self.access_token()
        return RecordingLink(
            file=blank(data.get("file")) or file,
            path=path,
            url=str(httpx.URL(self.base_url + path, params={"access_token": token})),
            expires_at=datetime.now(UTC) + timedelta(minutes=30),
        )

    async def download_recording(self, file: str, dest: Path, *, max_bytes: int = 2 * 1024**3) -> str:
        """Download the recording named ``file`` (a CDR's ``recording``) to ``dest``; returns
        the PBX's file name. The download address and its token stay inside the hub. A
        download the PBX refuses for an expired token is asked for anew once."""
        return await self._download(lambda: self.recording_link(file=file), dest, max_bytes, "recording")

    async def list_voicemails(self, number: str, *, page_size: int = 100) -> list[VoicemailMessage]:
        """The messages in extension ``number``'s mailbox (``vm/get``), every page."""
        found: list[VoicemailMessage] = []
        page = 1
        while True:
            params = {"number": number, "page": page, "page_size": page_size}
            data = await self.request("GET", "vm/get", params=params)
            rows = data.get("data")
            batch = [_voicemail(r) for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else []
            found.extend(m for m in batch if m.msg_id)
            if not batch or len(found) >= _int(data.get("total_number")) or page >= 100:
                return found
            page += 1

    async def voicemail_link(self, msg_id: str) -> RecordingLink:
        """The download address of voicemail message ``msg_id`` (``vm/download``); valid 30 min."""
        if not msg_id:
            raise ValueError("give msg_id")
        data = await self.request("GET", "vm/download", params={"msg_id": msg_id})
        path = blank(data.get("download_resource_url"))
        if not path.startswith("/"):
            raise PbxUnavailable(f"Yeastar {self.base_url}: vm/download without a download path")
        token = await self.access_token()
        return RecordingLink(
            file=blank(data.get("file")),
            path=path,
            url=str(httpx.URL(self.base_url + path, params={"access_token": token})),
            expires_at=datetime.now(UTC) + timedelta(minutes=30),
        )

    async def download_voicemail(self, msg_id: str, dest: Path, *, max_bytes: int = 2 * 1024**3) -> str:
        """Download voicemail message ``msg_id`` to ``dest``; returns the PBX's file name. As
        for recordings, the download address and its token never leave the hub."""
        return await self._download(lambda: self.voicemail_link(msg_id), dest, max_bytes, "voicemail")

    async def _download(
        self, link_for: Callable[[], Awaitable[RecordingLink]], dest: Path, max_bytes: int, what: str
    ) -> str:
        for attempt in (1, 2):
            link = await link_for()
            try:
                async with self._http.stream("GET", link.url) as response:
                    if response.status_code != 200:
                        raise PbxUnavailable(
                            f"Yeastar {self.base_url}: {what} download answered HTTP {response.status_code}"
                        )
                    if response.headers.get("content-type", "").startswith("application/json"):
                        data = json.loads(await response.aread() or b"{}")
                        errcode = _int(data.get("errcode", -1)) if isinstance(data, dict) else -1
                        errmsg = blank(data.get("errmsg")) if isinstance(data, dict) else ""
                        if errcode == ERRCODE_TOKEN_EXPIRED and attempt == 1:
                            self.invalidate_token()
                            continue
                        raise YeastarApiError(errcode, errmsg, f"{what} download")
                    written = 0
                    with dest.open("wb") as out:
                        async for chunk in response.aiter_bytes(256 * 1024):
                            written += len(chunk)
                            if written > max_bytes:
                                raise PbxRejected(
                                    f"Yeastar {self.base_url}: {what} larger than {max_bytes} bytes"
                                )
                            out.write(chunk)
                    expected = response.headers.get("content-length")
                    if expected is not None and expected.isdigit() and int(expected) != written:
                        raise PbxUnavailable(
                            f"Yeastar {self.base_url}: {what} download cut off at {written} of "
                            f"{expected} bytes"
                        )
                    return link.file
            except httpx.TimeoutException as exc:
                raise PbxTimeout(f"Yeastar {self.base_url}: {what} download timed out") from exc
            except httpx.HTTPError as exc:
                raise PbxUnavailable(
                    f"Yeastar {self.base_url}: {what} download failed: {type(exc).__name__}"
                ) from exc
            except ValueError as exc:
                raise PbxUnavailable(f"Yeastar {self.base_url}: {what} download answered bad JSON") from exc
        raise YeastarTokenExpired(ERRCODE_TOKEN_EXPIRED, "TOKEN EXPIRED", f"{what} download")

    async def list_cdr(
        self, page: int = 1, page_size: int = 100, *, order_by: Literal["asc", "desc"] = "desc"
    ) -> CdrPage:
        params = {"page": page, "page_size": page_size, "sort_by": "id", "order_by": order_by}
        data = await self.request("GET", "cdr/list", params=params)
        rows = data.get("data")
        records = (
            tuple(_cdr_record(r) for r in rows if isinstance(r, Mapping)) if isinstance(rows, list) else ()
        )
        return CdrPage(total=_int(data.get("total_number")), records=records)


def call_report_from_info(info: CallInfo) -> CallReport:
    """``call/query`` rows have the same members as 30011; feed them to the mapper on resync."""
    return CallReport(type=30011, call_id=info.call_id, members=info.members)
