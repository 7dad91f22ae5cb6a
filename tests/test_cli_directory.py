"""`callbridge contacts …`, `extension …` and `pbx token`, run for real against a fresh data dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "callbridge"]


def run(data_dir: Path, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "CALLBRIDGE_DATA_DIR": str(data_dir), "COLUMNS": "200", "NO_COLOR": "1", **env}
    result = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=full_env, timeout=60, check=False
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_contacts_import_twice_and_normalize(tmp_path: Path) -> None:
    data = tmp_path / "data"
    csv_file = tmp_path / "people.csv"
    csv_file.write_text(
        "Full Name;Firma;Telefon;Mobile\n"
        "Ada;Acme;030 1234567;\n"
        "Bob;Acme;kaputt;\n"
        "Carl;;+1 415 555 0100;0171 2345678\n",
        encoding="utf-8",
    )
    run(data, "migrate")
    first = run(
        data,
        "contacts",
        "import",
        str(csv_file),
        "--map",
        "company=Firma",
        "--map",
        "phone=Telefon",
        "--region",
        "DE",
    )
    assert "2 created, 0 updated, 1 company created, 1 row not imported (read as UTF-8)" in first.stdout
    assert "line 3: phone 'kaputt': not a phone number" in first.stdout
    assert "Importing" in first.stdout  # the progress bar
    again = run(
        data,
        "contacts",
        "import",
        str(csv_file),
        "--map",
        "company=Firma",
        "--map",
        "phone=Telefon",
        "--region",
        "DE",
    )
    assert "0 created, 2 updated" in again.stdout
    # Numbers were read as German; re-reading them as US changes the national ones.
    normalized = run(data, "contacts", "normalize", "--region", "US")
    assert "3 numbers checked" in normalized.stdout
    assert "unreadable" in normalized.stdout
    bad = run(data, "contacts", "import", str(csv_file), "--map", "nonsense", check=False)
    assert bad.returncode == 1 and "FIELD=Header" in bad.stderr
    missing = run(data, "contacts", "import", str(tmp_path / "nope.csv"), check=False)
    assert missing.returncode == 2


def test_contacts_import_finds_encodings_and_reruns_rows_without_numbers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run(data, "migrate")
    sjis = tmp_path / "japan.csv"
    sjis.write_bytes(
        "Name,Company,Email\n山田太郎,株式会社テスト,yamada@example.jp\n鈴木花子,,\n".encode("shift_jis")
    )
    first = run(data, "contacts", "import", str(sjis))
    assert "2 created, 0 updated, 1 company created (read as Shift_JIS)" in first.stdout
    assert "warning: the file is not UTF-8; it was read as Shift_JIS, a guess" in first.stderr
    again = run(data, "contacts", "import", str(sjis), "--encoding", "shift_jis")
    assert "0 created, 2 updated (read as Shift_JIS)" in again.stdout
    assert "warning" not in again.stderr
    excel = tmp_path / "unicode.txt"
    excel.write_bytes("Name\tPhone\r\nZoë\t+1 415 555 0100\r\n".encode("utf-16"))
    unicode_text = run(data, "contacts", "import", str(excel))
    assert "1 created, 0 updated (read as UTF-16)" in unicode_text.stdout
    wrong = run(data, "contacts", "import", str(sjis), "--encoding", "utf-8", check=False)
    assert wrong.returncode == 1 and "not valid UTF-8" in wrong.stderr


def test_extension_map_and_pbx_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run(data, "migrate")
    run(data, "user", "add", "alice", "--role", "agent", "--password", "alice-password-1")
    run(
        data,
        "pbx",
        "add",
        "asterisk",
        "office",
        "--host",
        "127.0.0.1",
        "--username",
        "cb",
        "--secret",
        "s3cret",
    )
    mapped = run(data, "extension", "map", "office", "1001", "alice")
    assert "1001 on office now belongs to alice" in mapped.stdout
    listing = run(data, "extension", "list").stdout
    assert "office" in listing and "1001" in listing and "alice" in listing
    assert run(data, "extension", "map", "nope", "1001", "alice", check=False).returncode == 1
    assert run(data, "extension", "map", "office", "1001", "ghost", check=False).returncode == 1
    token = run(data, "pbx", "token", "office").stdout.strip()
    assert len(token) >= 24 and "\n" not in token
    assert run(data, "pbx", "token", "office").stdout.strip() == token
    rotated = run(data, "pbx", "token", "office", "--rotate").stdout.strip()
    assert rotated != token
    assert run(data, "pbx", "token", "nope", check=False).returncode == 1
    run(data, "extension", "unmap", "office", "1001")
    assert run(data, "extension", "unmap", "office", "1001", check=False).returncode == 1
