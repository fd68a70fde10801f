"""What building one 24-field LabResult costs, by each way of building it."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import attrs
import msgspec

from benchmarks._harness import table
from lodresults import LabResult
from lodresults._records.decode import _builder, _slice_decoder
from lodresults._records.models import FIELDS

NAMES = [f.name for f in FIELDS]
Struct = msgspec.defstruct("Struct", NAMES, gc=False)
Building = type(
    "Building",
    (LabResult,),
    {"__slots__": (), "__setattr__": object.__setattr__, "__delattr__": object.__delattr__},
)


def _frozen_init(rows: list[tuple[Any, ...]]) -> list[Any]:
    return [LabResult(*r) for r in rows]


def _source() -> str:
    """Two generated loops, unrolled as lodresults' own: descriptors, and plain stores."""
    lines = ["def descriptors(rows, new=object.__new__):", "    out = []", "    for r in rows:"]
    lines.append("        o = new(LabResult)")
    lines += [f"        set_{n}(o, r[{i}])" for i, n in enumerate(NAMES)]
    lines += ["        out.append(o)", "    return out", ""]
    lines += ["def stores(rows, new=object.__new__):", "    out = []", "    for r in rows:"]
    lines.append("        o = new(Building)")
    lines += [f"        o.{n} = r[{i}]" for i, n in enumerate(NAMES)]
    lines += ["        o.__class__ = LabResult", "        out.append(o)", "    return out"]
    return "\n".join(lines)


_namespace: dict[str, Any] = {"Building": Building, "LabResult": LabResult}
_namespace.update({f"set_{n}": vars(LabResult)[n].__set__ for n in NAMES})
exec(_source(), _namespace)
_descriptors: Callable[[list[tuple[Any, ...]]], list[Any]] = _namespace["descriptors"]
_stores: Callable[[list[tuple[Any, ...]]], list[Any]] = _namespace["stores"]


def _struct(rows: list[tuple[Any, ...]]) -> list[Any]:
    return [Struct(*r) for r in rows]


def _dict(rows: list[tuple[Any, ...]]) -> list[Any]:
    return [dict(zip(NAMES, r, strict=True)) for r in rows]


def _best(fn: Callable[[Any], Any], arg: Any, repeats: int, collector: bool) -> float:
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        if not collector:
            gc.disable()  # this benchmark's own process only
        try:
            t0 = time.process_time()
            fn(arg)
            best = min(best, time.process_time() - t0)
        finally:
            gc.enable()
    return best


def run(body: bytes, count: int, repeats: int) -> str:
    """Per-record cost of each way of building, from the same values."""
    raws = msgspec.json.decode(body, type=dict[str, msgspec.Raw])["Results"]
    raws = msgspec.json.decode(raws, type=list[msgspec.Raw])
    wire = _slice_decoder(FIELDS, frozenset()).decode(b"[" + b",".join(raws) + b"]")
    build = _builder(LabResult, FIELDS)
    rows = [attrs.astuple(r, recurse=False) for r in build(wire)]
    ways: list[tuple[str, Callable[[Any], Any], Any]] = [
        ("frozen attrs `__init__`: `LabResult(*values)`", _frozen_init, rows),
        ("slot descriptors: `__set__` per field (lodresults before)", _descriptors, rows),
        ("plain stores on a subclass, then `__class__ = LabResult` (lodresults)", _stores, rows),
        ("lodresults' whole build, with 3 timestamps and the status converted", build, wire),
        ("msgspec Struct (not attrs: for scale)", _struct, rows),
        ("dict (what orjson builds: for scale)", _dict, rows),
    ]
    out = []
    for name, fn, arg in ways:
        on = _best(fn, arg, repeats, collector=True)
        off = _best(fn, arg, repeats, collector=False)
        out.append([name, f"{on / count * 1e6:.2f}", f"{off / count * 1e6:.2f}"])
    return (
        f"Building {count:,} LabResults of 24 fields from values already decoded: CPU time "
        f"per record, best of {repeats}, with the cyclic collector on (as in use) and off "
        "(this benchmark's process only; lodresults never switches it off):\n\n"
        + table(["way", "µs per record", "collector off"], out)
    )
