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

// give_back(): from ~wait_awaiter of a caller that holds the run, destroyed
// (its task killed) before f completed (once.hpp, "Shutdown"): hand the run
// to the first caller still queued, or turn the once back to idle. Not when
// the once was destroyed earlier in this kill (parking_queue.hpp,
// "Shutdown"). No M of the caller's runtime runs; tasks of other runtimes
// may use the once meanwhile, hence the queue lock, as for any change of
// the state.
void once::wait_awaiter::give_back() noexcept {
  runner = false;
  if (detail::destroyed_in_kill(self)) return;
  once* o = self;
  o->q_.wake([o](detail::waitq* queues) -> detail::waiter* {
    auto* next = static_cast<wait_awaiter*>(queues[0].pop_front());
    if (next == nullptr) {
      // Relaxed under the queue lock: only done is read outside it (the
      // fast path), and idle is not done. From here the once may be
      // destroyed: the lock's release store is our last touch.
      o->state_.store(kIdle, std::memory_order_relaxed);
      return nullptr;
    }
    // The state stays running: the run passes to next, which has not
    // returned from call(), so the once stays in use until it finishes.
    next->runner = true;  // P4: before ready()
    return next;
  });
}

once::~once() { detail::note_destroyed_in_kill(this); }

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
