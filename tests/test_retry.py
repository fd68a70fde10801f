"""Retry policy: which errors retry, Retry-After parsing and capping, backoff bounds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lodresults import (
    LodApiError,
    LodAuthError,
    LodConnectionError,
    LodJSONError,
    LodRateLimitError,
    LodRedirectError,
    LodResponseTooLarge,
    LodSchemaError,
    LodServerError,
    LodStatusError,
    LodTimeoutError,
)
from lodresults._exceptions import LodError
from lodresults._request.retry import RetryPolicy, is_retryable, parse_retry_after

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20", 20.0),
        ("0", 0.0),
        ("-1", 0.0),
        ("1.5", 1.5),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        (format_datetime(NOW - timedelta(seconds=30), usegmt=True), 0.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Both header forms parse; garbage is ignored; the past means now."""
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (LodConnectionError("x"), True),
        (LodConnectionError("tls", retryable=False), False),
        (LodTimeoutError("x"), True),
        (LodRateLimitError("x"), True),
        (LodServerError("x", status=503), True),
        (LodJSONError("x"), True),
        (LodAuthError("x", status=401), False),
        (LodRedirectError("x", status=302), False),
        (LodStatusError("x", status=404), False),
        (LodApiError("x", error_text="x"), False),
        (LodSchemaError("x"), False),
        (LodResponseTooLarge("x"), False),
    ],
)
def test_what_is_retried(error: LodError, retry: bool) -> None:
    """Transient failures retry; the caller's or the server's permanent ones do not."""
    assert is_retryable(error) is retry


@given(st.integers(1, 30), st.floats(0, 1))
def test_backoff_within_full_jitter_bounds(attempt: int, r: float) -> None:
    """Backoff is uniform in [0, min(max_wait, initial * 2**(attempt-1))]."""
    p = RetryPolicy(initial_wait=0.5, max_wait=8.0, rand=lambda: r)
    d = p.delay(attempt)
    assert 0 <= d <= min(8.0, 0.5 * 2 ** (attempt - 1))


def test_retry_after_is_capped_and_jittered() -> None:
    """A day-long Retry-After is cut to the cap; jitter adds at most 10 %."""
    p = RetryPolicy(max_retry_after=60.0, rand=lambda: 1.0)
    assert p.delay(1, retry_after=86400) == pytest.approx(66.0)
    assert RetryPolicy(rand=lambda: 0.0).delay(1, retry_after=3) == 3.0
