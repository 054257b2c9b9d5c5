"""The dry run of replays (`Intake.dry_run`, `interfaces.replays.dry_run`), on both stores: it
says what each replay would do, with the state before and after, and saves nothing."""

from __future__ import annotations

import copy

from domain.commands import ParkDelivery
from domain.dry_run import NOT_REPLAYABLE, PARKED_AGAIN, PROCESSED, state_changes
from interfaces import replays
from tests.helpers import command_for, deliver, force_fault, load_example


def park(parts, payload, reason="test: a fault of ours, since fixed"):
    """Store a readable delivery as parked (as a fault of ours would have left it)."""
    parts.intake.take(ParkDelivery(command_for(payload).delivery, reason))


def head(parts):
    return parts.prescriptions.recorder.max_notification_id()


def test_a_dry_run_says_processed_with_the_state_change_and_saves_nothing(parts):
    app = parts.prescriptions
    received, shipped = load_example("received"), load_example("shipped")
    deliver(app, received)
    park(parts, shipped)
    stored = head(parts)

    (preview,) = replays.dry_run(parts, [shipped["id"]])

    assert preview.outcome == PROCESSED
    assert preview.reason is None
    assert preview.subject == shipped["subject"]
    assert (preview.before.status, preview.after.status) == ("received", "shipped")
    changed = {c.field: (c.before, c.after) for c in state_changes(preview.before, preview.after)}
    assert changed["status"] == ("received", "shipped")
    assert changed["version"] == (1, 2)
    assert head(parts) == stored  # nothing saved
    assert app.delivery(shipped["id"]).is_parked
    assert app.state(shipped["subject"]).status == "received"
    # ...and the replay then does what the dry run said.
    assert replays.replay(parts, shipped["id"]).outcome.value == "accepted"
    assert app.state(shipped["subject"]).status == "shipped"


def test_a_delivery_that_still_cannot_be_read_would_be_parked_again(parts):
    unknown = {**load_example("received"), "id": "evt_unknown_type", "type": "drx.prescription.x"}
    deliver(parts.prescriptions, unknown)
    stored = head(parts)

    (preview,) = replays.dry_run(parts, [unknown["id"]])

    assert preview.outcome == PARKED_AGAIN
    assert "drx.prescription.x" in preview.reason
    assert preview.before == preview.after
    assert head(parts) == stored


def test_replays_of_one_group_follow_each_other(parts):
    """The second replay of a prescription sees the first's fact, as replaying in turn does."""
    received, shipped = load_example("received"), load_example("shipped")
    park(parts, received)
    park(parts, shipped)

    first, second = replays.dry_run(parts, [received["id"], shipped["id"]])

    assert (first.before.version, first.after.version) == (0, 1)
    assert (second.before.version, second.after.version) == (1, 2)
    assert second.after.status == "shipped"
    assert parts.prescriptions.delivery(received["id"]).is_parked


def test_what_cannot_be_replayed_is_said_so(parts):
    received = load_example("received")
    deliver(parts.prescriptions, received)
    missing, processed = replays.dry_run(parts, ["evt_never_sent", received["id"]])
    assert (missing.outcome, missing.reason) == (NOT_REPLAYABLE, "no such delivery")
    assert (processed.outcome, processed.reason) == (NOT_REPLAYABLE, "not parked")


def test_a_fault_of_ours_on_the_replay_is_predicted_as_parked(parts, monkeypatch):
    received = load_example("received")
    park(parts, copy.deepcopy(received))
    force_fault(monkeypatch, received["id"], ValueError)
    (preview,) = replays.dry_run(parts, [received["id"]])
    assert preview.outcome == PARKED_AGAIN
    assert preview.reason.startswith("internal error: ValueError")
