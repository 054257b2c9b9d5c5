"""The anti-corruption layer: what is a 400, a 422, a parked delivery, or a fact."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.commands import ParkDelivery, RecordDelivery
from domain.facts import DATA_FOR, Fact, FactKind
from domain.state import derive_state
from interfaces.drx.signature import SignedHeaders
from interfaces.drx.translator import (
    EnvelopeError,
    NotAJsonObjectError,
    Unreadable,
    parse_envelope,
    read_fact,
    read_stored,
    stored_fact,
    translate,
)
from tests.helpers import EXAMPLES, load_example

SIGNED = SignedHeaders("msg_1", "1700000000", "v1,abc")


def read(payload: dict[str, Any]) -> Fact | Unreadable:
    body = json.dumps(payload).encode()
    return read_fact(parse_envelope(body), body)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_payload_becomes_its_fact(path):
    payload = json.loads(path.read_text())
    result = read(payload)
    assert isinstance(result, Fact)
    assert (result.event_id, result.drx_type, result.document) == (
        payload["id"],
        payload["type"],
        without_nulls(payload["data"]),
    )
    # Typed, in the domain's words: the type the kind's data has.
    assert isinstance(result.data, DATA_FOR[result.kind])


def without_nulls(value):
    """What the domain keeps of DRx's data: every value but the nulls (the contract's words are
    the domain's today)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'"text"', b"42", b"null"])
def test_a_body_that_is_not_a_json_object_is_refused(body):
    with pytest.raises(NotAJsonObjectError):
        parse_envelope(body)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": None}, "id"),
        ({"id": ""}, "id"),
        ({"id": "x" * 201}, "id"),
        ({"type": 5}, "type"),
        ({"subject": ""}, "subject"),
        ({"occurred_at": "2025-03-04T15:22:10"}, "occurred_at"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"schema_version": 1}, "schema_version"),
        ({"schema_version": "\u0661.0"}, "schema_version"),  # an Arabic-Indic digit one
        ({"schema_version": "9" * 5000 + ".0"}, "schema_version"),
        ({"sequence": 0}, "sequence"),
        ({"attempt": "1"}, "attempt"),
        ({"data": []}, "data"),
        ({"correlation": {"request_id": 7}}, "correlation.request_id"),
    ],
)
def test_a_broken_envelope_names_the_field(change, field):
    payload = {**load_example("shipped"), **change}
    with pytest.raises(EnvelopeError) as raised:
        parse_envelope(json.dumps(payload).encode())
    assert field in [p["field"] for p in raised.value.problems]


def test_a_missing_envelope_field_is_named():
    payload = load_example("shipped")
    del payload["source"]
    with pytest.raises(EnvelopeError, match="source: Field required"):
        parse_envelope(json.dumps(payload).encode())


def test_envelope_errors_never_quote_the_offending_value():
    payload = {**load_example("received"), "occurred_at": "Testy McExample"}
    with pytest.raises(EnvelopeError) as raised:
        parse_envelope(json.dumps(payload).encode())
    assert "Testy" not in str(raised.value)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"type": "drx.prescription.teleported"}, "unknown type"),
        ({"type": "acme.order.created"}, "unknown type"),
        ({"schema_version": "2.0"}, "schema_version '2.0'"),
    ],
)
def test_an_unknown_type_or_major_version_is_unreadable(change, reason):
    result = read({**load_example("shipped"), **change})
    assert isinstance(result, Unreadable)
    assert reason in result.reason


def test_a_newer_minor_version_is_read():
    assert isinstance(read({**load_example("shipped"), "schema_version": "1.7"}), Fact)


@pytest.mark.parametrize(
    ("name", "data_change", "field"),
    [
        ("shipped", {"fill_number": "1"}, "data.fill_number"),
        ("shipped", {"fill_number": 0}, "data.fill_number"),
        ("shipped", {"carrier": None}, "data.carrier"),
        ("dispensed", {"refills_remaining": -1}, "data.refills_remaining"),
        ("rejected", {"retryable": "yes"}, "data.retryable"),
        ("on_hold", {"reason": {"text": "x", "category": "weather"}}, "data.reason.category"),
        ("change_requested", {"requested_medications": []}, "data.requested_medications"),
        ("received", {"patient": {"first_name": "Testy"}}, "data.patient.drx_patient_id"),
        ("received", {"written_on": "2025-13-45"}, "data.written_on"),
        ("received", {"written_on": "2025-02-29"}, "data.written_on"),  # not a leap year
        (
            "received",
            {"written_on": "\u0662\u0660\u0662\u0665-\u0660\u0663-\u0660\u0664"},
            "data.written_on",
        ),
        ("updated", {"patient": None, "notes": None}, "data"),
        ("dispensed", {"dispensed_at": "1741277000"}, "data.dispensed_at"),  # Unix seconds
        ("dispensed", {"dispensed_at": "2025-03-06T16:02Z"}, "data.dispensed_at"),
    ],
)
def test_data_that_breaks_the_contract_is_unreadable_and_says_where(name, data_change, field):
    payload = load_example(name)
    payload["data"] = {**payload["data"], **data_change}
    result = read(payload)
    assert isinstance(result, Unreadable)
    assert f"{field}:" in result.reason
    assert "Testy" not in result.reason


def test_unknown_fields_are_tolerated_kept_in_the_raw_delivery_and_left_out_of_the_fact():
    payload = load_example("shipped")
    payload["data"]["carrier_service"] = "Priority"
    payload["brand_new_envelope_field"] = {"x": 1}
    body = json.dumps(payload).encode()
    command = translate(parse_envelope(body), body, SIGNED)
    assert isinstance(command, RecordDelivery)
    assert json.loads(command.delivery.body) == payload  # the audit record keeps everything
    assert "carrier_service" not in command.fact.document  # the domain has no word for it
    assert command.fact.data.carrier == "USPS"  # type: ignore[union-attr]


def test_sequence_and_correlation_are_carried():
    payload = {**load_example("sent"), "sequence": 4}
    result = read(payload)
    assert isinstance(result, Fact)
    assert (result.sequence, result.correlation["client_reference"]) == (4, "ord-2M9K")
    assert result.kind is FactKind.SENT


def test_translate_records_a_readable_delivery_and_parks_the_rest():
    good = json.dumps(load_example("sent")).encode()
    command = translate(parse_envelope(good), good, SIGNED)
    assert isinstance(command, RecordDelivery)
    assert command.delivery.body == good.decode()
    assert command.delivery.webhook_signature == "v1,abc"
    bad = json.dumps({**load_example("sent"), "type": "drx.prescription.nope"}).encode()
    parked = translate(parse_envelope(bad), bad, SIGNED)
    assert isinstance(parked, ParkDelivery)
    assert "unknown type" in parked.reason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from([p.stem for p in EXAMPLES]),
    overrides=st.dictionaries(
        st.sampled_from(
            ["id", "type", "occurred_at", "subject", "sequence", "data", "schema_version"]
        ),
        json_values,
        max_size=3,
    ),
    data_overrides=st.dictionaries(st.text(max_size=12), json_values, max_size=3),
)
def test_any_json_object_is_a_fact_an_unreadable_delivery_or_an_envelope_error(
    name, overrides, data_overrides
):
    payload = {**load_example(name), **overrides}
    if isinstance(payload.get("data"), dict):
        payload["data"] = {**payload["data"], **data_overrides}
    body = json.dumps(payload).encode()
    try:
        envelope = parse_envelope(body)
    except EnvelopeError:
        return
    except NotAJsonObjectError:  # json.dumps wrote an infinite float as Infinity
        assert b"Infinity" in body
        return
    result = read_fact(envelope, body)
    assert isinstance(result, Fact | Unreadable)
    if isinstance(result, Fact):  # whatever the contract lets through, the state function takes
        assert derive_state(envelope.subject, [result]).version == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"subject": "drx_rx_\u0000"}, "subject"),
        ({"id": "evt_\u0000"}, "id"),
        ({"type": "drx.prescription.shipped\u0000"}, "type"),
        ({"source": "\u0000"}, "source"),
        ({"correlation": {"request_id": "r\u0000"}}, "correlation.request_id"),
    ],
)
def test_a_nul_character_in_an_envelope_field_is_refused_and_named(change, field):
    payload = {**load_example("shipped"), **change}
    with pytest.raises(EnvelopeError) as raised:
        parse_envelope(json.dumps(payload).encode())
    assert [p["field"] for p in raised.value.problems] == [field]


def test_a_nul_character_in_data_parks_the_delivery_naming_where():
    payload = load_example("received")
    payload["data"]["patient"]["drx_patient_id"] = "drx_pt_\u0000"
    payload["data"]["notes\u0000"] = "x"
    result = read(payload)
    assert isinstance(result, Unreadable)
    assert "U+0000" in result.reason
    assert "data.patient.drx_patient_id" in result.reason
    assert "data.notes?" in result.reason


def test_an_escaped_backslash_before_u0000_is_not_a_nul_character():
    payload = load_example("received")
    payload["data"]["patient"]["last_name"] = "back\\u0000slash"
    assert isinstance(read(payload), Fact)


def test_a_park_reason_quotes_a_few_hundred_characters_of_the_input_at_most():
    long_type = {**load_example("shipped"), "type": "drx.prescription." + "x" * 5000}
    many_fields = load_example("received")
    many_fields["data"] = {f"field_{'k' * 300}_{n}": n for n in range(200)}
    for payload in (long_type, many_fields):
        result = read(payload)
        assert isinstance(result, Unreadable)
        assert len(result.reason) <= 400
    assert "x" * 81 not in read(long_type).reason


@pytest.mark.parametrize(
    "number",
    [
        b"1e400",
        b"1" + b"0" * 300 + b"e99",  # 1e399 with a two-digit exponent
        b"-2" + b"0" * 209 + b"e99",  # -2e308: the shortest run of digits that overflows
        b"2" + b"0" * 209 + b".5E+99",
    ],
)
def test_a_number_past_a_floats_range_is_not_json_whatever_its_form(number):
    """Read as a float it is infinite: stored, it was `Infinity`, which no JSON reader takes
    back (the prescription's read models stuck behind it for good)."""
    body = json.dumps(load_example("received")).replace('"quantity": 30', "QUANTITY")
    assert "QUANTITY" in body
    with pytest.raises(NotAJsonObjectError):
        parse_envelope(body.encode().replace(b"QUANTITY", b'"quantity": ' + number))


def test_a_large_finite_number_is_read():
    body = json.dumps(load_example("received")).replace('"quantity": 30', "QUANTITY")
    parse_envelope(body.encode().replace(b"QUANTITY", b'"quantity": ' + b"9" * 209 + b"e99"))


@pytest.mark.parametrize(
    "instant",
    ["0", "1741286400", 1741286400, "2025-03-06T18:40Z", "2025-03-06", "2025-03-06T18:40:00"],
)
def test_an_envelope_instant_that_is_not_rfc_3339_is_refused_and_named(instant):
    """pydantic alone read "0" and "1741286400" as Unix seconds, and took a time without its
    seconds; the contract says an RFC 3339 timestamp with its offset."""
    payload = {**load_example("shipped"), "occurred_at": instant}
    with pytest.raises(EnvelopeError) as raised:
        parse_envelope(json.dumps(payload).encode())
    assert "occurred_at" in [p["field"] for p in raised.value.problems]


@pytest.mark.parametrize(
    ("instant", "utc"),
    [
        ("2025-03-04T15:22:10.123456789+05:30", "2025-03-04T09:52:10.123456+00:00"),
        ("2025-03-04t15:22:10z", "2025-03-04T15:22:10+00:00"),
        ("2025-03-04 15:22:10-01:00", "2025-03-04T16:22:10+00:00"),
    ],
)
def test_every_rfc_3339_form_of_an_instant_is_read(instant, utc):
    payload = {**load_example("shipped"), "occurred_at": instant}
    envelope = parse_envelope(json.dumps(payload).encode())
    assert envelope.occurred_at.astimezone(UTC).isoformat() == utc


def test_a_stored_body_is_read_as_accepted_before_the_rfc_3339_check_and_replayed_under_it():
    """A body stored when pydantic's reading of instants held ("0" as Unix seconds) is still
    read so by the audit (`stored_fact`: the fact recorded then is what its body reports); a
    replay accepts it anew, under the contract as read now, and so is refused, naming where."""
    payload = load_example("dispensed")
    payload["data"]["dispensed_at"] = "0"
    body = json.dumps(payload)
    fact = stored_fact(body)
    assert fact is not None
    assert fact.data.dispensed_at.isoformat() == "1970-01-01T00:00:00+00:00"  # type: ignore[attr-defined]
    replayed = read_stored(body)
    assert isinstance(replayed, Unreadable)
    assert "data.dispensed_at" in replayed.reason
    assert "RFC 3339" in replayed.reason


@pytest.mark.parametrize(
    ("instant", "said"),
    [
        ("2025-03-06T18:40:60Z", "second value is outside expected range of 0-59"),
        ("2025-03-06T18:40:00+24:00", "timezone offset must be less than 24 hours"),
    ],
)
def test_an_instant_of_rfc_3339_form_out_of_range_is_refused_saying_why(instant, said):
    """Not the lax reading's words, which offer a date that is never taken."""
    payload = {**load_example("shipped"), "occurred_at": instant}
    with pytest.raises(EnvelopeError) as raised:
        parse_envelope(json.dumps(payload).encode())
    (problem,) = raised.value.problems
    assert problem == {
        "field": "occurred_at",
        "problem": f"Input should be a valid datetime, {said}",
    }
