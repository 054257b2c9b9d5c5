"""Versioned SQL for the store's tables, one folder per dialect; applied once each, never edited."""
