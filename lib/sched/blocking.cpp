// lib/sched/blocking.cpp: the P handoff around mpg::blocking (Go's entersyscall,
// handoffp and exitsyscall, without the fast-path heuristics).
//
// enter: the M keeps its G (parked as "blocking") and gives up its P. If the
// P has anything to do (local or global Gs, timers, I/O in flight) another M
// is started on it at once; otherwise the P goes to the idle list, where a
// spinning M or a later wake_p finds it. The M then runs the call on its own
// thread, holding no P, so it does not count against procs.
// exit: the M takes back its old P if it is still idle, else any idle P, and
// the G continues on this thread. If every P is busy, the G is queued on the
// global queue (the caller suspends) and the M parks until handed a P.
#include "mpg/blocking.hpp"

#include "mpg/errors.hpp"
#include "sched/reactor_hook.hpp"
#include "sched/scheduler.hpp"

namespace mpg::detail {

void enter_blocking(std::coroutine_handle<> h, std::source_location where) {
  machine* m = current_m();
  if (m == nullptr || current_g() == nullptr || m->p == nullptr)
    throw runtime_misuse_error("mpg::blocking used outside a task of a runtime");
  park(h, "blocking", where);
  m->sched->enter_blocking(m);
}

bool exit_blocking() noexcept {
  machine* m = current_m();
  return m->sched->exit_blocking(m, current_g());
}

void scheduler::enter_blocking(machine* m) {
  processor* p = m->p;
  p->cur_gid.store(0, std::memory_order_relaxed);
  m->blocking_from = p;
  // Relaxed: a count for the deadlock check, which confirms it twice.
  nblocking_.fetch_add(1, std::memory_order_relaxed);
  const bool has_work = p->runq.size() != 0 || global_nonempty() ||
                        p->timers.earliest_ns.load(std::memory_order_relaxed) != INT64_MAX ||
                        reactor_busy(p->io.get());
  {
    thread_mutex_lock l(mu_);
    m->p = nullptr;
    if (!has_work) {
      p->status = p_status::idle;
      pidle_put(p);
    } else {
      p->status = p_status::blocking;
    }
  }
  if (has_work) start_m(p, false);
  else wake_p();  // the idle P may be wanted by work that appears meanwhile
}

bool scheduler::exit_blocking(machine* m, g* gp) noexcept {
  processor* old = m->blocking_from;
  m->blocking_from = nullptr;
  nblocking_.fetch_sub(1, std::memory_order_relaxed);
  processor* got = nullptr;
  machine* other = nullptr;
  bool other_ring = false;
  {
    thread_mutex_lock l(mu_);
    if (!stopping()) {
      if (old->status == p_status::idle && pidle_remove(old)) got = old;
      else got = pidle_get();
      if (got != nullptr && got->status == p_status::parked) {
        // An M sleeps holding that P: take it over and let that M go idle.
        other = got->parked_m;
        other_ring = other->in_ring;
        got->parked_m = nullptr;
        other->next_p = nullptr;
        // The sleeping M, when it wakes, finds its P taken (not parked, no
        // next_p) and parks as an idle M.
      }
      if (got != nullptr) {
        got->status = p_status::running;
        m->p = got;
      }
    }
  }
  if (other != nullptr) wake_machine(other, other_ring, got);
  if (got != nullptr) {
    gp->status.store(g_status::running, std::memory_order_relaxed);
    gp->wait_reason.store(nullptr, std::memory_order_relaxed);
    got->cur_gid.store(gp->id.load(std::memory_order_relaxed), std::memory_order_relaxed);
    return true;
  }
  // No P: queue the G for whoever has one; this M parks in m_main.
  gp->status.store(g_status::runnable, std::memory_order_relaxed);
  global_put(gp);
  return false;
}

}  // namespace mpg::detail
