"""
Removes every piece of a secret from text that came from a server, whatever its spelling.

A server may echo the ``api_key`` it received: whole or cut by an excerpt, JSON-escaped
(``\\u002B``, ``\\/``, any ``\\uXXXX``), percent-encoded (``%2B``, even twice), as HTML
character references or interleaved with NULs (UTF-16). The text is first decoded into
what a reader would see, keeping for each decoded character the span of the original
text it came from; every run of decoded characters that contains a piece of the secret
of ``min_piece`` characters or more is then replaced, in the original spelling, by
``***``. Pure: no I/O, no HTTP.

No library does this: ``re.escape``-style literal replacement sees one spelling only.
"""

from __future__ import annotations

import html
import re
from typing import Any, Final

__all__ = ["MASK", "Redactor"]

MASK: Final = "***"
#: Decoding passes: ``%255C`` is ``%5C`` after one pass and ``\\`` after two.
_PASSES: Final = 3
#: Mask-and-read-again rounds before the whole text is masked.
_ROUNDS: Final = 4
_SIMPLE_ESCAPES: Final = {
    "/": "/",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}
_UNIT: Final = re.compile(
    r"""
      (?P<pair>\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})
    | \\u(?P<u>[0-9a-fA-F]{4})
    | \\x(?P<x>[0-9a-fA-F]{2})
    | \\(?P<simple>.)
    | %(?P<ascii>[0-7][0-9a-fA-F])
    | (?P<utf8>(?:%[89a-fA-F][0-9a-fA-F])+)
    | &\#(?P<dec>[0-9]{1,7});?
    | &\#[xX](?P<hex>[0-9a-fA-F]{1,6});?
    | (?P<named>&[A-Za-z][A-Za-z0-9]{1,31};?)
    | (?P<nul>\x00)
    """,
    re.VERBOSE | re.DOTALL,
)

# One decoded character and the span [start, end) of the original text it came from.
_Char = tuple[str, int, int]


def _chr(code: int) -> str:
    return chr(code) if 0 <= code <= 0x10FFFF else "\ufffd"


def _decode_unit(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind == "pair":
        hi, lo = int(m.group("pair")[2:6], 16), int(m.group("pair")[8:12], 16)
        return chr(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
    if kind in ("u", "x", "ascii", "hex"):
        return _chr(int(m.group(kind), 16))
    if kind == "dec":
        return _chr(int(m.group("dec")))
    if kind == "simple":
        # Lenient readers turn an unknown escape into the character itself: a cut
        # ``\\u00`` reads as ``u00``, which may complete a piece with its neighbours.
        c = m.group("simple")
        return _SIMPLE_ESCAPES.get(c, c)
    if kind == "named":
        return html.unescape(m.group("named"))  # unchanged when it names nothing
    if kind == "utf8":
        return bytes.fromhex(m.group("utf8").replace("%", "")).decode("utf-8", "replace")
    return ""  # nul


def _decode_pass(chars: list[_Char]) -> tuple[list[_Char], bool]:
    """Decode the escapes in ``chars`` once; every new character keeps its origin span."""
    text = "".join(c for c, _, _ in chars)
    out: list[_Char] = []
    pos = 0
    changed = False
    for m in _UNIT.finditer(text):
        out.extend(chars[pos : m.start()])
        a, b = chars[m.start()][1], chars[m.end() - 1][2]
        out.extend((c, a, b) for c in _decode_unit(m))
        pos = m.end()
        changed = True
    out.extend(chars[pos:])
    return out, changed


class Redactor:
    """
    Replaces every piece (``min_piece`` characters or more) of ``secret`` in any text,
    in any of the spellings listed in the module docstring, by ``***``.
    """

    __slots__ = ("_pieces", "_size")

    def __init__(self, secret: str, *, min_piece: int = 8) -> None:
        size = min(min_piece, len(secret))
        self._size = size
        self._pieces = frozenset(secret[i : i + size] for i in range(len(secret) - size + 1))

    def __repr__(self) -> str:
        return "Redactor('***')"

    def __reduce__(self) -> str:
        raise TypeError("Redactor cannot be pickled")

    def text(self, text: str) -> str:
        """``text`` with every spelling of every piece of the secret replaced by ``***``."""
        if not text or not self._pieces:
            return text
        # A mask may change how its neighbours read: in ``&#48;&#4800000000`` the last
        # reference is invalid (too many digits) until its digits are masked, and then
        # ``&#48***`` reads as "0", completing a piece with the references before it. So
        # the masked text is read again until nothing is found; past a few rounds, all
        # of it is masked (never reached by any spelling we know of).
        for _ in range(_ROUNDS):
            spans = self._spans(text)
            if not spans:
                return text
            text = _mask(text, spans)
        return MASK if self._spans(text) else text

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """The spans of ``text`` whose decoded reading holds a piece of the secret."""
        chars: list[_Char] = [(c, i, i + 1) for i, c in enumerate(text)]
        views = [chars]
        for _ in range(_PASSES):
            chars, changed = _decode_pass(chars)
            if not changed:
                break
            views.append(chars)
        spans: list[tuple[int, int]] = []
        size, pieces = self._size, self._pieces
        for view in views:
            decoded = "".join(c for c, _, _ in view)
            for i in range(len(decoded) - size + 1):
                if decoded[i : i + size] in pieces:
                    spans.append((view[i][1], view[i + size - 1][2]))
        return spans

    def error(self, error: BaseException) -> None:
        """Scrub, in place, every string an error holds: its args and its attributes."""
        error.args = tuple(self._value(a) for a in error.args)
        for name, value in list(vars(error).items()):
            setattr(error, name, self._value(value))

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, BaseException):
            self.error(value)
        return value


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    spans.sort()
    merged: list[list[int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    out: list[str] = []
    pos = 0
    for a, b in merged:
        out.append(text[pos:a])
        out.append(MASK)
        pos = b
    out.append(text[pos:])
    return "".join(out)
