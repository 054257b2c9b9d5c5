"""Which answers the PHI access log records, and what each carried.

A handler whose answers carry patient or prescription data is marked `opt=PHI` and says what
its answer carried with `carried(request).add(...)`; `access_logging` appends one entry per
such answer once it is sent, with its status (`infrastructure.access_log`). An answer refused
before a key was checked (401) names no key and is not an access; every other answer on a
marked path is, a 404 too (it tells that an id is not ours), with the ids it carried (none).

A stream is one access: its entry, written when it ends, holds every id it carried; a stream
open for long also writes an entry every `STREAM_ENTRY_S` for what it carried since the last.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from litestar.types import ASGIApp

from domain.instants import sortable_instant
from infrastructure.access_log import Access, AccessLog
from interfaces.http.auth import KEY_NAME
from interfaces.http.errors import RETRY_AFTER_S
from interfaces.http.metrics import status_recorder
from interfaces.http.raw import send_json

PHI: dict[str, Any] = {"phi": True}
STREAM_ENTRY_S = 60.0
_CARRIED = "drx.carried"
_PATH_LIMIT = 2000
_UNAVAILABLE = json.dumps(
    {
        "error": "access_log_unavailable",
        "detail": "the PHI access log cannot be written now, so no patient data is served; "
        "retry later",
    }
).encode()


class Carried:
    """The prescription and patient ids an answer carried."""

    def __init__(self) -> None:
        self.prescription_ids: set[str] = set()
        self.patient_ids: set[str] = set()

    def add(self, prescription_id: str | None, patient_id: str | None = None) -> None:
        if prescription_id:
            self.prescription_ids.add(prescription_id)
        if patient_id:
            self.patient_ids.add(patient_id)

    def add_entries(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """The ids that entries of the access log name (a page of the log carries them)."""
        for entry in entries:
            self.prescription_ids.update(entry["prescription_ids"])
            self.patient_ids.update(entry["patient_ids"])

    def add_patients_in(self, document: Any) -> None:
        """Every `drx_patient_id` anywhere in a JSON document (a payload, a history)."""
        self.patient_ids.update(_patient_ids(document))

    def take(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """What was carried so far, which is forgotten (a stream's next entry starts anew)."""
        taken = (tuple(self.prescription_ids), tuple(self.patient_ids))
        self.prescription_ids, self.patient_ids = set(), set()
        return taken


def carried(connection: Any) -> Carried:
    """What the answer to this request carries, for its handler to add to."""
    return carried_in(connection.scope)


def _patient_ids(document: Any) -> Iterable[str]:
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "drx_patient_id" and isinstance(value, str):
                yield value
            else:
                yield from _patient_ids(value)
    elif isinstance(document, list):
        for value in document:
            yield from _patient_ids(value)


# The query parameters the API's PHI paths take (ids, filters, instants, pages): an entry keeps
# these and drops any other, so that no free text a caller adds to a query lands in the log.
# Not `key` (the access log's filter by key name): a careless caller could put a key there.
KNOWN_PARAMETERS = frozenset(
    {
        "status", "patient_id", "pharmacy_ncpdp_id", "needs_review", "updated_since", "limit",
        "cursor", "as_of", "after", "prescription_id", "types", "identifier", "patient",
        "_lastUpdated", "_count", "_cursor", "prescription", "id", "by", "q", "since",
    }
)  # fmt: skip


def _path(scope: MutableMapping[str, Any]) -> str:
    """The request's path, with its known query parameters."""
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    query = urlencode([(name, value) for name, value in pairs if name in KNOWN_PARAMETERS])
    path = str(scope["path"]) + (f"?{query}" if query else "")
    return path[:_PATH_LIMIT]


def record(access_log: AccessLog, scope: MutableMapping[str, Any], status: int) -> None:
    """Append the entry of what the answer to `scope` carried (none before a key was checked)."""
    state = scope.get("state", {})
    key = state.get(KEY_NAME)
    if key is None:
        return
    prescription_ids, patient_ids = carried_in(scope).take()
    access_log.append(
        Access(
            sortable_instant(datetime.now(UTC)),
            key,
            str(scope["method"]),
            _path(scope),
            status,
            prescription_ids,
            patient_ids,
        )
    )


def carried_in(scope: MutableMapping[str, Any]) -> Carried:
    state = scope.setdefault("state", {})
    found: Carried | None = state.get(_CARRIED)
    if found is None:
        found = state[_CARRIED] = Carried()
    return found


class StreamEntries:
    """A stream's interim entries: `carrying` after each write, an entry every STREAM_ENTRY_S."""

    def __init__(self, access_log: AccessLog, scope: Any) -> None:
        self.access_log, self.scope = access_log, scope
        self.carried = carried_in(scope)
        self._last = time.monotonic()

    def carrying(self, rows: Iterable[Any]) -> None:
        for row in rows:
            self.carried.add(row.prescription_id, row.patient_id)
        if time.monotonic() - self._last >= STREAM_ENTRY_S:
            self._last = time.monotonic()
            if self.carried.prescription_ids or self.carried.patient_ids:
                record(self.access_log, self.scope, 200)


def access_logging(access_log: AccessLog) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware: an entry for each answer of a path marked PHI (see the docstring)."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def logged(scope: Any, receive: Any, send: Any) -> None:
            handler = scope.get("route_handler")
            if scope["type"] != "http" or handler is None or not handler.opt.get("phi"):
                await app(scope, receive, send)
                return
            if not access_log.accepting:
                await _refuse(send)
                return
            capture, status = status_recorder(send)
            try:
                await app(scope, receive, capture)
            finally:
                record(access_log, scope, status[0] or 500)

        return logged

    return middleware


async def _refuse(send: Any) -> None:
    await send_json(send, 503, _UNAVAILABLE, headers=((b"retry-after", b"%d" % RETRY_AFTER_S),))
