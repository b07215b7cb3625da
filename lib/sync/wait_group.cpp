// lib/sync/wait_group.cpp: counter updates and the parking path of
// mpg::wait_group (design and ordering in wait_group.hpp).
#include "mpg/wait_group.hpp"

#include "mpg/errors.hpp"

namespace mpg {

void wait_group::add(std::int64_t delta) {
  std::int64_t c = count_.load(std::memory_order_relaxed);
  for (;;) {
    if (c + delta < 0) throw sync_misuse_error("mpg::wait_group: negative counter");
    // acq_rel: see "Memory ordering" in wait_group.hpp.
    if (count_.compare_exchange_weak(c, c + delta, std::memory_order_acq_rel,
                                     std::memory_order_relaxed))
      break;
  }
  if (delta == 0 || c + delta != 0) return;
  detail::waiter* chain;
  {
    detail::spin_guard lk(qlock_);
    chain = waiters_.take_all();
  }
  detail::ready_chain(chain);
}

void wait_group::unqueue(detail::waiter* w) noexcept {
  detail::spin_guard lk(qlock_);
  waiters_.remove(w);  // a no-op if add() took it off meanwhile
}

bool wait_group::wait_slow(detail::waiter* w, std::coroutine_handle<> h,
                           const std::source_location& where) {
  detail::g* self = detail::current_g();
  if (self == nullptr) detail::park(h, "wait_group wait", where);  // throws: not in a task
  detail::spin_guard lk(qlock_);
  // Acquire: pairs with the releases of the add()s that reached zero.
  if (count_.load(std::memory_order_acquire) == 0) return false;
  w->set_g(self);
  detail::park(h, "wait_group wait", where);
  waiters_.push_back(w);
  return true;  // unlocking qlock_ publishes w
}

}  // namespace mpg
