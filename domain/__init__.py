"""The prescription domain: facts DRx reports, the state they imply, and the service that records them."""
