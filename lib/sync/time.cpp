// lib/sync/time.cpp: sleep awaiters and after() channels (time.hpp).
#include "mpg/time.hpp"

#include "mpg/errors.hpp"

namespace mpg {

namespace detail {

after_chan::~after_chan() {
  // cancel_timer() waits for a fire() in progress, so the state (which
  // fire() uses) outlives it. Never reached from our own fire(): the timer
  // holds no reference to the channel.
  // Acquire: pairs with fire()'s release; a fired timer is left alone.
  if (armed_ && !fired_.load(std::memory_order_acquire)) cancel_timer(&timer_);
}

void after_chan::arm(steady_time when) {
  if (when <= detail::mono_now()) {
    // Already due: send at once; the channel is new, so this succeeds.
    steady_time now = detail::mono_now();
    try_send_nothrow(now);
    return;
  }
  timer_.when = when;
  timer_.fire = &after_chan::fire;
  timer_.arg = this;
  add_timer(&timer_, nullptr);  // throws outside a runtime: nothing armed
  armed_ = true;
}

void after_chan::fire(timer* t) noexcept {
  auto* self = static_cast<after_chan*>(t->arg);
  steady_time now = detail::mono_now();
  // Capacity 1, and only the timer is meant to send: full only if a task
  // sent first (time.hpp: dropped). If the user closed the channel, there
  // is nobody to tell.
  self->try_send_nothrow(now);
  self->fired_.store(true, std::memory_order_release);  // last touch of *self
}

chan<steady_time> after_until(steady_time when) {
  if (current_scheduler() == nullptr)
    throw runtime_misuse_error("mpg::after: no runtime (called outside a task)");
  chan<steady_time> c(new after_chan(), adopt_state);
  static_cast<after_chan*>(c.state_for_internal_use())->arm(when);
  return c;
}

}  // namespace detail

bool sleep_awaiter::await_suspend(std::coroutine_handle<> h) {
  if (timer_.when <= detail::mono_now()) return detail::yield_if_over_budget(h);
  detail::g* gp = detail::current_g();
  detail::park(h, "sleep", where_);  // throws outside a task
  timer_.fire = &sleep_awaiter::fire;
  timer_.arg = gp;
  try {
    detail::add_timer(&timer_, nullptr);  // publishes: `this` is not touched after it
  } catch (...) {
    detail::cancel_park();
    throw;
  }
  return true;
}

void sleep_awaiter::fire(detail::timer* t) noexcept {
  // The timer runner does not touch t after fire() returns (timers.cpp), so
  // the G may resume and free its awaiter at once.
  detail::ready(static_cast<detail::g*>(t->arg));
}

}  // namespace mpg
