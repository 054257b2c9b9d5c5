"""The ways in and out of the service: the DRx contract, the HTTP API and the command line."""
