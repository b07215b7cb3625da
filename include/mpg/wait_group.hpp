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
// nothing, so it may lose afterwards). A task that returns from a wait may
// destroy the group at once, also while a select that waited on it too has
// not yet run again; so a woken select's clean-up comes back to the group
// only while it is sure to live, through a state word in the case's
// awaiter (sel_cleanup_; W1-W4 below) rather than under the select's relock
// (select.hpp, step 6: the case's sel_dequeue_woken).
//   W1. sel_enqueue sets the word to kArmed (published by the select's
//       unlock).
//   W2. A crossing to zero with select waiters queued, under the queue lock
//       and before its CAS on state_: holds each one, CAS kArmed -> kHeld.
//       One that fails is in kCleaning (its select was woken by another
//       case and is on its way to this lock, W4): the crossing gives back
//       the holds it took (kArmed again), unlocks, backs off as a waiter
//       for the lock does, and decides afresh under the lock, where it
//       finds the waiter gone once that clean-up has been through. It reads
//       the awaiter only under the lock while the waiter is queued: once
//       the clean-up has taken it off, its select may return and free the
//       awaiter at once. The group lives meanwhile: the counter has not
//       reached zero, so no wait has returned. A crossing whose CAS finds
//       the counter moved gives back the holds as well.
//   W3. With every select waiter held, the CAS takes the counter to zero
//       and the same section takes every waiter off, claiming each select:
//       a case that won is readied after the unlock, as a plain waiter; a
//       case that lost is dropped. Either way the word becomes kDropped,
//       for a lost case with a release store that is the crossing's last
//       touch of that waiter. (Its select is touched again only when
//       another of its waiters won in this round, as select(wg.wait(),
//       wg.wait()) has, and then only before the crossing readies it.)
//   W4. The clean-up of a case that lost, when its select resumes after
//       parking (sel_dequeue_woken, with no lock of the select held): kHeld
//       -> wait until it changes; kDropped -> nothing to do, and the group
//       is not touched; kArmed -> CAS to kCleaning, then take the waiter
//       off under the queue lock (it is still queued: only a crossing
//       that held it, or the group's destruction, takes a select waiter
//       off) and unlock, the clean-up's last touch of the group. A case
//       that won is not cleaned up (the select skips it).
// Why this is enough: a select's clean-up locks the group only from
// kCleaning, which it reaches only from kArmed, so no crossing held it; any
// crossing that comes after sees kCleaning under the lock and lets the
// clean-up take the waiter off before it can take the counter to zero (after
// that, a done() may end the round without the lock, and a destroyer waits
// in ~parking_queue for the clean-up's unlock). So while a clean-up may
// still lock the group, the round has not ended, no wait has returned, and
// nobody may destroy the group; once it has ended, every select case still
// queued then is kDropped, and its clean-up reads only its own awaiter. The
// crossing's wait in W2 is for a clean-up between its CAS and its unlock: a
// few instructions on a thread that was running (it backs off as a
// spinlock's waiter, spinning, then yielding, so that a clean-up whose
// thread the OS has descheduled gets the CPU).
// Memory ordering: W3's release store of kDropped pairs with W4's acquire
// loads (so the claim and the unlinking happen before the select frees
// its frame); the queue lock orders the clean-up's unlinking before the
// crossing's next look at the queue. The holds and their give-backs are
// relaxed: the lock orders everything a held select's clean-up goes on to
// read.
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

namespace detail {
struct wait_group_probe;
}  // namespace detail

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
  static bool hold_selects(detail::waitq& q) noexcept;
  static void give_back_holds(detail::waitq& q, const detail::waiter* upto) noexcept;
  static detail::waiter* take_round(detail::waitq& q) noexcept;
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
  friend struct detail::wait_group_probe;  // the tests' access to q_ and state_
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
    // W1. Relaxed: the select's unlock publishes it with the waiter.
    sel_cleanup_.store(kArmed, std::memory_order_relaxed);
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
  // W4: out of line (wait_group.cpp); the select calls it for a case that
  // lost, once it resumes from parking, with none of its locks held.
  void sel_dequeue_woken() noexcept;
  std::monostate sel_result() const noexcept { return {}; }

  friend class wait_group;  // the crossing's W2 and W3 (wait_group.cpp)
  friend struct detail::wait_group_probe;  // the tests' access to sel_cleanup_
  // sel_cleanup_'s values (W1-W4 above).
  static constexpr std::uint8_t kArmed = 0;
  static constexpr std::uint8_t kHeld = 1;
  static constexpr std::uint8_t kDropped = 2;
  static constexpr std::uint8_t kCleaning = 3;

  wait_group* wg_;
  std::source_location where_;
  bool zero_ = false;
  std::atomic<std::uint8_t> sel_cleanup_{kArmed};
};

inline wait_group::wait_awaiter wait_group::wait(std::source_location where) noexcept {
  return wait_awaiter(this, where);
}

}  // namespace mpg
