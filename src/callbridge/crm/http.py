"""One place that turns an ERP's HTTP answer (or its silence) into a :class:`ConnectorError`.

Every request has a timeout; the answer must be JSON (an HTML login or error page where JSON
was due is said as such); 401/403/404/417/422/429/5xx become the project's errors with the
ERP's own message, cut short. Credentials never reach a message or a log line.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from callbridge.domain.connectors import (
    ConnectorError,
    ErpAuthFailed,
    ErpBroken,
    ErpBusy,
    ErpForbidden,
    ErpMissing,
    ErpRejected,
    ErpUnreachable,
)

TIMEOUT = httpx.Timeout(10.0, connect=5.0)
MAX_MESSAGE = 300


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date); ``None`` when absent/odd."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def decode_json(response: httpx.Response, what: str) -> Any:
    kind = response.headers.get("content-type", "")
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        looks = "an HTML page" if "html" in kind or response.text.lstrip().startswith("<") else "not JSON"
        raise ErpBroken(
            f"{what}: the answer (HTTP {response.status_code}) is {looks}; is the URL the ERP's address?"
        ) from None


async def send(client: httpx.AsyncClient, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
    """Send one request; transport failures become :class:`ErpUnreachable` (said with the host)."""
    try:
        return await client.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise ErpUnreachable(f"{what}: no answer from {_host(url)} in time ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise ErpUnreachable(f"{what}: cannot reach {_host(url)} ({_reason(exc)})") from exc


def _host(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "refused" in text.lower():
        return "connection refused"
    if "name or service" in text.lower() or "nodename" in text.lower() or "resolve" in text.lower():
        return "unknown host name"
    return short(text)


def status_error(response: httpx.Response, what: str, message: str) -> ConnectorError:
    """The error for a non-2xx answer, with the ERP's ``message``."""
    code = response.status_code
    if not message and (
        "html" in response.headers.get("content-type", "") or response.text.lstrip().startswith("<")
    ):
        message = "an HTML page instead of JSON: a proxy answered for the ERP, or the URL is not the ERP's"
    detail = f" ({short(message)})" if message else ""
    if code == 401:
        return ErpAuthFailed(f"{what}: the ERP refused the credentials (HTTP 401){detail}")
    if code == 403:
        return ErpForbidden(f"{what}: no permission (HTTP 403){detail}")
    if code == 404:
        return ErpMissing(f"{what}: not found (HTTP 404){detail}")
    if code == 429 or code == 503:
        wait = retry_after(response.headers.get("retry-after"))
        return ErpBusy(f"{what}: the ERP asks to slow down (HTTP {code}){detail}", wait)
    if code in (400, 409, 417, 422):
        return ErpRejected(f"{what}: the ERP refused the data (HTTP {code}){detail}")
    return ErpBroken(f"{what}: the ERP failed (HTTP {code}){detail}")
