"""
Text a server sent, made safe to show in a terminal or a log: control characters escaped.

A server's ``Error`` text, an excerpt of its body or a header value may hold escape
sequences (clear the screen, set the title, hide text), carriage returns and line feeds
(a forged log line), bidirectional overrides (text that reads differently than it is) or
C1 controls (``\\x9b`` is CSI to some terminals). Each becomes a visible ``\\uXXXX``.
Pure, no I/O.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["printable"]

# C1 controls, DEL, the Unicode format characters that reorder or hide text (bidi
# marks, embeddings, overrides and isolates; zero-width characters; line and paragraph
# separators; the BOM; interlinear annotations) and lone surrogates.
_BEYOND_C0: Final = (
    "\x7f-\x9f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff"
)
_CONTROLS: Final = re.compile(f"[\x00-\x1f{_BEYOND_C0}]")
#: In JSON text the C0 controls inside strings are escaped already, and those outside
#: (newlines, indentation) are its layout.
_CONTROLS_IN_JSON: Final = re.compile(f"[{_BEYOND_C0}]")


def printable(text: str, *, json: bool = False) -> str:
    """
    ``text`` with every control character spelled ``\\uXXXX``; with ``json``, a JSON
    document's text (still valid JSON, the same values) with those its encoder left raw.
    """
    pattern = _CONTROLS_IN_JSON if json else _CONTROLS
    return pattern.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"
