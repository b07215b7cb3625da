// lib/sync/once.cpp: the non-template slow path of mpg::once (see once.hpp).
#include "mpg/once.hpp"

namespace mpg {

bool once::wait_awaiter::await_suspend(std::coroutine_handle<> h) {
  detail::g* me = detail::current_g();
  if (me == nullptr) detail::park(h, "once", where);  // throws: not in a task
  detail::spin_guard lk(self->qlock_);
  // Relaxed under qlock_: state_ changes only under qlock_ (the done store
  // too), so the lock orders everything we read here.
  const std::uint32_t s = self->state_.load(std::memory_order_relaxed);
  if (s == kDone) return false;
  if (s == kIdle) {
    self->state_.store(kRunning, std::memory_order_relaxed);
    runner = true;
    return false;
  }
  set_g(me);
  detail::park(h, "once", where);
  self->waiters_.push_back(this);
  return true;  // unlocking qlock_ publishes this waiter
}

void once::wait_awaiter::unqueue() noexcept {
  detail::spin_guard lk(self->qlock_);
  self->waiters_.remove(this);  // a no-op if finish() took it off meanwhile
}

void once::finish() noexcept {
  detail::waiter* chain;
  {
    detail::spin_guard lk(qlock_);
    // Release: pairs with the acquire load of the fast path (done()).
    state_.store(kDone, std::memory_order_release);
    chain = waiters_.take_all();
  }
  detail::ready_chain(chain);
}

}  // namespace mpg
