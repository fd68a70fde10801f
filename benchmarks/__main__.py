"""
Run every benchmark and write benchmarks/README.md, the raw measurements
(benchmarks/results.json) and the plots drawn from them (docs/images/perf-*.svg).

    python -m benchmarks            # the full suite (a few minutes on 2 cores)
    python -m benchmarks --quick    # tiny sizes: checks that everything runs
    python -m benchmarks --only adaptation   # one section again, the others kept
    python -m benchmarks --plots-only        # redraw the plots from results.json
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from benchmarks import _results, adaptation, suite
from benchmarks._harness import machine

SECTIONS = {
    "fanout": ("Fan-out: wall time of long ranges", suite.fanout),
    "throughput": ("Throughput: big windows, typed vs untyped", suite.throughput),
    "memory": ("Memory: streaming stays flat", suite.memory),
    "ratelimit": ("Rate limiting: pacing and adaptive convergence", suite.ratelimit),
    "adaptation": ("Rate adaptation: storms, sporadic 429s, a token bucket", adaptation.run),
    "backfill": ("Backfill into SQLite through the CLI", suite.backfill),
}

HEADER = """# Benchmarks

lodresults measured side by side with what a user would otherwise write
(`benchmarks/peers/`), in one run on one machine. Reproduce with:

```sh
.venv/bin/pip install -q -e '.[cli]' && .venv/bin/python -m benchmarks
```

"""


PROFILE_NOTES = """## What profiling showed, and what was done

Profiled with cProfile on 100,000-record bodies and on the end-to-end throughput run.

- **Decoding through cattrs' generated structure function** cost about five times
  `orjson.loads`. The hot path now decodes with msgspec into a struct of the plain
  documented types and builds `LabResult`s with the converter's own per-type rules; a
  property test proves it equal to the converter on valid and damaged bodies.
- **The frozen attrs `__init__`** (24 `object.__setattr__` calls by name) was the largest
  single cost left. Records are now filled through their slot descriptors by a generated
  function (valid while `LabResult` has no validators, checked at import): about a
  third faster.
- **The cyclic garbage collector** rescans the growing heap of new records every few
  hundred allocations. It was held during one body's build, but that switched it off for
  the whole process, so it no longer is: the wire structs are untracked (`gc=False`) and
  each record is one tracked allocation; decoding 100,000 records takes about 15 % longer.
- **Dedup bookkeeping** (a heap push and pop for every record) was a quarter of the
  end-to-end time. Only labs that touch a window boundary, span windows or are still
  running now enter the bounded dedup state; the others cannot appear in another window.
- **A decimal cache** sized 65,536 made peak memory grow with the range; at 4,096 the
  ten-year run peaks within a megabyte of the one-year run.

Typed records reached 0.51x, 0.63x and 0.57x of the untyped gather + orjson peer end to
end in three full runs on this machine (goal: 0.5x; it was 0.35x before the work above).
What is left is the cost of building 24-field objects with aware datetimes and Decimals,
which dicts of plain JSON values do not pay; the decode-only rows vary by run with the
machine's load, so compare ratios within one run. Since the first and last window of a
range reach a day beyond it (a skewed filter loses nothing at the ends), the 4-week
throughput range takes lodresults 5 requests, 3 rounds at concurrency 2 against the
peer's 2, and a day more of labs at each end: 0.45x in the run above and 0.54x in a
full run an hour before it (same code: the peer's times vary most), 0.55x before.
"""


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("README.md"))
    parser.add_argument(
        "--plots-only", action="store_true", help="redraw the plots from results.json"
    )
    args = parser.parse_args()
    # The raw data lives beside the tables; the plots go into the docs (beside the tables
    # too when they are written elsewhere, as the tests do).
    results = args.out.with_name(_results.RESULTS.name)
    images = None if results == _results.RESULTS else args.out.parent / "images"
    if args.plots_only:
        _plot(_results.load(results), images)
        return
    sizes = suite.QUICK if args.quick else suite.FULL
    parts = [HEADER, f"Machine: {machine()}.\n"]
    measured: dict[str, str] = {}
    started = time.perf_counter()
    for name, (title, fn) in SECTIONS.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        print(f"== {title}", file=sys.stderr, flush=True)
        body = fn(sizes)
        print(body, file=sys.stderr, flush=True)
        measured[title] = f"## {title}\n\n{body}\n\n_({time.perf_counter() - t0:.0f} s)_\n"
        parts.append(measured[title])
    parts.append(f"Whole suite: {time.perf_counter() - started:.0f} s.\n")
    parts.append(PROFILE_NOTES)
    if args.out and not args.quick:
        if args.only and args.out.exists():
            # One section again: the others keep the figures of the last full run.
            args.out.write_text(_replace_sections(args.out.read_text(), measured))
        else:
            args.out.write_text("\n".join(parts))
        print(f"wrote {args.out}", file=sys.stderr)
        # The raw data beside the tables (sections not measured now keep theirs), then
        # the plots drawn from it.
        _plot(_results.merge(_results.KEPT, results), images)


def _plot(results: dict[str, object], images: Path | None) -> None:
    from benchmarks import plots  # matplotlib only here: the docs extra

    for line in plots.draw(results, images or plots.DOCS_IMAGES):
        print(line, file=sys.stderr)


def _replace_sections(text: str, sections: dict[str, str]) -> str:
    """``text`` with each ``## title`` section of ``sections`` replaced (or added)."""
    for title, section in sections.items():
        pattern = re.compile(
            rf"^## {re.escape(title)}\n.*?(?=^## |^Whole suite: |\Z)", re.MULTILINE | re.DOTALL
        )
        found = pattern.search(text)
        if found is not None:
            a, b = found.span()
        else:  # a new section: before the total
            a = b = text.find("\nWhole suite: ") + 1 or len(text)
        text = text[:a] + section + "\n" + text[b:]
    return text


if __name__ == "__main__":
    main()
