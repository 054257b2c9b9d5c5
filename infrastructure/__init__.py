"""Adapters to the outside: settings, the event store on SQLite or PostgreSQL, migrations."""
