// test/once_tests.cpp: mpg::once. f runs exactly once among many concurrent
// callers, and every caller returns only after f has completed (f awaits in
// the middle, so callers really do wait); a plain void function works; an
// exception reaches the first caller only and the once counts as done; a
// caller killed at shutdown leaves the once sound for f's finish; a runner
// killed at shutdown while f waits gives the once back (to the next caller,
// of any runtime, or to the next call), and not when the once itself was
// destroyed earlier in the same kill.
#include <doctest/doctest.h>

#include "test_support.hpp"

#include <mpg/mpg.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono_literals;

namespace {

struct config {
  mpg::once init;
  std::atomic<int> runs{0};
  int value = 0;  // plain: written by f, read by every caller after call()
};

mpg::task<int> use_config(config* c) {
  co_await c->init.call([c]() -> mpg::task<> {
    c->runs.fetch_add(1);
    for (int i = 0; i < 10; ++i) co_await mpg::yield();  // others arrive meanwhile
    c->value = 42;
  });
  co_return c->value;
}

mpg::task<std::string> once_many_callers() {
  config c;
  std::vector<mpg::join_handle<int>> hs;
  for (int i = 0; i < 100; ++i) hs.push_back(mpg::spawn(use_config(&c)));
  for (auto& h : hs)
    if (co_await h != 42) co_return "a caller returned before f completed";
  if (c.runs.load() != 1) co_return "f ran " + std::to_string(c.runs.load()) + " times";
  if (!c.init.done()) co_return "not done";
  // Later calls do not run f.
  if (co_await use_config(&c) != 42 || c.runs.load() != 1) co_return "f ran again";
  co_return "ok";
}

// A call on a done once that finds the budget used up requeues its task,
// which the other P may steal and resume at once. Under ThreadSanitizer
// (clang 16): nothing of the awaiter may be written after the requeue
// published the task (once.hpp, await_suspend); an inlined await_suspend
// had its awaiter's initialisation moved below the requeue, and this
// reported the race within a second.
mpg::task<std::string> done_once_many_times(int n) {
  config c;
  co_await use_config(&c);
  long sum = 0;
  for (int i = 0; i < n; ++i) sum += co_await use_config(&c);
  co_return sum == 42L * n && c.runs.load() == 1 ? "ok" : "a call on a done once went wrong";
}

TEST_CASE("once: calls on a done once, requeued by the budget and stolen, resume sound") {
  mpg::runtime rt({.procs = 2});
  REQUIRE(rt.block_on(done_once_many_times(100'000)) == "ok");
}

TEST_CASE("once: f runs once; concurrent callers wait for it to finish") {
  mpg::runtime rt({.procs = 2});
  for (int round = 0; round < 20; ++round) {
    CAPTURE(round);
    REQUIRE(rt.block_on(once_many_callers()) == "ok");
  }
}

mpg::task<std::string> once_plain_function() {
  mpg::once o;
  int n = 0;
  co_await o.call([&n] { ++n; });
  co_await o.call([&n] { ++n; });
  co_return n == 1 ? "ok" : "plain f ran twice";
}

TEST_CASE("once: a plain function works too") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(once_plain_function()) == "ok");
}

// What call() takes: void or a task; an awaitable that is not a task (it
// would be dropped unawaited) or a value does not compile.
template <class F>
concept callable_once = requires(mpg::once& o, F f) { o.call(f); };
static_assert(callable_once<void (*)()>);
static_assert(callable_once<mpg::task<> (*)()>);
static_assert(callable_once<mpg::task<int> (*)()>);
static_assert(
    !callable_once<decltype([] { return mpg::sleep_for(std::chrono::milliseconds(1)); })>);
static_assert(!callable_once<int (*)()>);
static_assert(!callable_once<void (*)(int)>);

mpg::task<std::string> once_exception() {
  mpg::once o;
  int calls = 0;
  try {
    co_await o.call([&calls]() -> mpg::task<> {
      ++calls;
      throw std::runtime_error("init failed");
      co_return;
    });
    co_return "exception not propagated";
  } catch (const std::runtime_error&) {
  }
  // As Go's Once: it counts as done; f does not run again.
  co_await o.call([&calls]() -> mpg::task<> {
    ++calls;
    co_return;
  });
  if (calls != 1) co_return "f ran again after throwing";
  if (!o.done()) co_return "not done after a throwing f";
  co_return "ok";
}

TEST_CASE("once: an exception reaches the first caller; the once is then done") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(once_exception()) == "ok");
}

// Shutdown: ~runtime kills the tasks still parked and frees their frames. A
// caller killed while it waits for f must unlink itself, or f's finish,
// which readies every waiter, walks the freed waiter (ASan, where the frame
// cache is off). f runs on another runtime, which lives on.
mpg::task<void> start_runner(mpg::once* o, mpg::chan<int> started, mpg::chan<int> proceed) {
  mpg::go([](mpg::once* o, mpg::chan<int> started, mpg::chan<int> proceed) -> mpg::task<void> {
    co_await o->call([&]() -> mpg::task<> {
      co_await started.send(1);
      (void)co_await proceed.recv();
    });
  }(o, started, proceed), "runner");
  (void)co_await started.recv();  // f is running
}

mpg::task<void> park_caller(mpg::once* o) {
  mpg::go([](mpg::once* o) -> mpg::task<void> {
    co_await o->call([] {});  // f runs elsewhere: waits
  }(o), "caller");
  co_await mpg_test::yield_some(10);  // it parks (one P)
}

mpg::task<bool> let_f_finish(mpg::once* o, mpg::chan<int> proceed) {
  co_await proceed.send(1);
  co_await o->call([] {});  // waits for f, like any caller
  co_return o->done();
}

TEST_CASE("once: a caller killed at shutdown while f runs elsewhere leaves the once sound") {
  mpg::once o;
  mpg::chan<int> started(1), proceed(1);
  mpg::runtime a({.procs = 1});
  a.block_on(start_runner(&o, started, proceed));
  {
    mpg::runtime b({.procs = 1});
    b.block_on(park_caller(&o));
    REQUIRE(mpg_test::dump_shows(b, "once"));
  }  // kills the queued caller
  CHECK(a.block_on(let_f_finish(&o, proceed)));
}

// --- A runner killed while f runs gives the once back -----------------------
//
// ~runtime kills a task while the f it runs for a once waits (here on a
// channel nobody sends on). The once is given back (once.hpp, "Shutdown"):
// the first caller still queued, of any runtime, runs its own f; with none,
// the next call runs f. Without the give-back the once stays running: the
// callers below wait for ever, and block_on's deadlock check throws
// deadlock_error (~150 ms).

// Runs f on o: f counts its run, then waits for ever (until killed).
mpg::task<void> run_and_park(mpg::once* o, mpg::chan<int> never, std::atomic<int>* runs) {
  auto f = [never, runs]() mutable -> mpg::task<> {
    runs->fetch_add(1);
    (void)co_await never.recv();
  };
  co_await o->call(f);
}

// Calls o with an f that counts its run; returns the count after call().
mpg::task<int> call_counting(mpg::once* o, std::atomic<int>* runs) {
  auto f = [runs] { runs->fetch_add(1); };
  co_await o->call(f);
  co_return runs->load();
}

mpg::task<void> call_after(mpg::chan<int> go, mpg::once* o, std::atomic<int>* runs) {
  (void)co_await go.recv();
  (void)co_await call_counting(o, runs);
}

mpg::task<int> join(mpg::join_handle<int> h) { co_return co_await h; }

std::unique_ptr<mpg::runtime> one_proc() {
  return std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1});
}

TEST_CASE("once: a runner killed at shutdown while f waits hands the run to a queued caller") {
  mpg::once o;
  mpg::chan<int> never;  // nobody sends
  std::atomic<int> runs{0};
  mpg::runtime b({.procs = 1});
  auto a = one_proc();
  a->go(run_and_park(&o, never, &runs), "a.runner");
  REQUIRE(mpg_test::wait_until([&] { return mpg_test::dump_shows(*a, "chan receive"); }, 10s));
  auto h = b.spawn(call_counting(&o, &runs), "b.caller");
  REQUIRE(mpg_test::wait_until([&] { return mpg_test::dump_shows(b, "once"); }, 10s));
  a.reset();  // kills the runner in the middle of f
  CHECK(b.block_on(join(std::move(h))) == 2);  // B's caller ran its own f
  CHECK(o.done());
}

// The runner is younger than a caller of its own runtime queued before B's:
// ~A kills the runner first, whose give-back readies A's caller, which is
// killed next without having run: it must pass the run on to B's caller.
TEST_CASE("once: a caller handed the run as its runtime kills it passes the run on") {
  mpg::once o;
  mpg::chan<int> go(1), never;
  std::atomic<int> runs{0}, a_runs{0};
  mpg::runtime b({.procs = 1});
  auto a = one_proc();
  a->go(call_after(go, &o, &a_runs), "a.caller");  // older: killed after the runner
  REQUIRE(mpg_test::wait_until([&] { return mpg_test::dump_shows(*a, "chan receive"); }, 10s));
  a->go(run_and_park(&o, never, &runs), "a.runner");
  REQUIRE(mpg_test::wait_until([&] { return runs.load() == 1; }, 10s));
  REQUIRE(go.try_send(1));
  REQUIRE(mpg_test::wait_until([&] { return mpg_test::dump_shows(*a, "once"); }, 10s));
  auto h = b.spawn(call_counting(&o, &runs), "b.caller");
  REQUIRE(mpg_test::wait_until([&] { return mpg_test::dump_shows(b, "once"); }, 10s));
  a.reset();
  CHECK(a_runs.load() == 0);
  CHECK(b.block_on(join(std::move(h))) == 2);
  CHECK(o.done());
}

TEST_CASE("once: a runner killed at shutdown with nobody queued leaves f to the next call") {
  mpg::once o;
  mpg::chan<int> never;
  std::atomic<int> runs{0};
  {
    mpg::runtime a({.procs = 1});
    a.go(run_and_park(&o, never, &runs), "a.runner");
    REQUIRE(mpg_test::wait_until([&] { return mpg_test::dump_shows(a, "chan receive"); }, 10s));
  }  // kills the runner in the middle of f
  CHECK_FALSE(o.done());
  mpg::runtime b({.procs = 1});
  CHECK(b.block_on(call_counting(&o, &runs)) == 2);
  CHECK(o.done());
  CHECK(b.block_on(call_counting(&o, &runs)) == 2);  // done: f does not run again
}

// Owns a once in its frame, `depth` awaits down (a chain deeper than 8192
// is killed on a thread of its own: shutdown.cpp, destroy_root), publishes
// it and waits for ever.
mpg::task<void> own_once(int depth, std::atomic<mpg::once*>* op, mpg::chan<int> never) {
  if (depth > 0) {
    co_await own_once(depth - 1, op, never);
    co_return;
  }
  mpg::once o;
  op->store(&o);
  (void)co_await never.recv();
}

mpg::task<void> run_published(std::atomic<mpg::once*>* op, mpg::chan<int> go,
                              mpg::chan<int> never, std::atomic<int>* runs) {
  (void)co_await go.recv();
  co_await run_and_park(op->load(), never, runs);
}

// The once lives in the frame of a younger task than its runner: ~A kills
// (and frees) it first, then the runner, whose give-back must leave the
// freed once alone (ASan reports a use after free otherwise).
void once_freed_before_its_runner(int depth) {
  auto a = one_proc();
  mpg::chan<int> go(1), never;
  std::atomic<mpg::once*> op{nullptr};
  std::atomic<int> runs{0};
  a->go(run_published(&op, go, never, &runs), "a.runner");  // older than the once's owner
  a->go(own_once(depth, &op, never), "a.owner");
  REQUIRE(mpg_test::wait_until([&] { return op.load() != nullptr; }, 10s));
  REQUIRE(go.try_send(1));
  REQUIRE(mpg_test::wait_until([&] { return runs.load() == 1; }, 10s));
  a.reset();
  CHECK(runs.load() == 1);
}

TEST_CASE("once: a runner killed after its once was freed in the same kill leaves it alone") {
  once_freed_before_its_runner(0);
}

TEST_CASE("once: the same with the once in a deep chain freed on a thread of its own") {
  once_freed_before_its_runner(9000);
}

}  // namespace
