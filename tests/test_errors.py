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
    Window,
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
        LodWindowError(Window(0, 604800), LodAuthError("y", status=403)),
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
    e = LodWindowError(Window(1704067200, 1704672000), LodApiError("z", error_text="z"))
    assert e.start_iso == "2024-01-01T00:00:00Z" and e.end_iso == "2024-01-08T00:00:00Z"
    assert "2024-01-01T00:00:00Z..2024-01-08T00:00:00Z" in str(e)
    assert "1704067200..1704672000" in str(e)
    assert e.window == Window(1704067200, 1704672000)


@pytest.mark.parametrize(
    "cause",
    [
        LodAuthError("refused", status=401, command="Results"),
        LodRateLimitError("slow down", retry_after=3.0),
        LodApiError("boom", error_text="boom"),
        LodSchemaError("bad", field="Start", excerpt="{}"),
        LodInvalidArgument("odd"),
    ],
)
def test_window_error_is_caught_by_its_cause_category(cause: LodError) -> None:
    """``except <cause's class>`` catches a window error; it stays a LodWindowError with
    its bounds and ``.error``, carries the cause's fields, and pickles as the same class."""
    error = LodWindowError(Window(0, 604800), cause)
    with pytest.raises(type(cause)) as info:
        raise error
    assert isinstance(info.value, LodWindowError)
    assert info.value.error is cause and info.value.start == 0 and info.value.end == 604800
    for name, value in vars(cause).items():
        assert getattr(info.value, name) == value
    assert type(LodWindowError(Window(5, 6), cause)) is type(error)  # one class per cause class
    assert type(error).__name__ == "LodWindowError"
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and isinstance(back, type(cause))
    assert str(back) == str(error) and back.error.args == cause.args


def test_window_error_is_not_caught_by_another_category() -> None:
    """A window that failed on a 401 is not a LodApiError or a LodServerError."""
    error = LodWindowError(Window(0, 1), LodAuthError("x", status=401))
    assert not isinstance(error, (LodApiError, LodRateLimitError, LodSchemaError))


async def test_except_auth_error_catches_a_failed_window() -> None:
    """Through the client: a refused key fails the first window, caught as LodAuthError."""
    import contextlib

    from lodresults import LodClient
    from tests.conftest import make_sim

    async with (
        make_sim() as sim,
        LodClient("wrong-key", base_url=sim.base_url, rate_limit=None) as c,
    ):
        a = sim.span[0]
        with pytest.raises(LodAuthError) as info:
            async with contextlib.aclosing(c.iter_results(a, a + 20 * 86400)) as it:
                async for _ in it:
                    pass
    assert isinstance(info.value, LodWindowError) and info.value.status == 401
    assert isinstance(info.value.error, LodAuthError)
