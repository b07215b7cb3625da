// test/time_tests.cpp: sleep_for, sleep_until and after(). Only the timer
// guarantee is checked: nothing resumes or fires before its deadline (how
// much later depends on the machine). Also: deadlines already past do not
// wait, many concurrent sleepers all wake, an unfired after() channel can be
// dropped (its timer is cancelled), misuse outside a runtime throws, and
// tasks killed at shutdown while sleeping (or holding an after() channel,
// plainly or in a select) leave no freed timer in a P's heap.
#include <doctest/doctest.h>

#include "test_support.hpp"

#include <mpg/mpg.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

mpg::task<std::string> sleep_for_no_earlier(std::chrono::microseconds d) {
  const auto start = clock_type::now();
  co_await mpg::sleep_for(d);
  if (clock_type::now() - start < d) co_return "woke before the deadline";
  co_return "ok";
}

TEST_CASE("sleep_for resumes no earlier than its duration") {
  mpg::runtime rt({.procs = 2});
  for (auto d : {1us, 100us, 1000us, 5000us}) {
    CAPTURE(d.count());
    CHECK(rt.block_on(sleep_for_no_earlier(d)) == "ok");
  }
}

mpg::task<std::string> sleep_until_behaviour() {
  const auto deadline = clock_type::now() + 3ms;
  co_await mpg::sleep_until(deadline);
  if (clock_type::now() < deadline) co_return "woke before the deadline";
  // Past deadlines and non-positive durations complete at once.
  const auto t0 = clock_type::now();
  co_await mpg::sleep_until(t0 - 1s);
  co_await mpg::sleep_for(0ms);
  co_await mpg::sleep_for(-5ms);
  co_await mpg::sleep_for(std::chrono::duration<double>(0.0005));  // floating durations
  // A huge duration must not overflow into the past: it would not wait.
  // (Only checked for the arithmetic; we do not sleep on it.)
  auto far = mpg::detail::deadline_after(std::chrono::hours::max());
  if (far != clock_type::time_point::max()) co_return "deadline overflow";
  co_return "ok";
}

TEST_CASE("sleep_until waits for its deadline; past deadlines do not wait") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(sleep_until_behaviour()) == "ok");
}

mpg::task<int> sleeper(std::chrono::microseconds d) {
  const auto start = clock_type::now();
  co_await mpg::sleep_for(d);
  co_return clock_type::now() - start >= d ? 1 : 0;
}

mpg::task<std::string> many_sleepers(int n) {
  std::vector<mpg::join_handle<int>> hs;
  for (int i = 0; i < n; ++i)
    hs.push_back(mpg::spawn(sleeper(std::chrono::microseconds((i * 37) % 3000))));
  int ok = 0;
  for (auto& h : hs) ok += co_await h;
  if (ok != n) co_return std::to_string(n - ok) + " sleepers woke early";
  co_return "ok";
}

TEST_CASE("saturating_add: short durations of any type stay short; only huge ones saturate") {
  using namespace std::chrono;
  using tp = clock_type::time_point;
  const tp max = tp::max();
  // Clock readings an uptime can give, from minutes to years.
  for (tp t : {tp(minutes(40) + microseconds(7)), tp(hours(17)), tp(hours(24 * 30)),
               tp(hours(24 * 200)), tp(hours(24 * 365 * 5))}) {
    CAPTURE(t.time_since_epoch().count());
    CHECK(mpg::detail::saturating_add(t, duration<int, std::micro>(10)) == t + microseconds(10));
    CHECK(mpg::detail::saturating_add(t, duration<int, std::milli>(10)) == t + milliseconds(10));
    CHECK(mpg::detail::saturating_add(t, duration<long long, std::pico>(1000)) == t + 1ns);
    CHECK(mpg::detail::saturating_add(t, duration<long long, std::pico>(1)) == t + 1ns);  // up
    CHECK(mpg::detail::saturating_add(t, duration<double>(0.25)) == t + 250ms);
    CHECK(mpg::detail::saturating_add(t, -5ms) == t);
    CHECK(mpg::detail::saturating_add(t, duration<double>(std::nan(""))) == t);
    CHECK(mpg::detail::saturating_add(t, duration<double>(INFINITY)) == max);
    CHECK(mpg::detail::saturating_add(t, hours::max()) == max);
    CHECK(mpg::detail::saturating_add(t, nanoseconds::max()) == max);
    CHECK(mpg::detail::saturating_add(t, duration<int, std::ratio<86400>>::max()) == max);
  }
  CHECK(mpg::detail::saturating_add(max - 5ns, 10ns) == max);
  CHECK(mpg::detail::saturating_add(max - 5ns, 4ns) == max - 1ns);
  // A double just below the room left: in long double nanoseconds it fits
  // (2^63 - 1333 ns against 2^63 - 1201), but converted in double it rounds
  // up to 2^63 - 1024 ns, which t's 1200 ns carry past INT64_MAX.
  const tp t(1200ns);
  const duration<double> just_below(9223372036.854774);
  REQUIRE(duration_cast<duration<long double, std::nano>>(just_below) <
          duration_cast<duration<long double, std::nano>>(max - t));
  CHECK(mpg::detail::saturating_add(t, just_below) > t + hours(24 * 365 * 200));
}

TEST_CASE("saturating_add: a period that is no whole number of ns is exact, not an overflow") {
  using namespace std::chrono;
  using tp = clock_type::time_point;
  // 60 Hz frames: 3e11 of them (5e9 s, 158 years) fit the clock's range
  // from an uptime of a day, but 3e11 times nano/frame's numerator (5e7)
  // does not fit 64 bits: std::chrono::ceil would wrap the sum to a
  // deadline in the past (a sleep of 158 years that does not wait; UBSan:
  // signed integer overflow).
  using frames = duration<long long, std::ratio<1, 60>>;
  const tp t(hours(24));
  CHECK(mpg::detail::saturating_add(t, frames(300'000'000'000LL)) == t + seconds(5'000'000'000LL));
  // Rounded up: one frame is 16666666.67 ns.
  CHECK(mpg::detail::saturating_add(t, frames(1)) == t + 16'666'667ns);
  using thirds = duration<long long, std::ratio<1, 3>>;  // 211 years, times 1e9: past 2^63
  CHECK(mpg::detail::saturating_add(t, thirds(20'000'000'000LL)) ==
        t + 6'666'666'666'666'666'667ns);
  CHECK(mpg::detail::saturating_add(t, frames::max()) == tp::max());
}

mpg::task<std::string> fine_grained_after() {
  // 1000 ps: a nanosecond. Before saturating_add, the overflow guard itself
  // overflowed for such types and made the timer "never".
  mpg::chan<clock_type::time_point> soon =
      mpg::after(std::chrono::duration<long long, std::pico>(1000));
  mpg::chan<clock_type::time_point> us = mpg::after(std::chrono::duration<int, std::micro>(10));
  mpg::chan<clock_type::time_point> bound = mpg::after(10s);
  auto a = co_await mpg::select(soon.recv(), bound.recv());
  if (a.index() != 0) co_return "a 1000 ps after() did not fire";
  auto b = co_await mpg::select(us.recv(), bound.recv());
  if (b.index() != 0) co_return "a 10 us after() of int microseconds did not fire";
  co_return "ok";
}

TEST_CASE("after() with a fine-grained or narrow duration type fires") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(fine_grained_after()) == "ok");
}

TEST_CASE("many concurrent sleepers on both Ps all wake, none early") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(many_sleepers(2000)) == "ok");
}

mpg::task<std::string> after_fires_once() {
  const auto start = clock_type::now();
  mpg::chan<clock_type::time_point> t = mpg::after(2ms);
  if (t.capacity() != 1) co_return "after() channel capacity is not 1";
  std::optional<clock_type::time_point> v = co_await t.recv();
  if (!v) co_return "no value";
  if (*v < start + 2ms || clock_type::now() < start + 2ms) co_return "fired early";
  // It sends exactly once: nothing more arrives.
  if (t.try_recv()) co_return "a second value";
  // A zero duration sends at once.
  mpg::chan<clock_type::time_point> z = mpg::after(0ms);
  if (!(co_await z.recv())) co_return "after(0) sent nothing";
  co_return "ok";
}

TEST_CASE("after() sends the firing time once, no earlier than its deadline") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(after_fires_once()) == "ok");
}

mpg::task<std::string> after_dropped_unfired() {
  // Unfired timers whose channels are dropped are cancelled (ASan checks
  // that nothing leaks; the runtime shuts down with no timer pending).
  for (int i = 0; i < 1000; ++i) {
    mpg::chan<int> ready(1);
    co_await ready.send(i);
    auto r = co_await mpg::select(ready.recv(), mpg::after(1h).recv());
    if (r.index() != 0) co_return "timer won";
  }
  // A channel that outlives its firing still holds the value.
  auto t = mpg::after(1ms);
  co_await mpg::sleep_for(2ms);
  if (!t.try_recv()) co_return "fired value lost";
  co_return "ok";
}

TEST_CASE("dropping an unfired after() channel cancels its timer") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(after_dropped_unfired()) == "ok");
}

TEST_CASE("after() and sleeps outside a runtime throw std::logic_error") {
  CHECK_THROWS_AS(mpg::after(1ms), std::logic_error);
  mpg::runtime rt({.procs = 1});
  // Still no runtime on this (plain) thread.
  CHECK_THROWS_AS(mpg::after(1ms), std::logic_error);
}

mpg::task<std::string> sleeping_does_not_block_the_p() {
  // One P: while one task sleeps, another runs to completion.
  std::atomic<bool> ran{false};
  auto h = mpg::spawn([](std::atomic<bool>* ran) -> mpg::task<void> {
    ran->store(true);
    co_return;
  }(&ran));
  // A timer that is due when the M next looks beats the spawned task to the
  // P, which happens when the M lost its CPU for the whole sleep (the
  // sanitizer stages, on a loaded machine): sleep again, a bounded number
  // of times. A sleep that held the P would let it run in none of them.
  bool ran_while_sleeping = false;
  for (int i = 0; i < 200 && !ran_while_sleeping; ++i) {
    co_await mpg::sleep_for(2ms);
    ran_while_sleeping = ran.load();
  }
  co_await h;
  co_return ran_while_sleeping ? "ok" : "the other task did not run while we slept";
}

TEST_CASE("a sleeping task leaves its P to others") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(sleeping_does_not_block_the_p()) == "ok");
}

}  // namespace

namespace {

TEST_CASE("after() channels and deadline contexts may outlive their runtime") {
  mpg::chan<clock_type::time_point> pending, fired;
  mpg::context deadline_ctx, fired_ctx;
  {
    mpg::runtime rt({.procs = 2});
    rt.block_on([](mpg::chan<clock_type::time_point>* pending,
                   mpg::chan<clock_type::time_point>* fired, mpg::context* d,
                   mpg::context* f) -> mpg::task<void> {
      *pending = mpg::after(1h);
      *fired = mpg::after(1ms);
      *d = mpg::with_timeout(mpg::background(), 1h).first;
      *f = mpg::with_timeout(mpg::background(), 1ms).first;
      co_await mpg::sleep_for(3ms);
    }(&pending, &fired, &deadline_ctx, &fired_ctx));
  }
  // The runtime is gone; its timers were detached. Using and dropping these
  // must neither crash nor leak (ASan).
  CHECK_FALSE(pending.try_recv().has_value());
  CHECK(fired.try_recv().has_value());
  CHECK(deadline_ctx.err().ok());
  CHECK(fired_ctx.err().code() == absl::StatusCode::kDeadlineExceeded);
  pending = mpg::chan<clock_type::time_point>();
  fired = mpg::chan<clock_type::time_point>();
  deadline_ctx = mpg::context();
  fired_ctx = mpg::context();
}

}  // namespace

// Shutdown: ~runtime kills the tasks still parked and frees their frames. A
// sleep's timer lives in its awaiter, in the frame: the P's heap must be rid
// of it before the frame goes, or whatever touches the heap next (detaching
// the timers, or cancelling another timer from a destructor run later in
// the same shutdown) writes to freed memory (ASan, where the frame cache is
// off so that ASan sees frame frees).
namespace {

mpg::task<void> park_sleepers() {
  mpg::go([]() -> mpg::task<void> { co_await mpg::sleep_for(1h); }(), "sleep_for");
  mpg::go([]() -> mpg::task<void> { co_await mpg::sleep_until(clock_type::now() + 1h); }(),
          "sleep_until");
  co_await mpg_test::yield_some(10);  // both park (one P)
}

TEST_CASE("tasks killed at shutdown in sleep_for and sleep_until leave no timer behind") {
  {
    mpg::runtime rt({.procs = 1});
    rt.block_on(park_sleepers());
    REQUIRE(mpg_test::dump_shows(rt, "sleep"));
    CHECK(rt.stats().live >= 2);
  }  // kills both sleepers; their timers were still in the heap
}

// The sleeper is spawned last (newest: killed first) and sleeps longer, so
// the after() timers sit above it in the heap: cancelling them (by the
// later-killed tasks' destructors) moves the sleeper's timer up.
mpg::task<void> park_sleeper_then_after_holders() {
  mpg::go([]() -> mpg::task<void> {
    mpg::chan<int> never;
    (void)co_await mpg::select(never.recv(), mpg::after(1h).recv());
  }(), "select with after");
  mpg::go([]() -> mpg::task<void> {
    mpg::chan<clock_type::time_point> t = mpg::after(1h);
    mpg::chan<int> never;
    (void)co_await never.recv();
  }(), "after holder");
  mpg::go([]() -> mpg::task<void> { co_await mpg::sleep_for(2h); }(), "sleeper");
  co_await mpg_test::yield_some(10);  // all three park (one P)
}

TEST_CASE("a sleeper killed at shutdown leaves the heap sound for after() timers cancelled later") {
  {
    mpg::runtime rt({.procs = 1});
    rt.block_on(park_sleeper_then_after_holders());
    REQUIRE(mpg_test::dump_shows(rt, "sleep"));
    REQUIRE(mpg_test::dump_shows(rt, "select"));
    REQUIRE(mpg_test::dump_shows(rt, "chan receive"));
  }  // kills the sleeper, then drops both after() channels (cancel_timer)
}

TEST_CASE("a sleep that never ends is no possible wake-up: block_on reports the deadlock") {
  mpg::runtime rt({.procs = 1});
  auto forever = []() -> mpg::task<void> { co_await mpg::sleep_for(std::chrono::hours::max()); };
  CHECK_THROWS_AS(rt.block_on(forever()), mpg::deadlock_error);
}

}  // namespace
