"""First setup of an agent: exchange an enrollment code for its token, write its config file, and
print the systemd unit that runs it (``callbridge agent enroll`` / ``callbridge agent systemd-unit``).

The long-lived token only ever travels from the hub to this file: the admin hands out a
short-lived single-use code (``callbridge pbx enroll NAME``), so pillar data, tickets and shell
history never hold the token itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from callbridge.agent.config import DEFAULT_OUTBOX, DEFAULT_RECORDINGS_DIR, AgentConfig, AgentConfigError

DEFAULT_CONFIG = Path("/etc/callbridge-agent/agent.toml")
DEFAULT_USER = "callbridge-agent"


class EnrollmentFailed(Exception):
    """The hub refused the code or could not be reached; the message says which."""


@dataclass(frozen=True, slots=True)
class Enrolled:
    pbx: str
    token: str
    hub_version: str


def exchange(hub: str, code: str, timeout: float = 30.0, verify: bool | str = True) -> Enrolled:
    """POST the code to the hub's ``/agent/v1/enroll``; the agent's token, or EnrollmentFailed."""
    base = AgentConfig(hub=hub, token="-").http_url  # noqa: S106 - raises AgentConfigError for a bad URL
    try:
        response = httpx.post(
            base + "/agent/v1/enroll", json={"code": code.strip()}, timeout=timeout, verify=verify
        )
    except httpx.HTTPError as exc:
        raise EnrollmentFailed(f"cannot reach the hub at {base}: {exc}") from exc
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        message = ""
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            message = str(body["error"].get("message") or "")
        raise EnrollmentFailed(message or f"the hub answered HTTP {response.status_code}")
    if not isinstance(body, dict) or not isinstance(body.get("token"), str) or not body.get("pbx"):
        raise EnrollmentFailed(f"{base} did not answer like a callbridge hub")
    return Enrolled(str(body["pbx"]), body["token"], str(body.get("hub_version") or ""))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    # A JSON string (ASCII, escaped) is a valid TOML basic string.
    return json.dumps(str(value), ensure_ascii=True)


def config_text(
    hub: str,
    token: str,
    *,
    outbox: Path = DEFAULT_OUTBOX,
    recordings_dir: Path | None = None,
    ami: dict[str, Any] | None = None,
    pbx: str = "",
) -> str:
    lines = [
        f"# callbridge agent{f' of PBX {pbx}' if pbx else ''}: written by `callbridge agent enroll`.",
        "# It holds the agent's token (and the AMI secret): keep it mode 600, owned by the agent's user.",
        f"hub = {_toml(hub)}",
        f"token = {_toml(token)}",
        f"outbox = {_toml(str(outbox))}",
        *([f"recordings_dir = {_toml(str(recordings_dir))}"] if recordings_dir else []),
        "",
        "[ami]",
    ]
    for key, value in (ami or {}).items():
        if value is not None and value != "":
            lines.append(f"{key} = {_toml(value)}")
    return "\n".join(lines) + "\n"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600, owned by whoever runs this (the agent's
    user, in a directory of its own). The parent is made 0700 when missing."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp makes it 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def systemd_unit(
    executable: Path,
    config: Path,
    *,
    user: str = DEFAULT_USER,
    groups: tuple[str, ...] = ("asterisk",),
    state_dir: Path = DEFAULT_OUTBOX.parent,
    recordings_dir: Path = DEFAULT_RECORDINGS_DIR,
    firewall: bool = True,
) -> str:
    """The systemd unit that runs the agent: what it needs and nothing more.

    It reads AMI on loopback and dials the hub (INET/INET6), writes only its outbox directory,
    reads the recordings directory (through the Asterisk group), and, for the security guard's
    firewall part only, changes nftables (CAP_NET_ADMIN over AF_NETLINK; ``nft`` runs as a
    child and inherits the ambient capability)."""
    lines = [
        "# callbridge agent: printed by `callbridge agent systemd-unit`",
        "[Unit]",
        "Description=callbridge agent (Asterisk → hub)",
        "After=network-online.target asterisk.service",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"User={user}",
    ]
    if groups:
        lines.append(f"SupplementaryGroups={' '.join(groups)}")
    lines += [
        f"ExecStart={executable} agent run --config {config}",
        "Restart=always",
        "RestartSec=2",
        # SIGTERM ends it cleanly; whatever the hub has not acknowledged waits in the outbox.
        "TimeoutStopSec=20",
        "UMask=0077",
    ]
    if firewall:
        lines += [
            "# The security guard's firewall part (nftables); use --no-firewall to drop it.",
            "AmbientCapabilities=CAP_NET_ADMIN",
            "CapabilityBoundingSet=CAP_NET_ADMIN",
        ]
    else:
        lines += ["CapabilityBoundingSet="]
    lines += [
        # AF_NETLINK: nftables, and glibc's getaddrinfo asks the kernel for the addresses in use.
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={state_dir}",
        # Read only (ProtectSystem=strict); "-": a PBX that records nothing may not have it.
        f"ReadOnlyPaths=-{recordings_dir}",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def paths_from_config(config: Path) -> tuple[Path, Path]:
    """The outbox directory and recordings directory a config file names (defaults when the
    file is missing or unreadable, as before enrollment)."""
    from callbridge.agent.config import load_file

    try:
        values = load_file(config)
    except AgentConfigError:
        values = {}
    outbox = Path(values.get("outbox", DEFAULT_OUTBOX))
    return outbox.parent, Path(values.get("recordings_dir", DEFAULT_RECORDINGS_DIR))
