"""The console's pages, as HTML from what the routes read: one function per page or part of a
page, each given plain values (no request, no database)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from domain.delivery import Delivery
from domain.dry_run import NOT_REPLAYABLE, PROCESSED, ReplayPreview, state_changes
from domain.facts import Fact
from domain.handlers import Outcome, Receipt
from domain.prescription import RecordedFact
from domain.state import PrescriptionState
from infrastructure.intake_tally import Intake
from infrastructure.projector import ProjectionStatus
from infrastructure.queries import ParkedGroup, StoredPrescription
from infrastructure.subscriptions import Attempt, Subscription
from interfaces.console.chart import intake_chart
from interfaces.console.html import (
    badge,
    esc,
    facts,
    href,
    json_block,
    link,
    notice,
    post_form,
    table,
)
from interfaces.console.sessions import Session

SEARCH_FIELDS = (
    ("prescription", "Prescription id"),
    ("patient", "Patient id"),
    ("pharmacy", "Pharmacy NCPDP id"),
)
GROUP_LIMIT = 200  # the deliveries of one reason a group's page lists, dry-runs and replays


def when(moment: datetime | str | None) -> str:
    """An instant as a `<time>`, in UTC to the second (a read table's text, or a datetime)."""
    if moment is None:
        return esc(None)
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    utc = moment.astimezone(UTC)
    return f'<time datetime="{esc(utc.isoformat())}">{utc:%Y-%m-%d %H:%M:%S} UTC</time>'


def span(seconds: float) -> str:
    """A duration in its two largest units: `2d 3h`, `4h 10m`, `12m 5s`, `40s`."""
    whole = int(seconds)
    days, hours = divmod(whole, 86400)
    hours, minutes = divmod(hours, 3600)
    minutes, secs = divmod(minutes, 60)
    units = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in units if n]
    return " ".join(shown[:2]) or "0s"


def milliseconds(seconds: float | None) -> str:
    return "no answers" if seconds is None else f"{seconds * 1000:.1f} ms"


# Sign-in


def sign_in(problem: str | None) -> str:
    error = f'<p class="error" role="alert" id="key-error">{esc(problem)}</p>' if problem else ""
    described = ' aria-describedby="key-error"' if problem else ""
    return (
        f'{error}<form class="sign-in" method="post" action="/console/sign-in">'
        '<label for="key">API key with the operate scope</label>'
        '<input id="key" name="key" type="password" autocomplete="off" required'
        f' spellcheck="false" autofocus{described}>'
        '<button type="submit">Sign in</button></form>'
        '<p class="hint">The key is checked and then forgotten: the session cookie holds its '
        "name, never the key, and ends when the key is revoked.</p>"
    )


# Overview


@dataclass(frozen=True)
class SubscriptionHealth:
    subscription: Subscription
    lag: int
    last_attempt: Attempt | None
    recent: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True)
class Overview:
    intake: Intake
    projections: list[ProjectionStatus]
    waiting: dict[str, int]
    subscriptions: list[SubscriptionHealth]
    feed_head: int
    at: datetime


def overview(summary_html: str) -> str:
    return (
        '<p class="live" id="live-status" role="status" aria-live="polite">'
        "Updates live from the change feed.</p>"
        f'<div id="summary" data-summary="/console/summary" data-live="/console/live">'
        f"{summary_html}</div>"
    )


def summary(view: Overview) -> str:
    p99 = view.intake.latency_quantile(0.99)
    projections_lag = sum(p.lag for p in view.projections)
    dead = sum(p.dead_letters for p in view.projections)
    failing = [h for h in view.subscriptions if h.subscription.failures]
    cards = [
        ("Webhook p99, last hour", milliseconds(p99), "info"),
        ("Parked deliveries", str(view.waiting["parked"]), _tone(view.waiting["parked"])),
        ("Conflicting deliveries", str(view.waiting["conflict"]), _tone(view.waiting["conflict"])),
        ("Projection lag (events)", str(projections_lag), _tone(projections_lag)),
        ("Dead letters", str(dead), "bad" if dead else "ok"),
        ("Subscriptions failing", f"{len(failing)} of {len(view.subscriptions)}", _tone(failing)),
    ]
    tiles = "".join(
        f'<li class="tile {tone}"><span class="label">{esc(label)}</span>'
        f'<span class="figure">{esc(figure)}</span></li>'
        for label, figure, tone in cards
    )
    return (
        f'<ul class="tiles" aria-label="Health figures">{tiles}</ul>'
        f"<h2>Intake, last hour</h2>{intake_chart(view.intake)}"
        f"<h2>Read models</h2>{_projections(view.projections)}"
        f"<h2>Subscriptions</h2>{_subscription_health(view.subscriptions)}"
        f'<p class="small">Change feed at position {view.feed_head}; read {when(view.at)}. '
        f"{link('/console/parked', 'Parked and conflicting deliveries')}.</p>"
    )


def _tone(count: Any) -> str:
    return "warn" if count else "ok"


def _projections(statuses: Sequence[ProjectionStatus]) -> str:
    rows = [
        [esc(s.name), esc(s.position), esc(s.head), esc(s.lag), _dead_letters(s.dead_letters)]
        for s in statuses
    ]
    return table("Read models", ["Name", "Position", "Store head", "Lag", "Dead letters"], rows)


def _dead_letters(count: int) -> str:
    return badge(f"{count} set aside", "bad") if count else badge("none", "ok")


def _subscription_health(healths: Sequence[SubscriptionHealth]) -> str:
    rows = [
        [
            link("/console/subscriptions", h.subscription.id),
            subscription_state(h.subscription),
            esc(h.lag),
            _attempt(h.last_attempt),
        ]
        for h in healths
    ]
    return table("Subscriptions", ["Id", "State", "Lag", "Last attempt"], rows)


def subscription_state(subscription: Subscription) -> str:
    tone = {"active": "ok", "paused": "info"}.get(subscription.state, "bad")
    failing = f" ({subscription.failures} failures)" if subscription.failures else ""
    return badge(subscription.state + failing, "warn" if failing and tone == "ok" else tone)


def _attempt(attempt: Attempt | None) -> str:
    if attempt is None:
        return esc("none yet")
    outcome = f"HTTP {attempt.status}" if attempt.status is not None else attempt.error
    return f"{when(attempt.at)}: {esc(outcome)}"


# Parked deliveries


def parked(groups: Sequence[ParkedGroup], conflicts: Sequence[dict[str, Any]]) -> str:
    group_rows = [
        [
            link("/console/parked/group", g.reason, reason=g.reason),
            esc(g.count),
            when(g.first_received_at),
            when(g.last_received_at),
        ]
        for g in groups
    ]
    return (
        "<p>Deliveries stored but not applied, grouped by why. Open a group to dry-run and "
        "replay it.</p>"
        + table(
            "Parked deliveries by reason",
            ["Reason", "Count", "First seen", "Last seen"],
            group_rows,
        )
        + "<h2>Conflicting deliveries</h2><p>Processed deliveries whose id came again with "
        "another body: the fact stands; ask DRx which body does.</p>"
        + deliveries_table("Latest conflicting deliveries", conflicts)
    )


def deliveries_table(caption: str, items: Iterable[dict[str, Any]]) -> str:
    rows = [
        [
            link("/console/delivery", item["event_id"], id=item["event_id"]),
            esc(item["type"]),
            link("/console/prescription", item["subject"], id=item["subject"]),
            when(item["received_at"]),
            esc(item["status"]),
        ]
        for item in items
    ]
    return table(caption, ["Event id", "Type", "Prescription", "Received", "Status"], rows)


def group(reason: str, items: Sequence[dict[str, Any]]) -> str:
    more = (
        f"<p>The first {GROUP_LIMIT} (in arrival order) are shown, dry-run and replayed.</p>"
        if len(items) >= GROUP_LIMIT
        else ""
    )
    return (
        facts([("Reason", esc(reason)), ("Deliveries", esc(len(items)))])
        + more
        + '<form method="get" action="/console/dry-run">'
        f'<input type="hidden" name="reason" value="{esc(reason)}">'
        '<button type="submit">Dry run: what would a replay of this group do?</button></form>'
        + deliveries_table("Parked deliveries with this reason", items)
    )


def dry_run(previews: Sequence[ReplayPreview], session: Session, back: str) -> str:
    rows = [_preview_row(p) for p in previews]
    replayable = [p.event_id for p in previews if p.outcome != NOT_REPLAYABLE]
    processed = sum(p.outcome == PROCESSED for p in previews)
    action = (
        post_form(
            "/console/replay",
            session,
            f"Replay these {len(replayable)}",
            {"ids": json.dumps(replayable), "back": back},
        )
        if replayable
        else "<p>Nothing here can be replayed.</p>"
    )
    return (
        f"<p>Nothing was saved. Replayed now, {processed} of {len(previews)} would be processed"
        f" and {len(replayable) - processed} parked again.</p>"
        + table(
            "What a replay would do, per delivery",
            ["Event id", "Would be", "Why", "Prescription", "State change"],
            rows,
        )
        + action
    )


def _preview_row(preview: ReplayPreview) -> list[str]:
    tone = {PROCESSED: "ok", NOT_REPLAYABLE: "info"}.get(preview.outcome, "warn")
    subject = (
        link("/console/prescription", preview.subject, id=preview.subject)
        if preview.subject
        else esc(None)
    )
    return [
        link("/console/delivery", preview.event_id, id=preview.event_id),
        badge(preview.outcome, tone),
        esc(preview.reason),
        subject,
        _changes(preview.before, preview.after),
    ]


def _changes(before: PrescriptionState | None, after: PrescriptionState | None) -> str:
    if before is None or after is None:
        return esc(None)
    changed = state_changes(before, after)
    if not changed:
        return "no change"
    items = "".join(
        f"<li><code>{esc(c.field)}</code>: {_short(c.before)} → {_short(c.after)}</li>"
        for c in changed
    )
    return f'<ul class="changes">{items}</ul>'


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return f"<code>{esc(text if len(text) <= 60 else text[:57] + '...')}</code>"


def replayed(results: Sequence[tuple[str, Receipt | str]], back: str) -> str:
    rows = []
    for event_id, result in results:
        if isinstance(result, str):
            outcome, reason = badge("not replayed", "info"), esc(result)
        elif result.outcome is Outcome.ACCEPTED:
            outcome, reason = badge("processed", "ok"), esc(None)
        else:
            outcome, reason = badge("parked again", "warn"), esc(result.reason)
        rows.append([link("/console/delivery", event_id, id=event_id), outcome, reason])
    return (
        '<p role="status">Replayed; the read models show it within a moment.</p>'
        + table("Replays", ["Event id", "Outcome", "Why"], rows)
        + f"<p>{link(back, 'Back')}</p>"
    )


def delivery(found: Delivery, signature_ok: bool, session: Session, message: str | None) -> str:
    verdict = (
        badge("verified with a configured secret", "ok")
        if signature_ok
        else badge("does not verify with any configured secret", "bad")
    )
    shown = [
        ("Event id", esc(found.event_id)),
        ("Type", esc(found.drx_type)),
        ("Prescription", link("/console/prescription", found.subject, id=found.subject)),
        ("Received", when(found.received_at)),
        ("Status", esc(found.shown_status)),
        ("Reason", esc(found.reason)),
        ("Signature", verdict),
        ("Conflicting copies", esc(len(found.conflicts))),
    ]
    actions = ""
    if found.is_parked:
        actions = (
            '<div class="actions">'
            f'<a class="button" href="{href("/console/dry-run", id=found.event_id)}">Dry run</a>'
            + post_form(
                "/console/replay",
                session,
                "Replay",
                {
                    "ids": json.dumps([found.event_id]),
                    "back": f"/console/delivery?id={found.event_id}",
                },
            )
            + "</div>"
        )
    copies = "".join(
        f"<h3>Copy received {when(copy.received_at)}</h3>{_body(copy.body)}"
        for copy in found.conflicts
    )
    return (
        notice(message)
        + facts(shown)
        + actions
        + "<h2>Raw payload</h2>"
        + _body(found.body)
        + (f"<h2>Conflicting copies</h2>{copies}" if copies else "")
    )


def _body(body: str) -> str:
    try:
        return json_block(json.loads(body), "Payload")
    except ValueError:
        return f'<pre class="json" tabindex="0" aria-label="Payload">{esc(body)}</pre>'


# Prescriptions


def search(by: str, query: str, rows: Sequence[StoredPrescription], next_key: str | None) -> str:
    options = "".join(
        f'<option value="{name}"{" selected" if name == by else ""}>{label}</option>'
        for name, label in SEARCH_FIELDS
    )
    form = (
        '<form class="search" method="get" action="/console/prescriptions" role="search">'
        f'<label for="by">Find by</label><select id="by" name="by">{options}</select>'
        f'<label for="q">Id</label><input id="q" name="q" value="{esc(query)}" required'
        ' spellcheck="false" autocomplete="off">'
        '<button type="submit">Find</button></form>'
    )
    if not query:
        return form
    listed = [
        [
            link("/console/prescription", row.prescription_id, id=row.prescription_id),
            esc(json.loads(row.state)["status"]),
            esc(row.patient_id),
            when(row.updated_at),
        ]
        for row in rows
    ]
    more = (
        f"<p>{link('/console/prescriptions', 'Next page', by=by, q=query, after=next_key)}</p>"
        if next_key
        else ""
    )
    return (
        form
        + table(
            "Prescriptions found",
            ["Prescription", "Status", "Patient", "Last fact recorded"],
            listed,
        )
        + more
    )


@dataclass(frozen=True)
class PrescriptionView:
    subject: str
    state: PrescriptionState
    recorded: list[RecordedFact]
    chain: dict[str, Any]  # the history document (interfaces.documents)
    deliveries: list[tuple[Delivery, bool]]  # each stored delivery, its signature's verdict
    missing_deliveries: list[str]  # facts' event ids without a stored delivery
    now: datetime
    sla_s: float
    as_of: datetime | None = None
    state_as_of: PrescriptionState | None = None


def prescription(view: PrescriptionView) -> str:
    state = view.state
    as_of = _as_of(view)
    return (
        _state_facts(state, view.chain["chain_intact"])
        + _links(view.subject)
        + as_of
        + "<h2>Open requests</h2>"
        + _open_requests(state, view.now, view.sla_s)
        + "<h2>Timeline</h2><p>In fact order (what DRx says happened when); each says when it "
        "arrived among them (the order we recorded them in).</p>"
        + _timeline(view)
        + "<h2>Raw deliveries</h2>"
        + _deliveries(view)
    )


def _state_facts(state: PrescriptionState, chain_intact: bool) -> str:
    document = state.as_dict()
    medication = (document.get("medication") or {}).get("name")
    pharmacy = document.get("pharmacy") or {}
    patient = document.get("patient") or {}
    review = badge("needs review", "warn") if state.needs_review else badge("no anomalies", "ok")
    chain = badge("intact", "ok") if chain_intact else badge("broken: run drx audit verify", "bad")
    return facts(
        [
            ("Status", esc(state.status or "none yet (provisional)")),
            ("Review", review),
            ("Facts", esc(state.version)),
            ("Fill", f"{esc(state.fill_number)}, refills left {esc(state.refills_remaining)}"),
            ("Medication", esc(medication)),
            ("Patient", esc(patient.get("drx_patient_id"))),
            (
                "Pharmacy",
                esc(
                    " ".join(filter(None, [pharmacy.get("ncpdp_id"), pharmacy.get("name")])) or None
                ),
            ),
            ("Last fact", f"{esc(state.last_event_type)} ({when(state.last_occurred_at)})"),
            ("Hash chain", chain),
        ]
    )


def _links(subject: str) -> str:
    return (
        '<ul class="links">'
        f"<li>{link('/console/prescription/history', 'History (JSON)', id=subject)}</li>"
        f"<li>{link('/console/prescription/fhir', 'FHIR R4 view (JSON)', id=subject)}</li>"
        "</ul>"
        '<form class="as-of" method="get" action="/console/prescription">'
        f'<input type="hidden" name="id" value="{esc(subject)}">'
        '<label for="as_of">State as of (RFC 3339, recorded time)</label>'
        '<input id="as_of" name="as_of" placeholder="2025-03-06T18:40:00Z" spellcheck="false">'
        '<button type="submit">Show</button></form>'
    )


def _as_of(view: PrescriptionView) -> str:
    if view.as_of is None:
        return ""
    if view.state_as_of is None:
        return f"<p>No fact was recorded by {when(view.as_of)}.</p>"
    return f"<h2>State as of {when(view.as_of)}</h2>" + json_block(
        view.state_as_of.as_dict(), "State as of"
    )


def _open_requests(state: PrescriptionState, now: datetime, sla_s: float) -> str:
    rows = []
    for request in state.open_requests:
        age = (now - request.opened_at).total_seconds()
        overdue = badge("overdue", "bad") if age > sla_s else badge("within", "ok")
        rows.append(
            [
                esc(request.kind),
                esc(request.request_id),
                when(request.opened_at),
                f"{esc(span(age))} of {esc(span(sla_s))} {overdue}",
            ]
        )
    return table("Open requests", ["Kind", "Request id", "Opened", "Age against the SLA"], rows)


def _timeline(view: PrescriptionView) -> str:
    anomalies = {a.event_id: a.kind for a in view.state.anomalies}
    chain_ok = {e["version"]: e["chain_ok"] for e in view.chain["events"]}
    in_fact_order = sorted(view.recorded, key=lambda r: Fact.order_key(r.fact))
    items = []
    for place, recorded in enumerate(in_fact_order, start=1):
        fact = recorded.fact
        marks = []
        if fact.event_id in anomalies:
            marks.append(badge(f"anomaly: {anomalies[fact.event_id]}", "warn"))
        if recorded.number != place:
            marks.append(badge("arrived out of order", "info"))
        if not chain_ok.get(recorded.number, True):
            marks.append(badge("chain broken here", "bad"))
        items.append(
            f'<li class="{"anomaly" if fact.event_id in anomalies else ""}">'
            f'<span class="place">{place}</span><div><strong>{esc(fact.drx_type)}</strong> '
            f"{' '.join(marks)}<br>"
            f"occurred {when(fact.occurred_at)}, arrived {esc(_ordinal(recorded.number))}"
            f" (recorded {when(recorded.recorded_at)})<br>"
            f"{link('/console/delivery', fact.event_id, id=fact.event_id)}</div></li>"
        )
    return f'<ol class="timeline" aria-label="Facts in fact order">{"".join(items)}</ol>'


def _ordinal(number: int) -> str:
    suffix = (
        "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    )
    return f"{number}{suffix}"


def _deliveries(view: PrescriptionView) -> str:
    parts = []
    for found, signature_ok in view.deliveries:
        verdict = (
            badge("signature verified", "ok") if signature_ok else badge("signature fails", "bad")
        )
        parts.append(
            f"<details><summary>{esc(found.drx_type)} · {esc(found.shown_status)} · "
            f"{when(found.received_at)} {verdict}</summary>"
            f"<p>{link('/console/delivery', found.event_id, id=found.event_id)}</p>"
            f"{_body(found.body)}</details>"
        )
    missing = "".join(f"<li>{esc(event_id)}</li>" for event_id in view.missing_deliveries)
    if missing:
        parts.append(f'<p class="error">Facts without their stored delivery:</p><ul>{missing}</ul>')
    return "".join(parts) or '<p class="empty">No stored deliveries.</p>'


def json_page(subject: str, document: Any, label: str) -> str:
    return f"<p>{link('/console/prescription', 'Back to ' + subject, id=subject)}</p>" + json_block(
        document, label
    )


# Subscriptions


def subscriptions(
    healths: Sequence[SubscriptionHealth], session: Session, message: str | None
) -> str:
    if not healths:
        return notice(message) + (
            '<p class="empty">No subscriptions: add one with <code>drx subscriptions add URL</code>'
            " or <code>POST /subscriptions</code>.</p>"
        )
    return notice(message) + "".join(_subscription(h, session) for h in healths)


def _subscription(health: SubscriptionHealth, session: Session) -> str:
    sub = health.subscription
    toggle = (
        post_form(
            "/console/subscriptions/state", session, "Resume", {"id": sub.id, "state": "active"}
        )
        if sub.state != "active"
        else post_form(
            "/console/subscriptions/state", session, "Pause", {"id": sub.id, "state": "paused"}
        )
    )
    field_id = f"after-{sub.id}"
    rewind = post_form(
        "/console/subscriptions/rewind",
        session,
        "Rewind",
        {"id": sub.id},
        f'<label for="{esc(field_id)}">Send again after position</label>'
        f'<input id="{esc(field_id)}" name="after" inputmode="numeric" pattern="[0-9]+" required'
        f' value="{sub.position}">',
    )
    attempts = [
        [
            when(a.at),
            esc(a.position),
            esc(a.status if a.status is not None else "no answer"),
            esc(a.error),
            esc(f"{a.duration_ms} ms"),
        ]
        for a in health.recent
    ]
    return (
        f'<section class="card" aria-labelledby="sub-{esc(sub.id)}">'
        f'<h2 id="sub-{esc(sub.id)}">{esc(sub.id)}</h2>'
        + facts(
            [
                ("Endpoint", esc(sub.url)),
                ("State", subscription_state(sub)),
                ("Position", esc(sub.position)),
                ("Lag (changes to send)", esc(health.lag)),
                ("Types", esc(", ".join(sub.types) or "all")),
                ("Statuses", esc(", ".join(sub.statuses) or "all")),
                ("Failing since", when(sub.failing_since)),
                ("Next try", when(sub.retry_at)),
                ("Disabled because", esc(sub.disabled_reason)),
            ]
        )
        + f'<div class="actions">{toggle}{rewind}</div>'
        + table(
            f"Latest attempts of {sub.id}", ["At", "Position", "Status", "Error", "Took"], attempts
        )
        + "</section>"
    )


def error_page_body(status: int, detail: str) -> str:
    back = link("/console", "Overview")
    return f'<p class="error" role="alert">{esc(detail)}</p><p>HTTP {status}. {back}</p>'
