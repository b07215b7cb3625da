// lib/sched/p_ownership.cpp: who holds a P, and every way a P changes hands
// (Go's acquirep, releasep, handoffp, startm, stopm and wakep).
//
// The rule. A P is held by at most one M at a time. Only the M holding a P
// runs Gs on it, pushes onto its run queue (run_queue::owner, which only
// machine::local_runq() makes, for the P the M holds) or writes its owner
// fields. Every change of holder is made by the functions of this file,
// under the scheduler lock mu_, and is recorded in fields that change
// together under that lock: p->status, p->parked_m, m->p_, and m->next_p
// (the mailbox through which a sleeping M is handed a P).
//
// States of a P (processor.hpp):
//   running  held by m (m->p_ == p); not on the idle list.
//   parked   held by parked_m (parked_m->p_ == p), which sleeps; on the
//            idle list, so that npidle_ counts it and wake_p() finds it.
//   idle     held by nobody; on the idle list.
// Transitions (T1-T5), each under mu_:
//   T1 acquire_p(m, p): idle -> running. An M takes an unheld P.
//   T2 release_p(m), then pidle_put(p): running -> idle. The M has nothing
//      pending on the P (find_runnable's give-up), or hands it off with no
//      work (handoff_p).
//   T3 park_p(m): running -> parked. The M has nothing to run but the P has
//      timers or I/O in flight, so the M sleeps holding it, until the next
//      deadline (futex) or a completion (in the P's ring). unpark_p(m) is
//      the way back, taken by the holder itself when it wakes.
//   T4 assign_m(p): give a P to an M that will run it. An idle P goes to an
//      idle M through its mailbox (next_p, then unpark) or to a new M; a
//      parked P goes back to its own holder, through the same mailbox
//      (next_p == p, which it already holds), with the spinning flag that
//      the waker decided.
//   T5 handoff_p(p): an M entering mpg::blocking released p (T2's first
//      half); p goes through T4 if it has work, else to the idle list.
//
// The choice: an M asleep in its ring keeps its P, exclusively. Nobody else
// acquires a parked P: work for it (wake_p, a timer added from another
// thread, an M leaving mpg::blocking that finds no unheld P) wakes its
// holder instead, which then runs that work. The alternative is Go's: the M
// releases the P before it sleeps in the poller, and the Gs it readies wait
// off-P until it re-acquires one (netpoll, then injectglist). That fits one
// global poller; mpg has one ring per P, and a sleeping M can only sleep in
// the ring of the P whose I/O it waits for. Releasing the P would let its
// next holder submit and reap on that ring while the sleeper sits in
// io_uring_enter on it, and would leave the sleeper holding readied Gs for
// a P it no longer holds. Keeping the P:
//   - the completions the sleeper reaps are readied onto its own P's queue,
//     by its owner, so the run queue's single-producer rule holds;
//   - no G ever waits off-P for its M to find a P again;
//   - the cost: an M leaving mpg::blocking cannot take a parked P. It queues
//     its G globally and wakes the holder (one eventfd write or futex
//     wake), which is Go's exitsyscall0 path.
//
// No lost hand-off. A sleeping M is only ever woken after its mailbox is
// written under mu_ (or, holding a parked P, for its deadline, a completion
// or a stray wake); it reads the mailbox under mu_ after waking, and a wake
// sent before it sleeps is kept by the parker's permit or by the ring's
// wake eventfd (machine.hpp, io/reactor.hpp). An M that leaves
// mpg::blocking with no P queues its G globally and lists itself idle in
// one critical section (exit_blocking): a start_m() racing with it either
// runs before (then the G is not yet queued, and the exiting M takes the P
// that start_m left idle... or finds it taken and queues) or after, and
// then finds this M on the idle list. Listing the M only after the lock is
// released would let start_m find no idle M and, at the thread limit,
// leave the P idle beside the queued G and the idle M.
//
// Thread limit (runtime_options::max_threads). assign_m() needs an M and
// none is idle and none may be started, because max_threads exist or because
// the OS refused the thread (m_refused_, until an M starts): the P is left
// idle, and while it has work sysmon serves it as it serves a P stuck in a
// long G (serve_unheld_ps()): it runs its due timers, reaps its ring, marks
// its runnext G stealable (no holder will run it next) and wakes a spinner
// for its Gs. If another M sleeps holding a parked P, the work is handed to
// that one (spinning, it steals the queue and runs due timers of the unheld
// P; it takes the runnext G once sysmon has marked it, and sysmon's wakes
// bring it back for that). Otherwise every M is running a P or inside
// mpg::blocking; the first to come back from mpg::blocking takes the unheld
// P (exit_blocking), and meanwhile sysmon serves it. If no M comes back (the
// blocking calls wait for the Gs left on that P), sysmon reports it after
// runtime_options::thread_starvation_threshold (thread_limit.cpp) and the
// runtime goes on.
#include <cerrno>
#include <cstdio>
#include <exception>
#include <optional>
#include <system_error>
#include <thread>

#include "sched/scheduler.hpp"
#include "sched/trace.hpp"

namespace mpg::detail {

// ---------------------------------------------------------------------------
// T1-T3: an M and the P it holds.

void scheduler::acquire_p(machine* m, processor* p) noexcept {
  p->status = p_status::running;
  p->parked_m = nullptr;
  end_unheld_mark(p);
  m->p_ = p;
  m->sleeps_in = sleep_site::futex;
}

void scheduler::end_unheld_mark(processor* p) noexcept {
  // The P has a holder again, which runs its runnext G next: the mark that
  // sysmon gives an unheld P (serve_unheld_ps) ends here, under mu_ as it
  // is set. Relaxed: a thief that still sees it takes at most that one G,
  // the runnext slot's protocol deciding between it and the holder
  // (run_queue.hpp, "Taking runnext").
  p->runnext_stealable.store(false, std::memory_order_relaxed);
}

processor* scheduler::release_p(machine* m) noexcept {
  processor* p = m->p_;
  m->p_ = nullptr;
  m->sleeps_in = sleep_site::futex;
  return p;
}

void scheduler::park_p(machine* m, sleep_site site) noexcept {
  processor* p = m->p_;
  pidle_put(p);
  p->status = p_status::parked;
  p->parked_m = m;
  m->sleeps_in = site;
  // Relaxed: read as a hint only (scheduler.hpp); mu_ orders the writes.
  if (site == sleep_site::ring) nring_parked_.fetch_add(1, std::memory_order_relaxed);
}

void scheduler::unpark_p(machine* m) noexcept {
  processor* p = m->p_;
  // Nobody but the holder moves a parked P off the idle list (T4 hands it
  // to the holder through the mailbox instead), so it is still there.
  unlist_parked(p, m);
  acquire_p(m, p);
}

void scheduler::unlist_parked(processor* p, machine* holder) noexcept {
  pidle_remove(p);
  if (holder->sleeps_in == sleep_site::ring) nring_parked_.fetch_sub(1, std::memory_order_relaxed);
}

// take_handoff(): the mailbox, read by the M it belongs to after waking.
bool scheduler::take_handoff(machine* m) noexcept {
  if (m->next_p == nullptr) return false;
  // Either an idle P given to an idle M (m->p_ is null), or this M's own
  // parked P given back (m->p_ == next_p); assign_m() already marked it
  // running and took it off the idle list.
  m->p_ = m->next_p;
  m->next_p = nullptr;
  m->spinning = m->next_spin == spin_state::spinning;
  m->next_spin = spin_state::idle;
  m->sleeps_in = sleep_site::futex;
  return true;
}

// ---------------------------------------------------------------------------
// T4: giving a P to an M.

// assign_m(): p (off the idle list, or never on it) goes to an M. Returns
// the M to wake once mu_ is released; none when a new M was started with p,
// or when p was left idle at the thread limit (then the spinning count
// taken for it is given back).
m_wakeup scheduler::assign_m(processor* p, spin_state spin) noexcept {
  if (p->status == p_status::parked) {
    machine* holder = p->parked_m;
    unlist_parked(p, holder);
    p->status = p_status::running;
    p->parked_m = nullptr;
    holder->next_p = p;
    holder->next_spin = spin;
    return m_wakeup{holder, p, holder->sleeps_in};
  }
  if (machine* m = midle_get()) {
    p->status = p_status::running;
    end_unheld_mark(p);
    m->next_p = p;
    m->next_spin = spin;
    return m_wakeup{m, p, sleep_site::futex};
  }
  if (allm_.size() < opts_.max_threads) {
    // The OS may refuse the thread (EAGAIN: RLIMIT_NPROC, a cgroup's pids
    // limit, memory) or memory may run out: then p takes the thread-limit
    // path below, as if max_threads were reached (sysmon's wake_p() for
    // its work retries), and the first refusal is said on stderr. Letting
    // the exception out of this noexcept function ended the process.
    try {
      allm_.push_back(std::make_unique<machine>(this, static_cast<std::uint32_t>(allm_.size())));
      machine* m = allm_.back().get();
      acquire_p(m, p);
      m->spinning = spin == spin_state::spinning;
      // Started under the lock so that stop(), which lists the Ms under it
      // after setting stopping_, always finds the thread to join.
      threads_.fetch_add(1, std::memory_order_relaxed);
      try {
        if (auto refuse = g_m_start_refuse_hook.load(std::memory_order_relaxed)) [[unlikely]] {
          if (refuse()) throw std::system_error(EAGAIN, std::generic_category(), "test hook");
        }
        m->thread = std::thread([this, m] { m_main(m); });
      } catch (...) {
        threads_.fetch_sub(1, std::memory_order_relaxed);
        release_p(m);
        allm_.pop_back();
        throw;
      }
      m_refused_ = false;
      return {};
    } catch (const std::exception& e) {
      m_refused_ = true;
      std::snprintf(m_refused_why_, sizeof m_refused_why_, "%s", e.what());
      static std::atomic<bool> said{false};
      if (!said.exchange(true, std::memory_order_relaxed))
        std::fprintf(stderr, "mpg: could not start an M (%s): its P waits for another M\n",
                     e.what());
    }
  }
  // Thread limit (see the top of the file).
  p->status = p_status::idle;
  pidle_put(p);
  // Relaxed: sysmon reads the flag as a hint and rechecks under mu_.
  if (has_work_locked(p)) unheld_work_.store(true, std::memory_order_relaxed);
  if (processor* q = pidle_first_parked()) return assign_m(q, spin);
  if (spin == spin_state::spinning) nmspinning_.fetch_sub(1, std::memory_order_seq_cst);
  return {};
}

void scheduler::start_m(processor* p, spin_state spin) noexcept {
  m_wakeup wake;
  {
    thread_mutex_lock l(mu_);
    if (stopping_.load(std::memory_order_relaxed)) p = nullptr;
    else if (p == nullptr) p = pidle_get();
    if (p == nullptr) {
      if (spin == spin_state::spinning) nmspinning_.fetch_sub(1, std::memory_order_seq_cst);
      return;
    }
    wake = assign_m(p, spin);
  }
  if (wake) send_wakeup(wake);
}

void scheduler::wake_p() noexcept {
  // S2 of the parking protocol (scheduler.cpp): seq_cst loads, after the
  // seq_cst publication of S1.
  if (npidle_.load(std::memory_order_seq_cst) == 0) return;
  if (nmspinning_.load(std::memory_order_seq_cst) != 0) return;
  std::uint32_t zero = 0;
  if (!nmspinning_.compare_exchange_strong(zero, 1, std::memory_order_seq_cst)) return;
  start_m(nullptr, spin_state::spinning);
}

void scheduler::wake_p_beyond_rings() noexcept {
  // Relaxed loads: a filter in front of wake_p(), whose own seq_cst loads
  // are S2. The Gs it is called for are already on a P whose holder runs
  // them (find_runnable.cpp, "Waking after a reap"), so a wake skipped on
  // a stale count delays no G past that holder, and one made on a stale
  // count is an ordinary wake_p().
  if (npidle_.load(std::memory_order_relaxed) <= nring_parked_.load(std::memory_order_relaxed))
    return;
  wake_p();
}

// ---------------------------------------------------------------------------
// T5 and the Ms without a P.

bool scheduler::has_work_locked(processor* p) const noexcept {
  // Under mu_: add_timer() publishes a new earliest deadline before it takes
  // mu_ to look at the P's status, so either it finds the P idle afterwards
  // (and starts an M for it) or this read, after our lock, sees the timer.
  // The P's queue has no producer while nobody holds it, and the global
  // queue is guarded by mu_. Posted functions (post.cpp) are pushed without
  // a lock: a post that this read misses is followed by its poster's
  // wake_p(), which sees the P idle.
  return p->runq.size() != 0 || gsize_.load(std::memory_order_relaxed) != 0 ||
         posts_queued() ||
         p->timers.earliest_ns.load(std::memory_order_relaxed) != INT64_MAX || p->io->busy();
}

void scheduler::handoff_p(processor* p) noexcept {
  m_wakeup wake;
  bool went_idle = false;
  {
    thread_mutex_lock l(mu_);
    if (!stopping_.load(std::memory_order_relaxed) && has_work_locked(p)) {
      wake = assign_m(p, spin_state::idle);
    } else {
      p->status = p_status::idle;
      pidle_put(p);
      went_idle = true;
    }
  }
  if (wake) send_wakeup(wake);
  // An idle P may be wanted by work that a running M published while it
  // still counted this P as busy: let wake_p decide.
  if (went_idle) wake_p();
}

// stop_m(): an M without a P lists itself idle; it then sleeps in
// wait_for_p() until assign_m() hands it a P.
void scheduler::stop_m(machine* m) noexcept {
  m->idle_next = midle_;
  midle_ = m;
}

bool scheduler::wait_for_p(machine* m, std::optional<std::int64_t> until_ns) {
  parks_.fetch_add(1, std::memory_order_relaxed);
  for (;;) {
    std::optional<steady_time> deadline;
    if (until_ns) deadline = from_ns(*until_ns);
    processor* held = m->p_;  // only this M changes it, and only under mu_ here
    sleep_site site = sleep_site::futex;
    if (held != nullptr) {
      thread_mutex_lock l(mu_);
      site = m->sleeps_in;
    }
    // Holding a parked P, the M is its owner while it sleeps: completions
    // reaped here ready Gs onto that P's queue (the rule at the top).
    // The Gs that wait() readies wake nobody until this M holds its P
    // again (find_runnable.cpp, "Waking after a reap").
    const std::int64_t slept_at = m->trace != nullptr ? mono_now_ns() : 0;
    if (site == sleep_site::ring) {
      m->reap_readied = 0;
      held->io->wait(deadline);
    } else {
      m->park.park(deadline);
    }
    if (m->trace != nullptr) [[unlikely]] trace_sleep(m, site == sleep_site::ring, slept_at);
    bool run = false;
    {
      thread_mutex_lock l(mu_);
      if (take_handoff(m)) {
        run = true;
      } else if (stopping()) {
        if (held != nullptr) unpark_p(m);
      } else if (held != nullptr) {
        // Our deadline, a completion, or a wake with nothing handed over
        // (add_timer asking us to look at a new deadline): run the P again.
        unpark_p(m);
        run = true;
      }
    }
    if (site == sleep_site::ring) end_reap(m);
    if (run || stopping()) return run;
    // A stray unpark with no P: sleep again.
  }
}

// ---------------------------------------------------------------------------
// The idle lists (under mu_). npidle_ is seq_cst: the parking protocol's S2
// and P3 read it (scheduler.cpp).

processor* scheduler::pidle_get() noexcept {
  processor* p = pidle_;
  if (p != nullptr) {
    pidle_ = p->idle_next;
    p->idle_next = nullptr;
    npidle_.fetch_sub(1, std::memory_order_seq_cst);
  }
  return p;
}

processor* scheduler::pidle_get_unheld() noexcept {
  for (processor* p = pidle_; p != nullptr; p = p->idle_next) {
    if (p->status == p_status::idle) {
      pidle_remove(p);
      return p;
    }
  }
  return nullptr;
}

processor* scheduler::pidle_first_parked() noexcept {
  for (processor* p = pidle_; p != nullptr; p = p->idle_next)
    if (p->status == p_status::parked) return p;
  return nullptr;
}

void scheduler::pidle_put(processor* p) noexcept {
  p->idle_next = pidle_;
  pidle_ = p;
  npidle_.fetch_add(1, std::memory_order_seq_cst);
}

bool scheduler::pidle_remove(processor* p) noexcept {
  for (processor** pp = &pidle_; *pp != nullptr; pp = &(*pp)->idle_next) {
    if (*pp == p) {
      *pp = p->idle_next;
      p->idle_next = nullptr;
      npidle_.fetch_sub(1, std::memory_order_seq_cst);
      return true;
    }
  }
  return false;
}

machine* scheduler::midle_get() noexcept {
  machine* m = midle_;
  if (m != nullptr) {
    midle_ = m->idle_next;
    m->idle_next = nullptr;
  }
  return m;
}

// ---------------------------------------------------------------------------
// Stopping: every M, wherever it sleeps, wakes and sees stopping_.

void scheduler::stop() noexcept {
  stopping_.store(true, std::memory_order_release);
  while (putters_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  {
    thread_mutex_lock l(sysmon_mu_);
    sysmon_stop_ = true;
    sysmon_cv_.notify_all();
  }
  if (sysmon_.joinable()) sysmon_.join();
  std::vector<machine*> ms;
  {
    thread_mutex_lock l(mu_);
    for (auto& m : allm_) ms.push_back(m.get());
  }
  for (machine* m : ms) m->park.unpark();
  for (auto& p : ps_) p->io->wake();
  for (machine* m : ms)
    if (m->thread.joinable()) m->thread.join();
}

}  // namespace mpg::detail
