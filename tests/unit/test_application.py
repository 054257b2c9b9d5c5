"""The one override of the eventsourcing library's internals (`domain/application.py`: `save`
runs the library's own steps without its runtime Protocol checks) holds: it stores exactly
what the library's `save` stores, and it fails here when the library's `save` changes, so that
the copy is looked at again."""

from __future__ import annotations

import hashlib
import inspect
from datetime import UTC, datetime

from eventsourcing.application import Application

from domain.application import Prescriptions
from domain.delivery import Delivery, RawDelivery
from domain.facts import Fact, FactKind
from domain.prescription import Prescription

# The library's `Application.save` as this override was written against (eventsourcing 9.5.6):
# it collects the events, then `_record`, `_take_snapshots`, `_notify`, and the deprecated
# `notify` hook (a no-op unless overridden; Prescriptions does not override it).
LIBRARY_SAVE_DIGEST = "4e9747d14b8fd046df1b9b8ce688be89030978de0c04a632e6a7ec783dc7c5cc"


def test_the_librarys_save_is_the_one_the_override_copies():
    source = inspect.getsource(Application.save)
    assert hashlib.sha256(source.encode()).hexdigest() == LIBRARY_SAVE_DIGEST, (
        "eventsourcing's Application.save changed: compare it with Prescriptions.save "
        "(domain/application.py), then update LIBRARY_SAVE_DIGEST"
    )
    assert "notify" not in vars(Prescriptions)  # the deprecated hook the override skips


def aggregates() -> list[object]:
    prescription = Prescription("drx_rx_app")
    prescription.record(Fact.read("evt_1", FactKind.SENT, datetime(2025, 1, 1, tzinfo=UTC), 0, {}))
    delivery = Delivery.receive(
        RawDelivery("evt_1", "drx.prescription.sent", "drx_rx_app", "{}", "m", "1", "v1,x")
    )
    delivery.mark_processed(fact_recorded=True)
    return [prescription, delivery]


def stored(app: Prescriptions) -> list[tuple[object, int, str]]:
    return [
        (n.originator_id, n.originator_version, n.topic)
        for n in app.recorder.select_notifications(start=1, limit=100)
    ]


def test_the_override_stores_what_the_librarys_save_stores():
    ours, theirs = (Prescriptions(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}) for _ in "ab")
    first, second = aggregates(), aggregates()
    recordings = ours.save(*first)
    library = Application.save(theirs, *second)
    assert [r.notification.topic for r in recordings] == [r.notification.topic for r in library]
    assert [(v, t) for _, v, t in stored(ours)] == [(v, t) for _, v, t in stored(theirs)]
    assert len(stored(ours)) == 4  # Opened, Sent; Received, Processed
    # Read back, each is the aggregate that was saved.
    prescription = ours.prescription("drx_rx_app")
    assert prescription.version == first[0].version  # type: ignore[attr-defined]
    assert ours.delivery("evt_1").status == "processed"
