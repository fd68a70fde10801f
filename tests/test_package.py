"""
The package as users meet it: names and modules of the exports, ``dir``, the version and
User-Agent, ``LodNotFoundError``, and logging switched on by ``LODRESULTS_LOG``.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import os
import pickle
import subprocess
import sys
import typing
from collections.abc import Iterator

import pytest

import lodresults
from lodresults import LodApiError, LodClient, LodNotFoundError
from lodresults._logging import ENV_VAR, configure_from_env
from lodresults._records.wire import structure_result
from tests.conftest import KEY, make_sim

EXPORTS = [getattr(lodresults, n) for n in lodresults.__all__]
CLASSES_AND_FUNCTIONS = [o for o in EXPORTS if inspect.isclass(o) or inspect.isfunction(o)]


@pytest.mark.parametrize("obj", CLASSES_AND_FUNCTIONS, ids=lambda o: o.__name__)
def test_every_export_lives_in_lodresults(obj: object) -> None:
    assert obj.__module__ == "lodresults"  # type: ignore[attr-defined]


def test_reprs_name_the_public_module() -> None:
    assert repr(LodClient) == "<class 'lodresults.LodClient'>"
    error = lodresults.LodWindowError(
        lodresults.Window(0, 9), lodresults.LodAuthError("x", status=401)
    )
    assert type(error).__module__ == "lodresults"


def test_dir_shows_only_the_api() -> None:
    shown = dir(lodresults)
    assert "annotations" not in shown
    assert not [n for n in shown if n.startswith("_") and not n.startswith("__")]
    assert set(shown) - set(lodresults.__all__) <= {
        "__all__", "__doc__", "__file__", "__name__", "__path__", "__spec__", "__version__",
    }  # fmt: skip
    assert set(lodresults.__all__) <= set(shown)


_FRESH = """
import pickle, typing
import lodresults
from lodresults._records.wire import structure_result, unstructure_record
for name in lodresults.__all__:
    obj = getattr(lodresults, name)
    if isinstance(obj, type) and name not in ("LodWindowError",):
        typing.get_type_hints(obj)
lab = structure_result({"LabProfileId": 1, "Start": 1, "CompletionStatus": 4,
    "TotalRunTimeSeconds": 3, "TaskCompletePercent": 0, "IsExam": False, "ExamScore": 87.5,
    "Status": 1}, 7)
assert pickle.loads(pickle.dumps(lab)) == lab
assert unstructure_record(lab)["ExamScore"] == 87.5
print("ok")
"""


def test_type_hints_cattrs_and_pickle_work_in_a_fresh_process() -> None:
    # Relabelled classes resolve their hints where they were defined (cattrs needs them).
    done = subprocess.run(
        [sys.executable, "-c", _FRESH], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_errors_pickle_under_their_public_names() -> None:
    error = lodresults.LodWindowError(
        lodresults.Window(0, 9), lodresults.LodAuthError("x", status=401)
    )
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, lodresults.LodAuthError) and again.window == error.window
    nf = pickle.loads(pickle.dumps(LodNotFoundError("m", error_text="t", command="Result")))
    assert type(nf) is LodNotFoundError and nf.error_text == "t"


def test_version_is_the_package_metadata() -> None:
    assert lodresults.__version__ == importlib.metadata.version("lodresults")


async def test_user_agent_names_the_version() -> None:
    async with make_sim() as sim, LodClient(KEY, base_url=sim.base_url) as client:
        await client.latest_results(5)
        agent = sim.log[-1].headers["User-Agent"]
    assert agent == f"lodresults/{importlib.metadata.version('lodresults')}"


async def test_an_unknown_lab_is_lod_not_found_error() -> None:
    async with make_sim() as sim, LodClient(KEY, base_url=sim.base_url) as client:
        with pytest.raises(LodNotFoundError) as caught:
            await client.result(2**40)
    assert isinstance(caught.value, LodApiError)
    assert "not found" in caught.value.error_text


@pytest.mark.parametrize(
    ("command", "text", "cls"),
    [
        ("Result", "Lab instance 5 not found", LodNotFoundError),
        ("Result", "The lab instance does not exist", LodNotFoundError),
        ("Result", "Invalid API key", LodApiError),
        ("Results", "Lab instance 5 not found", LodApiError),
    ],
)
def test_which_status_0_texts_mean_not_found(
    command: str, text: str, cls: type[LodApiError]
) -> None:
    from lodresults._records.wire import structure_results

    doc = {"Error": text, "Status": 0}
    with pytest.raises(LodApiError) as caught:
        if command == "Result":
            structure_result(doc, 5)
        else:
            structure_results(doc, command=command)
    assert type(caught.value) is cls


# --- LODRESULTS_LOG -------------------------------------------------------------------

_LOGGING = """
import asyncio, logging, sys
from lodresults import LodClient
from lodresults.testing import Simulator

async def main():
    async with Simulator(api_key=sys.argv[1]) as sim:
        async with LodClient(sys.argv[1], base_url=sim.base_url) as client:
            await client.latest_results(5)
    print(len(logging.getLogger().handlers), logging.getLogger().level)

asyncio.run(main())
"""


def _run_logging(value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    if value is not None:
        env[ENV_VAR] = value
    return subprocess.run(
        [sys.executable, "-c", _LOGGING, KEY],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip


def test_lodresults_log_turns_on_redacted_logging_without_code() -> None:
    on = _run_logging("debug")
    assert on.returncode == 0, on.stderr[-2000:]
    assert "lodresults DEBUG LatestResults minutes=5 status=200" in on.stderr
    assert KEY not in on.stderr
    # The root logger is left as it was: no handler, level WARNING.
    assert on.stdout.split() == ["0", str(logging.WARNING)]
    off = _run_logging(None)
    assert off.returncode == 0 and off.stderr == ""
    info = _run_logging("INFO")
    assert info.returncode == 0 and "DEBUG" not in info.stderr


@pytest.fixture
def lodresults_logger() -> Iterator[logging.Logger]:
    """The ``lodresults`` logger without the handler ``LODRESULTS_LOG`` adds; restored after."""
    logger = logging.getLogger("lodresults")
    handlers, level = list(logger.handlers), logger.level
    logger.handlers[:] = [h for h in handlers if type(h).__module__ != "lodresults._logging"]
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_cli_debug_leaves_no_handler_behind(lodresults_logger: logging.Logger) -> None:
    from click.testing import CliRunner

    from lodresults.cli._app import cli

    before = (list(lodresults_logger.handlers), lodresults_logger.level)
    for args in (
        ["--debug", "export", "--db", "nope.db"],
        ["export", "--db", "nope.db", "--debug"],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2
        assert (list(lodresults_logger.handlers), lodresults_logger.level) == before


def test_the_handler_is_added_once(lodresults_logger: logging.Logger) -> None:
    before = len(lodresults_logger.handlers)
    configure_from_env({ENV_VAR: "debug"})
    configure_from_env({ENV_VAR: "info"})
    assert len(lodresults_logger.handlers) == before + 1
    assert lodresults_logger.level == logging.INFO
    assert logging.getLogger().handlers == logging.getLogger().handlers  # untouched root
    configure_from_env({})
    assert len(lodresults_logger.handlers) == before + 1


def test_an_unknown_level_warns_and_changes_nothing(lodresults_logger: logging.Logger) -> None:
    before = list(lodresults_logger.handlers)
    with pytest.warns(RuntimeWarning, match="LODRESULTS_LOG='loud' is not one of debug"):
        configure_from_env({ENV_VAR: "loud"})
    assert lodresults_logger.handlers == before


def test_type_hints_of_exported_classes_resolve() -> None:
    hints = typing.get_type_hints(lodresults.LabResult)
    assert "exam_score" in hints
