"""Read endpoints for prescriptions: lists and current state from the read model; the state as
of an instant and the history from the event store.

Most of the list's and the current state's 200 answers are sent before these handlers are
reached, by `interfaces/http/fast_reads.py`, with the same answers; the handlers answer every
other request to these paths."""

from __future__ import annotations

import json
from typing import Annotated, Any

from litestar import Controller, MediaType, Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, QueryParameter

from domain.errors import PrescriptionNotFoundError
from domain.names import Status
from infrastructure.queries import Page, PrescriptionFilter
from interfaces.bootstrap import Parts
from interfaces.documents import history_document
from interfaces.http.access import PHI, carried
from interfaces.http.auth import BEARER, KEY_REFUSALS, require_read
from interfaces.http.pagination import (
    Instant,
    PrescriptionCursor,
    QueryId,
    next_cursor,
    parse_instant,
    prescription_cursor,
)
from interfaces.http.paths import path_id
from interfaces.http.schemas import (
    History,
    Prescription,
    PrescriptionPage,
    Problem,
)

NOT_FOUND = {404: ResponseSpec(Problem, description="no such prescription")}
REFUSED = {
    400: ResponseSpec(Problem, description="a parameter is invalid; the body names it"),
    **KEY_REFUSALS,
}


def list_filter(
    status: str | None,
    patient_id: str | None,
    pharmacy_ncpdp_id: str | None,
    needs_review: bool | None,
    updated_since: str | None,
) -> PrescriptionFilter:
    """The list's filters, from its parameters (a 400 for an updated_since that is no instant).
    Also `interfaces/http/fast_reads.py`'s."""
    return PrescriptionFilter(
        status=status,
        patient_id=patient_id,
        pharmacy_ncpdp_id=pharmacy_ncpdp_id,
        needs_review=needs_review,
        updated_since=(
            parse_instant("updated_since", updated_since) if updated_since is not None else None
        ),
    )


def list_body(page: Page) -> bytes:
    """A page of the list as its JSON: the stored states are already the API's JSON, joined,
    not parsed and encoded again. Also `interfaces/http/fast_reads.py`'s."""
    body = '{"items":[%s],"next_cursor":%s}' % (  # noqa: UP031
        ",".join(page.items),
        json.dumps(next_cursor(page.last_key)),
    )
    return body.encode()


class PrescriptionController(Controller):
    path = "/prescriptions"
    tags = ("prescriptions",)
    guards = [require_read]  # noqa: RUF012 - Litestar's own attribute type
    security = [BEARER]  # noqa: RUF012

    @get(
        "/",
        operation_id="listPrescriptions",
        summary="Prescriptions in id order, filtered, in keyset pages",
        sync_to_thread=True,
        responses=REFUSED,
        opt=PHI,
    )
    def list_prescriptions(
        self,
        request: Request[Any, Any, Any],
        parts: NamedDependency[Parts],
        status: FromQuery[Status | None] = None,
        patient_id: QueryId = None,
        pharmacy_ncpdp_id: QueryId = None,
        needs_review: FromQuery[bool | None] = None,
        updated_since: Instant = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: PrescriptionCursor = None,
    ) -> Response[PrescriptionPage]:
        where = list_filter(status, patient_id, pharmacy_ncpdp_id, needs_review, updated_since)
        page = parts.queries.prescriptions_json(where, limit, prescription_cursor(cursor))
        answer = carried(request)
        for prescription, patient in page.subjects:
            answer.add(prescription, patient)
        return Response(list_body(page), media_type=MediaType.JSON)  # type: ignore[arg-type]

    @get(
        "/{prescription_id:str}",
        operation_id="getPrescription",
        summary="A prescription's current state, or its state as of an instant",
        description=(
            "Without as_of: from the read model. With as_of: rebuilt from the event store using "
            "only the facts recorded up to that instant (404 before the first)."
        ),
        sync_to_thread=True,
        responses={**REFUSED, **NOT_FOUND},
        opt=PHI,
    )
    def get_prescription(
        self,
        request: Request[Any, Any, Any],
        prescription_id: FromPath[str],
        parts: NamedDependency[Parts],
        as_of: Instant = None,
    ) -> Response[Prescription]:
        prescription_id = path_id(prescription_id)
        if as_of is not None:
            moment = parse_instant("as_of", as_of)
            then = parts.prescriptions.state(prescription_id, as_of=moment).as_dict()
            answer = carried(request)
            answer.add(prescription_id)
            answer.add_patients_in(then)
            return Response(Prescription.model_validate(then))
        found = parts.queries.prescription_json(prescription_id)
        if found is None:
            raise PrescriptionNotFoundError(prescription_id)
        state, patient = found
        carried(request).add(prescription_id, patient)
        return Response(state.encode(), media_type=MediaType.JSON)  # type: ignore[arg-type]

    @get(
        "/{prescription_id:str}/history",
        operation_id="getPrescriptionHistory",
        summary="Every recorded fact of a prescription, in recorded order",
        sync_to_thread=True,
        responses={**KEY_REFUSALS, **NOT_FOUND},
        opt=PHI,
    )
    def get_history(
        self,
        request: Request[Any, Any, Any],
        prescription_id: FromPath[str],
        parts: NamedDependency[Parts],
    ) -> History:
        prescription_id = path_id(prescription_id)
        document = history_document(prescription_id, parts.prescriptions.history(prescription_id))
        answer = carried(request)
        answer.add(prescription_id)
        answer.add_patients_in(document)
        return History.model_validate(document)
