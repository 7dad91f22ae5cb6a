"""`callbridge connector …` run for real in a subprocess, against the Frappe simulator."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.crm.test_erpnext import seed

from callbridge.crm.frappe_simulator import FrappeSimulator

CLI = [sys.executable, "-m", "callbridge"]


async def cli(data_dir: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "CALLBRIDGE_DATA_DIR": str(data_dir), "COLUMNS": "250", "NO_COLOR": "1"}
    env.pop("CALLBRIDGE_DATABASE_URL", None)
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, errs = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), errs.decode()


async def test_add_test_sync_list(tmp_path: Path, frappe: FrappeSimulator, backend: str) -> None:
    if backend != "sqlite":
        return  # the command's own database: SQLite in the data dir
    seed(frappe)
    code, out, errs = await cli(
        tmp_path,
        "connector",
        "add",
        "erpnext",
        "erp",
        "--url",
        frappe.base_url,
        "--api-key",
        "key1",
        "--api-secret",
        "wrong-secret",
    )
    assert code == 0, errs
    assert "stored encrypted" in out
    stored = read_db(tmp_path)
    assert b"erpnext" in stored and b"wrong-secret" not in stored
    code, out, _ = await cli(tmp_path, "connector", "test", "erp")
    assert code == 1 and "FAILED sign in" in out and "refused the credentials (HTTP 401)" in out

    code, out, errs = await cli(
        tmp_path,
        "connector",
        "add",
        "erpnext",
        "erp",
        "--url",
        frappe.base_url,
        "--api-key",
        "key1",
        "--api-secret",
        "secret1",
    )
    assert code == 1 and "already exists" in errs
    await cli(tmp_path, "connector", "remove", "erp")
    code, _, errs = await cli(
        tmp_path,
        "connector",
        "add",
        "erpnext",
        "erp",
        "--url",
        frappe.base_url,
        "--api-key",
        "key1",
        "--api-secret",
        "secret1",
    )
    assert code == 0, errs
    code, out, _ = await cli(tmp_path, "connector", "test", "erp")
    assert code == 0 and "ok read Call Log" in out
    code, out, errs = await cli(tmp_path, "connector", "sync", "erp")
    assert code == 0, errs
    assert "full sync: 3 records read, 3 created" in out
    code, out, _ = await cli(tmp_path, "connector", "list")
    row = next(line for line in out.splitlines() if " erp " in line)
    cells = [c.strip() for c in row.strip("│┃ ").split("│")]
    assert cells[:4] == ["erp", "erpnext", frappe.base_url, "ok"] and cells[5:8] == ["3", "0", "0"]

    code, _, errs = await cli(
        tmp_path,
        "connector",
        "add",
        "odoo",
        "o",
        "--url",
        "ftp://x",
        "--database",
        "d",
        "--username",
        "u",
        "--api-key",
        "k",
    )
    assert code == 1 and "must be an http:// or https:// address" in errs
    code, _, errs = await cli(
        tmp_path,
        "connector",
        "add",
        "odoo",
        "o",
        "--url",
        "http://x",
        "--database",
        "",
        "--username",
        "u",
        "--api-key",
        "k",
    )
    assert code == 2 and "database name" in errs


def read_db(data_dir: Path) -> bytes:
    """The database file and its write-ahead log, as stored on disk."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("callbridge.db*")))
