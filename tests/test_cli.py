"""The callbridge command, run for real in a subprocess against a fresh data dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import callbridge

CLI = [sys.executable, "-m", "callbridge"]


def run(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CALLBRIDGE_DATA_DIR": str(data_dir), "COLUMNS": "200", "NO_COLOR": "1"}
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=60, check=False)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_version(tmp_path: Path) -> None:
    assert run(tmp_path, "--version").stdout.strip() == f"callbridge {callbridge.__version__}"


def test_user_lifecycle_and_token(tmp_path: Path) -> None:
    first = run(tmp_path, "migrate")
    assert "name admin, password" in first.stdout  # the first admin is shown once
    assert "name admin, password" not in run(tmp_path, "migrate").stdout
    added = run(tmp_path, "user", "add", "alice", "--role", "manager")
    assert "Password (shown once):" in added.stdout
    run(tmp_path, "user", "add", "bob", "--role", "agent", "--password", "bob-password-1")
    listing = run(tmp_path, "user", "list").stdout
    assert "alice" in listing and "manager" in listing and "bob" in listing
    token = run(tmp_path, "token", "create", "bob").stdout.strip()
    assert token.startswith("cb_") and len(token) > 30
    run(tmp_path, "user", "disable", "bob")
    assert "disabled" in run(tmp_path, "user", "list").stdout
    changed = run(tmp_path, "user", "passwd", "alice")
    assert "New password (shown once):" in changed.stdout


def test_user_role_and_last_admin(tmp_path: Path) -> None:
    run(tmp_path, "migrate")
    refused = run(tmp_path, "user", "role", "admin", "agent", check=False)
    assert refused.returncode == 1 and "last active admin" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert run(tmp_path, "user", "disable", "admin", check=False).returncode == 1
    run(tmp_path, "user", "add", "bob", "--role", "agent", "--password", "bob-password-1")
    assert "now has role admin" in run(tmp_path, "user", "role", "bob", "admin").stdout
    assert "now has role agent" in run(tmp_path, "user", "role", "admin", "agent").stdout
    listing = run(tmp_path, "user", "list").stdout.splitlines()
    cells = {
        r[0]: r[1]
        for r in ([c.strip() for c in line.strip("│┃ ").split("│")] for line in listing)
        if len(r) > 1
    }
    assert cells["admin"] == "agent" and cells["bob"] == "admin"
    # Recovery: with bob the only admin, bob cannot be demoted, but admin can be made admin again.
    assert run(tmp_path, "user", "role", "bob", "manager", check=False).returncode == 1
    run(tmp_path, "user", "role", "admin", "admin")
    assert "unknown role" in run(tmp_path, "user", "role", "bob", "boss", check=False).stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("user", "add", "carol", "--role", "boss"), "unknown role"),
        (("user", "passwd", "nobody"), "no user named"),
        (("user", "add", "x", "--password", "short"), "at least 10"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = run(tmp_path, *args, check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_duplicate_user_is_refused(tmp_path: Path) -> None:
    run(tmp_path, "user", "add", "dora")
    result = run(tmp_path, "user", "add", "dora", check=False)
    assert result.returncode == 1 and "already exists" in result.stderr


def test_every_command_has_help(tmp_path: Path) -> None:
    for args in (
        ("--help",),
        ("serve", "--help"),
        ("user", "--help"),
        ("user", "add", "--help"),
        ("token", "--help"),
    ):
        out = run(tmp_path, *args).stdout
        assert "Usage" in out


def test_teams_for_callbacks(tmp_path: Path) -> None:
    run(tmp_path, "migrate")
    for name in ("ann", "bob"):
        run(tmp_path, "user", "add", name, "--password", "user-password-1")
    assert "2 members" in run(tmp_path, "team", "add", "support", "--member", "ann", "--member", "bob").stdout
    assert "ann, bob" in run(tmp_path, "team", "list").stdout
    run(tmp_path, "team", "members", "support", "--member", "bob")
    listing = run(tmp_path, "team", "list").stdout
    assert "support" in listing and "bob" in listing and "ann" not in listing
    refused = run(tmp_path, "team", "add", "x", "--member", "ghost", check=False)
    assert refused.returncode == 1 and "no active user named 'ghost'" in refused.stderr
    run(tmp_path, "team", "remove", "support")
    assert "support" not in run(tmp_path, "team", "list").stdout


def _pbx_config(data_dir: Path, name: str) -> dict[str, object]:
    import json
    import sqlite3

    with sqlite3.connect(data_dir / "callbridge.db") as db:
        (config,) = db.execute("SELECT config FROM pbxes WHERE name = ?", (name,)).fetchone()
    return dict(json.loads(config))


def test_yeastar_queue_numbers_from_the_command_line(tmp_path: Path) -> None:
    run(tmp_path, "migrate")
    base = ["pbx", "add", "yeastar", "cloud", "--base-url", "https://pbx.example.com"]
    base += ["--client-id", "cid", "--client-secret", "cs", "--webhook-secret", "ws"]
    bad = run(tmp_path, *base, "--queue", "64x=sales", check=False)
    assert bad.returncode == 1 and "queue number '64x' is not valid" in bad.stderr
    assert "Traceback" not in bad.stderr
    run(tmp_path, *base, "--queue", "6400=sales", "--queue", "6401", "--timezone", "Europe/Berlin")
    config = _pbx_config(tmp_path, "cloud")
    assert config["queues"] == {"6400": "sales", "6401": "6401"} and config["timezone"] == "Europe/Berlin"
    run(tmp_path, "pbx", "edit", "cloud", "--queue", "6402=support")
    config = _pbx_config(tmp_path, "cloud")
    assert config["queues"] == {"6402": "support"} and config["timezone"] == "Europe/Berlin"
    run(tmp_path, "pbx", "edit", "cloud", "--no-queues")
    assert _pbx_config(tmp_path, "cloud")["queues"] == {}
