"""One table from errors to HTTP statuses, and the JSON problem body every error answer carries."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import psycopg
import psycopg_pool
from eventsourcing.persistence import IntegrityError, PersistenceError
from litestar import Request, Response
from litestar.exceptions import HTTPException

from domain.errors import (
    ConcurrencyConflictError,
    DeliveryNotFoundError,
    DeliveryNotParkedError,
    PrescriptionNotFoundError,
)
from domain.service import describe_fault
from interfaces.drx.signature import SignatureError
from interfaces.drx.translator import EnvelopeError, NotAJsonObjectError

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5


class ProblemError(Exception):
    """An error answer decided by a handler: status, a short code and a sentence."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


# exception class -> (status, error code); the message of the exception is the detail.
ERROR_TABLE: dict[type[Exception], tuple[int, str]] = {
    NotAJsonObjectError: (400, "not_a_json_object"),
    SignatureError: (401, "invalid_signature"),
    PrescriptionNotFoundError: (404, "prescription_not_found"),
    DeliveryNotFoundError: (404, "delivery_not_found"),
    DeliveryNotParkedError: (409, "delivery_not_parked"),
    EnvelopeError: (422, "invalid_envelope"),
    ConcurrencyConflictError: (503, "busy"),
}
_DETAILS: dict[type[Exception], str] = {
    PrescriptionNotFoundError: "no prescription with id {}",
    DeliveryNotFoundError: "no delivery with event id {}",
    DeliveryNotParkedError: "delivery {} is not parked",
    ConcurrencyConflictError: "too many concurrent writes to the prescription of delivery {}",
}
# What a store that cannot be reached, or cannot take a write now, raises through each layer.
STORE_UNAVAILABLE: tuple[type[Exception], ...] = (
    PersistenceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg_pool.PoolTimeout,
    sqlite3.OperationalError,
)


def problem(status: int, error: str, detail: str, **extra: Any) -> Response[dict[str, Any]]:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else None
    return Response(
        {"error": error, "detail": detail, **extra}, status_code=status, headers=headers
    )


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, ProblemError):
        return problem(exc.status, exc.error, exc.detail)
    for cls, (status, error) in ERROR_TABLE.items():
        if isinstance(exc, cls):
            template = _DETAILS.get(cls)
            detail = template.format(exc.args[0]) if template else str(exc)
            extra = {"problems": exc.problems} if isinstance(exc, EnvelopeError) else {}
            return problem(status, error, detail, **extra)
    if isinstance(exc, STORE_UNAVAILABLE) and not isinstance(exc, IntegrityError):
        log.warning(
            "store unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__
        )
        return problem(503, "store_unavailable", "the event store cannot be reached; retry later")
    if isinstance(exc, HTTPException):
        extra = {"problems": exc.extra} if isinstance(exc.extra, list) and exc.extra else {}
        return problem(exc.status_code, _slug(exc.status_code), str(exc.detail), **extra)
    log.error("unhandled fault on %s %s: %s", request.method, request.url.path, describe_fault(exc))
    return problem(500, "internal_error", "an internal error occurred; it has been logged")


def _slug(status: int) -> str:
    return {
        400: "bad_request",
        404: "not_found",
        405: "method_not_allowed",
        413: "body_too_large",
        415: "unsupported_media_type",
    }.get(status, f"http_{status}")
