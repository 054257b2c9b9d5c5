"""The OpenAPI document matches what the endpoints do: schemathesis generates requests from it
and finds no server error and no response that breaks the documented schema.

Cases are drawn through Hypothesis directly (`as_strategy`), not schemathesis's pytest plugin,
which does not yet run under pytest 9.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from schemathesis.specs.openapi.checks import positive_data_acceptance

from infrastructure.migrations import migrate
from interfaces.http.app import create_app
from tests.conftest import sqlite_settings
from tests.helpers import AUTH, LIFECYCLES, load_lifecycle, post_signed, settle


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    chosen = sqlite_settings(tmp_path_factory.mktemp("openapi"))
    migrate(chosen)
    app = create_app(chosen, run_projections=False)
    # Some data, so that reads find something to return. No `with`: leaving it would run the
    # app's shutdown and close the store under schemathesis.
    client = TestClient(app)
    for path in LIFECYCLES:
        for event in load_lifecycle(path)["events"]:
            post_signed(client, event)
    parked = {
        **load_lifecycle(LIFECYCLES[0])["events"][0],
        "id": "evt_parked",
        "type": "drx.prescription.teleported",
    }
    post_signed(client, parked)
    settle(client)
    loaded = schemathesis.openapi.from_asgi("/schema/openapi.json", app)
    yield loaded
    app.state.parts.close()


def operations(schema):
    # An event stream never ends: tests/e2e/test_change_stream.py tests it.
    found = [
        result.ok()
        for result in schema.get_all_operations()
        if result.ok().definition.raw.get("operationId") != "streamChanges"
    ]
    assert len(found) >= 10
    return found


@pytest.mark.parametrize("authorised", [True, False], ids=["with-key", "without-key"])
def test_the_api_keeps_to_its_openapi_document(schema, authorised):
    headers = AUTH if authorised else {}

    @settings(
        max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(data=st.data())
    def check(data):
        operation = data.draw(st.sampled_from(operations(schema)), label="operation")
        case = data.draw(operation.as_strategy(), label="case")
        # An opaque cursor has no schema that tells valid from invalid: a made-up one is a 400
        # (tests/e2e/test_list_api.py), which positive_data_acceptance would call a failure.
        made_up_cursor = "cursor" in (case.query or {})
        case.call_and_validate(
            headers={**(case.headers or {}), **headers},
            excluded_checks=[positive_data_acceptance] if made_up_cursor else None,
        )

    check()


def test_the_document_says_what_a_subscriptions_description_may_hold(tmp_path):
    """schemathesis draws from the document: a description it allows must not be refused."""
    import re

    from infrastructure.subscriptions import SubscriptionError, check_description

    app = create_app(sqlite_settings(tmp_path), run_projections=False)
    schema = app.openapi_schema.to_schema()["components"]["schemas"]["NewSubscription"]
    pattern = schema["properties"]["description"]["pattern"]
    for text in ("plain", "accents é and ✓", "a\rb", "tab\there", "\x00", "del\x7f", "c1\x85"):
        try:
            check_description(text)
            taken = True
        except SubscriptionError:
            taken = False
        assert taken == bool(re.fullmatch(pattern, text)), repr(text)
