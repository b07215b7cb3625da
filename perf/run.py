#!/usr/bin/env python3
"""perf/run.py: run mpg's benchmark workloads side by side with their peers.

Runs every workload of docs/benchmarks.md (summarised in README.md) on

  * mpg      BUILD/perf/mpg_bench      (built by perf/meson.build)
  * threads  BUILD/perf/threads_bench  (std::thread + std::mutex + std::condition_variable)
  * Go       BUILD/perf/go_bench       (built here from perf/go/ when `go` is on PATH)

and prints one table: the median ns/op of each (bytes per task for idle_tasks),
peak RSS, the peer/mpg ratios and mpg's target. The same table, with notes, is
written as markdown to BUILD/perf-results.md.

Protocol. Every program is run as `PROGRAM WORKLOAD [N]`, one process per run,
and prints exactly one line:

  RESULT workload=<name> impl=<mpg|threads|go> ops=<count> ns_per_op=<float>
         wall_ms=<float> peak_rss_kb=<int> check=<ok|FAIL> [bytes_per_task=<float>]

Exit status 0 is success, 1 a failed self-check (check=FAIL), 2 an unknown
workload, 3 a workload the program cannot run (threads: skynet, fib). Without N
each program uses its own default size (threads run smaller sizes; ns/op stays
comparable because it is per op).

Cells: "n/a" means the program is not there (not built, or no Go),
"infeasible" that the program declined the workload (exit 3), "error" a crash,
a timeout (120 s per run), unparsable output or an unexpected exit status,
"FAIL" a failed self-check. Errors never stop the table; they are listed below
it, and make the exit status 1.

With --instructions, mpg's task and channel workloads also run under
valgrind's callgrind on 1 P (perf/callgrind.py: the marginal count between a
small and a large run, so start-up cancels), and a second table gives the
instructions per op beside the best published C++ figures (libfork's, where
it has one) and mpg's targets. Unlike the wall clock, this count does not
move with the machine's load.

The comparison is also drawn as a chart (log scale; mpg, threads and Go for
each workload), BUILD/perf-results.png, when matplotlib is installed
(Debian's python3-matplotlib); --chart PATH writes it elsewhere.

Usage:
  python3 perf/run.py --build build [--runs 3] [--workloads a,b] [--no-go]
                      [--n WORKLOAD=N ...] [--instructions] [--chart PATH]

Standard library only.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

PERF_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(PERF_DIR))
from callgrind import CALLGRIND_FLOORS, CALLGRIND_N, instructions  # noqa: E402
from plotting import pyplot  # noqa: E402
GO_SRC_DIR = PERF_DIR / "go"
RUN_TIMEOUT_S = 120
GO_BUILD_TIMEOUT_S = 300

EXIT_CHECK_FAILED = 1
EXIT_UNKNOWN_WORKLOAD = 2
EXIT_INFEASIBLE = 3

IMPLS = ("mpg", "threads", "go")


# --------------------------------------------------------------------------
# Workloads and targets
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Workload:
    """One row of the table.

    metric: the RESULT field compared across implementations.
    target: mpg's target for that metric (None: no target).
    go_ratio_target: a target stated as "at least this many times Go" (the
        Go/mpg ratio of one interleaved run), for workloads whose absolute
        figures move with the machine; it replaces `target` in the table.
    higher_is_better: False for costs (ns/op, bytes), True for rates; the
        ratios are always "how many times better mpg is".
    impls: which implementations run it.
    runner: how a cell is measured; None means "run the program with the
        RESULT protocol" (measure_program).
    """

    name: str
    metric: str = "ns_per_op"
    unit: str = "ns/op"
    target: Optional[float] = None
    go_ratio_target: Optional[float] = None
    higher_is_better: bool = False
    impls: tuple = IMPLS
    runner: Optional[Callable] = None


WORKLOADS = [
    Workload("spawn_join", target=20),
    Workload("skynet", go_ratio_target=150),
    Workload("fib", go_ratio_target=65),
    Workload("yield_ping"),
    Workload("pingpong", target=50),
    Workload("chan_mpmc", target=20),
    Workload("mutex_contention", target=15),
    Workload("idle_tasks", metric="bytes_per_task", unit="bytes/task", target=256),
    # Go has no equivalent of posting a plain function onto its scheduler
    # from a foreign thread: absent.
    Workload("post", impls=("mpg", "threads")),
    # Go has no oneshot from a plain thread to a goroutine: absent.
    Workload("oneshot", impls=("mpg", "threads")),
    # tcp_echo and http_hello need a server and a load client: they are run by
    # perf/servers/run_servers.py.
]

# Instructions per op on 1 P (--instructions): libfork's published-benchmark
# figures measured on this machine class (None: it has no such workload), and
# mpg's targets.
INSTRUCTION_ANCHORS = {"fib": 283, "skynet": 183}
INSTRUCTION_TARGETS = {"spawn_join": 200, "skynet": 170, "fib": 250, "pingpong": 300, "chan_mpmc": 120}

# The scaling row: fib(32) on mpg with MPG_PROCS=1 and MPG_PROCS=2; the figure
# is the ratio of the wall times (1P / 2P).
SCALING_NAME = "fib32_scaling"
SCALING_TARGET = 1.85


# --------------------------------------------------------------------------
# Running one program
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """The result of one process run."""

    status: str  # "ok", "fail", "error", "infeasible"
    fields: dict = dataclasses.field(default_factory=dict)
    detail: str = ""  # for errors: what went wrong


def parse_result_line(stdout: str) -> Optional[dict]:
    """Returns the key=value fields of the single RESULT line, or None."""
    lines = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
    if len(lines) != 1:
        return None
    fields = {}
    for token in lines[0].split()[1:]:
        key, sep, value = token.partition("=")
        if not sep:
            return None
        fields[key] = value
    for key in ("ns_per_op", "wall_ms", "bytes_per_task"):
        if key in fields:
            try:
                fields[key] = float(fields[key])
            except ValueError:
                return None
    for key in ("ops", "peak_rss_kb"):
        if key in fields:
            try:
                fields[key] = int(fields[key])
            except ValueError:
                return None
    return fields


# Why the shell in between: Linux carries ru_maxrss across exec (the kernel
# keeps the larger of the old and new images' peaks), so a program exec'd
# straight from this Python process would report Python's ~15 MiB as its peak
# RSS. A fresh fork of a small /bin/sh starts the count from the shell's few
# hundred KiB instead; the trailing `exit $?` stops the shell from exec'ing
# the program in place of forking it.
TRAMPOLINE = ["/bin/sh", "-c", '"$@"; exit $?', "sh"]


def run_once(program: Path, workload: str, n: Optional[int], env: Optional[dict] = None) -> Outcome:
    """Runs `program workload [n]` once and classifies what happened."""
    argv = TRAMPOLINE + [str(program), workload] + ([str(n)] if n is not None else [])
    try:
        # A session of its own, so a timeout kills the program and the shell.
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, start_new_session=True)
    except OSError as e:
        return Outcome("error", detail=f"could not start: {e}")
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        return Outcome("error", detail=f"timed out after {RUN_TIMEOUT_S} s")
    if proc.returncode == 127 and not stdout:
        return Outcome("error", detail="could not start: " + stderr.strip())
    if proc.returncode < 0 or proc.returncode > 128:
        sig = -proc.returncode if proc.returncode < 0 else proc.returncode - 128
        return Outcome("error", detail=f"killed by signal {sig}: " + " | ".join(stderr.strip().splitlines()[-3:]))

    if proc.returncode == EXIT_INFEASIBLE:
        return Outcome("infeasible")
    fields = parse_result_line(stdout)
    stderr_tail = stderr.strip().splitlines()[-3:]
    why = f"exit status {proc.returncode}" + (": " + " | ".join(stderr_tail) if stderr_tail else "")
    if proc.returncode == EXIT_UNKNOWN_WORKLOAD:
        return Outcome("error", detail="unknown workload (" + why + ")")
    if fields is None or "ns_per_op" not in fields:
        return Outcome("error", detail="no valid RESULT line, " + why)
    if fields.get("check") != "ok" or proc.returncode == EXIT_CHECK_FAILED:
        return Outcome("fail", fields, detail="self-check failed, " + why)
    if proc.returncode != 0:
        return Outcome("error", fields, detail=why)
    return Outcome("ok", fields)


# --------------------------------------------------------------------------
# Cells: the median over K runs
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Cell:
    """One implementation's figures for one workload (medians over the runs)."""

    status: str  # "ok", "n/a", "infeasible", "error", "FAIL"
    value: Optional[float] = None  # the workload's metric
    peak_rss_kb: Optional[float] = None
    wall_ms: Optional[float] = None
    detail: str = ""


def summarize(outcomes: list, metric: str) -> Cell:
    """Folds the runs of one program into a cell: any failure wins over medians."""
    for o in outcomes:
        if o.status == "fail":
            return Cell("FAIL", detail=o.detail)
    for o in outcomes:
        if o.status == "error":
            return Cell("error", detail=o.detail)
    if any(o.status == "infeasible" for o in outcomes):
        return Cell("infeasible")
    if not outcomes:
        return Cell("n/a")
    if any(metric not in o.fields for o in outcomes):
        return Cell("error", detail=f"RESULT line lacks {metric}")
    return Cell(
        "ok",
        value=statistics.median(o.fields[metric] for o in outcomes),
        peak_rss_kb=statistics.median(o.fields["peak_rss_kb"] for o in outcomes),
        wall_ms=statistics.median(o.fields["wall_ms"] for o in outcomes),
    )


def describe(o: Outcome, metric: str, unit: str) -> str:
    """One run, for the progress log."""
    if o.status != "ok":
        return o.status + (f" ({o.detail})" if o.detail else "")
    value = o.fields.get(metric)
    return f"{value:.1f} {unit}" if isinstance(value, float) else f"ok, but no {metric}"


def measure_program(programs: dict, workload: Workload, runs: int, n: Optional[int]) -> dict:
    """Runs each available program `runs` times, interleaved so that machine
    noise spreads evenly over the implementations. Returns impl -> Cell."""
    outcomes = {impl: [] for impl in workload.impls if programs.get(impl)}
    for k in range(runs):
        for impl in outcomes:
            if outcomes[impl] and outcomes[impl][-1].status in ("infeasible", "error"):
                continue  # no point repeating a crash or a refusal
            o = run_once(programs[impl], workload.name, n)
            outcomes[impl].append(o)
            log(f"  {workload.name:<17} {impl:<8} run {k + 1}/{runs}: {describe(o, workload.metric, workload.unit)}")
    cells = {impl: Cell("n/a") for impl in workload.impls}
    for impl, outs in outcomes.items():
        cells[impl] = summarize(outs, workload.metric)
    return cells


def measure_scaling(mpg: Optional[Path], runs: int, n: Optional[int]) -> tuple:
    """fib32 on mpg with 1 and 2 Ps. Returns (cell_1p, cell_2p)."""
    if mpg is None:
        return Cell("n/a"), Cell("n/a")
    cells = []
    for procs in (1, 2):
        env = dict(os.environ, MPG_PROCS=str(procs))
        outs = []
        for k in range(runs):
            o = run_once(mpg, "fib32", n, env)
            outs.append(o)
            log(f"  {'fib32':<17} mpg {procs}P   run {k + 1}/{runs}: {describe(o, 'wall_ms', 'ms')}")
            if o.status in ("infeasible", "error"):
                break
        cells.append(summarize(outs, "wall_ms"))
    return cells[0], cells[1]


# --------------------------------------------------------------------------
# Finding and building the programs
# --------------------------------------------------------------------------


def go_env(build_dir: Path) -> dict:
    """The environment for `go build`: the toolchain that is installed (no
    GOTOOLCHAIN switching), and a cache under the build dir when $HOME is not
    usable (CI containers, meson test environments)."""
    env = dict(os.environ)
    env.pop("GOTOOLCHAIN", None)
    home = env.get("HOME", "")
    if not home or not os.path.isdir(home) or not os.access(home, os.W_OK):
        env.setdefault("GOCACHE", str(build_dir / "perf" / "go-cache"))
        env.setdefault("GOPATH", str(build_dir / "perf" / "go-path"))
    return env


def build_go(build_dir: Path) -> tuple:
    """Builds perf/go into BUILD/perf/go_bench. Returns (path or None, note)."""
    go = shutil.which("go")
    if go is None:
        return None, "go is not on PATH"
    out = build_dir / "perf" / "go_bench"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            [go, "build", "-o", str(out), "."],
            cwd=GO_SRC_DIR, env=go_env(build_dir), capture_output=True, text=True,
            timeout=GO_BUILD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"go build failed: {e}"
    if proc.returncode != 0:
        return None, "go build failed: " + proc.stderr.strip().replace("\n", " | ")
    return out, ""


def go_version() -> str:
    try:
        return subprocess.run(["go", "version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def find_program(path: Path) -> Optional[Path]:
    return path if path.is_file() and os.access(path, os.X_OK) else None


# --------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------


def fmt_value(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_cell(cell: Cell) -> str:
    return fmt_value(cell.value) if cell.status == "ok" else cell.status


def fmt_rss(cell: Cell) -> str:
    if cell.status != "ok" or cell.peak_rss_kb is None:
        return "—"
    return f"{cell.peak_rss_kb / 1024:.1f} MiB"


def fmt_ratio(peer: Cell, mpg: Cell, higher_is_better: bool) -> str:
    """How many times better mpg is than the peer."""
    if peer.status != "ok" or mpg.status != "ok" or not peer.value or not mpg.value:
        return "—"
    r = mpg.value / peer.value if higher_is_better else peer.value / mpg.value
    return f"{r:.2f}x" if r < 10 else f"{r:,.0f}x"


def fmt_target(w: Workload) -> str:
    if w.go_ratio_target is not None:
        return f">= {w.go_ratio_target:g}x Go"
    if w.target is None:
        return "—"
    shown = f"{w.target:g}" if w.target < 1e6 else fmt_value(w.target)
    return f"{'>=' if w.higher_is_better else '<='} {shown} {w.unit}"


def target_met(w: Workload, mpg: Cell, go: Optional[Cell] = None) -> str:
    if w.go_ratio_target is not None:
        if go is None or go.status != "ok" or mpg.status != "ok" or not mpg.value:
            return "—"
        return "yes" if go.value / mpg.value >= w.go_ratio_target else "no"
    if w.target is None or mpg.status != "ok":
        return "—"
    ok = mpg.value >= w.target if w.higher_is_better else mpg.value <= w.target
    return "yes" if ok else "no"


HEADER = ["workload", "mpg", "threads", "Go", "mpg peak RSS", "Go peak RSS",
          "Go/mpg", "threads/mpg", "mpg target", "met"]
RIGHT_ALIGNED = {1, 2, 3, 4, 5, 6, 7}


def workload_row(w: Workload, cells: dict) -> list:
    na = Cell("n/a")
    mpg, threads, go = (cells.get(i, na) for i in IMPLS)
    label = w.name if w.unit == "ns/op" else f"{w.name} ({w.unit})"
    return [label, fmt_cell(mpg), fmt_cell(threads), fmt_cell(go), fmt_rss(mpg), fmt_rss(go),
            fmt_ratio(go, mpg, w.higher_is_better), fmt_ratio(threads, mpg, w.higher_is_better),
            fmt_target(w), target_met(w, mpg, go)]


def scaling_row(p1: Cell, p2: Cell) -> list:
    if p1.status == "ok" and p2.status == "ok" and p2.value:
        ratio = p1.value / p2.value
        shown, met = f"{ratio:.2f}x", ("yes" if ratio >= SCALING_TARGET else "no")
    else:
        bad = p1 if p1.status != "ok" else p2
        shown, met = bad.status, "—"
    return ["fib32 scaling (1P/2P wall)", shown, "—", "—", fmt_rss(p2), "—", "—", "—",
            f">= {SCALING_TARGET}x", met]


def render_table(rows: list, header: Optional[list] = None, right: Optional[set] = None) -> str:
    """A markdown table, padded so it also reads well in a terminal."""
    header = HEADER if header is None else header
    right = RIGHT_ALIGNED if right is None else right
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        padded = [c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                  for i, c in enumerate(cells)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in rows])


# --------------------------------------------------------------------------
# Instructions and the chart
# --------------------------------------------------------------------------


def instruction_table(mpg: Optional[Path], selected: list) -> tuple:
    """(markdown table, note) of mpg's instructions per op on 1 P."""
    if mpg is None:
        return "", "instructions: mpg_bench not found"
    if shutil.which("valgrind") is None:
        return "", "instructions: valgrind not installed (scripts/setup.sh installs it)"
    # "no runtime": the same coroutines with no runtime under them
    # (CALLGRIND_FLOORS), the least the compiler's code costs.
    header = ["workload", "mpg instr/op", "no runtime", "libfork", "target", "met"]
    rows = []
    for name in CALLGRIND_N:
        if name not in selected:
            continue
        log(f"callgrind: {name}")
        try:
            v = instructions(mpg, name)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            rows.append([name, "error", "", "", "", ""])
            log(f"callgrind {name}: {e}")
            continue
        floor = ""
        if name in CALLGRIND_FLOORS:
            try:
                floor = f"{instructions(mpg, CALLGRIND_FLOORS[name]):.0f}"
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                floor = "error"
                log(f"callgrind {CALLGRIND_FLOORS[name]}: {e}")
        anchor = INSTRUCTION_ANCHORS.get(name)
        target = INSTRUCTION_TARGETS.get(name)
        rows.append([name, f"{v:.0f}", floor, "" if anchor is None else str(anchor),
                     "" if target is None else f"<= {target}",
                     "" if target is None else ("yes" if v <= target else "no")])
    return render_table(rows, header, {1, 2, 3, 4}), ""


def draw_chart(rows: list, path: Path) -> str:
    """Draws mpg, threads and Go per workload on a log scale; returns a note."""
    plt = pyplot()
    if plt is None:
        return "chart: matplotlib not installed (python3-matplotlib), none drawn"
    # rows[i]: [workload, mpg, threads, Go, ...] as rendered cells.
    def num(cell: str) -> Optional[float]:
        try:
            return float(cell.replace(",", ""))
        except ValueError:
            return None
    data = [(r[0], [num(c) for c in r[1:4]]) for r in rows if not r[0].startswith("fib32 scaling")]
    data = [(n, v) for n, v in data if any(x is not None for x in v)]
    if not data:
        return "chart: nothing to draw"
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(data)), 4.0))
    width = 0.27
    for k, (impl, colour) in enumerate((("mpg", "#1f77b4"), ("threads", "#7f7f7f"), ("Go", "#2ca02c"))):
        xs = [i + (k - 1) * width for i, (_, v) in enumerate(data) if v[k] is not None]
        ys = [v[k] for _, v in data if v[k] is not None]
        if ys:
            ax.bar(xs, ys, width, label=impl, color=colour)
    ax.set_yscale("log")
    ax.set_title("mpg beside its peers (lower is better)")
    ax.set_xticks(range(len(data)))
    ax.set_xticklabels([n for n, _ in data], rotation=30, ha="right")
    ax.set_ylabel("ns per op, log scale (idle_tasks: bytes per task)")
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=90)
    except OSError as e:
        return f"chart: could not write {path}: {e}"
    finally:
        plt.close(fig)
    return f"chart: {path}"


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list) -> argparse.Namespace:
    names = [w.name for w in WORKLOADS] + [SCALING_NAME]
    p = argparse.ArgumentParser(
        description="Run mpg's benchmarks beside the std::thread and Go peers and print one table.")
    p.add_argument("--build", required=True, type=Path,
                   help="meson build dir holding perf/mpg_bench and perf/threads_bench")
    p.add_argument("--runs", type=int, default=3, help="runs per program and workload; the median is shown (default 3)")
    p.add_argument("--workloads", default=",".join(names),
                   help="comma-separated subset of: " + ", ".join(names))
    p.add_argument("--no-go", action="store_true", help="skip the Go peer")
    p.add_argument("--timeout", type=float, default=RUN_TIMEOUT_S,
                   help=f"seconds before one run counts as an error (default {RUN_TIMEOUT_S})")
    p.add_argument("--n", action="append", default=[], metavar="WORKLOAD=N",
                   help="override the size N of one workload for every program (for quick checks)")
    p.add_argument("--instructions", action="store_true",
                   help="also count mpg's instructions per op with callgrind (1 P; needs valgrind)")
    p.add_argument("--chart", type=Path, default=None,
                   help="where to draw the chart (default BUILD/perf-results.png; needs matplotlib)")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    args.selected = [s.strip() for s in args.workloads.split(",") if s.strip()]
    unknown = [s for s in args.selected if s not in names]
    if unknown:
        p.error("unknown workload(s): " + ", ".join(unknown))
    args.sizes = {}
    for item in args.n:
        name, sep, value = item.partition("=")
        if not sep or not value.isdigit() or int(value) <= 0:
            p.error(f"--n wants WORKLOAD=N, got {item!r}")
        args.sizes[name] = int(value)
    return args


def main(argv: list) -> int:
    global RUN_TIMEOUT_S
    args = parse_args(argv)
    RUN_TIMEOUT_S = args.timeout
    build_dir = args.build.resolve()
    notes = []

    programs = {
        "mpg": find_program(build_dir / "perf" / "mpg_bench"),
        "threads": find_program(build_dir / "perf" / "threads_bench"),
        "go": None,
    }
    for impl in ("mpg", "threads"):
        if programs[impl] is None:
            notes.append(f"{impl}: {build_dir / 'perf' / (impl + '_bench')} not found (n/a)")
    if args.no_go:
        notes.append("Go: skipped (--no-go)")
    else:
        programs["go"], why = build_go(build_dir)
        if programs["go"] is None:
            notes.append(f"Go: {why} (n/a)")

    rows, problems = [], []
    for w in WORKLOADS:
        if w.name not in args.selected:
            continue
        runner = w.runner or measure_program
        cells = runner(programs, w, args.runs, args.sizes.get(w.name))
        rows.append(workload_row(w, cells))
        for impl, cell in cells.items():
            if cell.status in ("error", "FAIL"):
                problems.append(f"{w.name} / {impl}: {cell.status}: {cell.detail}")
    if SCALING_NAME in args.selected:
        p1, p2 = measure_scaling(programs["mpg"], args.runs, args.sizes.get(SCALING_NAME))
        rows.append(scaling_row(p1, p2))
        for procs, cell in ((1, p1), (2, p2)):
            if cell.status in ("error", "FAIL"):
                problems.append(f"fib32 / mpg {procs}P: {cell.status}: {cell.detail}")
            elif cell.status == "ok":
                notes.append(f"fib32 on mpg with MPG_PROCS={procs}: {cell.value:.1f} ms (median wall)")

    table = render_table(rows)
    itable = ""
    if args.instructions:
        itable, why = instruction_table(programs["mpg"], args.selected)
        if why:
            notes.append(why)
    chart_path = args.chart or (build_dir / "perf-results.png")
    why = draw_chart(rows, chart_path)
    notes.append(why)
    machine = (f"{platform.node()}: {os.cpu_count()} CPUs, Linux {platform.release()}"
               + (f", {go_version()}" if programs["go"] else ""))
    legend = (f"Median of {args.runs} run(s) per cell, each a separate process. Columns mpg/threads/Go "
              "are ns per op (bytes per task for idle_tasks); ratios are how many times better mpg is. "
              "threads run smaller N than mpg and Go (see perf/threads/threads_bench.cpp).")
    print(table)
    print()
    if itable:
        print(itable)
        print()
    print(machine)
    for note in notes + problems:
        print("  " + note)

    report = ["# mpg benchmark results", "", legend, "", machine, "", table, ""]
    if itable:
        report += ["Instructions per op, callgrind, 1 P (marginal count between two sizes):", "", itable, ""]
    if notes or problems:
        report += ["Notes:", ""] + [f"- {n}" for n in notes + problems] + [""]
    out = build_dir / "perf-results.md"
    try:
        out.write_text("\n".join(report))
        log(f"wrote {out}")
    except OSError as e:
        log(f"could not write {out}: {e}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
