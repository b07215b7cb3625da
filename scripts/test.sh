#!/usr/bin/env bash
# scripts/test.sh: install the toolchain, build mpg in release mode with
# assertions on (-Db_ndebug=false) in build-test/ and run the test suite.
# Extra arguments go to `meson test`, e.g. `./scripts/test.sh chan_tests`.
# The compiler is meson's choice, or $CXX when set (on first configure).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

options=(-Dbuildtype=release -Db_ndebug=false)
if [[ -f build-test/meson-private/coredata.dat ]]; then
  meson setup --reconfigure build-test "${options[@]}"
else
  meson setup build-test "${options[@]}"
fi
ninja -C build-test

meson test -C build-test --print-errorlogs "$@"
