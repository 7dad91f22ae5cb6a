"""The project's error tree. Domain errors carry no HTTP codes; ``web/`` maps them in one place."""

from __future__ import annotations


class CallbridgeError(Exception):
    """Base of every error callbridge raises on purpose. ``code`` is stable for API clients."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(CallbridgeError):
    code = "invalid_input"


class PayloadTooLarge(InvalidInput):
    code = "body_too_large"


class InvalidEvent(InvalidInput):
    code = "invalid_event"


class InvalidNumber(InvalidInput):
    code = "invalid_number"


class NotFound(CallbridgeError):
    code = "not_found"


class Conflict(CallbridgeError):
    code = "conflict"


class AuthenticationFailed(CallbridgeError):
    code = "authentication_failed"


class Forbidden(CallbridgeError):
    code = "forbidden"


class RateLimited(CallbridgeError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PbxError(CallbridgeError):
    """Something went wrong talking to a PBX."""

    code = "pbx_error"


class PbxUnavailable(PbxError):
    """The PBX could not be reached, or the link is down."""

    code = "pbx_unavailable"


class PbxRejected(PbxError):
    """The PBX answered and refused what we asked (bad credentials, busy phone, …)."""

    code = "pbx_rejected"


class PbxTimeout(PbxUnavailable):
    code = "pbx_timeout"


class StoreUnavailable(CallbridgeError):
    """The database could not store a change (it is full, read-only, gone, or refused the commit):
    nothing of it was kept, and the caller may try again."""

    code = "database_unavailable"


class StorageUnavailable(CallbridgeError):
    """The recordings' store (an S3-compatible server) could not be reached or refused a request:
    nothing was stored or read, and the caller may try again."""

    code = "storage_unavailable"
