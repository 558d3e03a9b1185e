"""Shared foundations: clock, asyncio helpers, settings."""
