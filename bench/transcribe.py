"""Transcription on the hub: the real-time factor of the packaged Whisper tiny.en on this machine,
against the same audio through plain faster-whisper as the floor.

1. a WAV of about a minute of speech, spoken by espeak-ng (Debian package) at 150 words a minute;
2. **ours**: a hub (fresh SQLite data dir, ``CALLBRIDGE_TRANSCRIBE=true``), one call whose
   recording is that WAV, stored; ``Hub.transcribe_call`` (what ``callbridge recordings
   transcribe`` and the worker run: the stored audio copied to a local file, faster-whisper
   through :class:`WhisperTranscriber`, the transcript written to the database);
3. **the floor**: ``faster_whisper.WhisperModel`` on the same model directory, the same threads
   (``CALLBRIDGE_TRANSCRIBE_THREADS``, 2) and the same decoding (int8, greedy), segments read
   to the end — nothing else.
Each model is loaded and warmed once (not timed); then ``--runs`` runs of each, alternating, so
that the other engineers' load on the machine hits both alike. CPU time is the process's (all
threads); the figure per side is its median run.

Goal (issue #14): ours ≤ 1.2× the floor's time. The real-time factor is audio seconds per CPU
second (higher is faster).
Run: .venv/bin/python bench/transcribe.py [--runs 5] [--repeat 6]
A benchmark, not a test: it prints figures, it never fails on them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import wave
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from callbridge.config import Settings
from callbridge.hub import Hub
from callbridge.services.transcription import packaged_model_dir
from callbridge.store.calls import calls
from callbridge.store.recordings import recordings

GOAL_RATIO = 1.2
SPEECH = (
    "Hello, this is a test call from the accounts team. We are calling about the payment that "
    "was due last Friday. Could you please call us back before the end of the week, so that we "
    "can settle the invoice and send you the receipt. "
)


def _speech(path: Path, repeat: int) -> float:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SystemExit("needs espeak-ng (Debian package; scripts/test.sh installs it)")
    subprocess.run([espeak, "-s", "150", "-w", str(path), SPEECH * repeat], check=True, capture_output=True)
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def _timed(run: Callable[[], object]) -> tuple[float, float, object]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = run()
    return time.process_time() - cpu, time.perf_counter() - wall, out


async def _hub_with_call(data: Path, wav: Path, seconds: float) -> tuple[Hub, int]:
    settings = Settings(data_dir=data, transcribe=True, log_level="WARNING")  # type: ignore[call-arg]
    hub = Hub.build(settings)
    await hub.prepare()
    now = datetime.now(UTC)
    key = f"office/{now:%Y/%m}/1.wav"
    target = data / "recordings" / key
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(wav, target)
    async with hub.db.unit() as repos:
        call_id = (
            await repos.session.execute(
                insert(calls)
                .values(
                    pbx="office",
                    pbx_call_id="bench-1",
                    direction="inbound",
                    from_number="+14155550100",
                    to_number="100",
                    started_at=now - timedelta(minutes=5),
                    ended_at=now,
                    match="none",
                    updated_at=now,
                )
                .returning(calls.c.id)
            )
        ).scalar_one()
        await repos.session.execute(
            insert(recordings).values(
                call_id=call_id,
                pbx="office",
                reference="bench-1.wav",
                status="ready",
                storage_key=key,
                size_bytes=target.stat().st_size,
                duration_seconds=seconds,
                content_type="audio/wav",
                sha256=hashlib.sha256(target.read_bytes()).hexdigest(),
                created_at=now,
                updated_at=now,
            )
        )
    return hub, int(call_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=6, help="times the text is spoken (~10 s each)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cb-stt-"))
    wav = work / "speech.wav"
    seconds = _speech(wav, args.repeat)
    threads = Settings().transcribe_threads
    model_dir = packaged_model_dir()
    os.environ["HF_HUB_OFFLINE"] = "1"
    from faster_whisper import WhisperModel

    floor_model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)

    def floor() -> str:
        parts, _ = floor_model.transcribe(str(wav), beam_size=1, vad_filter=False)
        return " ".join(p.text.strip() for p in parts)

    loop = asyncio.new_event_loop()
    hub, call_id = loop.run_until_complete(_hub_with_call(work / "hub", wav, seconds))

    def ours() -> str:
        status, reason, heard = loop.run_until_complete(hub.transcribe_call(call_id))
        assert status == "ready" and heard is not None, reason
        return " ".join(s.text for s in heard.segments)

    try:
        said_floor, said_ours = floor(), ours()  # load and warm both
        same = said_floor == said_ours
        times: dict[str, list[tuple[float, float]]] = {"ours": [], "floor": []}
        for _ in range(args.runs):
            for name, run in (("ours", ours), ("floor", floor)):
                cpu, wall, _ = _timed(run)
                times[name].append((cpu, wall))
    finally:
        loop.run_until_complete(hub.close())
        loop.close()
    print(
        f"espeak-ng speech, {seconds:.1f} s of audio; Whisper tiny.en (packaged), int8, {threads} threads, "
        f"greedy; {args.runs} runs each (median)"
    )
    med: dict[str, tuple[float, float]] = {}
    for name in ("floor", "ours"):
        cpu = statistics.median(c for c, _ in times[name])
        wall = statistics.median(w for _, w in times[name])
        med[name] = (cpu, wall)
        label = "plain faster-whisper (floor)" if name == "floor" else "callbridge (Hub.transcribe_call)"
        print(
            f"  {label:32s} CPU {cpu:6.2f} s   wall {wall:6.2f} s   "
            f"real-time factor {seconds / cpu:5.1f} audio s per CPU s ({seconds / wall:5.1f} per wall s)"
        )
    ratio_cpu = med["ours"][0] / med["floor"][0]
    ratio_wall = med["ours"][1] / med["floor"][1]
    print(
        f"  ours / floor: CPU {ratio_cpu:.2f}x, wall {ratio_wall:.2f}x   goal ≤ {GOAL_RATIO:.1f}x   "
        f"ratio {ratio_cpu / GOAL_RATIO:.2f}x of goal (CPU)"
    )
    words_floor, words_ours = said_floor.lower().split(), said_ours.lower().split()
    common = len(set(words_floor) & set(words_ours)) / max(1, len(set(words_floor)))
    print(
        f"  the same text from both: {same} ({common:.0%} of the floor's words); ours heard: "
        f"{said_ours[:80]!r}…"
    )


if __name__ == "__main__":
    main()
