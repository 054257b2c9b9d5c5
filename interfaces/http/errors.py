"""One table from errors to HTTP statuses, and the JSON problem body every error answer carries."""

from __future__ import annotations

import logging
import re
import sqlite3
from typing import Any

import psycopg
import psycopg_pool
from eventsourcing.persistence import IntegrityError, PersistenceError
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from domain.errors import (
    ConcurrencyConflictError,
    DeliveryNotFoundError,
    DeliveryNotParkedError,
    HistoryDamagedError,
    PrescriptionNotFoundError,
    describe_fault,
)
from infrastructure.database import StoreNotReadyError
from infrastructure.subscriptions import SubscriptionError, SubscriptionNotFoundError
from interfaces.drx.signature import SignatureError
from interfaces.drx.translator import EnvelopeError, NotAJsonObjectError
from interfaces.http.metrics import OUTCOME_KEY

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5


class ProblemError(Exception):
    """An error answer decided by a handler: status, a short code and a sentence."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


# exception class -> (status, error code, detail template filled with the exception's argument)
ERROR_TABLE: dict[type[Exception], tuple[int, str, str | None]] = {
    NotAJsonObjectError: (400, "not_a_json_object", None),
    SignatureError: (401, "invalid_signature", None),
    PrescriptionNotFoundError: (404, "prescription_not_found", "no prescription with id {}"),
    DeliveryNotFoundError: (404, "delivery_not_found", "no delivery with event id {}"),
    DeliveryNotParkedError: (409, "delivery_not_parked", "delivery {} is not parked"),
    SubscriptionNotFoundError: (404, "subscription_not_found", "no subscription with id {}"),
    SubscriptionError: (400, "invalid_parameter", None),
    EnvelopeError: (422, "invalid_envelope", None),
    HistoryDamagedError: (
        500,
        "history_damaged",
        "the stored history of {} is damaged: run drx audit verify",
    ),
    # A batch that does not commit within the committer's wait: the store is too slow now.
    TimeoutError: (503, "busy", "the store did not take the delivery in time; retry later"),
    ConcurrencyConflictError: (
        503,
        "busy",
        "too many concurrent writes to the prescription of delivery {}",
    ),
}
# What a store that cannot be reached, or cannot take a write now, raises through each layer.
STORE_UNAVAILABLE: tuple[type[Exception], ...] = (
    PersistenceError,
    StoreNotReadyError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg_pool.PoolTimeout,
    sqlite3.OperationalError,
)
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


class _Said(dict[int, str]):
    """What a framework refusal says, by status; a sentence for any status not listed."""

    def __missing__(self, status: int) -> str:
        return f"the request was refused ({status})"


_SAID = _Said(
    {
        400: "the request is not one this API takes",
        401: "a valid API key is required: Authorization: Bearer <key>",
        404: "there is nothing at this path",
        405: "this path does not take that method: see the Allow header",
        413: "the body is over 1 MiB",
        415: "the body's media type is not one this path takes",
    }
)


def _invalid_parameters(exc: ValidationException) -> Response[dict[str, Any]]:
    """The framework's parameter check, in our shape: which parameter and what is wrong with it,
    never the value given (the query string may hold a patient id)."""
    found = exc.extra if isinstance(exc.extra, list) else []
    problems = [
        {"field": str(item.get("key", "?")), "problem": _without_value(str(item.get("message")))}
        for item in found
        if isinstance(item, dict)
    ]
    names = ", ".join(p["field"] for p in problems) or "a parameter"
    return problem(400, "invalid_parameter", f"invalid: {names}", problems=problems)


# pydantic's messages about a body name what is allowed, never what was sent: kept whole.
_ALLOWED_NAMED = ("Input should be", "String should match pattern", "String should have at most")


def _without_value(message: str) -> str:
    """`Invalid enum value 'bogus'` (or `"it's"`) quotes what was sent: keep the sentence, not
    the value."""
    if message.startswith(_ALLOWED_NAMED):
        return message[:400]
    if message == "'data'":  # Litestar's way of saying that the body was missing
        return "a JSON body is required"
    return re.split(r" ['\"]", message, maxsplit=1)[0]


def problem(
    status: int,
    error: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    """Every error answer's one shape: `{"error", "detail"}`, plus `problems` where there are
    several, each `{"field", "problem"}`."""
    headers = dict(headers or {})
    if status in (429, 503):
        headers["Retry-After"] = str(RETRY_AFTER_S)
    if error == "unauthorized":
        headers["WWW-Authenticate"] = "Bearer"
    body = {"error": error, "detail": detail, **extra}
    return Response(body, status_code=status, headers=headers)


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    response = _answer(request, exc)
    # The webhook's metrics label each refusal by its error code (see metrics.webhook_timing).
    request.scope.setdefault("state", {})[OUTCOME_KEY] = response.content["error"]
    return response


def _answer(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, ProblemError):
        return problem(exc.status, exc.error, exc.detail)
    for cls, (status, error, template) in ERROR_TABLE.items():
        if isinstance(exc, cls):
            # An argument only where the template has its place: asyncio's TimeoutError has none.
            detail = template.format(*exc.args[:1]) if template else str(exc)
            if isinstance(exc, EnvelopeError):
                return problem(status, error, detail, problems=exc.problems)
            return problem(status, error, detail)
    if isinstance(exc, STORE_UNAVAILABLE) and not isinstance(exc, IntegrityError):
        log.warning(
            "store unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__
        )
        return problem(503, "store_unavailable", "the event store cannot be reached; retry later")
    if isinstance(exc, ValidationException):
        return _invalid_parameters(exc)
    if isinstance(exc, HTTPException):
        # The framework's own answers (404, 405 with its Allow header, 413...), in our shape.
        status = exc.status_code
        headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
        return problem(status, _HTTP_CODES.get(status, f"http_{status}"), _SAID[status], headers)
    log.error("unhandled fault on %s %s: %s", request.method, request.url.path, describe_fault(exc))
    return problem(500, "internal_error", "an internal error occurred; it has been logged")
