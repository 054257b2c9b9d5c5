"""What the handlers share: the application over the store, the signature verifier, the settings."""

from __future__ import annotations

from dataclasses import dataclass

from domain.commands import ParkDelivery, RecordDelivery
from domain.service import Prescriptions, Receipt
from infrastructure.settings import Settings
from interfaces.drx.signature import SignatureVerifier


@dataclass
class Services:
    settings: Settings
    prescriptions: Prescriptions
    verifier: SignatureVerifier

    def handle(self, command: RecordDelivery | ParkDelivery) -> Receipt:
        if isinstance(command, RecordDelivery):
            return self.prescriptions.record_delivery(command)
        return self.prescriptions.park_delivery(command)
