"""Hypothesis strategies for wire-shape records and bodies."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from lodresults._windows import MAX_EPOCH

epochs = st.integers(min_value=0, max_value=MAX_EPOCH)
ints32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
ids = st.integers(min_value=1, max_value=2**63 - 1)
texts = st.text(max_size=20)
decimals = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
)
status_codes = st.one_of(st.sampled_from([1, 2, 3, 4, 10, 20, 30, 40, 50, 60]), ints32)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """A valid wire record (every field the documents list, types as documented)."""
    return {
        "LabInstanceId": draw(ids),
        "LabProfileId": draw(ints32),
        "Start": draw(epochs),
        "End": draw(st.none() | epochs),
        "LastActivity": draw(st.none() | epochs),
        "UserId": draw(st.none() | texts),
        "ClassId": draw(st.none() | texts),
        "CompletionStatus": draw(status_codes),
        "TotalRunTimeSeconds": draw(ints32),
        "TaskCompletePercent": draw(st.integers(0, 100)),
        "IsExam": draw(st.booleans()),
        "ExamPassed": draw(st.none() | st.booleans()),
        "ExamScore": draw(st.none() | decimals),
        "ExamMaxPossibleScore": draw(st.none() | ints32),
        "ExamPassingScore": draw(st.none() | ints32),
        "IpAddress": draw(st.none() | texts),
        "Country": draw(st.none() | texts),
        "Region": draw(st.none() | texts),
        "City": draw(st.none() | texts),
        "Latitude": draw(st.none() | decimals),
        "Longitude": draw(st.none() | decimals),
        "LabHostId": draw(st.none() | ints32),
        "DatacenterId": draw(st.none() | ints32),
        "DeliveryRegionId": draw(st.none() | ints32),
    }


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def damaged_records(draw: st.DrawFn) -> dict[str, Any]:
    """A record with one field removed, nulled, retyped, or an extra field added."""
    rec = draw(records())
    key = draw(st.sampled_from(sorted(rec)))
    how = draw(st.sampled_from(["drop", "null", "junk", "extra", "huge"]))
    if how == "drop":
        del rec[key]
    elif how == "null":
        rec[key] = None
    elif how == "junk":
        rec[key] = draw(junk)
    elif how == "huge":
        rec[key] = draw(st.integers(min_value=2**64, max_value=2**200))
    else:
        rec[draw(st.text(min_size=1, max_size=8))] = draw(junk)
    return rec
