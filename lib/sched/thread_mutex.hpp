// lib/sched/thread_mutex.hpp: thread_mutex, the lock that blocks an OS thread
// (std::mutex with thread-safety annotations), and its guard,
// thread_mutex_lock.
//
// lib/ guards its thread-level structures with it: the scheduler lock (the
// global run queue, the idle P and M lists), the G registry, each P's timer
// heap, sysmon's stop flag, block_on's state, the frame depot and the
// reactor's failure reason. Tasks never take it to wait for one another
// (mpg::mutex parks the task instead); the M-P-G machinery takes it for a
// few pointer updates, and block_on and sysmon wait on it with a condition
// variable while they hold no P.
//
// Why a wrapper. The lock annotations on lib/'s structures (ABSL_GUARDED_BY,
// ABSL_EXCLUSIVE_LOCKS_REQUIRED) are checked by clang's -Wthread-safety
// (meson.build turns it on, as an error, for clang). The analysis needs the
// lock's type to be a capability, and libstdc++'s std::mutex and
// std::lock_guard carry no attributes: clang rejects GUARDED_BY(a std::mutex)
// and cannot see a lock_guard acquire anything. thread_mutex is std::mutex
// with the attributes and nothing else: the same object, every call inline.
//
// Rejected: absl::Mutex, which is annotated already. Debian's Abseil is not
// built with TSan, so TSan cannot see the hand-offs inside it and reports
// races on everything it guards; pthread mutexes (std::mutex) are
// intercepted. Rejected for the waits: exposing the std::mutex so that
// callers build their own std::unique_lock (it could unlock behind the
// analysis' back), and std::condition_variable_any over thread_mutex (it
// carries a mutex of its own and a shared_ptr: heavier, for nothing).
//
// Condition variables. thread_mutex_lock::wait_for() waits on a
// std::condition_variable: it releases the lock while it sleeps and holds
// it again when it returns, so to the analysis (as to the caller's code)
// the lock is held throughout. The predicate is called with the lock held,
// but it is a lambda, which the analysis checks as a function of its own:
// annotate it, `[this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; }`.
//
// Memory ordering: that of std::mutex. lock() acquires and unlock() releases,
// so everything written under the lock by one holder is visible to the next.
#pragma once

#include <absl/base/thread_annotations.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <utility>

namespace mpg::detail {

class ABSL_LOCKABLE thread_mutex {
 public:
  constexpr thread_mutex() noexcept = default;
  thread_mutex(const thread_mutex&) = delete;
  thread_mutex& operator=(const thread_mutex&) = delete;

  // thread_mutex::lock()
  //
  // Takes the lock, blocking the thread until it is free.
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }

  // thread_mutex::try_lock()
  //
  // Takes the lock if it is free now; never blocks.
  bool try_lock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }

  // thread_mutex::unlock()
  void unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

 private:
  friend class thread_mutex_lock;
  std::mutex mu_;
};

// thread_mutex_lock: holds a thread_mutex for its scope (std::lock_guard's
// role), and waits on condition variables with it.
class ABSL_SCOPED_LOCKABLE thread_mutex_lock {
 public:
  explicit thread_mutex_lock(thread_mutex& mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : lk_(mu.mu_) {}
  ~thread_mutex_lock() ABSL_UNLOCK_FUNCTION() {}
  thread_mutex_lock(const thread_mutex_lock&) = delete;
  thread_mutex_lock& operator=(const thread_mutex_lock&) = delete;

  // thread_mutex_lock::wait_for()
  //
  // std::condition_variable::wait_for(lock, d, pred): returns pred() once it
  // is true, or at the timeout. The lock is released while the thread sleeps
  // and held whenever pred runs (annotate pred, see the top of the file).
  template <class Rep, class Period, class Pred>
  bool wait_for(std::condition_variable& cv, const std::chrono::duration<Rep, Period>& d,
                Pred pred) {
    return cv.wait_for(lk_, d, std::move(pred));
  }

  // unlock(), lock(): leave the lock for a while inside the scope (the
  // destructor releases it only if held).
  void unlock() ABSL_UNLOCK_FUNCTION() { lk_.unlock(); }
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { lk_.lock(); }

 private:
  std::unique_lock<std::mutex> lk_;
};

}  // namespace mpg::detail
