"""Errors the domain raises (the HTTP layer maps each to a status in one table), and how a fault
in our own code is named."""

from __future__ import annotations

import traceback


class DomainError(Exception):
    """Base of the errors a caller can act on."""


class PrescriptionNotFoundError(DomainError):
    pass


class DeliveryNotFoundError(DomainError):
    pass


class DeliveryNotParkedError(DomainError):
    pass


class HistoryDamagedError(DomainError):
    """The stored events of an aggregate no longer follow each other (one missing or moved)."""


class ConcurrencyConflictError(DomainError):
    """Other writers kept moving the prescription on; the caller may retry later."""


def describe_fault(exc: BaseException) -> str:
    """Name a fault in our own code without its message, which may quote patient data."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    return f"internal error: {type(exc).__name__}{where}"
