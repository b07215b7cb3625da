// mpg/mutex.hpp: mutex, a lock for tasks (Go's sync.Mutex).
//
//   co_await m.lock();  ...  m.unlock();
//   { auto guard = co_await m.scoped_lock(); ... }   // unlocks at scope end
//   if (m.try_lock()) { ... m.unlock(); }
//
// A task that finds the mutex locked parks; its P runs other tasks. No OS
// thread ever blocks on it. Unlocking a mutex that is not locked throws
// mpg::sync_misuse_error. As in Go, a mutex is not tied to a task: one task
// may lock it and another unlock it.
//
// Design (Go's sync/mutex.go; Go's semaphore is mpg's detail::parking_queue,
// which also holds the protocol and the destruction rule). One atomic word,
// state_:
//   kLocked   the mutex is held.
//   kWoken    an unlocker has readied a waiter that has not yet retried;
//             other unlockers need not wake anyone.
//   kStarving starvation mode (below).
//   kWaiters  the queue of parked waiters is non-empty (kept exact under
//             the queue lock: set with the first push, cleared with the
//             last pop).
// lock() fast path: one CAS that sets kLocked when neither kLocked nor
// kStarving is set. unlock() fast path: one CAS that clears kLocked, its
// last touch of the mutex. With waiters and none on its way (kWoken clear),
// the releasing CAS also sets kWoken: the unlocker claims the wake-up, so
// no other unlocker can ready the first waiter before it does, and that
// waiter, which has not returned from lock(), keeps the mutex in use until
// the unlocker, under the queue lock, has either popped and readied it, or
// handed the claim back because a locker took the mutex meanwhile (whose
// unlock then wakes, as in Go). In starvation mode unlock() keeps kLocked
// and hands the mutex over under the queue lock. So no unlock touches the
// mutex once a task that could destroy it can see it free: the mutex may be
// destroyed right after the last unlock (parking_queue.hpp, "Destruction").
// (Go releases with one RMW and claims the wake-up with a second; between
// the two, another unlocker can wake the waiter, which may then return and
// free the mutex: only a garbage collector makes that second touch safe.)
//
// Two modes, as in Go.
//   Normal: a readied waiter does not own the mutex; it competes for it
//     with tasks that arrive meanwhile (which have the advantage of running
//     already). A waiter that loses goes back to the FRONT of the queue.
//     This keeps a lock that is released and retaken on one P from paying
//     a task switch each time (a lock convoy).
//   Starvation: a waiter that was woken and lost after waiting more than
//     1 ms sets kStarving. Then unlock() hands the mutex directly to the
//     first waiter (kLocked never drops) and arrivals queue at the tail
//     without trying. The mode ends when the waiter handed the lock waited
//     less than 1 ms, or is the last one. Tail latency stays bounded while
//     throughput stays that of normal mode when there is no starvation.
// The slow path of lock() retries after being woken, so it cannot live in
// one awaiter (await_resume cannot suspend again): it is a small coroutine
// (lock_slow) entered by symmetric transfer, allocated only when the fast
// path fails. It spins briefly (the holder usually runs on another P and
// is about to unlock) before parking.
//
// Cooperative budget: lock() charges the G's budget before it acquires; if
// the slice is spent, it yields first and acquires after, so the mutex is
// never held across that yield.
//
// Shutdown: a locker killed while parked (~runtime destroys its frame)
// unlinks its waiter from the queue in its destructor (parking_queue.hpp,
// P3); the last one out also clears kWaiters and kStarving. So an unlock()
// that runs later (from another destructor of the same shutdown, or after
// the runtime is gone) neither touches freed memory nor hands the mutex to
// nobody. A mutex destroyed with lockers still queued detaches them. A
// locker readied and killed before it ran gives back what it was handed,
// recorded in its awaiter by the waker (parking_queue.hpp, P4): the
// wake-up claim (kWoken), passed on to the next waiter as the unlock that
// made it would have (or dropped: the mutex is held, or nobody waits), or
// the mutex itself (starvation mode), unlocked. Not when the mutex was
// destroyed earlier in the same kill (parking_queue.hpp, "Shutdown"). A
// mutex that a killed task had locked (and run with) stays locked, as any
// mutex whose holder never unlocks.
//
// Rejected: direct hand-off in every unlock (a fair FIFO lock): each
// contended unlock then costs a task switch before the lock can be used
// again, which is what normal mode avoids. A waiter count in the state word
// (Go): the exact queue is under the queue lock anyway, so one bit suffices.
//
// Invariants (for the state word read with the queue lock held):
//   - kWaiters iff the queue is non-empty (pushes set it; wake_one,
//     unlock_starving and a killed waiter's unlink clear it with the last).
//   - kStarving implies kLocked and kWaiters.
//   - kWoken is set by at most one unlocker until the woken waiter clears it
//     (by acquiring, or by parking again), or that unlocker gives it back,
//     or the woken waiter, killed before it ran, passes it on or gives it
//     back (give_back).
//
// Memory ordering: a successful lock is an acquire CAS on state_ and every
// unlock a release CAS, so a critical section happens-before the next
// owner's. In starvation mode ownership passes without clearing kLocked;
// the release CAS in unlock and the ready() of the new owner (release/
// acquire through the run queues, g.hpp) order the previous section before
// it. The queue and the waiters' fields are guarded by the queue lock
// (acquire/release). kWoken and kWaiters updates that do not transfer
// ownership are relaxed: they are hints re-read under the queue lock or by
// a later CAS. A waiter's record of what it was handed (a plain field of
// its awaiter) is written under the queue lock before ready(), and read by
// the waiter after its resume (ordered by ready()) or by its destructor on
// the killing thread (waitq.hpp, kQueued: the same argument). A killed
// waiter's give-back of the mutex is an unlock(), with its release CAS;
// of the claim, relaxed RMWs under the queue lock, as wake_one()'s.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <source_location>
#include <type_traits>
#include <utility>

#include "mpg/detail/sched/g.hpp"
#include "mpg/detail/sync/parking_queue.hpp"
#include "mpg/detail/sync/waitq.hpp"
#include "mpg/spawn.hpp"
#include "mpg/task.hpp"

namespace mpg {

namespace detail {
struct mutex_lock_op {};         // m.lock()
struct mutex_scoped_lock_op {};  // m.scoped_lock()
}  // namespace detail

// m.lock() and m.scoped_lock() return the mutex itself, as one of two empty
// bases: runtime requests (foreign_await.hpp). In a task, await_transform
// makes the awaiter from it with the co_await's site; elsewhere operator
// co_await makes it without one.
class mutex : public detail::request_base<mutex, detail::mutex_lock_op>,
              public detail::request_base<mutex, detail::mutex_scoped_lock_op> {
 public:
  class lock_awaiter;
  class guard;
  class scoped_lock_awaiter;

  mutex() noexcept = default;
  ~mutex();
  mutex(const mutex&) = delete;
  mutex& operator=(const mutex&) = delete;

  // mutex::lock()
  //
  // `co_await m.lock()`: acquires the mutex, parking while it is held. If it
  // parks, the task resumes on the P of the unlocker that woke it. The
  // operand is the mutex itself (a runtime request): a task's co_await
  // adds its site, and costs what awaiting lock_awaiter directly would.
  // lock(where) gives the awaiter with a site of the caller's choosing.
  detail::request_base<mutex, detail::mutex_lock_op>& lock() noexcept { return *this; }
  lock_awaiter lock(std::source_location where) noexcept;

  // mutex::try_lock()
  //
  // Acquires the mutex if that needs no waiting; never parks.
  bool try_lock() noexcept { return try_acquire_fast(); }

  // mutex::unlock()
  //
  // Releases the mutex, readying a waiter if one should retry. Throws
  // mpg::sync_misuse_error if the mutex is not locked.
  void unlock() {
    std::uint32_t s = kLocked;
    // Release: publishes the critical section to the next acquire CAS. The
    // last touch of the mutex. Inline, the common case: nobody waits.
    if (state_.compare_exchange_strong(s, 0, std::memory_order_release, std::memory_order_relaxed))
        [[likely]]
      return;
    unlock_slow(s);
  }

  // mutex::scoped_lock()
  //
  // `auto g = co_await m.scoped_lock()`: lock() returning a guard that
  // unlocks when destroyed. The operand is the mutex, as for lock().
  detail::request_base<mutex, detail::mutex_scoped_lock_op>& scoped_lock() noexcept {
    return *this;
  }
  scoped_lock_awaiter scoped_lock(std::source_location where) noexcept;

 private:
  template <class, class>
  friend class detail::request_base;
  static lock_awaiter make_awaiter(mutex& m, detail::mutex_lock_op,
                                   std::source_location where) noexcept;
  static scoped_lock_awaiter make_awaiter(mutex& m, detail::mutex_scoped_lock_op,
                                          std::source_location where) noexcept;

  struct wait_awaiter;

  bool try_acquire_fast() noexcept {
    std::uint32_t s = state_.load(std::memory_order_relaxed);
    while (!(s & (kLocked | kStarving))) {
      // Acquire: pairs with the release CAS of the previous unlock().
      if (state_.compare_exchange_weak(s, s | kLocked, std::memory_order_acquire,
                                       std::memory_order_relaxed))
        return true;
    }
    return false;
  }
  task<void> lock_slow(bool yield_first, std::source_location where);
  // unlock_slow(): unlock() when the state was not just kLocked (s).
  void unlock_slow(std::uint32_t s);
  void wake_one();
  void unlock_starving();
  detail::waiter* pass_claim(detail::waitq& q) noexcept;
  void give_back(wait_awaiter* w) noexcept;

  static constexpr std::uint32_t kLocked = 1;
  static constexpr std::uint32_t kWoken = 2;
  static constexpr std::uint32_t kStarving = 4;
  static constexpr std::uint32_t kWaiters = 8;

  std::atomic<std::uint32_t> state_{0};
  detail::parking_queue<> q_;
};

// mutex::lock_awaiter
//
// Completes without suspending when the mutex is free; otherwise transfers
// into the slow-path coroutine, which parks as needed.
class [[nodiscard]] mutex::lock_awaiter {
 public:
  using mpg_awaiter = detail::runtime_awaiter_tag;  // g.hpp
  lock_awaiter(mutex* m, std::source_location where) noexcept : m_(m), where_(where) {}
  lock_awaiter(const lock_awaiter&) = delete;
  lock_awaiter& operator=(const lock_awaiter&) = delete;

  bool await_ready() noexcept {
    if (detail::consume_budget_now()) {
      yield_first_ = true;
      return false;
    }
    return m_->try_acquire_fast();
  }
  template <class P>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) {
    slow_ = m_->lock_slow(yield_first_, where_);
    if constexpr (std::is_base_of_v<detail::promise_base, P>)
      slow_.link_parent(where_);  // h's await chain (task.hpp)
    slow_awaiter_ = slow_.operator co_await();
    return slow_awaiter_.await_suspend(h);
  }
  void await_resume() {
    if (slow_awaiter_.h) slow_awaiter_.await_resume();
  }

 private:
  mutex* m_;
  std::source_location where_;
  bool yield_first_ = false;
  task<void> slow_;
  task<void>::awaiter slow_awaiter_{};
};

// mutex::guard
//
// Owns a locked mutex; unlocks it when destroyed (or at unlock()).
class mutex::guard {
 public:
  guard() noexcept = default;
  explicit guard(mutex* m) noexcept : m_(m) {}
  guard(guard&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
  guard& operator=(guard&& o) noexcept {
    if (this != &o) {
      reset();
      m_ = std::exchange(o.m_, nullptr);
    }
    return *this;
  }
  guard(const guard&) = delete;
  guard& operator=(const guard&) = delete;
  ~guard() { reset(); }

  bool owns_lock() const noexcept { return m_ != nullptr; }
  explicit operator bool() const noexcept { return owns_lock(); }
  void unlock() {
    if (m_) std::exchange(m_, nullptr)->unlock();
  }

 private:
  void reset() noexcept {
    if (m_) std::exchange(m_, nullptr)->unlock();
  }
  mutex* m_ = nullptr;
};

class [[nodiscard]] mutex::scoped_lock_awaiter {
 public:
  using mpg_awaiter = detail::runtime_awaiter_tag;  // g.hpp
  scoped_lock_awaiter(mutex* m, std::source_location where) noexcept : m_(m), inner_(m, where) {}
  bool await_ready() noexcept { return inner_.await_ready(); }
  template <class P>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) {
    return inner_.await_suspend(h);
  }
  guard await_resume() {
    inner_.await_resume();
    return guard(m_);
  }

 private:
  mutex* m_;
  lock_awaiter inner_;
};

inline mutex::lock_awaiter mutex::lock(std::source_location where) noexcept {
  return lock_awaiter(this, where);
}
inline mutex::scoped_lock_awaiter mutex::scoped_lock(std::source_location where) noexcept {
  return scoped_lock_awaiter(this, where);
}
inline mutex::lock_awaiter mutex::make_awaiter(mutex& m, detail::mutex_lock_op,
                                               std::source_location where) noexcept {
  return m.lock(where);
}
inline mutex::scoped_lock_awaiter mutex::make_awaiter(mutex& m, detail::mutex_scoped_lock_op,
                                                      std::source_location where) noexcept {
  return m.scoped_lock(where);
}

}  // namespace mpg
