"""Bad input from the server, fuzzed through the client: records or a named LodError."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aioresponses import aioresponses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lodresults import LodClient, LodDecodeError, LodError, LodResponseTooLarge, LodSchemaError
from lodresults._records.decode import decode_results
from tests.strategies import damaged_records, junk, records

BASE = "https://lod.example.test/api/v3"
RESULTS = re.compile(r"^https://lod\.example\.test/api/v3/Results\?.*$")


def _bodies() -> st.SearchStrategy[bytes]:
    def enc(doc: Any) -> bytes | None:
        try:
            return json.dumps(doc, allow_nan=False).encode()
        except (ValueError, TypeError):
            return None

    envelopes = st.one_of(
        st.lists(records(), max_size=4).map(lambda r: {"Results": r, "Status": 1}),
        st.lists(damaged_records(), min_size=1, max_size=3).map(
            lambda r: {"Results": r, "Status": 1}
        ),
        junk,
        st.dictionaries(st.sampled_from(["Results", "Status", "Error"]), junk, max_size=3),
    )
    encoded = envelopes.map(enc).filter(lambda b: b is not None)
    raw = st.one_of(
        st.binary(max_size=200),
        st.just(b'\xff\xfe{"Results": []}'),  # invalid UTF-8
        st.just(b'{"Results": [], "Status": 1, "Huge": 1' + b"0" * 500 + b"}"),
    )
    return st.one_of(encoded, raw)  # type: ignore[arg-type]


@given(body=_bodies())
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_any_body_gives_records_or_a_named_lod_error(body: bytes) -> None:
    """No exception other than LodError escapes; decode errors name what is wrong."""
    with aioresponses() as m:
        m.get(RESULTS, body=body, repeat=True)
        async with LodClient("k", base_url=BASE, rate_limit=None, max_retries=1,
                             retry_initial_wait=0, retry_max_wait=0) as c:  # fmt: skip
            try:
                got = await c.results(0, 100)
            except LodSchemaError as exc:
                assert exc.excerpt is not None or exc.field is not None
            except LodDecodeError as exc:
                assert "not valid JSON" in str(exc) or exc.field is not None
            except LodError:
                pass
            else:
                assert isinstance(got, list)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"Results": [' + b"[" * 5000 + b"]" * 5000 + b'], "Status": 1}',
        b'{"Results": [{"LabInstanceId": 1' + b"0" * 5000 + b"}], " + b'"Status": 1}',
    ],
    ids=["deep-array", "deep-record", "huge-number"],
)
def test_pathological_bodies(body: bytes) -> None:
    """Deep nesting and huge numbers end in a LodDecodeError, not a crash or a hang.

    (Decoded directly: aioresponses' stand-in stream cannot carry bodies this large.)
    """
    with pytest.raises(LodDecodeError):
        decode_results(body)


async def test_body_over_the_cap_is_refused() -> None:
    """A body larger than max_response_bytes is refused with a clear error."""
    with aioresponses() as m:
        m.get(RESULTS, body=b'{"Results": [' + b" " * 10_000 + b'], "Status": 1}')
        async with LodClient("k", base_url=BASE, max_response_bytes=4096, rate_limit=None) as c:
            with pytest.raises(LodResponseTooLarge, match="4096"):
                await c.results(0, 100)
