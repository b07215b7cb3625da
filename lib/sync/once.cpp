// lib/sync/once.cpp: the non-template slow path of mpg::once (see once.hpp).
#include "mpg/once.hpp"

namespace mpg {

bool once::wait_awaiter::await_suspend(std::coroutine_handle<> h) {
  auto may_park = [&] {
    // Relaxed under the queue lock: state_ changes only under it (the done
    // store too), so the lock orders everything we read here.
    const std::uint32_t s = self->state_.load(std::memory_order_relaxed);
    if (s == kDone) return false;
    if (s == kIdle) {
      self->state_.store(kRunning, std::memory_order_relaxed);
      runner = true;
      return false;
    }
    return true;
  };
  // Outside a task (docs/api.md): a call that need not wait (the first, or
  // one after f completed) goes on; only a wait throws (park()).
  if (detail::current_g() == nullptr && !self->q_.decide(may_park)) return false;
  return self->q_.park(this, h, "once", where, may_park);
}

void once::wait_awaiter::unqueue() noexcept {
  self->q_.unlink(this, 0, [](detail::waitq*) -> detail::waiter* { return nullptr; });
}

void once::finish() noexcept {
  q_.wake([&](detail::waitq* queues) {
    // Release: pairs with the acquire load of the fast path (done()). The
    // once may be destroyed as soon as a caller sees it: the lock's release
    // store is our last touch (parking_queue.hpp, "Destruction").
    state_.store(kDone, std::memory_order_release);
    return queues[0].take_all();
  });
}

}  // namespace mpg
