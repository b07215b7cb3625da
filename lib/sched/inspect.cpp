// lib/sched/inspect.cpp: looking at a running scheduler from outside:
// stats(), dump(), and quiescent() for block_on's deadlock check. All of it
// reads relaxed counters and snapshots; none of it stops anything.
#include <ostream>
#include <sstream>

#include "sched/scheduler.hpp"

namespace mpg::detail {

bool scheduler::quiescent(std::uint64_t* progress) const {
  std::uint64_t runs = gpushes_.load(std::memory_order_relaxed) + posts_run_.load(std::memory_order_relaxed);
  bool quiet = nblocking_.load(std::memory_order_relaxed) == 0 &&
               external_wakers_.load(std::memory_order_relaxed) == 0 &&
               putters_.load(std::memory_order_relaxed) == 0 &&
               gsize_.load(std::memory_order_seq_cst) == 0 &&
               !posts_queued();
  for (auto& p : ps_) {
    runs += p->tasks_run.load(std::memory_order_relaxed);
    if (p->runq.size() != 0 || p->cur_gid.load(std::memory_order_relaxed) != 0 ||
        p->timers.earliest_ns.load(std::memory_order_relaxed) != INT64_MAX ||
        p->io->busy())
      quiet = false;
  }
  {
    thread_mutex_lock l(mu_);
    if (npidle_.load(std::memory_order_relaxed) != procs()) quiet = false;
  }
  *progress = runs;
  return quiet && live_gs() != 0;
}

runtime_stats scheduler::stats() const {
  runtime_stats s;
  s.procs = procs();
  for (auto& p : ps_) {
    s.spawned += p->spawned.load(std::memory_order_relaxed);
    s.completed += p->completed.load(std::memory_order_relaxed);
    s.local_queue_lengths.push_back(p->runq.size());
    s.tasks_run.push_back(p->tasks_run.load(std::memory_order_relaxed));
    const fault_counts f = p->io->injected_faults();
    s.io_faults_eintr += f.by_kind[static_cast<unsigned>(io_fault::eintr)];
    s.io_faults_eagain += f.by_kind[static_cast<unsigned>(io_fault::eagain)];
    s.io_faults_short += f.by_kind[static_cast<unsigned>(io_fault::short_io)];
    s.io_faults_reset += f.by_kind[static_cast<unsigned>(io_fault::reset)];
    s.io_faults_overflow += f.by_kind[static_cast<unsigned>(io_fault::overflow)];
    s.io_faults_injected += f.total();
  }
  s.spawned += foreign_spawned_.load(std::memory_order_relaxed);
  s.completed += foreign_completed_.load(std::memory_order_relaxed);
  s.live = s.spawned >= s.completed ? s.spawned - s.completed : 0;
  s.steals = steals_.load(std::memory_order_relaxed);
  s.stolen_tasks = stolen_.load(std::memory_order_relaxed);
  s.parks = parks_.load(std::memory_order_relaxed);
  s.global_queue_pulls = gpulls_.load(std::memory_order_relaxed);
  s.global_queue_pushes = gpushes_.load(std::memory_order_relaxed);
  s.global_queue_length = gsize_.load(std::memory_order_relaxed);
  s.threads = threads_.load(std::memory_order_relaxed);
  s.long_task_reports = long_reports_.load(std::memory_order_relaxed);
  return s;
}

void scheduler::dump(std::ostream& os) const {
  thread_mutex_lock l(allg_mu_);
  std::size_t n = 0;
  std::ostringstream body;
  for_each_g([&](g* gp) {
    const g_status st = gp->status.load(std::memory_order_relaxed);
    if (st == g_status::dead) return;
    ++n;
    const char* name = gp->name.load(std::memory_order_relaxed);
    body << "task " << gp->id.load(std::memory_order_relaxed);
    if (name) body << " (" << name << ")";
    body << " [" << to_string(st);
    if (st == g_status::waiting) {
      const char* why = gp->wait_reason.load(std::memory_order_relaxed);
      const std::source_location where = gp->wait_where.load(std::memory_order_relaxed);
      const char* file = where.file_name();
      const char* fn = where.function_name();
      body << ": " << (why ? why : "?");
      if (file && *file) body << " at " << file << ":" << where.line();
      if (fn && *fn) body << " in " << fn;
    }
    body << "]\n";
  });
  os << "mpg: " << n << " live task(s) on " << procs() << " P(s)\n" << body.str();
}

}  // namespace mpg::detail
