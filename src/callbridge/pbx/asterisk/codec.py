"""Sans-IO codec for the Asterisk Manager Interface (AMI) wire format.

No sockets here: :class:`AmiDecoder` turns bytes (in reads of any size) into
:class:`Message` / :class:`Banner` / :class:`FrameError` records, and :func:`encode_action`
turns an action into bytes that cannot smuggle a second header or action.

Wire facts (``reference/asterisk_ami.md`` §1.2): a message is ``Key: Value`` lines ended by an
empty line; Asterisk sends CRLF but bare LF is accepted, so both are handled; keys are
case-insensitive and may repeat (``Variable``, ``Output``, ``ChanVariable``); the first line of a
session is a banner without a blank line after it.

Speed matters: Asterisk drops a session whose socket is not drained within ``writetimeout``
(100 ms by default), so the decoder works on whole batches of frames per read (one ``replace``,
one ``split``, one ``decode`` per frame) instead of line by line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

BANNER_PREFIX = "Asterisk Call Manager/"
DEFAULT_MAX_LINE_BYTES = 64 * 1024
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024
_RAW_PER_CHAR = 8

# Keys whose values Asterisk passes through ast_escape_c_alloc (names and VarSet values).
ESCAPED_KEYS = frozenset(
    {
        "calleridname",
        "connectedlinename",
        "destcalleridname",
        "destconnectedlinename",
        "value",
    }
)

_C_ESCAPES = {
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "?": "?",
}
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-().]+$")
_UNSAFE_VALUE = re.compile(r"[\r\n\x00]")


def unescape(value: str) -> str:
    """Undo Asterisk's C escaping (``\\n`` → newline); unknown escapes keep the character."""
    if "\\" not in value:
        return value
    return _ESCAPE_RE.sub(lambda m: _C_ESCAPES.get(m.group(1), m.group(1)), value)


# Header names of a message, in order → their lower-case index (shared, never changed).
_LOWER_INDEXES: dict[tuple[str, ...], dict[str, str]] = {}


class Message:
    """One AMI message (event, response or action): case-insensitive, repeated keys kept.

    ``get`` returns the first value of a key; ``get_all`` every value in order. Lookups with the
    canonical spelling hit a plain dict; other spellings fall back to a lazily built
    lower-case index, so the common path costs one dict lookup.
    """

    __slots__ = ("_first", "_lower", "_multi", "_raw", "_sep")

    def __init__(
        self,
        first: dict[str, str] | None = None,
        multi: dict[str, list[str]] | None = None,
        *,
        raw: str = "",
        sep: str = "\r\n",
    ) -> None:
        self._first = first
        self._multi = multi
        self._lower: dict[str, str] | None = None
        self._raw = raw
        self._sep = sep

    def _load(self) -> dict[str, str]:
        first = self._first
        if first is None:
            first, self._multi = _split_headers(self._raw, self._sep)
            self._first = first
            self._raw = ""
        return first

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> Message:
        first: dict[str, str] = {}
        multi: dict[str, list[str]] | None = None
        for key, value in pairs:
            if key in first:
                if multi is None:
                    multi = {}
                multi.setdefault(key, [first[key]]).append(value)
            else:
                first[key] = value
        return cls(first, multi)

    def _real_key(self, key: str) -> str | None:
        first = self._load()
        if key in first:
            return key
        lower = self._lower
        if lower is None:
            # Messages of one kind share their keys (and their order): build each index once.
            shape = tuple(first)
            lower = _LOWER_INDEXES.get(shape)
            if lower is None:
                if len(_LOWER_INDEXES) >= 1024:
                    _LOWER_INDEXES.clear()
                lower = _LOWER_INDEXES[shape] = {k.lower(): k for k in first}
            self._lower = lower
        return lower.get(key.lower())

    def get(self, key: str, default: str = "") -> str:
        first = self._first
        if first is None:
            if key == "Event":
                return self.name
            first = self._load()
        value = first.get(key)
        if value is not None:
            return value
        real = self._real_key(key)
        return default if real is None else first[real]

    def get_all(self, key: str) -> list[str]:
        real = self._real_key(key)
        if real is None:
            return []
        if self._multi is not None and real in self._multi:
            return list(self._multi[real])
        return [self._load()[real]]

    def unescaped(self, key: str, default: str = "") -> str:
        return unescape(self.get(key, default))

    def variables(self, key: str = "ChanVariable") -> dict[str, str]:
        """``Key: name=value`` headers (ChanVariable, Variable) as a dict."""
        out: dict[str, str] = {}
        for item in self.get_all(key):
            name, _, value = item.partition("=")
            out[name] = value
        return out

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._real_key(key) is not None

    def __getitem__(self, key: str) -> str:
        real = self._real_key(key)
        if real is None:
            raise KeyError(key)
        return self._load()[real]

    def items(self) -> Iterator[tuple[str, str]]:
        """Every header, repeated keys expanded (order of first appearance)."""
        for key, value in self._load().items():
            if self._multi is not None and key in self._multi:
                for item in self._multi[key]:
                    yield key, item
            else:
                yield key, value

    def keys(self) -> list[str]:
        return list(self._load())

    @property
    def name(self) -> str:
        """The event name, or ``""`` for responses and actions (read without a full parse)."""
        raw = self._raw
        if self._first is None and raw.startswith("Event: "):
            end = raw.find(self._sep)
            name = raw[7:] if end < 0 else raw[7:end]
            if ": " not in name:
                return name
        first = self._load()
        value = first.get("Event")
        if value is not None:
            return value
        real = self._real_key("Event")
        return "" if real is None else first[real]

    @property
    def is_event(self) -> bool:
        return "Event" in self

    @property
    def is_response(self) -> bool:
        return "Response" in self

    @property
    def action_id(self) -> str:
        return self.get("ActionID")

    def as_dict(self) -> dict[str, str | list[str]]:
        """Every header as a new dict (repeated keys as lists); the caller owns the result."""
        if self._first is None:
            # Not parsed yet: parse straight into the caller's dict instead of caching and copying.
            first, multi = _split_headers(self._raw, self._sep)
            if multi is None:
                return cast("dict[str, str | list[str]]", first)  # nobody else holds it
            self._first, self._multi, self._raw = first, multi, ""
        out: dict[str, str | list[str]] = dict(self._load())
        if self._multi:
            out.update({k: list(v) for k, v in self._multi.items()})
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return list(self.items()) == list(other.items())

    def __hash__(self) -> int:
        return hash(tuple(self.items()))

    def __repr__(self) -> str:
        head = self.get("Event") or self.get("Response") or self.get("Action") or "?"
        return f"<Message {head} {len(self._load())} keys>"


@dataclass(frozen=True, slots=True)
class Banner:
    """The greeting line; ``version`` is the AMI protocol version (11.0.0 on Asterisk 22)."""

    version: str


@dataclass(frozen=True, slots=True)
class FrameError:
    """A frame the decoder dropped (too long, line too long); decoding resumes after it."""

    reason: str
    # How many bytes were dropped; depends on how the stream was split, so not compared.
    size: int = field(default=0, compare=False)


Record = Message | Banner | FrameError


class AmiDecoder:
    """Incremental decoder: ``feed(bytes)`` returns the complete records found so far.

    Any split of a stream into reads gives the same records. Memory is bounded: a frame whose
    terminator does not come within ``max_frame_bytes`` is dropped (one :class:`FrameError`) and
    the decoder skips to the next blank line.
    """

    def __init__(
        self,
        *,
        expect_banner: bool = True,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self._buf = bytearray()
        self._expect_banner = expect_banner
        self._max_line = max_line_bytes
        self._max_frame = max_frame_bytes
        self._skipping = False
        self._skipped = 0
        # Where to resume looking for a terminator: bytes before it were already searched.
        self._scan_from = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Record]:
        out: list[Record] = []
        buf = self._buf
        buf += data
        if self._expect_banner:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > self._max_line:
                    self._expect_banner = False  # no banner coming; treat as frames
                else:
                    return out
            else:
                self._expect_banner = False
                line = bytes(buf[:nl]).rstrip(b"\r").decode("utf-8", "replace")
                if nl <= self._max_line and line.startswith(BANNER_PREFIX):
                    out.append(Banner(line[len(BANNER_PREFIX) :].strip()))
                    del buf[: nl + 1]
                self._scan_from = 0
        if self._skipping:
            end = _first_terminator_end(buf, 0)
            if end < 0:
                self._skipped += max(0, len(buf) - 2)
                # Keep two bytes: a terminator may straddle this read and the next.
                del buf[:-2]
                return out
            self._skipped += end
            out.append(FrameError("frame too long", self._skipped))
            del buf[:end]
            self._skipping = False
            self._skipped = 0
            self._scan_from = 0
        end = _last_terminator_end(buf, self._scan_from)
        if end < 0:
            self._scan_from = max(0, len(buf) - 2)
            if len(buf) > _RAW_PER_CHAR * self._max_frame:
                # Limits count decoded characters; one character is at most 8 raw bytes
                # (4 UTF-8 bytes, CRLF counted twice), so this frame is surely over the limit.
                self._skipping = True
                self._skipped = len(buf) - 2
                del buf[:-2]
                self._scan_from = 0
            return out
        block = bytes(buf[:end])
        del buf[:end]
        self._scan_from = 0
        self._parse_block(block, out)
        if len(buf) > _RAW_PER_CHAR * self._max_frame:
            self._skipping = True
            self._skipped = len(buf) - 2
            del buf[:-2]
        return out

    def _parse_block(self, block: bytes, out: list[Record]) -> None:
        max_frame = self._max_frame
        max_line = self._max_line
        append = out.append
        # Whole-batch work in C: one decode and one split; no normalization when every line
        # ends in CRLF (what Asterisk sends), which gives the same frames as normalizing first.
        if block.count(b"\n") == block.count(b"\r\n"):
            text = block.decode("utf-8", "replace")
            frame_sep, line_sep = "\r\n\r\n", "\r\n"
        else:
            text = block.replace(b"\r\n", b"\n").decode("utf-8", "replace")
            frame_sep, line_sep = "\n\n", "\n"
        for frame in text.split(frame_sep):
            size = len(frame)
            if size > max_line:
                if size - frame.count(line_sep) * (len(line_sep) - 1) > max_frame:
                    append(FrameError("frame too long", size))
                    continue
                if any(len(line) > max_line for line in frame.split(line_sep)):
                    append(FrameError("line too long", size))
                    continue
            if ":" in frame:
                # Headers are split on first use: most events (VarSet, CEL, RTCP…) are only
                # looked at by name and dropped, so parsing them eagerly would be wasted work.
                append(Message(raw=frame, sep=line_sep))


def _split_headers(raw: str, sep: str) -> tuple[dict[str, str], dict[str, list[str]] | None]:
    lines = raw.split(sep)
    try:
        first = dict([line.split(": ", 1) for line in lines])
    except ValueError:
        first = None
    if first is not None and len(first) == len(lines):
        return first, None  # the common case: one "Key: Value" per line, no repeats
    return _parse_lines(lines)


def _parse_lines(lines: list[str]) -> tuple[dict[str, str], dict[str, list[str]] | None]:
    """The general case: repeated keys, blank lines, ``Key:value`` without the space."""
    first: dict[str, str] = {}
    multi: dict[str, list[str]] | None = None
    for line in lines:
        if ": " in line:
            key, value = line.split(": ", 1)
        else:
            key, sep, value = line.partition(":")
            if not sep:
                continue  # blank or malformed line: Asterisk never sends one inside a frame
        if key in first:
            if multi is None:
                multi = {}
            lst = multi.get(key)
            if lst is None:
                multi[key] = [first[key], value]
            else:
                lst.append(value)
        else:
            first[key] = value
    return first, multi


def _last_terminator_end(buf: bytearray, start: int) -> int:
    """End offset of the last blank line (``\\n\\n`` or ``\\n\\r\\n``) at or after ``start``."""
    a = buf.rfind(b"\n\n", start)
    b = buf.rfind(b"\n\r\n", start)
    if a < 0 and b < 0:
        return -1
    return max(a + 2 if a >= 0 else -1, b + 3 if b >= 0 else -1)


def _first_terminator_end(buf: bytearray, start: int) -> int:
    a = buf.find(b"\n\n", start)
    b = buf.find(b"\n\r\n", start)
    if a < 0 and b < 0:
        return -1
    if a < 0:
        return b + 3
    if b < 0:
        return a + 2
    return min(a + 2, b + 3)


def parse_stream(data: bytes, *, expect_banner: bool = True) -> list[Record]:
    """Decode a whole byte string (a capture) in one go."""
    return AmiDecoder(expect_banner=expect_banner).feed(data)


HeaderValue = str | int | float | bool | Sequence[str]


def _clean_value(value: str) -> str:
    # A CR or LF would end the header (and a blank line the action): that is how
    # "Channel: X\r\nAction: Command" injections work. Replace them; never pass them through.
    return _UNSAFE_VALUE.sub(" ", value) if _UNSAFE_VALUE.search(value) else value


def _render(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def encode_message(headers: Iterable[tuple[str, HeaderValue]]) -> bytes:
    """Render headers as one AMI message; lists become repeated headers.

    Keys must be plain tokens (raises ``ValueError`` otherwise: a key is always chosen by our
    code); values are sanitised so they can never start a new header or message.
    """
    parts: list[str] = []
    for key, value in headers:
        if key not in _GOOD_KEYS:
            if not _KEY_RE.match(key):
                raise ValueError(f"invalid AMI header name {key!r}")
            if len(_GOOD_KEYS) < 4096:
                _GOOD_KEYS.add(key)
        if type(value) is str:
            parts.append(f"{key}: {value}\r\n")  # sanitised below, if it needs it
        elif isinstance(value, str | int | float | bool):
            parts.append(f"{key}: {_clean_value(_render(value))}\r\n")
        else:
            for item in value:
                parts.append(f"{key}: {_clean_value(_render(item))}\r\n")
    parts.append("\r\n")
    text = "".join(parts)
    if text.count("\n") != len(parts) or text.count("\r") != len(parts) or "\x00" in text:
        # A value held CR, LF or NUL: render again with every value sanitised.
        text = "".join([f"{k}: {_clean_value(v)}\r\n" for k, v in _split(parts[:-1])]) + "\r\n"
    return text.encode("utf-8")


# Header names already checked against _KEY_RE (our code picks them from a small set).
_GOOD_KEYS: set[str] = set()


def _split(parts: list[str]) -> Iterator[tuple[str, str]]:
    """The (key, value) pairs back from rendered ``Key: value\\r\\n`` lines (keys hold no ':')."""
    for part in parts:
        key, _, value = part.partition(": ")
        yield key, value[:-2]


def encode_action(
    action: str,
    fields: Mapping[str, HeaderValue] | Iterable[tuple[str, HeaderValue]] = (),
    *,
    action_id: str = "",
) -> bytes:
    """Encode ``Action: <action>`` plus ``ActionID`` and ``fields``."""
    pairs: list[tuple[str, HeaderValue]] = [("Action", action)]
    if action_id:
        pairs.append(("ActionID", action_id))
    items = fields.items() if isinstance(fields, Mapping) else fields
    for key, value in items:
        if key.lower() in ("action", "actionid"):
            raise ValueError(f"{key} is set by the codec")
        pairs.append((key, value))
    return encode_message(pairs)
