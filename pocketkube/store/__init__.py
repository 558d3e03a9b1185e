"""Revisioned key-value log with watch (SQLite and memory backends)."""
