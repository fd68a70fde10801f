"""
Present the exports of ``lodresults`` as living in ``lodresults`` (as httpx does): reprs,
tracebacks and docs say ``lodresults.LodClient`` rather than ``lodresults._client.LodClient``.

Type hints are resolved first, against the module that defines each class: afterwards
``typing.get_type_hints`` (and cattrs, which calls it) would look names up in
``lodresults`` and miss those imported only by the defining module.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

__all__ = ["publish"]


def publish(namespace: Mapping[str, Any], names: Iterable[str], module: str) -> None:
    """Set ``__module__`` to ``module`` on every class and function among ``names``."""
    objects = [namespace[n] for n in names]
    objects = [o for o in objects if isinstance(o, type) or inspect.isfunction(o)]
    # All hints first: a class's hints are looked up in the modules of its bases too.
    for obj in objects:
        if isinstance(obj, type):
            _resolve_hints(obj)
    for obj in objects:  # constants and type aliases are left as they are
        obj.__module__ = module


def _resolve_hints(cls: type) -> None:
    """Replace the own string annotations of ``cls`` by what they name, if all resolve."""
    own = inspect.get_annotations(cls)
    if not own:
        return
    try:
        if attrs.has(cls):
            attrs.resolve_types(cls)
        # Each class of the MRO looked up in its own module: still the defining one here.
        hints = typing.get_type_hints(cls, include_extras=True)
    except NameError:
        return  # names imported only for type checking: unresolvable before and after
    cls.__annotations__ = {k: hints.get(k, v) for k, v in own.items()}
