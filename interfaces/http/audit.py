"""The auditors' paths (`audit` scope): the PHI access log, who read which patient's or
prescription's data, when and through which path.

A page of the log carries patient and prescription ids, so reading it is itself an entry (with
the ids of the entries it returned): who audited whom is on the record too."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter

from infrastructure.access_log import AccessFilter
from interfaces.bootstrap import Parts
from interfaces.http.access import PHI, carried
from interfaces.http.auth import BEARER, KEY_REFUSALS, require_audit
from interfaces.http.pagination import (
    DeliveryCursor,
    Instant,
    QueryId,
    delivery_cursor,
    next_cursor,
    parse_instant,
)
from interfaces.http.schemas import AccessEntry, AccessPage, Problem


class AuditController(Controller):
    path = "/audit"
    tags = ("audit",)
    guards = [require_audit]  # noqa: RUF012 - Litestar's own attribute type
    security = [BEARER]  # noqa: RUF012

    @get(
        "/access",
        operation_id="listAccess",
        summary="The PHI access log in the order it was written, filtered",
        description=(
            "One entry per answer that carried patient or prescription data (state, lists, "
            "history, as_of, changes and streams, deliveries' payloads, exports): when, which "
            "key, method, path with its query, status, and the prescription and patient ids it "
            "carried. An entry is written within a second of its answer. Reading this log is "
            "an entry too, carrying the ids of the entries it returned."
        ),
        sync_to_thread=True,
        responses={
            400: ResponseSpec(Problem, description="a parameter is invalid"),
            **KEY_REFUSALS,
        },
        opt=PHI,
    )
    def list_access(
        self,
        request: Request[Any, Any, Any],
        parts: NamedDependency[Parts],
        patient_id: QueryId = None,
        prescription_id: QueryId = None,
        key: QueryId = None,
        since: Instant = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
        cursor: DeliveryCursor = None,
    ) -> AccessPage:
        where = AccessFilter(
            patient_id=patient_id or None,
            prescription_id=prescription_id or None,
            key=key or None,
            since=parse_instant("since", since) if since is not None else None,
        )
        items, last = parts.access.find(where, limit, delivery_cursor(cursor))
        carried(request).add_entries(items)
        return AccessPage(
            items=[AccessEntry.model_validate(item) for item in items],
            next_cursor=next_cursor(last),
        )
