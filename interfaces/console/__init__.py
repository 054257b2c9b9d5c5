"""The operator console at `/console`: server-rendered pages over the service's parts, signed in
with an `operate` key (docs/operations.md#console)."""
