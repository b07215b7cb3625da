// mpg/detail/sched/timer.hpp: the per-P timer interface used by sleep, after,
// context deadlines and I/O deadlines.
//
// Timers live in a 4-ary min-heap per P (Go's design), guarded by that P's
// timer lock so that another M (or sysmon) can run the timers of a P that is
// busy or idle. Adding or cancelling costs O(log n).
//
// A timer fires at most once. fire(t) is called with no runtime lock held, on
// whichever thread runs the P's timers (an M, or sysmon); it must be short
// and non-blocking (ready a G, try_send on a channel, cancel a context).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace mpg::detail {

class scheduler;
class processor;

struct timer {
  using clock = std::chrono::steady_clock;
  clock::time_point when{};
  void (*fire)(timer*) = nullptr;
  void* arg = nullptr;  // free for the owner's use

  // Internal state (timers.cpp): heap_index >= 0 while queued; owner is
  // the P whose heap it went into, cleared by a cancel that took it out
  // and by the shutdown's detach.
  std::int32_t heap_index = -1;
  processor* owner = nullptr;
};

// add_timer(): schedule t (not queued, `when` and `fire` set) on the current
// P, or on a P of `s` when called outside a task (s == nullptr: the current
// runtime; throws std::logic_error if there is none).
void add_timer(timer* t, scheduler* s = nullptr);

// cancel_timer(): true if t was still pending and will now never fire; false
// if it already fired, was cancelled before, or if its runtime is shutting
// down or gone (~runtime detaches every pending timer before it destroys the
// frames of the tasks it kills, so a timer in a frame is never left in a
// heap: timers.cpp, "Shutdown"). When it returns, fire(t) is not running, so
// the caller may free t. A timer this call took out (true) may be cancelled
// again after its runtime is gone; one that fired may not (it still names
// its P: owners that outlive a runtime keep a flag of their own, as
// after_chan and context_node do), nor a pending one concurrently with
// ~runtime of its runtime from another thread. Calls for one timer do not
// overlap (its owner makes them one after another).
bool cancel_timer(timer* t) noexcept;

// current_scheduler(): the runtime of the calling task (nullptr outside).
scheduler* current_scheduler() noexcept;

}  // namespace mpg::detail
