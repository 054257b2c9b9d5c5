"""The names other programs filter by: every status a prescription's state can have (contract
section 4), and every type of change on the feed (contract, "The change feed").

Plain names, importing nothing: a process that only reads the feed (the dispatcher's) checks a
subscription's filter without loading the domain's models (pydantic's, eventsourcing's).
"""

STATUSES = (
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
)

PRESCRIPTION_CHANGED = "prescription.changed"
NEEDS_REVIEW = "prescription.needs_review"
REQUEST_OVERDUE = "prescription.request_overdue"
DELIVERY_PARKED = "delivery.parked"
DELIVERY_CONFLICT = "delivery.conflict"
CHANGE_TYPES = (
    PRESCRIPTION_CHANGED,
    NEEDS_REVIEW,
    REQUEST_OVERDUE,
    DELIVERY_PARKED,
    DELIVERY_CONFLICT,
)
