"""
``LODRESULTS_LOG=debug`` (or ``info``, ``warning``, ...): log without writing code.

When the variable is set, a client's construction adds one handler to the ``lodresults``
logger (stderr, one line per record) and sets that logger's level; the root logger and
every other logger are left alone. lodresults logs no secret: its lines name commands,
windows, statuses and error classes, never the key, a header or a body.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Final, TextIO

__all__ = ["ENV_VAR", "LOGGER_NAME", "configure_from_env", "enable"]

ENV_VAR: Final = "LODRESULTS_LOG"
LOGGER_NAME: Final = "lodresults"
_LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                  "error": logging.ERROR, "critical": logging.CRITICAL}  # fmt: skip
_FORMAT: Final = "%(asctime)s %(name)s %(levelname)s %(message)s"


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """
    The handler this module adds (recognised so that it is added once). It writes to
    ``sys.stderr`` as it is at each record (pytest and notebooks replace it), as the
    standard library's own last-resort handler does.
    """

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr


def enable(level: int) -> Callable[[], None]:
    """
    Log records of ``level`` and above from the ``lodresults`` loggers to stderr.

    Returns a function that puts the logger back as it was (for a CLI command run inside
    another program, such as a test, that must not leave a handler behind).
    """
    logger = logging.getLogger(LOGGER_NAME)
    previous = logger.level
    added: _Handler | None = None
    if not any(isinstance(h, _Handler) for h in logger.handlers):
        added = _Handler()
        added.setFormatter(logging.Formatter(_FORMAT))
        logger.addHandler(added)
    logger.setLevel(level)

    def undo() -> None:
        logger.setLevel(previous)
        if added is not None:
            logger.removeHandler(added)

    return undo


def configure_from_env(environ: Mapping[str, str] = os.environ) -> None:
    """Apply ``LODRESULTS_LOG`` if it is set (a no-op otherwise); idempotent."""
    value = environ.get(ENV_VAR, "").strip()
    if not value:
        return
    level = _LEVELS.get(value.lower())
    if level is None:
        warnings.warn(
            f"{ENV_VAR}={value!r} is not one of {', '.join(_LEVELS)}; logging left off",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    enable(level)
