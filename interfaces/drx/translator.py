"""The anti-corruption layer: a DRx delivery's raw bytes to a domain command, with no I/O.

If DRx's real payloads differ from the contract, this module (with `contract.py`) is the only
place that changes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from domain.commands import ParkDelivery, RecordDelivery
from domain.delivery import RawDelivery
from domain.errors import describe_fault
from domain.fact_data import FactData
from domain.facts import DATA_FOR, Fact, FactKind
from interfaces.drx.contract import AS_ACCEPTED_BEFORE, PAYLOAD_MODELS, Envelope, Model
from interfaces.drx.signature import SignedHeaders

SUPPORTED_SCHEMA_MAJOR = 1


class NotAJsonObjectError(ValueError):
    """The body is not a JSON object at all (RFC 8259: no NaN, no Infinity): a 400."""


class EnvelopeError(ValueError):
    """Section 2 is broken (a required field missing or ill-typed): a 422, nothing stored."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{p['field']}: {p['problem']}" for p in problems))
        self.problems = problems


# A park reason is for a person to read: it quotes a few hundred characters of the input at
# most, whatever the input holds.
MAX_REASON = 400
MAX_QUOTED = 80


@dataclass(frozen=True)
class Unreadable:
    """Why an authentic delivery cannot become a fact (contract 4.9): it is parked."""

    reason: str

    def __post_init__(self) -> None:
        if len(self.reason) > MAX_REASON:
            object.__setattr__(self, "reason", self.reason[: MAX_REASON - 1] + "…")


def quoted(value: str) -> str:
    """A value of the input inside a reason: quoted, and cut short past `MAX_QUOTED`."""
    return repr(value if len(value) <= MAX_QUOTED else value[:MAX_QUOTED] + "…")


def describe_errors(error: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """Where and what, never the offending value: it may be patient data."""
    return [
        {
            "field": (prefix + ".".join(str(part) for part in e["loc"]))[:MAX_QUOTED] or "(body)",
            "problem": e["msg"],
        }
        for e in error.errors(include_input=False, include_url=False)
    ]


# JSON can only carry U+0000 as this escape: a body without it holds none.
_NUL_ESCAPE = b"\\u0000"
# What a number that is not finite could look like: NaN and Infinity (which Python's and
# pydantic's parsers take, RFC 8259 does not), or an exponent or a run of digits large enough
# to overflow a float. A body without any of these has none; one with them is parsed again.
# A float overflows past 1.8e308: its integer digits and its exponent add up to over 308, so
# with an exponent of at most two digits (99) it has a run of at least 210 digits ("1" and
# 300 zeros then "e99" is 1e399). (Two plain searches and two patterns: half the time of one
# pattern with four branches.)
_LARGE_EXPONENT = re.compile(rb"[eE]\+?\d{3}")
_LONG_DIGITS = re.compile(rb"\d{210}")


def _maybe_not_finite(body: bytes) -> bool:
    return (
        b"NaN" in body
        or b"Infinity" in body
        or _LARGE_EXPONENT.search(body) is not None
        or _LONG_DIGITS.search(body) is not None
    )


def _refuse(_: str) -> float:
    raise ValueError


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError
    return number


def _has_a_number_that_is_not_finite(body: bytes) -> bool:
    try:
        json.loads(body, parse_constant=_refuse, parse_float=_finite)
    except ValueError:
        return True
    return False


def nul_paths(value: Any, path: str) -> list[str]:
    """Where U+0000 occurs in a parsed JSON value (in a key or a string), as dotted paths.

    PostgreSQL's text columns cannot hold it (SQLite's can, but the stores must agree), so it is
    refused or parked at the boundary rather than found by a projection that cannot write it.
    """
    if isinstance(value, str):
        return [path] if "\x00" in value else []
    if isinstance(value, dict):
        found: list[str] = []
        for key, item in value.items():
            where = (f"{path}.{key}" if path else key).replace("\x00", "?")
            found += [where] if "\x00" in key else nul_paths(item, where)
        return found
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in nul_paths(item, f"{path}.{index}")]
    return []


def parse_envelope(body: bytes, context: dict[str, str] | None = None) -> Envelope:
    """The envelope of a delivery (`context`: `AS_ACCEPTED_BEFORE` for a stored body read
    again as it was read when accepted; none for a delivery arriving or replayed)."""
    try:
        envelope = Envelope.model_validate_json(body, context=context)
    except ValidationError as error:
        kinds = {e["type"] for e in error.errors() if not e["loc"]}
        if kinds & {"json_invalid", "model_type", "json_type"}:
            raise NotAJsonObjectError("the body is not a JSON object") from None
        raise EnvelopeError(describe_errors(error)) from None
    if _maybe_not_finite(body) and _has_a_number_that_is_not_finite(body):
        raise NotAJsonObjectError(
            "the body holds a number that is not finite (NaN, Infinity, or out of range), "
            "which JSON (RFC 8259) does not allow"
        )
    if _NUL_ESCAPE in body:
        fields = envelope.model_dump(include=set(Envelope.model_fields) - {"data"})
        if found := nul_paths(fields, ""):
            raise EnvelopeError(
                [{"field": where, "problem": "must not contain U+0000"} for where in found]
            )
    return envelope


def read_fact(
    envelope: Envelope, body: bytes, context: dict[str, str] | None = None
) -> Fact | Unreadable:
    """The fact the delivery reports, or why it cannot be read under this contract (`context`:
    as `parse_envelope`'s)."""
    kind = FactKind.from_drx_type(envelope.type)
    if kind is None:
        return Unreadable(f"unknown type {quoted(envelope.type)}")
    if envelope.schema_major != SUPPORTED_SCHEMA_MAJOR:
        return Unreadable(
            f"schema_version {quoted(envelope.schema_version)}: only major version "
            f"{SUPPORTED_SCHEMA_MAJOR} is understood"
        )
    try:
        payload = PAYLOAD_MODELS[kind].model_validate_json(body, context=context)
    except ValidationError as error:
        problems = describe_errors(error)
        return Unreadable(
            "data breaks the contract: "
            + "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        )
    if _NUL_ESCAPE in body and (found := nul_paths(envelope.data, "data")):
        return Unreadable(
            "data holds U+0000, which the read models cannot store, at " + ", ".join(found)
        )
    correlation: dict[str, Any] = (
        envelope.correlation.model_dump(exclude_none=True) if envelope.correlation else {}
    )
    return Fact(
        event_id=envelope.id,
        kind=kind,
        occurred_at=envelope.occurred_at,
        sequence=envelope.sequence or 0,
        data=in_domain_words(kind, payload.data),  # type: ignore[attr-defined]
        correlation=correlation,
    )


def in_domain_words(kind: FactKind, data: Model) -> FactData:
    """DRx's data, checked against the contract, as the domain's typed values. Contract v1 and
    the domain use the same words, so each value is taken by name (what the domain has no word
    for stays in the raw delivery); a field DRx renames is mapped here."""
    value: FactData = DATA_FOR[kind].model_validate(data, from_attributes=True)  # type: ignore[assignment]
    return value


def stored_fact(body: str) -> Fact | None:
    """The fact a stored delivery's body reports, or None (the audit's `DeliveryReader`): read
    as it was read when accepted, so that a fact recorded under rules since made stricter (the
    RFC 3339 instants) is still the fact its body reports."""
    read = read_stored(body, AS_ACCEPTED_BEFORE)
    return read if isinstance(read, Fact) else None


def read_stored(body: str, context: dict[str, str] | None = None) -> Fact | Unreadable:
    """Read a stored delivery again (a replay, which accepts it anew under the contract as
    read now; `context`: as `parse_envelope`'s): the fact, or why it still cannot be read."""
    raw = body.encode("utf-8")
    try:
        return read_fact(parse_envelope(raw, context), raw, context)
    except (NotAJsonObjectError, EnvelopeError) as error:  # stored under an older contract
        return Unreadable(f"envelope no longer readable: {error}")
    except Exception as exc:  # a fault in our own code keeps it parked, with the reason
        return Unreadable(describe_fault(exc))


# Envelope fields that differ between DRx's attempts of one event (contract section 2): a
# retry is the same report however these differ.
ATTEMPT_FIELDS = ("sent_at", "attempt")


def report_digest(body: str) -> str:
    """What a delivery reports, as a digest (`domain.delivery.Report`): its JSON without the
    attempt's own fields, in one canonical form (so key order and spacing do not count either).
    Asked only when an id repeats: the body is parsed again then, not on every delivery."""
    report = json.loads(body)
    for name in ATTEMPT_FIELDS:
        report.pop(name, None)
    canonical = json.dumps(report, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def raw_delivery(envelope: Envelope, body: bytes, signed: SignedHeaders) -> RawDelivery:
    return RawDelivery(
        event_id=envelope.id,
        drx_type=envelope.type,
        subject=envelope.subject,
        body=body.decode("utf-8"),
        webhook_id=signed.webhook_id,
        webhook_timestamp=signed.webhook_timestamp,
        webhook_signature=signed.webhook_signature,
    )


def translate(
    envelope: Envelope, body: bytes, signed: SignedHeaders
) -> RecordDelivery | ParkDelivery:
    """The command for an authentic delivery whose envelope holds."""
    delivery = raw_delivery(envelope, body, signed)
    fact = read_fact(envelope, body)
    if isinstance(fact, Unreadable):
        return ParkDelivery(delivery, fact.reason)
    return RecordDelivery(delivery, fact)
