"""The public surface and the error tree."""

from __future__ import annotations

import pickle

import pytest

import lodresults
from lodresults import (
    LodApiError,
    LodAuthError,
    LodError,
    LodInvalidArgument,
    LodRateLimitError,
    LodSchemaError,
    LodWindowError,
    LodWindowTooLongError,
)


def test_all_is_complete() -> None:
    """__all__ lists every public name once (ruff keeps it sorted), and each exists."""
    assert len(set(lodresults.__all__)) == len(lodresults.__all__)
    for name in lodresults.__all__:
        assert hasattr(lodresults, name), name
    public = {n for n in dir(lodresults) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(lodresults.__all__)


def test_hierarchy() -> None:
    """Every error is a LodError; bad input is also a ValueError."""
    assert issubclass(LodInvalidArgument, ValueError)
    assert issubclass(LodWindowTooLongError, LodApiError)
    for name in lodresults.__all__:
        obj = getattr(lodresults, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, LodError), name


@pytest.mark.parametrize(
    "error",
    [
        LodAuthError("x", status=401, command="Results"),
        LodRateLimitError("x", retry_after=3.0),
        LodApiError("x", error_text="boom"),
        LodSchemaError("x", field="Start", excerpt="{}"),
        LodWindowError(0, 604800, LodAuthError("y", status=403)),
    ],
)
def test_errors_pickle_with_their_fields(error: LodError) -> None:
    """Errors survive pickling (multiprocessing) with every field intact."""
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert {k: repr(v) for k, v in vars(back).items()} == {
        k: repr(v) for k, v in vars(error).items()
    }


def test_window_error_names_the_window() -> None:
    """The message and attributes carry ISO-8601 UTC bounds and epoch seconds."""
    e = LodWindowError(1704067200, 1704672000, LodApiError("z", error_text="z"))
    assert e.start_iso == "2024-01-01T00:00:00Z" and e.end_iso == "2024-01-08T00:00:00Z"
    assert "2024-01-01T00:00:00Z..2024-01-08T00:00:00Z" in str(e)
    assert "1704067200..1704672000" in str(e)
