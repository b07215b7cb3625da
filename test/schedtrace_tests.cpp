// MPG_DEBUG (parsed like Go's GODEBUG) and schedtrace=N: one "SCHED" line
// per runtime on stderr every N ms.
#include <doctest/doctest.h>
#include <stdlib.h>

#include <chrono>
#include <regex>
#include <sstream>
#include <string>

#include "mpg/mpg.hpp"
#include "sched/debug_env.hpp"
#include "stderr_capture.hpp"

namespace {

mpg::task<int> add_one(int x) {
  co_await mpg::yield();
  co_return x + 1;
}

mpg::task<int> fan_out(int n) {
  std::vector<mpg::join_handle<int>> hs;
  for (int i = 0; i < n; ++i) hs.push_back(mpg::spawn(add_one(i)));
  int sum = 0;
  for (auto& h : hs) sum += co_await h;
  co_return sum;
}

}  // namespace

TEST_CASE("MPG_DEBUG: comma-separated key=value, unknown keys ignored, bad values reported") {
  using mpg::detail::parse_mpg_debug;
  std::string err;
  CHECK(parse_mpg_debug("schedtrace=250", &err).schedtrace_ms == 250);
  CHECK(parse_mpg_debug("gctrace=1,schedtrace=10,future=x", &err).schedtrace_ms == 10);
  CHECK(parse_mpg_debug("schedtrace=10,schedtrace=20", &err).schedtrace_ms == 20);  // last wins
  CHECK(parse_mpg_debug("", &err).schedtrace_ms == 0);
  CHECK(parse_mpg_debug(",,noequals,schedtrace=0", &err).schedtrace_ms == 0);
  CHECK(err.empty());
  CHECK(parse_mpg_debug("schedtrace=10ms", &err).schedtrace_ms == 0);
  CHECK(err.find("ignoring schedtrace=10ms") != std::string::npos);
  err.clear();
  CHECK(parse_mpg_debug("schedtrace=-1,schedtrace=", &err).schedtrace_ms == 0);
  CHECK(err.find("schedtrace=-1") != std::string::npos);
  CHECK(std::count(err.begin(), err.end(), '\n') == 2);
  err.clear();
  CHECK(parse_mpg_debug("schedtrace=99999999999", &err).schedtrace_ms == 0);  // out of range
  CHECK(!err.empty());
}

// Bounds that cannot flake: the k-th line is due k periods after the
// runtime's construction and is printed no earlier (schedtrace.cpp, "Beat"),
// so a runtime that lived T ms printed at most T / period lines however the
// machine schedules the thread. For the lower bound the test does not
// guess a duration: it keeps the runtime alive until 5 lines have arrived
// (bounded by stderr_capture's 20 s limit, which only a broken beat hits).
TEST_CASE("schedtrace: about one SCHED line per period, in Go's shape") {
  ::setenv("MPG_DEBUG", "future=1,schedtrace=10", 1);
  mpg_test::stderr_capture cap;
  cap.echo_on_exit(true);
  const auto t0 = std::chrono::steady_clock::now();
  {
    mpg::runtime rt({.procs = 2});
    CHECK(rt.block_on(fan_out(100)) == 5050);
    REQUIRE(cap.wait_for("SCHED ", 5));
  }
  const auto lived_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  ::unsetenv("MPG_DEBUG");
  REQUIRE(cap.sync());  // every line written so far is captured
  const std::size_t lines = cap.count("SCHED ");
  CHECK(lines >= 5);
  CHECK(static_cast<long long>(lines) <= lived_ms / 10);
  std::istringstream in(cap.text());
  const std::regex shape(
      "SCHED [0-9]+ms: gomaxprocs=2 idleprocs=[0-2] threads=[0-9]+ spinningthreads=[0-9]+ "
      "idlethreads=[0-9]+ runqueue=[0-9]+ \\[[0-9]+ [0-9]+\\]");
  std::size_t matched = 0;
  for (std::string line; std::getline(in, line);)
    if (line.rfind("SCHED ", 0) == 0) {
      CHECK_MESSAGE(std::regex_match(line, shape), line);
      ++matched;
    }
  CHECK(matched == lines);
  // No line after ~runtime returned: the count is final.
  REQUIRE(cap.sync());
  CHECK(cap.count("SCHED ") == lines);
  cap.echo_on_exit(false);
}

TEST_CASE("schedtrace: a bad MPG_DEBUG value is reported once and changes nothing") {
  ::setenv("MPG_DEBUG", "schedtrace=often", 1);
  mpg_test::stderr_capture cap;
  {
    mpg::runtime rt({.procs = 1});
    CHECK(rt.block_on(fan_out(10)) == 55);
  }
  ::unsetenv("MPG_DEBUG");
  REQUIRE(cap.sync());
  CHECK(cap.count("mpg: MPG_DEBUG: ignoring schedtrace=often") == 1);
  CHECK(cap.count("SCHED") == 0);
}
