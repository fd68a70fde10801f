"""
``Tenant``: one organisation's API key and base URL, the unit that many-key runs (the CLI's
tenants file, ``lodresults.dagster``) are made of. Each tenant gets its own ``LodClient``,
hence its own connection pool and its own adaptive rate limiter.

Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Any, Final

import attrs

from lodresults._client import DEFAULT_BASE_URL, LodClient
from lodresults._exceptions import LodInvalidArgument
from lodresults._request.key import ApiKey, check_base_url

__all__ = ["Tenant", "tenant_name_problem"]

#: A tenant's name: a database value, a Dagster partition key, a word in a summary line.
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def tenant_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a tenant, or None if it can."""
    if isinstance(name, str) and _NAME.fullmatch(name):
        return None
    return "a name is 1-64 letters, digits, '_' or '-', starting with a letter or digit"


@attrs.frozen(init=False, repr=False, eq=False)
class Tenant:
    """
    One API key and the API root it is sent to.

    ``repr``/``str`` show the key as ``***``; pickling raises (the key would be written
    out in the clear). The key and base URL are checked here, before any request, as
    ``LodClient`` checks them.

    Args:
        api_key: The key sent in the ``api_key`` header. Never logged or shown.
        base_url: The API root. Must be ``https://``; ``http://`` only to loopback.

    .. versionadded:: 0.1.0
    """

    _key: ApiKey
    base_url: str

    def __init__(self, api_key: str, base_url: str = DEFAULT_BASE_URL) -> None:
        key = ApiKey.checked(api_key)
        del api_key  # the ApiKey hides it; a plain str local would show in tracebacks
        if isinstance(key, LodInvalidArgument):
            raise key
        self.__attrs_init__(key, str(check_base_url(base_url)))

    def client(self, **options: Any) -> LodClient:
        """A new ``LodClient`` for this tenant; ``options`` as ``LodClient`` takes them."""
        return LodClient(self._key.reveal(), base_url=self.base_url, **options)

    def reveal_key(self) -> str:
        """The key itself, for code that must hand it on (a dlt source, a header)."""
        return self._key.reveal()

    def __repr__(self) -> str:
        # getattr: a half-made Tenant (its check failed) is shown by tracebacks too.
        return f"Tenant(api_key='***', base_url={getattr(self, 'base_url', None)!r})"

    __str__ = __repr__

    def __reduce__(self) -> str:
        raise TypeError("Tenant cannot be pickled: it holds an api_key")
