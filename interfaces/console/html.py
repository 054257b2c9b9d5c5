"""The console's HTML, built by small functions: every value from outside passes through `esc`
(`html.escape`), and markup is only ever joined from these functions' results. No template
engine: the pages are few and plain, and this keeps every escape in sight."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

from interfaces.console.sessions import Session

STATIC = "/console/static"
NAVIGATION = (
    ("overview", "/console", "Overview"),
    ("parked", "/console/parked", "Parked"),
    ("prescriptions", "/console/prescriptions", "Prescriptions"),
    ("subscriptions", "/console/subscriptions", "Subscriptions"),
)


def esc(value: Any) -> str:
    """A value as text in HTML (None as a dash)."""
    return "—" if value is None else escape(str(value))


def href(path: str, **query: Any) -> str:
    """A link to a console path with its query (escaped for an attribute)."""
    given = {name: value for name, value in query.items() if value is not None}
    return esc(f"{path}?{urlencode(given)}" if given else path)


def link(path: str, text: Any, **query: Any) -> str:
    return f'<a href="{href(path, **query)}">{esc(text)}</a>'


def page(title: str, body: str, session: Session | None, current: str = "") -> str:
    """A whole page: the navigation (when signed in), the title, the body."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · DRx console</title>"
        f'<link rel="stylesheet" href="{STATIC}/console.css">'
        f'<link rel="icon" href="{STATIC}/favicon.svg" type="image/svg+xml">'
        f'<script src="{STATIC}/console.js" defer></script></head><body>'
        '<a class="skip" href="#main">Skip to the content</a>'
        f"{_header(session, current)}"
        f'<main id="main" tabindex="-1"><h1>{esc(title)}</h1>{body}</main></body></html>'
    )


def _header(session: Session | None, current: str) -> str:
    if session is None:
        return '<header><p class="brand">DRx console</p></header>'
    items = "".join(
        f'<li><a href="{path}"{" aria-current=page" if name == current else ""}>{text}</a></li>'
        for name, path, text in NAVIGATION
    )
    return (
        '<header><p class="brand">DRx console</p>'
        f'<nav aria-label="Console"><ul>{items}</ul></nav>'
        f'<form class="sign-out" method="post" action="/console/sign-out">{csrf_field(session)}'
        f'<span>{esc(session.key_name)}</span> <button type="submit">Sign out</button></form>'
        "</header>"
    )


def csrf_field(session: Session) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(session.csrf)}">'


def post_form(
    action: str, session: Session, button: str, fields: dict[str, str], inline: str = ""
) -> str:
    """A form that changes something: its CSRF token, hidden fields, any visible `inline`
    markup (labelled inputs), and one button."""
    hidden = "".join(
        f'<input type="hidden" name="{esc(name)}" value="{esc(value)}">'
        for name, value in fields.items()
    )
    return (
        f'<form class="inline" method="post" action="{esc(action)}">'
        f'{csrf_field(session)}{hidden}{inline}<button type="submit">{esc(button)}</button></form>'
    )


def table(caption: str, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table of rendered cells (each already HTML), or a sentence when there are no rows."""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="empty">{esc(caption)}: none.</p>'
    head = "".join(f'<th scope="col">{esc(name)}</th>' for name in headers)
    return (
        f'<div class="scroll" role="region" aria-label="{esc(caption)}" tabindex="0">'
        f"<table><caption>{esc(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def facts(pairs: Iterable[tuple[str, str]]) -> str:
    """A definition list of (term, rendered value)."""
    items = "".join(f"<div><dt>{esc(term)}</dt><dd>{value}</dd></div>" for term, value in pairs)
    return f'<dl class="facts">{items}</dl>'


def json_block(document: Any, label: str) -> str:
    """A JSON document, indented, in a labelled, focusable block."""
    text = json.dumps(document, indent=2, ensure_ascii=False, sort_keys=False)
    return f'<pre class="json" tabindex="0" aria-label="{esc(label)}">{esc(text)}</pre>'


def badge(text: str, tone: str) -> str:
    """A short status word, its tone one of ok, warn, bad, info (also said in words)."""
    return f'<span class="badge {esc(tone)}">{esc(text)}</span>'


def notice(text: str | None) -> str:
    if not text:
        return ""
    return f'<p class="notice" role="status">{esc(text)}</p>'
