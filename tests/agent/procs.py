"""Real processes for agent tests: a hub (`callbridge serve`) that can be SIGKILLed and restarted
on the same port, an agent (`callbridge agent`), and a TCP proxy that can cut every connection."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Process:
    """A callbridge process with its log file: killed like a crash, or stopped politely."""

    process: subprocess.Popen[bytes] | None = None
    _log: BinaryIO | None = None

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash or the OOM killer."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self._close_log()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_log()


class HubProcess(_Process):
    def __init__(self, data_dir: Path, database_url: str, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None
        self.starts = 0
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CALLBRIDGE_DATA_DIR": str(self.data_dir),
            "CALLBRIDGE_DATABASE_URL": self.database_url,
            "CALLBRIDGE_LOGIN_DELAY_SECONDS": "0",
            "CALLBRIDGE_LOG_LEVEL": "WARNING",
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "callbridge", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def add_agent_pbx(self, name: str = "office") -> str:
        out = self.cli("pbx", "add", "asterisk", name, "--agent", "--trunk", "trunk*")
        match = re.search(r"^(cbagent_\S+)$", out, re.MULTILINE)
        assert match, out
        return match.group(1)

    def start(self) -> None:
        self._log = open(self.data_dir / "hub.log", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "callbridge", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.starts += 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("hub did not start: " + (self.data_dir / "hub.log").read_text()[-3000:])

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    def log_text(self) -> str:
        path = self.data_dir / "hub.log"
        return path.read_text(errors="replace") if path.exists() else ""


class AgentProcess(_Process):
    def __init__(self, workdir: Path, hub_url: str, token: str, ami_port: int, secret: str) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "agent.toml"
        self.config.write_text(
            f'hub = "{hub_url}"\n'
            f'token = "{token}"\n'
            f'outbox = "{workdir / "outbox.sqlite3"}"\n'
            "backoff_initial = 0.05\nbackoff_max = 0.5\nrefused_backoff = 1.0\nstatus_interval = 0.5\n"
            'guard_backend = "dry-run"\n'
            f'[ami]\nhost = "127.0.0.1"\nport = {ami_port}\nusername = "hub"\nsecret = "{secret}"\n'
        )
        self.process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    def start(self) -> None:
        self._log = open(self.workdir / "agent.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "callbridge",
                "agent",
                "--config",
                str(self.config),
                "--log-level",
                "INFO",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
        )

    def log_text(self) -> str:
        path = self.workdir / "agent.log"
        return path.read_text(errors="replace") if path.exists() else ""


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; ``cut()`` aborts every connection at once."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        tasks = [asyncio.create_task(pipe(reader, up_writer)), asyncio.create_task(pipe(up_reader, writer))]
        self._tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.difference_update(tasks)
        self._writers.difference_update((writer, up_writer))

    def cut(self) -> None:
        self.cuts += 1
        for w in list(self._writers):
            w.transport.abort()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for t in list(self._tasks):
            t.cancel()


async def call_counts(database_url: str, pbx: str = "office") -> tuple[int, int, int, int]:
    """(calls, distinct call ids, calls still open, call_ended events) of ``pbx`` in the hub's DB."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT count(*), count(DISTINCT pbx_call_id), "
                        "sum(CASE WHEN ended_at IS NULL THEN 1 ELSE 0 END) FROM calls WHERE pbx = :pbx"
                    ),
                    {"pbx": pbx},
                )
            ).one()
            ended = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM call_events e JOIN calls c ON c.id = e.call_id "
                        "WHERE c.pbx = :pbx AND e.kind = 'call_ended'"
                    ),
                    {"pbx": pbx},
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    return int(row[0]), int(row[1]), int(row[2] or 0), int(ended)
