"""
The options every command that talks to the API shares, checked as usage errors: the
key (``LOD_API_KEY`` or a key file), the base URL, the client's limits; and the parsing
of dates and durations given on the command line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from lodresults._client import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RATE_LIMIT,
    DEFAULT_TIMEOUT,
    LodClient,
)
from lodresults._logging import enable as enable_logging
from lodresults._tenant import Tenant
from lodresults._windows.settle import parse_duration
from lodresults.cli._dates import parse_when
from lodresults.cli._keyfile import check_key, decode_key, read_key_file
from lodresults.cli._tenants import TenantsFileError, load_tenants

__all__ = [
    "api_key",
    "client_factory",
    "client_options",
    "connection_options",
    "debug_option",
    "duration",
    "make_from_options",
    "set_debug",
    "tenants_from",
    "tenants_option",
    "when",
]

F = TypeVar("F", bound=Callable[..., Any])


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


def _turn_on_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        set_debug(ctx)


_DEBUG_ON: Final = "lodresults.debug_logging"


def set_debug(ctx: click.Context) -> None:
    """``--debug``, before or after the command: debug logging, tracebacks on errors."""
    root = ctx.find_root()
    if root.meta.get(_DEBUG_ON):
        return  # given twice, before and after the command
    root.meta[_DEBUG_ON] = root.params["debug"] = True
    # Undone when the command ends: run inside another program, it leaves no handler.
    root.call_on_close(enable_logging(logging.DEBUG))


#: ``--debug`` after the command name too: options go anywhere.
debug_option = click.option(
    "--debug", is_flag=True, expose_value=False, callback=_turn_on_debug,
    help="Debug logging and tracebacks on errors (before or after the command).",
)  # fmt: skip


def connection_options(*, single_request: bool = False) -> Callable[[F], F]:
    """
    The options of a command that talks to the API (``--debug`` too); a command that
    sends a single request has no ``--concurrency``.
    """
    options = [
        click.option(
            "--base-url",
            envvar="LOD_BASE_URL",
            default=DEFAULT_BASE_URL,
            show_default=True,
            help="API root, ending in /api/v3 (env LOD_BASE_URL). https:// only, "
            "http:// for localhost.",
        ),
        click.option(
            "--api-key-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Read the key from this file instead of LOD_API_KEY.",
        ),
        click.option(
            "--concurrency", type=click.IntRange(1, 64), default=DEFAULT_MAX_CONCURRENCY,
            show_default=True, help="Requests in flight at once.",
        ),
        click.option(
            "--rate-limit", type=click.FloatRange(0, min_open=True), default=DEFAULT_RATE_LIMIT,
            show_default=True, help="Requests per second (adapts down on 429).",
        ),
        click.option(
            "--timeout", type=click.FloatRange(0, min_open=True), default=DEFAULT_TIMEOUT,
            show_default=True, help="Seconds per request, connect to last byte.",
        ),
        click.option(
            "--max-retries", type=click.IntRange(0, 100), default=DEFAULT_MAX_RETRIES,
            show_default=True,
            help="Times a transient failure is retried.",
        ),
        click.option(
            "--proxy", envvar="LOD_PROXY", metavar="URL",
            help="HTTP(S) proxy for every request (env LOD_PROXY).",
        ),
        click.option(
            "--trust-env", is_flag=True, envvar="LOD_TRUST_ENV",
            help="Use the proxy HTTPS_PROXY / NO_PROXY name.",
        ),
        debug_option,
    ]  # fmt: skip
    if single_request:
        del options[2]

    def decorate(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def make_from_options(options: dict[str, Any]) -> Callable[..., LodClient]:
    return client_factory(
        api_key(options["api_key_file"]),
        options["base_url"],
        options.get("concurrency", DEFAULT_MAX_CONCURRENCY),
        options["rate_limit"],
        options["timeout"],
        options["max_retries"],
        options["proxy"],
        options["trust_env"],
    )


def tenants_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--tenants",
        "tenants_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        metavar="FILE",
        help="Run for every tenant of this TOML file at once, into one database "
        "(instead of LOD_API_KEY / --api-key-file).",
    )(f)


def tenants_from(options: dict[str, Any]) -> dict[str, Tenant]:
    """The tenants of ``--tenants FILE``, their client options checked (usage errors)."""
    if options["api_key_file"] is not None:
        raise click.UsageError("--tenants and --api-key-file exclude each other")
    try:
        tenants = load_tenants(options["tenants_file"], default_base_url=options["base_url"])
    except TenantsFileError as exc:
        raise click.UsageError(f"--tenants {exc}") from None
    try:
        next(iter(tenants.values())).client(**client_options(options))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    return tenants


def client_options(options: dict[str, Any]) -> dict[str, Any]:
    """The ``LodClient`` options of the command line (all but the key and base URL)."""
    return {
        "max_concurrency": options["concurrency"],
        "rate_limit": options["rate_limit"],
        "timeout": options["timeout"],
        "max_retries": options["max_retries"],
        "proxy": options["proxy"],
        "trust_env": options["trust_env"],
    }
