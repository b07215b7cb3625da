// mpg/timeout.hpp: timeout(), a task raced against a deadline (Tokio's
// time::timeout, Go's select with time.After).
//
//   absl::StatusOr<int> r = co_await mpg::timeout(2s, compute());
//   absl::Status s = co_await mpg::timeout(2s, flush());             // task<void>
//   absl::StatusOr<std::size_t> n = co_await mpg::timeout(1s,        // structured:
//       [&](mpg::context ctx) { return read_some(ctx, conn, buf); }); //  may borrow
//   co_await mpg::timeout(parent_ctx, 1s, fn);   // structured, ctx a child of parent_ctx
//
// The result: the task's outcome, or absl::StatusCode::kDeadlineExceeded
// when d passes first. Its type follows the task's result T:
//   T = void                  absl::Status (OK when the task finished)
//   T = absl::Status          absl::Status (the task's, or kDeadlineExceeded)
//   T = absl::StatusOr<U>     absl::StatusOr<U> (the task's, or kDeadlineExceeded)
//   any other T               absl::StatusOr<T>
// A kDeadlineExceeded of the task's own is not told apart from the timeout
// (as in Go, where both are context.DeadlineExceeded). An exception that
// escapes the task before the deadline is rethrown by the co_await; so is
// one after it in the structured form, which waits for the task.
//
// What happens to the task on timeout. A stackless task cannot be dropped
// mid-flight the way Tokio drops a future: it may be parked on I/O whose
// buffers the kernel still writes. So timeout() runs the task as a child G
// (spawn) and races its join against the deadline in a select, and then:
//   - timeout(d, task): the task is detached and runs to completion on its
//     own; its result, value or exception, is discarded (never reported:
//     losing it is what the caller asked for). The task owns its frame, so
//     nothing leaks, but it must not borrow from the caller (take its
//     arguments by value): the caller's frame may be gone when it runs on.
//   - timeout(d, fn), fn(mpg::context) -> task<T>: structured. fn gets a
//     context cancelled at the deadline (with_timeout); on timeout
//     timeout() awaits the task before returning kDeadlineExceeded (or
//     rethrowing the task's exception), so nothing outlives the call and
//     the task may borrow. The task should watch ctx.done() (or give its
//     I/O the deadline ctx.deadline()) to stop promptly; timeout() waits
//     for it however long it runs on. timeout(parent, d, fn) makes ctx a
//     child of parent: when parent ends first, the call waits for the task
//     in the same way and returns parent's error (kCancelled, say).
// Which one came first: timeout(d, task) takes what its select sees first,
// so a task that completes at the deadline gives either outcome, never
// both. The structured form goes by whether ctx had ended when the task
// finished: a task that stops because it saw ctx end gives ctx's error.
//
// Rejected: a timer that destroys the task's frame (Tokio's drop): unsound
// for frames parked in I/O. Cancelling through the frame's awaiters: no
// general protocol exists for that; a context is the cancellation protocol
// the API already has.
#pragma once

#include <absl/status/status.h>
#include <absl/status/statusor.h>

#include <chrono>
#include <exception>
#include <type_traits>
#include <utility>
#include <variant>

#include "mpg/context.hpp"
#include "mpg/select.hpp"
#include "mpg/spawn.hpp"
#include "mpg/task.hpp"
#include "mpg/time.hpp"

namespace mpg {

namespace detail {

inline absl::Status timeout_status() {
  return absl::DeadlineExceededError("mpg::timeout: deadline exceeded");
}

template <class T>
struct timeout_traits {
  using result = absl::StatusOr<T>;
};
template <>
struct timeout_traits<void> {
  using result = absl::Status;
};
template <>
struct timeout_traits<absl::Status> {
  using result = absl::Status;
};
template <class U>
struct timeout_traits<absl::StatusOr<U>> {
  using result = absl::StatusOr<U>;
};

// The task's outcome, caught, so that a detached task never reports a lost
// exception: its value (monostate for void) or its exception.
template <class T>
using timeout_stored_t = std::conditional_t<std::is_void_v<T>, std::monostate, T>;
template <class T>
using timeout_outcome = std::variant<timeout_stored_t<T>, std::exception_ptr>;

template <class T>
task<timeout_outcome<T>> timeout_guard(task<T> t) {
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(t);
      co_return timeout_outcome<T>(std::in_place_index<0>);
    } else {
      T v = co_await std::move(t);
      co_return timeout_outcome<T>(std::in_place_index<0>, std::move(v));
    }
  } catch (...) {
    co_return timeout_outcome<T>(std::in_place_index<1>, std::current_exception());
  }
}

// timeout_guard_in(): timeout_guard for the structured form, which also
// records ctx's error when the task finished (OK if ctx had not ended):
// then the deadline or the parent came first, whichever case the select saw
// first (when both are ready by the time it looks, it picks one at random),
// and the error says which (a parent ending later does not change it). The
// cancel sets ctx's state before it closes ctx.done(), so a task that saw
// done closed finds ctx ended here.
template <class T>
struct timeout_finish {
  timeout_outcome<T> outcome;
  absl::Status ctx_err;
};
template <class T>
task<timeout_finish<T>> timeout_guard_in(task<T> t, context ctx) {
  // Named, not a temporary of the co_await's full-expression (g++ 12 may
  // destroy such a temporary twice).
  task<timeout_outcome<T>> guard = timeout_guard(std::move(t));
  timeout_outcome<T> outcome = co_await std::move(guard);
  co_return timeout_finish<T>{std::move(outcome), ctx.err()};
}

template <class T>
typename timeout_traits<T>::result timeout_unwrap(timeout_outcome<T>&& o) {
  if (o.index() == 1) std::rethrow_exception(std::get<1>(o));
  if constexpr (std::is_void_v<T>)
    return absl::OkStatus();
  else
    return typename timeout_traits<T>::result(std::move(std::get<0>(o)));
}

template <class T>
task<typename timeout_traits<T>::result> timeout_detached(steady_time deadline, task<T> t) {
  join_handle<timeout_outcome<T>> h = spawn(timeout_guard(std::move(t)), "timeout");
  chan<steady_time> timer = after_until(deadline);
  auto r = co_await select(h, timer.recv());
  if (r.index() == 0) co_return timeout_unwrap<T>(std::move(std::get<0>(r)));
  h.detach();  // runs on; its outcome is dropped with its frame
  co_return timeout_status();
}

// timeout_settle(): the structured form's result once the task finished.
// If ctx had not ended then, the task's outcome; else the deadline or the
// parent came first: the task's value is dropped, an exception is not, and
// ctx's error tells which one ended it (the parent, if it ended with that
// error; a parent cancelled after the deadline is not the cause). Either
// way ctx is cancelled (which stops its deadline timer).
template <class T>
typename timeout_traits<T>::result timeout_settle(const context& parent, timeout_finish<T>&& f,
                                                  const cancel_func& cancel) {
  cancel();
  if (f.ctx_err.ok()) return timeout_unwrap<T>(std::move(f.outcome));
  if (f.outcome.index() == 1) std::rethrow_exception(std::get<1>(f.outcome));
  if (parent.cancelled()) {
    absl::Status why = parent.err();
    if (why.code() == f.ctx_err.code()) return why;
  }
  return timeout_status();
}

template <class T, class Fn>
task<typename timeout_traits<T>::result> timeout_structured(context parent, steady_time deadline,
                                                            Fn fn) {
  std::pair<context, cancel_func> cc = with_deadline(parent, deadline);
  join_handle<timeout_finish<T>> h;
  try {
    h = spawn(timeout_guard_in<T>(fn(cc.first), cc.first), "timeout");
  } catch (...) {
    cc.second();  // fn (or the spawn) threw: stop the deadline's timer now
    throw;
  }
  chan<std::monostate> done = cc.first.done();
  auto r = co_await select(h, done.recv());
  if (r.index() == 0) co_return timeout_settle<T>(parent, std::move(std::get<0>(r)), cc.second);
  // Ended at the deadline or with the parent: wait for the task to stop.
  timeout_finish<T> late = co_await h;
  co_return timeout_settle<T>(parent, std::move(late), cc.second);
}

template <class F>
using timeout_fn_task_t = std::invoke_result_t<F&, context>;
template <class X>
struct task_value;
template <class T>
struct task_value<task<T>> {
  using type = T;
};

}  // namespace detail

// timeout_result_t<T>: what timeout() gives for a task<T> (see above).
template <class T>
using timeout_result_t = typename detail::timeout_traits<T>::result;

// timeout(d, task)
//
// `co_await mpg::timeout(d, t)`: t's outcome, or kDeadlineExceeded once d
// has passed. t runs as a new G; on timeout it is detached and runs on (it
// must not borrow from the caller). Inside a task only (it spawns).
template <class T, class Rep, class Period>
task<timeout_result_t<T>> timeout(std::chrono::duration<Rep, Period> d, task<T> t) {
  return detail::timeout_detached<T>(detail::deadline_after(d), std::move(t));
}

// timeout(d, fn)
//
// `co_await mpg::timeout(d, [&](mpg::context ctx) { return work(ctx); })`:
// fn(ctx) must return a task<T>; ctx is cancelled with kDeadlineExceeded at
// the deadline. On timeout, waits for the task to finish before returning
// kDeadlineExceeded: the task may borrow from the caller.
template <class Rep, class Period, class Fn>
  requires std::is_invocable_v<Fn&, context>
task<timeout_result_t<typename detail::task_value<detail::timeout_fn_task_t<Fn>>::type>> timeout(
    std::chrono::duration<Rep, Period> d, Fn fn) {
  using T = typename detail::task_value<detail::timeout_fn_task_t<Fn>>::type;
  return detail::timeout_structured<T>(background(), detail::deadline_after(d), std::move(fn));
}

// timeout(parent, d, fn)
//
// The same with ctx a child of parent: it ends at the deadline or with
// parent, whichever comes first; timeout() then waits for the task and
// returns kDeadlineExceeded or parent's error.
template <class Rep, class Period, class Fn>
  requires std::is_invocable_v<Fn&, context>
task<timeout_result_t<typename detail::task_value<detail::timeout_fn_task_t<Fn>>::type>> timeout(
    const context& parent, std::chrono::duration<Rep, Period> d, Fn fn) {
  using T = typename detail::task_value<detail::timeout_fn_task_t<Fn>>::type;
  return detail::timeout_structured<T>(parent, detail::deadline_after(d), std::move(fn));
}

}  // namespace mpg
