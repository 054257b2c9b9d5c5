"""Pydantic models of contract/drx-webhooks.md: the envelope (section 2) and each type's data (3).

Validation is strict and done on the raw JSON: a number sent as a string, or a timestamp without
an offset, breaks the contract. Unknown extra fields are tolerated everywhere.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic import create_model as _create_model
from pydantic_core import PydanticCustomError

from domain.facts import FactKind


def _in_utc(moment: datetime) -> datetime:
    """An instant that exists in UTC too: `0001-01-01T00:00:00+01:00` does not (it is in year
    0 there), and every instant is compared and shown in UTC."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant falls outside the years 1-9999 in UTC") from None
    return moment


# RFC 3339's date-time, its offset included (section 5.6; a space for the T, which it allows):
# pydantic alone also reads Unix seconds ("1741286400", even "0") and a time without seconds.
_RFC_3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
AS_ACCEPTED_BEFORE = {"instants": "as accepted before"}
"""The validation context that reads a stored body's instants as they were read when it was
accepted (the audit's reading of the facts recorded from them): before the RFC 3339 check,
pydantic's own reading, which a body stored then may rely on. Every new delivery, and every
replay (a delivery accepted anew), is read without it."""


def _rfc_3339(value: Any, read: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    """Only a JSON string, and at intake only one in RFC 3339's form; then read by pydantic's
    own parser (lax for a string: the same reading as its strict JSON mode, which the model's
    strictness would otherwise refuse for the text a wrapping validator hands on)."""
    if not isinstance(value, str):
        raise PydanticCustomError("datetime_type", "Input should be a valid datetime")
    if info.context != AS_ACCEPTED_BEFORE and not _RFC_3339.fullmatch(value):
        raise PydanticCustomError(
            "rfc_3339",
            "Input should be an RFC 3339 timestamp with its offset, e.g. 2025-03-04T15:22:10Z",
        )
    try:
        return read(value)
    except ValidationError:
        # The lax reading's error offers a date, which is never taken ("a valid datetime or
        # date, unexpected extra characters" for a 60th second): say what the strict one says.
        try:
            _STRICT.validate_json(json.dumps(value))
        except ValidationError as strict:
            (first, *_) = strict.errors(include_input=False, include_url=False)
            raise PydanticCustomError(first["type"], first["msg"]) from None
        raise


_STRICT: TypeAdapter[datetime] = TypeAdapter(AwareDatetime, config=ConfigDict(strict=True))


Instant = Annotated[
    AwareDatetime, Field(strict=False), WrapValidator(_rfc_3339), AfterValidator(_in_utc)
]
Text = Annotated[str, Field(min_length=1)]
Key = Annotated[str, Field(min_length=1, max_length=200)]
Count = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]
Number = int | float  # as sent: 30 stays 30


def _a_real_date(value: str) -> str:
    """2025-02-30 has the form, not the meaning."""
    date.fromisoformat(value)
    return value


# [0-9], not \d: pydantic's patterns take \d for any Unicode digit (٢٠٢٥-٠٣-٠٤).
Date = Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"), AfterValidator(_a_real_date)]
Party = Literal["prescriber", "pharmacy", "system"]


class Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class Correlation(Model):
    prescription_id: str | None = None
    client_reference: str | None = None
    prescriber_order_number: str | None = None
    pharmacy_rx_number: str | None = None
    ncpdp_message_id: str | None = None
    relates_to_message_id: str | None = None
    request_id: str | None = None
    supersedes_prescription_id: str | None = None


class Envelope(Model):
    """Section 2. Breaking it is a 422: the delivery is not stored, DRx must fix and resend."""

    id: Key
    type: Text
    schema_version: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=32)]
    source: Text
    occurred_at: Instant
    sent_at: Instant | None = None
    attempt: Positive | None = None
    subject: Key
    sequence: Positive | None = None
    correlation: Correlation | None = None
    data: dict[str, Any]

    @property
    def schema_major(self) -> int:
        return int(self.schema_version.split(".", 1)[0])


class Address(Model):
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None


class Patient(Model):
    drx_patient_id: Text
    first_name: str | None = None
    last_name: str | None = None
    date_of_birth: Date | None = None
    sex: str | None = None
    phone: str | None = None
    address: Address | None = None


class Prescriber(Model):
    npi: Text
    dea: str | None = None
    first_name: str | None = None
    last_name: str | None = None


class Pharmacy(Model):
    ncpdp_id: Text
    npi: str | None = None
    name: str | None = None
    phone: str | None = None
    address: Address | None = None


class Medication(Model):
    name: Text
    rxnorm_cui: str | None = None
    ndc: str | None = None
    strength: str | None = None
    dosage_form: str | None = None
    quantity: Number
    quantity_unit: str | None = None
    days_supply: Count | None = None
    refills_authorized: Count
    sig: Text
    substitutions_allowed: bool | None = None
    controlled_schedule: Literal["II", "III", "IV", "V"] | None = None


class RequestedMedication(Model):
    name: Text
    quantity: Number | None = None
    refills_authorized: Count | None = None


class Reason(Model):
    code: str | None = None
    category: str | None = None
    text: Text


class HoldReason(Reason):
    category: Literal[
        "insurance", "prior_auth", "out_of_stock", "clarification", "payment", "other"
    ]


class RejectionReason(Reason):
    category: Literal["transmission_error", "pharmacy_rejection", "validation"]


class Transmission(Model):
    status: Literal["sent", "verified"] | None = None
    ncpdp_message_id: str | None = None


class Received(Model):
    patient: Patient
    prescriber: Prescriber
    pharmacy: Pharmacy
    medication: Medication
    written_on: Date
    effective_on: Date | None = None
    expires_on: Date | None = None
    is_epcs: bool | None = None


class Sent(Model):
    pharmacy: Pharmacy | None = None
    transmission: Transmission | None = None


class Updated(Model):
    patient: Patient | None = None
    prescriber: Prescriber | None = None
    pharmacy: Pharmacy | None = None
    medication: Medication | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Updated:
        if all(
            getattr(self, name) is None
            for name in ("patient", "prescriber", "pharmacy", "medication", "notes")
        ):
            raise ValueError(
                "updated needs at least one of patient, prescriber, pharmacy, medication, notes"
            )
        return self


class ChangeRequested(Model):
    request_id: Text
    change_type: Literal["G", "T", "D", "S", "OS", "U", "P"]
    requested_medications: Annotated[list[RequestedMedication], Field(min_length=1)]
    pharmacy_note: str | None = None


class ChangeApproved(Model):
    request_id: Text
    outcome: Literal["approved", "approved_with_changes", "validated"]
    approved_medication: Medication | None = None
    new_prescription_id: str | None = None


class Denied(Model):
    request_id: Text
    reason: Reason


class CancelRequested(Model):
    request_id: Text
    requested_by: Party
    reason: Reason | None = None


class Cancelled(Model):
    cancelled_by: Party
    request_id: str | None = None
    reason: Reason | None = None


class RenewalRequested(Model):
    request_id: Text
    requested_refills: Count | None = None
    last_fill_date: Date | None = None


class RenewalApproved(Model):
    request_id: Text
    outcome: Literal["approved", "approved_with_changes", "replace"]
    refills_authorized: Count
    new_prescription_id: str | None = None


class Processing(Model):
    fill_number: Positive
    stage: Literal["in_review", "billing", "filling", "verification"]
    patient_pay: Number | None = None


class OnHold(Model):
    fill_number: Positive
    reason: HoldReason


class Dispensed(Model):
    fill_number: Positive
    dispense_status: Literal["dispensed", "partially_dispensed"]
    quantity_dispensed: Number
    refills_remaining: Count
    dispensed_at: Instant
    ndc: str | None = None
    lot_number: str | None = None


class ReadyForPickup(Model):
    fill_number: Positive
    ready_at: Instant
    pickup_location: str | None = None


class Shipped(Model):
    fill_number: Positive
    carrier: Text
    tracking_number: Text
    shipped_at: Instant
    tracking_url: str | None = None
    eta: str | None = None


class Delivered(Model):
    fill_number: Positive
    handover: Literal["delivery", "pickup"]
    delivered_at: Instant


class Transferred(Model):
    to_pharmacy: Pharmacy
    transferred_at: Instant
    from_pharmacy: Pharmacy | None = None
    new_prescription_id: str | None = None


class Rejected(Model):
    reason: RejectionReason
    retryable: bool


DATA_MODELS: dict[FactKind, type[Model]] = {
    FactKind.RECEIVED: Received,
    FactKind.SENT: Sent,
    FactKind.UPDATED: Updated,
    FactKind.CHANGE_REQUESTED: ChangeRequested,
    FactKind.CHANGE_APPROVED: ChangeApproved,
    FactKind.CHANGE_DENIED: Denied,
    FactKind.CANCEL_REQUESTED: CancelRequested,
    FactKind.CANCELLED: Cancelled,
    FactKind.CANCEL_DENIED: Denied,
    FactKind.RENEWAL_REQUESTED: RenewalRequested,
    FactKind.RENEWAL_APPROVED: RenewalApproved,
    FactKind.RENEWAL_DENIED: Denied,
    FactKind.PROCESSING: Processing,
    FactKind.ON_HOLD: OnHold,
    FactKind.DISPENSED: Dispensed,
    FactKind.READY_FOR_PICKUP: ReadyForPickup,
    FactKind.SHIPPED: Shipped,
    FactKind.DELIVERED: Delivered,
    FactKind.TRANSFERRED: Transferred,
    FactKind.REJECTED: Rejected,
}
assert set(DATA_MODELS) == set(FactKind), "every kind of fact needs its data model"

# Each type's data validated straight from the raw body, so that JSON types are checked as sent.
PAYLOAD_MODELS: dict[FactKind, type[BaseModel]] = {
    kind: _create_model(
        f"{model.__name__}Payload",
        __config__=ConfigDict(strict=True, extra="ignore"),
        data=(model, ...),
    )
    for kind, model in DATA_MODELS.items()
}
