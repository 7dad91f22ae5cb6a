"""`make demo` (callbridge demo) as a newcomer meets it on the first and on a later start."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tests.agent.procs import free_port


def _run_once(data_dir: Path) -> str:
    """Start the demo, wait until it serves, stop it; return what it printed."""
    port = free_port()
    env = {**os.environ, "CALLBRIDGE_DATA_DIR": str(data_dir), "NO_COLOR": "1", "COLUMNS": "200"}
    process = subprocess.Popen(
        [sys.executable, "-m", "callbridge", "demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        process.terminate()
        out, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return out


def test_the_demo_prints_the_admin_password_once_and_later_says_how_to_reset_it(tmp_path: Path) -> None:
    first = _run_once(tmp_path)
    assert re.search(r"admin +\(admin\) +password: \S+ +\(shown once", first), first
    assert re.search(r"alice +\(agent, extension 1001\) +password: \S+", first), first
    later = _run_once(tmp_path)
    assert "(shown once" not in later, later
    assert "`callbridge user passwd admin` prints a new one" in later, later
    assert re.search(r"alice +\(agent, extension 1001\) +password: \S+", later), later
