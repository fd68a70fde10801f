"""
What a user would write instead of lodresults, each the honest best of its approach.

- ``sequential``: a hand-written loop, one aiohttp session, one 7-day window at a time,
  stdlib ``json`` and dicts.
- ``gather``: ``asyncio.gather`` over all windows under a semaphore, orjson and dicts,
  no typing and no retries: the raw-speed ceiling of the fetch path.
- ``decode``: decode-only ceilings on the same bodies (orjson to dicts, msgspec to typed
  structs).
"""
