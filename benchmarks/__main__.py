"""
Run every benchmark and write benchmarks/README.md.

    python -m benchmarks            # the full suite (a few minutes on 2 cores)
    python -m benchmarks --quick    # tiny sizes: checks that everything runs
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks import suite
from benchmarks._harness import machine

SECTIONS = {
    "fanout": ("Fan-out: wall time of long ranges", suite.fanout),
    "throughput": ("Throughput: big windows, typed vs untyped", suite.throughput),
    "memory": ("Memory: streaming stays flat", suite.memory),
    "ratelimit": ("Rate limiting: pacing and adaptive convergence", suite.ratelimit),
    "backfill": ("Backfill into SQLite through the CLI", suite.backfill),
}

HEADER = """# Benchmarks

lodresults measured side by side with what a user would otherwise write
(`benchmarks/peers/`), in one run on one machine. Reproduce with:

```sh
.venv/bin/pip install -q -e '.[cli]' && .venv/bin/python -m benchmarks
```

"""


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("README.md"))
    args = parser.parse_args()
    sizes = suite.QUICK if args.quick else suite.FULL
    parts = [HEADER, f"Machine: {machine()}.\n"]
    started = time.perf_counter()
    for name, (title, fn) in SECTIONS.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        print(f"== {title}", file=sys.stderr, flush=True)
        body = fn(sizes)
        print(body, file=sys.stderr, flush=True)
        parts.append(f"## {title}\n\n{body}\n\n_({time.perf_counter() - t0:.0f} s)_\n")
    parts.append(f"Whole suite: {time.perf_counter() - started:.0f} s.\n")
    if args.out and not args.quick:
        args.out.write_text("\n".join(parts))
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
