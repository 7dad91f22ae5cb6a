"""The API under a fuzzer: schemathesis over the whole OpenAPI document, against a real
`callbridge serve` on loopback (SQLite, and PostgreSQL when the test run has it).

The run fails on any 5xx answer and on any answer that does not match the documented schema.
It is bounded in time (``CALLBRIDGE_FUZZ_SECONDS``, 30 s per database by default; `make fuzz`
runs longer). Each run draws a new seed, which the output prints, so a failure can be replayed
with ``--seed``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tests.agent.procs import HubProcess

ROOT = Path(__file__).resolve().parents[2]
SECONDS = int(os.environ.get("CALLBRIDGE_FUZZ_SECONDS", "30"))
CHECKS = "not_a_server_error,response_schema_conformance,content_type_conformance"


def _token_id(hub: HubProcess, secret: str) -> str:
    answer = httpx.get(hub.url + "/api/v1/tokens", headers={"authorization": f"Bearer {secret}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert len(items) == 1, items
    return str(items[0]["id"])


def _seed(hub: HubProcess, tmp_path: Path) -> dict[str, str]:
    """Users, tokens, a PBX and a few contacts, so the fuzzer reaches code past the 404s."""
    hub.cli("user", "add", "fuzzer", "--role", "admin")
    hub.cli("user", "add", "decoy", "--role", "agent")
    hub.cli("user", "add", "alice", "--role", "agent")
    secret = hub.cli("token", "create", "fuzzer").strip().splitlines()[-1]
    decoy_secret = hub.cli("token", "create", "decoy").strip().splitlines()[-1]
    hub.cli(
        "pbx", "add", "asterisk", "office", "--host", "127.0.0.1", "--username", "hub", "--secret", "s3cret"
    )
    hub.cli("extension", "map", "office", "1001", "alice")
    dialplan = hub.cli("pbx", "token", "office").strip().splitlines()[-1]
    csv = tmp_path / "contacts.csv"
    csv.write_text(
        "name,company,phone,tags,owner\n"
        "Ada Lovelace,Acme Ltd,+14155550100,VIP,alice\n"
        "Grace Hopper,Navy,+14155550101,,\n"
        "Acme Ltd,,+14155550000,partner,\n"
    )
    hub.cli("contacts", "import", str(csv))
    return {
        "secret": secret,
        "token_id": _token_id(hub, secret),
        "decoy_token_id": _token_id(hub, decoy_secret),
        "dialplan": dialplan,
    }


def test_the_api_answers_every_fuzzed_request_without_5xx_and_as_documented(
    tmp_path: Path, database_url: str
) -> None:
    hub = HubProcess(tmp_path / "data", database_url)
    hub.start()
    try:
        seed = _seed(hub, tmp_path)
        env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks",
            "PYTHONPATH": str(ROOT),
            "CALLBRIDGE_FUZZ_USER": "fuzzer",
            "CALLBRIDGE_FUZZ_TOKEN_ID": seed["token_id"],
            "CALLBRIDGE_FUZZ_DECOY_USER": "decoy",
            "CALLBRIDGE_FUZZ_DECOY_TOKEN_ID": seed["decoy_token_id"],
            "NO_COLOR": "1",
        }
        command = [
            str(Path(sys.executable).parent / "st"),
            "run",
            hub.url + "/api/v1/openapi.json",
            "--header",
            f"Authorization: Bearer {seed['secret']}",
            "--header",
            f"X-Callbridge-Token: {seed['dialplan']}",
            "--checks",
            CHECKS,
            "--max-time",
            str(SECONDS),
            "--workers",
            "1",
            "--request-timeout",
            "15",
            "--generation-database",
            "none",
            "--no-color",
        ]
        done = subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=SECONDS + 240, check=False
        )
        output = done.stdout + done.stderr
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        (ROOT / "test-artifacts" / f"fuzz-{Path(database_url).name[:20]}.txt").write_text(output)
        assert done.returncode == 0, output[-6000:]
        assert "Test cases:" in output, output[-3000:]
        # The fuzzer stayed an admin with a working token to the end (the hooks' decoy did its job).
        me = httpx.get(
            hub.url + "/api/v1/me", headers={"authorization": f"Bearer {seed['secret']}"}, timeout=10
        )
        assert me.status_code == 200 and me.json()["role"] == "admin", me.text
        assert "Traceback" not in hub.log_text(), hub.log_text()[-6000:]
    finally:
        hub.stop()


@pytest.fixture(autouse=True)
def _no_hypothesis_dir_in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
