// mpg/wait_group.hpp: wait_group, Go's sync.WaitGroup for tasks.
//
//   mpg::wait_group wg;
//   wg.add(3);                     // before starting the three
//   ... each of them: wg.done();
//   co_await wg.wait();            // parks until the counter is zero
//
// The counter going below zero throws mpg::sync_misuse_error (and leaves the
// counter unchanged). As in Go, an add() with a positive delta that starts a
// new round (counter at zero) must happen before the wait()s of that round;
// a wait_group may be reused once the previous round's waiters are released.
//
// Design. An atomic counter for the fast paths (add/done are one CAS; wait()
// on a zero counter is one load), and a spinlock-guarded FIFO of parked
// waiters. A waiter re-checks the counter under the lock before parking, and
// whoever takes the counter to zero takes the lock afterwards to wake every
// waiter, so no wake-up is lost: either the waiter's check (under the lock)
// comes after the decrement and sees zero, or it comes before, and the
// waiter is queued before the waker's lock acquisition finds it.
//
// Shutdown: a waiter killed while parked (~runtime destroys its frame)
// unlinks itself in its awaiter's destructor, under qlock_ (the kQueued bit
// of detail/waitq.hpp), so the add() that reaches zero later, on another
// runtime or after this one is gone, wakes only live waiters.
//
// Rejected: packing counter and waiter count into one 64-bit word and
// waking through a semaphore (Go's layout): with an intrusive queue the
// waiter count is redundant.
//
// Memory ordering: add() is an acq_rel CAS. Release: a task's work before
// done() happens-before the zero that wakes the waiters. Acquire: the task
// that reaches zero has acquired every earlier add's release (the CASes form
// one release sequence), and passes it on to the waiters through qlock_ and
// ready(). wait()'s check of the counter is an acquire load, pairing with
// those releases when it finds zero without parking.
#pragma once

#include <absl/base/thread_annotations.h>

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <source_location>

#include "mpg/detail/sched/g.hpp"
#include "mpg/detail/sync/spinlock.hpp"
#include "mpg/detail/sync/waitq.hpp"

namespace mpg {

class wait_group {
 public:
  class wait_awaiter;

  wait_group() noexcept = default;
  wait_group(const wait_group&) = delete;
  wait_group& operator=(const wait_group&) = delete;

  // wait_group::add()
  //
  // Adds delta (may be negative) to the counter. Reaching zero readies every
  // waiting task. Throws mpg::sync_misuse_error if the counter would go
  // negative.
  void add(std::int64_t delta = 1);

  // wait_group::done(): add(-1).
  void done() { add(-1); }

  // wait_group::wait()
  //
  // `co_await wg.wait()`: parks until the counter is zero. Resumes on the P
  // of the task whose done() reached zero.
  wait_awaiter wait(std::source_location where = std::source_location::current()) noexcept;

  // count(): the counter now (a snapshot, for tests and diagnostics).
  std::int64_t count() const noexcept { return count_.load(std::memory_order_relaxed); }

 private:
  bool wait_slow(detail::waiter* w, std::coroutine_handle<> h, const std::source_location& where);
  void unqueue(detail::waiter* w) noexcept;

  std::atomic<std::int64_t> count_{0};
  detail::spinlock qlock_;
  detail::waitq waiters_ ABSL_GUARDED_BY(qlock_);
};

class [[nodiscard]] wait_group::wait_awaiter : private detail::waiter {
 public:
  wait_awaiter(wait_group* wg, std::source_location where) noexcept : wg_(wg), where_(where) {}
  wait_awaiter(const wait_awaiter&) = delete;
  wait_awaiter& operator=(const wait_awaiter&) = delete;
  // Destroyed while still queued: only when its task is killed at runtime
  // shutdown (detail/waitq.hpp, kQueued; the plain read of the bit is
  // argued there). Unlink, so that the add() that reaches zero later does
  // not walk freed memory.
  ~wait_awaiter() {
    if (queued()) [[unlikely]]
      wg_->unqueue(this);
  }

  bool await_ready() noexcept {
    // Acquire: see "Memory ordering" above.
    if (wg_->count_.load(std::memory_order_acquire) != 0) return false;
    zero_ = true;
    return !detail::consume_budget_now();
  }
  bool await_suspend(std::coroutine_handle<> h) {
    if (zero_) {  // done, but the budget ran out
      detail::requeue_current(h);
      return true;
    }
    return wg_->wait_slow(this, h, where_);
  }
  void await_resume() const noexcept {}

 private:
  wait_group* wg_;
  std::source_location where_;
  bool zero_ = false;
};

inline wait_group::wait_awaiter wait_group::wait(std::source_location where) noexcept {
  return wait_awaiter(this, where);
}

}  // namespace mpg
