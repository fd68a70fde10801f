"""
lodresults: an async client for the Lab on Demand (Skillable) API v3 result commands.

Everything public is listed in ``__all__``; other modules are private.
"""

from __future__ import annotations

from lodresults._client import DEFAULT_BASE_URL, LodClient
from lodresults._destinations.base import Applied, Destination, OpenLab
from lodresults._destinations.sqlite import SQLiteStore
from lodresults._engine.backfill import BackfillResult, backfill
from lodresults._engine.watch import watch
from lodresults._events import (
    Event,
    EventHook,
    PhaseCompleted,
    PhaseProgress,
    RequestRetried,
    Throttled,
    WindowCompleted,
    WindowFailed,
    WindowsPlanned,
    WindowSplit,
)
from lodresults._exceptions import (
    LodApiError,
    LodAuthError,
    LodClientClosed,
    LodConnectionError,
    LodDeadlineError,
    LodDecodeError,
    LodError,
    LodInvalidArgument,
    LodJSONError,
    LodRateLimitError,
    LodRedirectError,
    LodResponseTooLarge,
    LodSchemaError,
    LodServerError,
    LodStatusError,
    LodTimeoutError,
    LodTransportError,
    LodWindowError,
    LodWindowTooLongError,
    StoreError,
)
from lodresults._records.models import CompletionStatus, LabResult
from lodresults._records.wire import dump_record, unstructure_record
from lodresults._windows.batches import WindowBatch
from lodresults._windows.plan import MAX_WINDOW_SECONDS, Window

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BASE_URL",
    "MAX_WINDOW_SECONDS",
    "Applied",
    "BackfillResult",
    "CompletionStatus",
    "Destination",
    "Event",
    "EventHook",
    "LabResult",
    "LodApiError",
    "LodAuthError",
    "LodClient",
    "LodClientClosed",
    "LodConnectionError",
    "LodDeadlineError",
    "LodDecodeError",
    "LodError",
    "LodInvalidArgument",
    "LodJSONError",
    "LodRateLimitError",
    "LodRedirectError",
    "LodResponseTooLarge",
    "LodSchemaError",
    "LodServerError",
    "LodStatusError",
    "LodTimeoutError",
    "LodTransportError",
    "LodWindowError",
    "LodWindowTooLongError",
    "OpenLab",
    "PhaseCompleted",
    "PhaseProgress",
    "RequestRetried",
    "SQLiteStore",
    "StoreError",
    "Throttled",
    "Window",
    "WindowBatch",
    "WindowCompleted",
    "WindowFailed",
    "WindowSplit",
    "WindowsPlanned",
    "__version__",
    "backfill",
    "dump_record",
    "unstructure_record",
    "watch",
]
