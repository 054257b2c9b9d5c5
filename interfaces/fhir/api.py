"""The FHIR R4 paths, under `/fhir/r4` with the `read` scope: resources, Bundles and errors (an
OperationOutcome) in `application/fhir+json`.

A read is one indexed query of the read table, its stored state mapped by `mapping` and encoded
with msgspec; nothing is validated against FHIR models at request time. History and fills come
from the event store. Every answer carrying patient data is logged for the PHI access log, by
DRx ids. These paths are left out of the OpenAPI document: FHIR clients read the
CapabilityStatement (`/fhir/r4/metadata`), and OpenAPI cannot say FHIR's search syntax."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import quote, urlencode
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from domain.errors import PrescriptionNotFoundError
from domain.prescription import RecordedFact
from infrastructure.queries import StoredPrescription
from interfaces.bootstrap import Parts
from interfaces.fhir.bundles import (
    FHIR_JSON,
    PATH,
    capability_statement,
    history,
    operation_outcome,
    searchset,
)
from interfaces.fhir.ids import medication_request_id, patient_key, prescription_key
from interfaces.fhir.mapping import (
    Resource,
    medication_dispenses,
    medication_request,
    medication_request_version,
    medication_request_versions,
    patient,
)
from interfaces.fhir.search import dispense_search, prescription_search
from interfaces.http.access import PHI, carried
from interfaces.http.api_page import package_version
from interfaces.http.auth import require_read
from interfaces.http.errors import ProblemError

AnyRequest = Request[Any, Any, Any]
ErrorHandler = Callable[[AnyRequest, Exception], Response[Any]]


def in_fhirs_shape(handle: ErrorHandler) -> ErrorHandler:
    """The app's error handler, its answers under `/fhir/r4` as an OperationOutcome: the
    status, headers and sentence stay those `errors.py` decides for the whole API, the router's
    own 404 and 405 there included."""

    def handler(request: AnyRequest, exc: Exception) -> Response[Any]:
        answer = handle(request, exc)
        path = request.scope["path"]
        if path != PATH and not path.startswith(PATH + "/"):
            return answer
        status, content = answer.status_code or 500, answer.content
        problems = [f"{p['field']}: {p['problem']}" for p in content.get("problems", [])]
        outcome = operation_outcome(status, content["detail"], problems)
        return Response(
            msgspec.json.encode(outcome),
            status_code=status,
            headers=answer.headers,
            media_type=FHIR_JSON,
        )

    return handler


class FhirController(Controller):
    path = PATH
    tags = ("fhir",)
    guards = [require_read]  # noqa: RUF012 - Litestar's own attribute type
    include_in_schema = False

    @get("/metadata", sync_to_thread=False)
    def metadata(self, request: AnyRequest) -> Response[bytes]:
        _no_parameters(request)
        return _answer(capability_statement(_base(request), package_version()))

    @get("/MedicationRequest/{fhir_id:str}", sync_to_thread=True, opt=PHI)
    def read_medication_request(
        self, request: AnyRequest, fhir_id: FromPath[str], parts: NamedDependency[Parts]
    ) -> Response[bytes]:
        _no_parameters(request)
        found = _stored(parts, fhir_id)
        carried(request).add(found.prescription_id, found.patient_id)
        resource = medication_request(msgspec.json.decode(found.state), found.updated_at)
        return _answer(resource, {"ETag": f'W/"{resource["meta"]["versionId"]}"'})

    @get("/MedicationRequest/{fhir_id:str}/_history", sync_to_thread=True, opt=PHI)
    def medication_request_history(
        self, request: AnyRequest, fhir_id: FromPath[str], parts: NamedDependency[Parts]
    ) -> Response[bytes]:
        _no_parameters(request)
        prescription_id, recorded = _history_of(parts, fhir_id)
        versions = medication_request_versions(prescription_id, recorded)
        _carried(request, prescription_id, versions)
        return _answer(history(_base(request), versions))

    @get("/MedicationRequest/{fhir_id:str}/_history/{version_id:str}", sync_to_thread=True, opt=PHI)
    def vread_medication_request(
        self,
        request: AnyRequest,
        fhir_id: FromPath[str],
        version_id: FromPath[str],
        parts: NamedDependency[Parts],
    ) -> Response[bytes]:
        """One version of the history (vread): version N is the state from the first N facts
        recorded, as `_history` gives it; a version it never had is a 404."""
        _no_parameters(request)
        prescription_id, recorded = _history_of(parts, fhir_id)
        number = _version_number(version_id)
        if not 1 <= number <= len(recorded):
            raise ProblemError(404, "not_found", "this MedicationRequest has no such version")
        resource = medication_request_version(prescription_id, recorded[:number])
        _carried(request, prescription_id, [resource])
        return _answer(resource, {"ETag": f'W/"{resource["meta"]["versionId"]}"'})

    @get("/MedicationRequest", sync_to_thread=True, opt=PHI)
    def search_medication_requests(
        self, request: AnyRequest, parts: NamedDependency[Parts]
    ) -> Response[bytes]:
        query = list(request.query_params.multi_items())
        search = prescription_search(query)
        rows: list[StoredPrescription] = []
        last_key = None
        if not search.nothing:
            rows, last_key = parts.queries.stored_prescriptions(
                search.where, search.count, search.cursor
            )
        answer = carried(request)
        resources = []
        for row in rows:
            answer.add(row.prescription_id, row.patient_id)
            resources.append(medication_request(msgspec.json.decode(row.state), row.updated_at))
        base = _base(request)
        next_url = None if last_key is None else _next_url(base, query, last_key)
        # The total is free when the whole result is this one page; a count it is not worth.
        total = len(rows) if search.cursor is None and last_key is None else None
        return _answer(searchset(base, resources, str(request.url), next_url, total))

    @get("/MedicationDispense", sync_to_thread=True, opt=PHI)
    def search_medication_dispenses(
        self, request: AnyRequest, parts: NamedDependency[Parts]
    ) -> Response[bytes]:
        prescription_id = _named_prescription(
            parts, dispense_search(request.query_params.multi_items())
        )
        dispenses: list[Resource] = []
        if prescription_id is not None:
            facts = [r.fact for r in _recorded(parts, prescription_id)]
            dispenses = medication_dispenses(prescription_id, facts)
            _carried(request, prescription_id, dispenses)
        return _answer(searchset(_base(request), dispenses, str(request.url), None, len(dispenses)))

    @get("/Patient/{fhir_id:str}", sync_to_thread=True, opt=PHI)
    def read_patient(
        self, request: AnyRequest, fhir_id: FromPath[str], parts: NamedDependency[Parts]
    ) -> Response[bytes]:
        _no_parameters(request)
        drx_patient_id = patient_key(fhir_id)
        found = parts.queries.patients_latest(drx_patient_id) if drx_patient_id else None
        if found is None:
            raise _unknown("Patient")
        carried(request).add(None, drx_patient_id)
        details = msgspec.json.decode(found.state)["patient"]
        return _answer(patient(details, found.updated_at))


def _stored(parts: Parts, fhir_id: str) -> StoredPrescription:
    """The read table's row of a MedicationRequest id, or a 404."""
    found = _stored_or_none(parts, fhir_id)
    if found is None:
        raise _unknown("MedicationRequest")
    return found


def _stored_or_none(parts: Parts, fhir_id: str) -> StoredPrescription | None:
    key = prescription_key(fhir_id)
    found = parts.queries.stored_prescription(key) if key is not None else None
    # An aggregate id is this prescription's FHIR id only when its own id is too long.
    if found is None or medication_request_id(found.prescription_id) != fhir_id:
        return None
    return found


def _named_prescription(parts: Parts, fhir_id: str) -> str | None:
    """The DRx id a MedicationRequest id names: read from the id itself, or, for the
    aggregate form, from its row; None when it names none."""
    key = prescription_key(fhir_id)
    if not isinstance(key, UUID):
        return key
    found = _stored_or_none(parts, fhir_id)
    return found.prescription_id if found is not None else None


def _recorded(parts: Parts, prescription_id: str) -> list[RecordedFact]:
    """The prescription's recorded facts from the store; none when it has none."""
    try:
        return parts.prescriptions.history(prescription_id)
    except PrescriptionNotFoundError:
        return []


def _history_of(parts: Parts, fhir_id: str) -> tuple[str, list[RecordedFact]]:
    """The DRx id a MedicationRequest id names and its recorded facts, or a 404 when it names
    none or the prescription has none (its history and each version of it)."""
    prescription_id = _named_prescription(parts, fhir_id)
    recorded = _recorded(parts, prescription_id) if prescription_id is not None else []
    if prescription_id is None or not recorded:
        raise _unknown("MedicationRequest")
    return prescription_id, recorded


def _carried(request: AnyRequest, prescription_id: str, resources: Iterable[Resource]) -> None:
    """For the access log: the prescription, and every patient the resources refer to."""
    answer = carried(request)
    answer.add(prescription_id)
    for resource in resources:
        answer.add(None, resource.get("subject", {}).get("identifier", {}).get("value"))


def _version_number(version_id: str) -> int:
    """A versionId as this service spells them (1, 2, ...); 0 for anything else."""
    spelt = version_id.isascii() and version_id.isdigit() and len(version_id) <= 18
    return int(version_id) if spelt and str(int(version_id)) == version_id else 0


def _no_parameters(request: AnyRequest) -> None:
    if request.scope.get("query_string"):
        raise ProblemError(400, "invalid_parameter", "this interaction takes no parameters")


def _unknown(kind: str) -> ProblemError:
    return ProblemError(404, "not_found", f"no {kind} has this id")


def _base(request: AnyRequest) -> str:
    """The FHIR base URL, as the client reached it."""
    return str(request.base_url).rstrip("/") + PATH


def _next_url(base: str, query: Sequence[tuple[str, str]], last_key: str) -> str:
    """The same search, continued after the last prescription id of this page."""
    kept = [(name, value) for name, value in query if name != "_cursor"]
    return f"{base}/MedicationRequest?{urlencode([*kept, ('_cursor', last_key)], quote_via=quote)}"


def _answer(document: Resource, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(msgspec.json.encode(document), media_type=FHIR_JSON, headers=headers)
