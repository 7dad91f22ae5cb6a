"""Codec + call tracker throughput over the real captures' byte stream.

The answered/missed/busy/bruteforce captures are replayed many times (each replay renumbers
Uniqueid/Linkedid so every call is a new call), decoded by our codec and tracked. Prints calls/s
and AMI events/s (goal >= 1,000 calls/s). panoramisk has no call tracker; its figure is its
parse-only rate from bench/ami_parse.py for scale.
Run: .venv/bin/python bench/ami_track.py [--repeat N]
"""

from __future__ import annotations

import argparse
import re
import time
from datetime import UTC, datetime
from pathlib import Path

from callbridge.domain.events import CallEnded
from callbridge.pbx.asterisk.codec import AmiDecoder, Message
from callbridge.pbx.asterisk.tracker import CallTracker, TrackerConfig

CAPTURES = Path(__file__).resolve().parents[1] / "tests" / "data" / "captures" / "asterisk"
_ID = re.compile(rb"(\d{10})\.(\d+)")


def stream(repeat: int) -> tuple[bytes, int]:
    bodies = [p.read_bytes().split(b"\r\n", 1)[1] for p in sorted(CAPTURES.glob("*.ami"))]
    calls_per_round = sum(1 for b in bodies if b"Event: Newchannel" in b)
    out = [b"Asterisk Call Manager/11.0.0\r\n"]
    for i in range(repeat):
        for body in bodies:
            out.append(
                _ID.sub(lambda m, i=i: m.group(1) + b"." + str(int(m.group(2)) + 1000 * i).encode(), body)
            )
    return b"".join(out), calls_per_round * repeat


def run(data: bytes) -> tuple[int, int, float]:
    tracker = CallTracker(TrackerConfig(pbx="bench", trunk_patterns=("trunk",)))
    decoder = AmiDecoder()
    ended = events = 0
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    for i in range(0, len(data), 65536):
        for record in decoder.feed(data[i : i + 65536]):
            if isinstance(record, Message):
                events += 1
                for event in tracker.feed(record, now):
                    if isinstance(event, CallEnded):
                        ended += 1
    return ended, events, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    data, expected = stream(args.repeat)
    runs = [run(data) for _ in range(3)]
    ended, events, seconds = min(runs, key=lambda r: r[2])
    print(f"stream: {len(data) / 1e6:.1f} MB, {events:,} AMI messages, {expected:,} calls expected")
    print(f"callbridge codec+tracker : {ended:,} calls closed in {seconds:.3f} s")
    print(f"  calls/s  : {ended / seconds:>12,.0f} (goal >= 1,000)")
    print(f"  events/s : {events / seconds:>12,.0f}")
    print("panoramisk 1.4           : no call tracker (parse-only rate: see bench/ami_parse.py)")
    print(f"ratio to goal            : {ended / seconds / 1000:.1f}x")


if __name__ == "__main__":
    main()
