"""Yeastar event envelopes: signature check, parsing, duplicate detection. Framework-free.

The HTTP route (in ``web/``) hands the raw body and the ``X-Signature`` header to
:func:`parse_webhook` and maps the errors below to 4xx; the WebSocket subscription uses
:func:`parse_envelope` for its frames (no signature there: the socket itself is authenticated).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from callbridge.domain.errors import AuthenticationFailed, InvalidEvent, InvalidInput, PayloadTooLarge
from callbridge.pbx.yeastar.payloads import Payload, parse_payload

DEFAULT_MAX_BYTES = 64 * 1024


def ack_body(accepted: int) -> dict[str, object]:
    """What the PBX expects back from a webhook: its own success envelope."""
    return {"errcode": 0, "errmsg": "SUCCESS", "accepted": accepted}


"""Real events are well under 4 KiB; anything near this is not from a PBX."""


class WebhookError(InvalidInput):
    """Base for webhook rejections; the web layer maps every subclass to a 4xx."""

    code = "yeastar_webhook_invalid"


class WebhookMalformed(WebhookError, InvalidEvent):
    """Not JSON, not an envelope, or a payload missing what the driver needs → 400."""

    code = "yeastar_webhook_malformed"


class WebhookTooLarge(WebhookError, PayloadTooLarge):
    """Body larger than ``max_bytes`` → 413."""

    code = "yeastar_webhook_too_large"


class WebhookSignatureInvalid(AuthenticationFailed):
    """Missing or wrong ``X-Signature`` → 401. Deliberately not a ``WebhookError``: the
    web layer should answer it like any failed authentication."""

    code = "yeastar_webhook_signature_invalid"


@dataclass(frozen=True, slots=True)
class YeastarMessage:
    """One event envelope ``{"type", "sn", "msg"}`` with its ``msg`` decoded.

    ``payload`` is the typed view (``None`` for event types the driver ignores).
    ``dedupe_key`` is equal for byte-different retries of the same event (it hashes the
    decoded content, not the bytes), so a receiver can drop PBX retries and replays.
    """

    type: int
    sn: str
    msg: Mapping[str, Any] = field(repr=False)
    payload: Payload | None
    dedupe_key: str


def sign(body: bytes, secret: str) -> str:
    """The ``X-Signature`` value Yeastar sends: Base64(HMAC-SHA256(secret, raw body))."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_signature(body: bytes, signature: str | None, secret: str) -> None:
    """Raise :class:`WebhookSignatureInvalid` unless ``signature`` signs ``body``."""
    if not secret:
        # An empty secret would make every forged body "valid"; refuse to run like that.
        raise WebhookSignatureInvalid("no webhook secret configured for this PBX")
    if not signature:
        raise WebhookSignatureInvalid("missing X-Signature header")
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookSignatureInvalid("X-Signature is not Base64") from exc
    expected = hmac.digest(secret.encode(), body, "sha256")  # one C call, no HMAC object
    if not hmac.compare_digest(given, expected):
        raise WebhookSignatureInvalid("X-Signature does not match the body")


def _decode_msg(raw: Any) -> Mapping[str, Any]:
    # Call events carry msg as a JSON string; some newer events (30033) as an object.
    if isinstance(raw, Mapping):
        return raw
    if isinstance(raw, str):
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise WebhookMalformed("msg is a string but not JSON") from exc
        if isinstance(decoded, Mapping):
            return decoded
    raise WebhookMalformed("msg must be a JSON object or a JSON-encoded object")


@dataclass(frozen=True, slots=True)
class Envelope:
    """One event envelope as checked at the door: its type, serial and decoded ``msg``; the
    payload inside is read later (:func:`message_of`)."""

    type: int
    sn: str
    msg: Mapping[str, Any] = field(repr=False)


def read_envelope(data: Any) -> Envelope:
    """Check one decoded envelope; raises :class:`WebhookMalformed`."""
    if not isinstance(data, Mapping):
        raise WebhookMalformed("event envelope must be a JSON object")
    raw_type = data.get("type")
    if isinstance(raw_type, bool):
        raise WebhookMalformed("type must be an integer")
    try:
        event_type = int(raw_type)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise WebhookMalformed("type must be an integer") from exc
    if "msg" not in data:
        raise WebhookMalformed("envelope without msg")
    return Envelope(event_type, str(data.get("sn") or "").strip(), _decode_msg(data["msg"]))


def message_of(envelope: Envelope) -> YeastarMessage:
    """Read an envelope's payload; raises :class:`WebhookMalformed` when it lacks what the
    driver needs."""
    event_type, sn, msg = envelope.type, envelope.sn, envelope.msg
    try:
        payload = parse_payload(event_type, msg)
    except InvalidEvent as exc:
        raise WebhookMalformed(f"event {event_type}: {exc.message}") from exc
    try:
        canonical = orjson.dumps({"type": event_type, "sn": sn, "msg": msg}, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # a Mapping that is not a dict (only from callers in this process)
        canonical = orjson.dumps(
            {"type": event_type, "sn": sn, "msg": dict(msg)}, option=orjson.OPT_SORT_KEYS, default=str
        )
    key = hashlib.sha256(canonical).hexdigest()[:32]
    return YeastarMessage(type=event_type, sn=sn, msg=msg, payload=payload, dedupe_key=key)


def parse_envelope(data: Any) -> YeastarMessage:
    """Parse one decoded envelope, payload included; raises :class:`WebhookMalformed`."""
    return message_of(read_envelope(data))


def read_json_envelopes(text: str | bytes) -> list[Envelope]:
    """Decode a body holding one envelope (what Yeastar sends) or a list of them."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:  # also invalid UTF-8
        raise WebhookMalformed("body is not JSON") from exc
    items = data if isinstance(data, list) else [data]
    if not items:
        raise WebhookMalformed("empty event list")
    return [read_envelope(item) for item in items]


def parse_json_envelopes(text: str | bytes) -> list[YeastarMessage]:
    """:func:`read_json_envelopes`, payloads included."""
    return [message_of(envelope) for envelope in read_json_envelopes(text)]


def verify_webhook(
    raw_body: bytes,
    signature: str | None,
    secret: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    *,
    expected_sn: str | None = None,
) -> list[Envelope]:
    """What a webhook's ack needs checked: size, signature, envelopes (see :func:`parse_webhook`);
    the payloads are read after the ack, by whoever processes the stored body."""
    if len(raw_body) > max_bytes:
        raise WebhookTooLarge(f"webhook body is {len(raw_body)} bytes, limit {max_bytes}")
    verify_signature(raw_body, signature, secret)
    if not raw_body.strip():
        raise WebhookMalformed("empty body")
    envelopes = read_json_envelopes(raw_body)
    if expected_sn is not None:
        for envelope in envelopes:
            if envelope.sn and envelope.sn != expected_sn:
                raise WebhookMalformed(f"event from PBX serial {envelope.sn!r}, expected another")
    return envelopes


def parse_webhook(
    raw_body: bytes,
    signature: str | None,
    secret: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    *,
    expected_sn: str | None = None,
) -> list[YeastarMessage]:
    """Verify and parse one Yeastar webhook request.

    Contract for the web route:

    - ``raw_body``: the request body exactly as received (do not re-serialize: the signature
      covers the bytes). Read at most ``max_bytes + 1`` bytes so oversize is detectable.
    - ``signature``: the ``X-Signature`` header, or ``None`` when absent.
    - ``secret``: the PBX's 32-character webhook secret (plain text).
    - ``expected_sn``: when given, envelopes from another PBX serial are refused.

    Checks run cheapest-first and in an order that leaks nothing: size, then signature
    (constant-time), then JSON. Returns the messages (usually one) in body order.

    Raises (the route maps them; none of them should become a 500):

    - :class:`WebhookTooLarge` → 413
    - :class:`WebhookSignatureInvalid` → 401 (also when no secret is configured)
    - :class:`WebhookMalformed` → 400

    The route should answer 2xx as soon as this returns and the messages are handed to
    :meth:`callbridge.pbx.yeastar.link.YeastarLink.handle_webhook_messages`; a non-2xx makes
    the PBX retry, and retries are harmless (see :attr:`YeastarMessage.dedupe_key`).
    """
    envelopes = verify_webhook(raw_body, signature, secret, max_bytes, expected_sn=expected_sn)
    return [message_of(envelope) for envelope in envelopes]


class DuplicateFilter:
    """Remembers the last ``capacity`` dedupe keys; ``seen`` is True for repeats."""

    def __init__(self, capacity: int = 4096) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def seen(self, key: str) -> bool:
        if key in self._keys:
            self._keys.move_to_end(key)
            return True
        self._keys[key] = None
        if len(self._keys) > self._capacity:
            self._keys.popitem(last=False)
        return False

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)
