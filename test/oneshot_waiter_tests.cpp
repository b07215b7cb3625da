// test/oneshot_waiter_tests.cpp: oneshot<T> waiters whose receiver goes
// away (oneshot.hpp, R3 and R5). A receiver destroyed by a plain thread or
// by another task while tasks wait on it (a heap receiver awaited through a
// pointer, and an lvalue in a select) ends their waits with kAborted at
// once, whatever the sender does afterwards, and a sender dropped at once
// after it is no use after free (ASan). Several tasks awaiting one receiver
// all end (R4) when the move of the value throws for the first of them, and
// when the first is woken but killed at its runtime's shutdown before it
// runs (the next, on another runtime, is still woken).
#include <doctest/doctest.h>

#include "test_support.hpp"

#include <mpg/mpg.hpp>

#include <atomic>
#include <chrono>
#include <list>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace {

using namespace std::chrono_literals;

// parked_on_oneshot(): how many tasks of rt the dump shows parked in a
// oneshot receive.
int parked_on_oneshot(const mpg::runtime& rt) {
  std::ostringstream os;
  rt.dump(os);
  const std::string d = os.str();
  int n = 0;
  for (std::size_t at = d.find(": oneshot receive at "); at != std::string::npos;
       at = d.find(": oneshot receive at ", at + 1))
    ++n;
  return n;
}

// What a waiting task saw, published to the test's thread with `done`.
struct outcome {
  std::atomic<bool> done{false};
  absl::StatusCode code = absl::StatusCode::kUnknown;
  int value = -1;
};

void finish(outcome* out, const absl::StatusOr<int>& v) {
  out->code = v.status().code();
  if (v.ok()) out->value = *v;
  out->done.store(true, std::memory_order_release);  // publishes code and value
}

mpg::task<void> await_through(mpg::oneshot_receiver<int>* rx, outcome* out) {
  absl::StatusOr<int> v = co_await *rx;
  finish(out, v);
}

mpg::task<void> select_through(mpg::oneshot_receiver<int>* rx, outcome* out) {
  mpg::chan<int> never;
  auto r = co_await mpg::select(never.recv(), *rx);
  if (r.index() != 1) {
    finish(out, absl::InternalError("the channel case won"));
    co_return;
  }
  finish(out, std::get<1>(std::move(r)));
}

enum class after_gone { send, drop, drop_at_once };

mpg::task<void> delete_receiver(mpg::oneshot_receiver<int>* rx) {
  delete rx;
  co_return;
}

}  // namespace

TEST_CASE("a receiver destroyed while a task waits on it ends the wait with kAborted") {
  std::list<outcome> outs;  // outlives the runtimes, whatever happens to their tasks
  for (bool in_select : {false, true}) {
    for (bool by_task : {false, true}) {
      for (after_gone then : {after_gone::send, after_gone::drop, after_gone::drop_at_once}) {
        CAPTURE(in_select);
        CAPTURE(by_task);
        CAPTURE(static_cast<int>(then));
        auto [tx, fresh] = mpg::oneshot<int>();
        auto* rx = new mpg::oneshot_receiver<int>(std::move(fresh));
        outcome& out = outs.emplace_back();
        mpg::runtime rt({.procs = 2});
        if (in_select) {
          rt.go(select_through(rx, &out), "select waiter");
          REQUIRE(mpg_test::wait_until([&] { return mpg_test::dump_shows(rt, "select"); }));
        } else {
          rt.go(await_through(rx, &out), "waiter");
          REQUIRE(mpg_test::wait_until([&] { return parked_on_oneshot(rt) == 1; }));
        }
        if (by_task) {
          rt.go(delete_receiver(rx), "deleter");  // another task, while it waits
        } else {
          delete rx;  // a plain thread, while the task waits on it
        }
        if (then == after_gone::drop_at_once) {
          // The waiter may resume after the sender is gone: it must hold
          // the state itself (ASan reports an await reading a freed state).
          auto drop = std::move(tx);
        }
        // Bounded: a receiver that left its waiter queued would leave it
        // there until the sender goes, or for ever after a send.
        CHECK(mpg_test::wait_until([&] { return out.done.load(std::memory_order_acquire); },
                                   5s));
        if (then == after_gone::send) CHECK_FALSE(tx.send(1));
        if (then == after_gone::drop) {
          auto drop = std::move(tx);
        }
        if (out.done.load(std::memory_order_acquire)) {
          CHECK(out.code == absl::StatusCode::kAborted);
          CHECK(out.value == -1);
        }
      }
    }
  }
}

TEST_CASE("a receiver destroyed while several tasks wait on it wakes them all") {
  outcome a;
  outcome b;
  auto [tx, fresh] = mpg::oneshot<int>();
  mpg::runtime rt({.procs = 1});
  auto* rx = new mpg::oneshot_receiver<int>(std::move(fresh));
  rt.go(await_through(rx, &a), "waiter");
  rt.go(select_through(rx, &b), "select waiter");
  REQUIRE(mpg_test::wait_until([&] {
    return parked_on_oneshot(rt) == 1 && mpg_test::dump_shows(rt, "select");
  }));
  delete rx;
  CHECK(mpg_test::wait_until([&] {
    return a.done.load(std::memory_order_acquire) && b.done.load(std::memory_order_acquire);
  }, 5s));
  CHECK_FALSE(tx.send(3));
  if (a.done.load(std::memory_order_acquire)) CHECK(a.code == absl::StatusCode::kAborted);
  if (b.done.load(std::memory_order_acquire)) CHECK(b.code == absl::StatusCode::kAborted);
}

namespace {

// A value whose move throws once, on the move that makes the countdown
// reach zero (the test sets it), and never again.
struct throws_once {
  static inline std::atomic<int> countdown{0};
  int v = 0;
  explicit throws_once(int x) : v(x) {}
  throws_once(throws_once&& o) : v(o.v) {
    // Relaxed: the send and the takes are ordered by the oneshot's lock.
    if (countdown.fetch_sub(1, std::memory_order_relaxed) == 1)
      throw std::runtime_error("move refused");
  }
};

mpg::task<int> take_value(mpg::oneshot_receiver<throws_once>* rx, std::atomic<int>* ended) {
  struct count_end {
    std::atomic<int>* n;
    ~count_end() { n->fetch_add(1); }
  } end{ended};
  try {
    absl::StatusOr<throws_once> v = co_await *rx;
    if (!v.ok()) co_return v.status().code() == absl::StatusCode::kFailedPrecondition ? -1 : -2;
    co_return v->v;
  } catch (const std::runtime_error&) {
    co_return -3;  // the move of the value threw in this task's await
  }
}

}  // namespace

TEST_CASE("tasks awaiting one receiver all end when the move of the value throws") {
  auto [tx, rx] = mpg::oneshot<throws_once>();
  std::atomic<int> ended{0};
  mpg::runtime rt({.procs = 1});
  auto a = rt.spawn(take_value(&rx, &ended), "first");
  auto b = rt.spawn(take_value(&rx, &ended), "second");
  REQUIRE(mpg_test::wait_until([&] { return parked_on_oneshot(rt) == 2; }));
  // The send moves the value in (1), the first take moves it out (2): that
  // one throws.
  throws_once::countdown.store(2, std::memory_order_relaxed);
  CHECK(tx.send(throws_once(5)));
  // Bounded: a waiter left queued would wait for ever (the others' count
  // keeps block_on's deadlock check quiet).
  CHECK(mpg_test::wait_until([&] { return ended.load() == 2; }, 5s));
  if (ended.load() == 2) {
    const int ra = rt.block_on(std::move(a));
    const int rb = rt.block_on(std::move(b));
    // One saw the move throw; the value stayed for the other.
    CHECK(((ra == -3 && rb == 5) || (ra == 5 && rb == -3)));
  }
}

namespace {

// hold_sender(): keeps the sender in its frame (an unnamed parameter) and
// parks for ever.
mpg::task<void> hold_sender(mpg::oneshot_sender<int>) {
  mpg::chan<int> never;
  (void)co_await never.recv();
}

}  // namespace

TEST_CASE("a waiter woken but killed at shutdown before it runs passes the wake on") {
  outcome first;
  outcome second;
  auto [tx, rx] = mpg::oneshot<int>();
  mpg::runtime other({.procs = 1});
  {
    mpg::runtime rt({.procs = 1});
    rt.go(await_through(&rx, &first), "first");
    REQUIRE(mpg_test::wait_until([&] { return parked_on_oneshot(rt) == 1; }));
    other.go(await_through(&rx, &second), "second");
    REQUIRE(mpg_test::wait_until([&] { return parked_on_oneshot(other) == 1; }));
    // Newer than "first", so killed before it: dropping the sender readies
    // "first", which is killed in turn without running.
    rt.go(hold_sender(std::move(tx)), "holder");
    REQUIRE(mpg_test::wait_until([&] { return mpg_test::dump_shows(rt, "chan receive"); }));
  }
  CHECK_FALSE(first.done.load());
  CHECK(mpg_test::wait_until([&] { return second.done.load(std::memory_order_acquire); }, 5s));
  if (second.done.load(std::memory_order_acquire))
    CHECK(second.code == absl::StatusCode::kAborted);
}
