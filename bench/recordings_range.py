"""Playing a long recording: the first audio byte of a 60-minute recording, and a seek to its
end, over real HTTP from a running hub — ``GET /api/v1/recordings/{id}/audio`` with ``Range``.

1. a fresh data dir (SQLite), ``callbridge migrate``, an API token for admin, one call with a
   stored (ready) recording: a 60-minute 8 kHz 16-bit mono WAV (57.6 MB) made here, under
   ``<data dir>/recordings`` as the fetch worker would have put it;
2. ``callbridge serve`` (uvicorn, one worker) in a subprocess;
3. ``--requests`` times each, on one kept-alive connection (as a browser's player):
   * **first byte**: ``Range: bytes=0-`` (what a browser's ``<audio>`` asks first): time from
     sending the request to the first byte of the body;
   * **seek to the end**: ``Range: bytes=<size - 64 KiB>-`` (a player jumping to the last
     seconds): time until the whole answer is in.
   Each answer is checked (206, ``Content-Range``, the bytes match the file).

Goal (issue #14): first byte p99 ≤ 50 ms; seek to the end ≤ 50 ms (p99 here).
Run: .venv/bin/python bench/recordings_range.py [--requests 300] [--minutes 60]
A benchmark, not a test: it prints figures, it never fails on them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import create_engine, insert

from callbridge.store.calls import calls
from callbridge.store.recordings import recordings

GOAL_FIRST_BYTE_MS = 50.0
GOAL_SEEK_MS = 50.0
TAIL = 64 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _wav(path: Path, minutes: float) -> None:
    """A PCM WAV of ``minutes`` (8 kHz, 16 bit, mono): a slowly varying pattern, written in blocks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(16000 * 10))  # 10 s
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        for _ in range(int(minutes * 6)):
            w.writeframes(block)


def _seed(data: Path, minutes: float) -> tuple[int, Path]:
    """One call with a ready recording; returns (recording id, its file)."""
    now = datetime.now(UTC)
    started = now - timedelta(hours=2)
    key = f"office/{now:%Y/%m}/1.wav"
    file = data / "recordings" / key
    _wav(file, minutes)
    sha = hashlib.sha256()
    with file.open("rb") as handle:
        while block := handle.read(1 << 20):
            sha.update(block)
    engine = create_engine(f"sqlite:///{data / 'callbridge.db'}")
    with engine.begin() as conn:
        call_id = conn.execute(
            insert(calls)
            .values(
                pbx="office",
                pbx_call_id="bench-1",
                direction="inbound",
                from_number="+14155550100",
                to_number="100",
                from_name="Bench",
                external_number="+14155550100",
                disposition="answered",
                answered_by_extension="100",
                started_at=started,
                answered_at=started,
                ended_at=started + timedelta(minutes=minutes),
                ring_seconds=0,
                talk_seconds=int(minutes * 60),
                match="none",
                updated_at=now,
                recording="/var/spool/asterisk/monitor/bench-1.wav",
            )
            .returning(calls.c.id)
        ).scalar_one()
        recording_id = conn.execute(
            insert(recordings)
            .values(
                call_id=call_id,
                pbx="office",
                reference="/var/spool/asterisk/monitor/bench-1.wav",
                status="ready",
                storage_key=key,
                size_bytes=file.stat().st_size,
                duration_seconds=minutes * 60,
                content_type="audio/wav",
                sha256=sha.hexdigest(),
                created_at=now,
                updated_at=now,
            )
            .returning(recordings.c.id)
        ).scalar_one()
    engine.dispose()
    return int(recording_id), file


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far; NaN where /proc is not."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(url: str, token: str, recording_id: int, file: Path, requests: int, pid: int) -> None:
    size = file.stat().st_size
    with file.open("rb") as handle:
        head = handle.read(TAIL)
        handle.seek(size - TAIL)
        tail = handle.read()
    path = f"/api/v1/recordings/{recording_id}/audio"
    firsts: list[float] = []
    seeks: list[float] = []
    cpu = 0.0
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=30) as client:
        for i in range(requests + 5):
            if i == 5:
                cpu = _cpu_seconds(pid)  # the first 5 warm the connection and the hub's caches
            started = time.perf_counter()
            with client.stream("GET", path, headers={"range": "bytes=0-"}) as answer:
                first = next(answer.iter_raw(TAIL))
                took = (time.perf_counter() - started) * 1000
                assert answer.status_code == 206, answer.status_code
                assert answer.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
                assert head.startswith(first)
                # A player reads on as it plays; here the rest is not wanted: drop the connection
                # (as a browser does when it seeks elsewhere) by closing the stream.
            if i >= 5:
                firsts.append(took)
            started = time.perf_counter()
            answer = client.get(path, headers={"range": f"bytes={size - TAIL}-"})
            took = (time.perf_counter() - started) * 1000
            assert answer.status_code == 206 and answer.content == tail
            if i >= 5:
                seeks.append(took)
    cpu = _cpu_seconds(pid) - cpu
    print(f"60-minute recording ({size / 1e6:.1f} MB WAV), {requests} requests each, over HTTP on loopback")
    for label, values, goal in (
        ("first audio byte (Range: bytes=0-)", firsts, GOAL_FIRST_BYTE_MS),
        (f"seek to the end (last {TAIL // 1024} KiB)", seeks, GOAL_SEEK_MS),
    ):
        p99 = _pct(values, 0.99)
        print(
            f"  {label:38s} p50 {statistics.median(values):6.1f} ms   p99 {p99:6.1f} ms   "
            f"max {max(values):6.1f} ms   goal p99 {goal:.0f} ms   ratio {p99 / goal:.2f}x of goal"
        )
    load = os.getloadavg()[0]
    print(
        f"  the hub's CPU: {cpu * 1000 / (2 * requests):.2f} ms per request; load average {load:.1f}"
        f" on {os.cpu_count()} CPUs while it ran (other work on the machine shows up in the p99)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--minutes", type=float, default=60.0)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="cb-range-"))
    env = {**os.environ, "CALLBRIDGE_DATA_DIR": str(data), "CALLBRIDGE_LOG_LEVEL": "WARNING"}
    cli = [sys.executable, "-m", "callbridge"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
    token = subprocess.run(
        [*cli, "token", "create", "admin"], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    recording_id, file = _seed(data, args.minutes)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [*cli, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        _measure(url, token, recording_id, file, args.requests, server.pid)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
