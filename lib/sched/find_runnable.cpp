// lib/sched/find_runnable.cpp: the M's scheduling loop (Go's schedule and
// findRunnable), stealing, and giving the P up.
//
// Each M loops: find a runnable G on the P it holds, run it until it
// suspends, repeat. find_runnable() looks in this order, one named step
// each:
//   1. take_global_for_fairness(): every 61st tick, a batch of posted
//      functions and one G from the global queue first, so that it cannot
//      starve behind two Gs that keep readying each other;
//   2. poll_timers_and_io(): due timers; then, when the local queue is
//      empty or 16 ticks after the last such turn, this P's unsubmitted
//      SQEs are flushed and its ready I/O completions reaped (they ready
//      Gs here; Gs that park on channels and streams switch to the next G
//      without this loop, and put the turn off until their chain ends:
//      scheduler.cpp, "Switching at park");
//   3. pop_local(): the runnext slot, then the newest spawned G, then the
//      local queue (on every 61st tick the queue's head first, and,
//      failing that, the oldest spawned G if sysmon found it waiting for
//      kOldestSpawnWait); a runnext chain
//      (a G readying the next, which readies the next...) inherits the time
//      slice while it lasts (execute()) and keeps the slot at most
//      kMaxRunnextStreak turns in a row while other local work waits (a
//      turn that finds none restarts the count);
//   4. run_posted() (post.cpp): up to 32 functions posted through a
//      runtime_handle (also on step 1's tick); then take_global(): a batch
//      of up to len/procs + 1 from the global queue;
//   5. spin_for_work(): at most half as many Ms spin as there are busy Ps,
//      and an M whose P has I/O in flight starts no spin when no work is
//      queued anywhere (it sleeps in its ring, step 6); a
//      spinner makes kStealTries passes over the other Ps, each from a
//      random start with a random stride coprime to procs (Go's
//      stealOrder), taking half of a victim's queue (and, on the last pass,
//      a runnext G that sysmon marked stealable, and the victim's due
//      timers);
//   6. give_up_p(): the parking protocol of scheduler.cpp (P1-P4). An M
//      whose P has timers or I/O in flight parks the P and sleeps holding
//      it (T3 of p_ownership.cpp); otherwise it releases the P to the idle
//      list (T2) and sleeps until handed one.
#include <optional>

#include "mpg/detail/sched/fastrand.hpp"
#include "mpg/detail/sync/cpu_relax.hpp"
#include "sched/scheduler.hpp"
#include "sched/trace.hpp"

namespace mpg::detail {

// The steps of the hot path (1 to 4) are forced inline into
// find_runnable(): each runs on every scheduling tick, and a call per step
// costs pingpong about 5% more instructions (callgrind, perf/ab.py).

namespace {
constexpr int kStealTries = 4;
constexpr int kSpinRounds = 32;
constexpr int kSpinPauses = 64;
}  // namespace

void scheduler::m_main(machine* m) {
  set_current_m(m);
  guard_this_thread_stack();
  if (tracer_ != nullptr) [[unlikely]] m->trace = tracer_->attach(m->id);
  for (;;) {
    bool inherit = false;
    g* gp = find_runnable(m, &inherit);
    if (gp == nullptr) break;
    execute(m, gp, inherit);
    // The G left in mpg::blocking and found no P to come back to: this M
    // is already on the idle list (exit_blocking); sleep until handed one.
    if (m->p() == nullptr && !wait_for_p(m, std::nullopt)) break;
  }
  set_current_m(nullptr);
}

void scheduler::execute(machine* m, g* gp, bool inherit_time) {
  processor* p = m->p();
  // A runnext G inherits the time slice (tick and budget) only while the
  // slice lasts: once the budget is spent, the next G starts a new one, as
  // Go's sysmon ends a time slice that a runnext chain keeps inheriting
  // (forcePreemptNS). Otherwise two Gs that ready each other would freeze
  // the tick, and unless it froze on a multiple of 61 the global queue's
  // turn (step 1) would never come: a G readied there (by a plain thread,
  // or by sysmon running this P's timers) waited until the pair ended.
  if (!inherit_time || tls_budget <= 0) {
    // Single writer (the owner); relaxed: sampled by sysmon.
    p->schedtick.store(p->schedtick.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    tls_budget = kBudget;
  }
  begin_run(m, gp);
  if (m->trace != nullptr) [[unlikely]] traced_resume(m, gp);  // trace.hpp: the only cost when off
  else gp->resume.resume();
  // gp may already run elsewhere or be retired: do not touch it. The M may
  // also hold another P now, or none (mpg::blocking hands Ps over).
  if (m->p() != nullptr) m->p()->cur_gid.store(0, std::memory_order_relaxed);
  set_current_g(nullptr);
}

void scheduler::reset_spinning(machine* m) noexcept {
  m->spinning = false;
  // seq_cst: part of the parking protocol; if we were the last spinner,
  // start another so the remaining work keeps finding Ms.
  if (nmspinning_.fetch_sub(1, std::memory_order_seq_cst) == 1) wake_p();
}

g* scheduler::find_runnable(machine* m, bool* inherit_time) {
  for (;;) {
    *inherit_time = false;
    if (stopping()) return nullptr;
    if (g* gp = take_global_for_fairness(m)) return gp;
    poll_timers_and_io(m);
    if (g* gp = pop_local(m, inherit_time)) return gp;
    const bool ran_posted = posts_hint() && run_posted(m);
    if (g* gp = take_global(m)) return gp;
    if (ran_posted) continue;  // they may have readied Gs on this P
    g* found = nullptr;
    switch (spin_for_work(m, &found)) {
      case spin_result::found: return found;
      case spin_result::retry: continue;
      case spin_result::nothing: break;
    }
    switch (give_up_p(m, &found)) {
      case give_up_result::found: return found;
      case give_up_result::holds_p: continue;
      case give_up_result::stopping: return nullptr;
    }
  }
}

// 1.
[[gnu::always_inline]] inline g* scheduler::take_global_for_fairness(machine* m) {
  processor* p = m->p();
  const std::uint64_t tick = p->schedtick.load(std::memory_order_relaxed);
  if (tick < p->fair_tick) return nullptr;
  p->fair_tick = tick + 61;  // pop_local() reads the turn back from it
  if (posts_hint()) run_posted(m);  // posted functions get the same fairness tick (post.cpp)
  if (!global_nonempty()) return nullptr;
  g* gp;
  {
    thread_mutex_lock l(mu_);
    gp = global_get(m, 1);
  }
  if (gp != nullptr && m->spinning) reset_spinning(m);
  return gp;
}

// 2.
[[gnu::always_inline]] inline void scheduler::poll_timers_and_io(machine* m) {
  processor* p = m->p();
  if (p->timers.earliest_ns.load(std::memory_order_relaxed) != INT64_MAX)
    run_timers(p, mono_now_ns());
  // Submissions and completions are batched: both wait until the local
  // queue runs dry or 16 ticks after the last turn (Tokio polls its driver
  // every 61st task, Go's netpoll when a P finds no work), so Gs that each
  // issue an op share one io_uring_enter, and a reap finds several completions
  // rather than an empty CQ. A reap is not free even then: with
  // COOP_TASKRUN the kernel leaves completions as task_work and flags
  // IORING_SQ_TASKRUN, and the reap enters the kernel to run them.
  // Reaping at every tick, tcp_echo (64 connections) made 1.19 reaps per
  // message on 1 P, about 70% of them empty, and spent 60 instructions
  // more per message; on 2 Ps, 0.04 syscalls more per message (a sixth).
  // The turn is counted from the last one (io_turn_tick): the switches at
  // park and at finish move the tick without this loop (scheduler.cpp),
  // so a chain carries it past any given tick, and the pass where the
  // chain ends takes the turn that came due meanwhile; a turn kept only
  // at fixed ticks (multiples of 16) would leave the SQEs of the chain's
  // parks until the queue ran dry.
  reactor& io = *p->io;
  if (!io.busy()) return;
  const std::uint64_t tick = p->schedtick.load(std::memory_order_relaxed);
  if (p->runq.size() != 0 && tick - p->io_turn_tick < 16) return;
  p->io_turn_tick = tick;
  if (io.has_unsubmitted()) io.flush();
  reap_io(m);
}

// Waking after a reap. The completions an M reaps on its own P ready their
// Gs onto that P (reactor.cpp), and this M runs next. Each readying would
// call wake_p(), which starts a spinner while a P idles; but a single
// readied G is work for this M alone, and the spinner, woken through an
// eventfd write or a futex, spins, finds nothing and sleeps again: two
// context switches per completion (measured on http_hello with 2 Ps:
// 0.20 eventfd writes per request, against none for the floor). So while it
// reaps, the M only counts the Gs it readies (machine::reap_readied;
// ready_tail(), which I/O completions ready their Gs with, pushes them onto
// this P, as own-P pushes do (scheduler.cpp), but skips S2),
// and end_reap() runs S2 once, when there is work beyond the one G this M
// takes next: two or more readied, or one beside other local work. The
// same holds for an M asleep in its ring holding a parked P
// (wait_for_p()): there the count also keeps wake_p() from counting this
// M's own parked P as idle, which would wake this M (or the other
// sleeper) for a G this M is about to run. Go's netpoll does the same: the
// G it finds is run by the M that polled, and only the rest are injected
// with Ms started for them.
//
// That surplus wakes only a P that idles other than in its ring
// (wake_p_beyond_rings(): an unheld P, or one parked on its futex for a
// timer). An M asleep in its own ring has completions of its own coming,
// which wake it there; woken for our surplus instead, it steals a few Gs,
// runs them and sleeps again, two context switches each time (measured on
// http_hello with 2 Ps, both Ms serving connections: 0.26 to 0.41 context
// switches per request against 0.10 when they are not woken, and 1.18x
// to 1.24x the floor's CPU per request against 1.05x). The surplus is
// still balanced: the sleeper steals when its own completions wake it, and
// while it sleeps sysmon wakes a spinner for a P that it finds with two or
// more Gs queued on two samples in a row, a millisecond apart (sysmon.cpp).
// The Gs themselves are never stranded: they are on the P of the M that
// readied them, which runs them next. (reap_wake_tests checks both: that
// such Gs wake no M asleep in its ring, and that sysmon brings one when a
// P keeps them queued.)
void scheduler::reap_io(machine* m) {
  m->reap_readied = 0;
  m->p()->io->reap();
  end_reap(m);
}

void scheduler::end_reap(machine* m) noexcept {
  const int readied = m->reap_readied;
  m->reap_readied = -1;
  if (readied > 1 || (readied == 1 && m->p()->runq.size() > 1)) wake_p_beyond_rings();
}

// 3.
[[gnu::always_inline]] inline g* scheduler::pop_local(machine* m, bool* inherit_time) {
  const runnext_policy policy =
      m->runnext_streak >= kMaxRunnextStreak ? runnext_policy::skip : runnext_policy::take;
  bool from_next = false;
  run_queue::owner q = m->local_runq();
  g* gp = nullptr;
  // The fairness turn: a task that keeps spawning cannot keep the ring's
  // Gs, or the oldest spawned ones, waiting behind its newest spawns
  // (run_queue.hpp).
  processor* p = m->p();
  const std::uint64_t tick = p->schedtick.load(std::memory_order_relaxed);
  if (p->fair_tick == tick + 61) [[unlikely]] {  // step 1 took a fairness turn at this tick
    gp = q.pop_fifo();
    // The oldest spawn's turn is decided by sysmon, by time and by the
    // deque's size, not by ticks: each turn starts a subtree out of
    // depth-first order (sysmon.cpp, "Oldest spawns").
    if (gp == nullptr) [[unlikely]] {
      if (p->oldest_spawn_due.load(std::memory_order_relaxed)) {
        p->oldest_spawn_due.store(false, std::memory_order_relaxed);
        gp = q.pop_oldest_spawn();
      }
    }
  }
  if (gp == nullptr) gp = q.pop(policy, &from_next);
  if (gp == nullptr) {
    m->runnext_streak = 0;
    return nullptr;
  }
  // The streak counts turns that kept other local work waiting: under
  // skip, runnext comes last, so none waited and the streak restarts.
  m->runnext_streak = from_next && policy == runnext_policy::take ? m->runnext_streak + 1 : 0;
  *inherit_time = from_next;
  if (m->spinning) reset_spinning(m);
  return gp;
}

// 4.
[[gnu::always_inline]] inline g* scheduler::take_global(machine* m) {
  if (!global_nonempty()) return nullptr;
  g* gp;
  {
    thread_mutex_lock l(mu_);
    gp = global_get(m, 0);
  }
  if (gp != nullptr && m->spinning) reset_spinning(m);
  return gp;
}

// 5. Spin for a few tens of microseconds before giving the P up: while
// other Ps keep producing work, a parked M would be woken again at once,
// and a futex wake costs the producer microseconds (measured: spawn_join
// parked an M every 16 spawns without this).
scheduler::spin_result scheduler::spin_for_work(machine* m, g** found) {
  processor* p = m->p();
  if (!m->spinning) {
    // I/O-aware: an M whose own P has I/O in flight, and that sees no work
    // queued anywhere, sleeps in its ring at once (give_up_p, T3): what it
    // waits for are its own completions, which wake it there, and a spin
    // would take the CPU from the kernel and the peer that produce them.
    // Work that a running P queues meanwhile is reached by that P (the rule
    // for a non-spinning M that parks, scheduler.cpp); a G readied while a
    // P idles wakes a spinner through wake_p(), which spins as before.
    if (p->io->busy() && !work_queued() && !any_local_work()) return spin_result::nothing;
    if (2 * nmspinning_.load(std::memory_order_seq_cst) >=
        procs() - npidle_.load(std::memory_order_seq_cst))
      return spin_result::nothing;  // enough Ms spin already
    m->spinning = true;
    nmspinning_.fetch_add(1, std::memory_order_seq_cst);
  }
  for (int round = 0; round < kSpinRounds && !stopping(); ++round) {
    if (g* gp = steal_work(m)) {
      reset_spinning(m);
      *found = gp;
      return spin_result::found;
    }
    if (work_queued()) return spin_result::retry;
    if (p->io->busy()) {  // completions ready Gs here
      if (p->io->has_unsubmitted()) p->io->flush();
      reap_io(m);
    }
    bool from_next = false;
    // Readied by timers or I/O.
    if (g* gp = m->local_runq().pop(runnext_policy::take, &from_next)) {
      reset_spinning(m);
      *found = gp;
      return spin_result::found;
    }
    if (npidle_.load(std::memory_order_relaxed) + 1 >= procs()) break;  // nobody else works
    for (int i = 0; i < kSpinPauses; ++i) cpu_relax();
  }
  return spin_result::nothing;
}

g* scheduler::steal_work(machine* m) {
  processor* p = m->p();
  run_queue::owner mine = m->local_runq();
  const std::uint32_t n = procs();
  if (n == 1) return nullptr;
  for (int attempt = 0; attempt < kStealTries; ++attempt) {
    const bool last = attempt == kStealTries - 1;
    std::uint32_t pos = fastrandn(n);
    const std::uint32_t stride =
        steal_strides_[fastrandn(static_cast<std::uint32_t>(steal_strides_.size()))];
    for (std::uint32_t k = 0; k < n; ++k, pos = (pos + stride) % n) {
      processor* victim = ps_[pos].get();
      if (victim == p) continue;
      if (stopping()) return nullptr;
      if (last && victim->timers.earliest_ns.load(std::memory_order_relaxed) <= mono_now_ns()) {
        run_timers(victim, mono_now_ns());  // readies Gs onto our P
        bool from_next = false;
        if (g* gp = mine.pop(runnext_policy::take, &from_next)) return gp;
      }
      const runnext_policy take_next =
          last && victim->runnext_stealable.load(std::memory_order_relaxed) ? runnext_policy::take
                                                                            : runnext_policy::skip;
      std::uint32_t count = 0;
      if (g* gp = victim->runq.steal_into(mine, take_next, &count)) {
        steals_.fetch_add(1, std::memory_order_relaxed);
        stolen_.fetch_add(count, std::memory_order_relaxed);
        if (m->trace != nullptr) [[unlikely]] trace_steal(m, victim->id, count);
        return gp;
      }
    }
  }
  return nullptr;
}

bool scheduler::any_local_work() const noexcept {
  for (auto& p : ps_)
    if (!p->runq.empty_seq_cst()) return true;
  return false;
}

// any_surplus_work(): P3's look at the local queues (scheduler.cpp). Only
// a P's holder pushes onto its queue, and a holder with Gs queued is awake
// and runs them (it does not park with a queue; an M entering
// mpg::blocking hands its P on with the work, handoff_p; at the thread
// limit sysmon serves an unheld P with work): so one G queued on a P is
// reached by its holder when its current G suspends. The recheck looks for
// more than that, as end_reap does. Counting one G as work, a spinner that
// stopped just as a holder readied a completion's G woke an M for it (often
// itself) to spin again, and on a loaded machine, where a spin stretches
// past the next completion, each round of a ping-pong did so again (up to a
// quarter of the rounds in reap_wake_tests). What it costs: a G queued
// alone just as the last spinner stopped runs after its P's current G
// rather than beside it; sysmon wakes a spinner for it if that G runs for a
// millisecond (sysmon.cpp).
bool scheduler::any_surplus_work() const noexcept {
  for (auto& p : ps_)
    if (p->runq.surplus_seq_cst()) return true;
  return false;
}

// 6. Nothing to run: the parking protocol (scheduler.cpp, P1-P4).
scheduler::give_up_result scheduler::give_up_p(machine* m, g** found) {
  processor* p = m->p();
  std::int64_t next_timer = INT64_MAX;
  bool hold = false;
  g* gp = nullptr;
  {
    // P1. Under mu_: recheck the global queue, then put the P on the idle
    // list. Whether to hold it is decided under mu_ too: add_timer()
    // publishes a new earliest deadline before it takes mu_ to look at the
    // P's status, so either it sees the P parked (and wakes us) or we see
    // its timer here.
    thread_mutex_lock l(mu_);
    if (stopping()) return give_up_result::stopping;
    gp = global_get(m, 0);
    // Functions posted meanwhile: keep the P and go back to run them.
    if (gp == nullptr && posts_queued()) return give_up_result::holds_p;
    if (gp == nullptr) {
      if (auto hook = g_give_up_hook.load(std::memory_order_relaxed)) [[unlikely]]
        hook();
      next_timer = p->timers.earliest_ns.load(std::memory_order_relaxed);
      const bool has_io = p->io->busy();
      hold = next_timer != INT64_MAX || has_io;
      if (hold) {
        // T3: the P stays ours while we sleep.
        park_p(m, has_io ? sleep_site::ring : sleep_site::futex);
      } else {
        release_p(m);  // T2
        p->status = p_status::idle;
        pidle_put(p);
        stop_m(m);
      }
    }
  }
  if (gp != nullptr) {
    if (m->spinning) reset_spinning(m);
    *found = gp;
    return give_up_result::found;
  }
  // P2/P3.
  if (m->spinning) {
    m->spinning = false;
    nmspinning_.fetch_sub(1, std::memory_order_seq_cst);
    if ((work_queued() || any_surplus_work()) && recheck_found_work(m))
      return give_up_result::holds_p;
  } else if (posts_queued() && recheck_found_work(m)) {
    // P3 for posts (scheduler.cpp): a non-spinning M may park while no M
    // spins and its own P idles (spin_for_work's exit for an M with I/O in
    // flight), and posts are pushed without mu_, so P1's look can miss one
    // whose poster's S2 read npidle_ before our P1 raised it.
    return give_up_result::holds_p;
  }
  // P4.
  if (!wait_for_p(m, hold && next_timer != INT64_MAX ? std::optional<std::int64_t>(next_timer)
                                                      : std::nullopt))
    return give_up_result::stopping;
  return give_up_result::holds_p;
}

// recheck_found_work(): P3 found work after the last spinner's decrement,
// or a post after a non-spinning M's P1. Holding a parked P, take it back
// and spin again; without one, wake_p() finds the work an M (possibly this
// one: then our wait returns at once with the P it was handed). True if
// this M holds a P to run now.
bool scheduler::recheck_found_work(machine* m) {
  {
    thread_mutex_lock l(mu_);
    if (m->p() != nullptr) {
      // Our parked P: handed back already (mailbox) or still parked.
      if (!take_handoff(m)) unpark_p(m);
      if (!m->spinning) {
        m->spinning = true;
        nmspinning_.fetch_add(1, std::memory_order_seq_cst);
      }
      return true;
    }
  }
  wake_p();
  return false;
}

}  // namespace mpg::detail
