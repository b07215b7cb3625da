// test/timeout_tests.cpp: mpg::timeout. Both outcomes for task<T>,
// task<void>, task<absl::Status> and task<absl::StatusOr<U>>; an exception
// before the deadline is rethrown, one after it (detached task) is dropped;
// the detached form leaves the task running to completion; the structured
// (context) form cancels the task's context at the deadline (or with a
// parent context) and has waited for the task when it returns, rethrowing
// an exception it ended with.
#include <doctest/doctest.h>

#include "test_support.hpp"

#include <mpg/mpg.hpp>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <optional>
#include <string>

using namespace std::chrono_literals;

namespace {

static_assert(std::is_same_v<mpg::timeout_result_t<int>, absl::StatusOr<int>>);
static_assert(std::is_same_v<mpg::timeout_result_t<void>, absl::Status>);
static_assert(std::is_same_v<mpg::timeout_result_t<absl::Status>, absl::Status>);
static_assert(std::is_same_v<mpg::timeout_result_t<absl::StatusOr<int>>, absl::StatusOr<int>>);

mpg::task<int> quick(int v) { co_return v; }
mpg::task<int> gated(mpg::chan<int> gate, int v) {
  (void)co_await gate.recv();
  co_return v;
}
mpg::task<void> gated_void(mpg::chan<int> gate) { (void)co_await gate.recv(); }
mpg::task<absl::Status> gated_status(mpg::chan<int> gate, absl::Status s) {
  (void)co_await gate.recv();
  co_return s;
}
mpg::task<absl::StatusOr<int>> statusor_now(int v) { co_return v; }
mpg::task<int> throws_now() {
  co_await mpg::yield();
  throw std::runtime_error("early");
}

mpg::task<std::string> both_outcomes() {
  // The task wins.
  absl::StatusOr<int> a = co_await mpg::timeout(10s, quick(3));
  if (!a.ok() || *a != 3) co_return "value not returned";
  absl::StatusOr<int> b = co_await mpg::timeout(10s, statusor_now(4));
  if (!b.ok() || *b != 4) co_return "StatusOr not flattened";
  // The deadline wins: the task waits on a gate nobody opens yet.
  mpg::chan<int> gate;
  absl::StatusOr<int> c = co_await mpg::timeout(20ms, gated(gate, 5));
  if (c.status().code() != absl::StatusCode::kDeadlineExceeded) co_return "no kDeadlineExceeded";
  absl::Status d = co_await mpg::timeout(1ms, gated_void(gate));
  if (d.code() != absl::StatusCode::kDeadlineExceeded) co_return "void: no kDeadlineExceeded";
  absl::Status e = co_await mpg::timeout(1ms, gated_status(gate, absl::OkStatus()));
  if (e.code() != absl::StatusCode::kDeadlineExceeded) co_return "Status: no kDeadlineExceeded";
  // The detached tasks run on: each takes one value from the gate and
  // finishes (a send completes only when a receiver takes it).
  for (int i = 0; i < 3; ++i) co_await gate.send(i);
  // task<void> and task<Status> that win.
  mpg::chan<int> g2(2);
  co_await g2.send(0);
  co_await g2.send(0);
  absl::Status f = co_await mpg::timeout(10s, gated_void(g2));
  if (!f.ok()) co_return "void task that finished: not OK";
  absl::Status s = co_await mpg::timeout(10s, gated_status(g2, absl::NotFoundError("x")));
  if (s.code() != absl::StatusCode::kNotFound) co_return "the task's own Status not passed through";
  co_return "ok";
}

TEST_CASE("timeout: the task's result when it finishes first, kDeadlineExceeded otherwise") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(both_outcomes()) == "ok");
}

mpg::task<void> signal_then_throw(mpg::chan<int> gate, mpg::chan<int> finished) {
  (void)co_await gate.recv();
  co_await finished.send(1);
  throw std::runtime_error("late");
}

mpg::task<std::string> exceptions() {
  try {
    (void)co_await mpg::timeout(10s, throws_now());
    co_return "exception before the deadline not rethrown";
  } catch (const std::runtime_error&) {
  }
  // After the deadline the detached task throws: dropped, not reported
  // (a report would abort the process).
  mpg::chan<int> gate, finished(1);
  absl::Status st = co_await mpg::timeout(1ms, signal_then_throw(gate, finished));
  if (st.code() != absl::StatusCode::kDeadlineExceeded) co_return "no timeout";
  co_await gate.send(0);
  if (co_await finished.recv() != 1) co_return "the detached task did not run on";
  // On one P, the sender ran on to its end (throw, caught, finished)
  // before the receive resumed us: a report would have aborted by now.
  co_return "ok";
}

TEST_CASE("timeout: an exception before the deadline is rethrown; one after it is dropped") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(exceptions()) == "ok");
}

// The structured form: the task borrows `progress` from the caller's frame
// and watches its context.
mpg::task<int> watcher(mpg::context ctx, std::atomic<int>& progress) {
  mpg::chan<int> never;
  auto r = co_await mpg::select(never.recv(), ctx.done().recv());
  progress.store(
      r.index() == 1 && ctx.err().code() == absl::StatusCode::kDeadlineExceeded ? 1 : -1);
  co_return 7;
}

mpg::task<std::string> structured() {
  std::atomic<int> progress{0};
  absl::StatusOr<int> r =
      co_await mpg::timeout(20ms, [&](mpg::context ctx) { return watcher(ctx, progress); });
  if (r.status().code() != absl::StatusCode::kDeadlineExceeded) co_return "no kDeadlineExceeded";
  // timeout() waited for the task, which saw its context cancelled by the
  // deadline.
  if (progress.load() != 1) co_return "the task had not finished, or its context was not cancelled";
  // Finishing first: its value, and the context of a finished call is
  // cancelled (the deadline timer stopped).
  mpg::context seen;
  absl::StatusOr<int> v = co_await mpg::timeout(10s, [&](mpg::context ctx) -> mpg::task<int> {
    seen = ctx;
    return quick(8);
  });
  if (!v.ok() || *v != 8) co_return "value";
  if (!seen.cancelled()) co_return "context left live";
  co_return "ok";
}

TEST_CASE("timeout with a context: cancelled at the deadline and awaited before returning") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(structured()) == "ok");
}

// Throws once its context is cancelled (by the deadline): after it.
mpg::task<int> throws_when_cancelled(mpg::context ctx) {
  (void)co_await ctx.done().recv();
  throw std::runtime_error("late");
}

mpg::task<std::string> structured_late_exception() {
  try {
    absl::StatusOr<int> r = co_await mpg::timeout(
        10ms, [](mpg::context ctx) { return throws_when_cancelled(ctx); });
    co_return "exception dropped: " + r.status().ToString();
  } catch (const std::runtime_error& e) {
    co_return e.what();
  }
}

TEST_CASE("timeout with a context: an exception after the deadline is rethrown, not dropped") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(structured_late_exception()) == "late");
}

mpg::task<std::string> structured_parent_cancel() {
  auto [parent, cancel] = mpg::with_cancel(mpg::background());
  std::atomic<int> progress{0};
  mpg::go([](mpg::cancel_func cancel) -> mpg::task<void> {
    co_await mpg_test::yield_some(10);
    cancel();
  }(cancel));
  absl::StatusOr<int> r = co_await mpg::timeout(
      parent, 10s, [&](mpg::context ctx) -> mpg::task<int> {
        return [](mpg::context ctx, std::atomic<int>& progress) -> mpg::task<int> {
          (void)co_await ctx.done().recv();
          progress.store(ctx.err().code() == absl::StatusCode::kCancelled ? 1 : -1);
          co_return 1;
        }(ctx, progress);
      });
  if (r.status().code() != absl::StatusCode::kCancelled)
    co_return "not kCancelled: " + r.status().ToString();
  if (progress.load() != 1) co_return "the task had not seen its parent's cancel, or not finished";
  co_return "ok";
}

TEST_CASE("timeout with a parent context: the parent's cancel reaches the task and is returned") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(structured_parent_cancel()) == "ok");
}

}  // namespace

namespace {
// The deadline ends ctx first; the parent is cancelled only afterwards,
// while timeout() waits for the task to stop (here the task cancels it
// itself, once it has seen ctx end with kDeadlineExceeded, so the order
// is fixed). The deadline came first: the call must say kDeadlineExceeded,
// not the parent's later kCancelled.
mpg::task<std::string> structured_deadline_then_parent_cancel() {
  auto [parent, cancel] = mpg::with_cancel(mpg::background());
  absl::StatusCode seen = absl::StatusCode::kOk;
  absl::StatusOr<int> r = co_await mpg::timeout(
      parent, 1ms, [&](mpg::context ctx) -> mpg::task<int> {
        return [](mpg::context ctx, mpg::cancel_func cancel,
                  absl::StatusCode& seen) -> mpg::task<int> {
          (void)co_await ctx.done().recv();
          seen = ctx.err().code();
          cancel();  // the parent ends after the deadline
          co_return 1;
        }(ctx, cancel, seen);
      });
  if (seen != absl::StatusCode::kDeadlineExceeded) co_return "ctx did not end by its deadline";
  if (r.status().code() != absl::StatusCode::kDeadlineExceeded)
    co_return "deadline came first, but the call says: " + r.status().ToString();
  co_return "ok";
}

TEST_CASE("timeout with a parent context: a parent cancelled after the deadline is not the cause") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(structured_deadline_then_parent_cancel()) == "ok");
}
}  // namespace

// timeout(d, fn) whose fn throws before giving its task: the context made
// for it is cancelled all the same (its deadline timer stopped), not left
// armed until the deadline (where it would also hide a deadlock from
// block_on's check).
TEST_CASE("timeout(d, fn) whose fn throws cancels the context it made") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on([]() -> mpg::task<std::string> {
    std::optional<mpg::context> seen;
    bool threw = false;
    try {
      auto fn = [&seen](mpg::context ctx) -> mpg::task<int> {
        seen = ctx;
        throw std::runtime_error("no task");
      };
      (void)co_await mpg::timeout(std::chrono::hours(1), fn);
    } catch (const std::runtime_error&) {
      threw = true;
    }
    if (!threw) co_return "fn's exception was lost";
    if (!seen) co_return "fn was not called";
    if (!seen->cancelled()) co_return "the context is still live";
    co_return "ok";
  }()) == "ok");
}
