// mpg/semaphore.hpp: semaphore, a counting semaphore for tasks (the unit
// case of Go's x/sync/semaphore.Weighted).
//
//   mpg::semaphore sem(4);          // four permits
//   co_await sem.acquire();  ...  sem.release();
//   if (sem.try_acquire()) { ... sem.release(); }
//
// acquire() parks while no permit is free; waiters are served in FIFO
// order: release() hands its permit straight to the first waiter, and
// try_acquire() never takes a permit while anyone waits. Releasing beyond
// the initial count throws mpg::sync_misuse_error.
//
// Design. One atomic word, state_ = 2 * permits | kWaiters, and a
// detail::parking_queue of parked waiters (which holds the protocol and the
// rule that lets the semaphore be destroyed right after the last release).
//   acquire fast path: a CAS taking a permit when permits > 0.
//   release fast path: a CAS adding a permit when kWaiters is clear; the
//   CAS is the release's last touch of the semaphore.
//   Otherwise under the queue lock: an acquirer that finds no permit sets
//   kWaiters (CAS) and queues; a releaser that finds kWaiters pops the first
//   waiter and hands it the permit (the count does not change), clearing
//   kWaiters with the last one; one that finds the queue emptied meanwhile
//   adds its permit there, under the lock.
// Because the acquirer's "set kWaiters" and the releaser's "add a permit"
// are CASes on one word, one of them sees the other: no permit is added
// while a waiter is left parked, and no waiter parks while a permit is free.
//
// Shutdown: an acquirer killed while parked (~runtime destroys its frame)
// unlinks itself in its awaiter's destructor (parking_queue.hpp, P3),
// clearing kWaiters with the last one; a later release() then returns its
// permit as usual instead of handing it to freed memory. A semaphore
// destroyed with acquirers still queued detaches them. An acquirer handed a
// permit and killed before it ran releases that permit from its awaiter's
// destructor (the hand-off is recorded in the awaiter, parking_queue.hpp
// P4), unless the semaphore was destroyed earlier in the same kill. A
// permit that a killed task had acquired (and run with) is lost, as any
// permit never released.
//
// Invariants (with the queue lock held): kWaiters iff the queue is non-empty;
// kWaiters implies permits == 0; 0 <= permits <= initial count.
//
// Memory ordering: taking a permit is an acquire CAS and returning one a
// release CAS, so whatever a releaser did before release() happens-before
// the acquirer's use of that permit; a hand-off is ordered by the queue
// lock and ready() (release/acquire). kWaiters changes are relaxed: they are
// re-read under the queue lock. A waiter's given_ (its record of the
// hand-off, parking_queue.hpp P4) is written under the queue lock before
// ready() and read after its resume (ordered by ready()) or by its
// destructor on the killing thread (waitq.hpp, kQueued: the same argument);
// a killed waiter gives its permit back with release(), a release CAS.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <source_location>

#include "mpg/detail/sched/g.hpp"
#include "mpg/detail/sync/parking_queue.hpp"
#include "mpg/detail/sync/waitq.hpp"

namespace mpg {

class semaphore {
 public:
  class acquire_awaiter;

  // A semaphore with `permits` free permits, 0 to kMaxPermits (throws
  // sync_misuse_error otherwise).
  static constexpr std::int64_t kMaxPermits = (std::int64_t{1} << 62) - 1;
  explicit semaphore(std::int64_t permits);
  ~semaphore();
  semaphore(const semaphore&) = delete;
  semaphore& operator=(const semaphore&) = delete;

  // semaphore::acquire()
  //
  // `co_await sem.acquire()`: takes a permit, parking (FIFO) while none is
  // free. If it parks, it resumes on the P of the releaser that handed it
  // the permit.
  acquire_awaiter acquire(std::source_location where = std::source_location::current()) noexcept;

  // semaphore::try_acquire(): takes a permit if one is free and nobody
  // waits; never parks. Any thread may call it.
  bool try_acquire() noexcept {
    std::int64_t s = state_.load(std::memory_order_relaxed);
    while (s >= 2) {  // permits > 0 (then kWaiters is clear)
      // Acquire: pairs with the release CAS of release().
      if (state_.compare_exchange_weak(s, s - 2, std::memory_order_acquire,
                                       std::memory_order_relaxed))
        return true;
    }
    return false;
  }

  // semaphore::release(): returns a permit, or hands it to the first waiter.
  // Any thread may call it. Throws sync_misuse_error when more permits would
  // be free than the semaphore was made with, and on a semaphore of 0
  // permits (Go's semaphore panics on such a release).
  void release();

  // available(): free permits now (a snapshot).
  std::int64_t available() const noexcept { return state_.load(std::memory_order_relaxed) >> 1; }

 private:
  bool acquire_slow(detail::waiter* w, std::coroutine_handle<> h,
                    const std::source_location& where);
  void release_slow();
  void unqueue(detail::waiter* w) noexcept;
  void give_back() noexcept;
  static std::int64_t checked_permits(std::int64_t permits);

  static constexpr std::int64_t kWaiters = 1;

  std::atomic<std::int64_t> state_;
  const std::int64_t max_;
  detail::parking_queue<> q_;
};

class [[nodiscard]] semaphore::acquire_awaiter : private detail::waiter {
 public:
  using mpg_awaiter = detail::runtime_awaiter_tag;  // g.hpp
  acquire_awaiter(semaphore* s, std::source_location where) noexcept : s_(s), where_(where) {}
  acquire_awaiter(const acquire_awaiter&) = delete;
  acquire_awaiter& operator=(const acquire_awaiter&) = delete;
  // Destroyed while still queued, or handed a permit and not yet run: only
  // when its task is killed at runtime shutdown (detail/sync/waitq.hpp,
  // kQueued; the plain read of the bit is argued there, and holds for
  // given_, written before ready()). Unlink, or release the permit, so that
  // a later release() finds the queue and the state word sound and the
  // permit is not lost.
  ~acquire_awaiter() {
    if (queued()) [[unlikely]]
      s_->unqueue(this);
    else if (given_) [[unlikely]]
      s_->give_back();
  }

  // acquired_ is set afresh by each await: an awaiter awaited again
  // acquires again.
  bool await_ready() noexcept {
    acquired_ = s_->try_acquire();
    if (!acquired_) return false;
    return !detail::consume_budget_now();
  }
  bool await_suspend(std::coroutine_handle<> h) {
    if (acquired_) {  // acquired, but the budget ran out: yield holding it
      detail::requeue_current(h);
      return true;
    }
    return s_->acquire_slow(this, h, where_);
  }
  // Takes up a handed permit (parking_queue.hpp, P4): a plain write.
  void await_resume() noexcept { given_ = false; }

 private:
  friend class semaphore;
  semaphore* s_;
  std::source_location where_;
  bool acquired_ = false;
  bool given_ = false;  // release_slow() handed us a permit (before ready())
};

inline semaphore::acquire_awaiter semaphore::acquire(std::source_location where) noexcept {
  return acquire_awaiter(this, where);
}

}  // namespace mpg
