// mpg/time.hpp: sleeping and timer channels, on the per-P timers of
// detail/sched/timer.hpp.
//
//   co_await mpg::sleep_for(10ms);
//   co_await mpg::sleep_until(deadline);
//   mpg::chan<std::chrono::steady_clock::time_point> t = mpg::after(50ms);  // Go's time.After
//
// Guarantees: a sleep resumes, and an after() channel receives its value,
// no earlier than the deadline (steady clock). How much later depends on
// the load of the P that owns the timer; nothing bounds it from above.
//
// Design. A sleep embeds its detail::timer in the awaiter, so sleeping
// allocates nothing: await_suspend parks the G (g.hpp step 1), arms the
// timer with fire = ready(G) (step 2, publishing), and the P's timer run
// readies it (step 3). The timer is added to the current P, so a task that
// sleeps usually wakes on the P it slept on. A deadline already past does
// not suspend (it only charges the cooperative budget), as Go's Sleep(0).
//
// after(d) returns a fresh channel of capacity 1 whose state embeds the
// timer; when it fires, it try_sends the time of firing, which cannot block;
// it drops its value if the channel is closed, or full because a task sent
// on it first (the channel is for receiving).
// When the last handle to the channel goes, the timer is cancelled, so
// dropping an unfired after() (a select that another case won) frees it at
// once rather than when it would have fired (Go 1.23 behaviour).
//
// A sleep killed by ~runtime needs no cleanup of its own: ~runtime detaches
// every pending timer before it destroys the frames of the tasks it kills
// (timers.cpp, "Shutdown"), so no heap points into the freed awaiter.
// An after() channel may outlive its runtime: ~runtime detaches pending
// timers (cancel_timer then returns at once), and a fired timer is never
// touched again. Outside a task, a sleep that would wait throws
// runtime_misuse_error (a std::logic_error), and so does after() on a
// thread that runs none of a runtime's Ms: no runtime would own the timer.
//
// Rejected: one timer goroutine per runtime (Go before 1.14): every sleep
// would cross threads twice. A timer wheel: cheaper inserts, but the heap's
// O(log n) is not the bottleneck at 100k timers and the heap fires exactly.
#pragma once

#include <atomic>
#include <chrono>
#include <coroutine>
#include <source_location>

#include "mpg/chan.hpp"
#include "mpg/detail/sched/clock.hpp"
#include "mpg/detail/sched/timer.hpp"

namespace mpg {

namespace detail {

// after_chan: the state of an after() channel; owns the timer.
class after_chan final : public chan_state<steady_time> {
 public:
  after_chan() : chan_state<steady_time>(1) {}
  ~after_chan() override;
  // arm(): start the timer (or send at once if `when` has passed).
  void arm(steady_time when);

 private:
  static void fire(timer* t) noexcept;
  timer timer_;
  bool armed_ = false;
  // Set (release) when fire() is done with us: the destructor then skips
  // cancel_timer(), which could otherwise touch a runtime already gone.
  std::atomic<bool> fired_{false};
};

chan<steady_time> after_until(steady_time when);

}  // namespace detail

// sleep_awaiter
//
// The awaiter of sleep_for / sleep_until. Resumed by the thread that runs
// the timers of the P it was armed on (that P's M, or sysmon), on that
// thread's P when it has one.
class [[nodiscard]] sleep_awaiter {
 public:
  using mpg_awaiter = detail::runtime_awaiter_tag;  // g.hpp
  sleep_awaiter(std::chrono::steady_clock::time_point when, std::source_location where) noexcept
      : where_(where) {
    timer_.when = when;
  }
  sleep_awaiter(const sleep_awaiter&) = delete;
  sleep_awaiter& operator=(const sleep_awaiter&) = delete;

  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h);
  void await_resume() const noexcept {}

 private:
  static void fire(detail::timer* t) noexcept;
  detail::timer timer_;
  std::source_location where_;
};

// sleep_until(): resume no earlier than tp.
inline sleep_awaiter sleep_until(std::chrono::steady_clock::time_point tp,
                                 std::source_location where = std::source_location::current()) {
  return sleep_awaiter(tp, where);
}

// sleep_for(): resume no earlier than d from now. d <= 0 does not wait.
template <class Rep, class Period>
sleep_awaiter sleep_for(std::chrono::duration<Rep, Period> d,
                        std::source_location where = std::source_location::current()) {
  return sleep_awaiter(detail::deadline_after(d), where);
}

// after(): Go's time.After. A channel of capacity 1 that receives the time
// of firing once, no earlier than d from now. Throws runtime_misuse_error
// (a std::logic_error) outside a task of some runtime. It is for receiving,
// as Go's receive-only channel: should a task send on it first, the timer
// finds it full and drops its value (as it does on a closed one).
template <class Rep, class Period>
chan<std::chrono::steady_clock::time_point> after(std::chrono::duration<Rep, Period> d) {
  return detail::after_until(detail::deadline_after(d));
}

}  // namespace mpg
