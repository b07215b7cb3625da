#!/usr/bin/env python3
"""perf/ab.py: compare two builds of mpg on the benchmark workloads.

The question it answers is "did this change make mpg slower?", so both
sides are mpg: BUILD_A/perf/mpg_bench (before) and BUILD_B/perf/mpg_bench
(after), each run as `mpg_bench WORKLOAD [N]` with the RESULT protocol of
perf/run.py.

Wall clock. The runs are interleaved (A, B, B, A, A, B, ...) so that a noisy
minute on a shared machine hits both sides alike; the table shows the median
ns/op (bytes/task for idle_tasks) of each side and B/A (below 1: B is
faster).

Instructions. With --callgrind, each CPU-bound workload also runs under
valgrind's callgrind at MPG_PROCS=1, at a small N and at 2N, and the table
shows (I(2N) - I(N)) / (ops(2N) - ops(N)) instructions per op: the start-up (dynamic
linking, runtime construction) cancels out, and the figure does not depend
on the noise.

Usage:
  python3 perf/ab.py --a build-before --b build-after [--runs 7]
                     [--workloads fib,pingpong] [--callgrind]

Standard library only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from callgrind import CALLGRIND_N, instructions  # noqa: E402

WORKLOADS = ["spawn_join", "skynet", "fib", "yield_ping", "pingpong", "chan_mpmc",
             "mutex_contention", "idle_tasks"]
TIMEOUT_S = 300


def metric_of(workload: str) -> str:
    return "bytes_per_task" if workload == "idle_tasks" else "ns_per_op"


def run_once(binary: Path, workload: str, env: dict | None = None, n: int | None = None) -> dict:
    cmd = [str(binary), workload] + ([str(n)] if n is not None else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                         env=env)
    fields = {}
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            for tok in line.split()[1:]:
                k, _, v = tok.partition("=")
                fields[k] = v
    if out.returncode != 0 or fields.get("check") != "ok":
        raise RuntimeError(f"{' '.join(cmd)}: exit {out.returncode}: {out.stdout}{out.stderr}")
    return fields


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, type=Path, help="the build before the change")
    p.add_argument("--b", required=True, type=Path, help="the build after the change")
    p.add_argument("--runs", type=int, default=7, help="runs per side and workload (default 7)")
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--callgrind", action="store_true", help="also count instructions per op")
    args = p.parse_args()
    bins = {side: (build / "perf" / "mpg_bench") for side, build in (("A", args.a), ("B", args.b))}
    for side, b in bins.items():
        if not b.exists():
            print(f"ab.py: {b} not found (build {side} with -Dperf=true)", file=sys.stderr)
            return 2
    workloads = [w for w in args.workloads.split(",") if w]
    samples = {(w, s): [] for w in workloads for s in "AB"}
    for r in range(args.runs):
        order = "AB" if r % 2 == 0 else "BA"
        for w in workloads:
            for side in order:
                f = run_once(bins[side], w)
                samples[(w, side)].append(float(f[metric_of(w)]))
    counts = {}
    if args.callgrind:
        for w in workloads:
            if w in CALLGRIND_N:
                counts[w] = {s: instructions(bins[s], w) for s in "AB"}
    print(f"A = {args.a}, B = {args.b}; medians of {args.runs} interleaved runs")
    head = f"{'workload':<18}{'A':>12}{'B':>12}{'B/A':>8}"
    if counts:
        head += f"{'A instr/op':>14}{'B instr/op':>14}{'B/A':>8}"
    print(head)
    for w in workloads:
        a = statistics.median(samples[(w, "A")])
        b = statistics.median(samples[(w, "B")])
        line = f"{w:<18}{a:>12.1f}{b:>12.1f}{b / a:>8.2f}"
        if w in counts:
            ca, cb = counts[w]["A"], counts[w]["B"]
            line += f"{ca:>14.1f}{cb:>14.1f}{cb / ca:>8.3f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
