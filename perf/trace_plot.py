#!/usr/bin/env python3
"""perf/trace_plot.py: draw an mpg execution trace as a PNG timeline.

The trace is the Chrome trace-event JSON that a runtime writes when
runtime_options.trace_file or MPG_TRACE names a file (docs/api.md,
"Debugging"). The picture has one row per M (OS thread): each run of a task
is a bar coloured by the task's name (the legend maps colours to names);
the M's sleeps ("io_uring wait", "idle") are thin grey bars, blocking calls
hatched; parks, steals and timer firings are small ticks above the bars.

Usage:
  python3 perf/trace_plot.py TRACE.json OUT.png [--from MS] [--to MS]
                             [--width INCHES] [--dpi N]

Needs matplotlib (Debian: python3-matplotlib, installed by scripts/setup.sh;
perf/plotting.py finds Debian's copy from another python3 of the same
version, e.g. pyenv's).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plotting import pyplot  # noqa: E402

plt = pyplot()
if plt is None:
    sys.exit("trace_plot.py needs matplotlib: apt-get install python3-matplotlib")
from matplotlib.patches import Patch  # noqa: E402

MARKS = {"park": ("v", "#444444"), "steal": ("^", "#d62728"), "timer": ("|", "#1f77b4")}


def load(path: str) -> tuple[dict[int, str], list[dict]]:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    names = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            names[e["tid"]] = e["args"]["name"]
    return names, events


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("out")
    ap.add_argument("--from", dest="t_from", type=float, default=None, help="start, ms after the first span")
    ap.add_argument("--to", dest="t_to", type=float, default=None, help="end, ms after the first span")
    ap.add_argument("--width", type=float, default=10.0, help="inches")
    ap.add_argument("--dpi", type=int, default=100)
    args = ap.parse_args()

    names, events = load(args.trace)
    spans = [e for e in events if e.get("ph") == "X"]
    instants = [e for e in events if e.get("ph") == "i"]
    if not spans:
        sys.exit(f"{args.trace}: no spans to draw")
    first = min(e["ts"] for e in spans)
    lo = first if args.t_from is None else first + args.t_from * 1000
    hi = max(e["ts"] + e["dur"] for e in spans) if args.t_to is None else first + args.t_to * 1000

    def visible(t0: float, t1: float) -> bool:
        return t1 >= lo and t0 <= hi

    tids = sorted({e["tid"] for e in spans + instants})
    row = {tid: i for i, tid in enumerate(tids)}
    task_names = sorted({e["name"] for e in spans if e.get("cat") == "task"})
    cmap = plt.get_cmap("tab10" if len(task_names) <= 10 else "tab20")
    colour = {n: cmap(i % cmap.N) for i, n in enumerate(task_names)}

    fig, ax = plt.subplots(figsize=(args.width, 0.7 * len(tids) + 1.6))
    for e in spans:
        t0, t1 = e["ts"], e["ts"] + e["dur"]
        if not visible(t0, t1):
            continue
        y = row[e["tid"]]
        x, w = (t0 - lo) / 1000, max(e["dur"], 0.0) / 1000
        cat = e.get("cat")
        if cat == "task":
            ax.broken_barh([(x, w)], (y - 0.35, 0.7), facecolors=colour[e["name"]], linewidth=0)
        elif cat == "blocking":
            ax.broken_barh([(x, w)], (y - 0.35, 0.7), facecolors="none", edgecolors="black",
                           hatch="///", linewidth=0.5)
        else:  # an M asleep
            ax.broken_barh([(x, w)], (y - 0.06, 0.12), facecolors="#cccccc", linewidth=0)
    for kind, (marker, c) in MARKS.items():
        xs = [(e["ts"] - lo) / 1000 for e in instants if e.get("name") == kind and lo <= e["ts"] <= hi]
        ys = [row[e["tid"]] - 0.45 for e in instants if e.get("name") == kind and lo <= e["ts"] <= hi]
        if xs:
            ax.scatter(xs, ys, marker=marker, s=12, color=c, label=kind, linewidths=0.8, zorder=3)

    ax.set_yticks(range(len(tids)))
    ax.set_yticklabels([names.get(t, f"tid {t}") for t in tids])
    ax.set_ylim(-0.7, len(tids) - 0.2)
    ax.invert_yaxis()
    ax.set_xlim(0, (hi - lo) / 1000)
    ax.set_xlabel("ms")
    handles = [Patch(color=colour[n], label=n) for n in task_names]
    handles += [Patch(facecolor="#cccccc", label="M asleep")]
    marks = ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles + marks, loc="upper center", bbox_to_anchor=(0.5, -0.25 - 0.1 / len(tids)),
              ncol=min(8, len(handles) + len(marks)), fontsize=8, frameon=False)
    ax.set_title(f"{args.trace}: {len(spans)} spans on {len(tids)} M(s)", fontsize=9)
    ax.set_xlabel("ms" if lo == first else f"ms after {(lo - first) / 1000:g} ms")
    fig.tight_layout()
    fig.savefig(args.out, dpi=args.dpi)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
