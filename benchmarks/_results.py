"""
The raw measurements behind the tables, kept as JSON (``benchmarks/results.json``) so the
plots in the documentation are drawn from data (``python -m benchmarks --plots-only``)
without measuring again.

A measurement hands its data to ``KEPT`` (``KEPT.keep("fanout", rows)``) beside the table
it returns, so the sections keep their one-argument signature; ``__main__`` merges what
one run kept into the file, section by section, as it does for the Markdown tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results.json")


class Kept:
    """What one run measured, by section name (JSON values only)."""

    def __init__(self) -> None:
        self.sections: dict[str, Any] = {}

    def keep(self, section: str, data: Any) -> None:
        self.sections[section] = data


#: What this process measured (benchmarks run as one process: ``python -m benchmarks``).
KEPT = Kept()


def load(path: Path = RESULTS) -> dict[str, Any]:
    """The saved measurements, or nothing yet."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def merge(kept: Kept, path: Path = RESULTS) -> dict[str, Any]:
    """The saved measurements with this run's sections replacing theirs; written back."""
    data = {**load(path), **kept.sections}
    # One line per section: a run that measured one section changes one line.
    lines = [f"{json.dumps(k)}: {json.dumps(data[k], sort_keys=True)}" for k in sorted(data)]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    return data
