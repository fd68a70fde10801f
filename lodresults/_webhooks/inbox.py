"""
One push as the receiver reads it: who sent it, whether it carries the secret, which lab
it names. Pure: no I/O, no queue; the answer to a bad push is a ``Refused`` naming why.

Lab on Demand signs nothing: an "API consumer" sends static headers, so the shared secret
is the exact value of one header (``Authorization`` by default), compared in constant
time. The lab id comes from the ``id`` query parameter (the URL token ``{id}``) or the
JSON body's ``Id``; the body, if any, must be a JSON object. No refusal quotes what was
sent (a secret put in the wrong place would be echoed).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Final

import attrs
import orjson

from lodresults._records.schema import INT64_MAX

__all__ = [
    "KNOWN_EVENTS",
    "Accepted",
    "Network",
    "Refused",
    "check_sender",
    "parse_networks",
    "parse_push",
]

#: Lab events a push may name (compared without case, spaces, dashes or underscores).
KNOWN_EVENTS: Final = (
    "Launched",
    "Started",
    "Saved",
    "Resumed",
    "Completed",
    "TornDown",
    "Scored",
    "Submitted",
    "Cancelled",
)
_EVENT_KEYS: Final = {e.lower(): e for e in KNOWN_EVENTS}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@attrs.frozen
class Accepted:
    """A readable push: the lab it names, and its event if it said one."""

    lab_instance_id: int
    event: str | None


@attrs.frozen
class Refused:
    """A push refused with HTTP ``status`` because ``reason``."""

    status: int
    reason: str


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """
    ``--allow`` values (CIDR or single addresses) as networks; ValueError names a bad one
    by its position (not its text: a secret pasted there by mistake is not repeated).
    """
    out = []
    for i, v in enumerate(values, 1):
        try:
            out.append(ipaddress.ip_network(v.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"value {i} is not an IP network or address (e.g. 203.0.113.0/24)"
            ) from None
    return tuple(out)


def check_sender(
    remote: str | None,
    headers: Mapping[str, str],
    *,
    secret: bytes,
    header: str,
    allow: tuple[Network, ...],
) -> Refused | None:
    """None if the push may be read: its address allowed, its secret header exact."""
    if allow:
        try:
            address = ipaddress.ip_address((remote or "").split("%")[0])
        except ValueError:
            return Refused(403, "the sender's address is not allowed")
        if not any(address in net for net in allow):
            return Refused(403, "the sender's address is not allowed")
    given = headers.get(header)
    # compare_digest on bytes: constant time whatever the values (str needs ASCII).
    if given is None or not hmac.compare_digest(given.encode("utf-8", "replace"), secret):
        return Refused(401, f"missing or wrong secret in the {header} header")
    return None


def _lab_id(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int) and 0 < value <= INT64_MAX:
        return value
    return None


def parse_push(query: Mapping[str, str], body: bytes) -> Accepted | Refused:
    """The lab id and event of a push whose sender was checked, or why it is refused."""
    document: dict[str, object] = {}
    if body.strip():
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Refused(400, "the body is not JSON")
        if not isinstance(parsed, dict):
            return Refused(400, "the body is not a JSON object")
        document = parsed
    from_query = from_body = None
    if "id" in query:
        from_query = _lab_id(query["id"])
        if from_query is None:
            return Refused(400, "the id parameter is not a lab instance id (a positive integer)")
    if "Id" in document:
        from_body = _lab_id(document["Id"])
        if from_body is None:
            return Refused(400, "the body's Id is not a lab instance id (a positive integer)")
    if from_query is not None and from_body is not None and from_query != from_body:
        return Refused(400, "the id parameter and the body's Id name different labs")
    lab_id = from_query if from_query is not None else from_body
    if lab_id is None:
        return Refused(400, "no lab id: expected ?id={id} in the URL or Id in a JSON body")
    named = document.get("Event", query.get("event"))
    if named is None:
        return Accepted(lab_id, None)
    key = str(named).replace(" ", "").replace("-", "").replace("_", "").lower()
    event = _EVENT_KEYS.get(key)
    if event is None:
        return Refused(400, f"unknown event; expected one of {', '.join(KNOWN_EVENTS)}")
    return Accepted(lab_id, event)
