"""The Salt formula (salt/callbridge-agent) applied for real with `salt-call --local`, against a
throwaway root: every path of the formula, the pillar and Salt's own dirs under a temp dir, and a
real hub (`callbridge serve`) to enroll against.

Salt comes from PyPI, pinned, in a venv of its own cached between runs
(``scripts/salt-venv.sh``: ~/.cache/callbridge-salt-venv/<version>). The first run builds it
(about 3 minutes: timelib compiles); later runs reuse it. ``CALLBRIDGE_SALT_TESTS=0`` skips
these tests. This machine has no running systemd, so the ``service`` module is a stand-in
(tests/data/salt/_modules/fakesystemd.py) that records start/enable/restart: Salt's own would
answer "OFFLINE mode, nothing to do" here. ``test=True`` is checked too.
"""

from __future__ import annotations

import getpass
import grp
import hashlib
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.agent.procs import HubProcess

import callbridge

pytestmark = pytest.mark.salt

SALT_VERSION = "3008.3"
ROOT = Path(__file__).resolve().parents[2]
FAKE_MODULES = ROOT / "tests" / "data" / "salt" / "_modules"
SERVICE = "callbridge-agent"


@pytest.fixture(scope="module")
def salt_call() -> Path:
    if os.environ.get("CALLBRIDGE_SALT_TESTS") == "0":
        pytest.skip("CALLBRIDGE_SALT_TESTS=0")
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "salt-venv.sh")],
        capture_output=True,
        text=True,
        timeout=1500,
        env={**os.environ, "SALT_VERSION": SALT_VERSION},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    path = Path(done.stdout.strip().splitlines()[-1]) / "bin" / "salt-call"
    assert path.exists(), done.stdout
    return path


def bumped(version: str) -> str:
    parts = version.split(".")
    parts[-1] = str(int(parts[-1]) + 1)
    return ".".join(parts)


def build_wheel(work: Path, wheels: Path, version: str) -> Path:
    """A wheel of this worktree as callbridge ``version`` (built from a copy: nothing is written
    into the worktree)."""
    tree = work / f"src-{version}"
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "README.md", tree / "README.md")
    pyproject = (ROOT / "pyproject.toml").read_text()
    (tree / "pyproject.toml").write_text(
        re.sub(r'^version = ".*"$', f'version = "{version}"', pyproject, count=1, flags=re.M)
    )
    init = tree / "src" / "callbridge" / "__init__.py"
    init.write_text(re.sub(r'__version__ = ".*"', f'__version__ = "{version}"', init.read_text()))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(tree),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    wheel = wheels / f"callbridge-{version}-py3-none-any.whl"
    assert wheel.exists(), list(wheels.iterdir())
    return wheel


@dataclass
class State:
    id: str
    name: str
    result: bool | None
    changes: dict[str, Any]
    comment: str


@dataclass
class Minion:
    salt_call: Path
    root: Path  # everything Salt and the formula write is under here
    target: Path  # the "machine" the formula sets up
    pillar: dict[str, Any]
    timings: list[tuple[str, float]] = field(default_factory=list)

    @property
    def cba(self) -> dict[str, Any]:
        return dict(self.pillar["callbridge_agent"])

    @property
    def config(self) -> Path:
        return Path(self.cba["config"])

    @property
    def venv(self) -> Path:
        return Path(self.cba["venv"])

    def write(self) -> None:
        (self.root / "pillar").mkdir(parents=True, exist_ok=True)
        (self.root / "pillar" / "top.sls").write_text("base:\n  '*':\n    - callbridge\n")
        (self.root / "pillar" / "callbridge.sls").write_text(json.dumps(self.pillar, indent=1))
        (self.root / "conf").mkdir(exist_ok=True)
        minion = {
            "id": "fleet-test",
            "user": getpass.getuser(),
            "file_client": "local",
            "master_type": "disable",
            "root_dir": str(self.root / "salt"),
            "pki_dir": "/pki",
            "cachedir": "/cache",
            "sock_dir": "/run",
            "pidfile": "/run/salt-minion.pid",
            "log_file": "/log/minion",
            "file_roots": {"base": [str(ROOT / "salt")]},
            "pillar_roots": {"base": [str(self.root / "pillar")]},
            "module_dirs": [str(FAKE_MODULES)],
            "providers": {"service": "fakesystemd"},
            "fake_systemd_state": str(self.root / "systemd.json"),
            "fake_systemd_unit_dir": self.cba["service"]["unit_dir"],
        }
        (self.root / "conf" / "minion").write_text(json.dumps(minion, indent=1))

    @property
    def salt_args(self) -> list[str]:
        return [str(self.salt_call), "-c", str(self.root / "conf"), "--local"]

    def apply(self, *args: str, ok: bool = True) -> list[State]:
        self.write()
        started = time.monotonic()
        done = subprocess.run(
            [
                *self.salt_args,
                "state.apply",
                "callbridge-agent",
                "--out=json",
                "--retcode-passthrough",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "NO_COLOR": "1"},
            check=False,
        )
        self.timings.append((" ".join(args) or "apply", time.monotonic() - started))
        assert (done.returncode == 0) is ok, done.stdout[-6000:] + done.stderr[-3000:]
        found = json.loads(done.stdout)["local"]
        assert isinstance(found, dict), found  # a render error comes back as a list of strings
        return [
            State(s["__id__"], s["name"], s["result"], s["changes"], s["comment"])
            for s in sorted(found.values(), key=lambda s: s["__run_num__"])
        ]

    def systemd(self) -> dict[str, Any]:
        path = self.root / "systemd.json"
        return dict(json.loads(path.read_text())) if path.exists() else {"units": {}, "calls": []}

    def reloads(self) -> list[str]:
        path = self.root / "reloads"
        return path.read_text().splitlines() if path.exists() else []

    def installed_version(self) -> str:
        out = subprocess.run(
            [str(self.venv / "bin" / "callbridge"), "--version"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()


def changed(states: list[State]) -> set[str]:
    return {s.id for s in states if s.changes}


def by_id(states: list[State], state_id: str) -> State:
    return next(s for s in states if s.id == state_id)


def hub_agent_row(hub: HubProcess) -> tuple[str, str | None]:
    with sqlite3.connect(hub.data_dir / "hub.db") as db:
        token_hash = db.execute("SELECT token_hash FROM agents WHERE pbx = 'office'").fetchone()[0]
        used = db.execute("SELECT used_at FROM agent_enrollments").fetchone()[0]
    return token_hash, used


def test_formula_installs_enrolls_is_idempotent_upgrades_and_refuses_a_spent_code(
    salt_call: Path, tmp_path: Path
) -> None:
    version = callbridge.__version__
    newer = bumped(version)
    wheels = tmp_path / "wheels"
    build_wheel(tmp_path, wheels, version)

    hub = HubProcess(tmp_path / "hub", f"sqlite+aiosqlite:///{tmp_path / 'hub' / 'hub.db'}")
    timings: list[tuple[str, float]] = []
    hub.start()
    try:
        hub.cli("pbx", "add", "asterisk", "office", "--agent")
        code = re.findall(r"^cbenroll_\S+$", hub.cli("pbx", "enroll", "office"), re.M)[0]

        root = tmp_path / "m"
        target = root / "target"
        group = grp.getgrgid(os.getgid()).gr_name
        minion = Minion(
            salt_call,
            root,
            target,
            {
                "callbridge_agent": {
                    "version": version,
                    "pip": {"find_links": str(wheels)},
                    "venv": str(target / "opt" / "callbridge-agent"),
                    "manage_user": False,
                    "user": getpass.getuser(),
                    "group": group,
                    "groups": [],
                    "config_dir": str(target / "etc" / "callbridge-agent"),
                    "config": str(target / "etc" / "callbridge-agent" / "agent.toml"),
                    "state_dir": str(target / "var" / "lib" / "callbridge-agent"),
                    "recordings_dir": str(target / "var" / "spool" / "asterisk" / "monitor"),
                    "hub": hub.url,
                    "enroll_code": code,
                    "ami": {
                        "secret": "ami-Secret-1",
                        "manager_conf": str(target / "etc" / "asterisk" / "manager.d" / "callbridge.conf"),
                        "file_user": getpass.getuser(),
                        "file_group": group,
                        "reload_cmd": f"echo reloaded >> {root / 'reloads'}",
                    },
                    "service": {"unit_dir": str(target / "etc" / "systemd" / "system")},
                }
            },
            timings,
        )

        # 1. First apply: venv, package, enrollment, config, AMI user (+ reload), unit, service.
        first = minion.apply()
        assert all(s.result is True for s in first), [s for s in first if s.result is not True]
        assert {
            "callbridge-agent-venv",
            "callbridge-agent-package",
            "callbridge-agent-dirs",
            "callbridge-agent-enroll",
            "callbridge-agent-ami-user",
            "callbridge-agent-ami-reload",
            "callbridge-agent-unit",
            "callbridge-agent-enabled",
            "callbridge-agent-service",
        } <= changed(first)
        assert minion.installed_version() == f"callbridge {version}"
        mode = minion.config.stat()
        assert stat.S_IMODE(mode.st_mode) == 0o600 and mode.st_uid == os.getuid()
        config = tomllib.loads(minion.config.read_text())
        assert config["hub"] == hub.url and config["ami"]["secret"] == "ami-Secret-1"
        token_hash, used = hub_agent_row(hub)
        assert hashlib.sha256(config["token"].encode()).hexdigest() == token_hash and used is not None
        # Neither the code nor the token shows in what Salt reports.
        report = json.dumps([s.__dict__ for s in first])
        assert code not in report and config["token"] not in report
        manager = Path(minion.cba["ami"]["manager_conf"]).read_text()
        assert "[callbridge]" in manager and "secret = ami-Secret-1" in manager
        assert re.search(r"^read = .*\bsecurity\b", manager, re.M)
        assert minion.reloads() == ["reloaded"]
        assert minion.systemd()["units"][SERVICE] == {"running": True, "enabled": True}
        # The unit Salt writes is the one the package prints.
        unit = Path(minion.cba["service"]["unit_dir"]) / f"{SERVICE}.service"
        printed = subprocess.run(
            [
                str(minion.venv / "bin" / "callbridge"),
                "agent",
                "systemd-unit",
                "--config",
                str(minion.config),
                "--user",
                getpass.getuser(),
                "--group",
                "",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert unit.read_text() == printed
        assert f"ExecStart={minion.venv}/bin/callbridge agent run --config {minion.config}\n" in printed

        # 2. Second apply: nothing changes, nothing is reloaded or restarted.
        calls = minion.systemd()["calls"]
        second = minion.apply()
        assert changed(second) == set(), [s for s in second if s.changes]
        assert all(s.result is True for s in second)
        assert minion.reloads() == ["reloaded"] and minion.systemd()["calls"] == calls

        # 3. A version bump in pillar: test=True says what would happen, then it happens.
        build_wheel(tmp_path, wheels, newer)
        minion.pillar["callbridge_agent"]["version"] = newer
        dry = minion.apply("test=True")
        package = by_id(dry, "callbridge-agent-package")
        assert package.result is None and newer in package.comment, package
        assert minion.installed_version() == f"callbridge {version}"  # test=True changed nothing
        upgraded = minion.apply()
        assert changed(upgraded) == {"callbridge-agent-package", "callbridge-agent-service"}
        assert minion.installed_version() == f"callbridge {newer}"
        assert minion.systemd()["calls"][len(calls) :] == [["restart", SERVICE]]
        assert tomllib.loads(minion.config.read_text())["token"] == config["token"]  # not enrolled again

        # 4. The AMI secret rotated in pillar: Asterisk's file and the agent's config follow (the
        # token stays), Asterisk reloads, the agent restarts; then nothing changes again.
        calls = minion.systemd()["calls"]
        rotated_secret = 'new"sec\\ret'
        minion.pillar["callbridge_agent"]["ami"]["secret"] = rotated_secret
        rotated = minion.apply()
        assert changed(rotated) == {
            "callbridge-agent-config-ami-secret",
            "callbridge-agent-ami-user",
            "callbridge-agent-ami-reload",
            "callbridge-agent-service",
        }
        after = tomllib.loads(minion.config.read_text())
        assert after["ami"]["secret"] == rotated_secret and after["token"] == config["token"]
        assert f"secret = {rotated_secret}\n" in Path(minion.cba["ami"]["manager_conf"]).read_text()
        assert stat.S_IMODE(minion.config.stat().st_mode) == 0o600
        assert not list(minion.config.parent.glob("*.bak"))  # no copy of the token left behind
        assert minion.reloads() == ["reloaded", "reloaded"]
        assert minion.systemd()["calls"][len(calls) :] == [["restart", SERVICE]]
        assert changed(minion.apply()) == set()

        # 5. A rebuilt machine with the old pillar: the spent code is refused, with words.
        minion.config.unlink()
        calls = minion.systemd()["calls"]
        refused = minion.apply(ok=False)
        enroll = by_id(refused, "callbridge-agent-enroll")
        assert enroll.result is False
        assert "enrollment code refused: it was already used" in enroll.changes["stderr"]
        assert "callbridge pbx enroll office" in enroll.changes["stderr"]
        assert not minion.config.exists()
        assert by_id(refused, "callbridge-agent-service").result is False  # not restarted without a config
        assert minion.systemd()["calls"] == calls
        # Without a code at all, the formula says what to set.
        minion.pillar["callbridge_agent"]["enroll_code"] = ""
        missing = by_id(minion.apply(ok=False), "callbridge-agent-enroll")
        assert missing.result is False and "callbridge_agent:enroll_code" in missing.name
        assert hub_agent_row(hub)[0] == token_hash  # the agent's token was not replaced
    finally:
        hub.stop()
        print("salt-call runs (s):", ", ".join(f"{what} {took:.1f}" for what, took in timings))
