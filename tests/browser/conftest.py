"""A real hub process and a real Chromium (Debian's, driven by Playwright; nothing downloaded)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

CHROMIUM = os.environ.get("CALLBRIDGE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveHub:
    url: str
    data_dir: Path
    admin_password: str
    process: subprocess.Popen[bytes]
    log: BinaryIO

    def cli(self, *args: str) -> str:
        env = {**os.environ, "CALLBRIDGE_DATA_DIR": str(self.data_dir), "NO_COLOR": "1"}
        done = subprocess.run(
            [sys.executable, "-m", "callbridge", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout


def start_hub(data_dir: Path, extra_env: dict[str, str] | None = None, port: int | None = None) -> LiveHub:
    port = port or free_port()
    env = {
        **os.environ,
        "CALLBRIDGE_DATA_DIR": str(data_dir),
        "CALLBRIDGE_LOGIN_DELAY_SECONDS": "0",
        **(extra_env or {}),
    }
    subprocess.run(
        [sys.executable, "-m", "callbridge", "migrate"], env=env, capture_output=True, check=True, timeout=60
    )
    password = "admin-password-1"
    subprocess.run(
        [sys.executable, "-m", "callbridge", "user", "passwd", "admin", "--password", password],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    log = open(data_dir / "hub.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [sys.executable, "-m", "callbridge", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return LiveHub(url, data_dir, password, process, log)
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    process.wait()
    log.close()
    raise RuntimeError("hub did not start: " + (data_dir / "hub.log").read_text())


def stop_hub(hub: LiveHub) -> None:
    hub.process.terminate()
    try:
        hub.process.wait(10)
    except subprocess.TimeoutExpired:
        hub.process.kill()
        hub.process.wait()
    hub.log.close()


@pytest.fixture(scope="module")
def live_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    hub = start_hub(tmp_path_factory.mktemp("hub"))
    yield hub
    stop_hub(hub)


# Module scope, not session: sync Playwright keeps an event loop running in the main thread while
# it is open, and asyncio tests of later modules must not find one.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}; make test installs Debian's chromium package")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield b
    b.close()
