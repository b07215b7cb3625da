// lib/sched/blocking.cpp: the P handoff around mpg::blocking (Go's entersyscall,
// handoffp and exitsyscall, without the fast-path heuristics).
//
// enter: the M keeps its G (parked as "blocking") and releases its P (T2
// of p_ownership.cpp), then hands it off (T5): another M is started on it
// at once if it has anything to do (local or global Gs, timers, I/O in
// flight), else it goes to the idle list, where a spinning M or a later
// wake_p finds it. The M then runs the call on its own thread, holding no
// P, so it does not count against procs.
// exit: the M acquires its old P if nobody holds it, else any P that nobody
// holds (T1), and the G continues on this thread. A parked P is never taken
// (its holder sleeps in its ring: p_ownership.cpp). With no P to acquire,
// the G is queued on the global queue and the M lists itself idle, both in
// one critical section (so no start_m can miss this M: p_ownership.cpp, "No
// lost hand-off"); the caller suspends, wake_p finds the G an M, and this M
// sleeps in m_main until handed a P.
//
// The deadlock check. block_on's check (inspect.cpp, inert()) reads
// nblocking_, the global queue's size and the idle Ps under mu_, and the
// count changes only under mu_: at enter, before the P is released; at exit,
// after the G has a P (or waits in the global queue). So at every point of
// mu_'s order the G is accounted for by one of the three, and no look sees a
// runtime quiet while a blocking call returns. An exit that uncounted itself
// before taking mu_ and was preempted there for the check's three looks
// would make a false deadlock report (test/deadlock_tests.cpp). A call
// counted here is a possible wake-up, so Ms all inside mpg::blocking,
// waiting for Gs that the thread limit leaves without an M, are no
// deadlock to this check: sysmon reports them (thread_limit.cpp).
#include "mpg/blocking.hpp"

#include "mpg/errors.hpp"
#include "sched/scheduler.hpp"
#include "sched/trace.hpp"

namespace mpg::detail {

void enter_blocking(std::coroutine_handle<> h, std::source_location where) {
  machine* m = current_m();
  if (m == nullptr || current_g() == nullptr || m->p() == nullptr)
    throw runtime_misuse_error("mpg::blocking used outside a task of a runtime");
  park(h, "blocking", where);
  m->sched->enter_blocking(m);
}

bool exit_blocking() noexcept {
  machine* m = current_m();
  return m->sched->exit_blocking(m, current_g());
}

void scheduler::enter_blocking(machine* m) {
  processor* p = m->p();
  if (m->trace != nullptr) [[unlikely]] trace_blocking_enter(m);
  p->cur_gid.store(0, std::memory_order_relaxed);
  m->blocking_from = p;
  {
    thread_mutex_lock l(mu_);
    // Counted under mu_ with the P's release: "The deadlock check", above.
    nblocking_.fetch_add(1, std::memory_order_relaxed);
    release_p(m);  // T2 (first half)
  }
  handoff_p(p);  // T5
}

bool scheduler::exit_blocking(machine* m, g* gp) noexcept {
  processor* old = m->blocking_from;
  if (m->trace != nullptr) [[unlikely]] trace_blocking_exit(m, gp);
  m->blocking_from = nullptr;
  // Relaxed: null outside tests (scheduler.hpp).
  if (auto hook = g_exit_blocking_hook.load(std::memory_order_relaxed)) [[unlikely]] hook();
  processor* got = nullptr;
  {
    thread_mutex_lock l(mu_);
    if (!stopping()) {
      if (old->status == p_status::idle && pidle_remove(old)) got = old;
      else got = pidle_get_unheld();
    }
    if (got != nullptr) {
      acquire_p(m, got);  // T1
    } else {
      // No P: queue the G for whoever has one and list this M idle, in one
      // critical section.
      gp->status.store(g_status::runnable, std::memory_order_relaxed);
      gp->link = nullptr;
      global_put_locked(gp, gp, 1);
      stop_m(m);
    }
    // Uncounted only once the G holds a P or waits in the global queue, in
    // the same critical section: "The deadlock check", above.
    nblocking_.fetch_sub(1, std::memory_order_relaxed);
  }
  if (got == nullptr) {
    wake_p();  // S2 for the global push above
    return false;
  }
  gp->status.store(g_status::running, std::memory_order_relaxed);
  gp->wait_reason.store(nullptr, std::memory_order_relaxed);
  got->cur_gid.store(gp->id.load(std::memory_order_relaxed), std::memory_order_relaxed);
  // A run of the G begins on got, as when an M picks a G: a new tick, so
  // that sysmon times this run from now and not from the last sample that
  // found got without a G (which would take a task just back from a long
  // call for one that ran all that time: a long-task report, and its
  // runnext marked stealable). The holder is the one writer: no RMW.
  got->schedtick.store(got->schedtick.load(std::memory_order_relaxed) + 1,
                       std::memory_order_relaxed);
  return true;
}

}  // namespace mpg::detail
