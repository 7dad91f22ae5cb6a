"""The agent's settings: command-line options or a TOML file (``callbridge agent --config FILE``).

Example file (every key is optional except hub, token and the AMI credentials)::

    hub = "https://hub.example.com"
    token = "cbagent_…"
    outbox = "/var/lib/callbridge-agent/outbox.sqlite3"
    outbox_max_rows = 200000

    [ami]
    host = "127.0.0.1"
    port = 5038
    username = "callbridge"
    secret = "…"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from callbridge.services.agents import MAX_AGENT_BATCH

DEFAULT_OUTBOX = Path("/var/lib/callbridge-agent/outbox.sqlite3")
DEFAULT_RECORDINGS_DIR = Path("/var/spool/asterisk/monitor")
DEFAULT_VOICEMAIL_DIR = Path("/var/spool/asterisk/voicemail")


class AgentConfigError(ValueError):
    """A setting is missing or wrong; the message says which and how to fix it."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    hub: str
    token: str = field(repr=False)
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_username: str = ""
    ami_secret: str = field(default="", repr=False)
    outbox: Path = DEFAULT_OUTBOX
    outbox_max_rows: int = 200_000
    outbox_durable: bool = False
    # Until the hub sends its settings (first start with the hub down).
    trunks: tuple[str, ...] = ()
    default_region: str = "US"
    batch_size: int = 500
    window: int = 5000
    # How long to let rows gather while a frame is unacknowledged (seconds).
    linger: float = 0.005
    status_interval: float = 5.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    refused_backoff: float = 60.0
    refused_backoff_max: float = 600.0
    connect_timeout: float = 10.0
    action_timeout: float = 30.0
    guard_backend: str = "auto"  # auto (nftables when usable, else dry run) | nft | dry-run | off
    # Recordings: only files inside this directory are ever read and uploaded.
    recordings_dir: Path = DEFAULT_RECORDINGS_DIR
    recordings_max_bytes: int = 2 * 1024**3  # a larger file is refused (the hub is told why)
    upload_chunk_bytes: int = 1024 * 1024  # at most; the hub may ask for smaller chunks
    # A file is sent once it has not changed for this long (Asterisk closes it after the hang-up).
    upload_settle_seconds: float = 1.0
    upload_timeout: float = 30.0  # per request
    # Voicemail (app_voicemail's spool): only messages inside this directory are read.
    voicemail_dir: Path = DEFAULT_VOICEMAIL_DIR

    @property
    def http_url(self) -> str:
        """The hub's base URL for plain HTTP (ws→http, wss→https)."""
        parts = urlsplit(self.hub.strip())
        scheme = {"http": "http", "https": "https", "ws": "http", "wss": "https"}.get(parts.scheme)
        if scheme is None or not parts.netloc:
            raise AgentConfigError(f"--hub must look like https://hub.example.com (got {self.hub!r})")
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))

    @property
    def link_url(self) -> str:
        """The hub's agent WebSocket URL (http→ws, https→wss)."""
        parts = urlsplit(self.hub.strip())
        scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
        if scheme is None or not parts.netloc:
            raise AgentConfigError(f"--hub must look like https://hub.example.com (got {self.hub!r})")
        path = parts.path.rstrip("/") + "/agent/v1/link"
        return urlunsplit((scheme, parts.netloc, path, "", ""))

    def check(self) -> AgentConfig:
        self.link_url  # noqa: B018 - validates the URL
        if not self.token:
            raise AgentConfigError("give the agent token (--token) printed by `callbridge pbx add … --agent`")
        if not self.ami_username or not self.ami_secret:
            raise AgentConfigError("give the AMI user and secret (--ami-username, --ami-secret)")
        if not 1 <= self.ami_port <= 65535:
            raise AgentConfigError("the AMI port must be between 1 and 65535")
        if self.outbox_max_rows < 100:
            raise AgentConfigError("outbox_max_rows must be at least 100")
        if not 1 <= self.batch_size <= MAX_AGENT_BATCH:
            raise AgentConfigError(f"batch_size must be between 1 and {MAX_AGENT_BATCH}")
        if not 16 * 1024 <= self.upload_chunk_bytes <= 8 * 1024 * 1024:
            raise AgentConfigError("upload_chunk_bytes must be between 16 KiB and 8 MiB")
        if self.recordings_max_bytes < 1:
            raise AgentConfigError("recordings_max_bytes must be positive")
        if self.guard_backend not in ("auto", "nft", "dry-run", "off"):
            raise AgentConfigError("guard_backend is auto, nft, dry-run or off")
        return self


_FLAT = {
    "hub": str,
    "token": str,
    "outbox": Path,
    "outbox_max_rows": int,
    "outbox_durable": bool,
    "default_region": str,
    "batch_size": int,
    "window": int,
    "linger": float,
    "status_interval": float,
    "backoff_initial": float,
    "backoff_max": float,
    "refused_backoff": float,
    "refused_backoff_max": float,
    "connect_timeout": float,
    "action_timeout": float,
    "guard_backend": str,
    "recordings_dir": Path,
    "recordings_max_bytes": int,
    "upload_chunk_bytes": int,
    "upload_settle_seconds": float,
    "upload_timeout": float,
    "voicemail_dir": Path,
}


def load_file(path: Path) -> dict[str, Any]:
    """Read a TOML config file into AgentConfig keyword arguments."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise AgentConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise AgentConfigError(f"{path} is not valid TOML: {exc}") from exc
    out: dict[str, Any] = {}
    for key, kind in _FLAT.items():
        if key in data:
            try:
                out[key] = kind(data[key])
            except (TypeError, ValueError) as exc:
                raise AgentConfigError(f"{path}: {key} must be a {kind.__name__}") from exc
    if "trunks" in data:
        out["trunks"] = tuple(str(t) for t in data["trunks"])
    ami = data.get("ami", {})
    if not isinstance(ami, dict):
        raise AgentConfigError(f"{path}: [ami] must be a table")
    for key, kind2 in (("host", str), ("port", int), ("username", str), ("secret", str)):
        if key in ami:
            out[f"ami_{key}"] = kind2(ami[key])
    unknown = set(data) - set(_FLAT) - {"trunks", "ami"}
    if unknown:
        raise AgentConfigError(f"{path}: unknown setting(s): {', '.join(sorted(unknown))}")
    return out


def build(file: Path | None, **options: Any) -> AgentConfig:
    """File values, overridden by the options given on the command line (None = not given)."""
    values: dict[str, Any] = load_file(file) if file else {}
    values.update({k: v for k, v in options.items() if v is not None})
    if "hub" not in values or "token" not in values:
        raise AgentConfigError("give --hub and --token (or a --config file with hub and token)")
    return replace(AgentConfig(hub=values.pop("hub"), token=values.pop("token")), **values).check()
