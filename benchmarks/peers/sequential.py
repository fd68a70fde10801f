"""Peer 1: the loop a user writes by hand."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

WEEK = 7 * 86400


async def fetch_all(base_url: str, api_key: str, start: int, end: int) -> list[dict[str, Any]]:
    """Every lab in [start, end], one 7-day window after another, deduplicated by id."""
    seen: dict[int, dict[str, Any]] = {}
    async with aiohttp.ClientSession(headers={"api_key": api_key}) as session:
        s = start
        while True:
            e = min(s + WEEK, end)
            async with session.get(f"{base_url}/Results", params={"start": s, "end": e}) as r:
                r.raise_for_status()
                doc = json.loads(await r.read())
            if doc.get("Status") != 1:
                raise RuntimeError(doc.get("Error"))
            for rec in doc["Results"]:
                seen.setdefault(rec["LabInstanceId"], rec)
            if e >= end:
                break
            s = e
    return list(seen.values())
