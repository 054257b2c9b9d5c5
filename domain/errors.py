"""Errors the domain raises; the HTTP layer maps each to a status in one table."""


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
