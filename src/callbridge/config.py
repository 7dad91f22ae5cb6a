"""One Settings object, built once at start and passed down.

Sources, strongest first: keyword arguments, ``CALLBRIDGE_*`` environment variables, the TOML
file named by ``CALLBRIDGE_CONFIG`` (or ``<data dir>/callbridge.toml`` when it exists), defaults.
The data directory defaults to ``./var`` relative to where callbridge starts: one obvious place
for the SQLite database, the secret key and recordings.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from callbridge.domain.errors import InvalidInput
from callbridge.domain.numbers import is_known_region
from callbridge.domain.recordings import parse_recordings_url
from callbridge.domain.times import time_zones, validate_time_zone


def machine_time_zone() -> str:
    """The machine's IANA zone: ``TZ``, else where ``/etc/localtime`` points, else
    ``/etc/timezone``; UTC when none of them names a known zone."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    localtime = Path("/etc/localtime")
    with contextlib.suppress(OSError):
        target = str(localtime.resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    for name in candidates:
        if name and (name in time_zones() or name.upper() == "UTC"):
            return "UTC" if name in ("Etc/UTC", "Etc/Universal", "Etc/Zulu", "Zulu", "UCT") else name
    return "UTC"


def _toml_file() -> Path | None:
    explicit = os.environ.get("CALLBRIDGE_CONFIG")
    if explicit:
        return Path(explicit)
    candidate = Path(os.environ.get("CALLBRIDGE_DATA_DIR", "var")) / "callbridge.toml"
    return candidate if candidate.is_file() else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CALLBRIDGE_", extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="Where the SQLite database and key live.")
    database_url: str = Field(default="", description="Empty: SQLite in the data dir.")
    redis_url: str = Field(default="", description="Empty: in-process bus.")
    secret_key: SecretStr | None = Field(default=None, description="Fernet key; default: data dir file.")
    default_region: str = Field(default="US", description="Region for national numbers (ISO 3166).")
    time_zone: str = Field(
        default_factory=machine_time_zone,
        description="Users' default time zone (IANA name); default: the machine's.",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = Field(default="", description="How PBXs reach the hub (webhook URLs).")
    max_body_bytes: int = 1_048_576
    recording_max_bytes: int = Field(
        default=2 * 1024**3, description="Largest recording an agent may upload (bytes)."
    )
    max_import_bytes: int = Field(
        default=20 * 1024 * 1024, description="Largest contacts file a web upload may be (CSV import)."
    )
    header_timeout_seconds: float = Field(default=10.0, description="Time to send request headers.")
    body_timeout_seconds: float = Field(default=60.0, description="Time to send a whole request body.")
    keep_alive_seconds: int = Field(default=5, description="Idle time between requests on a connection.")
    max_connections: int = Field(default=1000, description="Connections and requests at once, per worker.")
    session_max_age_seconds: int = 12 * 3600
    secure_cookies: bool = Field(default=False, description="Set with HTTPS in front of the hub.")
    login_max_failures: int = Field(default=5, description="Per user and address (or known device).")
    login_user_max_failures: int = Field(default=20, description="Per user, from unknown devices.")
    login_address_max_failures: int = Field(default=50, description="Per address, any user.")
    login_window_seconds: int = 600
    login_first_lock_seconds: int = Field(default=30, description="First lock; doubles per failure.")
    login_lockout_seconds: int = Field(default=900, description="The longest lock.")
    login_delay_seconds: float = Field(default=0.25, description="First pause after a failed sign-in.")
    log_level: str = "INFO"
    start_pbx_links: bool = Field(default=True, description="Connect to configured PBXs on start.")
    start_connectors: bool = Field(
        default=True, description="Sync ERP connectors and write calls into them from this process."
    )
    connector_sync_seconds: float = Field(
        default=60.0, gt=0, description="Time between two incremental directory syncs from an ERP."
    )
    connector_sweep_seconds: float = Field(
        default=900.0, gt=0, description="Time between two looks for records deleted or merged in an ERP."
    )
    connector_retry_max_seconds: float = Field(
        default=300.0, gt=0, description="The longest wait before writing a call into an ERP again."
    )
    connector_recording_link_days: int = Field(
        default=30, ge=1, le=90, description="How long the recording link written into an ERP works."
    )
    retention_purge_interval_seconds: float = Field(
        default=86400.0, gt=0, description="Time between two runs of the recordings' retention purge."
    )
    retention_first_purge_seconds: float = Field(
        default=300.0, ge=0, description="Time after start before the first retention purge."
    )
    transcribe: bool = Field(
        default=False, description="Transcribe stored recordings on the hub (faster-whisper, on the CPU)."
    )
    transcribe_model_dir: Path | None = Field(
        default=None,
        description="A CTranslate2 Whisper model directory; empty: the packaged tiny.en model.",
    )
    transcribe_numbers: str = Field(
        default="", description="Comma-separated number patterns (+4930*): only calls with such a number."
    )
    transcribe_directions: str = Field(
        default="", description="Comma-separated directions (inbound, outbound, internal); empty: all."
    )
    transcribe_pbxes: str = Field(default="", description="Comma-separated PBX names; empty: all.")
    transcribe_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often the transcription worker looks for new recordings."
    )
    summary_url: str = Field(
        default="",
        description="OpenAI-compatible API (http://127.0.0.1:8080/v1) to summarise transcripts; empty: none.",
    )
    summary_model: str = Field(default="", description="The model name sent to the summary endpoint.")
    summary_api_key: SecretStr | None = Field(
        default=None, description="Bearer key for the summary endpoint."
    )
    transcribe_threads: int = Field(default=2, ge=1, le=64, description="CPU threads for transcription.")
    recordings_url: str = Field(
        default="",
        description="Where recordings are stored. Empty: under the data dir; s3://bucket/prefix: "
        "an S3-compatible store.",
    )
    recordings_s3_endpoint: str = Field(
        default="", description="The S3-compatible server's URL (MinIO, Ceph, …); empty: AWS."
    )
    recordings_s3_region: str = Field(default="", description="The S3 region; empty: the server's default.")
    recordings_s3_access_key: str = Field(
        default="", description="S3 access key id; empty: boto3's usual sources (environment, profile, role)."
    )
    recordings_s3_secret_key: SecretStr | None = Field(
        default=None, description="S3 secret access key (never logged)."
    )
    recordings_transcode: Literal["", "opus", "mp3"] = Field(
        default="",
        description="Transcode fetched recordings to opus or mp3 with ffmpeg; empty: store as fetched.",
    )
    pbx_watch_seconds: float = Field(
        default=5.0,
        description="How often to look for PBXs added, edited, disabled or removed by another process.",
    )
    followup_min_ring_seconds: int = Field(
        default=5,
        ge=0,
        description="A missed call that rang for less (a short abandon) leaves no callback task.",
    )
    followup_close_by_anyone: bool = Field(
        default=False,
        description="Any answered call with the number closes its tasks (else: the assignee's only).",
    )
    followup_team: str = Field(
        default="",
        description="The team that shares unassigned callbacks round robin; empty: the first team.",
    )
    smtp_host: str = Field(default="", description="SMTP server for e-mail (digests); empty: no e-mail.")
    smtp_port: int = Field(default=587, ge=1, le=65535, description="587 with STARTTLS, 465 with TLS.")
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="starttls, tls (implicit, port 465) or none (a local relay only)."
    )
    smtp_username: str = Field(default="", description="Empty: the server takes mail without signing in.")
    smtp_password: SecretStr | None = Field(default=None, description="Never logged.")
    smtp_from: str = Field(default="callbridge@localhost", description="The sender address of e-mails.")
    smtp_timeout_seconds: float = Field(default=20.0, gt=0, description="Per SMTP step.")
    email_digest_hour: int = Field(
        default=8, ge=0, le=23, description="The hour (each user's local time) the daily digest is sent."
    )
    auto_create_contacts: bool = Field(default=False, description="Unknown inbound callers become contacts.")
    link_lease_seconds: float = Field(default=15.0, description="With Redis: TTL of a PBX link's lease.")

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not is_known_region(value):
            raise ValueError(f"unknown region {value!r}; use an ISO 3166 code like US or DE")
        return value.upper()

    @field_validator("transcribe_directions")
    @classmethod
    def _directions(cls, value: str) -> str:
        allowed = {"inbound", "outbound", "internal"}
        wrong = [d for d in (v.strip().lower() for v in value.split(",")) if d and d not in allowed]
        if wrong:
            raise ValueError(f"unknown direction {wrong[0]!r}; use inbound, outbound or internal")
        return value

    @field_validator("summary_url")
    @classmethod
    def _summary_url(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("the summary endpoint must be an http:// or https:// URL")
        return value

    @field_validator("recordings_url")
    @classmethod
    def _recordings_url(cls, value: str) -> str:
        try:
            parse_recordings_url(value)
        except InvalidInput as exc:
            raise ValueError(exc.message) from exc
        return value.strip()

    @field_validator("time_zone")
    @classmethod
    def _time_zone(cls, value: str) -> str:
        try:
            return validate_time_zone(value)
        except InvalidInput as exc:
            raise ValueError(exc.message) from exc

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _toml_file()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'callbridge.db').resolve()}"
