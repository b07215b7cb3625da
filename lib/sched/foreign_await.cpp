// lib/sched/foreign_await.cpp: the bridge of a foreign await (protocol:
// mpg/detail/sched/foreign_await.hpp).
#include "mpg/detail/sched/foreign_await.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>

namespace mpg::detail {

namespace {

constexpr std::uint8_t kSuspending = 0;
constexpr std::uint8_t kParked = 1;
constexpr std::uint8_t kResumed = 2;
constexpr std::uint8_t kAbandoned = 3;

struct bridge_promise;
using bridge_handle = std::coroutine_handle<bridge_promise>;
struct bridge_frame {
  using promise_type = bridge_promise;
  bridge_handle h;
};

void on_bridge_resumed(bridge_handle h) noexcept;

// The bridge frame: plain operator new (it may be freed on a foreign thread).
struct bridge_promise {
  bridge_frame get_return_object() noexcept {
    return bridge_frame{bridge_handle::from_promise(*this)};
  }
  std::suspend_always initial_suspend() noexcept { return {}; }
  struct final_awaiter {
    bool await_ready() const noexcept { return false; }
    // The frame counts as suspended here, so whoever owns it may destroy it
    // as soon as on_bridge_resumed() has published the resume.
    void await_suspend(bridge_handle h) const noexcept { on_bridge_resumed(h); }
    void await_resume() const noexcept {}
  };
  final_awaiter final_suspend() noexcept { return {}; }
  void return_void() noexcept {}
  void unhandled_exception() noexcept { std::terminate(); }

  std::atomic<std::uint8_t> state{kSuspending};
  g* gp = nullptr;
};

bridge_frame make_bridge() { co_return; }

bridge_promise& promise_of(std::coroutine_handle<> h) noexcept {
  return bridge_handle::from_address(h.address()).promise();
}

void on_bridge_resumed(bridge_handle h) noexcept {
  bridge_promise& p = h.promise();
  g* gp = p.gp;  // read before the exchange: the frame may go right after it
  // acq_rel. Release: whatever the foreign side wrote before resuming us
  // (the result its await_resume returns) is visible to the task, whether
  // it continues inline (its CAS fails with acquire) or through ready().
  // Acquire: pairs with commit()'s release (the park is complete before
  // we ready the G) and with abandon()'s release (before we free the frame).
  const std::uint8_t old = p.state.exchange(kResumed, std::memory_order_acq_rel);
  if (old == kParked) {
    ready(gp);
  } else if (old == kAbandoned) {
    h.destroy();
  }
  // kSuspending: the task, still inside its await_suspend, sees kResumed.
}

}  // namespace

std::coroutine_handle<> foreign_wait::begin(std::coroutine_handle<> h,
                                            std::source_location where) {
  g* gp = current_g();
  if (gp == nullptr) park(h, "external", where);  // throws runtime_misuse_error
  bridge_handle b = make_bridge().h;
  b.promise().gp = gp;
  park(h, "external", where);
  gp_ = gp;
  sched_ = gp->sched;
  bridge_ = b;
  external_waker_add(sched_);
  return b;
}

bool foreign_wait::commit() noexcept {
  bridge_promise& p = promise_of(bridge_);
  std::uint8_t expected = kSuspending;
  // Success: acq_rel (release: the park, for the bridge that readies the
  // G). Failure: acquire (the bridge's resume, see on_bridge_resumed()).
  if (p.state.compare_exchange_strong(expected, kParked, std::memory_order_acq_rel,
                                      std::memory_order_acquire))
    return true;  // *this may be gone from here on
  cancel_park();
  return false;
}

void foreign_wait::cancel() noexcept {
  cancel_park();
  finish();
}

void foreign_wait::finish() noexcept {
  if (current_g() != gp_) [[unlikely]] {
    const char* name = gp_->name.load(std::memory_order_relaxed);
    std::fprintf(stderr,
                 "mpg: task %llu%s%s%s was resumed outside its runtime: an awaiter resumed the "
                 "task's coroutine handle itself instead of through the runtime\n",
                 static_cast<unsigned long long>(gp_->id.load(std::memory_order_relaxed)),
                 name ? " (" : "", name ? name : "", name ? ")" : "");
    std::fflush(stderr);
    std::abort();
  }
  external_waker_remove(sched_);
  // The bridge is suspended (initial or final) and no longer touched by
  // anyone: it was never resumed, or its resume has been observed.
  std::exchange(bridge_, {}).destroy();
  gp_ = nullptr;
}

void foreign_wait::abandon() noexcept {
  bridge_promise& p = promise_of(bridge_);
  external_waker_remove(sched_);
  // acq_rel: see on_bridge_resumed(). kParked: the foreign side still holds
  // the bridge and destroys it when it resumes it.
  const std::uint8_t old = p.state.exchange(kAbandoned, std::memory_order_acq_rel);
  if (old != kParked) bridge_.destroy();
  bridge_ = {};
}

}  // namespace mpg::detail
