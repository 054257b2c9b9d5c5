"""The console's paths under `/console`: sign-in and sign-out, and the pages of a session.

Every page but the sign-in wants a session (`interfaces.console.sessions`), checked by a guard
that also names its key for the PHI access log; without one, a page redirects to the sign-in.
Every form that changes something carries the session's CSRF token, and is refused (403)
without it or from another origin. The pages that show patient or prescription data are
marked PHI and say what they carried. Answers are never cached, and their Content Security
Policy lets them load nothing but this service's own assets.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, MediaType, Request, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import CacheControlHeader, Cookie
from litestar.di import NamedDependency, Provide
from litestar.enums import RequestEncodingType
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Body, FromQuery
from litestar.response import Redirect, Stream
from litestar.static_files import create_static_files_router

from domain.errors import DeliveryNotFoundError, DeliveryNotParkedError, PrescriptionNotFoundError
from domain.state import derive_state
from infrastructure.api_keys import key_hash
from infrastructure.change_feed import ChangeFilter
from infrastructure.queries import PrescriptionFilter
from interfaces import replays
from interfaces.bootstrap import Parts
from interfaces.console import views
from interfaces.console.html import page
from interfaces.console.sessions import COOKIE, SCOPE, Session, SessionSigner, csrf_matches
from interfaces.documents import history_document
from interfaces.fhir.mapping import medication_request
from interfaces.http.access import PHI, carried
from interfaces.http.auth import KEY_NAME
from interfaces.http.changes import follow_checked
from interfaces.http.errors import ProblemError, handle_exception
from interfaces.http.pagination import parse_instant

log = logging.getLogger(__name__)

PATH = "/console"
SIGN_IN = f"{PATH}/sign-in"
STATIC = Path(__file__).with_name("static")
_SESSION = "drx.console_session"  # where, in the request's state, the guard leaves the session
LIVE_HEARTBEAT_S = 15.0
SEARCH_PAGE = 50
RECENT_ATTEMPTS = 5
HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "cache-control": "no-store",
    "referrer-policy": "same-origin",  # "no-referrer" would make the forms' Origin "null"
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}

AnyRequest = Request[Any, Any, Any]
Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


class SignInRequiredError(Exception):
    """No session, or one that ended (expired, forged, its key revoked)."""


def signer(parts: Parts) -> SessionSigner:
    return SessionSigner(parts.console_secret, parts.settings.console_session_s)


def current_session(parts: Parts, cookie: str) -> Session | None:
    """The cookie's session, if it is still on: well signed, not expired, its key accepted, and
    not signed out (in memory, no lookup: the live stream asks at every change)."""
    session = signer(parts).open(cookie, parts.keys.named)
    if session is None or parts.sign_outs.ended(session.csrf):
        return None
    return session


def session_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    session = current_session(connection.app.state.parts, connection.cookies.get(COOKIE, ""))
    if session is None:
        raise SignInRequiredError
    state = connection.scope.setdefault("state", {})
    state[KEY_NAME], state[_SESSION] = session.key_name, session


def provide_session(request: AnyRequest) -> Session:
    session: Session = request.scope["state"][_SESSION]
    return session


def html(markup: str, status: int = 200) -> Response[bytes]:
    return Response(markup.encode(), status_code=status, media_type=MediaType.HTML, headers=HEADERS)


def see_other(location: str, cookies: list[Cookie] | None = None) -> Redirect:
    return Redirect(location, status_code=303, headers=HEADERS, cookies=cookies or [])


def _same_origin(request: AnyRequest) -> bool:
    """A form posted from this service's own pages (SameSite=Strict already keeps the cookie
    from other sites' forms; this refuses them even before a session exists)."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return False
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def checked(request: AnyRequest, session: Session, form: dict[str, str]) -> dict[str, str]:
    """The form of a state-changing request, once its origin and CSRF token are right."""
    if not _same_origin(request) or not csrf_matches(session, form.get("csrf")):
        raise ProblemError(403, "csrf_refused", "this form is not from this session: reload it")
    return form


def on_sign_in_required(request: AnyRequest, _: Exception) -> Response[Any]:
    return see_other(SIGN_IN, [_ended_cookie()])


def on_error(request: AnyRequest, exc: Exception) -> Response[Any]:
    """The API's status and sentence for an error (errors.py decides both), as a page."""
    answer = handle_exception(request, exc)
    status = answer.status_code or 500
    session = request.scope.get("state", {}).get(_SESSION)
    body = views.error_page_body(status, str(answer.content.get("detail", "")))
    return html(page(f"Error {status}", body, session), status)


def _cookie(value: str, request: AnyRequest, max_age: int) -> Cookie:
    return Cookie(
        key=COOKIE,
        value=value,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=max_age,
    )


def _ended_cookie() -> Cookie:
    return Cookie(key=COOKIE, value="", path=PATH, httponly=True, samesite="strict", max_age=0)


class SignInController(Controller):
    path = PATH
    include_in_schema = False
    exception_handlers = {Exception: on_error}  # noqa: RUF012 - Litestar's own attribute type

    @get("/sign-in", sync_to_thread=False)
    def sign_in_page(self, request: AnyRequest, parts: NamedDependency[Parts]) -> Response[Any]:
        if current_session(parts, request.cookies.get(COOKIE, "")) is not None:
            return see_other(PATH)
        return html(page("Sign in", views.sign_in(None), None))

    @post("/sign-in", sync_to_thread=False)
    def sign_in(
        self, request: AnyRequest, data: Form, parts: NamedDependency[Parts]
    ) -> Response[Any]:
        if not _same_origin(request):
            raise ProblemError(403, "csrf_refused", "sign in from this service's own page")
        given = data.get("key", "").strip()
        key = parts.keys.find(given) if given else None
        if key is None:
            return html(
                page("Sign in", views.sign_in("That is not a key this service accepts."), None), 401
            )
        if SCOPE not in key.scopes:
            problem = f"The key {key.name} does not have the {SCOPE} scope."
            return html(page("Sign in", views.sign_in(problem), None), 403)
        cookie, _ = signer(parts).issue(key.name, key_hash(given))
        log.info("console: %s signed in", key.name)
        lifetime = int(parts.settings.console_session_s)
        return see_other(PATH, [_cookie(cookie, request, lifetime)])


class ConsoleController(Controller):
    path = PATH
    include_in_schema = False
    guards = [session_guard]  # noqa: RUF012 - Litestar's own attribute type
    dependencies = {"session": Provide(provide_session, sync_to_thread=False)}  # noqa: RUF012
    exception_handlers = {  # noqa: RUF012
        SignInRequiredError: on_sign_in_required,
        Exception: on_error,
    }

    @post("/sign-out", sync_to_thread=True)
    def sign_out(
        self,
        request: AnyRequest,
        data: Form,
        parts: NamedDependency[Parts],
        session: NamedDependency[Session],
    ) -> Response[Any]:
        """Ends the session everywhere, not only the cookie in this browser: a copy of the
        cookie is refused too. If the database cannot record it, the error page says so and the
        session stays on (signing out again then works)."""
        checked(request, session, data)
        parts.sign_outs.record(session.csrf, session.expires_at)
        log.info("console: %s signed out", session.key_name)
        return see_other(SIGN_IN, [_ended_cookie()])

    # Overview

    @get("/", sync_to_thread=True)
    def overview(
        self, parts: NamedDependency[Parts], session: NamedDependency[Session]
    ) -> Response[bytes]:
        body = views.overview(views.summary(_overview(parts)))
        return html(page("Overview", body, session, "overview"))

    @get("/summary", sync_to_thread=True)
    def summary(self, parts: NamedDependency[Parts]) -> Response[bytes]:
        return html(views.summary(_overview(parts)))

    @get("/live", media_type="text/event-stream")
    async def live(self, request: AnyRequest, parts: NamedDependency[Parts]) -> Stream:
        """A change's position each time the feed moves (no data of any change: the page then
        reads its summary again); the stream ends when the session does."""
        cookie = request.cookies.get(COOKIE, "")
        batches = follow_checked(
            parts,
            None,
            ChangeFilter(),
            LIVE_HEARTBEAT_S,
            lambda: current_session(parts, cookie) is not None,
        )
        return Stream(
            _live(batches),
            media_type="text/event-stream",
            headers={**HEADERS, "x-accel-buffering": "no"},
        )

    # Parked deliveries

    @get("/parked", sync_to_thread=True, opt=PHI)
    def parked(
        self, request: AnyRequest, parts: NamedDependency[Parts], session: NamedDependency[Session]
    ) -> Response[bytes]:
        conflicts = parts.queries.deliveries("conflict", SEARCH_PAGE, None).items
        _carried_subjects(request, conflicts)
        body = views.parked(parts.queries.parked_groups(), conflicts)
        return html(page("Parked deliveries", body, session, "parked"))

    @get("/parked/group", sync_to_thread=True, opt=PHI)
    def parked_group(
        self,
        request: AnyRequest,
        reason: FromQuery[str],
        parts: NamedDependency[Parts],
        session: NamedDependency[Session],
    ) -> Response[bytes]:
        items = _group(parts, reason)
        _carried_subjects(request, items)
        return html(page("Parked for one reason", views.group(reason, items), session, "parked"))

    @get("/dry-run", sync_to_thread=True, opt=PHI)
    def dry_run(
        self,
        request: AnyRequest,
        parts: NamedDependency[Parts],
        session: NamedDependency[Session],
        reason: FromQuery[str | None] = None,
        id: FromQuery[str | None] = None,
    ) -> Response[bytes]:
        if id is not None:
            event_ids, back = [id], f"{PATH}/delivery?id={id}"
        elif reason is not None:
            event_ids, back = [item["event_id"] for item in _group(parts, reason)], PATH + "/parked"
        else:
            raise ProblemError(400, "invalid_parameter", "give a delivery's id or a reason")
        previews = replays.dry_run(parts, event_ids)
        answer = carried(request)
        for preview in previews:
            for state in (preview.before, preview.after):
                if state is not None:
                    answer.add(preview.subject)
                    answer.add_patients_in(state.as_dict())
        body = views.dry_run(previews, session, back)
        return html(page("Dry run of a replay", body, session, "parked"))

    @post("/replay", sync_to_thread=True)
    def replay(
        self,
        request: AnyRequest,
        data: Form,
        parts: NamedDependency[Parts],
        session: NamedDependency[Session],
    ) -> Response[bytes]:
        form = checked(request, session, data)
        results: list[tuple[str, Any]] = []
        for event_id in _event_ids(form.get("ids", "")):
            try:
                results.append((event_id, replays.replay(parts, event_id)))
            except DeliveryNotFoundError:
                results.append((event_id, "no such delivery"))
            except DeliveryNotParkedError:
                results.append((event_id, "not parked (replayed meanwhile?)"))
        log.info("console: %s replayed %d deliveries", session.key_name, len(results))
        back = form.get("back", "")
        back = back if back.startswith(PATH + "/") else PATH + "/parked"
        return html(page("Replayed", views.replayed(results, back), session, "parked"))

    @get("/delivery", sync_to_thread=True, opt=PHI)
    def delivery(
        self,
        request: AnyRequest,
        id: FromQuery[str],
        parts: NamedDependency[Parts],
        session: NamedDependency[Session],
    ) -> Response[bytes]:
        found = parts.prescriptions.delivery(id)
        answer = carried(request)
        answer.add(found.subject)
        for body in (found.body, *(copy.body for copy in found.conflicts)):
            answer.add_patients_in(json.loads(body))  # stored only when JSON objects
        verdict = parts.verifier.matches(
            found.webhook_id, found.webhook_timestamp, found.webhook_signature, found.body
        )
        body = views.delivery(found, verdict, session, None)
        return html(page(f"Delivery {id}", body, session, "parked"))

    # Prescriptions

    @get("/prescriptions", sync_to_thread=True, opt=PHI)
    def prescriptions(
        self,
        request: AnyRequest,
        parts: NamedDependency[Parts],
        session: NamedDependency[Session],
        by: FromQuery[str] = "prescription",
        q: FromQuery[str] = "",
        after: FromQuery[str | None] = None,
    ) -> Response[Any]:
        query = q.strip()
        if by == "prescription" and query and parts.queries.prescription_json(query):
            return see_other(f"{PATH}/prescription?{_query(id=query)}")
        where = {
            "prescription": PrescriptionFilter(prescription_id=query),
            "patient": PrescriptionFilter(patient_id=query),
            "pharmacy": PrescriptionFilter(pharmacy_ncpdp_id=query),
        }.get(by)
        if where is None:
            raise ProblemError(400, "invalid_parameter", "by is prescription, patient or pharmacy")
        rows, next_key = (
            parts.queries.stored_prescriptions(where, SEARCH_PAGE, after) if query else ([], None)
        )
        answer = carried(request)
        for row in rows:
            answer.add(row.prescription_id, row.patient_id)
        body = views.search(by, query, rows, next_key)
        return html(page("Prescriptions", body, session, "prescriptions"))

    @get("/prescription", sync_to_thread=True, opt=PHI)
    def prescription(
        self,
        request: AnyRequest,
        id: FromQuery[str],
        parts: NamedDependency[Parts],
        session: NamedDependency[Session],
        as_of: FromQuery[str | None] = None,
    ) -> Response[bytes]:
        view = _prescription(parts, id, parse_instant("as_of", as_of) if as_of else None)
        answer = carried(request)
        answer.add(id)
        answer.add_patients_in(view.state.as_dict())
        for found, _ in view.deliveries:
            answer.add_patients_in(json.loads(found.body))
        return html(page(f"Prescription {id}", views.prescription(view), session, "prescriptions"))

    @get("/prescription/history", sync_to_thread=True, opt=PHI)
    def history(
        self,
        request: AnyRequest,
        id: FromQuery[str],
        parts: NamedDependency[Parts],
        session: NamedDependency[Session],
    ) -> Response[bytes]:
        document = history_document(id, parts.prescriptions.history(id))
        carried(request).add(id)
        carried(request).add_patients_in(document)
        body = views.json_page(id, document, "History")
        return html(page(f"History of {id}", body, session, "prescriptions"))

    @get("/prescription/fhir", sync_to_thread=True, opt=PHI)
    def fhir(
        self,
        request: AnyRequest,
        id: FromQuery[str],
        parts: NamedDependency[Parts],
        session: NamedDependency[Session],
    ) -> Response[bytes]:
        found = parts.queries.stored_prescription(id)
        if found is None:
            raise PrescriptionNotFoundError(id)
        carried(request).add(id, found.patient_id)
        resource = medication_request(json.loads(found.state), found.updated_at)
        body = views.json_page(id, resource, "FHIR R4 resource")
        return html(page(f"FHIR R4 view of {id}", body, session, "prescriptions"))

    # Subscriptions

    @get("/subscriptions", sync_to_thread=True)
    def subscriptions(
        self,
        parts: NamedDependency[Parts],
        session: NamedDependency[Session],
        done: FromQuery[str | None] = None,
    ) -> Response[bytes]:
        healths = _healths(parts, RECENT_ATTEMPTS)
        body = views.subscriptions(healths, session, done)
        return html(page("Subscriptions", body, session, "subscriptions"))

    @post("/subscriptions/state", sync_to_thread=True)
    def subscription_state(
        self,
        request: AnyRequest,
        data: Form,
        parts: NamedDependency[Parts],
        session: NamedDependency[Session],
    ) -> Response[Any]:
        form = checked(request, session, data)
        state = form.get("state", "")
        if state not in ("active", "paused"):
            raise ProblemError(400, "invalid_parameter", "state is active or paused")
        changed = parts.subscriptions.set_state(form.get("id", ""), state)
        log.info("console: %s set subscription %s %s", session.key_name, changed.id, state)
        return see_other(f"{PATH}/subscriptions?{_query(done=f'{changed.id} is {state}.')}")

    @post("/subscriptions/rewind", sync_to_thread=True)
    def subscription_rewind(
        self,
        request: AnyRequest,
        data: Form,
        parts: NamedDependency[Parts],
        session: NamedDependency[Session],
    ) -> Response[Any]:
        form = checked(request, session, data)
        after = form.get("after", "").strip()
        if not (after.isascii() and after.isdigit()) or len(after) > 18:
            raise ProblemError(400, "invalid_parameter", "after is a position of the feed")
        changed = parts.subscriptions.rewind(form.get("id", ""), int(after))
        log.info("console: %s rewound subscription %s", session.key_name, changed.id)
        done = f"{changed.id} sends again after position {changed.position}."
        return see_other(f"{PATH}/subscriptions?{_query(done=done)}")


def _query(**values: str) -> str:
    return urlencode(values)


async def _live(batches: AsyncIterator[list[Any] | None]) -> AsyncIterator[bytes]:
    yield b"retry: 5000\r\n\r\n"
    async for rows in batches:
        if rows is None:  # the session ended (signed out, expired, its key revoked)
            yield b"event: signed-out\r\ndata: {}\r\n\r\n"
            return
        yield (
            b"event: change\r\ndata: %d\r\n\r\n" % rows[-1].position
            if rows
            else b": heartbeat\r\n\r\n"
        )


def _overview(parts: Parts) -> views.Overview:
    return views.Overview(
        intake=parts.intake_tally.last_minutes(60),
        projections=parts.projector.status(),
        waiting=parts.queries.waiting_counts(),
        subscriptions=_healths(parts, 0),
        feed_head=parts.feed.head(),
        at=datetime.now(UTC),
    )


def _healths(parts: Parts, recent: int) -> list[views.SubscriptionHealth]:
    store = parts.subscriptions
    healths = []
    for subscription in store.all():
        attempts = store.attempts(subscription.id, max(recent, 1), None)
        healths.append(
            views.SubscriptionHealth(
                subscription,
                store.lag(subscription),
                attempts[0] if attempts else None,
                attempts[:recent],
            )
        )
    return healths


def _group(parts: Parts, reason: str) -> list[dict[str, Any]]:
    return parts.queries.deliveries("parked", views.GROUP_LIMIT, None, reason).items


def _carried_subjects(request: AnyRequest, items: list[dict[str, Any]]) -> None:
    answer = carried(request)
    for item in items:
        answer.add(item["subject"])


def _event_ids(text: str) -> list[str]:
    try:
        ids = json.loads(text)
    except ValueError:
        ids = None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ProblemError(400, "invalid_parameter", "ids is a JSON list of event ids")
    return ids[: views.GROUP_LIMIT]


def _prescription(parts: Parts, subject: str, as_of: datetime | None) -> views.PrescriptionView:
    recorded = parts.prescriptions.history(subject)
    if not recorded:
        raise PrescriptionNotFoundError(subject)
    event_ids = sorted(
        {r.fact.event_id for r in recorded} | set(parts.queries.delivery_ids_of(subject))
    )
    deliveries, missing = [], []
    for event_id in event_ids:
        try:
            found = parts.prescriptions.delivery(event_id)
        except DeliveryNotFoundError:
            missing.append(event_id)
            continue
        verdict = parts.verifier.matches(
            found.webhook_id, found.webhook_timestamp, found.webhook_signature, found.body
        )
        deliveries.append((found, verdict))
    view = views.PrescriptionView(
        subject=subject,
        state=derive_state(subject, [r.fact for r in recorded]),
        recorded=recorded,
        chain=history_document(subject, recorded),
        deliveries=deliveries,
        missing_deliveries=missing,
        now=datetime.now(UTC),
        sla_s=parts.settings.request_sla_s,
    )
    if as_of is None:
        return view
    then = derive_state(subject, [r.fact for r in recorded if r.recorded_at <= as_of])
    return replace(view, as_of=as_of, state_as_of=then if then.version else None)


def console_router() -> Router:
    """The console's paths and its assets (CSS, a few lines of script, the icon)."""
    assets = create_static_files_router(
        path=f"{PATH}/static",
        directories=[STATIC],
        cache_control=CacheControlHeader(max_age=3600),
        name="console-assets",
        include_in_schema=False,
    )
    return Router(path="/", route_handlers=[SignInController, ConsoleController, assets])
