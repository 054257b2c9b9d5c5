"""What each kind of fact says, in the domain's own words: typed values that the anti-corruption
layer (`interfaces/drx/`) makes from DRx's payloads, and that the state, the read models and the
FHIR view read.

The domain requires only what it reasons with (a fill's number, the refills left, a request's
id, whether a rejection can be retried); everything else DRx's contract promises is checked at
the boundary, where the contract lives, and is optional here. The words coincide with contract
v1's today, so a stored fact's `data` reads back as is; when DRx's payloads change, only the
translator does. A fact is stored as its `document` (`to_document`), the JSON form of these
values; values a document does not name are ignored when it is read (`facts.read_data`), so
facts stored with more (as they were, before this vocabulary) still read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# The parties and the medication, as a prescription's details.


class Address(Value):
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None


class Patient(Value):
    drx_patient_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    date_of_birth: str | None = None
    sex: str | None = None
    phone: str | None = None
    address: Address | None = None


class Prescriber(Value):
    npi: str | None = None
    dea: str | None = None
    first_name: str | None = None
    last_name: str | None = None


class Pharmacy(Value):
    ncpdp_id: str | None = None
    npi: str | None = None
    name: str | None = None
    phone: str | None = None
    address: Address | None = None


class Medication(Value):
    name: str | None = None
    rxnorm_cui: str | None = None
    ndc: str | None = None
    strength: str | None = None
    dosage_form: str | None = None
    quantity: int | float | None = None
    quantity_unit: str | None = None
    days_supply: int | None = None
    refills_authorized: int | None = None
    sig: str | None = None
    substitutions_allowed: bool | None = None
    controlled_schedule: str | None = None


class Reason(Value):
    text: str | None = None
    code: str | None = None
    category: str | None = None


class Transmission(Value):
    status: str | None = None
    ncpdp_message_id: str | None = None


# What each kind of fact says.


class Received(Value):
    patient: Patient | None = None
    prescriber: Prescriber | None = None
    pharmacy: Pharmacy | None = None
    medication: Medication | None = None
    written_on: str | None = None
    effective_on: str | None = None
    expires_on: str | None = None
    is_epcs: bool | None = None


class Sent(Value):
    pharmacy: Pharmacy | None = None
    transmission: Transmission | None = None


class Updated(Value):
    patient: Patient | None = None
    prescriber: Prescriber | None = None
    pharmacy: Pharmacy | None = None
    medication: Medication | None = None
    notes: str | None = None


class ChangeRequested(Value):
    request_id: str
    change_type: str | None = None
    requested_medications: tuple[Medication, ...] = ()
    pharmacy_note: str | None = None


class ChangeApproved(Value):
    request_id: str | None = None
    outcome: str | None = None
    approved_medication: Medication | None = None
    new_prescription_id: str | None = None


class Denied(Value):
    """A change, cancel or renewal request denied."""

    request_id: str | None = None
    reason: Reason | None = None


class CancelRequested(Value):
    request_id: str
    requested_by: str | None = None
    reason: Reason | None = None


class Cancelled(Value):
    cancelled_by: str | None = None
    request_id: str | None = None
    reason: Reason | None = None


class RenewalRequested(Value):
    request_id: str
    requested_refills: int | None = None
    last_fill_date: str | None = None


class RenewalApproved(Value):
    request_id: str | None = None
    outcome: str | None = None
    refills_authorized: int
    new_prescription_id: str | None = None


class Processing(Value):
    fill_number: int
    stage: str | None = None
    patient_pay: int | float | None = None


class OnHold(Value):
    fill_number: int
    reason: Reason | None = None


class Dispensed(Value):
    fill_number: int
    dispense_status: str | None = None
    quantity_dispensed: int | float | None = None
    refills_remaining: int
    dispensed_at: datetime | None = None
    ndc: str | None = None
    lot_number: str | None = None


class ReadyForPickup(Value):
    fill_number: int
    ready_at: datetime | None = None
    pickup_location: str | None = None


class Shipped(Value):
    fill_number: int
    carrier: str | None = None
    tracking_number: str | None = None
    shipped_at: datetime | None = None
    tracking_url: str | None = None
    eta: str | None = None


class Delivered(Value):
    fill_number: int
    handover: str | None = None
    delivered_at: datetime | None = None


class Transferred(Value):
    to_pharmacy: Pharmacy | None = None
    transferred_at: datetime | None = None
    from_pharmacy: Pharmacy | None = None
    new_prescription_id: str | None = None


class Rejected(Value):
    reason: Reason | None = None
    retryable: bool


FactData = (
    Received
    | Sent
    | Updated
    | ChangeRequested
    | ChangeApproved
    | Denied
    | CancelRequested
    | Cancelled
    | RenewalRequested
    | RenewalApproved
    | Processing
    | OnHold
    | Dispensed
    | ReadyForPickup
    | Shipped
    | Delivered
    | Transferred
    | Rejected
)


def canonical_json(value: Mapping[str, Any]) -> str:
    """The one text form a fact's content is stored and hashed in (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def to_document(value: Value) -> dict[str, Any]:
    """The JSON form a value is stored and shown in: only what it holds (no nulls)."""
    return value.model_dump(mode="json", exclude_none=True)
