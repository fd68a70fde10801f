"""``Tenant`` and the CLI's tenants file: keys hidden, errors naming the file and tenant."""

from __future__ import annotations

import pickle
import traceback
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lodresults import DEFAULT_BASE_URL, LodInvalidArgument, Tenant
from lodresults._tenant import tenant_name_problem
from lodresults.cli._tenants import TenantsFileError, load_tenants, parse_tenants

KEY = "canary-TENANT-8c2e4f6a1b"
OTHER = "canary-OTHER-3d5f7b9e0c"


def _all_text(exc: BaseException) -> str:
    """What an error can show, its chain and the locals of every frame included."""
    parts = [str(exc), repr(exc)]
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts += traceback.format_exception(type(e), e, e.__traceback__)
        tb = e.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename != __file__:  # this file's frames hold keys
                parts += [repr(v) for v in tb.tb_frame.f_locals.values()]
            tb = tb.tb_next
        e = e.__cause__ or e.__context__
    return "\n".join(parts)


# --- Tenant ---------------------------------------------------------------------------


def test_tenant_hides_its_key_and_checks_where_it_goes() -> None:
    t = Tenant(KEY, "http://127.0.0.1:8080/api/v3/")
    assert t.base_url == "http://127.0.0.1:8080/api/v3"
    assert KEY not in repr(t) and KEY not in str(t)
    assert repr(t) == "Tenant(api_key='***', base_url='http://127.0.0.1:8080/api/v3')"
    assert Tenant(KEY).base_url == DEFAULT_BASE_URL
    with pytest.raises(TypeError, match="cannot be pickled") as info:
        pickle.dumps(t)
    assert KEY not in _all_text(info.value)
    client = t.client(rate_limit=None)
    assert client.base_url == t.base_url and KEY not in repr(client)


def test_tenant_refuses_bad_input_without_showing_the_key() -> None:
    with pytest.raises(LodInvalidArgument, match="unencrypted") as info:
        Tenant(KEY, "http://example.com/api/v3")
    assert KEY not in _all_text(info.value)
    with pytest.raises(LodInvalidArgument, match="control character") as info:
        Tenant(KEY + "\n")
    assert KEY not in _all_text(info.value)
    with pytest.raises(LodInvalidArgument, match="non-empty"):
        Tenant("  ")


@given(st.text(max_size=70))
def test_tenant_names(name: str) -> None:
    """A name is what a partition key, a column value and a summary word can all be."""
    ok = (
        1 <= len(name) <= 64
        and name[0].isascii()
        and name[0].isalnum()
        and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)
    )
    assert (tenant_name_problem(name) is None) == ok


# --- the tenants file -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_keys_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("K", "ACME_KEY"):
        monkeypatch.delenv(name, raising=False)


def parse(text: str, tmp_path: Path, **env: str) -> dict[str, Tenant]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        return parse_tenants(text, tmp_path / "tenants.toml", default_base_url=DEFAULT_BASE_URL)


def test_a_file_of_two_tenants(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    # As PowerShell 5 writes it: UTF-16 with a BOM and a line break.
    (tmp_path / "keys" / "globex.key").write_bytes((OTHER + "\r\n").encode("utf-16"))
    tenants = parse(
        """
        [tenants.acme]
        api_key_env = "ACME_KEY"

        [tenants.globex]
        api_key_file = "keys/globex.key"
        base_url = "http://localhost:9000/api/v3"
        """,
        tmp_path,
        ACME_KEY=f"  {KEY}\n",
    )
    assert list(tenants) == ["acme", "globex"]
    assert tenants["acme"].reveal_key() == KEY
    assert tenants["acme"].base_url == DEFAULT_BASE_URL
    assert tenants["globex"].reveal_key() == OTHER
    assert tenants["globex"].base_url == "http://localhost:9000/api/v3"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[tenants.acme\n", {}, "tenants.toml: is not valid TOML"),
        ("title = 'x'\n", {}, "unknown top-level key 'title'"),
        ("", {}, "defines no tenant"),
        ("[tenants.'a b']\napi_key_env = 'K'\n", {"K": KEY}, "tenant 'a b': a name is"),
        ("[tenants.acme]\n", {}, "tenant 'acme': give exactly one of api_key_env"),
        (
            "[tenants.acme]\napi_key_env = 'K'\napi_key_file = 'f'\n",
            {"K": KEY},
            "tenant 'acme': give exactly one",
        ),
        ("[tenants.acme]\napi_key_env = 'K'\n", {}, "environment variable K is empty"),
        (f"[tenants.acme]\napi_key = '{KEY}'\n", {}, "a key is never written in this file"),
        ("[tenants.acme]\napi_key_env = 1\n", {}, "api_key_env must be a string"),
        ("[tenants.acme]\napi_key_file = 'missing.key'\n", {}, "cannot read key file"),
        (
            "[tenants.acme]\napi_key_env = 'K'\nbase_url = 'http://example.com'\n",
            {"K": KEY},
            "tenant 'acme': base_url uses plain http://",
        ),
        ("[tenants.acme]\napi_key_env = 'K'\n", {"K": f"{KEY} {KEY}"}, "whitespace inside"),
    ],
)
def test_errors_name_the_file_and_tenant_never_the_key(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(TenantsFileError) as info:
        parse(text, tmp_path, **env)
    assert message in str(info.value)
    assert str(tmp_path / "tenants.toml") in str(info.value)
    assert KEY not in _all_text(info.value)


def test_a_bad_key_file_is_named_and_not_quoted(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(b"\xff\xfe\xfd" + KEY.encode())
    with pytest.raises(TenantsFileError, match=r"key file .*k is not text") as info:
        parse("[tenants.acme]\napi_key_file = 'k'\n", tmp_path)
    assert KEY not in _all_text(info.value)


def test_load_reads_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tenants.toml"
    with pytest.raises(TenantsFileError, match="cannot read it"):
        load_tenants(path, default_base_url=DEFAULT_BASE_URL)
    path.write_text("[tenants.acme]\napi_key_env = 'K'\n")
    monkeypatch.setenv("K", KEY)
    got = load_tenants(path, default_base_url=DEFAULT_BASE_URL)
    assert got["acme"].reveal_key() == KEY
