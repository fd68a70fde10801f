"""
Every command through its failure modes, in a subprocess: one line on stderr, the
documented exit code, never a traceback; key files as editors write them; Ctrl-C during
an export; export of a read-only database.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import hashlib
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from lodresults._destinations.sqlite import CHUNK_ROWS
from lodresults._records.wire import structure_record
from lodresults.cli._dates import parse_when
from lodresults.cli._keyfile import decode_key
from lodresults.testing import Simulator
from tests.conftest import KEY
from tests.test_cli import _env, run
from tests.test_store import lab, make_db

OK, USAGE, FAILURE, INTERRUPTED = 0, 2, 1, 130
UNREACHABLE = "http://127.0.0.1:9/api/v3"

#: Lines a long job prints while it runs (not part of a failure report).
_PROGRESS = re.compile(r"^(backfill|demo backfill): \d+/\d+ windows")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextmanager
def _locked(db: Path) -> Iterator[None]:
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _files(tmp: Path) -> dict[str, Path]:
    """The databases and key files the cases below refer to by name."""
    for name in ("good.db", "lock1.db", "lock2.db"):
        asyncio.run(make_db(tmp / name, [structure_record(lab(i)) for i in range(1, 4)]))
    corrupt = tmp / "corrupt.db"
    corrupt.write_bytes(b"this is not a database\n" * 200)
    foreign = tmp / "foreign.db"
    with closing(sqlite3.connect(foreign)) as c:
        c.execute("CREATE TABLE notes (body TEXT)")
        c.commit()
    newer = tmp / "newer.db"
    asyncio.run(make_db(newer, []))
    bad_meta = tmp / "bad_meta.db"
    asyncio.run(make_db(bad_meta, []))
    with closing(sqlite3.connect(newer)) as c:
        c.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        c.commit()
    with closing(sqlite3.connect(bad_meta)) as c:
        c.execute("INSERT INTO meta VALUES ('engine.last_run', '17 o''clock')")
        c.commit()
    keys = {
        "key_binary": b"\xff\xff\xfe\x00\xd8",
        "key_empty": b"\r\n \n",
        "key_utf16_no_bom": "wrong\r\n".encode("utf-16-le"),
        "key_two_lines": b"abcdefgh\nijklmnop\n",
    }
    for name, data in keys.items():
        (tmp / name).write_bytes(data)
    (tmp / "a_dir").mkdir()
    return {p.stem: p for p in tmp.iterdir()}


def _cases() -> list[tuple[str, list[str], dict[str, str], int, str]]:
    """(id, argv with {placeholders}, env, exit code, text expected in the error line)."""
    since = ["--since", "2024-01-01", "--until", "2024-01-02", "--max-retries", "0"]
    bf = ["backfill", *since]
    sim: dict[str, str] = {}  # the simulator's url and key
    down = {"LOD_BASE_URL": UNREACHABLE}
    wrong = {"LOD_API_KEY": "wrong-key-0123456789"}
    return [
        # backfill
        ("backfill-no-dir", [*bf, "--db", "{tmp}/no/such/dir/r.db"], sim, FAILURE, "cannot open"),
        ("backfill-dir", [*bf, "--db", "{a_dir}"], sim, USAGE, "is a directory"),
        ("backfill-locked", [*bf, "--db", "{lock1}"], {**sim, "LOCK": "lock1"}, FAILURE,
         "locked"),
        ("backfill-corrupt", [*bf, "--db", "{corrupt}"], sim, FAILURE, "not a usable SQLite"),
        ("backfill-foreign", [*bf, "--db", "{foreign}"], sim, FAILURE, "not a lodresults"),
        ("backfill-newer", [*bf, "--db", "{newer}"], sim, FAILURE, "newer than this"),
        ("backfill-key-binary", [*bf, "--db", "{tmp}/k.db", "--api-key-file", "{key_binary}"],
         sim, USAGE, "is not text"),
        ("backfill-key-empty", [*bf, "--db", "{tmp}/k.db", "--api-key-file", "{key_empty}"],
         sim, USAGE, "is empty"),
        ("backfill-unreachable", [*bf, "--db", "{tmp}/u.db"], down, FAILURE, "connect"),
        ("backfill-auth", [*bf, "--db", "{tmp}/a.db"], wrong, FAILURE, "401"),
        ("backfill-bad-date", ["backfill", "--since", "2024-13-01"], sim, USAGE, "--since"),
        ("backfill-reversed", ["backfill", "--since", "2024-02-01", "--until", "2024-01-01"],
         sim, USAGE, "before --since"),
        ("backfill-huge-epoch", ["backfill", "--since", "9" * 30], sim, USAGE, "outside 1970"),
        # watch
        ("watch-no-dir", ["watch", "--db", "{tmp}/no/such/dir/w.db"], sim, FAILURE, "cannot open"),
        ("watch-dir", ["watch", "--db", "{a_dir}"], sim, USAGE, "is a directory"),
        ("watch-locked", ["watch", "--db", "{lock2}"], {**sim, "LOCK": "lock2"}, FAILURE, "locked"),
        ("watch-corrupt", ["watch", "--db", "{corrupt}"], sim, FAILURE, "not a usable SQLite"),
        ("watch-bad-meta", ["watch", "--db", "{bad_meta}"], sim, FAILURE,
         "bad_meta.db: meta value 'engine.last_run'"),
        ("watch-auth", ["watch", "--db", "{tmp}/w.db"], wrong, FAILURE, "401"),
        ("watch-key-utf16-no-bom", ["watch", "--api-key-file", "{key_utf16_no_bom}"], sim,
         USAGE, "printable ASCII"),
        # export
        ("export-missing", ["export", "--db", "{tmp}/none.db"], {}, USAGE, "does not exist"),
        ("export-dir", ["export", "--db", "{a_dir}"], {}, USAGE, "is a directory"),
        ("export-corrupt", ["export", "--db", "{corrupt}"], {}, FAILURE, "not a usable"),
        ("export-foreign", ["export", "--db", "{foreign}"], {}, FAILURE, "not a lodresults"),
        ("export-newer", ["export", "--db", "{newer}"], {}, FAILURE, "newer than this"),
        ("export-empty-file", ["export", "--db", "{key_empty}"], {}, FAILURE, "not a usable"),
        ("export-out-no-dir", ["export", "--db", "{good}", "--out", "{tmp}/no/x.jsonl"], {},
         USAGE, "--out"),
        ("export-out-is-db", ["export", "--db", "{good}", "--out", "{good}"], {}, USAGE,
         "is the database itself"),
        # get and latest
        ("get-huge-id", ["get", "9" * 23], sim, USAGE, "LAB_INSTANCE_ID"),
        ("get-int64-max+1", ["get", str(2**63)], sim, USAGE, "LAB_INSTANCE_ID"),
        ("get-negative", ["get", "-3"], sim, USAGE, "-3"),
        ("get-zero", ["get", "0"], sim, USAGE, "LAB_INSTANCE_ID"),
        ("get-not-int", ["get", "1.5"], sim, USAGE, "1.5"),
        ("get-unreachable", ["get", "1", "--max-retries", "0"], down, FAILURE, "connect"),
        ("get-auth", ["get", "1"], wrong, FAILURE, "401"),
        ("latest-key-two-lines", ["latest", "--api-key-file", "{key_two_lines}"], sim, USAGE,
         "one key on one line"),
        ("latest-key-missing", ["latest", "--api-key-file", "{tmp}/nokey"], sim, USAGE,
         "cannot read --api-key-file"),
        ("latest-key-dir", ["latest", "--api-key-file", "{a_dir}"], sim, USAGE, "is a directory"),
        ("latest-auth", ["latest"], wrong, FAILURE, "401"),
        ("latest-env-key-control", ["latest"], {"LOD_API_KEY": "abc\x01defghij"}, USAGE,
         "LOD_API_KEY holds a character"),
        ("latest-env-key-inner-space", ["latest"], {"LOD_API_KEY": "abc defghij"}, USAGE,
         "LOD_API_KEY holds a character"),
        ("latest-unreachable", ["latest", "--max-retries", "0"], down, FAILURE, "connect"),
        ("latest-bad-minutes", ["latest", "--minutes", "99999"], sim, USAGE, "--minutes"),
        ("simulate-port-in-use", ["simulate", "--port", "{busy_port}", "--days", "1"], {},
         FAILURE, "address already in use"),
        # demo and the group
        ("demo-no-dir", ["demo", "--db", "{tmp}/no/such/dir/d.db", "--days", "1"], {}, FAILURE,
         "cannot open"),
        ("demo-foreign", ["demo", "--db", "{foreign}", "--days", "1"], {}, FAILURE,
         "not a lodresults"),
        ("unknown-option", ["--no-such-option"], {}, USAGE, "No such option"),
        ("unknown-command", ["frobnicate"], {}, USAGE, "No such command"),
    ]  # fmt: skip


async def test_every_failure_is_one_line_and_its_exit_code(sim: Simulator, tmp_path: Path) -> None:
    """No traceback, exactly the documented code, one error line on stderr; the key never."""
    files = await asyncio.to_thread(_files, tmp_path)
    refused = ("good", "corrupt", "foreign", "newer", "bad_meta")
    before = {name: _sha(files[name]) for name in refused}
    gate = asyncio.Semaphore(4)
    failures: list[str] = []

    async def check(case: tuple[str, list[str], dict[str, str], int, str]) -> None:
        name, argv, extra, code, needle = case
        args = [a.format(tmp=tmp_path, busy_port=busy_port, **files) for a in argv]
        env = _env(sim, **{k: v for k, v in extra.items() if k != "LOCK"})
        async with gate:
            if "LOCK" in extra:
                with _locked(files[extra["LOCK"]]):
                    r = await run(args, env)
            else:
                r = await run(args, env)
        lines = [x for x in r.err.splitlines() if not _PROGRESS.match(x)]
        problems = []
        if r.code != code:
            problems.append(f"exit {r.code}, expected {code}")
        if "Traceback" in r.err + r.out:
            problems.append("a traceback")
        if len(lines) != 1 or not lines[0].startswith("error: ") or needle not in lines[0]:
            problems.append(f"stderr {r.err!r} is not one 'error: ...{needle}...' line")
        if sim.api_key in r.err + r.out:
            problems.append("the key was printed")
        if problems:
            failures.append(f"{name}: {'; '.join(problems)}")

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        await asyncio.gather(*(check(c) for c in _cases()))
    assert not failures, "\n".join(sorted(failures))
    assert {name: _sha(files[name]) for name in refused} == before  # refused, not changed


# --- key files -----------------------------------------------------------------------------

_ENCODINGS = [
    ("utf-8", b""),
    ("utf-8", codecs.BOM_UTF8),  # Notepad
    ("utf-16-le", codecs.BOM_UTF16_LE),  # PowerShell 5 '>'
    ("utf-16-be", codecs.BOM_UTF16_BE),
    ("utf-32-le", codecs.BOM_UTF32_LE),
    ("utf-32-be", codecs.BOM_UTF32_BE),
]


@given(
    key=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=80),
    encoding=st.sampled_from(_ENCODINGS),
    before=st.sampled_from(["", " ", "\n", "\t "]),
    after=st.sampled_from(["", "\n", "\r\n", " \r\n\r\n", "\t"]),
)
def test_a_key_file_decodes_whatever_wrote_it(
    key: str, encoding: tuple[str, bytes], before: str, after: str
) -> None:
    """Any BOM'd or plain encoding, with surrounding whitespace: the very key."""
    name, bom = encoding
    assert decode_key(bom + (before + key + after).encode(name)) == key


@given(st.binary(max_size=40))
def test_an_undecodable_key_file_never_quotes_its_bytes(data: bytes) -> None:
    """Arbitrary bytes: either a printable ASCII key or a ValueError quoting none of them."""
    try:
        key = decode_key(data)
    except ValueError as exc:
        message = str(exc)
        assert message.startswith(("is not text", "is empty", "holds a character"))
    else:
        assert key and key.isascii() and key.isprintable() and not any(map(str.isspace, key))


@pytest.mark.parametrize(
    ("name", "bom"), [("utf-16-le", codecs.BOM_UTF16_LE), ("utf-8", codecs.BOM_UTF8)]
)
async def test_key_files_from_powershell_and_notepad_work(
    sim: Simulator, tmp_path: Path, name: str, bom: bytes
) -> None:
    """The key file PowerShell 5 or Notepad writes is accepted (not a 401, not a traceback)."""
    key_file = tmp_path / "key.txt"
    key_file.write_bytes(bom + (KEY + "\r\n").encode(name))
    env = _env(sim)
    del env["LOD_API_KEY"]
    r = await run(["latest", "--minutes", "60", "--api-key-file", str(key_file)], env)
    assert r.code == OK, r.err
    assert orjson.loads(r.out)["Status"] == 1


# --- export: Ctrl-C, read-only files -------------------------------------------------------


def test_ctrl_c_stops_an_export_within_a_chunk(tmp_path: Path) -> None:
    """
    A real SIGINT while an export writes to a pipe nobody reads: exit 130, and the
    export stops within the chunk in flight instead of running to the end of the table.

    The bound is in rows, not seconds: the child blocks on the full pipe, so before
    the signal it cannot get past its first chunk; after it, every row written comes
    from that chunk (2,000 rows) if the export stops, or from the whole table if not.
    """
    db = tmp_path / "big.db"
    total = 20_000
    asyncio.run(make_db(db, [structure_record(lab(i)) for i in range(1, total + 1)]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lodresults", "export", "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env=_env(None),
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the export is under way (signal handlers installed)
    assert first.startswith(b'{"LabInstanceId":')
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    rows = 1 + out.count(b"\n")
    assert proc.returncode == INTERRUPTED, err
    assert b"Traceback" not in err and b"interrupted (SIGINT)" in err
    assert rows <= 2 * CHUNK_ROWS < total


def _export_as_reader(db: Path, out: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "lodresults", "export", "--db", str(db)]
    if out is not None:
        args += ["--out", str(out)]
    return subprocess.run(args, capture_output=True, text=True, env=_env(None), timeout=60)


_NOBODY = 65534


@functools.cache
def _unprivileged_python() -> tuple[str, dict[str, str], int | None] | None:
    """
    A Python that runs ``lodresults`` without root's right to write anything: this one
    if not root; as root, this one or the system's python3 run as ``nobody`` with this
    environment's packages on PYTHONPATH; None if there is no such way here.
    """
    env = _env(None)
    if os.geteuid() != 0:
        return sys.executable, env, None
    import site

    import lodresults

    paths = [str(Path(lodresults.__file__).parents[1]), *site.getsitepackages()]
    env = {**env, "PYTHONPATH": os.pathsep.join(paths)}
    for python in (sys.executable, shutil.which("python3", path="/usr/bin:/bin")):
        if python is None:
            continue
        try:
            probe = subprocess.run(
                [python, "-c", "import sys, lodresults.cli._app; print(sys.version_info[:2])"],
                capture_output=True, text=True, env=env, user=_NOBODY, group=_NOBODY,
                cwd="/", timeout=60,
            )  # fmt: skip
        except OSError:
            continue
        if probe.returncode == 0 and probe.stdout.strip() == str(sys.version_info[:2]):
            return python, env, _NOBODY
    return None


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory that ``nobody`` can enter (pytest's own tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="lodresults-ro-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        for p in d.rglob("*"):
            if p.is_dir():
                p.chmod(0o755)
        shutil.rmtree(d)


def _export_unprivileged(db: Path) -> subprocess.CompletedProcess[str]:
    found = _unprivileged_python()
    if found is None:
        pytest.skip("as root, with no way to run lodresults as another user here")
    python, env, uid = found
    return subprocess.run(
        [python, "-m", "lodresults", "export", "--db", str(db)],
        capture_output=True, text=True, env=env, cwd="/", timeout=60,
        **({} if uid is None else {"user": uid, "group": uid}),
    )  # fmt: skip


def test_export_of_a_read_only_file_in_a_read_only_directory(shared_dir: Path) -> None:
    """A 0444 WAL database in a 0555 directory (where SQLite cannot create its -shm)
    exports completely and stays byte-identical, with nothing created beside it; with a
    -journal file there (which only a writer could apply) it is refused, clearly."""
    ro = shared_dir / "ro"
    ro.mkdir()
    db = ro / "r.db"
    asyncio.run(make_db(db, [structure_record(lab(i, ExamScore=48.0)) for i in range(1, 50)]))
    before = _sha(db)
    db.chmod(0o444)
    ro.chmod(0o555)
    r = _export_unprivileged(db)
    assert r.returncode == OK, r.stderr
    assert len(r.stdout.splitlines()) == 49 and '"ExamScore":48.0,' in r.stdout
    assert _sha(db) == before
    assert sorted(p.name for p in ro.iterdir()) == ["r.db"]
    ro.chmod(0o755)
    (ro / "r.db-journal").touch()
    ro.chmod(0o555)
    r = _export_unprivileged(db)
    assert r.returncode == FAILURE
    assert r.stderr.count("\n") == 1 and "r.db-journal file that only a writer" in r.stderr
    assert _sha(db) == before


def test_export_spells_decimals_as_the_api_did_and_never_writes_the_database(
    tmp_path: Path,
) -> None:
    """48.0 stays 48.0 and -0.0 stays -0.0 through the CLI; a read-only (0444) file in
    the rollback-journal mode is neither switched to WAL nor otherwise changed."""
    db = tmp_path / "r.db"
    recs = [structure_record(lab(1, ExamScore=48.0, Latitude=-0.0, Longitude=0.5))]
    asyncio.run(make_db(db, recs))
    with closing(sqlite3.connect(db)) as c:
        c.execute("PRAGMA journal_mode=DELETE")
    db.chmod(0o444)
    before = _sha(db)
    out = tmp_path / "x.jsonl"
    r = _export_as_reader(db, out)
    assert r.returncode == OK, r.stderr
    line = out.read_text()
    assert '"ExamScore":48.0,' in line and '"Latitude":-0.0,' in line
    assert _sha(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.db", "x.jsonl"]


def test_a_failing_export_leaves_no_partial_file(tmp_path: Path) -> None:
    """A damaged row half-way: exit 1, one line naming it, no --out file, no temp file."""
    db = tmp_path / "r.db"
    asyncio.run(make_db(db, [structure_record(lab(i)) for i in range(1, 6001)]))
    with closing(sqlite3.connect(db)) as c:
        c.execute("UPDATE lab_results SET completion_status = 'x' WHERE lab_instance_id = 5000")
        c.commit()
    out = tmp_path / "x.jsonl"
    r = _export_as_reader(db, out)
    assert r.returncode == FAILURE
    assert r.stderr.count("\n") == 1 and "lab_instance_id 5000 cannot be read" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))) == [
        "r.db"
    ]


# --- dates, unexpected errors, progress ----------------------------------------------------


@example("²", False)  # a Unicode digit
@example("٣٣٣", False)  # Arabic-Indic digits
@example("0\x85", False)  # a Unicode space (NEL) that str.strip() removes
@given(st.text(max_size=40), st.booleans())
def test_any_date_text_is_an_epoch_or_a_clear_error(text: str, end_of_day: bool) -> None:
    """Whatever is typed: epoch seconds in range, or a ValueError quoting the text."""
    try:
        when = parse_when(text, end_of_day=end_of_day)
    except ValueError as exc:
        assert str(exc).startswith(repr(text))
    else:
        assert 0 <= when <= 253_402_300_799
        assert text.strip().lower() == "now" or text.isascii()


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (RuntimeError("internal detail"), FAILURE, "error: unexpected RuntimeError"),
        (KeyboardInterrupt(), INTERRUPTED, "interrupted"),
    ],
)
@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_exception_is_one_line_without_debug(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    exc: BaseException,
    code: int,
    line: str,
    debug: bool,
) -> None:
    """A bug (any exception no layer expected) or Ctrl-C outside a job: one line and its
    code, the exception's text not shown (it could quote anything); --debug adds the
    traceback of a bug."""
    from click.testing import CliRunner

    from lodresults.cli import _app, _options

    def boom(*args: object) -> str:
        raise exc

    monkeypatch.setattr(_options, "api_key", boom)
    args = [*(["--debug"] if debug else []), "latest"]
    r = CliRunner().invoke(_app.cli, args, prog_name="lodresults")
    assert r.exit_code == code
    err = r.stderr
    if debug and code == FAILURE:
        assert "Traceback" in err and err.strip().splitlines()[-1].startswith(line)
    else:
        assert "Traceback" not in err and "internal detail" not in err
        assert err.strip().count("\n") == 0 and err.strip().startswith(line)


@pytest.mark.parametrize("args", [[], ["--help"], ["export", "--help"]])
def test_help_is_shown_whole(args: list[str]) -> None:
    """The bare command and --help show click's help as it is, not squeezed into an
    error line."""
    from click.testing import CliRunner

    from lodresults.cli import _app

    r = CliRunner().invoke(_app.cli, args, prog_name="lodresults")
    text = r.stdout + r.stderr
    assert r.exit_code in ((0,) if args else (0, USAGE))
    assert text.startswith("Usage: lodresults") and "error:" not in text
    assert "\n  " in text  # the options or commands, one per line


def test_progress_is_silent_when_the_job_fails() -> None:
    """A job that fails prints its one error line, not a status line before it; a job
    that succeeds ends with one status line."""
    import io

    from lodresults._events import WindowsPlanned
    from lodresults.cli._progress import Progress

    out = io.StringIO()
    # An interval the job never reaches, but which a clock counted from zero has passed.
    interval = time.monotonic() / 2
    with (
        pytest.raises(RuntimeError),
        Progress("backfill", stream=out, tty=False, interval=interval) as p,
    ):
        p.on_event(WindowsPlanned(total=3, start=0, end=1))
        raise RuntimeError
    assert out.getvalue() == ""
    with Progress("backfill", stream=out, tty=False, interval=interval) as p:
        p.on_event(WindowsPlanned(total=3, start=0, end=1))
    assert out.getvalue().startswith("backfill: 0/3 windows") and out.getvalue().count("\n") == 1
