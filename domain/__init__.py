"""The prescription domain: the facts DRx reports, the state they imply, the service recording."""
