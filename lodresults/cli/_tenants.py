"""
The tenants file: one TOML table per tenant, naming where its key is (never the key)::

    [tenants.acme]
    api_key_env = "ACME_LOD_KEY"

    [tenants.globex]
    api_key_file = "keys/globex.key"     # relative to this file
    base_url = "https://labondemand.com/api/v3"

Errors name the file and the tenant, never a key.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Final

from lodresults._exceptions import LodInvalidArgument
from lodresults._tenant import Tenant, tenant_name_problem
from lodresults.cli._keyfile import check_key, decode_key, read_key_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["TenantsFileError", "load_tenants", "parse_tenants"]

_KEYS: Final = frozenset({"api_key_env", "api_key_file", "base_url"})


class TenantsFileError(ValueError):
    """The tenants file cannot be used; the message names the file and the tenant."""


def load_tenants(path: Path, *, default_base_url: str) -> dict[str, Tenant]:
    """The tenants of the file at ``path``, in the file's order."""
    return parse_tenants(_read(path), path, default_base_url=default_base_url)


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise TenantsFileError(f"{path}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TenantsFileError(f"{path}: is not UTF-8 text") from None


def parse_tenants(text: str, path: Path, *, default_base_url: str) -> dict[str, Tenant]:
    """
    The tenants in ``text`` (read from ``path``: key files are relative to its folder),
    their keys read from ``os.environ`` or their key files.

    An error is raised afresh from here, with the text dropped: a key wrongly written into
    the file must not reach a traceback shown with its frames' locals.
    """
    try:
        return _parse(text, path, default_base_url)
    except TenantsFileError as exc:
        message = str(exc)
    del text
    raise TenantsFileError(message)


def _parse(text: str, path: Path, default_base_url: str) -> dict[str, Tenant]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TenantsFileError(f"{path}: is not valid TOML: {exc}") from None
    extra = sorted(set(doc) - {"tenants"})
    if extra:
        raise TenantsFileError(
            f"{path}: unknown top-level key {extra[0]!r} (expected [tenants.NAME])"
        )
    tables = doc.get("tenants")
    if not isinstance(tables, dict) or not tables:
        raise TenantsFileError(f"{path}: defines no tenant (expected [tenants.NAME] tables)")
    tenants: dict[str, Tenant] = {}
    for name, table in tables.items():
        where = f"{path}: tenant {name!r}"
        problem = tenant_name_problem(name)
        if problem is not None:
            raise TenantsFileError(f"{where}: {problem}")
        if not isinstance(table, dict):
            raise TenantsFileError(f"{where}: expected a table [tenants.{name}]")
        tenants[name] = _tenant(table, where, path.parent, default_base_url)
    return tenants


def _tenant(table: dict[str, Any], where: str, folder: Path, default_base_url: str) -> Tenant:
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        hint = (
            "; a key is never written in this file: use api_key_env or api_key_file"
            if "api_key" in unknown
            else ""
        )
        raise TenantsFileError(f"{where}: unknown setting {unknown[0]!r}{hint}")
    for setting, value in table.items():
        if not isinstance(value, str):
            raise TenantsFileError(f"{where}: {setting} must be a string")
    sources = [s for s in ("api_key_env", "api_key_file") if s in table]
    if len(sources) != 1:
        raise TenantsFileError(f"{where}: give exactly one of api_key_env, api_key_file")
    base_url = table.get("base_url", default_base_url)
    try:
        return Tenant(_key(table, where, folder), base_url=base_url)
    except LodInvalidArgument as exc:
        raise TenantsFileError(f"{where}: {exc}") from None


def _key(table: dict[str, Any], where: str, folder: Path) -> str:
    # Each failure is raised outside its ``except`` block: the caught error's traceback
    # holds frames whose locals hold the (malformed) key, and ``from None`` would keep it
    # as ``__context__``.
    if "api_key_env" in table:
        var = table["api_key_env"]
        try:
            return check_key(os.environ.get(var, ""))
        except ValueError as exc:
            problem = f"environment variable {var} {exc}"
    else:
        file = folder / table["api_key_file"]
        try:
            return decode_key(read_key_file(file))
        except OSError as exc:
            problem = f"cannot read key file {file}: {exc.strerror}"
        except ValueError as exc:
            problem = f"key file {file} {exc}"
    raise TenantsFileError(f"{where}: {problem}")
