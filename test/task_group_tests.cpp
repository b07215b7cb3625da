// test/task_group_tests.cpp: mpg::task_group (Go's errgroup). wait()
// returns OK when all succeed; the first error is returned and cancels the
// group's context, which the other tasks observe; an exception propagates
// through wait() and outranks a Status failure, and one nobody waits for
// aborts; the parent's cancellation reaches the group's context; a task
// killed at shutdown in wait() leaves the group sound; wait() returns after
// the members' frames are gone; the task wait() returns outlives the group.
#include <doctest/doctest.h>

#include <absl/strings/str_cat.h>

#include "child_process.hpp"
#include "test_support.hpp"

#include <mpg/mpg.hpp>

#include <atomic>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

namespace {

mpg::task<absl::Status> ok_task(std::atomic<int>* n) {
  n->fetch_add(1);
  co_await mpg::yield();
  co_return absl::OkStatus();
}

mpg::task<std::string> all_ok() {
  mpg::task_group g;
  std::atomic<int> n{0};
  for (int i = 0; i < 100; ++i) g.spawn(ok_task(&n));
  absl::Status s = co_await g.wait();
  if (!s.ok()) co_return "not OK";
  if (n.load() != 100) co_return "wait returned before all tasks finished";
  co_return "ok";
}

TEST_CASE("task_group: all tasks succeed -> OK after all finished") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(all_ok()) == "ok");
}

// Waits for the group's context to be cancelled; reports whether it was.
mpg::task<absl::Status> waits_for_cancel(mpg::context ctx, std::atomic<int>* saw_cancel) {
  (void)co_await ctx.done().recv();
  if (ctx.err().code() == absl::StatusCode::kCancelled) saw_cancel->fetch_add(1);
  co_return ctx.err();
}

mpg::task<absl::Status> fails_after(int yields, std::string msg) {
  for (int i = 0; i < yields; ++i) co_await mpg::yield();
  co_return absl::InternalError(msg);
}

mpg::task<std::string> first_error_cancels() {
  mpg::task_group g;
  std::atomic<int> saw_cancel{0};
  for (int i = 0; i < 10; ++i) g.spawn(waits_for_cancel(g.context(), &saw_cancel));
  g.spawn(fails_after(5, "first"));
  // A later failure (after the first has cancelled everyone) is dropped.
  g.spawn([](mpg::context ctx) -> mpg::task<absl::Status> {
    (void)co_await ctx.done().recv();
    co_return absl::InternalError("second");
  }(g.context()));
  absl::Status s = co_await g.wait();
  if (s.code() != absl::StatusCode::kInternal || s.message() != "first")
    co_return "wrong error: " + s.ToString();
  if (saw_cancel.load() != 10) co_return "context cancel not seen by all tasks";
  if (!g.context().cancelled()) co_return "group context live after wait";
  co_return "ok";
}

TEST_CASE("task_group: the first error is returned and cancels the group's context") {
  mpg::runtime rt({.procs = 2});
  for (int round = 0; round < 20; ++round) {
    CAPTURE(round);
    REQUIRE(rt.block_on(first_error_cancels()) == "ok");
  }
}

mpg::task<std::string> exception_propagates() {
  mpg::task_group g;
  std::atomic<int> saw_cancel{0};
  g.spawn(waits_for_cancel(g.context(), &saw_cancel));
  g.spawn([]() -> mpg::task<absl::Status> {
    throw std::runtime_error("boom");
    co_return absl::OkStatus();
  }());
  try {
    (void)co_await g.wait();
    co_return "exception swallowed";
  } catch (const std::runtime_error& e) {
    if (std::string(e.what()) != "boom") co_return "wrong exception";
  }
  co_return saw_cancel.load() == 1 ? "ok" : "exception did not cancel the group";
}

TEST_CASE("task_group: an exception in a task cancels the group and is rethrown by wait()") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(exception_propagates()) == "ok");
}

mpg::task<std::string> parent_cancel_reaches_group() {
  auto [parent, cancel] = mpg::with_cancel(mpg::background());
  mpg::task_group g(parent);
  std::atomic<int> saw_cancel{0};
  for (int i = 0; i < 5; ++i) g.spawn(waits_for_cancel(g.context(), &saw_cancel));
  for (int i = 0; i < 10; ++i) co_await mpg::yield();
  cancel();
  absl::Status s = co_await g.wait();
  // The tasks returned the context's error: kCancelled is the first error.
  if (s.code() != absl::StatusCode::kCancelled) co_return "wrong status: " + s.ToString();
  co_return saw_cancel.load() == 5 ? "ok" : "cancel did not reach the tasks";
}

TEST_CASE("task_group: cancelling the parent context cancels the group's context") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(parent_cancel_reaches_group()) == "ok");
}

mpg::task<std::string> group_dropped_before_tasks_end() {
  mpg::chan<int> release, finished;
  {
    mpg::task_group g;
    g.spawn([](mpg::chan<int> r, mpg::chan<int> f) -> mpg::task<absl::Status> {
      (void)co_await r.recv();
      f.close();
      co_return absl::OkStatus();
    }(release, finished));
  }  // destroyed without wait(): the task runs on
  release.close();
  (void)co_await finished.recv();
  co_return "ok";
}

TEST_CASE("task_group: may be destroyed before its tasks finish") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(group_dropped_before_tasks_end()) == "ok");
}

// The task that wait() returns copies the group's state when wait() is
// called: it may be awaited after the group is gone. Here the group's
// storage then holds another group, with no members: a wait() that read
// the group only on its first resume would wait on that one and return OK.
mpg::task<std::string> wait_awaited_after_the_group_is_gone() {
  // The alignment is the type's, not an alignas on the array: g++ 12 drops
  // an alignas of a local kept in a coroutine frame (README).
  struct alignas(mpg::task_group) group_storage {
    unsigned char bytes[sizeof(mpg::task_group)];
  } storage;
  auto* g = new (storage.bytes) mpg::task_group();
  g->spawn([]() -> mpg::task<absl::Status> {
    co_await mpg::yield();
    co_return absl::InternalError("member failed");
  }());
  mpg::task<absl::Status> w = g->wait();
  g->~task_group();
  auto* other = new (storage.bytes) mpg::task_group();
  absl::Status s = co_await std::move(w);
  other->~task_group();
  if (s.code() != absl::StatusCode::kInternal)
    co_return absl::StrCat("wait() gave ", s.ToString(), ", not the member's error");
  // The plain form, for ASan: the group freed before the wait starts.
  auto heap = std::make_unique<mpg::task_group>();
  heap->spawn([]() -> mpg::task<absl::Status> { co_return absl::OkStatus(); }());
  mpg::task<absl::Status> w2 = heap->wait();
  heap.reset();
  absl::Status s2 = co_await std::move(w2);
  if (!s2.ok()) co_return absl::StrCat("wait() on a freed group gave ", s2.ToString());
  co_return "ok";
}

TEST_CASE("task_group: the task wait() returns may be awaited after the group is destroyed") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(wait_awaited_after_the_group_is_gone()) == "ok");
}

// Shutdown: ~runtime kills the tasks still parked and frees their frames. A
// task killed in wait() must leave the group's wait_group without its
// waiter, or the last member's done() walks the freed waiter (ASan, where
// the frame cache is off). The member runs on another runtime.
mpg::task<void> spawn_member(mpg::task_group* g, mpg::chan<int> proceed) {
  g->spawn([](mpg::chan<int> proceed) -> mpg::task<absl::Status> {
    (void)co_await proceed.recv();
    co_return absl::OkStatus();
  }(proceed), "member");
  co_return;
}

mpg::task<void> park_group_waiter(mpg::task_group* g) {
  mpg::go([](mpg::task_group* g) -> mpg::task<void> { (void)co_await g->wait(); }(g), "waiter");
  co_await mpg_test::yield_some(10);  // it parks (one P)
}

mpg::task<bool> let_member_finish(mpg::task_group* g, mpg::chan<int> proceed) {
  co_await proceed.send(1);
  absl::Status s = co_await g->wait();
  co_return s.ok();
}

TEST_CASE("task_group: a task killed at shutdown in wait() leaves the group sound") {
  mpg::task_group g;
  mpg::chan<int> proceed(1);
  mpg::runtime a({.procs = 1});
  a.block_on(spawn_member(&g, proceed));
  {
    mpg::runtime b({.procs = 1});
    b.block_on(park_group_waiter(&g));
    REQUIRE(mpg_test::dump_shows(b, "wait_group wait"));
  }  // kills the waiter
  CHECK(a.block_on(let_member_finish(&g, proceed)));
}

// A member's parameter, whose destructor notes the state of the group's
// waiter at that moment (moved-from copies note nothing).
struct waiter_probe {
  mpg::detail::g* const* waiter;
  std::atomic<int>* seen;
  bool armed = true;
  waiter_probe(mpg::detail::g* const* w, std::atomic<int>* s) : waiter(w), seen(s) {}
  waiter_probe(waiter_probe&& o) noexcept : waiter(o.waiter), seen(o.seen) { o.armed = false; }
  ~waiter_probe() {
    if (armed) seen->store(static_cast<int>((*waiter)->status.load()));
  }
};

mpg::task<absl::Status> member_with_probe(waiter_probe p) {
  (void)p;
  co_return absl::OkStatus();
}

mpg::task<int> probe_member_frame() {
  mpg::detail::g* me = mpg::detail::current_g();
  std::atomic<int> seen{-1};
  {
    mpg::task_group g;
    g.spawn(member_with_probe(waiter_probe(&me, &seen)));
    (void)co_await g.wait();
  }
  co_return seen.load();
}

TEST_CASE("task_group: wait() returns after the member's frame, parameters and all, is gone") {
  // One P: the member runs while the waiter is parked in wait(). Its
  // parameter's destructor must run before the done() that readies the
  // waiter (the waiter still waiting then), not after it (runnable), when
  // the waiter, on another P, could already have returned and freed what
  // the parameter refers to.
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(probe_member_frame()) == static_cast<int>(mpg::detail::g_status::waiting));
}

mpg::task<std::string> exception_after_status() {
  mpg::task_group g;
  g.spawn(fails_after(0, "first"));
  // Throws once the first failure has cancelled the group: strictly after.
  g.spawn([](mpg::context ctx) -> mpg::task<absl::Status> {
    (void)co_await ctx.done().recv();
    throw std::runtime_error("late boom");
    co_return absl::OkStatus();
  }(g.context()));
  try {
    absl::Status s = co_await g.wait();
    co_return "exception dropped for the status: " + s.ToString();
  } catch (const std::runtime_error& e) {
    co_return e.what();
  }
}

TEST_CASE("task_group: an exception replaces a Status failure recorded before it") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(exception_after_status()) == "late boom");
}

mpg::task<void> drop_group_with_thrower() {
  mpg::chan<int> thrown(1);
  {
    mpg::task_group g;
    g.spawn([](mpg::chan<int> thrown) -> mpg::task<absl::Status> {
      (void)co_await thrown.send(1);
      throw std::runtime_error("nobody waits");
      co_return absl::OkStatus();
    }(thrown), "thrower");
  }  // dropped: no wait()
  (void)co_await thrown.recv();
  for (int i = 0; i < 100; ++i) co_await mpg::yield();
}

TEST_CASE("task_group: an exception no wait() rethrew is reported and aborts") {
  mpg_test::child_result r = mpg_test::run_child([] {
    mpg::runtime rt({.procs = 1});
    rt.block_on(drop_group_with_thrower());
  });
  CHECK(WIFSIGNALED(r.status));
  CHECK(WTERMSIG(r.status) == SIGABRT);
  CHECK(r.output.find("nobody waits") != std::string::npos);
  CHECK(r.output.find("thrower") != std::string::npos);
}

// --- edge cases: nesting, fan-out with a failure, misuse --------------------

mpg::task<std::string> nested_exception() {
  mpg::task_group outer;
  outer.spawn([]() -> mpg::task<absl::Status> {
    mpg::task_group inner;
    inner.spawn([]() -> mpg::task<absl::Status> {
      co_await mpg::yield();
      throw std::runtime_error("inner boom");
      co_return absl::OkStatus();
    }());
    inner.spawn([](mpg::context c) -> mpg::task<absl::Status> {
      (void)co_await c.done().recv();
      co_return c.err();
    }(inner.context()));
    co_return co_await inner.wait();
  }());
  outer.spawn([](mpg::context c) -> mpg::task<absl::Status> {
    (void)co_await c.done().recv();
    co_return c.err();
  }(outer.context()));
  try {
    (void)co_await outer.wait();
  } catch (const std::runtime_error& e) {
    co_return e.what();
  }
  co_return "no exception";
}

TEST_CASE("task_group: nested groups carry an inner exception out") {
  mpg::runtime rt({.procs = 2});
  for (int i = 0; i < 50; ++i) REQUIRE(rt.block_on(nested_exception()) == "inner boom");
}

// Members spawn siblings into their own group, also after the first failure.
mpg::task<absl::Status> spawner(mpg::task_group* g, int depth, std::atomic<int>* ended) {
  if (depth > 0) {
    g->spawn(spawner(g, depth - 1, ended));
    g->spawn(spawner(g, depth - 1, ended));
  }
  co_await mpg::yield();
  ended->fetch_add(1);
  if (depth == 3) co_return absl::InternalError("mid");
  co_return absl::OkStatus();
}

mpg::task<std::string> sibling_spawns() {
  std::atomic<int> ended{0};
  mpg::task_group g;
  g.spawn(spawner(&g, 8, &ended));
  absl::Status s = co_await g.wait();
  if (ended.load() != 511) co_return "ended " + std::to_string(ended.load());
  co_return s.message() == "mid" ? "ok" : s.ToString();
}

TEST_CASE("task_group: members spawning siblings are all joined") {
  mpg::runtime rt({.procs = 2});
  for (int i = 0; i < 20; ++i) REQUIRE(rt.block_on(sibling_spawns()) == "ok");
}

mpg::task<absl::Status> returns_ok() { co_return absl::OkStatus(); }

mpg::task<std::string> spawn_awaited_task() {
  mpg::task<absl::Status> t = returns_ok();
  (void)co_await t;
  mpg::task_group g;
  try {
    g.spawn(std::move(t));
  } catch (const std::logic_error&) {
    co_return "spawn threw";
  }
  absl::Status s = co_await g.wait();
  co_return "spawn returned; wait: " + s.ToString();
}

mpg::task<std::string> spawn_empty_task() {
  mpg::task<absl::Status> t = returns_ok();
  mpg::task<absl::Status> moved = std::move(t);
  mpg::task_group g;
  bool threw = false;
  try {
    g.spawn(std::move(t));  // NOLINT(bugprone-use-after-move): the case under test
  } catch (const std::logic_error&) {
    threw = true;
  }
  absl::Status s = co_await g.wait();  // returns at once: the group is unchanged
  if (!s.ok()) co_return "wait: " + s.ToString();
  co_return threw ? "spawn threw" : "spawn returned";
}

TEST_CASE("task_group: spawn refuses a task that cannot be awaited, as mpg::spawn does") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(spawn_awaited_task()) == "spawn threw");
  CHECK(rt.block_on(spawn_empty_task()) == "spawn threw");
}

TEST_CASE("task_group: spawn outside a task throws and leaves wait() returning") {
  mpg::runtime rt({.procs = 1});
  mpg::task_group g;
  CHECK_THROWS_AS(g.spawn(returns_ok()), std::logic_error);
  CHECK(rt.block_on(g.wait()).ok());
}

mpg::task<std::string> two_waiters_exception() {
  auto g = std::make_unique<mpg::task_group>();
  g->spawn([]() -> mpg::task<absl::Status> {
    co_await mpg::yield();
    throw 42;
    co_return absl::OkStatus();
  }());
  auto w = [](mpg::task<absl::Status> t) -> mpg::task<int> {
    try {
      (void)co_await std::move(t);
    } catch (int v) {
      co_return v;
    }
    co_return 0;
  };
  mpg::join_handle<int> a = mpg::spawn(w(g->wait()));
  mpg::join_handle<int> b = mpg::spawn(w(g->wait()));
  g.reset();
  int x = co_await std::move(a);
  int y = co_await std::move(b);
  co_return std::to_string(x) + "," + std::to_string(y);
}

TEST_CASE("task_group: two waits of a dropped group rethrow a non-std exception") {
  mpg::runtime rt({.procs = 2});
  for (int i = 0; i < 50; ++i) REQUIRE(rt.block_on(two_waiters_exception()) == "42,42");
}

}  // namespace
