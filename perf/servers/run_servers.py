#!/usr/bin/env python3
"""perf/servers/run_servers.py: the tcp_echo and http_hello workloads, mpg
against its peers, side by side in one run (see docs/benchmarks.md).

  tcp_echo    each echo server (mpg, threads, Go) on a loopback port, loaded by
              BUILD/perf/servers/echo_load (one mpg client for every server:
              --conns connections of --size-byte request/response ping-pong for
              --seconds). Reports messages/s, p50/p99 latency, and the server's
              CPU seconds per 100k messages (utime+stime from /proc/PID/stat
              before and after the load), with ratios against Go.
  http_hello  the mpg and Go net/http hello-world servers under
              `wrk -t1 -c64 -d<seconds>s`: requests/s, latency, CPU per 100k.
  idle        --idle connections (10,000) opened and held to the mpg (and Go)
              echo server: the server's RSS growth per connection.
  churn       --churn (100,000) cycles of connect, a 4-byte echo and close
              against the mpg echo server (and --base's, and the floor): the server's fd
              count and RSS growth over them, and over their second half alone (pools
              and caches grow to their size early on; a leak grows in both halves)
              (not in the default --only).
  redis       the example Redis-protocol server (BUILD/examples/redis_server)
              and redis-server (Debian's, no persistence), each loaded by the
              stock `redis-benchmark -c 50 -t get,set` at -P 1 and -P 16:
              requests/s per command, with mpg/redis-server ratios.

Both tables carry a "floor" row that is not a peer: uring_floor_echo, a bare
io_uring loop per thread with no runtime and every trick a dedicated server
has (multishot recv into buffer rings, DEFER_TASKRUN). Its figures are what
the kernel and the client leave for any server on this machine, so the
targets can be read against them. A "floor_coop" row runs the same floor with
--defer 0: COOP_TASKRUN rings, the mode of mpg's rings, which move between
threads with their Ps; mpg against it is the runtime's own share of the gap.
Rounds interleave the implementations.

Servers take --port and --procs. The Go peers (perf/go/servers/*) are built
here with `go build` when `go` is on PATH. Every server and client process is
ours and is stopped by its PID. Traffic stays on 127.0.0.1.

Usage:
  python3 perf/servers/run_servers.py --build BUILD [--seconds 5] [--procs 2]
      [--conns 64] [--size 64] [--idle 10000] [--runs 1] [--only echo,http,idle,churn,redis]
      [--impls mpg,base,threads,go,floor,floor_coop] [--base BUILD2,BUILD3] [--churn 100000]

Standard library only. Exit status 1 if a server failed to start, died
during its round, or a load run failed.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
# The reference rows, not peers: uring_floor_echo as it is (DEFER_TASKRUN),
# and with --defer 0 (COOP_TASKRUN, the ring mode of mpg, whose rings move
# between threads with their Ps).
FLOORS = ("floor", "floor_coop")
GO_DIR = HERE.parent / "go" / "servers"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_listening(proc: subprocess.Popen, port: int, timeout_s: float, what: str) -> None:
    """Returns once something accepts on 127.0.0.1:port. Raises RuntimeError
    if proc exits first (with its stderr, when that is a pipe) or timeout_s
    passes. Also used by server_instructions.py and http_server_check.py."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"{what} exited at start: {err.strip()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout_s:g} s")


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not exited 5 s later."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class server:
    """A server process on 127.0.0.1:port, stopped by PID."""

    def __init__(self, name: str, argv: list[str], port: int, env: Optional[dict] = None):
        self.name = name
        self.port = port
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=env, preexec_fn=raise_nofile)
        try:
            wait_listening(self.proc, port, 10, name)
        except RuntimeError:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> Optional[str]:
        """Stops the server. If it had already exited on its own (a crash,
        say), returns how it ended, with the end of its stderr; else None.
        A round whose server died is an error, never a slow round: its
        client's figures measure the dead server's port."""
        rc = self.proc.poll()
        if rc is None:
            stop_process(self.proc)
            return None
        how = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
        err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
        return how + (f": {err[-2000:]}" if err else "")


def died(name: str, how: Optional[str]) -> bool:
    """Reports a server that ended during its round; true if it did."""
    if how is None:
        return False
    print(f"error: the {name} server died during the run ({how})", file=sys.stderr, flush=True)
    return True


def build_go(build: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    go = shutil.which("go")
    if go is None:
        print("note: `go` is not on PATH: the Go peers are skipped", file=sys.stderr)
        return out
    env = dict(os.environ, GOFLAGS="-buildvcs=false", CGO_ENABLED="0")
    for name in ("echo_server", "http_server"):
        target = build / "perf" / "servers" / f"go_{name}"
        r = subprocess.run([go, "build", "-o", str(target), "."], cwd=GO_DIR / name, env=env,
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            print(f"note: go build {name} failed:\n{r.stderr}", file=sys.stderr)
            continue
        out[name] = target
    return out


def parse_kv(line: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)


def run_echo(name: str, argv: list[str], args, build: Path, env=None) -> Optional[dict]:
    port = free_port()
    srv = server(name, argv + ["--port", str(port), "--procs", str(args.procs)], port, env)
    try:
        load = [str(build / "perf" / "servers" / "echo_load"), "--addr", f"127.0.0.1:{port}",
                "--conns", str(args.conns), "--size", str(args.size), "--seconds",
                str(args.seconds), "--procs", str(args.procs), "--impl", name]
        c0 = cpu_seconds(srv.pid)
        r = subprocess.run(load, capture_output=True, text=True, timeout=args.seconds + 60)
        c1 = cpu_seconds(srv.pid)
    finally:
        how = srv.stop()
    if died(name, how):
        return None
    res = info = None
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            res = parse_kv(line)
            print(line, flush=True)
        elif line.startswith("INFO "):
            info = parse_kv(line)
    if r.returncode != 0 or res is None or info is None:
        print(f"error: echo_load against {name}: exit {r.returncode}\n{r.stderr}", file=sys.stderr)
        return None
    msgs = int(info["msgs"])
    return {"rate": float(res["msgs_per_s"]), "p50": float(res["p50_us"]),
            "p99": float(res["p99_us"]), "cpu100k": (c1 - c0) / msgs * 1e5 if msgs else 0.0}


def run_http(name: str, argv: list[str], args, env=None) -> Optional[dict]:
    wrk = shutil.which("wrk")
    if wrk is None:
        print("note: wrk is not on PATH: http_hello skipped", file=sys.stderr)
        return None
    port = free_port()
    srv = server(name, argv + ["--port", str(port), "--procs", str(args.procs)], port, env)
    try:
        c0 = cpu_seconds(srv.pid)
        r = subprocess.run([wrk, "-t1", "-c64", f"-d{args.seconds}s", "--latency",
                            f"http://127.0.0.1:{port}/"],
                           capture_output=True, text=True, timeout=args.seconds + 60)
        c1 = cpu_seconds(srv.pid)
    finally:
        how = srv.stop()
    if died(name, how):
        return None
    m = re.search(r"Requests/sec:\s+([\d.]+)", r.stdout)
    total = re.search(r"(\d+) requests in", r.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", r.stdout)
    if r.returncode != 0 or m is None or total is None:
        print(f"error: wrk against {name}: exit {r.returncode}\n{r.stdout}\n{r.stderr}",
              file=sys.stderr)
        return None
    def lat(p: str) -> float:
        mm = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", r.stdout, re.M)
        if not mm:
            return 0.0
        return float(mm.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[mm.group(2)]
    rate = float(m.group(1))
    reqs = int(total.group(1))
    print(f"RESULT workload=http_hello impl={name} reqs_per_s={rate:.0f} p50_us={lat('50'):.1f} "
          f"p99_us={lat('99'):.1f}" + (f" errors=\"{errors.group(0)}\"" if errors else ""),
          flush=True)
    return {"rate": rate, "p50": lat("50"), "p99": lat("99"),
            "cpu100k": (c1 - c0) / reqs * 1e5 if reqs else 0.0}


def run_idle(name: str, argv: list[str], args, env=None) -> Optional[dict]:
    raise_nofile()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = min(args.idle, soft - 100)
    port = free_port()
    srv = server(name, argv + ["--port", str(port), "--procs", str(args.procs)], port, env)
    socks: list[socket.socket] = []
    try:
        # Warm up (one connection that talks), then measure the growth.
        w = socket.create_connection(("127.0.0.1", port))
        w.sendall(b"x")
        w.recv(1)
        time.sleep(0.2)
        base_fds, base_rss = fd_count(srv.pid), rss_kib(srv.pid)
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        deadline = time.monotonic() + 30
        while fd_count(srv.pid) < base_fds + n and time.monotonic() < deadline:
            time.sleep(0.05)
        accepted = fd_count(srv.pid) - base_fds
        time.sleep(0.5)  # let the per-connection tasks reach their first read
        rss = rss_kib(srv.pid)
        w.close()
    finally:
        for s in socks:
            s.close()
        how = srv.stop()
    if died(name, how):
        return None
    per_conn = (rss - base_rss) * 1024 / max(accepted, 1)
    print(f"RESULT workload=idle_conns impl={name} conns={accepted} "
          f"bytes_per_conn={per_conn:.0f}", flush=True)
    return {"conns": accepted, "bytes": per_conn}


def run_churn(name: str, argv: list[str], args, env=None) -> Optional[dict]:
    """--churn cycles of connect, one echo, close against the server: its
    open fds and RSS after the cycles against a warm start (a leak of one fd
    or one frame per connection shows as growth)."""
    port = free_port()
    srv = server(name, argv + ["--port", str(port), "--procs", str(args.procs)], port, env)
    try:
        def cycle() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.sendall(b"ping")
                got = b""
                while len(got) < 4:
                    chunk = c.recv(4 - len(got))
                    if not chunk:
                        raise RuntimeError("churn: server closed early")
                    got += chunk
        for _ in range(1000):  # warm up: caches and pools reach their size
            cycle()
        time.sleep(0.3)
        base_fds, base_rss = fd_count(srv.pid), rss_kib(srv.pid)
        t0 = time.monotonic()
        half_rss = base_rss
        for i in range(args.churn):
            if i == args.churn // 2:
                half_rss = rss_kib(srv.pid)
            cycle()
        elapsed = time.monotonic() - t0
        deadline = time.monotonic() + 10
        while fd_count(srv.pid) > base_fds and time.monotonic() < deadline:
            time.sleep(0.05)  # the server's last closes
        fds, rss = fd_count(srv.pid), rss_kib(srv.pid)
    finally:
        how = srv.stop()
    if died(name, how):
        return None
    print(f"RESULT workload=churn impl={name} cycles={args.churn} per_s={args.churn / elapsed:.0f} "
          f"fd_growth={fds - base_fds} rss_growth_kib={rss - base_rss} "
          f"second_half_rss_growth_kib={rss - half_rss}", flush=True)
    return {"cycles": args.churn, "fds": fds - base_fds, "rss_kib": rss - base_rss,
            "rss_half_kib": rss - half_rss, "rate": args.churn / elapsed}


def run_redis(name: str, argv: list[str], args, pipeline: int, env=None) -> Optional[dict]:
    bench = shutil.which("redis-benchmark")
    port = free_port()
    srv = server(name, argv + ["--port", str(port)], port, env)
    try:
        n = (100000 if pipeline > 1 else 10000) * args.seconds
        r = subprocess.run([bench, "-p", str(port), "-c", "50", "-n", str(n), "-P", str(pipeline),
                            "-t", "get,set", "--csv"],
                           capture_output=True, text=True, timeout=args.seconds * 20 + 60)
    finally:
        how = srv.stop()
    if died(name, how):
        return None
    rates = {}
    for line in r.stdout.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if len(cells) >= 2 and cells[0] in ("GET", "SET"):
            try:
                rates[cells[0]] = float(cells[1])
            except ValueError:
                pass
    if r.returncode != 0 or len(rates) != 2:
        print(f"error: redis-benchmark against {name}: exit {r.returncode}\n{r.stdout}\n{r.stderr}",
              file=sys.stderr)
        return None
    print(f"RESULT workload=redis_P{pipeline} impl={name} get_per_s={rates['GET']:.0f} "
          f"set_per_s={rates['SET']:.0f}", flush=True)
    return {"GET": rates["GET"], "SET": rates["SET"]}


def ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", required=True, type=Path)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--churn", type=int, default=100000,
                    help="connect/echo/close cycles of the churn workload")
    ap.add_argument("--runs", type=int, default=1, help="runs per cell; the median is reported")
    ap.add_argument("--only", default="echo,http,idle,redis")
    ap.add_argument("--impls", default="",
                    help="comma-separated rows to run (default: all of mpg,base,threads,go,floor,floor_coop)")
    ap.add_argument("--base", default="",
                    help="other build directories (comma-separated) whose mpg servers run as "
                         "the rows 'base', 'base2'..., interleaved with this build's "
                         "(before/after comparisons)")
    args = ap.parse_args()
    build = args.build.resolve()
    sdir = build / "perf" / "servers"
    only = set(args.only.split(","))
    go = build_go(build)
    go_env = dict(os.environ, GOMAXPROCS=str(args.procs))
    failed = False

    wanted = set(args.impls.split(",")) if args.impls else None
    bases = [(f"base{i + 1 if i else ''}", Path(d).resolve() / "perf" / "servers")
             for i, d in enumerate(args.base.split(",")) if d]

    def medians(fn, impls, *a) -> dict[str, dict]:
        impls = [i for i in impls if wanted is None or i[0] in wanted]
        # Rounds interleave the implementations (mpg, peer, mpg, peer...), so
        # a noisy minute on the shared machine hits every row alike.
        runs: dict[str, list[dict]] = {name: [] for name, _, _ in impls}
        by_round: dict[str, dict[int, dict]] = {name: {} for name, _, _ in impls}
        nonlocal failed
        for i in range(args.runs):
            for name, argv, env in impls:
                r = fn(name, argv, args, *a, env)
                if r is None:
                    failed = True  # the run fails; the medians come from the other rounds
                    continue
                runs[name].append(r)
                by_round[name][i] = r
        out: dict[str, dict] = {}
        for name, rs in runs.items():
            if rs:
                out[name] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        # Against the floor, also the median of each round's own ratio: a
        # row and the floor run back to back, so a change of the machine's
        # state between rounds moves both sides of a round's ratio alike,
        # while it can pull the two medians above from different rounds.
        # The same against floor_coop, for the share of the gap that is not
        # the ring mode.
        for ref in FLOORS:
            fl = by_round.get(ref, {})
            for name, rounds in by_round.items():
                pairs = [(r, fl[i]) for i, r in rounds.items()
                         if name not in FLOORS and i in fl and "cpu100k" in r and r["rate"]
                         and fl[i]["rate"] and fl[i]["cpu100k"]]
                if pairs:
                    rates = [r["rate"] / f["rate"] for r, f in pairs]
                    cpus = [r["cpu100k"] / f["cpu100k"] for r, f in pairs]
                    out[name].setdefault("paired", {})[ref] = (rates, cpus)
        return out

    # The median of the rounds' ratios, and their range: how far one round
    # strays is how far a single figure may be trusted.
    def print_paired(table: dict) -> None:
        def spread(xs: list[float]) -> str:
            return f"{statistics.median(xs):.2f}x ({min(xs):.2f}-{max(xs):.2f})"
        for name, r in table.items():
            for ref, (rates, cpus) in r.get("paired", {}).items():
                print(f"{name} against {'the floor' if ref == 'floor' else ref}, round by round "
                      f"(median of {len(rates)}, range in brackets): "
                      f"rate {spread(rates)}, CPU {spread(cpus)}")

    # "floor" is not a peer: uring_floor_echo, a bare io_uring loop per
    # thread with no runtime (multishot recv, buffer rings, DEFER_TASKRUN).
    # It shows what the kernel leaves for any server on this machine.
    floor = sdir / "uring_floor_echo"
    echo: dict[str, dict] = {}
    if "echo" in only:
        impls = [("mpg", [str(sdir / "echo_server")], None)]
        for bname, bdir in bases:
            impls.append((bname, [str(bdir / "echo_server")], None))
        impls.append(("threads", [str(sdir / "threads_echo_server")], None))
        if "echo_server" in go:
            impls.append(("go", [str(go["echo_server"])], go_env))
        if floor.exists():
            impls.append(("floor", [str(floor)], None))
            impls.append(("floor_coop", [str(floor), "--defer", "0"], None))
        echo = medians(run_echo, impls, build)
        failed |= len(echo) != len([i for i in impls if wanted is None or i[0] in wanted])
    http: dict[str, dict] = {}
    if "http" in only and shutil.which("wrk"):
        impls = [("mpg", [str(sdir / "http_server")], None)]
        for bname, bdir in bases:
            impls.append((bname, [str(bdir / "http_server")], None))
        if "http_server" in go:
            impls.append(("go", [str(go["http_server"])], go_env))
        if floor.exists():
            impls.append(("floor", [str(floor), "--http"], None))
            impls.append(("floor_coop", [str(floor), "--http", "--defer", "0"], None))
        http = medians(run_http, impls)
        failed |= len(http) != len([i for i in impls if wanted is None or i[0] in wanted])
    idle: dict[str, dict] = {}
    if "idle" in only:
        impls = [("mpg", [str(sdir / "echo_server")], None)]
        for bname, bdir in bases:
            impls.append((bname, [str(bdir / "echo_server")], None))
        if "echo_server" in go:
            impls.append(("go", [str(go["echo_server"])], go_env))
        for name, argv, env in impls:
            if wanted is not None and name not in wanted:
                continue
            r = run_idle(name, argv, args, env)
            failed |= r is None
            if r:
                idle[name] = r

    churn: dict[str, dict] = {}
    if "churn" in only:
        rows = [("mpg", [str(sdir / "echo_server")])]
        rows += [(bname, [str(bdir / "echo_server")]) for bname, bdir in bases]
        rows.append(("floor", [str(floor)]))
        for name, argv in rows:
            if (wanted is not None and name not in wanted) or not Path(argv[0]).exists():
                continue
            r = run_churn(name, argv, args)
            failed |= r is None
            if r:
                churn[name] = r

    redis: dict[int, dict[str, dict]] = {}
    example = build / "examples" / "redis_server"
    if "redis" in only:
        if shutil.which("redis-benchmark") is None or shutil.which("redis-server") is None:
            print("note: redis-benchmark or redis-server not on PATH: redis skipped", file=sys.stderr)
        elif not example.exists():
            print(f"note: {example} not built (-Dexamples=true): redis skipped", file=sys.stderr)
        else:
            impls = [("mpg", [str(example), "--procs", str(args.procs)], None)]
            for bname, bdir in bases:
                impls.append((bname, [str(bdir.parent.parent / "examples" / "redis_server"),
                                      "--procs", str(args.procs)], None))
            impls.append(("redis", [shutil.which("redis-server"), "--save", "", "--appendonly", "no",
                                    "--protected-mode", "no"], None))
            for pipeline in (1, 16):
                redis[pipeline] = medians(run_redis, impls, pipeline)
                failed |= len(redis[pipeline]) != len(
                    [i for i in impls if wanted is None or i[0] in wanted])

    print()
    print(f"procs={args.procs} seconds={args.seconds} runs={args.runs} (median); "
          f"client and server share the machine's {os.cpu_count()} CPUs")
    if echo:
        print(f"\ntcp_echo: {args.conns} conns x {args.size} B ping-pong, client echo_load (mpg)")
        print(f"{'impl':10} {'msgs/s':>10} {'p50 us':>8} {'p99 us':>9} {'CPU s/100k':>11} "
              f"{'rate vs go':>11} {'CPU vs go':>10} {'rate/floor':>11} {'CPU/floor':>10}")
        g = echo.get("go")
        fl = echo.get("floor")
        for name, r in echo.items():
            print(f"{name:10} {r['rate']:10.0f} {r['p50']:8.1f} {r['p99']:9.1f} {r['cpu100k']:11.3f} "
                  f"{ratio(r['rate'], g and g['rate']):>11} "
                  f"{ratio(r['cpu100k'], g and g['cpu100k']):>10} "
                  f"{ratio(r['rate'], fl and fl['rate']):>11} "
                  f"{ratio(r['cpu100k'], fl and fl['cpu100k']):>10}")
        print("targets: mpg >= 1.5x Go's msgs/s, <= 0.5x Go's CPU per message "
              "(floor: no runtime, the kernel's share)")
        print_paired(echo)
    if http:
        print("\nhttp_hello: wrk -t1 -c64, keep-alive")
        print(f"{'impl':10} {'req/s':>10} {'p50 us':>8} {'p99 us':>9} {'CPU s/100k':>11} "
              f"{'rate vs go':>11} {'CPU vs go':>10} {'rate/floor':>11} {'CPU/floor':>10}")
        g = http.get("go")
        fl = http.get("floor")
        for name, r in http.items():
            print(f"{name:10} {r['rate']:10.0f} {r['p50']:8.1f} {r['p99']:9.1f} {r['cpu100k']:11.3f} "
                  f"{ratio(r['rate'], g and g['rate']):>11} "
                  f"{ratio(r['cpu100k'], g and g['cpu100k']):>10} "
                  f"{ratio(r['rate'], fl and fl['rate']):>11} "
                  f"{ratio(r['cpu100k'], fl and fl['cpu100k']):>10}")
        print("target: mpg >= 2x Go net/http req/s (floor: no runtime, the kernel's share)")
        print_paired(http)
    if idle:
        print(f"\nidle connections held to the echo server")
        for name, r in idle.items():
            print(f"{name:8} {r['conns']:6d} conns  {r['bytes']:8.0f} bytes/conn of server RSS")
        print("target: mpg < 4096 bytes per connection")
    if churn:
        print(f"\nchurn: connect, echo 4 B, close (RST), {args.churn} cycles after 1000 warm-up ones")
        for name, r in churn.items():
            print(f"{name:8} {r['rate']:8.0f} cycles/s  fd growth {r['fds']:+d}  "
                  f"RSS growth {r['rss_kib']:+d} KiB "
                  f"({r['rss_half_kib']:+d} KiB in the second half)")
        print("target: no fd or memory growth")
    if redis:
        print("\nredis: redis-benchmark -c 50 -t get,set; the example server (mpg) and redis-server 7")
        print(f"{'pipeline':8} {'impl':6} {'GET/s':>10} {'SET/s':>10} {'GET vs redis':>13} {'SET vs redis':>13}")
        for pipeline, rows in redis.items():
            ref = rows.get("redis")
            for name, r in rows.items():
                print(f"{'-P' + str(pipeline):8} {name:6} {r['GET']:10.0f} {r['SET']:10.0f} "
                      f"{ratio(r['GET'], ref and ref['GET']):>13} {ratio(r['SET'], ref and ref['SET']):>13}")
        print("goal: mpg >= 1.5x redis-server at -P 16")
    if failed:
        print("\nerror: some runs failed (see the errors above); the medians leave them out",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
