"""
The ``api_key`` and where it may travel: a holder whose ``str``/``repr`` never show it,
and the check of the base URL it will be sent to (https, or plain http to loopback only).

Pure: no I/O.
"""

from __future__ import annotations

import ipaddress

from yarl import URL

from lodresults._exceptions import LodInvalidArgument
from lodresults._request.redact import Redactor

__all__ = ["ApiKey", "check_base_url", "check_proxy", "is_loopback"]


class _Secret(str):
    """The key as the header value: a ``str`` whose ``repr`` hides it (dict reprs, locals)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"

    def __reduce__(self) -> str:
        raise TypeError("the api_key cannot be pickled")


class ApiKey:
    """
    Holds the key; ``str``/``repr`` show ``***`` so it cannot leak by formatting.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        problem = _key_problem(value)
        if problem is not None:
            del value  # not a local of the frame the error's traceback shows
            raise LodInvalidArgument(problem)
        self._value = _Secret(value)

    @classmethod
    def checked(cls, value: object) -> ApiKey | LodInvalidArgument:
        """
        The key, or the error to raise once the caller has dropped its own plain-text
        copy (``del``): raised from here, the caller's frame would still hold the key as
        a local, and a traceback formatted with locals would show it.
        """
        problem = _key_problem(value)
        return cls(value) if problem is None else LodInvalidArgument(problem)  # type: ignore[arg-type]

    def reveal(self) -> str:
        """The key itself, for the one header that carries it (its ``repr`` is ``'***'``)."""
        return self._value

    def redactor(self) -> Redactor:
        """A ``Redactor`` that removes every piece of this key from a text."""
        return Redactor(self._value)

    def __repr__(self) -> str:
        return "ApiKey('***')"

    __str__ = __repr__

    def __reduce__(self) -> str:
        raise TypeError("ApiKey cannot be pickled")


def _key_problem(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "api_key must be a non-empty string"
    if any(c in value for c in "\r\n\0"):
        return "api_key contains a control character"
    if not (value.isascii() and value.isprintable()):
        # Keys are issued as printable ASCII. Any other character would go out as bytes
        # a server may echo back in another spelling (latin-1 mojibake of UTF-8) that
        # no scrubber recognises.
        return "api_key must be printable ASCII (as issued); it holds another character"
    return None


def is_loopback(host: str | None) -> bool:
    """
    True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1``.

    Not for ``*.localhost`` names: RFC 6761 asks resolvers to map them to loopback, but
    many (a corporate DNS, ``/etc/hosts`` entries) do not, and a plain-http key sent
    there would leave the machine.
    """
    if not host:
        return False
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(base_url: str) -> URL:
    """
    Validate where the key will be sent: https, or plain http only to a loopback host.
    """
    if not isinstance(base_url, str):
        raise LodInvalidArgument("base_url must be a string")
    url = URL(base_url)
    if url.scheme not in ("https", "http") or not url.host:
        raise LodInvalidArgument(f"base_url must be an absolute https:// URL, got {base_url!r}")
    if url.scheme == "http" and not is_loopback(url.host):
        raise LodInvalidArgument(
            "base_url uses plain http:// to a non-loopback host; the api_key would travel "
            "unencrypted. Use https:// (http:// is allowed for localhost only)"
        )
    if url.user or url.password or url.query_string or url.fragment:
        raise LodInvalidArgument(
            "base_url must not carry credentials, a query or a fragment; pass the key as api_key"
        )
    return url.with_path(url.path.rstrip("/"))


def check_proxy(base_url: URL, proxy: str | URL | None) -> URL | None:
    """
    Validate a proxy the requests to ``base_url`` would go through (None: none).

    Through a proxy, an ``https://`` origin is reached by a CONNECT tunnel: the proxy
    relays TLS bytes it cannot read, and the key is safe whatever the proxy's own scheme.
    A plain ``http://`` origin (loopback only) would hand the proxy the request itself,
    the ``api_key`` header included: allowed only to a proxy on loopback too.
    """
    if proxy is None:
        return None
    url = URL(proxy) if isinstance(proxy, str) else proxy
    if url.scheme not in ("http", "https") or not url.host:
        raise LodInvalidArgument("proxy must be an absolute http:// or https:// URL")
    if base_url.scheme == "http" and not is_loopback(url.host):
        raise LodInvalidArgument(
            f"base_url is plain http://: through the proxy on {url.host} the api_key would "
            "leave this machine unencrypted. Use https://, a proxy on loopback, or no proxy "
            "(trust_env=False, or NO_PROXY for this host)"
        )
    return url
