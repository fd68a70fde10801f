"""
Draws docs/images/windows.svg: a range cut into windows of at most 7 days, the settled
part and the unsettled tail, and the change feed. Run from the repository root:

    python docs/diagrams.py

Needs matplotlib (the ``docs`` extra). The figure follows the library's own rules: the
windows are planned by ``lodresults``' planner, the tail is ``DEFAULT_SETTLE`` long.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch, Rectangle

from lodresults import MAX_WINDOW_SECONDS
from lodresults._windows.dedup import SKEW_TOLERANCE
from lodresults._windows.plan import plan_windows
from lodresults._windows.settle import DEFAULT_SETTLE

OUT = Path(__file__).resolve().parent / "images" / "windows.svg"
DAY = 86400

#: The range drawn: 33 days up to "now" (day 0 is the range's start).
RANGE_DAYS = 33

WINDOW, SETTLED, TAIL, FEED, LAB = (
    "#c5cae9",
    "#a5d6a7",
    "#ffcc80",
    "#ef9a9a",
    "#37474f",
)


def windows(start: int, end: int) -> list[tuple[float, float]]:
    """The planner's windows for ``[start, end]`` widened as the client asks them, in days."""
    base = 1_000 * DAY  # the planner takes epoch seconds: none before 1970
    first, last = base + start - SKEW_TOLERANCE, base + end + SKEW_TOLERANCE
    return [
        ((w.start - base) / DAY, (w.end - base) / DAY)
        for w in plan_windows(first, last, MAX_WINDOW_SECONDS)
    ]


def draw(out: Path = OUT) -> Path:
    plt.rcParams.update({"font.size": 10, "svg.fonttype": "none", "svg.hashsalt": "lodresults"})
    start, end = 0, RANGE_DAYS * DAY
    settle_days = DEFAULT_SETTLE / DAY
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.set_xlim(-2.5, RANGE_DAYS + 5.5)
    ax.set_ylim(-0.6, 4.6)
    ax.axis("off")

    # Row 3: the range asked for.
    ax.add_patch(Rectangle((0, 3.6), RANGE_DAYS, 0.5, color="#e0e0e0"))
    ax.text(
        RANGE_DAYS / 2,
        3.85,
        "iter_results(start, end): the range you ask for",
        ha="center",
        va="center",
    )
    ax.text(0, 4.3, "start", ha="center")
    ax.text(RANGE_DAYS, 4.3, "end = now", ha="center")

    # Row 2: the windows, at most 7 days each, the outer two reaching a day beyond.
    for i, (a, b) in enumerate(windows(start, end)):
        ax.add_patch(
            FancyBboxPatch(
                (a + 0.08, 2.5),
                b - a - 0.16,
                0.7,
                boxstyle="round,pad=0,rounding_size=0.15",
                fc=WINDOW,
                ec="#3f51b5",
                lw=1,
            )
        )
        ax.text(
            (a + b) / 2,
            2.85,
            f"window {i + 1}\n{b - a:g} days",
            ha="center",
            va="center",
            fontsize=8,
        )
    skew = SKEW_TOLERANCE / DAY
    for a in (-skew, RANGE_DAYS):
        ax.add_patch(
            Rectangle(
                (a + (0.08 if a < 0 else 0), 2.5),
                skew - 0.08,
                0.7,
                fc="none",
                ec="#7986cb",
                lw=0,
                hatch="///",
            )
        )
    ax.text(-skew - 0.2, 2.85, "+1 day", ha="right", va="center", fontsize=8)
    ax.text(RANGE_DAYS + skew + 0.2, 2.85, "+1 day", ha="left", va="center", fontsize=8)

    # Row 1: some labs; one spans two windows, one is still running.
    labs = [(2.0, 2.3), (5.4, 6.6), (19.0, 19.4), (21.6, 22.5), (24.8, 25.0), (28.1, 28.6)]
    for a, b in labs:
        ax.plot([a, b], [1.75, 1.75], color=LAB, lw=3, solid_capstyle="round")
    ax.plot([31.2, RANGE_DAYS], [1.75, 1.75], color=LAB, lw=3, ls=(0, (1, 1)))
    ax.text(7.0, 1.75, "\u2190 across two windows: yielded once", va="center", fontsize=8)
    ax.text(RANGE_DAYS + 0.3, 1.75, "still running", va="center", fontsize=8)

    # Row 0: settled part, unsettled tail, change feed.
    settled = RANGE_DAYS - settle_days
    ax.add_patch(Rectangle((0, 0.7), settled, 0.55, color=SETTLED))
    ax.text(
        settled / 2, 0.975, "settled: checkpointed, never fetched again", ha="center", va="center"
    )
    ax.add_patch(Rectangle((settled, 0.7), settle_days, 0.55, color=TAIL))
    ax.text(
        RANGE_DAYS + 0.3,
        0.975,
        f"last {settle_days:g} days: unsettled,\nfetched again by the next run",
        va="center",
        fontsize=8,
    )
    ax.add_patch(Rectangle((RANGE_DAYS - 0.25, -0.2), 0.25, 0.55, color=FEED))
    ax.text(
        RANGE_DAYS + 0.3,
        0.075,
        "change feed: LatestResults,\nthe last minutes (watch)",
        va="center",
        fontsize=8,
    )
    ax.text(-0.3, 0.975, "backfill", ha="right", va="center", fontsize=9, style="italic")
    ax.text(-0.3, 1.75, "labs", ha="right", va="center", fontsize=9, style="italic")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None})
    return out


if __name__ == "__main__":
    print(f"wrote {draw(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)}")
