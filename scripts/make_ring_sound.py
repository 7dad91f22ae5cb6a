"""Writes the live desk's ring sound, src/callbridge/web/static/ring.wav (vendored, no download):
two short bursts of the North American ring tone (440 Hz + 480 Hz), 8 kHz, 8-bit mono, faded
in and out so it does not click. Run it again only to change the sound."""

from __future__ import annotations

import math
import wave
from pathlib import Path

RATE = 8000
OUT = Path(__file__).resolve().parent.parent / "src" / "callbridge" / "web" / "static" / "ring.wav"


def burst(seconds: float) -> list[float]:
    n = int(RATE * seconds)
    fade = int(RATE * 0.02)
    out = []
    for i in range(n):
        t = i / RATE
        level = min(1.0, i / fade, (n - i) / fade)
        out.append(level * 0.5 * (math.sin(2 * math.pi * 440 * t) + math.sin(2 * math.pi * 480 * t)) / 2)
    return out


def main() -> None:
    samples = [*burst(0.4), *([0.0] * int(RATE * 0.2)), *burst(0.4)]
    with wave.open(str(OUT), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(RATE)
        w.writeframes(bytes(max(0, min(255, round(128 + 127 * s))) for s in samples))
    print(f"{OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
