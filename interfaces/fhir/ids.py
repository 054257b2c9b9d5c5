"""FHIR ids made from DRx ids, and the DRx ids read back from them, with no lookup table.

A FHIR id is 1 to 64 of `A-Z a-z 0-9 - .`; a DRx id is any text of 1 to 200 characters. The id
is the DRx id *escaped*: ASCII letters and digits as they are, `_` as `-`, and every other
character as `.` and two upper-case hex digits per UTF-8 byte (`drx_rx_7Q2M9K` is
`drx-rx-7Q2M9K`, `rx/1` is `rx.2F1`). Each DRx id has one escaped form and each escaped form one
DRx id, so the DRx id is read back from the FHIR id alone, and an id written any other way
(`drx.5Frx`) is no id of ours.

A prescription whose escaped id would be longer than 64 characters is named instead by `.Z` and
the 32 hex digits of its aggregate id (`.Z` is never an escape), which the read table holds as
its key. A patient id that long has no FHIR id: the patient is referenced by identifier only.
A fill's MedicationDispense is its MedicationRequest's id, `.` and the fill number.
"""

from __future__ import annotations

import re
from uuid import UUID

from domain.ids import prescription_id as aggregate_id_of

MAX_LENGTH = 64
_VALID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_PLAIN = re.compile(r"[A-Za-z0-9_]+")
_HEX = re.compile(r"[0-9A-F]{2}")
_BY_AGGREGATE = ".Z"
_AGGREGATE_DIGITS = re.compile(r"[0-9a-f]{32}")


def escaped(drx_id: str) -> str:
    """The DRx id in FHIR id characters (one-to-one; its length is not checked)."""
    if _PLAIN.fullmatch(drx_id):
        return drx_id.replace("_", "-")
    return "".join(_escape_character(character) for character in drx_id)


def _escape_character(character: str) -> str:
    if character == "_":
        return "-"
    if character.isascii() and character.isalnum():
        return character
    return "".join(f".{byte:02X}" for byte in character.encode())


def unescaped(fhir_id: str) -> str | None:
    """The DRx id a FHIR id is the escaped form of, or None when it is no escaped form."""
    if not _VALID.fullmatch(fhir_id):
        return None
    if "." not in fhir_id:
        return fhir_id.replace("-", "_")
    found = bytearray()
    at = 0
    while at < len(fhir_id):
        character = fhir_id[at]
        if character == ".":
            if not _HEX.fullmatch(fhir_id, at + 1, at + 3):
                return None
            found.append(int(fhir_id[at + 1 : at + 3], 16))
            at += 3
            continue
        found.extend(b"_" if character == "-" else character.encode())
        at += 1
    try:
        drx_id = found.decode()
    except UnicodeDecodeError:
        return None
    return drx_id if escaped(drx_id) == fhir_id else None


def medication_request_id(prescription_id: str) -> str:
    """The FHIR id of a prescription's MedicationRequest."""
    id_ = escaped(prescription_id)
    return id_ if len(id_) <= MAX_LENGTH else _BY_AGGREGATE + aggregate_id_of(prescription_id).hex


def prescription_key(fhir_id: str) -> str | UUID | None:
    """What a MedicationRequest id names: the DRx prescription id, or, for a prescription whose
    id is too long to escape, its aggregate id (the caller checks that the prescription found
    has this FHIR id); None when it is no id of ours."""
    digits = fhir_id.removeprefix(_BY_AGGREGATE)
    if digits == fhir_id:
        return unescaped(fhir_id)
    return UUID(hex=digits) if _AGGREGATE_DIGITS.fullmatch(digits) else None


def patient_fhir_id(drx_patient_id: str) -> str | None:
    """The FHIR id of a DRx patient, or None when the escaped id is too long to be one."""
    id_ = escaped(drx_patient_id)
    return id_ if len(id_) <= MAX_LENGTH else None


def patient_key(fhir_id: str) -> str | None:
    """The DRx patient id a Patient id names, or None when it is no id of ours."""
    return unescaped(fhir_id)


def medication_dispense_id(prescription_id: str, fill_number: int) -> str:
    """The FHIR id of a fill's MedicationDispense (the aggregate form when the escaped one
    leaves no room for the fill's number)."""
    suffix = f".{fill_number}"
    id_ = medication_request_id(prescription_id) + suffix
    if len(id_) <= MAX_LENGTH:
        return id_
    return _BY_AGGREGATE + aggregate_id_of(prescription_id).hex + suffix
