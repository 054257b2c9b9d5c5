"""The console's signed sessions: what opens one, and everything that must not."""

from __future__ import annotations

from infrastructure.api_keys import ApiKey
from interfaces.console.sessions import SessionSigner, csrf_matches

SECRET = b"s" * 32
OPERATOR = ApiKey("ops", frozenset({"operate", "read"}))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def ring(**keys: ApiKey):
    """A key ring's `named`: the keys of a name, by hash."""
    return lambda name: {hashed: key for hashed, key in keys.items() if key.name == name}


def test_a_session_opens_until_it_expires():
    clock = Clock()
    signer = SessionSigner(SECRET, 60, clock)
    cookie, issued = signer.issue("ops", "hash1")
    assert signer.open(cookie, ring(hash1=OPERATOR)) == issued
    clock.now += 59
    assert signer.open(cookie, ring(hash1=OPERATOR)) == issued
    clock.now += 1
    assert signer.open(cookie, ring(hash1=OPERATOR)) is None


def test_a_revoked_or_replaced_key_ends_its_sessions():
    signer = SessionSigner(SECRET, 60, Clock())
    cookie, _ = signer.issue("ops", "hash1")
    assert signer.open(cookie, ring()) is None  # revoked: no key of that name
    assert signer.open(cookie, ring(hash2=OPERATOR)) is None  # another key under that name


def test_a_key_that_lost_the_operate_scope_ends_its_sessions():
    signer = SessionSigner(SECRET, 60, Clock())
    cookie, _ = signer.issue("ops", "hash1")
    reader = ApiKey("ops", frozenset({"read"}))
    assert signer.open(cookie, ring(hash1=reader)) is None


def test_a_forged_or_broken_cookie_opens_nothing():
    clock = Clock()
    signer = SessionSigner(SECRET, 60, clock)
    cookie, _ = signer.issue("ops", "hash1")
    keys = ring(hash1=OPERATOR)
    version, name, expires, csrf, mac = cookie.split(".")
    longer = ".".join([version, name, str(int(expires) + 3600), csrf, mac])
    assert signer.open(longer, keys) is None
    other_csrf = ".".join([version, name, expires, "x" + csrf[1:], mac])
    assert signer.open(other_csrf, keys) is None
    assert SessionSigner(b"t" * 32, 60, clock).open(cookie, keys) is None  # another secret
    for broken in ("", "v1", cookie + ".x", "v2" + cookie[2:], f"v1.%%%.{expires}.{csrf}.{mac}"):
        assert signer.open(broken, keys) is None
    assert signer.open(".".join([version, name, "١٢", csrf, mac]), keys) is None  # not ASCII
    # A MAC that is not ASCII, on a cookie otherwise well formed and naming a real key's name
    # (names are no secret): refused, not a TypeError (a 500 on every page, sign-in's too).
    assert signer.open(".".join([version, name, expires, csrf, "\xe9" + mac[1:]]), keys) is None


def test_each_session_has_its_own_csrf_token():
    signer = SessionSigner(SECRET, 60, Clock())
    _, first = signer.issue("ops", "hash1")
    _, second = signer.issue("ops", "hash1")
    assert first.csrf != second.csrf
    assert csrf_matches(first, first.csrf)
    assert not csrf_matches(first, second.csrf)
    assert not csrf_matches(first, None)
    assert not csrf_matches(first, "")
