"""The simulator's lifecycles: contract-valid, covering every kind of fact, planned as asked."""

from __future__ import annotations

import json
import random

from domain.facts import Fact, FactKind
from interfaces.drx.translator import parse_envelope, read_fact
from interfaces.simulator import lifecycle, plan


def test_generated_lifecycles_are_contract_valid_and_cover_every_kind_of_fact():
    rng = random.Random(3)
    kinds = set()
    for n in range(400):
        for event in lifecycle(rng, "t", n):
            body = json.dumps(event).encode()
            fact = read_fact(parse_envelope(body), body)
            assert isinstance(fact, Fact), fact
            kinds.add(fact.kind)
    assert kinds == set(FactKind)


def test_a_plan_sends_every_event_plus_the_duplicates_in_each_prescriptions_order():
    planned = plan(50, duplicates=0.3, shuffle=False, seed=9)
    events = [e for events in planned.lifecycles.values() for e in events]
    assert {e["id"] for e in planned.sends} == {e["id"] for e in events}
    duplicates = len(planned.sends) - len(events)
    assert 0.15 * len(events) < duplicates < 0.45 * len(events)
    for subject, lifecycle_events in planned.lifecycles.items():
        firsts = []
        for e in planned.sends:
            if e["subject"] == subject and e["id"] not in firsts:
                firsts.append(e["id"])
        assert firsts == [e["id"] for e in lifecycle_events]
