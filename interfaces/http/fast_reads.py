"""`GET /prescriptions/{id}` and `GET /prescriptions` answered from the raw ASGI request,
before the framework: the read API's busiest paths.

Through Litestar, an answer cost about 0.5 ms of a web worker's CPU (routing, the guard, the
parameters' model, dependency resolution, a hop to a worker thread and back, the response's
rendering, the access log's middleware), and its query four round trips to PostgreSQL (the
pool's check, BEGIN, the query, the pool's ROLLBACK). Here the same answer takes about a third
of that CPU, and its query is one round trip, awaited on the event loop (`AsyncReadQueries`;
bench/RESULTS.md, the read API at a million prescriptions). What each answer does stays: the key
and its `read` scope, the access log's entry (`interfaces/http/access.py`), the stored JSON as it
is.

Only the answers the framework would give as 200 are given here, and only to requests it would
read the same way: a valid key with the read scope, the access log accepting entries,
each list parameter in its plain form (`limit=50`, `needs_review=true`), at most once, none
other; a detail path of one segment without a query. Anything else goes to the framework,
untouched and with nothing sent, which answers as it always has: no key, or a key without the
scope (401, 403), a parameter it refuses or reads otherwise (400), an unknown id (404), `as_of`,
a store that fails (503, or a fast query's connection that broke while idle: answered again
there, through the threads' pool). So every error answer, and its access log entry, is the
framework's own; tests/e2e/test_fast_reads.py compares the two ways answer by answer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from domain.names import STATUSES
from infrastructure.api_keys import ApiKey, KeyRing
from infrastructure.queries import AsyncReadQueries, PrescriptionFilter
from interfaces.bootstrap import Parts
from interfaces.http.access import carried_in, record
from interfaces.http.auth import KEY_NAME
from interfaces.http.errors import STORE_UNAVAILABLE, ProblemError
from interfaces.http.prescriptions import list_body, list_filter
from interfaces.http.raw import send_json

log = logging.getLogger(__name__)

LIST_PATH = "/prescriptions"
_DETAIL_PREFIX = LIST_PATH + "/"
_SCOPE = "read"
_STATUSES = frozenset(STATUSES)
_LIMIT = re.compile(r"[1-9][0-9]{0,2}")
_MAX_LIMIT = 500
_ID_MAX = 200  # the list's id parameters and cursor (interfaces/http/pagination.py)
_BOOLEANS = {"true": True, "false": False}


class _Declined(Exception):
    """A request left to the framework."""


def _once(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """The parameters, each named at most once and each one the list takes."""
    found: dict[str, str] = {}
    for name, value in pairs:
        if name in found or name not in _READERS:
            raise _Declined
        found[name] = value
    return found


def _text(value: str) -> str:
    """An id as the list takes it: not empty (the framework's reading of a blank one is its
    own), at most 200 characters, without U+0000."""
    if not value or len(value) > _ID_MAX or "\x00" in value:
        raise _Declined
    return value


def _status(value: str) -> str:
    if value not in _STATUSES:
        raise _Declined
    return value


def _boolean(value: str) -> bool:
    if value not in _BOOLEANS:
        raise _Declined
    return _BOOLEANS[value]


def _instant(value: str) -> str:
    if not value:
        raise _Declined
    return value


def _limit(value: str) -> int:
    if not _LIMIT.fullmatch(value) or int(value) > _MAX_LIMIT:
        raise _Declined
    return int(value)


def _cursor(value: str) -> str | None:
    """The previous page's last id; a blank one is the first page (`prescription_cursor`)."""
    if len(value) > _ID_MAX or "\x00" in value:
        raise _Declined
    return value or None


_READERS: dict[str, Any] = {
    "status": _status,
    "patient_id": _text,
    "pharmacy_ncpdp_id": _text,
    "needs_review": _boolean,
    "updated_since": _instant,
    "limit": _limit,
    "cursor": _cursor,
}


def list_request(query_string: bytes) -> tuple[PrescriptionFilter, int, str | None]:
    """The list's filter, limit and cursor, read from the query string as the framework reads
    it (Litestar's own parse: latin-1, then `parse_qsl` keeping blank values); `_Declined` for
    what it might read otherwise."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, separator="&")
    given = {name: _READERS[name](value) for name, value in _once(pairs).items()}
    try:
        where = list_filter(
            given.get("status"),
            given.get("patient_id"),
            given.get("pharmacy_ncpdp_id"),
            given.get("needs_review"),
            given.get("updated_since"),
        )
    except ProblemError:  # an updated_since that is no instant: the framework's 400
        raise _Declined from None
    return where, given.get("limit", 50), given.get("cursor")


def _key(keys: KeyRing, headers: list[tuple[bytes, bytes]]) -> ApiKey:
    """The request's key, when it is one of ours with the read scope (the guard's reading,
    `interfaces/http/auth.py`); else the framework answers (401, 403)."""
    found = [value for name, value in headers if name == b"authorization"]
    if len(found) != 1:
        raise _Declined
    scheme, _sep, token = found[0].decode("latin-1").partition(" ")
    key = keys.find(token.strip()) if token.strip() else None
    if scheme.lower() != "bearer" or key is None or _SCOPE not in key.scopes:
        raise _Declined
    return key


class FastReads:
    """The fast path (see the module's docstring): `answer` before the framework."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.queries: AsyncReadQueries = parts.async_queries

    async def answer(self, scope: MutableMapping[str, Any], send: Any) -> bool:
        """True when the request was answered here; False to leave it to the framework, which
        then gets it as it came (nothing was sent)."""
        path: str = scope["path"]
        if scope["method"] != "GET" or not path.startswith(LIST_PATH):
            return False
        if not self.queries.db.started or not self.parts.access_log.accepting:
            return False
        try:
            key = _key(self.parts.keys, scope["headers"])
            body, subjects = await self._body(scope, path)
        except _Declined:
            return False
        except Exception as exc:
            if not isinstance(exc, STORE_UNAVAILABLE):
                log.warning("a fast read failed (%s); the framework answers it", type(exc).__name__)
            return False
        scope.setdefault("state", {})[KEY_NAME] = key.name
        carried = carried_in(scope)
        for prescription_id, patient_id in subjects:
            carried.add(prescription_id, patient_id)
        try:
            await send_json(send, 200, body)
        finally:
            record(self.parts.access_log, scope, 200)
        return True

    async def _body(
        self, scope: MutableMapping[str, Any], path: str
    ) -> tuple[bytes, list[tuple[str, str | None]]]:
        """The 200 answer's body, and the (prescription, patient) ids it carries."""
        if path == LIST_PATH:
            where, limit, cursor = list_request(scope.get("query_string", b""))
            page = await self.queries.prescriptions_json(where, limit, cursor)
            return list_body(page), page.subjects
        prescription_id = path[len(_DETAIL_PREFIX) :]
        if not path.startswith(_DETAIL_PREFIX) or not prescription_id or "/" in prescription_id:
            raise _Declined
        if scope.get("query_string"):  # as_of, or anything the framework reads its own way
            raise _Declined
        found = await self.queries.prescription_json(prescription_id)
        if found is None:  # the framework's 404
            raise _Declined
        state, patient_id = found
        return state.encode(), [(prescription_id, patient_id)]
