// lib/sched/machine.hpp: the M, an OS thread that runs Gs while it holds a P, and
// its parker (a futex word with an optional deadline).
//
// An M is created by the scheduler (start_m) when work appears and no idle M
// exists, and lives until the runtime stops. Its per-thread scheduling state
// (current G, runnext streak; the budget is a thread_local, tls_budget)
// lives here, not in the P, because it belongs to the thread's current run,
// not to the queue.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <thread>

#include "mpg/detail/sched/g.hpp"
#include "sched/processor.hpp"

namespace mpg::detail {

class scheduler;
class trace_buffer;  // trace.hpp

// Cooperative budget of a G's time slice: runtime awaits that complete
// without suspending consume one unit each (g.hpp).
inline constexpr int kBudget = 128;

// The budget left in the slice of the G this thread's M runs. A
// thread_local rather than a field of the M: an M is one thread and only
// that thread reads or writes its budget (execute() sets it, the G's awaits
// and the switches at park and finish spend it), and a charge of an
// initial-exec thread_local is a decrement at a fixed offset from the
// thread pointer, where the field cost a load of tls_m, a null check and an
// indirection besides. A thread that runs no
// M has no budget: consume_budget_now() finds it so on its slow path and
// answers "not spent" (scheduler.cpp). constinit: other translation units
// reach it directly, without a TLS init wrapper.
extern constinit __attribute__((tls_model("initial-exec"))) thread_local int tls_budget;

// How many turns in a row a runnext chain (a G readying the next, which
// readies the next...) may keep the runnext slot while other local work
// waits (find_runnable.cpp, step 3; the switch at park).
inline constexpr std::uint32_t kMaxRunnextStreak = 32;

// parker: one M sleeps in park(), anyone calls unpark().
// State: 0 = no permit, 1 = permit available. unpark() sets the permit and
// wakes the futex; park() consumes it. A permit set before park() makes
// park() return at once, so an unpark can never be lost.
// Memory ordering: unpark's exchange is release and park's exchange acquire,
// so everything the waker wrote before unpark() (the handed-over P, the
// spinning flag) is visible after park() returns.
class parker {
 public:
  // park(): returns when unparked (true) or at the deadline (false).
  bool park(std::optional<std::chrono::steady_clock::time_point> deadline) noexcept;
  void unpark() noexcept;

 private:
  std::atomic<std::uint32_t> word_{0};
};

// Where a sleeping M waits, hence how to wake it: its futex (parker), or
// the ring of the P it holds (that ring's wake eventfd).
enum class sleep_site : std::uint8_t { futex, ring };
// Whether an M handed a P starts as a spinning M (counted in nmspinning_).
enum class spin_state : std::uint8_t { idle, spinning };

class machine {
 public:
  machine(scheduler* s, std::uint32_t id) : sched(s), id(id) {}

  scheduler* const sched;
  const std::uint32_t id;
  std::thread thread;
  parker park;

  // p(): the P this M holds, or null. Only this M reads it for its own use;
  // it is written only by the P-ownership functions of p_ownership.cpp
  // (acquire_p, release_p), on this M's thread or, for an M that is not
  // running (parked, or being started), under the scheduler lock before it
  // is unparked.
  processor* p() const noexcept { return p_; }
  // local_runq(): the owner side of the held P's run queue. Only the M
  // that holds a P can push to its queue (run_queue.hpp).
  run_queue::owner local_runq() const noexcept { return run_queue::owner(p_->runq); }

  // Handoff mailbox, under the scheduler lock: the P (and whether to spin
  // with it) that a waker gives this M while it is parked; taken by this M
  // when it wakes (p_ownership.cpp).
  processor* next_p = nullptr;
  spin_state next_spin = spin_state::idle;
  bool spinning = false;        // counted in scheduler::nmspinning_
  machine* idle_next = nullptr; // under the scheduler lock
  // Where this M sleeps while it holds a parked P; under the scheduler lock.
  sleep_site sleeps_in = sleep_site::futex;
  processor* blocking_from = nullptr;  // the P given up by mpg::blocking
  trace_buffer* trace = nullptr;  // this M's trace events, if its runtime records (trace.hpp)

  // Current run (the budget is tls_budget, above).
  std::uint32_t runnext_streak = 0;
  // While this M reaps its P's ring (scheduler::reap_io, wait_for_p), the
  // Gs the reap readies onto that P are counted here instead of each
  // calling wake_p(); end_reap() decides once (find_runnable.cpp, "Waking
  // after a reap"). -1: not reaping. Only this M touches it.
  int reap_readied = -1;

 private:
  friend class scheduler;  // acquire_p() / release_p() (p_ownership.cpp)
  processor* p_ = nullptr;
};

// m_wakeup: an M that was handed a P under the scheduler lock, to be woken
// once the lock is released (send()).
struct m_wakeup {
  machine* m = nullptr;
  processor* p = nullptr;
  sleep_site site = sleep_site::futex;
  explicit operator bool() const noexcept { return m != nullptr; }
  void send() const noexcept {
    if (site == sleep_site::ring) p->io->wake();
    else m->park.unpark();
  }
};

// The M running on this thread (nullptr on other threads).
machine* current_m() noexcept;
void set_current_m(machine* m) noexcept;
// guard_this_thread_stack(): records the calling thread's stack for the
// transfer guard (mpg/detail/sched/stack_guard.hpp); each M at its start.
void guard_this_thread_stack() noexcept;
// The G this thread runs (current_g() in g.hpp reads it).
void set_current_g(g* gp) noexcept;
// requeue_current_next(h): requeue_current() (g.hpp) into the P's runnext
// slot instead of its ring's tail, so that the G is the next one its P
// runs: the transfer guard's unwinding (stack_guard.cpp), which is not a
// yield. On an M that holds a P only.
void requeue_current_next(std::coroutine_handle<> h) noexcept;

}  // namespace mpg::detail
