// lib/sched/find_runnable.cpp: the M's scheduling loop (Go's schedule and
// findRunnable), stealing, and parking an M.
//
// Each M loops: find a runnable G, run it until it suspends, repeat. Where a
// G is looked for, in order:
//   1. every 61st tick, one G from the global queue first, so the global
//      queue cannot starve behind two Gs that keep readying each other;
//   2. due timers and ready I/O completions of this P (they ready Gs here;
//      SQEs are flushed when the local queue is empty or every 16th tick);
//   3. the local runnext slot, then the local queue; a runnext chain (a G
//      readying the next, which readies the next...) inherits the time slice
//      but may keep the slot for at most kMaxRunnextStreak turns in a row
//      while the local queue has work;
//   4. the global queue (a batch of up to len/procs + 1);
//   5. steal: at most half as many Ms spin as there are busy Ps; a spinner
//      tries every other P four times in random order, taking half of its
//      queue (and, on the last pass, a runnext G that sysmon marked stale,
//      and the timers that are due);
//   6. give up: the parking protocol of scheduler.cpp (P1-P4). An M whose P
//      has timers or I/O in flight sleeps holding the P (in its ring, or on
//      its futex with the next deadline); otherwise it releases the P to the
//      idle list and parks on its futex.
#include <optional>

#include "sched/reactor_hook.hpp"
#include "sched/scheduler.hpp"

namespace mpg::detail {

namespace {
constexpr std::uint32_t kMaxRunnextStreak = 32;
constexpr int kStealTries = 4;
constexpr int kSpinRounds = 32;
constexpr int kSpinPauses = 64;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

std::chrono::steady_clock::time_point to_time_point(std::int64_t ns) {
  return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(ns));
}
}  // namespace

void scheduler::m_main(machine* m) {
  set_current_m(m);
  for (;;) {
    bool inherit = false;
    g* gp = find_runnable(m, &inherit);
    if (gp == nullptr) break;
    execute(m, gp, inherit);
    if (m->p == nullptr) {
      // The G left in mpg::blocking and found no P: idle until handed one.
      {
        thread_mutex_lock l(mu_);
        m->idle_next = midle_;
        midle_ = m;
      }
      park_m(m, nullptr, std::nullopt);
      if (m->p == nullptr) break;  // stopping
    }
  }
  set_current_m(nullptr);
}

void scheduler::execute(machine* m, g* gp, bool inherit_time) {
  processor* p = m->p;
  if (!inherit_time) {
    // Single writer (the owner); relaxed: sampled by sysmon.
    p->schedtick.store(p->schedtick.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    m->budget = kBudget;
  } else if (m->budget <= 0) {
    m->budget = kBudget / 4;
  }
  processor::bump(p->tasks_run);
  set_current_g(gp);
  gp->status.store(g_status::running, std::memory_order_relaxed);
  gp->started.store(true, std::memory_order_relaxed);
  p->cur_gid.store(gp->id.load(std::memory_order_relaxed), std::memory_order_relaxed);
  p->cur_name.store(gp->name.load(std::memory_order_relaxed), std::memory_order_relaxed);
  gp->resume.resume();
  // gp may already run elsewhere or be retired: do not touch it. The M may
  // also hold another P now (blocking calls hand Ps over).
  if (m->p != nullptr) m->p->cur_gid.store(0, std::memory_order_relaxed);
  set_current_g(nullptr);
}

void scheduler::reset_spinning(machine* m) noexcept {
  m->spinning = false;
  // seq_cst: part of the parking protocol; if we were the last spinner,
  // start another so the remaining work keeps finding Ms.
  if (nmspinning_.fetch_sub(1, std::memory_order_seq_cst) == 1) wake_p();
}

g* scheduler::steal_work(machine* m, processor* p) {
  const std::uint32_t n = procs();
  for (int attempt = 0; attempt < kStealTries; ++attempt) {
    const bool last = attempt == kStealTries - 1;
    const std::uint32_t start = m->fastrand() % n;
    for (std::uint32_t k = 0; k < n; ++k) {
      processor* victim = ps_[(start + k) % n].get();
      if (victim == p) continue;
      if (stopping()) return nullptr;
      if (last && victim->timers.earliest_ns.load(std::memory_order_relaxed) <= now_ns()) {
        run_timers(victim, now_ns());  // readies Gs onto our P
        bool from_next = false;
        if (g* gp = p->runq.owner_pop(false, &from_next)) return gp;
      }
      const bool take_next = last && victim->runnext_stealable.load(std::memory_order_relaxed);
      std::uint32_t count = 0;
      if (g* gp = victim->runq.steal_into(p->runq, take_next, &count)) {
        steals_.fetch_add(1, std::memory_order_relaxed);
        stolen_.fetch_add(count, std::memory_order_relaxed);
        return gp;
      }
    }
  }
  return nullptr;
}

bool scheduler::unlist_idle_m(machine* m) noexcept {
  for (machine** mm = &midle_; *mm != nullptr; mm = &(*mm)->idle_next) {
    if (*mm == m) {
      *mm = m->idle_next;
      m->idle_next = nullptr;
      return true;
    }
  }
  return false;
}

processor* scheduler::check_runqs_no_p() noexcept {
  for (auto& p : ps_)
    if (!p->runq.empty_seq_cst()) return p.get();
  return nullptr;
}

g* scheduler::find_runnable(machine* m, bool* inherit_time) {
  *inherit_time = false;
top:
  if (stopping()) return nullptr;
  processor* p = m->p;

  // 1. Global queue fairness.
  if (p->schedtick.load(std::memory_order_relaxed) % 61 == 0 && global_nonempty()) {
    g* gp;
    {
      thread_mutex_lock l(mu_);
      gp = global_get(p, 1);
    }
    if (gp != nullptr) {
      if (m->spinning) reset_spinning(m);
      return gp;
    }
  }

  // 2. Timers and I/O of this P.
  if (p->timers.earliest_ns.load(std::memory_order_relaxed) != INT64_MAX)
    run_timers(p, now_ns());
  // Completions are reaped every tick (no syscall unless the kernel has
  // task_work for us); submissions are batched: flushed when the local
  // queue runs dry or every 16th tick, so Gs that each issue an op share
  // one io_uring_enter.
  if (reactor_busy(p->io.get())) {
    const bool flush = p->runq.size() == 0 || (p->schedtick.load(std::memory_order_relaxed) & 15) == 0;
    reactor_poll(p->io.get(), flush);
  }

  // 3. Local work.
  {
    const bool skip_next = m->runnext_streak >= kMaxRunnextStreak;
    bool from_next = false;
    if (g* gp = p->runq.owner_pop(skip_next, &from_next)) {
      m->runnext_streak = from_next ? m->runnext_streak + 1 : 0;
      *inherit_time = from_next;
      if (m->spinning) reset_spinning(m);
      return gp;
    }
    m->runnext_streak = 0;
  }

  // 4. Global queue.
  if (global_nonempty()) {
    g* gp;
    {
      thread_mutex_lock l(mu_);
      gp = global_get(p, 0);
    }
    if (gp != nullptr) {
      if (m->spinning) reset_spinning(m);
      return gp;
    }
  }

  // 5. Steal, if not too many Ms spin already.
  if (m->spinning || 2 * nmspinning_.load(std::memory_order_seq_cst) <
                         procs() - npidle_.load(std::memory_order_seq_cst)) {
    if (!m->spinning) {
      m->spinning = true;
      nmspinning_.fetch_add(1, std::memory_order_seq_cst);
    }
    // Spin for a few tens of microseconds before giving the P up: while
    // other Ps keep producing work, a parked M would be woken again at once,
    // and a futex wake costs the producer microseconds (measured: spawn_join
    // parked an M every 16 spawns without this).
    for (int round = 0; round < kSpinRounds && !stopping(); ++round) {
      if (g* gp = steal_work(m, p)) {
        reset_spinning(m);
        return gp;
      }
      if (global_nonempty()) goto top;
      if (reactor_busy(p->io.get())) reactor_poll(p->io.get(), true);  // completions ready Gs here
      bool from_next = false;
      if (g* gp = p->runq.owner_pop(false, &from_next)) {  // readied by timers we ran
        reset_spinning(m);
        return gp;
      }
      if (npidle_.load(std::memory_order_relaxed) + 1 >= procs()) break;  // nobody else works
      for (int i = 0; i < kSpinPauses; ++i) cpu_relax();
    }
  }

  // 6. Nothing to run. P1: recheck the global queue under the lock, then
  // put the P on the idle list.
  // Whether to hold the P is decided under mu_: add_timer() publishes the
  // new earliest deadline before it takes mu_ to look at the P's status, so
  // either it sees us idle/parked (and wakes us) or we see its timer here.
  std::int64_t next_timer;
  bool has_io;
  bool hold;
  {
    mu_.lock();
    next_timer = p->timers.earliest_ns.load(std::memory_order_relaxed);
    has_io = reactor_busy(p->io.get());
    hold = next_timer != INT64_MAX || has_io;
    if (stopping()) {
      mu_.unlock();
      return nullptr;
    }
    if (g* gp = global_get(p, 0)) {
      mu_.unlock();
      if (m->spinning) reset_spinning(m);
      return gp;
    }
    pidle_put(p);
    if (hold) {
      p->status = p_status::parked;
      p->parked_m = m;
      m->in_ring = has_io;
    } else {
      p->status = p_status::idle;
      m->p = nullptr;
      m->idle_next = midle_;
      midle_ = m;
    }
    mu_.unlock();
  }
  // P2/P3: the last spinner rechecks every queue after its decrement.
  if (m->spinning) {
    m->spinning = false;
    nmspinning_.fetch_sub(1, std::memory_order_seq_cst);
    if (global_nonempty() || check_runqs_no_p() != nullptr) {
      processor* got = nullptr;
      machine* other = nullptr;  // an M sleeping holding the P we took
      bool other_ring = false;
      {
        thread_mutex_lock l(mu_);
        if (hold) {
          if (p->status == p_status::parked && p->parked_m == m && pidle_remove(p)) got = p;
        } else if (unlist_idle_m(m)) {
          got = pidle_get();
          if (got != nullptr && got->status == p_status::parked) {
            // Its M sleeps holding it: hand the work to that M, park ourselves.
            other = got->parked_m;
            other_ring = other->in_ring;
            got->parked_m = nullptr;
            got->status = p_status::running;
            other->next_p = got;
            other->next_spinning = false;
          }
          if (got == nullptr || other != nullptr) {
            m->idle_next = midle_;
            midle_ = m;
          }
        }
        if (got != nullptr && other == nullptr) {
          got->status = p_status::running;
          got->parked_m = nullptr;
          m->p = got;
          m->in_ring = false;
          m->spinning = true;
          nmspinning_.fetch_add(1, std::memory_order_seq_cst);
        }
      }
      if (other != nullptr) {
        wake_machine(other, other_ring, got);
      } else if (got != nullptr) {
        goto top;
      }
    }
  }
  // P4.
  park_m(m, hold ? p : nullptr,
         hold && next_timer != INT64_MAX ? std::optional<std::int64_t>(next_timer) : std::nullopt);
  if (stopping()) return nullptr;
  // If handed a P by wake_p, m->spinning is set and already counted.
  goto top;
}

// park_m(): sleep until handed a P (or, holding `held`, until its deadline,
// an I/O completion or a wake). On return m->p is set unless stopping.
void scheduler::park_m(machine* m, processor* held, std::optional<std::int64_t> until_ns) {
  parks_.fetch_add(1, std::memory_order_relaxed);
  for (;;) {
    std::optional<std::chrono::steady_clock::time_point> deadline;
    if (until_ns) deadline = to_time_point(*until_ns);
    bool in_ring = false;
    if (held != nullptr) {
      thread_mutex_lock l(mu_);
      in_ring = m->in_ring;
    }
    if (held != nullptr && in_ring) {
      reactor_wait(held->io.get(), deadline);
    } else {
      m->park.park(deadline);
    }
    thread_mutex_lock l(mu_);
    if (m->next_p != nullptr) {
      // Handed a P (our own held one, or an idle one by start_m).
      m->p = m->next_p;
      m->next_p = nullptr;
      m->spinning = m->next_spinning;
      m->next_spinning = false;
      m->in_ring = false;
      return;
    }
    if (stopping()) {
      if (held != nullptr && held->status == p_status::parked && held->parked_m == m) {
        pidle_remove(held);
        held->status = p_status::running;
        held->parked_m = nullptr;
      }
      return;
    }
    if (held != nullptr) {
      // Woken by our deadline, a completion or a stray wake: take the P back
      // (nobody handed it away, or next_p would be set).
      if (held->status == p_status::parked && held->parked_m == m) {
        pidle_remove(held);
        held->status = p_status::running;
        held->parked_m = nullptr;
        m->in_ring = false;
        m->p = held;
        return;
      }
      // Taken over (exit_blocking): become an ordinary idle M.
      held = nullptr;
      until_ns.reset();
      m->in_ring = false;
      m->p = nullptr;
      m->idle_next = midle_;
      midle_ = m;
    }
    // Spurious wake without a P: park again.
  }
}

}  // namespace mpg::detail
