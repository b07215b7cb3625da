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
// Design (Go's sync.WaitGroup). One 64-bit atomic word, state_: the counter
// in the high 32 bits (signed), the number of queued waiters in the low 32;
// parked waiters wait in a detail::parking_queue (its protocol, and why a
// release never touches the group after a waiter can see it, are there).
//   wait(): a zero counter -> return (one acquire load). Otherwise, under the
//     queue lock: a zero counter -> return; else the waiter count goes up
//     by one (CAS) and the task parks.
//   add(): one CAS on state_, unless it takes the counter to zero while the
//     waiter count is not zero. That crossing is made under the queue lock:
//     the CAS sets the whole word to zero and the same section takes every
//     waiter off, so the decision to wake and the waiters it wakes are one
//     step, and a crossing with no waiter wakes nobody and takes no lock.
//     A done() that reaches zero can therefore never wake a waiter of the
//     next round (one that queued after the crossing finds the count it
//     raised in the word, and queues for that round's zero).
//
// Rejected: a counter alone, with the queue of waiters consulted after the
// CAS that reaches zero. Between the two, a waiter of the next round can
// add, queue and then be woken by the old round's zero while its count is
// not zero, and the waiter of this round, seeing zero, may already have
// destroyed the group.
//
// Select: `wg.wait()` is a select case (select.hpp) whose result is
// std::monostate. Its lock is the queue lock; its waiter queues as a plain
// waiter does and counts in the waiter count, so the crossing to zero wakes
// it under the same rules. Poll: the counter is zero. Enqueue (under the
// lock): the CAS of wait_slow; a zero counter makes the case ready (it takes
// nothing, so it may lose afterwards). The waker takes waiters with
// dequeue_all, which claims each queued select and drops those that lost;
// a case that loses is taken off by its select's clean-up, which lowers the
// waiter count as unqueue() does. A select that the group's case won, and
// that has no other case on the group, does not touch the group again
// (select.hpp, step 6): a task that returns from a wait the same done()
// ended may destroy the group before that select runs. A select that
// another case won, or with a second case on the group, relocks the group
// to take its other waiter off: while such a select has not returned, the
// group must live (a done() that ends the round at the same instant drops
// the select's waiter, and the select still comes back to the lock).
//
// Shutdown: a waiter killed while parked (~runtime destroys its frame)
// unlinks itself and lowers the waiter count in its awaiter's destructor;
// a group destroyed with waiters still queued detaches them
// (parking_queue.hpp, "Shutdown").
//
// Invariants (under the queue lock): the waiter count equals the number of
// queued waiters; a zero counter means no waiter is queued.
//
// Memory ordering: every add() is an acq_rel RMW on state_. Release: a
// task's work before done() happens-before the zero that wakes the waiters.
// Acquire: the RMW that reaches zero has acquired every earlier add's
// release (the RMWs form one release sequence), and passes it on to the
// parked waiters through the queue lock and ready(). wait()'s checks of the
// counter are acquire loads (the CAS that registers a waiter fails to a
// fresh value with acquire), pairing with those releases when they find
// zero without parking.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <source_location>
#include <variant>

#include "mpg/detail/sched/g.hpp"
#include "mpg/detail/sync/parking_queue.hpp"
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
  // negative or past 2^31 - 1. Any thread may call it.
  void add(std::int64_t delta = 1);

  // wait_group::done(): add(-1). The usual case is inline: the counter
  // stays above zero, or reaches it with no waiter queued, in one CAS
  // (acq_rel, as add()'s: see "Memory ordering" above); a crossing to zero
  // with waiters, a counter at zero (which throws) and a lost CAS go to
  // add().
  void done() {
    std::uint64_t s = state_.load(std::memory_order_relaxed);
    const std::int64_t c = counter(s);
    if ((c > 1 || (c == 1 && waiters(s) == 0)) &&
        state_.compare_exchange_strong(s, s - (std::uint64_t{1} << kCounterShift),
                                       std::memory_order_acq_rel, std::memory_order_relaxed))
      return;
    add(-1);
  }

  // wait_group::wait()
  //
  // `co_await wg.wait()`: parks until the counter is zero. Resumes on the P
  // of the task whose done() reached zero.
  wait_awaiter wait(std::source_location where = std::source_location::current()) noexcept;

  // count(): the counter now (a snapshot, for tests and diagnostics).
  std::int64_t count() const noexcept { return counter(state_.load(std::memory_order_relaxed)); }

 private:
  bool wait_slow(detail::waiter* w, std::coroutine_handle<> h, const std::source_location& where);
  void reach_zero(std::int64_t delta);
  void unqueue(detail::waiter* w) noexcept;

  static constexpr int kCounterShift = 32;
  static constexpr std::uint64_t kWaitersMask = 0xffff'ffffu;
  static std::int64_t counter(std::uint64_t s) noexcept {
    return static_cast<std::int32_t>(static_cast<std::uint32_t>(s >> kCounterShift));
  }
  static std::uint64_t waiters(std::uint64_t s) noexcept { return s & kWaitersMask; }
  static std::uint64_t pack(std::int64_t counter, std::uint64_t waiters) noexcept {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(counter)) << kCounterShift) |
           waiters;
  }

  std::atomic<std::uint64_t> state_{0};
  detail::parking_queue<> q_;
};

namespace detail {
template <class... Cases>
class select_awaiter;
}  // namespace detail

class [[nodiscard]] wait_group::wait_awaiter : private detail::waiter {
 public:
  using mpg_awaiter = detail::runtime_awaiter_tag;  // g.hpp
  using result_type = std::monostate;               // as a select case
  wait_awaiter(wait_group* wg, std::source_location where) noexcept : wg_(wg), where_(where) {}
  // Movable before it is awaited (select takes its cases by value).
  wait_awaiter(wait_awaiter&& o) noexcept : wg_(o.wg_), where_(o.where_), zero_(o.zero_) {}
  wait_awaiter& operator=(const wait_awaiter&) = delete;
  // Destroyed while still queued: only when its task is killed at runtime
  // shutdown (detail/sync/waitq.hpp, kQueued; the plain read of the bit is
  // argued there). Unlink, so that the add() that reaches zero later does
  // not walk freed memory (parking_queue.hpp, P3).
  ~wait_awaiter() {
    if (queued()) [[unlikely]]
      wg_->unqueue(this);
  }

  bool await_ready() noexcept {
    // Acquire: see "Memory ordering" above.
    // zero_ is set either way: an awaiter awaited again must not keep the
    // answer of its last await.
    zero_ = counter(wg_->state_.load(std::memory_order_acquire)) == 0;
    if (!zero_) return false;
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
  template <class... Cases>
  friend class detail::select_awaiter;

  // Select hooks (select.hpp): sel_poll, sel_enqueue and sel_dequeue run
  // with the queue lock held by select.
  detail::spinlock* sel_lock() noexcept { return wg_->q_.select_lock(); }
  detail::waiter* sel_node() noexcept { return this; }
  std::source_location sel_where() const noexcept { return where_; }
  bool sel_poll(detail::g*&) noexcept {
    // Acquire: as await_ready.
    return counter(wg_->state_.load(std::memory_order_acquire)) == 0;
  }
  bool sel_enqueue(detail::select_state* st) noexcept {
    std::uint64_t s = wg_->state_.load(std::memory_order_acquire);
    for (;;) {
      if (counter(s) == 0) return false;  // reached zero since the poll
      // Orders as in wait_slow (wait_group.cpp).
      if (wg_->state_.compare_exchange_weak(s, s + 1, std::memory_order_acquire,
                                            std::memory_order_acquire))
        break;
    }
    set_select(st);
    wg_->q_.select_push(this);
    return true;
  }
  void sel_dequeue() noexcept {
    // Still queued: one waiter fewer (relaxed, as unqueue()).
    if (wg_->q_.select_remove(this)) wg_->state_.fetch_sub(1, std::memory_order_relaxed);
  }
  std::monostate sel_result() const noexcept { return {}; }

  wait_group* wg_;
  std::source_location where_;
  bool zero_ = false;
};

inline wait_group::wait_awaiter wait_group::wait(std::source_location where) noexcept {
  return wait_awaiter(this, where);
}

}  // namespace mpg
