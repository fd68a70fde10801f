"""
What an HTTP status other than 200 means: the error of the tree it maps to.

Pure: the transport hands over the status and the texts it has already scrubbed of the
key (an excerpt of the body, ``Retry-After``, ``Location``).
"""

from __future__ import annotations

from collections.abc import Callable

from yarl import URL

from lodresults._exceptions import (
    LodAuthError,
    LodRateLimitError,
    LodRedirectError,
    LodServerError,
    LodStatusError,
)
from lodresults._request.retry import parse_retry_after

__all__ = ["origin_of", "status_error"]


def status_error(
    command: str,
    status: int,
    *,
    excerpt: str,
    retry_after: str | None,
    target: str,
    base_url: str = "",
) -> LodStatusError:
    """
    The error for ``status``: 3xx ``LodRedirectError`` (``target``: where it pointed),
    401/403 ``LodAuthError``, 429 ``LodRateLimitError`` (with ``Retry-After`` in seconds),
    408 and 5xx ``LodServerError``, anything else ``LodStatusError`` (a 404 says to check
    ``base_url``: the API answers its commands, so a 404 means another path).
    """
    detail = f": {excerpt!r}" if excerpt else ""
    if 300 <= status < 400:
        return LodRedirectError(
            f"{command}: HTTP {status} redirect to {target} refused; "
            "redirects are never followed so the api_key cannot leave the configured "
            "host. Fix base_url",
            status=status,
            command=command,
        )
    if status in (401, 403):
        return LodAuthError(
            f"{command}: HTTP {status}: the api_key was refused{detail}",
            status=status,
            command=command,
        )
    if status == 429:
        ra = parse_retry_after(retry_after)
        return LodRateLimitError(
            f"{command}: HTTP 429 rate limited"
            + (f" (Retry-After {ra:.1f} s)" if ra is not None else ""),
            command=command,
            retry_after=ra,
        )
    if status == 408 or status >= 500:
        return LodServerError(f"{command}: HTTP {status}{detail}", status=status, command=command)
    if status == 404:
        at = f" at {base_url}" if base_url else ""
        return LodStatusError(
            f"{command}: HTTP 404 Not Found{at}: check the base URL, it should end in "
            f"/api/v3{detail}",
            status=status,
            command=command,
        )
    return LodStatusError(f"{command}: HTTP {status}{detail}", status=status, command=command)


def origin_of(location: str | None, scheme: str, *, scrub: Callable[[str], str]) -> str:
    """
    Where a redirect pointed: its origin only (a path or query may carry anything),
    passed through ``scrub``; a protocol-relative ``//host/path`` keeps ``scheme``, ours.
    """
    if not location:
        return "(no Location)"
    try:
        url = URL(location)
        host = url.host
        port = url.explicit_port
    except (ValueError, TypeError):
        return "(invalid Location)"
    if not host:
        return "(same host)"
    return scrub(f"{url.scheme or scheme}://{host}" + (f":{port}" if port is not None else ""))
