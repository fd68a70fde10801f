"""
A hostile HTTP server on loopback, raw asyncio (so it can break HTTP itself), and an oracle
that finds a key in any text in the spellings a server may choose.

Each answer is a function of the key the client sent, so a server that echoes it back in
every encoding, lies about lengths, bombs with gzip or redirects anywhere is one line.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final
from urllib.parse import quote, unquote

#: A canary key with the characters servers like to escape (+ and /).
HOSTILE_KEY: Final = "canary+KEY/7f3a9c1e5b-0123456789abcdef"
PIECE: Final = 8

Answer = Callable[[str], bytes]


def spellings(key: str) -> dict[str, str]:
    """The key as servers have been seen to spell it back."""
    return {
        "raw": key,
        "json-escaped": json.dumps(key)[1:-1].replace("+", "\\u002B").replace("/", "\\/"),
        "all-u-escapes": "".join(f"\\u{ord(c):04x}" for c in key),
        "percent": quote(key, safe=""),
        "percent-twice": quote(quote(key, safe=""), safe=""),
        "html-refs": "".join(f"&#{ord(c)};" for c in key),
        "html-named": key.replace("+", "&plus;").replace("/", "&sol;").replace("-", "&hyphen;"),
        "utf-16": key.encode("utf-16-le").decode("latin-1"),
    }


def http(status: int, body: bytes, *headers: str, reason: str = "X") -> bytes:
    """A complete HTTP/1.1 answer with a correct Content-Length unless one is given."""
    head = [f"HTTP/1.1 {status} {reason}", "Connection: close", *headers]
    if not any(h.lower().startswith("content-length") for h in headers):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def gzip_bomb(inflated: int, prefix: bytes = b"") -> bytes:
    """A gzip body of ``prefix`` then spaces, ``inflated`` bytes once inflated."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [c.compress(prefix)]
    block = b" " * (1 << 20)
    left = inflated - len(prefix)
    while left > 0:
        out.append(c.compress(block[: min(left, len(block))]))
        left -= len(block)
    out.append(c.flush())
    return b"".join(out)


class Hostile:
    """Serves ``answer(key)`` to every request; counts requests."""

    def __init__(self, answer: Answer, hang: bool = False) -> None:
        self.answer = answer
        self.hang = hang
        self.answered = asyncio.Event()
        self.requests = 0
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v3"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            match = re.search(rb"(?im)^api_key:\s*(.*?)\r$", head)
            key = match.group(1).decode() if match else ""
            writer.write(self.answer(key))
            await writer.drain()
            self.answered.set()
            if self.hang:  # never finish: wait for the client to give up
                await reader.read()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def hostile(answer: Answer, *, hang: bool = False) -> AsyncIterator[Hostile]:
    """A hostile server on an ephemeral loopback port (``hang``: never ends its answer)."""
    h = Hostile(answer, hang)
    server = await asyncio.start_server(h._serve, "127.0.0.1", 0)
    h.port = server.sockets[0].getsockname()[1]
    try:
        yield h
    finally:
        server.close()
        await server.wait_closed()


def _views(text: str) -> list[str]:
    """``text`` decoded the ways a reader could decode it, each step on the last."""
    views = [text, unquote(text)]
    v = text.replace("\\\\", "\\")
    views.append(v)
    v = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), v)
    views.append(v)
    v = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m[1], 16)), v)
    v = re.sub(r"\\(.)", r"\1", v)
    views.append(v)
    v = unquote(unquote(v))
    views.append(v)
    v = html.unescape(v)
    views.append(v)
    views.append(v.replace("\x00", ""))
    return views


def key_pieces_in(text: str, key: str = HOSTILE_KEY) -> list[str]:
    """Every piece of ``key`` (``PIECE`` characters or more) found in ``text``, decoded."""
    pieces = {key[i : i + PIECE] for i in range(len(key) - PIECE + 1)}
    found = set()
    for view in _views(text):
        for p in pieces:
            if p in view:
                found.add(p)
    return sorted(found)
