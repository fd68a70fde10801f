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

from benchmarks import _results, adaptation, lag, suite, tenants
from benchmarks._harness import machine

SECTIONS = {
    "fanout": ("Fan-out: wall time of long ranges", suite.fanout),
    "throughput": ("Throughput: big windows, typed vs untyped", suite.throughput),
    "memory": ("Memory: streaming stays flat", suite.memory),
    "ratelimit": ("Rate limiting: pacing and adaptive convergence", suite.ratelimit),
    "adaptation": ("Rate adaptation: storms, sporadic 429s, a token bucket", adaptation.run),
    "backfill": ("Backfill into SQLite through the CLI", suite.backfill),
    "lag": ("Freshness: a lab's change to the store, webhook vs pull", lag.run),
    "tenants": ("Tenants: one rate limiter per key", tenants.run),
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
  single cost left. Records were then filled through their slot descriptors (about a
  third faster); now each is made as an instance of a subclass that adds nothing but
  `object`'s `__setattr__`/`__delattr__` (so the interpreter specialises the 24 plain
  stores), then given its class `LabResult`: the same object, built in about half the
  time of the descriptors (table above). Valid while `LabResult` has no validators,
  converters or `__attrs_post_init__`, checked at import.
- **Exact decimals** cost msgspec a `Decimal` per number instead of a float; the decimal
  cache (needed when floats became Decimals) is gone. Timestamps are the largest part of
  the build left: `datetime.fromtimestamp(x, UTC)`, three per record, about as much as
  all 24 stores and the class change together.
- **Stalls.** Bodies were decoded on a worker thread past 1 MB, but msgspec holds the
  GIL for the whole parse, so the loop stalled as long (60 ms for 60,000 records). Then a
  first msgspec pass found the records and the rest was decoded 2,048 records a step;
  the first pass (33-55 ms on a 48 MB body) and aiohttp joining the body's chunks at the
  end of its read (35 ms: mostly the kernel mapping 48 MB of fresh pages) were still
  one step each. Now the body grows in one buffer as its chunks arrive, and a body laid
  out as the API sends it is cut by byte searches into 256 KiB pieces between records,
  each decoded straight into records in a step of its own (every cut checked: see
  docs/design.md); other bodies keep the first pass, then 1,024 records a step.
- **The cyclic garbage collector** rescanned every record alive at each collection: a
  third of decoding 100,000 records, and, with some 300,000 records alive in a 4-week
  run, six or seven full collections of 90-210 ms, the longest stalls left. The records
  the decoder builds are now untracked as each is made (`PyObject_GC_UnTrack` through
  ctypes, about 0.15 us; a record holds only immutable values, so it is in no cycle);
  the dedup state holds records in dicts rather than in tuples, which stayed tracked and
  made the rest of those full collections. Switching the collector off was never an
  option: it is process-wide.
- **Freeing a window.** `iter_results` held a window's records until the window ended
  (its own list, and a local of the stream that outlived the yield), so 100,000 records
  were freed in one step: 60 ms. Each record is now handed over and let go, and freed
  when the consumer drops it.
- **Dedup bookkeeping** (a heap push and pop for every record) was a quarter of the
  end-to-end time. Only labs that touch a window boundary, span windows or are still
  running now enter the bounded dedup state; the others cannot appear in another window.

Before and after (issue 20). The code before this round (main at ba5449a) and after it,
the same throughput rows on the same quiet machine within the hour (load about 1):

- `results()`, one 100,000-record body, vs its peer: 0.73 before, 0.85 after (0.69 to
  0.90 in four more runs); longest stall 143 ms before, 75 ms after (40-64 ms a run
  measured alone; the rest is the caller dropping its 100,000 records at once, which the
  peer pays too);
- `iter_results`, 4 weeks: 0.79 before, 0.89 after (1.23, 1.08 and 1.03 in three more);
  longest stall 434 ms before, 48 ms after (36-73 ms a run over four runs; the longest
  hold the process's one full collection, 20-47 ms with some 45,000 objects tracked);
- decode only, alternating the two versions three times (CPU time, best of 3 each):
  184,000-229,000 records/s before (0.46-0.64x orjson in the same process), 284,000 to
  300,000 after (0.72-0.76x). Under the load of the full runs the table shows less.

Earlier in issue 20 (load 4-7 then): `results()` 0.56 -> 0.75, `iter_results` 0.48 ->
0.57, decode only 115,241 -> 147,006 records/s, stalls 201 -> 125 ms and 992 -> 514 ms.

What is left is the building of 24-field frozen records with three aware datetimes and
exact Decimals: 1.9-2.2 us a record (the construction table), of which the three
`datetime.fromtimestamp` calls are 0.8 us, against 0.3-0.5 us for a dict or a msgspec
Struct. Within one body nothing overlaps the decode, so `results()` trails the peer by
that difference; `iter_results` decodes one window while the next is on the wire.
Since the first and last window of a range reach a day beyond it (a skewed filter loses
nothing at the ends), the 4-week range takes lodresults 5 requests against the peer's 4,
and a day more of labs at each end.
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
