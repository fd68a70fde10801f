"""Peer 1: the loop a user writes by hand."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

WEEK = 7 * 86400


async def iter_windows(
    base_url: str, api_key: str, start: int, end: int
) -> AsyncIterator[list[dict[str, Any]]]:
    """Each 7-day window's records in turn, one request after another."""
    async with aiohttp.ClientSession(headers={"api_key": api_key}) as session:
        s = start
        while True:
            e = min(s + WEEK, end)
            async with session.get(f"{base_url}/Results", params={"start": s, "end": e}) as r:
                r.raise_for_status()
                doc = json.loads(await r.read())
            if doc.get("Status") != 1:
                raise RuntimeError(doc.get("Error"))
            yield doc["Results"]
            if e >= end:
                break
            s = e


async def fetch_all(base_url: str, api_key: str, start: int, end: int) -> list[dict[str, Any]]:
    """Every lab in [start, end], one 7-day window after another, deduplicated by id."""
    seen: dict[int, dict[str, Any]] = {}
    async for records in iter_windows(base_url, api_key, start, end):
        for rec in records:
            seen.setdefault(rec["LabInstanceId"], rec)
    return list(seen.values())
