"""The one bootstrap: the service's parts built from `Settings`, each when first asked for, so
that a command builds only what it uses (`drx projections status` opens the store and the read
database, not the group committer). Every entry point (the web app, the projector, each CLI
command, the benchmarks) gets its parts here, and none builds another's.

    with bootstrap(settings) as parts:
        parts.projector.status()

`bootstrap` refuses a store that is not there, or not migrated, with one sentence saying what to
do (`StoreNotReadyError`); only `drx migrate` and `drx serve` create one (`create=True`).

The parts over the domain's models (the event store, the intake, the projector, the queries
that fold states) import their modules when first built: a process that builds none of them,
the dispatcher's, then holds no pydantic or eventsourcing code (39 MiB against 53 measured).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from domain.clock import Clock, SystemClock
from infrastructure.access_log import AccessLog, AccessQueries
from infrastructure.api_keys import KeyRing, KeyStore
from infrastructure.change_feed import ChangeFeed, channel_for
from infrastructure.change_hub import ChangeHub
from infrastructure.console_secret import console_secret
from infrastructure.console_sign_outs import SignOuts
from infrastructure.database import (
    AsyncReadDatabase,
    ReadDatabase,
    open_async_read_database,
    open_read_database,
)
from infrastructure.intake_tally import IntakeTally
from infrastructure.leadership import leadership_for
from infrastructure.migrations import StoreNotReadyError, check_ready
from infrastructure.seals import Sealer, SealVerifier
from infrastructure.settings import Settings, configured_keys
from infrastructure.subscriptions import SecretBox, SubscriptionStore
from interfaces.dispatcher import Dispatcher
from interfaces.drx.signature import SignatureVerifier

if TYPE_CHECKING:
    from domain.application import Prescriptions
    from domain.audit import Auditor
    from domain.unit_of_work import GroupCommitter, Intake
    from infrastructure.projector import Projector
    from infrastructure.queries import AsyncReadQueries, ReadQueries
    from infrastructure.rebuild import Rebuilder

__all__ = ["Parts", "StoreNotReadyError", "bootstrap"]


class Parts:
    """The service's parts over one store; `close` closes those that were built."""

    def __init__(
        self, settings: Settings, *, clock: Clock | None = None, **projector_options: Any
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()  # the one clock signals are timed by
        self._projector_options = projector_options

    @cached_property
    def prescriptions(self) -> Prescriptions:
        """The event-sourced application (keep it: when collected, its pool closes)."""
        from infrastructure.eventstore import open_prescriptions

        return open_prescriptions(self.settings)

    @cached_property
    def read_db(self) -> ReadDatabase:
        return open_read_database(self.settings)

    @cached_property
    def queries(self) -> ReadQueries:
        from infrastructure.queries import ReadQueries

        return ReadQueries(self.read_db)

    @cached_property
    def async_read_db(self) -> AsyncReadDatabase:
        """The read database awaited on the web app's event loop (started with the app)."""
        return open_async_read_database(self.settings, self.read_db)

    @cached_property
    def async_queries(self) -> AsyncReadQueries:
        from infrastructure.queries import AsyncReadQueries

        return AsyncReadQueries(self.async_read_db)

    @cached_property
    def key_store(self) -> KeyStore:
        return KeyStore(self.read_db)

    @cached_property
    def keys(self) -> KeyRing:
        """The API keys this process accepts (started with the web app)."""
        return KeyRing(configured_keys(self.settings.api_keys), self.key_store)

    @cached_property
    def sign_outs(self) -> SignOuts:
        """The console sessions ended by signing out (started with the web app)."""
        return SignOuts(self.read_db)

    @cached_property
    def access_log(self) -> AccessLog:
        """This process's writer of the PHI access log (started with the web app)."""
        return AccessLog(self.read_db)

    @cached_property
    def intake_tally(self) -> IntakeTally:
        """This process's counts of the webhook's outcomes by minute (started with the web
        app), read by the console."""
        return IntakeTally(self.read_db)

    @cached_property
    def console_secret(self) -> bytes:
        """The key the console's sessions are signed with, the same in every process."""
        return console_secret(self.read_db, self.settings.encryption_key)

    @cached_property
    def access(self) -> AccessQueries:
        return AccessQueries(self.read_db)

    @cached_property
    def projector(self) -> Projector:
        from infrastructure.projector import projector_for

        return projector_for(
            self.prescriptions,
            self.read_db,
            self.settings,
            self.clock,
            sealer=self.sealer,
            **self._projector_options,
        )

    @cached_property
    def feed(self) -> ChangeFeed:
        return ChangeFeed(self.read_db)

    @cached_property
    def subscriptions(self) -> SubscriptionStore:
        return SubscriptionStore(self.read_db, self.feed, SecretBox(self.settings.encryption_key))

    @cached_property
    def dispatcher(self) -> Dispatcher:
        """Runs while this process holds the dispatcher's lead (one per database), which its
        `stop` gives up (a standby, or the next dispatcher on the database, takes it at once)."""
        lead = leadership_for(self.settings, "dispatcher")
        return Dispatcher(
            self.subscriptions, self.hub, lead.acquire, self.clock, release=lead.release
        )

    @cached_property
    def hub(self) -> ChangeHub:
        """This process's listener for new changes, shared by its streams (started by the
        first stream)."""
        return ChangeHub(self.feed, self.settings, channel_for(self.settings.postgres_schema))

    @cached_property
    def intake(self) -> Intake:
        from domain.unit_of_work import Intake
        from interfaces.drx.translator import report_digest

        return Intake(self.prescriptions, report_digest)

    @cached_property
    def committer(self) -> GroupCommitter:
        from domain.unit_of_work import GroupCommitter

        return GroupCommitter(self.intake)

    @cached_property
    def verifier(self) -> SignatureVerifier:
        return SignatureVerifier(self.settings.webhook_secrets)

    @cached_property
    def auditor(self) -> Auditor:
        from domain.audit import Auditor
        from interfaces.drx.translator import stored_fact

        return Auditor(self.prescriptions, self.verifier.matches, stored_fact)

    @cached_property
    def sealer(self) -> Sealer:
        """Seals the store's new events and access-log rows, writes checkpoints (run by the
        projector's loop where it leads, and by `drx audit checkpoint`)."""
        return Sealer(self.read_db, self.settings, self.clock)

    @cached_property
    def seal_verifier(self) -> SealVerifier:
        return SealVerifier(self.settings)

    @cached_property
    def rebuilder(self) -> Rebuilder:
        from infrastructure.rebuild import Rebuilder

        return Rebuilder(self.prescriptions, self.read_db, self.settings)

    def close(self) -> None:
        built = vars(self)
        if "keys" in built:
            self.keys.stop()
        if "sign_outs" in built:
            self.sign_outs.stop()
        if "access_log" in built:
            self.access_log.stop()
        if "intake_tally" in built:
            self.intake_tally.stop()
        if "hub" in built:
            self.hub.stop()
        if "dispatcher" in built:
            self.dispatcher.stop()
        if "committer" in built:
            self.committer.stop()
        if "projector" in built:
            self.projector.stop()
        if "read_db" in built:
            self.read_db.close()
        if "prescriptions" in built:
            self.prescriptions.close()


# The modules the parts above import when first built.
_PARTS_MODULES = (
    "domain.audit",
    "domain.unit_of_work",
    "infrastructure.eventstore",
    "infrastructure.projector",
    "infrastructure.queries",
    "infrastructure.rebuild",
    "interfaces.drx.translator",
)


def load_every_part() -> None:
    """Import now what the parts import when first built: a process that may build any of them
    (a web worker) calls it before `tune_for_serving` freezes what start-up made, so that the
    collector never walks those modules' objects."""
    for name in _PARTS_MODULES:
        importlib.import_module(name)


@contextmanager
def bootstrap(
    settings: Settings, *, clock: Clock | None = None, **projector_options: Any
) -> Iterator[Parts]:
    """The parts over a store that is there and migrated (else `StoreNotReadyError`)."""
    check_ready(settings)
    parts = Parts(settings, clock=clock, **projector_options)
    try:
        yield parts
    finally:
        parts.close()
