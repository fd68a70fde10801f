"""
The benchmark figures of the documentation, drawn from ``benchmarks/results.json``:

    python -m benchmarks --plots-only      # redraw from the saved measurements

- ``perf-fanout.svg``: wall time against concurrency, beside the ideal and the peers;
- ``perf-storm.svg``: requests per second as the server saw them, before and after a
  storm of 429s;
- ``perf-memory.svg``: resident memory while streaming one year and ten years.

Needs matplotlib (the ``docs`` extra). Each figure is skipped, and said so, when its
section was never measured.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

DOCS_IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
DAY = 86400
WEEK = 7 * DAY

#: One palette for every figure: lodresults, then the peers, then the ideal.
OURS, GATHER, SEQUENTIAL, FIXED, IDEAL = "#3f51b5", "#e65100", "#6d4c41", "#2e7d32", "#757575"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "svg.fonttype": "none",  # text stays text: searchable, and small files
            "svg.hashsalt": "lodresults",  # the same data gives the same file
        }
    )
    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", bbox_inches="tight", metadata={"Date": None})
    return path


def fanout(data: dict[str, Any], out: Path) -> Path:
    """Wall time of each range against concurrency: lodresults, the peers, the ideal."""
    plt = _pyplot()
    rows = data["rows"]
    years = sorted({r["years"] for r in rows})
    fig, axes = plt.subplots(1, len(years), figsize=(4.2 * len(years), 3.6), squeeze=False)
    for ax, y in zip(axes[0], years, strict=True):
        mine = sorted((r for r in rows if r["years"] == y), key=lambda r: r["concurrency"])
        cs = [r["concurrency"] for r in mine]
        ax.plot(cs, [r["ideal_s"] for r in mine], "--", color=IDEAL, label="ideal")
        for key, label, color, marker in (
            ("lodresults_s", "lodresults", OURS, "o"),
            ("gather_s", "hand-written gather (untyped)", GATHER, "s"),
        ):
            med = [statistics.median(r[key]) for r in mine]
            err = [
                [m - min(r[key]) for m, r in zip(med, mine, strict=True)],
                [max(r[key]) - m for m, r in zip(med, mine, strict=True)],
            ]
            ax.errorbar(cs, med, yerr=err, color=color, marker=marker, ms=5, capsize=3, label=label)
        seq = [
            (r["concurrency"], statistics.median(r["sequential_s"]))
            for r in mine
            if r.get("sequential_s")
        ]
        if seq:
            ax.plot(
                *zip(*seq, strict=True),
                "^",
                color=SEQUENTIAL,
                ms=7,
                label="hand-written sequential loop",
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(cs, [str(c) for c in cs])
        ideal = [r["ideal_s"] for r in mine]
        ax.set_yticks(ideal, [f"{v:.2g} s" for v in ideal])  # the ideal of each point
        ax.minorticks_off()
        ax.set_xlabel("concurrency (windows in flight)")
        ax.set_ylabel("wall time (log scale)")
        ax.set_title(
            f"{y} year{'s' if y > 1 else ''}: {mine[0]['windows']} windows, "
            f"{mine[0]['records']:,} labs"
        )
        ax.grid(True, which="both", alpha=0.25)
    axes[0][0].legend(fontsize=8, frameon=False)
    fig.suptitle(f"Fan-out at {data['latency_ms']:g} ms per request (lower is better)")
    fig.tight_layout()
    return _save(fig, out)


def storm(data: dict[str, Any], out: Path) -> Path:
    """Requests per second, as the server saw them, through a storm of 429s and after."""
    plt = _pyplot()
    styles = [(OURS, "-", 2.2), (SEQUENTIAL, ":", 1.6), (GATHER, "--", 1.4), (FIXED, "-.", 1.4)]
    fig, ax = plt.subplots(figsize=(8.4, 3.8))
    storm_s, rate = data["storm_s"], data["rate"]
    end = max(max(t for t, _ in c["arrivals"]) for c in data["clients"])
    edges = list(range(int(end) + 2))  # one-second bins
    cap = 2.5 * rate  # the peers' bursts would flatten everything else: clipped, labelled
    ax.axvspan(0, storm_s, color="#ffcdd2", alpha=0.6, lw=0, label="storm: every answer 429")
    ax.axhline(rate, color=IDEAL, ls="--", lw=1, label=f"configured {rate:g} req/s")
    for client, (color, ls, lw) in zip(data["clients"], styles, strict=False):
        accepted = [t for t, s in client["arrivals"] if s == 200]
        counts = [sum(1 for t in accepted if a <= t < a + 1) for a in edges[:-1]]
        ax.step(
            edges[:-1],
            [min(c, cap) for c in counts],
            where="post",
            color=color,
            ls=ls,
            lw=lw,
            label=f"{client['name']}: done in {client['seconds']:.1f} s",
        )
        peak = max(counts)
        if peak > cap:
            at = counts.index(peak)
            ax.annotate(
                f"{peak} req/s",
                (at + 0.5, cap),
                xytext=(at + 1.2, cap * 0.92),
                color=color,
                fontsize=8,
                arrowprops={"arrowstyle": "->", "color": color},
            )
    ax.set_ylim(0, cap * 1.05)
    ax.set_xlim(0, end + 1)
    ax.set_xlabel("seconds since the first request")
    ax.set_ylabel("accepted requests per second")
    ax.set_title(f"After a {storm_s:g} s storm of 429s: {data['windows']} windows, 4 in flight")
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(True, alpha=0.25)
    fig.tight_layout()
    return _save(fig, out)


def memory(data: dict[str, Any], out: Path) -> Path:
    """Resident memory after each window while streaming a short and a long range."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.4, 3.4))
    runs = sorted(data["runs"], key=lambda r: -r["years"])  # the short run drawn on top
    top = 0.0
    for run, color in zip(runs, [OURS, GATHER], strict=False):
        trace = run.get("trace") or []
        xs = [w * WEEK / (365.25 * DAY) for w, _, _ in trace]
        ys = [rss for _, _, rss in trace]
        top = max([top, run["peak_mb"], *ys])
        ax.plot(
            xs,
            ys,
            color=color,
            lw=1.4 if run is runs[0] else 2.4,
            label=f"{run['years']} y: {run['records']:,} labs, peak {run['peak_mb']:.1f} MB",
        )
        ax.axhline(run["baseline_mb"], color=IDEAL, ls=":", lw=1)
    ax.set_ylim(0, top * 1.25)
    ax.set_xlabel("years streamed")
    ax.set_ylabel("resident memory (MB)")
    ax.set_title("Resident memory after each window of iter_results")
    ax.plot([], [], color=IDEAL, ls=":", label="after import, before the first request")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.grid(True, alpha=0.25)
    fig.tight_layout()
    return _save(fig, out)


FIGURES: dict[str, tuple[str, Callable[[dict[str, Any], Path], Path]]] = {
    "fanout": ("perf-fanout.svg", fanout),
    "storm": ("perf-storm.svg", storm),
    "memory": ("perf-memory.svg", memory),
}


def draw(results: dict[str, Any], out_dir: Path = DOCS_IMAGES) -> list[str]:
    """Every figure whose section was measured; a line per figure saying what was done."""
    said = []
    for section, (name, fn) in FIGURES.items():
        if section in results:
            said.append(f"wrote {fn(results[section], out_dir / name)}")
        else:
            said.append(f"no {section} measurements yet: {name} not drawn")
    return said
