#!/usr/bin/env python3
"""perf/servers/server_instructions.py: the user-space instructions a server
spends per message, counted by valgrind's callgrind on 1 P.

run_servers.py measures rate and CPU against the io_uring floor, figures that
move 10-60% with the machine. The part of a server's CPU that the runtime
controls is its user-space work, and callgrind counts it exactly: the same
build and load give the same count on any machine, however busy. Each server
runs under callgrind with --procs 1 (MPG_PROCS=1 for mpg); a warm-up load
brings its caches and pools to size, the counters are zeroed
(`callgrind_control -z`), a measured load runs, the counters are dumped
(`callgrind_control -d`) and divided by the messages (or requests) the load
completed. The kernel's share is not counted: read it from run_servers.py.

  tcp_echo    echo_load --conns 16 --size 64 against the echo servers
  http_hello  wrk -t1 -c16 against the HTTP servers

Rows: mpg (BUILD's servers), base (--base BUILD2's, for before/after), floor
(uring_floor_echo: no runtime, the reference).

Usage:
  python3 perf/servers/server_instructions.py --build BUILD [--base BUILD2]
      [--only echo,http] [--seconds 6]

Standard library only; needs valgrind (scripts/setup.sh installs it) and,
for http_hello, wrk. Under callgrind a server runs about 50x slower, so the
loads are light and the counts are of a server that is rarely idle.
Exit status 1 if a server or a load failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_servers import free_port, wait_listening  # noqa: E402

START_TIMEOUT_S = 60  # valgrind's start-up, and the runtime's under it


def echo_load(build: Path, port: int, seconds: int) -> int:
    """Messages echoed by one echo_load run."""
    r = subprocess.run([str(build / "perf" / "servers" / "echo_load"), "--addr",
                        f"127.0.0.1:{port}", "--conns", "16", "--size", "64", "--seconds",
                        str(seconds), "--procs", "1", "--impl", "x"],
                       capture_output=True, text=True, timeout=seconds + 120)
    m = re.search(r"\bmsgs=(\d+)", r.stdout)
    if r.returncode != 0 or m is None:
        raise RuntimeError(f"echo_load: exit {r.returncode}: {r.stdout}{r.stderr}")
    return int(m.group(1))


def http_load(build: Path, port: int, seconds: int) -> int:
    """Requests answered in one wrk run."""
    r = subprocess.run(["wrk", "-t1", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
                       capture_output=True, text=True, timeout=seconds + 120)
    m = re.search(r"(\d+) requests in", r.stdout)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", r.stdout)
    if r.returncode != 0 or m is None or bad is not None:
        raise RuntimeError(f"wrk: exit {r.returncode}: {r.stdout}{r.stderr}")
    return int(m.group(1))


def dumped_instructions(out_dir: Path, pid: int) -> int:
    """The instructions in the dump that callgrind_control -d just wrote."""
    dumps = sorted(out_dir.glob(f"cg.{pid}.*"), key=lambda p: int(p.suffix[1:]))
    if not dumps:
        raise RuntimeError("callgrind wrote no dump")
    for line in dumps[-1].read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no summary line in {dumps[-1]}")


def control(pid: int, flag: str, port: int) -> None:
    """callgrind_control FLAG (-z, -d) on the server. A server idle between
    two loads sleeps in the kernel, and a command could then go unanswered
    (one -z waited past 60 s). So each 2 s that the command is pending, a
    connection opened and closed wakes the server (a few thousand
    instructions, against the millions a load counts)."""
    ctl = subprocess.Popen(["callgrind_control", flag, str(pid)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    for _ in range(30):
        try:
            if ctl.wait(timeout=2) != 0:
                raise RuntimeError(f"callgrind_control {flag}: {ctl.stderr.read().decode()}")
            return
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 5):
                pass
    ctl.kill()
    ctl.wait()
    raise RuntimeError(f"callgrind_control {flag}: no answer in 60 s")


def count(argv: list[str], load, build: Path, seconds: int) -> float:
    """Instructions per message of the server argv under the load."""
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        out_dir = Path(d)
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/cg.%p"]
        cmd += argv + ["--port", str(port), "--procs", "1"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=dict(os.environ, MPG_PROCS="1"))
        try:
            wait_listening(proc, port, START_TIMEOUT_S, Path(argv[0]).name)
            load(build, port, 2)  # warm-up: caches and pools reach their size
            control(proc.pid, "-z", port)
            msgs = load(build, port, seconds)
            control(proc.pid, "-d", port)
            instructions = dumped_instructions(out_dir, proc.pid)
        finally:
            proc.kill()  # a server under valgrind may ignore SIGTERM
            proc.wait()
    return instructions / msgs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", type=Path, required=True)
    ap.add_argument("--base", type=Path, help="another build, as the row 'base'")
    ap.add_argument("--only", default="echo,http")
    ap.add_argument("--seconds", type=int, default=6)
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        print("error: valgrind is not on PATH (scripts/setup.sh installs it)", file=sys.stderr)
        return 1
    only = set(args.only.split(","))
    build = args.build.resolve()
    rows = [("mpg", build)] + ([("base", args.base.resolve())] if args.base else [])
    floor = str(build / "perf" / "servers" / "uring_floor_echo")
    work = []
    if "echo" in only:
        work.append(("tcp_echo", echo_load, "echo_server", [floor]))
    if "http" in only:
        if shutil.which("wrk") is None:
            print("note: wrk is not on PATH: http_hello skipped", file=sys.stderr)
        else:
            work.append(("http_hello", http_load, "http_server", [floor, "--http"]))
    failed = False
    for name, load, binary, floor_argv in work:
        impls = [(row, [str(d / "perf" / "servers" / binary)]) for row, d in rows]
        impls.append(("floor", floor_argv))
        got: dict[str, float] = {}
        for row, argv in impls:
            try:
                got[row] = count(argv, load, build, args.seconds)
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                print(f"error: {name} {row}: {e}", file=sys.stderr)
                failed = True
                continue
            print(f"RESULT workload={name} impl={row} instructions_per_msg={got[row]:.1f}",
                  flush=True)
        print(f"\n{name}: user-space instructions per message (callgrind, 1 P)")
        for row, n in got.items():
            vs = f"{n / got['floor']:.2f}x the floor" if "floor" in got and row != "floor" else ""
            print(f"  {row:6} {n:9.1f}  {vs}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
