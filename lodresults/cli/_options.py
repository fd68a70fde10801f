"""
The options every command that talks to the API shares, checked as usage errors: the
key (``LOD_API_KEY`` or a key file), the base URL, the client's limits; and the parsing
of dates and durations given on the command line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lodresults._client import DEFAULT_BASE_URL, LodClient
from lodresults._windows.settle import parse_duration
from lodresults.cli._dates import parse_when
from lodresults.cli._keyfile import check_key, decode_key, read_key_file

__all__ = [
    "api_key",
    "client_factory",
    "connection_options",
    "duration",
    "make_from_options",
    "when",
]


def api_key(key_file: Path | None) -> str:
    if key_file is not None:
        try:
            return decode_key(read_key_file(key_file))
        except OSError as exc:
            raise click.UsageError(f"cannot read --api-key-file: {exc.strerror}") from None
        except ValueError as exc:
            raise click.UsageError(f"--api-key-file {key_file} {exc}") from None
    key = os.environ.get("LOD_API_KEY", "").strip()
    if not key:
        raise click.UsageError(
            "no API key: set LOD_API_KEY or pass --api-key-file FILE "
            "(a plain --api-key option is not offered: it would land in shell history and ps)"
        )
    try:
        return check_key(key)
    except ValueError as exc:
        raise click.UsageError(f"LOD_API_KEY {exc}") from None


def when(param: str, text: str, end_of_day: bool = False) -> int:
    try:
        return parse_when(text, end_of_day=end_of_day)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=param) from None


def duration(param: str, text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=param) from None


def client_factory(
    key: str,
    base_url: str,
    concurrency: int,
    rate_limit: float | None,
    timeout: float,
    max_retries: int,
    proxy: str | None = None,
    trust_env: bool = False,
) -> Callable[..., LodClient]:
    def make(**kw: Any) -> LodClient:
        return LodClient(
            key,
            base_url=base_url,
            max_concurrency=concurrency,
            rate_limit=rate_limit,
            timeout=timeout,
            max_retries=max_retries,
            proxy=proxy,
            trust_env=trust_env,
            **kw,
        )

    try:
        make()  # validate the options now, as a usage error (no session is opened)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    return make


def connection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--base-url",
            envvar="LOD_BASE_URL",
            default=DEFAULT_BASE_URL,
            show_default=True,
            help="API root (env LOD_BASE_URL). https:// only, http:// for localhost.",
        ),
        click.option(
            "--api-key-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Read the key from this file instead of LOD_API_KEY.",
        ),
        click.option(
            "--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
            help="Requests in flight at once.",
        ),
        click.option(
            "--rate-limit", type=click.FloatRange(0, min_open=True), default=5.0,
            show_default=True, help="Requests per second (adapts down on 429).",
        ),
        click.option(
            "--timeout", type=click.FloatRange(0, min_open=True), default=60.0,
            show_default=True, help="Seconds per request.",
        ),
        click.option(
            "--max-retries", type=click.IntRange(0, 100), default=5, show_default=True,
            help="Retries of a transient failure.",
        ),
        click.option(
            "--proxy", envvar="LOD_PROXY", metavar="URL",
            help="HTTP(S) proxy for every request (env LOD_PROXY).",
        ),
        click.option(
            "--trust-env", is_flag=True, envvar="LOD_TRUST_ENV",
            help="Use the proxy HTTPS_PROXY / NO_PROXY name.",
        ),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


def make_from_options(options: dict[str, Any]) -> Callable[..., LodClient]:
    return client_factory(
        api_key(options["api_key_file"]),
        options["base_url"],
        options["concurrency"],
        options["rate_limit"],
        options["timeout"],
        options["max_retries"],
        options["proxy"],
        options["trust_env"],
    )
