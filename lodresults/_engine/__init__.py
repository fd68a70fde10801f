"""Keeping a destination current: backfill, the change feed, watch."""
