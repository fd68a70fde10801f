"""
The ``lodresults`` command-line interface (needs the ``cli`` extra: click and rich).
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``lodresults`` console script."""
    try:
        from lodresults.cli._app import cli
    except ImportError as exc:  # pragma: no cover - depends on the environment
        print(
            f"lodresults: the command line needs the 'cli' extra ({exc.name} is missing): "
            "pip install 'lodresults[cli]'",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    cli(prog_name="lodresults")
