"""The names other programs filter by: every status a prescription's state can have (contract
section 4), and every type of change on the feed (contract, "The change feed").

Plain names, importing nothing but `typing`: a process that only reads the feed (the
dispatcher's) checks a subscription's filter without loading the domain's models (pydantic's,
eventsourcing's).
"""

from typing import Literal, get_args

# Spelt out as a Literal, which the API's published types need (`interfaces/http/schemas.py`).
Status = Literal[
    "received",
    "sent",
    "processing",
    "on_hold",
    "dispensed",
    "ready_for_pickup",
    "shipped",
    "delivered",
    "completed",
    "cancelled",
    "transferred",
    "rejected",
    "error",
]
STATUSES: tuple[str, ...] = get_args(Status)

ChangeType = Literal[
    "prescription.changed",
    "prescription.needs_review",
    "prescription.request_overdue",
    "delivery.parked",
    "delivery.conflict",
]
CHANGE_TYPES: tuple[str, ...] = get_args(ChangeType)
PRESCRIPTION_CHANGED, NEEDS_REVIEW, REQUEST_OVERDUE, DELIVERY_PARKED, DELIVERY_CONFLICT = (
    CHANGE_TYPES
)
