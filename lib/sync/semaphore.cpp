// lib/sync/semaphore.cpp: the slow paths of mpg::semaphore (design, invariants
// and ordering in semaphore.hpp).
#include "mpg/semaphore.hpp"

#include "mpg/errors.hpp"

namespace mpg {

semaphore::semaphore(std::int64_t permits) : state_(permits * 2), max_(permits) {
  if (permits < 0) throw sync_misuse_error("mpg::semaphore: negative permit count");
}

bool semaphore::acquire_slow(detail::waiter* w, std::coroutine_handle<> h,
                             const std::source_location& where) {
  detail::g* self = detail::current_g();
  if (self == nullptr) detail::park(h, "semaphore acquire", where);  // throws: not in a task
  detail::spin_guard lk(qlock_);
  std::int64_t s = state_.load(std::memory_order_relaxed);
  for (;;) {
    if (s >= 2) {
      if (state_.compare_exchange_weak(s, s - 2, std::memory_order_acquire,
                                       std::memory_order_relaxed))
        return false;
      continue;
    }
    // Relaxed: announces the queue; releasers re-read it under qlock_.
    if (state_.compare_exchange_weak(s, s | kWaiters, std::memory_order_relaxed,
                                     std::memory_order_relaxed))
      break;
  }
  w->set_g(self);
  detail::park(h, "semaphore acquire", where);
  waiters_.push_back(w);
  return true;  // unlocking qlock_ publishes w
}

void semaphore::unqueue(detail::waiter* w) noexcept {
  detail::spin_guard lk(qlock_);
  if (!waiters_.remove(w)) return;  // a releaser took it off meanwhile
  // The last waiter: keep "kWaiters iff the queue is non-empty". Relaxed: no
  // permit changes hands (permits stay 0); releasers re-read the flag under
  // qlock_, and one that read it before this finds the queue empty and
  // returns its permit with its own release CAS (release()).
  if (waiters_.empty()) state_.fetch_and(~kWaiters, std::memory_order_relaxed);
}

void semaphore::release() {
  std::int64_t s = state_.load(std::memory_order_relaxed);
  for (;;) {
    while (!(s & kWaiters)) {
      if ((s >> 1) >= max_) throw sync_misuse_error("mpg::semaphore: released more than acquired");
      // Release: publishes the releaser's work to the next acquirer.
      if (state_.compare_exchange_weak(s, s + 2, std::memory_order_release,
                                       std::memory_order_relaxed))
        return;
    }
    detail::g* gp;
    {
      detail::spin_guard lk(qlock_);
      detail::waiter* w = waiters_.pop_front();
      if (w == nullptr) {
        // Another release() served the last waiter (and cleared kWaiters)
        // between our load and qlock_: return the permit normally.
        s = state_.load(std::memory_order_relaxed);
        continue;
      }
      if (waiters_.empty()) {
        // Relaxed: permits stay 0 (handed off), only the flag goes.
        state_.fetch_and(~kWaiters, std::memory_order_relaxed);
      }
      gp = w->gp();  // the permit is handed over: count unchanged
    }
    detail::ready(gp);  // release/acquire through the run queue
    return;
  }
}

}  // namespace mpg
