"""The Litestar application: the DRx webhook and the read endpoints for internal apps."""
