// test/spawn_tests.cpp: spawn, go, join_handle and block_on: results and
// exceptions through joins, detaching, misuse outside a task, spawning from
// foreign threads, several runtimes, and the spawn counters.
#include <doctest/doctest.h>

#include <mpg/mpg.hpp>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <mpg/detail/sched/timer.hpp>  // detail::current_scheduler()

#include "child_process.hpp"

namespace {

// Spin budget for handshakes between tasks: each turn yields the P, so the
// other task gets to run; the bound only turns a bug into a failure.
constexpr int kSpinLimit = 10'000'000;

mpg::task<int> square(int x) { co_return x * x; }

mpg::task<int> sum_of_squares(int n) {
  std::vector<mpg::join_handle<int>> hs;
  for (int i = 1; i <= n; ++i) hs.push_back(mpg::spawn(square(i)));
  int sum = 0;
  for (auto& h : hs) sum += co_await h;
  co_return sum;
}

mpg::task<int> fails(std::string what) {
  throw std::runtime_error(what);
  co_return 0;
}

mpg::task<std::string> join_failing() {
  auto h = mpg::spawn(fails("child failed"));
  try {
    (void)co_await h;
  } catch (const std::runtime_error& e) {
    co_return e.what();
  }
  co_return "no exception";
}

mpg::task<std::string> join_moved_handle() {
  mpg::join_handle<int> h = mpg::spawn(square(6));
  mpg::join_handle<int> moved = std::move(h);
  if (h.valid()) co_return "moved-from handle still valid";
  int v = co_await moved;
  std::string r = std::to_string(v);
  try {
    (void)co_await h;  // empty
    r += " empty-join-did-not-throw";
  } catch (const std::logic_error&) {
    r += " empty";
  }
  try {
    (void)co_await moved;  // already joined
    r += " second-join-did-not-throw";
  } catch (const std::logic_error&) {
    r += " twice";
  }
  co_return r;
}

mpg::task<void> set_flag(std::atomic<bool>* flag) {
  flag->store(true);
  co_return;
}

// Yields until *flag is set; false if the bound ran out.
mpg::task<bool> wait_flag(std::atomic<bool>* flag) {
  for (int i = 0; i < kSpinLimit; ++i) {
    if (flag->load()) co_return true;
    co_await mpg::yield();
  }
  co_return false;
}

mpg::task<bool> drop_then_observe(std::atomic<bool>* flag) {
  {
    auto h = mpg::spawn(set_flag(flag));  // dropped at once: detached
  }
  co_return co_await mpg::spawn(wait_flag(flag));
}

mpg::task<bool> go_then_observe(std::atomic<bool>* flag) {
  mpg::go(set_flag(flag), "go.set_flag");
  co_return co_await mpg::spawn(wait_flag(flag));
}

mpg::task<std::string> block_on_inside(mpg::runtime* rt) {
  try {
    (void)rt->block_on(square(2));
  } catch (const std::logic_error&) {
    co_return "logic_error";
  }
  co_return "no throw";
}

mpg::task<int> fib(int n) {
  if (n < 2) co_return n;
  mpg::join_handle<int> a = mpg::spawn(fib(n - 1));
  int b = co_await fib(n - 2);
  co_return co_await a + b;
}

mpg::task<void> spawn_n(int n) {
  std::vector<mpg::join_handle<int>> hs;
  for (int i = 0; i < n; ++i) hs.push_back(mpg::spawn(square(i)));
  for (auto& h : hs) (void)co_await h;
}

mpg::task<mpg::detail::scheduler*> which_runtime() { co_return mpg::detail::current_scheduler(); }

// A task of one runtime joins a task spawned on another runtime.
mpg::task<int> cross_runtime_join(mpg::runtime* other) {
  auto h = other->spawn(fib(12));
  co_return co_await h;
}

mpg::task<int> spin_until(std::atomic<bool>* go_on, int v) {
  for (int i = 0; i < kSpinLimit && !go_on->load(); ++i) co_await mpg::yield();
  co_return v;
}

struct done_probe {
  bool before = true;
  bool eventually = false;
  int value = 0;
  bool after_join = true;
};

// On 1 P: the child cannot run before the parent yields.
mpg::task<done_probe> probe_done() {
  done_probe r;
  std::atomic<bool> go_on{true};
  auto h = mpg::spawn(spin_until(&go_on, 11));
  r.before = h.done();
  for (int i = 0; i < kSpinLimit && !h.done(); ++i) co_await mpg::yield();
  r.eventually = h.done();
  r.value = co_await h;
  r.after_join = h.done();  // an empty handle is not done
  co_return r;
}

}  // namespace

TEST_CASE("spawn and join return the children's values") {
  for (unsigned procs : {1u, 2u}) {
    CAPTURE(procs);
    mpg::runtime rt({.procs = procs});
    CHECK(rt.block_on(sum_of_squares(20)) == 2870);
  }
}

TEST_CASE("a child's exception is rethrown at its join") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(join_failing()) == "child failed");
  CHECK_THROWS_AS(rt.block_on(rt.spawn(fails("from block_on"))), std::runtime_error);
}

TEST_CASE("a moved join_handle is awaited once; the moved-from one is empty") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(join_moved_handle()) == "36 empty twice");
}

TEST_CASE("dropping a join_handle detaches the task, which still runs") {
  for (unsigned procs : {1u, 2u}) {
    CAPTURE(procs);
    mpg::runtime rt({.procs = procs});
    std::atomic<bool> flag{false};
    CHECK(rt.block_on(drop_then_observe(&flag)));
    CHECK(flag.load());
  }
}

TEST_CASE("go runs detached tasks, inside a task and from runtime::go") {
  mpg::runtime rt({.procs = 2});
  std::atomic<bool> a{false};
  CHECK(rt.block_on(go_then_observe(&a)));
  std::atomic<bool> b{false};
  rt.go(set_flag(&b), "rt.go");
  CHECK(rt.block_on(wait_flag(&b)));
}

// finish_root: a detached task's exception has no one to observe it, so the
// process ends with a report naming the task (spawn.hpp): for a task started
// with go(), for one whose handle was dropped before it ended, and for one
// whose handle is dropped, unjoined, after it ended by throwing.
TEST_CASE("an exception escaping a detached task aborts with a report naming the task") {
  for (int how : {0, 1, 2}) {
    CAPTURE(how);
    bool aborted = false;
    const std::string err = mpg_test::run_in_child(
        [how] {
          mpg::runtime rt({.procs = 1});
          rt.block_on([](int how) -> mpg::task<void> {
            auto fails = []() -> mpg::task<void> {
              co_await mpg::yield();  // ends after the spawner has moved on
              throw std::runtime_error("lost on purpose");
            };
            if (how == 0) {
              mpg::go(fails(), "fails-detached");
            } else if (how == 1) {
              (void)mpg::spawn(fails(), "fails-detached");  // the handle dropped at once
            } else {
              auto h = mpg::spawn(fails(), "fails-detached");
              for (int i = 0; i < 4; ++i) co_await mpg::yield();  // it has thrown
              h.detach();
            }
            for (int i = 0; i < 4; ++i) co_await mpg::yield();
          }(how));
        },
        &aborted);
    INFO(err);
    CHECK(aborted);
    CHECK(err.find("exception escaped detached task") != std::string::npos);
    CHECK(err.find("(fails-detached): lost on purpose") != std::string::npos);
  }
}

TEST_CASE("spawn, go, yield and consume_budget outside a task throw std::logic_error") {
  SUBCASE("without any runtime") {
    CHECK_THROWS_AS((void)mpg::spawn(square(1)), std::logic_error);
    CHECK_THROWS_AS(mpg::go(set_flag(nullptr)), std::logic_error);
    CHECK_THROWS_AS((void)mpg::yield(), std::logic_error);
    CHECK_THROWS_AS((void)mpg::consume_budget(), std::logic_error);
  }
  SUBCASE("while a runtime exists") {
    mpg::runtime rt({.procs = 1});
    CHECK_THROWS_AS((void)mpg::spawn(square(1)), std::logic_error);
    CHECK_THROWS_AS(mpg::go(set_flag(nullptr)), std::logic_error);
    CHECK_THROWS_AS((void)mpg::yield(), std::logic_error);
    CHECK(rt.block_on(square(3)) == 9);  // still usable
  }
}

TEST_CASE("block_on inside a task throws std::logic_error") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(block_on_inside(&rt)) == "logic_error");
}

TEST_CASE("runtime::spawn from a foreign thread, then block_on of the handle") {
  mpg::runtime rt({.procs = 2});
  mpg::join_handle<int> h;
  std::thread t([&] { h = rt.spawn(fib(10), "foreign"); });
  t.join();
  REQUIRE(h.valid());
  CHECK(h.id() != 0);
  CHECK(rt.block_on(std::move(h)) == 55);
}

TEST_CASE("several runtimes coexist in one process") {
  mpg::runtime a({.procs = 1});
  mpg::runtime b({.procs = 2});
  CHECK(a.block_on(which_runtime()) == a.scheduler_for_internal_use());
  CHECK(b.block_on(which_runtime()) == b.scheduler_for_internal_use());
  CHECK(a.block_on(fib(10)) == 55);
  CHECK(b.block_on(fib(11)) == 89);
}

TEST_CASE("a task of one runtime joins a task spawned on another") {
  for (unsigned joiner_procs : {1u, 2u}) {
    CAPTURE(joiner_procs);
    mpg::runtime joiner({.procs = joiner_procs});
    // Declared last, so destroyed first: the worker's Ms ready the joiner's
    // G (ready() on a foreign runtime) and still touch the joiner's
    // scheduler just after; joining them before ~joiner keeps that safe.
    mpg::runtime worker({.procs = 3 - joiner_procs});
    CHECK(joiner.block_on(cross_runtime_join(&worker)) == 144);
    CHECK(joiner.block_on(cross_runtime_join(&worker)) == 144);
  }
}

TEST_CASE("fib(20) with a spawn per call gives 6765") {
  for (unsigned procs : {1u, 2u}) {
    CAPTURE(procs);
    mpg::runtime rt({.procs = procs});
    CHECK(rt.block_on(fib(20)) == 6765);
  }
}

TEST_CASE("stats().spawned counts every spawned task") {
  mpg::runtime rt({.procs = 2});
  const auto s0 = rt.stats().spawned;
  rt.block_on(spawn_n(0));
  const auto s1 = rt.stats().spawned;
  rt.block_on(spawn_n(50));
  const auto s2 = rt.stats().spawned;
  // Whatever block_on spawns for itself, it is the same both times.
  CHECK(s1 > s0);
  CHECK((s2 - s1) - (s1 - s0) == 50);
  auto h = rt.spawn(square(3));
  CHECK(rt.stats().spawned == s2 + 1);
  CHECK(rt.block_on(std::move(h)) == 9);
}

TEST_CASE("join_handle::done reports a finished task") {
  mpg::runtime rt({.procs = 1});
  done_probe r = rt.block_on(probe_done());
  CHECK_FALSE(r.before);
  CHECK(r.eventually);
  CHECK(r.value == 11);
  CHECK_FALSE(r.after_join);
  mpg::join_handle<int> empty;
  CHECK_FALSE(empty.done());
  CHECK(empty.id() == 0);
}

namespace {

std::atomic<int> g_other_ran{0};
mpg::task<int> seven() { co_return 7; }
mpg::task<void> mark_other() {
  g_other_ran.fetch_add(1);
  co_return;
}

struct reuse_result {
  bool child_done = false;
  int value = 0;
  int other_ran = 0;
};

// The child finishes (its G goes back to this P's pool), a new spawn reuses
// that G and sits in runnext, and the child is joined with the time slice's
// budget spent, so the join takes the await_suspend path.
mpg::task<reuse_result> join_finished_child_after_g_reuse() {
  reuse_result r;
  auto c = mpg::spawn(seven(), "finished-child");
  co_await mpg::yield();  // on one P the child (runnext) runs and finishes first
  r.child_done = c.done();
  auto d = mpg::spawn(mark_other(), "reuses-the-g");
  while (!mpg::detail::consume_budget_now()) {
  }
  r.value = co_await c;
  co_await d;
  r.other_ran = g_other_ran.load();
  co_return r;
}

}  // namespace

// Kept last in this file: a failure here crashes the process.
TEST_CASE("joining a finished child whose G was reused by a newer spawn returns its value") {
  mpg::runtime rt({.procs = 1});
  g_other_ran.store(0);
  reuse_result r = rt.block_on(join_finished_child_after_g_reuse());
  CHECK(r.child_done);
  CHECK(r.value == 7);
  CHECK(r.other_ran == 1);
}
