"""Standard Webhooks verification: rotation, tolerance, malformed and missing headers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from interfaces.drx.signature import SecretError, SignatureError, SignatureVerifier
from tests.helpers import new_secret, signed_headers

BODY = b'{"id": "evt_1"}'


def test_a_delivery_signed_with_the_configured_secret_verifies():
    secret = new_secret()
    signed = SignatureVerifier([secret]).verify(BODY, signed_headers(BODY, secret))
    assert signed.webhook_id == "msg_test"


def test_during_rotation_either_secret_verifies():
    old, new = new_secret(), new_secret()
    verifier = SignatureVerifier([old, new])
    for secret in (old, new):
        headers = signed_headers(BODY, secret)
        assert verifier.verify(BODY, headers).webhook_signature == headers["webhook-signature"]
    # DRx sends both signatures while it rotates; a receiver that knows only the new one accepts.
    both = signed_headers(BODY, old, new)
    assert SignatureVerifier([new]).verify(BODY, both).webhook_signature.count("v1,") == 2
    with pytest.raises(SignatureError):
        SignatureVerifier([new_secret()]).verify(BODY, both)


def test_a_signature_from_an_unknown_secret_is_refused():
    with pytest.raises(SignatureError, match="no signature matches"):
        SignatureVerifier([new_secret()]).verify(BODY, signed_headers(BODY, new_secret()))


def test_a_changed_body_is_refused():
    secret = new_secret()
    headers = signed_headers(BODY, secret)
    with pytest.raises(SignatureError):
        SignatureVerifier([secret]).verify(BODY + b" ", headers)


@pytest.mark.parametrize("skew", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_a_timestamp_six_minutes_off_is_refused(skew):
    secret = new_secret()
    with pytest.raises(SignatureError, match="5 minutes"):
        SignatureVerifier([secret]).verify(BODY, signed_headers(BODY, secret, skew=skew))


@pytest.mark.parametrize("skew", [timedelta(minutes=-4), timedelta(minutes=4)])
def test_a_timestamp_four_minutes_off_is_accepted(skew):
    secret = new_secret()
    headers = signed_headers(BODY, secret, skew=skew)
    signed = SignatureVerifier([secret]).verify(BODY, headers)
    assert signed.webhook_timestamp == headers["webhook-timestamp"]


def test_the_services_own_signing_is_the_standard_webhooks_librarys():
    """`drx send`, the simulator and the benchmarks sign with interfaces.drx.signature.sign;
    DRx (and the tests) with the library: the two must agree byte for byte."""
    from datetime import UTC, datetime

    from standardwebhooks.webhooks import Webhook

    from interfaces.drx.signature import sign

    secret, moment = new_secret(), datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    ours = sign(secret, "msg_1", int(moment.timestamp()), BODY)
    assert ours == Webhook(secret).sign("msg_1", moment, BODY.decode())


@pytest.mark.parametrize(
    "signature",
    ["garbage", "v1", "v1,not base64!", "v1,a,b", ",", "v2,abcd", "v1,=="],
)
def test_a_malformed_signature_header_is_refused_not_crashed(signature):
    secret = new_secret()
    headers = {**signed_headers(BODY, secret), "webhook-signature": signature}
    with pytest.raises(SignatureError):
        SignatureVerifier([secret]).verify(BODY, headers)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_is_named(missing):
    secret = new_secret()
    headers = signed_headers(BODY, secret)
    del headers[missing]
    with pytest.raises(SignatureError, match=missing):
        SignatureVerifier([secret]).verify(BODY, headers)


@pytest.mark.parametrize("timestamp", ["soon", "1e9", "", "17000000000000000000000"])
def test_a_timestamp_that_is_not_unix_seconds_is_refused(timestamp):
    secret = new_secret()
    headers = {**signed_headers(BODY, secret), "webhook-timestamp": timestamp}
    with pytest.raises(SignatureError):
        SignatureVerifier([secret]).verify(BODY, headers)


def test_a_body_that_is_not_utf8_is_refused_not_crashed():
    secret = new_secret()
    headers = signed_headers(BODY, secret)
    with pytest.raises(SignatureError):
        SignatureVerifier([secret]).verify(b"\xff\xfe", headers)


def test_a_bad_configured_secret_is_named_by_position_only():
    with pytest.raises(SecretError, match="#2") as raised:
        SignatureVerifier([new_secret(), "whsec_"])
    assert "whsec_" not in str(raised.value).replace("whsec_<base64>", "")
