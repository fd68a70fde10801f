"""Reading the API key from a file, whatever editor or shell wrote it, or from the
environment (pure but for ``read_key_file``, which reads a few KB at most)."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Final

__all__ = ["MAX_KEY_FILE_BYTES", "check_key", "decode_key", "read_key_file"]

#: A key file is read this far at most: a key is under 200 characters, and a path such
#: as ``/dev/zero`` or a log file given by mistake must not be read until memory runs out.
MAX_KEY_FILE_BYTES: Final = 4096

# The longer BOMs first: UTF-32-LE's BOM begins with UTF-16-LE's.
_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def read_key_file(path: Path) -> bytes:
    """
    The first bytes of ``path``; raises ValueError if it holds more than
    ``MAX_KEY_FILE_BYTES`` (OSError if it cannot be read).
    """
    with path.open("rb") as f:
        data = f.read(MAX_KEY_FILE_BYTES + 1)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ValueError(
            f"holds more than {MAX_KEY_FILE_BYTES} bytes; a key file holds one key on one line"
        )
    return data


def decode_key(data: bytes) -> str:
    """
    The key in a key file's bytes: decoded by its byte-order mark (UTF-16 as written by
    PowerShell 5's ``>``, UTF-8 with a BOM as written by Notepad, UTF-32), UTF-8 without
    one; the BOM and surrounding whitespace and line breaks stripped.

    Raises ValueError, with a message that quotes no part of the content, if the bytes
    are not such text, or hold no key, or a character that cannot be in a key (anything
    but printable ASCII, or whitespace inside it).
    """
    encoding, body = "utf-8", data
    for bom, name in _BOMS:
        if data.startswith(bom):
            encoding, body = name, data[len(bom) :]
            break
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError:
        # The codec's message quotes the offending bytes: they belong to the key.
        raise ValueError("is not text (UTF-8, or UTF-16/UTF-32 with a byte-order mark)") from None
    return check_key(text)


def check_key(text: str) -> str:
    """
    ``text`` without surrounding whitespace, if it is a key: printable ASCII without
    whitespace inside. Raises ValueError, quoting none of it, otherwise.
    """
    key = text.strip()
    if not key:
        raise ValueError("is empty")
    if not (key.isascii() and key.isprintable()) or any(c.isspace() for c in key):
        raise ValueError(
            "holds a character other than printable ASCII, or whitespace inside the key "
            "(one key on one line is expected)"
        )
    return key
