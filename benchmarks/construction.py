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


def _frozen_init(rows: list[tuple[Any, ...]]) -> list[Any]:
    return [LabResult(*r) for r in rows]


def _descriptors(rows: list[tuple[Any, ...]]) -> list[Any]:
    setters = [vars(LabResult)[n].__set__ for n in NAMES]
    new = object.__new__
    out = []
    for r in rows:
        o = new(LabResult)
        for s, v in zip(setters, r, strict=True):
            s(o, v)
        out.append(o)
    return out


def _struct(rows: list[tuple[Any, ...]]) -> list[Any]:
    return [Struct(*r) for r in rows]


def _dict(rows: list[tuple[Any, ...]]) -> list[Any]:
    return [dict(zip(NAMES, r, strict=True)) for r in rows]


def run(body: bytes, count: int, repeats: int) -> str:
    """Per-record cost of each way, from one body's values (conversions done beforehand)."""
    raws = msgspec.json.decode(body, type=dict[str, msgspec.Raw])["Results"]
    raws = msgspec.json.decode(raws, type=list[msgspec.Raw])
    wire = _slice_decoder(FIELDS, frozenset()).decode(b"[" + b",".join(raws) + b"]")  # type: ignore[arg-type]
    built = _builder(LabResult, FIELDS)(wire)
    rows = [attrs.astuple(r, recurse=False) for r in built]
    build = _builder(LabResult, FIELDS)
    ways: list[tuple[str, Callable[[Any], Any], Any]] = [
        ("frozen attrs `__init__` (`LabResult(...)`)", _frozen_init, rows),
        ("slot descriptors, one `__set__` per field", _descriptors, rows),
        ("lodresults: plain stores, then `__class__` (with 3 datetimes, enum)", build, wire),
        ("msgspec Struct (not an attrs class)", _struct, rows),
        ("dict (what orjson builds)", _dict, rows),
    ]
    out = []
    for name, fn, arg in ways:
        best = float("inf")
        for _ in range(repeats):
            gc.collect()
            t0 = time.perf_counter()
            fn(arg)
            best = min(best, time.perf_counter() - t0)
        out.append([name, f"{best / count * 1e6:.2f}"])
    return (
        f"Building {count:,} records of 24 fields from values already decoded (best of "
        f"{repeats}, the collector on); lodresults' own row also converts 3 timestamps and "
        "the status:\n\n" + table(["way", "µs per record"], out)
    )
