"""Hypothesis strategies for wire-shape records and bodies, and for labs over a range."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from lodresults._records.models import FIELDS
from lodresults._records.schema import INT64_MAX, INT64_MIN, MAX_EPOCH, FieldSpec

epochs = st.integers(min_value=0, max_value=MAX_EPOCH)
ints32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
#: Any int64, with the edges drawn often.
ints64 = st.one_of(
    ints32, st.integers(INT64_MIN, INT64_MAX), st.sampled_from([INT64_MIN, INT64_MAX, 0])
)
ids = st.one_of(st.integers(min_value=1, max_value=2**63 - 1), st.sampled_from([1, INT64_MAX]))
#: Text as JSON carries it: any code point, astral ones too (surrogate pairs in \u escapes).
texts = st.text(max_size=20)
#: A lone surrogate: JSON can spell it ("\ud800"), UTF-8 cannot hold it.
lone_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
decimals = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from([INT64_MIN, INT64_MAX, 0, 0.0, -0.0, 48.0]),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
)
status_codes = st.one_of(st.sampled_from([1, 2, 3, 4, 10, 20, 30, 40, 50, 60]), ints64)
#: Integers just beyond what each integer field can hold (ids: zero and negatives too).
out_of_int64 = st.one_of(
    st.integers(min_value=2**63, max_value=2**64 - 1),
    st.integers(min_value=-(2**64), max_value=INT64_MIN - 1),
    st.integers(min_value=2**64, max_value=2**200),
)
#: Wire names by what they hold, from the one declaration of the fields.
ID_FIELDS = tuple(f.wire for f in FIELDS if f.bounds is not None and f.bounds[0] == 1)
INT_FIELDS = tuple(f.wire for f in FIELDS if f.kind in ("int", "enum"))
TEXT_FIELDS = tuple(f.wire for f in FIELDS if f.kind == "text")


def _valid(f: FieldSpec) -> st.SearchStrategy[Any]:
    """Any value of ``f``'s kind and bounds, as the documents spell it (null if nullable)."""
    if f.kind == "int":
        assert f.bounds is not None
        lo, hi = f.bounds
        value = {(INT64_MIN, INT64_MAX): ints64, (1, INT64_MAX): ids}.get(
            (lo, hi), st.integers(lo, hi)
        )
    else:
        value = {
            "enum": status_codes,
            "timestamp": epochs,
            "text": texts,
            "bool": st.booleans(),
            "decimal": decimals,
        }[f.kind]
    return st.none() | value if f.nullable else value


def records() -> st.SearchStrategy[dict[str, Any]]:
    """
    A valid wire record: every field ``LabResult`` declares, of its documented kind and
    bounds (End and LastActivity drawn apart from Start: before it as often as after).
    """
    return st.fixed_dictionaries({f.wire: _valid(f) for f in FIELDS})


def _nested(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A named function: hypothesis misreads a multi-line lambda's source as not using
    # its argument (a deprecation warning, an error under this suite's settings).
    return st.lists(children, max_size=3) | st.dictionaries(
        st.text(max_size=5), children, max_size=3
    )


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    _nested,
    max_leaves=10,
)

DAMAGE = ("drop", "null", "junk", "extra", "huge", "int64", "id", "surrogate", "deep")


@st.composite
def damaged_records(draw: st.DrawFn) -> dict[str, Any]:
    """
    A record with one field removed, nulled, retyped, an integer just beyond what its
    field holds, a lone surrogate in a text, or an extra field (maybe deeply nested).
    """
    rec = draw(records())
    key = draw(st.sampled_from(sorted(rec)))
    how = draw(st.sampled_from(DAMAGE))
    if how == "drop":
        del rec[key]
    elif how == "null":
        rec[key] = None
    elif how == "junk":
        rec[key] = draw(junk)
    elif how == "huge":
        rec[key] = draw(st.integers(min_value=2**64, max_value=2**200))
    elif how == "int64":
        rec[draw(st.sampled_from(INT_FIELDS))] = draw(out_of_int64)
    elif how == "id":
        rec[draw(st.sampled_from(ID_FIELDS))] = draw(st.integers(-(2**63), 0))
    elif how == "surrogate":
        text = draw(texts)
        at = draw(st.integers(0, len(text)))
        rec[draw(st.sampled_from(TEXT_FIELDS))] = text[:at] + draw(lone_surrogates) + text[at:]
    elif how == "deep":
        depth = draw(st.sampled_from([10, 300, 1100]))
        value: Any = draw(st.sampled_from([[], {}, 1]))
        for _ in range(depth):
            value = [value] if draw(st.booleans()) else {"x": value}
        rec["Unknown"] = value
    else:
        rec[draw(st.text(min_size=1, max_size=8))] = draw(junk)
    return rec


@st.composite
def envelopes(draw: st.DrawFn, results: st.SearchStrategy[Any]) -> dict[str, Any]:
    """
    A Results envelope in every spelling a server may use: Status 1, 0, null, absent or
    wrong; Error null, absent, empty or a text; Results an array, null or absent; extra keys.
    """
    doc: dict[str, Any] = {}
    shape = draw(st.sampled_from(["array", "array", "null", "absent", "junk"]))
    if shape == "array":
        doc["Results"] = draw(results)
    elif shape == "null":
        doc["Results"] = None
    elif shape == "junk":
        doc["Results"] = draw(junk)
    status = draw(st.sampled_from([1, 1, 0, None, "absent", 2, "1", True, 1.0, -1]))
    if status != "absent":
        doc["Status"] = status
    error = draw(st.sampled_from([None, "absent", "", "Timeframe cannot exceed 7 days", "x"]))
    if error != "absent":
        doc["Error"] = error
    if draw(st.booleans()):
        doc[draw(st.sampled_from(["TotalCount", "Warnings", "results"]))] = draw(junk)
    return doc


@st.composite
def labs(draw: st.DrawFn, start: int = 0, end: int = 6000) -> list[tuple[int, int, int | None]]:
    """
    ``(id, start, end)`` labs around the range ``[start, end]``: some inside, some
    spanning it, some wholly outside it (before or after), some still running, and
    some whose End is before their Start (clock skew on the server's side).
    """
    n = draw(st.integers(0, 60))
    out = []
    margin = (end - start) // 4 + 1
    for i in range(n):
        s = draw(st.integers(start - margin, end + margin))
        e = draw(
            st.one_of(
                st.none(),
                st.integers(s, s + 1500),
                st.integers(s - 1500, s),  # End before Start
                st.integers(start - margin, end + margin),
            )
        )
        out.append((i + 1, s, e))
    return out


def touches(lab: tuple[int, int, int | None], a: int, b: int) -> bool:
    """Whether the server returns ``lab`` for ``[a, b]``: its start or its end is inside."""
    _, s, e = lab
    return a <= s <= b or (e is not None and a <= e <= b)
