"""Secrets at rest: the one place that encrypts and decrypts them.

The key is ``CALLBRIDGE_SECRET_KEY`` (a Fernet key) or, by default, ``<data dir>/secret.key``,
created on first use with mode 0600. Losing the key makes stored PBX passwords unreadable
(they can be entered again); it never exposes them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from callbridge.domain.errors import CallbridgeError

KEY_FILE = "secret.key"


class SecretsUnreadable(CallbridgeError):
    code = "secrets_unreadable"


def load_or_create_key(data_dir: Path, explicit: str | None = None) -> bytes:
    if explicit:
        return explicit.encode()
    path = data_dir / KEY_FILE
    if path.exists():
        return path.read_bytes().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


class SecretBox:
    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise SecretsUnreadable("the secret key is not a valid Fernet key") from exc
        self._key = key

    def encrypt(self, values: dict[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(values).encode()).decode()

    def decrypt(self, token: str) -> dict[str, str]:
        if not token:
            return {}
        try:
            data = json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken as exc:
            raise SecretsUnreadable("stored secrets cannot be read with this key") from exc
        if not isinstance(data, dict):
            raise SecretsUnreadable("stored secrets are corrupt")
        return {str(k): str(v) for k, v in data.items()}

    def derive(self, label: str) -> str:
        """A stable sub-key for another purpose (e.g. signing session cookies)."""
        return hmac.new(self._key, label.encode(), hashlib.sha256).hexdigest()
