"""
Where an export file is written, and how.

Temp-file-then-rename replaces whatever the path named: a symlink would become a regular
file (its target untouched) and a device node would be destroyed (as root, ``--out
/dev/null`` turned the system's ``/dev/null`` into a file). So: a symlink is written
through to its target; anything that is not a regular file (a device, a FIFO,
``/dev/stdout``) is written straight into; only a regular file (or a new one) is written
beside its target under a temporary name and renamed over it once complete.
"""

from __future__ import annotations

import os
import secrets
import stat
from contextlib import suppress
from pathlib import Path

import attrs

__all__ = ["OutputTarget", "create_beside", "resolve_output"]

#: Paths resolved under these are the kernel's views of open files and devices
#: (``/dev/stdout`` is ``/proc/self/fd/1``): written straight into, never replaced.
_SPECIAL_ROOTS = ("/dev/", "/proc/")


@attrs.frozen
class OutputTarget:
    """``path``: where to write. ``direct``: write straight into it (not a regular file)."""

    path: Path
    direct: bool


def resolve_output(path: Path) -> OutputTarget:
    """
    Where ``path`` leads: its final target through any symlinks when that is (or will
    be) a regular file; ``path`` itself, written straight into, when it is anything else.
    """
    try:
        mode = os.stat(path).st_mode  # follows symlinks
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        return OutputTarget(path, direct=True)
    real = os.path.realpath(path)
    # Also by the name given: ``/dev/stdout`` redirected to a file (``>> log``) is that
    # file, to be written into at the shell's offset, not replaced.
    if real.startswith(_SPECIAL_ROOTS) or str(path.absolute()).startswith(_SPECIAL_ROOTS):
        return OutputTarget(path, direct=True)
    return OutputTarget(Path(real), direct=False)


def create_beside(path: Path) -> tuple[int, Path]:
    """
    A new, empty file next to ``path`` and its name, with the permissions a plain
    ``open(path, "w")`` would give: those of an existing ``path``, else 0666 less the
    umask (``mkstemp`` would make it 0600, unreadable to the group that reads exports).
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        try:
            with suppress(FileNotFoundError):
                os.chmod(fd, stat.S_IMODE(path.stat().st_mode))
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return fd, tmp
