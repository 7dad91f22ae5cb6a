"""One place that turns errors into HTTP answers: JSON for the API, a page for people.

Every error body on the API is ``{"error": {"code": "...", "message": "..."}}`` with a stable code.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from callbridge.domain import errors
from callbridge.domain.connectors import ConnectorError
from callbridge.domain.recordings import (
    RangeNotSatisfiable,
    UploadChecksumMismatch,
    UploadOffsetMismatch,
    UploadTooLarge,
)
from callbridge.store.db import DatabaseError, connection_lost
from callbridge.web.middleware import html_wanted

log = logging.getLogger(__name__)

STATUS: dict[type[errors.CallbridgeError], int] = {
    errors.PayloadTooLarge: 413,
    RangeNotSatisfiable: 416,
    UploadOffsetMismatch: 409,
    UploadChecksumMismatch: 422,
    UploadTooLarge: 413,
    errors.InvalidInput: 400,
    errors.AuthenticationFailed: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.RateLimited: 429,
    errors.StoreUnavailable: 503,
    errors.StorageUnavailable: 503,
    errors.PbxRejected: 422,
    errors.PbxTimeout: 504,
    errors.PbxUnavailable: 503,
    errors.PbxError: 502,
    # An ERP that is down, slow or refusing: the hub's gateway failed, not the request.
    ConnectorError: 502,
}

_HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "invalid_request",
    429: "rate_limited",
}


# Field names as people read them, where the parameter name says it badly.
_FIELD_WORDS = {"name": "the user name", "display_name": "the display name", "q": "the search"}


def _field(loc: list[str]) -> str:
    # loc is ("body" | "query" | "path", field, …): the field (and any index) is what a person typed.
    parts = [p for p in loc[1:] if not p.isdigit()] or loc
    name = parts[-1] if parts else ""
    if not name:
        return "the request"
    return _FIELD_WORDS.get(name, "the " + name.replace("_", " "))


def validation_sentence(error: dict[str, Any]) -> str:
    """One of pydantic's errors as a sentence a person understands (the one place where raw
    messages like "String should have at most 64 characters" become words)."""
    loc = [str(p) for p in error.get("loc", ())]
    field = _field(loc)
    ctx = error.get("ctx") or {}
    kind = str(error.get("type", ""))
    sentences = {
        "missing": f"{field} is required",
        "string_too_long": f"{field} is too long: it has at most {ctx.get('max_length')} characters",
        "string_too_short": f"{field} is too short: it needs at least {ctx.get('min_length')} characters"
        if ctx.get("min_length", 1) != 1
        else f"{field} is required",
        "string_type": f"{field} must be text",
        "int_parsing": f"{field} must be a whole number",
        "int_type": f"{field} must be a whole number",
        "int_from_float": f"{field} must be a whole number",
        "float_parsing": f"{field} must be a number",
        "bool_parsing": f"{field} must be true or false",
        "bool_type": f"{field} must be true or false",
        "greater_than_equal": f"{field} must be at least {ctx.get('ge')}",
        "greater_than": f"{field} must be more than {ctx.get('gt')}",
        "less_than_equal": f"{field} must be at most {ctx.get('le')}",
        "less_than": f"{field} must be less than {ctx.get('lt')}",
        "enum": f"{field} must be one of {ctx.get('expected')}",
        "literal_error": f"{field} must be one of {ctx.get('expected')}",
        "extra_forbidden": f"{field} is not a field this request knows",
        "json_invalid": "the request body is not valid JSON",
        "model_attributes_type": "the request body must be a JSON object",
        "dict_type": f"{field} must be a JSON object",
        "list_type": f"{field} must be a list",
    }
    sentence = sentences.get(kind) or f"{field}: {str(error.get('msg', 'is not valid')).lower()}"
    return sentence[:1].upper() + sentence[1:] + "."


def retry_after(exc: errors.RateLimited) -> str:
    """The Retry-After value (whole seconds, at least 1) for ``exc``."""
    return str(max(1, math.ceil(exc.retry_after)))


def status_for(exc: errors.CallbridgeError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def wants_plain_dialplan(request: Request) -> bool:
    """A dialplan request without ``Accept: application/json``: Asterisk's ``CURL()`` reads the
    body whatever the status, so an error body would end up as the caller's name."""
    return request.url.path.startswith("/dialplan/") and "application/json" not in request.headers.get(
        "accept", ""
    )


def wants_html(request: Request) -> bool:
    return html_wanted(request.url.path, request.headers.get("accept", ""))


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    details: Any = None,
) -> Response:
    if status == 429 and not any(k.lower() == "retry-after" for k in headers or {}):
        headers = {**(headers or {}), "Retry-After": "1"}  # every 429 says when to come back
    if wants_plain_dialplan(request):
        # The status says enough; an empty body, typed, so CURL() reads nothing as a name.
        return Response(status_code=status, headers=headers, media_type="text/plain")
    if wants_html(request):
        if status == 401:
            from fastapi.responses import RedirectResponse

            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        templates = request.app.state.templates
        page: Response = templates.TemplateResponse(
            request,
            "error.html",
            {"status": status, "message": message, "user": getattr(request.state, "user", None)},
            status_code=status,
            headers=headers,
        )
        return page
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    async def domain_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.CallbridgeError)
        headers = None
        if isinstance(exc, errors.RateLimited):
            headers = {"Retry-After": retry_after(exc)}
        if isinstance(exc, errors.StoreUnavailable | errors.StorageUnavailable):
            headers = {"Retry-After": "1"}  # nothing was stored: the client sends it again
        if isinstance(exc, RangeNotSatisfiable):
            headers = {"Content-Range": f"bytes */{exc.size}", "Accept-Ranges": "bytes"}
        if isinstance(exc, errors.AuthenticationFailed) and not wants_html(request):
            headers = {"WWW-Authenticate": "Bearer"}
        details = {"offset": exc.offset} if isinstance(exc, UploadOffsetMismatch) else None
        return error_response(request, status_for(exc), exc.code, exc.message, headers, details)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors_ = list(exc.errors())
        details = [
            {"loc": [str(p) for p in e.get("loc", ())], "message": validation_sentence(e)} for e in errors_
        ]
        message = validation_sentence(errors_[0]) if errors_ else "The request is not valid."
        return error_response(request, 422, "invalid_request", message, details=details)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(request, exc.status_code, code, message, dict(exc.headers or {}) or None)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal_error", "something went wrong on our side")

    async def database_error(request: Request, exc: Exception) -> Response:
        if not connection_lost(exc):
            return await unexpected(request, exc)
        # The connection broke (the database restarted or is unreachable): the pool drops it and
        # its peers, so the next request gets a fresh one. Say so instead of "internal error".
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return error_response(
            request,
            503,
            "database_unavailable",
            "the database cannot be reached right now; try again in a moment",
            {"Retry-After": "1"},
        )

    app.add_exception_handler(errors.CallbridgeError, domain_error)
    app.add_exception_handler(DatabaseError, database_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
