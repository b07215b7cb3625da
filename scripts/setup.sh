#!/usr/bin/env bash
# scripts/setup.sh: install what building, testing and benchmarking mpg needs
# on Debian 12 (bookworm). Idempotent: packages already installed are left
# alone, and apt is not touched at all when nothing is missing. Installing
# needs root; when everything is present any user may run it.
set -euo pipefail

packages=(
  g++                 # the default compiler (g++ 12)
  clang-16            # clang++-16: the sanitizer builds in .ci/run
  libclang-rt-16-dev  # clang's ASan/UBSan/TSan runtimes
  llvm-16             # llvm-ar-16: archives of LTO objects for MPG_BENCH_CXX=clang
  meson
  ninja-build
  pkg-config
  liburing-dev        # io_uring
  libabsl-dev         # absl::Status and friends
  doctest-dev         # the test framework
  libasio-dev         # standalone Asio: mpg/asio.hpp and its test (optional)
  python3             # perf/run.py
  python3-matplotlib  # perf/run.py's chart, perf/trace_plot.py (trace timelines)
  valgrind            # perf/run.py --instructions, perf/ab.py --callgrind, server_instructions.py
  golang-go           # the Go peer in perf/go (Go 1.19)
  wrk                 # the HTTP load generator for http_hello
  redis-server        # the peer of examples/redis_server in run_servers.py
  redis-tools         # redis-benchmark, redis-cli
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
  echo "setup: installing packages needs root; run: sudo $0" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
