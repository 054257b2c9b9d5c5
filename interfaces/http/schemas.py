"""The response shapes of the HTTP API, as the OpenAPI document publishes them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from domain.names import ChangeType, Status
from infrastructure.subscriptions import DESCRIPTION_MAX, DESCRIPTION_PATTERN, URL_MAX, URL_PATTERN


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenRequest(Out):
    kind: Literal["change", "cancel", "renewal"]
    request_id: str
    opened_at: str


class Anomaly(Out):
    kind: Literal["after_terminal"]
    event_id: str
    type: str


class Prescription(Out):
    """A prescription's state: the same shape in lists, the current state and `as_of`."""

    prescription_id: str
    status: Status | None
    provisional: bool
    fill_number: int
    refills_remaining: int | None
    needs_review: bool
    anomalies: list[Anomaly]
    open_requests: list[OpenRequest]
    patient: dict[str, Any] | None
    prescriber: dict[str, Any] | None
    pharmacy: dict[str, Any] | None
    medication: dict[str, Any] | None
    shipment: dict[str, Any] | None
    last_event_type: str | None
    last_occurred_at: str | None
    version: int


class PrescriptionPage(Out):
    items: list[Prescription]
    next_cursor: str | None


class HistoryEvent(Out):
    version: int
    type: str
    event_id: str
    occurred_at: str
    recorded_at: str
    sequence: int | None
    correlation: dict[str, Any]
    data: dict[str, Any]
    hash: str
    chain_ok: bool
    chain_problem: str | None


class History(Out):
    prescription_id: str
    chain_intact: bool
    events: list[HistoryEvent]


class Delivery(Out):
    event_id: str
    type: str
    subject: str
    received_at: str
    # `conflict`: processed, and the id came again with another body since (kept, flagged).
    status: Literal["received", "processed", "parked", "conflict"] | None
    reason: str | None
    conflicts: int


class ConflictingCopy(Out):
    """A body that repeated the delivery's id with other content, as it arrived."""

    received_at: str
    raw_body: str


class DeliveryDetail(Delivery):
    payload: dict[str, Any]
    raw_body: str
    conflicting_copies: list[ConflictingCopy]


class DeliveryPage(Out):
    items: list[Delivery]
    next_cursor: str | None


class Replay(Out):
    status: Literal["processed", "parked"]
    event_id: str
    reason: str | None


class ProjectionState(Out):
    name: str
    position: int
    head: int
    lag: int
    dead_letters: int


class DeadLetter(Out):
    """An event the projection set aside: which stored event, why, since when."""

    position: int
    aggregate_id: str
    aggregate_version: int
    topic: str
    reason: str
    held: bool
    attempts: int
    failed_at: str


class DeadLetterRetry(Out):
    name: str
    applied: int
    still_dead: int


class WebhookAnswer(Out):
    status: Literal["accepted", "duplicate"]
    event_id: str
    parked: bool | None = None
    reason: str | None = None
    conflict: bool | None = None


class ChangedDelivery(Out):
    event_id: str
    type: str
    subject: str
    reason: str | None = None


class Change(Out):
    """One change of the feed: a recorded fact or a signal (contract, "The change feed");
    which fields it carries depends on its type."""

    position: int
    type: ChangeType
    prescription_id: str
    event_id: str | None = None
    fact_type: str | None = None
    occurred_at: str | None = None
    anomaly: Anomaly | None = None
    request: OpenRequest | None = None
    delivery: ChangedDelivery | None = None
    recorded_at: str
    state: Prescription | None = None


class ChangePage(Out):
    items: list[Change]
    next_after: int


SubscriptionState = Literal["active", "paused", "disabled"]


class In(BaseModel):
    """A request body. Fields it does not know are ignored: the OpenAPI document cannot say
    otherwise (Litestar publishes no additionalProperties for a model), and a client must not
    be refused for what the document allows."""

    model_config = ConfigDict(extra="ignore")


class NewSubscription(In):
    """What an internal app registers: its endpoint, and which changes it wants (none listed:
    all of them)."""

    url: Annotated[str, StringConstraints(max_length=URL_MAX, pattern=URL_PATTERN)] = Field(
        examples=["https://orders.internal.example/drx-changes"]
    )
    types: list[ChangeType] = Field(default_factory=list, max_length=5)
    statuses: list[Status] = Field(default_factory=list, max_length=13)
    # What check_description (the store's) takes, said in the document too: Litestar leaves a
    # pattern out of an optional field's schema unless it is given as an extra.
    description: Annotated[
        str | None,
        Field(max_length=DESCRIPTION_MAX, json_schema_extra={"pattern": DESCRIPTION_PATTERN}),
    ] = None


class SubscriptionPatch(In):
    state: Literal["active", "paused"]


class Rewind(In):
    after: int = Field(ge=0, le=10**18)

    @field_validator("after", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        # Litestar validates bodies with strict=False, which lets a JSON true through as 1.
        if isinstance(value, bool):
            raise ValueError("after is a position, not a boolean")
        return value


class LastAttempt(Out):
    at: str
    status: int | None
    error: str | None


class SubscriptionFields(Out):
    id: str
    url: str
    description: str | None
    types: list[str]
    statuses: list[str]
    state: SubscriptionState
    position: int


class Subscription(SubscriptionFields):
    lag: int
    last_attempt: LastAttempt | None
    disabled_reason: str | None


class CreatedSubscription(SubscriptionFields):
    """The secret is shown here only: the endpoint checks our signatures with it."""

    secret: str


class Attempt(Out):
    id: int
    at: str
    position: int
    webhook_id: str
    status: int | None
    error: str | None
    duration_ms: int


class AttemptPage(Out):
    items: list[Attempt]
    next_cursor: str | None


class AccessEntry(Out):
    """One answer that carried patient or prescription data: who (the key's name), when, what."""

    at: str
    key: str
    method: str
    path: str
    status: int
    prescription_ids: list[str]
    patient_ids: list[str]


class AccessPage(Out):
    items: list[AccessEntry]
    next_cursor: str | None


class Problem(Out):
    """Every error answer."""

    error: str
    detail: str
    problems: list[dict[str, Any]] | None = None
