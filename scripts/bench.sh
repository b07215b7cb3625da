#!/usr/bin/env bash
# scripts/bench.sh: install the toolchain, build mpg in release mode in build/
# and print the benchmark table (mpg beside std::thread and Go). Extra
# arguments go to perf/run.py, e.g. `./scripts/bench.sh --runs 5 --no-go`.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

options=(-Dbuildtype=release -Db_ndebug=true -Dtests=false -Dperf=true)
if [[ -f build/meson-private/coredata.dat ]]; then
  meson setup --reconfigure build "${options[@]}"
else
  meson setup build "${options[@]}"
fi
ninja -C build

python3 perf/run.py --build build "$@"
