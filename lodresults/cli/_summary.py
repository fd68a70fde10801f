"""What one run of the engine did, in short lines for the CLI (each within 80 columns)."""

from __future__ import annotations

from lodresults._engine.backfill import BackfillResult

__all__ = ["phase_lines"]


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def phase_lines(result: BackfillResult) -> list[str]:
    """
    One line per phase that sent a request: how many, and what applying its copies did
    (new labs, changed rows, unchanged rows). Empty if the run sent nothing.
    """
    lines = []
    if result.feed is not None:
        sent = _plural(result.feed_requests, "request")
        lines.append(f"feed, {sent}: {result.feed}")
    if result.windows:
        lines.append(f"windows, {_plural(result.windows, 'request')}: {result.fetched}")
    if result.refreshed:
        sent = _plural(result.refresh_requests, "request")
        lines.append(f"refresh, {sent} for {_plural(result.refreshed, 'lab')}: {result.refresh}")
    return lines
