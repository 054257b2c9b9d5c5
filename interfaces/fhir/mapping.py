"""The FHIR R4 view of a prescription (service-interface.md, "FHIR R4 view"): its state as a
MedicationRequest, its patient as a Patient, each fill as a MedicationDispense derived from the
facts, and its history as one MedicationRequest per recorded fact.

Pure: the resources are plain dicts in FHIR's JSON shape, made from the state's JSON shape (what
the read table stores) or from the facts; no I/O, and no model validation at request time (the
tests validate every shape with fhir.resources). What the state does not know is left out, but
for the two elements R4 requires of a MedicationRequest (`subject`, `medication[x]`), which then
carry the data-absent-reason extension (a provisional prescription, before its `received`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from domain import fact_data as said
from domain.facts import Fact, FactKind
from domain.instants import format_instant, sortable_instant
from domain.names import STATUSES
from domain.prescription import RecordedFact
from domain.state import PrescriptionState, derive_state, extend_state, ordered
from interfaces.fhir.ids import medication_dispense_id, medication_request_id, patient_fhir_id

Resource = dict[str, Any]

PRESCRIPTION_SYSTEM = "urn:drx:prescription-id"
PATIENT_SYSTEM = "urn:drx:patient-id"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
NCPDP_SYSTEM = "urn:drx:ncpdp-id"
RXNORM_SYSTEM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NDC_SYSTEM = "http://hl7.org/fhir/sid/ndc"
FILL_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# A version's provenance: the DRx event (envelope `id`) whose fact made it (`meta.source`).
EVENT_SOURCE = "urn:drx:event:"
_DATA_ABSENT: Resource = {
    "extension": [
        {
            "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
            "valueCode": "unknown",
        }
    ]
}

# The contract's table: the state's `status` -> MedicationRequest.status.
MEDICATION_REQUEST_STATUS: Mapping[str | None, str] = {
    None: "unknown",
    "received": "active",
    "sent": "active",
    "processing": "active",
    "dispensed": "active",
    "ready_for_pickup": "active",
    "shipped": "active",
    "delivered": "active",
    "on_hold": "on-hold",
    "error": "on-hold",
    "completed": "completed",
    "cancelled": "cancelled",
    "transferred": "stopped",
    "rejected": "stopped",
}
assert set(MEDICATION_REQUEST_STATUS) == {None, *STATUSES}, "every state status needs its code"
# R4's MedicationRequest.status codes (draft and entered-in-error are never ours).
MEDICATION_REQUEST_STATUSES = (
    "active",
    "on-hold",
    "cancelled",
    "completed",
    "entered-in-error",
    "stopped",
    "draft",
    "unknown",
)

# The contract's table: a fill's latest status-changing fact -> MedicationDispense.status.
_FILL_STATUS: Mapping[FactKind, str] = {
    FactKind.PROCESSING: "preparation",
    FactKind.ON_HOLD: "on-hold",
    FactKind.DISPENSED: "in-progress",
    FactKind.READY_FOR_PICKUP: "in-progress",
    FactKind.SHIPPED: "in-progress",
    FactKind.DELIVERED: "completed",
}
# ... and the facts that end the fill under way (not one already completed). The contract
# names cancelled and rejected; a transfer stops it.
_FILL_ENDED: Mapping[FactKind, str] = {
    FactKind.CANCELLED: "cancelled",
    FactKind.REJECTED: "declined",
    FactKind.TRANSFERRED: "stopped",
}


def state_statuses(code: str) -> frozenset[str | None]:
    """The state statuses a MedicationRequest.status code stands for (None: no status yet)."""
    return frozenset(s for s, mapped in MEDICATION_REQUEST_STATUS.items() if mapped == code)


def medication_request(
    state: Mapping[str, Any], last_updated: str, event_id: str | None = None
) -> Resource:
    """A prescription's state (its JSON shape) as a MedicationRequest: `meta.versionId` the
    state's version, `meta.lastUpdated` when its last fact was recorded, `meta.source` the DRx
    event of the fact that made this version, when known."""
    prescription_id, status = state["prescription_id"], state["status"]
    medication = state.get("medication") or {}
    meta = {"versionId": str(state["version"]), "lastUpdated": last_updated}
    if event_id is not None:
        meta["source"] = EVENT_SOURCE + quote(event_id, safe="")
    return _present(
        {
            "resourceType": "MedicationRequest",
            "id": medication_request_id(prescription_id),
            "meta": meta,
            "identifier": [{"system": PRESCRIPTION_SYSTEM, "value": prescription_id}],
            "status": MEDICATION_REQUEST_STATUS[status],
            "statusReason": {"text": status} if status in ("transferred", "rejected") else None,
            "intent": "order",
            "medicationCodeableConcept": _medication(medication) or _DATA_ABSENT,
            "subject": _patient_reference(state.get("patient")) or _DATA_ABSENT,
            "requester": _prescriber_reference(state.get("prescriber")),
            "dosageInstruction": [{"text": medication["sig"]}] if medication.get("sig") else None,
            "dispenseRequest": _dispense_request(medication, state.get("pharmacy")),
            "substitution": _substitution(medication.get("substitutions_allowed")),
        }
    )


def medication_request_versions(
    prescription_id: str, recorded: Sequence[RecordedFact]
) -> list[Resource]:
    """One MedicationRequest per recorded fact, oldest first: version N is the state from the
    first N facts recorded (what `as_of` that fact's recorded time shows)."""
    return [
        medication_request_version(prescription_id, recorded[:number])
        for number in range(1, len(recorded) + 1)
    ]


def medication_request_version(prescription_id: str, recorded: Sequence[RecordedFact]) -> Resource:
    """The version the recorded facts make: the last one's (its recorded time, its event)."""
    last = recorded[-1]
    return medication_request(
        derive_state(prescription_id, [r.fact for r in recorded]).as_dict(),
        sortable_instant(last.recorded_at),
        last.fact.event_id,
    )


# DRx's `sex` (the contract does not say its codes) -> Patient.gender.
_GENDER = {
    "f": "female",
    "female": "female",
    "m": "male",
    "male": "male",
    "o": "other",
    "x": "other",
    "other": "other",
    "u": "unknown",
    "unknown": "unknown",
}


def patient(details: Mapping[str, Any], last_updated: str) -> Resource:
    """A prescription's patient (the state's `patient`, which has a `drx_patient_id`)."""
    drx_patient_id = details["drx_patient_id"]
    address = _address(details.get("address") or {})
    return _present(
        {
            "resourceType": "Patient",
            "id": patient_fhir_id(drx_patient_id),
            "meta": {"lastUpdated": last_updated},
            "identifier": [{"system": PATIENT_SYSTEM, "value": drx_patient_id}],
            "name": _human_name(details.get("first_name"), details.get("last_name")),
            "telecom": [{"system": "phone", "value": details["phone"]}]
            if details.get("phone")
            else None,
            "gender": _GENDER.get((details.get("sex") or "").strip().lower()),
            "birthDate": details.get("date_of_birth"),
            "address": [address] if address else None,
        }
    )


def medication_dispenses(prescription_id: str, facts: Iterable[Fact]) -> list[Resource]:
    """One MedicationDispense per fill, in fill order: a pure function of the facts, in contract
    order, so any arrival order (and any repeat) gives the same resources. A fact the state
    sets aside (after a terminal one: contract 4.4) changes no fill either."""
    return [
        _dispense(prescription_id, fill)
        for fill in sorted(_fills(prescription_id, facts).values(), key=lambda f: f.number)
    ]


@dataclass
class _Fill:
    """A fill as its facts so far tell it (private to one call of `medication_dispenses`)."""

    number: int
    details: PrescriptionState
    status: str = "preparation"
    reason: str | None = None
    quantity: int | float | None = None
    partial: bool = False
    ndc: str | None = None
    prepared: datetime | None = None
    handed_over: datetime | None = None

    def report(self, fact: Fact, state: PrescriptionState) -> None:
        """The fill after one more of its facts; its details as the state holds them then."""
        self.details = state
        self.status = _FILL_STATUS.get(fact.kind) or _FILL_ENDED[fact.kind]
        self.reason = _reason_of(fact)
        match fact.data:
            case said.Dispensed() as dispensed:
                self.quantity = dispensed.quantity_dispensed
                self.partial = dispensed.dispense_status == "partially_dispensed"
                self.ndc = dispensed.ndc or self.ndc
                self.prepared = dispensed.dispensed_at or self.prepared
            case said.Delivered() as delivered:
                self.handed_over = delivered.delivered_at or self.handed_over


def _fills(prescription_id: str, facts: Iterable[Fact]) -> dict[int, _Fill]:
    state = derive_state(prescription_id, ())
    fills: dict[int, _Fill] = {}
    for fact in ordered(facts):
        before, state = state, extend_state(state, fact)
        if len(state.anomalies) > len(before.anomalies):
            continue  # ordered after a terminal fact: recorded, but it changes nothing
        if fact.kind in _FILL_STATUS:
            number = vars(fact.data)["fill_number"]  # every fill fact's data requires it
            fills.setdefault(number, _Fill(number, state)).report(fact, state)
        elif fact.kind in _FILL_ENDED:
            under_way = fills.get(before.fill_number)
            if under_way is not None and under_way.status != "completed":
                under_way.report(fact, state)
    return fills


def _reason_of(fact: Fact) -> str | None:
    """Why a fill is on hold, declined, cancelled or stopped; None for the other statuses."""
    if fact.kind is FactKind.TRANSFERRED:
        return "transferred"
    reason = vars(fact.data).get("reason")  # on hold, rejected, cancelled: DRx's words
    return reason.text if isinstance(reason, said.Reason) else None


def _dispense(prescription_id: str, fill: _Fill) -> Resource:
    details = fill.details
    medication = _document(details.medication)
    pharmacy = _pharmacy_reference(_document(details.pharmacy))
    return _present(
        {
            "resourceType": "MedicationDispense",
            "id": medication_dispense_id(prescription_id, fill.number),
            "status": fill.status,
            "statusReasonCodeableConcept": {"text": fill.reason} if fill.reason else None,
            "type": {"coding": [{"system": FILL_TYPE_SYSTEM, "code": _fill_type(fill)}]},
            "medicationCodeableConcept": _medication(medication, fill.ndc) or _DATA_ABSENT,
            "subject": _patient_reference(_document(details.patient)),
            "performer": [{"actor": pharmacy}] if pharmacy else None,
            "authorizingPrescription": [
                {"reference": f"MedicationRequest/{medication_request_id(prescription_id)}"}
            ],
            "quantity": _quantity(fill.quantity, medication.get("quantity_unit")),
            "whenPrepared": format_instant(fill.prepared) if fill.prepared else None,
            "whenHandedOver": format_instant(fill.handed_over) if fill.handed_over else None,
        }
    )


def _fill_type(fill: _Fill) -> str:
    """HL7 v3 ActPharmacySupplyType: first fill or refill, and whether it was a partial one."""
    return ("FF" if fill.number == 1 else "RF") + ("P" if fill.partial else "")


def _document(value: said.Value | None) -> dict[str, Any]:
    return said.to_document(value) if value is not None else {}


# The parts, each None when the state does not know it.


def _medication(medication: Mapping[str, Any], ndc: str | None = None) -> Resource | None:
    coding = []
    if medication.get("rxnorm_cui"):
        coding.append({"system": RXNORM_SYSTEM, "code": medication["rxnorm_cui"]})
    if ndc or medication.get("ndc"):
        coding.append({"system": NDC_SYSTEM, "code": ndc or medication["ndc"]})
    concept = _present({"coding": coding or None, "text": medication.get("name")})
    return concept or None


def _patient_reference(details: Mapping[str, Any] | None) -> Resource | None:
    drx_patient_id = (details or {}).get("drx_patient_id")
    if not drx_patient_id:
        return None
    identifier = {"system": PATIENT_SYSTEM, "value": drx_patient_id}
    fhir_id = patient_fhir_id(drx_patient_id)
    if fhir_id is None:  # an id too long to be a FHIR id: a reference by identifier only
        return {"identifier": identifier}
    return {"reference": f"Patient/{fhir_id}", "identifier": identifier}


def _prescriber_reference(prescriber: Mapping[str, Any] | None) -> Resource | None:
    prescriber = prescriber or {}
    npi = prescriber.get("npi")
    name = _full_name(prescriber.get("first_name"), prescriber.get("last_name"))
    if not npi and not name:
        return None
    return _present(
        {
            "type": "Practitioner",
            "identifier": {"system": NPI_SYSTEM, "value": npi} if npi else None,
            "display": name,
        }
    )


def _pharmacy_reference(pharmacy: Mapping[str, Any] | None) -> Resource | None:
    pharmacy = pharmacy or {}
    ncpdp_id, name = pharmacy.get("ncpdp_id"), pharmacy.get("name")
    if not ncpdp_id and not name:
        return None
    return _present(
        {
            "type": "Organization",
            "identifier": {"system": NCPDP_SYSTEM, "value": ncpdp_id} if ncpdp_id else None,
            "display": name,
        }
    )


def _dispense_request(
    medication: Mapping[str, Any], pharmacy: Mapping[str, Any] | None
) -> Resource | None:
    days = medication.get("days_supply")
    request = _present(
        {
            "numberOfRepeatsAllowed": medication.get("refills_authorized"),
            "quantity": _quantity(medication.get("quantity"), medication.get("quantity_unit")),
            "expectedSupplyDuration": {
                "value": days,
                "unit": "days",
                "system": "http://unitsofmeasure.org",
                "code": "d",
            }
            if days is not None
            else None,
            "performer": _pharmacy_reference(pharmacy),
        }
    )
    return request or None


def _quantity(value: int | float | None, unit: str | None) -> Resource | None:
    return None if value is None else _present({"value": value, "unit": unit})


def _substitution(allowed: bool | None) -> Resource | None:
    return None if allowed is None else {"allowedBoolean": allowed}


def _human_name(first: str | None, last: str | None) -> list[Resource] | None:
    name = _present({"family": last, "given": [first] if first else None})
    return [name] if name else None


def _full_name(first: str | None, last: str | None) -> str | None:
    return " ".join(part for part in (first, last) if part) or None


def _address(address: Mapping[str, Any]) -> Resource:
    lines = [line for line in (address.get("line1"), address.get("line2")) if line]
    return _present(
        {
            "line": lines or None,
            "city": address.get("city"),
            "state": address.get("state"),
            "postalCode": address.get("postal_code"),
        }
    )


def _present(fields: dict[str, Any]) -> Resource:
    """The fields that hold something (FHIR has no nulls, and no empty elements)."""
    return {name: value for name, value in fields.items() if value is not None}
