#!/usr/bin/env bash
# scripts/bench.sh: install the toolchain, build mpg in release mode in build/
# and print the benchmark table (mpg beside std::thread and Go), the servers'
# table and their instructions per message. Extra
# arguments go to perf/run.py, e.g. `./scripts/bench.sh --runs 5 --no-go`.
#
# MPG_BENCH_CXX=clang builds with clang++-16 instead of g++, in build-clang/
# (LTO archives need llvm-ar-16).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

build=build
case ${MPG_BENCH_CXX:-gcc} in
  gcc | g++) ;;
  clang | clang++)
    build=build-clang
    export CC=clang-16 CXX=clang++-16 AR=llvm-ar-16
    ;;
  *)
    echo "bench.sh: MPG_BENCH_CXX must be gcc or clang, not '$MPG_BENCH_CXX'" >&2
    exit 2
    ;;
esac

# The build the README recommends when speed matters: static, with link-time
# optimisation (perf/ab.py --callgrind measured 5-18% fewer instructions per
# op than the shared library on fib, pingpong, spawn_join, chan_mpmc and
# mutex_contention).
options=(-Dbuildtype=release -Db_ndebug=true -Dtests=false -Dexamples=true -Dperf=true
         -Ddefault_library=static -Db_lto=true)
if [[ -f $build/meson-private/coredata.dat ]]; then
  meson setup --reconfigure "$build" "${options[@]}"
else
  meson setup "$build" "${options[@]}"
fi
ninja -C "$build"

# 1. The task, channel and sync workloads (mpg vs threads vs Go).
python3 perf/run.py --build "$build" "$@"
# 2. The servers: tcp_echo (mpg, thread-per-connection, Go) with the mpg load
#    generator, http_hello (mpg vs Go net/http) with wrk, and idle connections.
python3 perf/servers/run_servers.py --build "$build" --runs 3
# 3. The servers' user-space instructions per message and per request, under
#    callgrind on 1 P, beside the io_uring floor's: the servers' share that
#    does not move with the machine's load.
python3 perf/servers/server_instructions.py --build "$build"
