"""`drx audit access`: who read which patient's or prescription's data, when and through which
path (the PHI access log, `infrastructure.access_log`); and the entry a command that prints
patient data (`drx audit export`) appends, naming the operating-system user who ran it."""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from domain.instants import sortable_instant
from infrastructure.access_log import Access, AccessFilter
from infrastructure.rebuild import Difference
from interfaces.bootstrap import Parts, bootstrap
from interfaces.http.access import Carried
from interfaces.http.errors import ProblemError
from interfaces.http.pagination import parse_instant
from interfaces.logs import escape_controls

PAGE = 500
HELP = "who read which patient's or prescription's data (the PHI access log)"


class AccessNotRecordedError(RuntimeError):
    """The access log cannot be written now: the command prints no patient data."""


def record_command(parts: Parts, command: str, status: int, document: Any) -> None:
    """One entry for a command about to print patient data, written first: when it cannot be
    written, `AccessNotRecordedError` and nothing is printed."""
    carried = Carried()
    carried.add(document.get("prescription_id") if isinstance(document, dict) else None)
    carried.add_patients_in(document)
    record_carried(parts, command, status, carried)


def record_carried(parts: Parts, command: str, status: int, carried: Carried) -> None:
    """The same, for what the command is about to print: these ids."""
    rx, patients = carried.take()
    entry = Access(
        sortable_instant(datetime.now(UTC)),
        f"cli:{getpass.getuser()}",
        "CLI",
        command,
        status,
        rx,
        patients,
    )
    try:
        parts.access_log.write_now(entry)
    except Exception as error:
        raise AccessNotRecordedError(
            "the PHI access log cannot be written now, so nothing is printed: retry later "
            f"({type(error).__name__})"
        ) from None


def record_differences(parts: Parts, command: str, differences: Iterable[Difference]) -> None:
    """The same, for a rebuild's differences about to be printed with their values: whom
    each differing row is about, and any patient in its values."""
    shown = Carried()
    for d in differences:
        shown.add(d.prescription_id, d.patient_id)
        for value in (d.live, d.rebuilt):
            shown.add_patients_in(value)
            if isinstance(value, str) and d.field in _PRESCRIPTION_COLUMNS:  # the id differs
                shown.add(value)
            elif isinstance(value, str) and d.field == "patient_id":
                shown.add(None, value)
    record_carried(parts, command, 200, shown)


_PRESCRIPTION_COLUMNS = frozenset({"prescription_id", "subject"})


def _since(text: str) -> datetime:
    try:
        return parse_instant("--since", text)
    except ProblemError as error:
        raise argparse.ArgumentTypeError(error.detail) from None


def cmd_access(parts: Parts, args: argparse.Namespace) -> int:
    """Prints the entries page by page, each page's own entry written before it is printed
    (the log's ids are patient data too: who audited whom is on the record)."""
    where = AccessFilter(args.patient, args.prescription, args.key, args.since)
    after, shown = None, 0
    while True:
        items, after = parts.access.find(where, PAGE, after)
        page = Carried()
        page.add_entries(items)
        record_carried(parts, _command_line(args), 200, page)
        for item in items:
            # Escaped: a path is the caller's text (a CR or an escape sequence in it would
            # rewrite the auditor's screen); the log keeps it as it came.
            print(
                escape_controls(
                    f"{item['at']}  {item['key']}  {item['method']} {item['path']}"
                    f"  {item['status']}  prescriptions {','.join(item['prescription_ids']) or '-'}"
                    f"  patients {','.join(item['patient_ids']) or '-'}"
                )
            )
        shown += len(items)
        if after is None:
            break
    print(f"{shown} entr{'y' if shown == 1 else 'ies'}")
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """`drx audit access` with its filters, as the entry's path (not `--key`'s: an API's entry
    leaves its `key` out too, `interfaces.http.access.KNOWN_PARAMETERS`)."""
    words = ["drx audit access"]
    for flag, value in (
        ("--patient", args.patient),
        ("--prescription", args.prescription),
        ("--since", args.since and sortable_instant(args.since)),
    ):
        if value:
            words.append(f"{flag} {value}")
    return " ".join(words)


def run(settings: Any, args: argparse.Namespace) -> int:
    with bootstrap(settings) as parts:
        return cmd_access(parts, args)


def add_parser(audit: Any, handler: Any) -> None:
    """`drx audit access` on the `audit` subcommands; `handler` runs it."""
    access = audit.add_parser("access", help=HELP)
    access.add_argument("--patient", metavar="ID", help="entries that carried this patient")
    access.add_argument("--prescription", metavar="ID", help="... this prescription")
    access.add_argument("--key", metavar="NAME", help="entries of this key (cli:USER for commands)")
    access.add_argument(
        "--since", type=_since, metavar="T", help="RFC 3339, e.g. 2026-12-01T00:00:00Z"
    )
    access.set_defaults(handler=handler)
