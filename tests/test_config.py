"""Settings: environment over TOML file over defaults; bad values are a clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from callbridge.config import Settings


def test_defaults_use_sqlite_in_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CALLBRIDGE_CONFIG", raising=False)
    monkeypatch.setenv("CALLBRIDGE_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.effective_database_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/callbridge.db"
    assert settings.default_region == "US" and settings.port == 8000 and settings.host == "127.0.0.1"


def test_toml_file_and_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "cb.toml"
    config.write_text('default_region = "de"\nport = 9000\npublic_url = "https://hub.example"\n')
    monkeypatch.setenv("CALLBRIDGE_CONFIG", str(config))
    settings = Settings()
    assert (settings.default_region, settings.port, settings.public_url) == (
        "DE",
        9000,
        "https://hub.example",
    )
    monkeypatch.setenv("CALLBRIDGE_PORT", "9100")
    assert Settings().port == 9100


def test_unknown_region_is_refused_with_message(tmp_path: Path) -> None:
    env = {"CALLBRIDGE_DATA_DIR": str(tmp_path), "CALLBRIDGE_DEFAULT_REGION": "XX", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "callbridge", "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "unknown region 'XX'" in result.stderr
    assert "Traceback" not in result.stderr
