"""perf/callgrind.py: instructions per operation, counted by valgrind's callgrind.

A workload runs under callgrind at MPG_PROCS=1 twice, at a small size N and a
larger one N2, and the figure is (I(N2) - I(N)) / (ops(N2) - ops(N)): the
start-up (dynamic linking, runtime construction, thread creation) cancels
out, and the count does not depend on the machine's noise. Used by
perf/run.py --instructions and perf/ab.py --callgrind.

Standard library only.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

# Sizes (about 50x slower than native under callgrind).
CALLGRIND_N = {"spawn_join": 20000, "skynet": 10000, "fib": 20, "yield_ping": 20000,
               "pingpong": 20000, "chan_mpmc": 20000, "mutex_contention": 20000}
# The larger size (default 2N): skynet's sizes are powers of ten; fib's N is
# its argument, and two more levels give about 2.6x the tasks.
CALLGRIND_N2 = {"skynet": 100000, "fib": 22}
# Reference programs counted the same way, which are not workloads of their
# own: the coroutines alone, without the runtime, of the workload named
# (perf/coroutine_floor.hpp).
CALLGRIND_FLOORS = {"fib": "fib_floor"}
CALLGRIND_N["fib_floor"] = CALLGRIND_N["fib"]
CALLGRIND_N2["fib_floor"] = CALLGRIND_N2["fib"]
TIMEOUT_S = 1200


def collected(binary: Path, workload: str, n: int) -> tuple[int, float]:
    """(instructions, ops) of one run under callgrind."""
    env = dict(os.environ, MPG_PROCS="1")
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
           str(binary), workload, str(n)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    m = re.search(r"Collected\s*:\s*(\d+)", out.stderr)
    ops = re.search(r"\bops=(\d+)", out.stdout)
    if m is None or ops is None or out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: no instruction count: {out.stderr[-500:]}")
    return int(m.group(1)), float(ops.group(1))


def instructions(binary: Path, workload: str) -> float:
    """Instructions per op of `workload` (a key of CALLGRIND_N) on 1 P."""
    n = CALLGRIND_N[workload]
    i1, ops1 = collected(binary, workload, n)
    i2, ops2 = collected(binary, workload, CALLGRIND_N2.get(workload, 2 * n))
    return (i2 - i1) / (ops2 - ops1)
