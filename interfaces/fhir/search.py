"""The FHIR searches' parameters read into what the read tables are asked: a search, or a 400
that names the parameter at fault (never its value, which may be a patient id).

Each parameter is given at most once, but `_lastUpdated`, twice for a range; a parameter this
view does not support (a modifier such as `status:not` included) is refused, not ignored."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from infrastructure.queries import PrescriptionFilter
from interfaces.fhir.bundles import SEARCH_PARAMETERS
from interfaces.fhir.ids import patient_key
from interfaces.fhir.mapping import MEDICATION_REQUEST_STATUSES, PRESCRIPTION_SYSTEM, state_statuses
from interfaces.http.errors import ProblemError
from interfaces.http.pagination import parse_instant

DEFAULT_COUNT, MAX_COUNT = 50, 500
_PAGING = ("_count", "_cursor")
_MAX_CURSOR = 200
_NAME_SHOWN = 40  # characters of an unknown parameter's name quoted back
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# _lastUpdated's prefixes: the comparison with an instant, and with a day (its start, its end).
_INSTANT_COMPARISON = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_DAY_COMPARISON = {"gt": (">=", 1), "ge": (">=", 0), "lt": ("<", 0), "le": ("<", 1)}


@dataclass(frozen=True)
class PrescriptionSearch:
    """A MedicationRequest search: the read table's filter, or `nothing` when a parameter can
    match no prescription of ours (another identifier system, a patient with no FHIR id)."""

    where: PrescriptionFilter
    count: int
    cursor: str | None
    nothing: bool = False


def prescription_search(query: Iterable[tuple[str, str]]) -> PrescriptionSearch:
    given = _given(query, SEARCH_PARAMETERS["MedicationRequest"], _PAGING)
    prescription_id, patient_id, statuses, nothing = None, None, None, False
    if "identifier" in given:
        prescription_id = _identifier(given["identifier"][0])
        nothing |= prescription_id is None
    if "patient" in given:
        patient_id = patient_key(_reference("patient", given["patient"][0], "Patient"))
        nothing |= patient_id is None
    if "status" in given:
        statuses = _statuses(given["status"][0])
        nothing |= not statuses
    where = PrescriptionFilter(
        prescription_id=prescription_id,
        patient_id=patient_id,
        statuses=statuses,
        updated=tuple(_last_updated(value) for value in given.get("_lastUpdated", [])),
    )
    return PrescriptionSearch(where, _count(given), _cursor(given), nothing)


def dispense_search(query: Iterable[tuple[str, str]]) -> str:
    """The MedicationRequest id a MedicationDispense search names."""
    given = _given(query, SEARCH_PARAMETERS["MedicationDispense"], ())
    if "prescription" not in given:
        raise _invalid("prescription is required: MedicationRequest/<id>")
    return _reference("prescription", given["prescription"][0], "MedicationRequest")


def _given(
    query: Iterable[tuple[str, str]], parameters: Mapping[str, str], paging: tuple[str, ...]
) -> dict[str, list[str]]:
    given: dict[str, list[str]] = defaultdict(list)
    for name, value in query:
        given[name].append(value)
    unknown = sorted(
        name[:_NAME_SHOWN] for name in given if name not in parameters and name not in paging
    )
    if unknown:
        raise _invalid(f"not a search parameter of this resource: {', '.join(unknown)}")
    for name, values in given.items():
        if len(values) > (2 if name == "_lastUpdated" else 1):
            raise _invalid(f"{name} is given more times than it can be")
    return given


def _identifier(token: str) -> str | None:
    """`urn:drx:prescription-id|<id>` or `<id>`; None for another system (or none, `|<id>`)."""
    system, bar, value = token.partition("|")
    if not bar:
        system, value = PRESCRIPTION_SYSTEM, token
    if not value:
        raise _invalid("identifier must be urn:drx:prescription-id|<id> or <id>")
    return value if system == PRESCRIPTION_SYSTEM else None


def _reference(name: str, value: str, kind: str) -> str:
    """The id of a reference given as `<kind>/<id>` or `<id>`."""
    id_ = value.removeprefix(f"{kind}/")
    if not id_ or "/" in id_:
        raise _invalid(f"{name} must be {kind}/<id> or <id>")
    return id_


def _statuses(codes: str) -> frozenset[str | None]:
    given = codes.split(",")
    if any(code not in MEDICATION_REQUEST_STATUSES for code in given):
        raise _invalid(f"status must be one or more of {', '.join(MEDICATION_REQUEST_STATUSES)}")
    return frozenset().union(*(state_statuses(code) for code in given))


def _last_updated(value: str) -> tuple[str, datetime]:
    """A bound on when the last fact was recorded: (comparison, instant)."""
    # An offset's `+` sent unescaped reaches us as a space (form encoding): taken back.
    prefix, moment = value[:2], value[2:].replace(" ", "+")
    if prefix not in _INSTANT_COMPARISON:
        raise _invalid("_lastUpdated must start with gt, ge, lt or le")
    if _DAY.fullmatch(moment):  # a day, in UTC: gt is after its end, ge from its start...
        try:
            day = date.fromisoformat(moment)
        except ValueError:
            raise _invalid("_lastUpdated's date must be a day, YYYY-MM-DD") from None
        comparison, days = _DAY_COMPARISON[prefix]
        return comparison, datetime.combine(day, time(), UTC) + timedelta(days=days)
    return _INSTANT_COMPARISON[prefix], parse_instant("_lastUpdated", moment)


def _count(given: Mapping[str, list[str]]) -> int:
    if "_count" not in given:
        return DEFAULT_COUNT
    text = given["_count"][0]
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_COUNT:
        raise _invalid(f"_count must be a whole number from 1 to {MAX_COUNT}")
    return int(text)


def _cursor(given: Mapping[str, list[str]]) -> str | None:
    cursor = given.get("_cursor", [""])[0]
    if len(cursor) > _MAX_CURSOR:
        raise _invalid("_cursor is not a cursor of this search: take the next link's")
    return cursor or None


def _invalid(detail: str) -> ProblemError:
    return ProblemError(400, "invalid_parameter", detail)
