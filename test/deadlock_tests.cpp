// Deadlock detection: block_on throws mpg::deadlock_error, naming the
// blocked tasks, when every task waits on something only another task could
// provide (Go's "all goroutines are asleep - deadlock!"). Timers, I/O and
// blocking calls in flight are possible wake-ups, not deadlocks.
#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "mpg/mpg.hpp"

using namespace std::chrono_literals;

namespace {

mpg::task<int> wait_forever(mpg::chan<int> c) {
  auto v = co_await c.recv();
  co_return v ? *v : -1;
}

mpg::task<int> two_tasks_waiting_on_each_other() {
  mpg::chan<int> a, b;
  auto h = mpg::spawn(wait_forever(a), "waits-on-a");
  auto v = co_await b.recv();  // nobody sends on b
  co_return (v ? *v : 0) + co_await h;
}

mpg::task<int> sleeps_then_returns() {
  co_await mpg::sleep_for(100ms);
  co_return 5;
}

mpg::task<int> blocking_call_then_returns() {
  co_return co_await mpg::blocking([] {
    usleep(250 * 1000);  // a slow library call, not synchronisation
    return 9;
  });
}

}  // namespace

TEST_CASE("block_on reports a deadlock naming the blocked tasks") {
  mpg::runtime rt({.procs = 2});
  std::string what;
  try {
    rt.block_on(two_tasks_waiting_on_each_other());
  } catch (const mpg::deadlock_error& e) {
    what = e.what();
  }
  CHECK(what.find("deadlock") != std::string::npos);
  CHECK(what.find("waits-on-a") != std::string::npos);
  CHECK(what.find("chan receive") != std::string::npos);
}

TEST_CASE("a deadlock_error is a std::logic_error") {
  mpg::runtime rt({.procs = 1});
  CHECK_THROWS_AS(rt.block_on(wait_forever(mpg::chan<int>())), std::logic_error);
}

TEST_CASE("a task asleep on a timer is not a deadlock") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(sleeps_then_returns()) == 5);
}

TEST_CASE("a task inside mpg::blocking is not a deadlock") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(blocking_call_then_returns()) == 9);
}
