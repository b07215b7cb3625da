// test/once_tests.cpp: mpg::once. f runs exactly once among many concurrent
// callers, and every caller returns only after f has completed (f awaits in
// the middle, so callers really do wait); a plain void function works; an
// exception reaches the first caller only and the once counts as done; a
// caller killed at shutdown leaves the once sound for f's finish.
#include <doctest/doctest.h>

#include "test_support.hpp"

#include <mpg/mpg.hpp>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

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
static_assert(!callable_once<decltype([] { return mpg::sleep_for(std::chrono::milliseconds(1)); })>);
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

}  // namespace
