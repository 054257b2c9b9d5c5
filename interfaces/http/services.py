"""What the handlers share: the application, the read model, the projections, the verifier."""

from __future__ import annotations

from dataclasses import dataclass

import anyio.to_thread

from domain.commands import ParkDelivery, RecordDelivery, ReplayDelivery
from domain.service import Prescriptions, Receipt
from infrastructure.projections import ProjectionRunner
from infrastructure.readmodel import ReadModel
from infrastructure.readstore import ReadDatabase
from infrastructure.settings import Settings
from interfaces.drx.signature import SignatureVerifier
from interfaces.http.committer import GroupCommitter
from interfaces.http.metrics import WebhookMetrics


@dataclass
class Services:
    settings: Settings
    prescriptions: Prescriptions
    verifier: SignatureVerifier
    read_db: ReadDatabase
    read_model: ReadModel
    projections: ProjectionRunner
    metrics: WebhookMetrics
    committer: GroupCommitter

    async def handle_delivery(self, command: RecordDelivery | ParkDelivery) -> Receipt:
        """A webhook delivery, group-committed; one our translator could not read is parked
        (in a worker thread: the application's calls block)."""
        if isinstance(command, RecordDelivery):
            receipt = await self.committer.submit_async(command)
        else:
            receipt = await anyio.to_thread.run_sync(self.prescriptions.park_delivery, command)
        # Where this process runs the projections (create_app's default, the tests), they
        # follow at once; beside `drx serve`'s projector process this is a no-op.
        self.projections.wake()
        return receipt

    def replay(self, command: ReplayDelivery) -> Receipt:
        receipt = self.prescriptions.replay_delivery(command)
        self.projections.wake()
        return receipt

    def close(self) -> None:
        self.committer.stop()
        self.projections.stop()
        self.read_db.close()
        self.prescriptions.close()
