"""AMI parsing throughput: callbridge's codec vs panoramisk 1.4's parser on the same bytes.

Both parse the real Asterisk 22 captures (tests/data/captures/asterisk/*.ami) replayed many times,
fed in 64 KiB reads as a socket would deliver them. Prints msgs/s for both and the ratio.
Run: .venv/bin/python bench/ami_parse.py [--repeat N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from panoramisk.ami_protocol import AMIProtocol

from callbridge.pbx.asterisk.codec import AmiDecoder, Message

CAPTURES = Path(__file__).resolve().parents[1] / "tests" / "data" / "captures" / "asterisk"
READ = 65536


def stream(repeat: int) -> bytes:
    banner = b"Asterisk Call Manager/11.0.0\r\n"
    bodies = []
    for path in sorted(CAPTURES.glob("*.ami")):
        data = path.read_bytes()
        bodies.append(data.split(b"\r\n", 1)[1])  # one banner for the whole stream
    return banner + b"".join(bodies) * repeat


def chunks(data: bytes) -> list[bytes]:
    return [data[i : i + READ] for i in range(0, len(data), READ)]


def ours(pieces: list[bytes]) -> int:
    """Framing + event name of every message (headers are split lazily, on first use)."""
    decoder = AmiDecoder()
    count = 0
    for piece in pieces:
        for record in decoder.feed(piece):
            if isinstance(record, Message) and (record.name or record.get("Response")):
                count += 1
    return count


def ours_full(pieces: list[bytes]) -> int:
    """Every header of every message materialized, as panoramisk does."""
    decoder = AmiDecoder()
    count = 0
    for piece in pieces:
        for record in decoder.feed(piece):
            if isinstance(record, Message) and record.as_dict():
                count += 1
    return count


class _CountingProtocol(AMIProtocol):  # type: ignore[misc]
    """panoramisk's protocol, counting every parsed message (responses included)."""

    parsed = 0

    def handle_message(self, message: object) -> None:
        self.parsed += 1
        super().handle_message(message)


class _Factory:
    """The bits of panoramisk's Manager that AMIProtocol.data_received touches."""

    save_stream = None
    forgetable_actions = ()
    awaiting_actions: tuple[object, ...] = ()

    def __init__(self) -> None:
        self.count = 0

    def dispatch(self, message: object) -> None:
        self.count += 1


def panoramisk(pieces: list[bytes]) -> int:
    proto = _CountingProtocol()
    proto.connection_made(transport=None)
    proto.factory = _Factory()
    proto.encoding = "utf-8"
    for piece in pieces:
        proto.data_received(piece)
    return proto.parsed


def best(fn, pieces: list[bytes], rounds: int) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    times = []
    count = 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        count = fn(pieces)
        times.append(time.perf_counter() - t0)
    return count, min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    data = stream(args.repeat)
    pieces = chunks(data)
    n_ours, t_ours = best(ours, pieces, args.rounds)
    n_full, t_full = best(ours_full, pieces, args.rounds)
    n_pano, t_pano = best(panoramisk, pieces, args.rounds)
    mb = len(data) / 1e6
    pano = n_pano / t_pano
    print(f"stream: {mb:.1f} MB, real captures x{args.repeat}, {len(pieces)} reads of {READ} bytes")
    print(f"ours, framing+name   : {n_ours:>8,} msgs in {t_ours:.3f} s = {n_ours / t_ours:>10,.0f} msgs/s")
    print(f"ours, all headers    : {n_full:>8,} msgs in {t_full:.3f} s = {n_full / t_full:>10,.0f} msgs/s")
    print(f"panoramisk 1.4       : {n_pano:>8,} msgs in {t_pano:.3f} s = {pano:>10,.0f} msgs/s (all headers)")
    print(f"ratio, framing+name  : {(n_ours / t_ours) / pano:.2f}x (goal >= 3x)")
    print(f"ratio, all headers   : {(n_full / t_full) / pano:.2f}x (goal >= 3x)")
    if not n_ours == n_full == n_pano:
        print(f"note: message counts differ ({n_ours} / {n_full} vs {n_pano})")


if __name__ == "__main__":
    main()
