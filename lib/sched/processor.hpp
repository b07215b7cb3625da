// lib/sched/processor.hpp: the P, a logical processor (Go's p).
//
// A P is a value that an M acquires and releases: everything an M needs to
// run Gs without locks lives here, so handing the P to another M (idle
// handoff, blocking calls) hands over the work with it. Fields marked
// "owner" are touched only by the M that holds the P (machine::p()); who
// holds it is decided by one mechanism, p_ownership.cpp, whose hand-offs
// (under the scheduler lock, then through the M's parker or ring) order
// those fields between successive owners.
#pragma once

#include <absl/base/thread_annotations.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "mpg/detail/sched/g.hpp"
#include "mpg/detail/sched/timer.hpp"
#include "io/reactor.hpp"
#include "sched/g_pool.hpp"
#include "sched/run_queue.hpp"
#include "sched/thread_mutex.hpp"

namespace mpg::detail {

class machine;

// Who holds a P (under the scheduler lock; p_ownership.cpp):
enum class p_status : std::uint8_t {
  idle,     // on the idle list, held by no M: any M may acquire it
  parked,   // on the idle list, but held by parked_m, which sleeps (on its
            // futex or in this P's ring) until a deadline, a completion or
            // a wake; nobody else may acquire it, work for it wakes that M
  running,  // held by an M that runs Gs (or is handing it to another M)
};

// A 4-ary min-heap of timers by deadline, guarded by its own lock so that
// any M (or sysmon) can run the timers of a P that is busy or idle.
struct timer_heap {
  thread_mutex mu;
  std::vector<timer*> heap ABSL_GUARDED_BY(mu);
  // Earliest deadline in ns since the clock's epoch, INT64_MAX when empty.
  // Relaxed: a hint for the lock-free "anything due?" check; the heap under
  // the lock is the truth.
  std::atomic<std::int64_t> earliest_ns{INT64_MAX};
  // One thread runs this P's due timers at a time; the timer it is firing.
  std::atomic<bool> firing{false};
  std::atomic<timer*> firing_now{nullptr};
};

class processor {
 public:
  // The most dead Gs a P keeps (gfree); a retire that finds it full moves
  // half to the scheduler's global pool.
  static constexpr std::size_t kGfreeMax = 128;
  // The most Gs a P allocates at a time (g_pools.cpp, allocate_gs).
  static constexpr std::uint32_t kGBlockMax = 256;

  processor(std::uint32_t id, std::uint32_t queue_capacity)
      : id(id), runq(queue_capacity), overflow(queue_capacity / 2 + 1) {}

  const std::uint32_t id;
  run_queue runq;

  // Under the scheduler lock.
  p_status status = p_status::idle;
  processor* idle_next = nullptr;
  machine* parked_m = nullptr;  // the M that holds this P while it sleeps (status parked)

  // owner: scratch space for moving half the local queue to the global one.
  std::vector<g*> overflow;
  // owner: free Gs for spawn (Go's gFree) and a batch of G ids. A retire
  // pushes before it moves half out when the pool holds kGfreeMax, so
  // kGfreeMax + 1 is its most.
  g_pool gfree{kGfreeMax + 1};
  // owner: the Gs of this P's last block (g_pools.cpp, allocate_gs) not yet
  // handed out, [fresh_next, fresh_end): made and registered, dead until
  // gfree runs empty and take_fresh_g() moves a batch of them into it; and
  // the size of the P's next block.
  g* fresh_next = nullptr;
  g* fresh_end = nullptr;
  std::uint32_t g_block_size = 32;
  std::uint64_t next_gid = 0;
  std::uint64_t gid_limit = 0;

  // Scheduling ticks: owner-written, read by sysmon (relaxed: a monotonic
  // counter sampled for "has this P switched G since last time").
  std::atomic<std::uint64_t> schedtick{0};
  // The tick of the next fairness turn of the M's loop (find_runnable.cpp,
  // step 1). The switches at finish and at park go back to the loop once
  // the tick reaches it, and the loop takes the turn at the first tick at
  // or past it (every tick is one more than the last, but a task back from
  // mpg::blocking moves the tick outside the loop: blocking.cpp), and sets
  // the next one 61 ticks on: the tick of the last turn is fair_tick - 61.
  // Owner only; a comparison where a "tick % 61" would cost a
  // multiplication and shifts on every switch.
  std::uint64_t fair_tick = 0;
  // The tick of the loop's last I/O turn (find_runnable.cpp, step 2: the
  // next one is due 16 ticks on). Owner only.
  std::uint64_t io_turn_tick = 0;
  // The id of the G running on this P, 0 between Gs (owner-written,
  // relaxed: sysmon samples it with schedtick to spot long-running Gs).
  std::atomic<std::uint64_t> cur_gid{0};
  std::atomic<const char*> cur_name{nullptr};
  // Set by sysmon when the P has run one G for a whole sysmon period, or
  // is left unheld with work at the thread limit (sysmon.cpp): then
  // thieves may take its runnext G (otherwise the owner runs it next).
  std::atomic<bool> runnext_stealable{false};
  // Set by sysmon when the oldest entry of this P's spawn deque has waited
  // there for kOldestSpawnWait (sysmon.cpp); the owner clears it when its
  // next fairness tick runs that entry (find_runnable.cpp, pop_local).
  // Relaxed: a hint between two threads that publishes no data; a flag
  // seen late delays that turn by a tick or a sysmon period, and the entry
  // is taken with the deque's own synchronisation (steal()).
  std::atomic<bool> oldest_spawn_due{false};
  std::atomic<std::uint64_t> reported_tick{UINT64_MAX};

  timer_heap timers;
  // The P's io_uring ring (io/reactor.hpp); it moves with the P.
  std::unique_ptr<reactor> io;

  // Statistics: single writer at a time (the owner), read by stats().
  std::atomic<std::uint64_t> tasks_run{0};
  std::atomic<std::uint64_t> spawned{0};
  std::atomic<std::uint64_t> completed{0};

  static void bump(std::atomic<std::uint64_t>& c) noexcept {
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
};

}  // namespace mpg::detail
