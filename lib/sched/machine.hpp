// lib/sched/machine.hpp: the M, an OS thread that runs Gs while it holds a P, and
// its parker (a futex word with an optional deadline).
//
// An M is created by the scheduler (start_m) when work appears and no idle M
// exists, and lives until the runtime stops. Its per-thread scheduling state
// (current G, budget, runnext streak) lives here, not in the P, because it
// belongs to the thread's current run, not to the queue.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <thread>

#include "mpg/detail/sched/g.hpp"

namespace mpg::detail {

class processor;
class scheduler;

// Cooperative budget of a G's time slice: runtime awaits that complete
// without suspending consume one unit each (g.hpp).
inline constexpr int kBudget = 128;

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

class machine {
 public:
  machine(scheduler* s, std::uint32_t id) : sched(s), id(id) {}

  scheduler* const sched;
  const std::uint32_t id;
  std::thread thread;
  parker park;

  // The P this M holds (owner: this M). Written by the waker before unpark
  // when it hands a P over (next_p), taken by this M after park returns.
  processor* p = nullptr;
  processor* next_p = nullptr;
  bool spinning = false;        // counted in scheduler::nmspinning_
  bool next_spinning = false;   // handed over with next_p
  machine* idle_next = nullptr; // under the scheduler lock
  bool in_ring = false;
  processor* blocking_from = nullptr;  // the P given up by mpg::blocking

  // Current run.
  int budget = 0;
  std::uint32_t runnext_streak = 0;
  std::uint64_t rand_state = 0;

  std::uint32_t fastrand() noexcept {
    // xorshift64*: cheap and good enough for victim order and the 1/61 tick.
    rand_state ^= rand_state >> 12;
    rand_state ^= rand_state << 25;
    rand_state ^= rand_state >> 27;
    return static_cast<std::uint32_t>((rand_state * 0x2545F4914F6CDD1DULL) >> 32);
  }
};

// The M running on this thread (nullptr on other threads).
machine* current_m() noexcept;
void set_current_m(machine* m) noexcept;
// The G this thread runs (current_g() in g.hpp reads it).
void set_current_g(g* gp) noexcept;

}  // namespace mpg::detail
