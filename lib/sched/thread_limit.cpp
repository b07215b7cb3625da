// lib/sched/thread_limit.cpp: Gs starving at the thread limit
// (runtime_options::max_threads and thread_starvation_threshold), told by
// sysmon.
//
// The case. At the limit, a P that mpg::blocking hands away with work may
// find no M to run it (p_ownership.cpp, "Thread limit"): it stays unheld,
// sysmon serves its timers and ring, and the first M back from
// mpg::blocking takes it. That is the degradation the limit is meant to
// have: a slow call delays the Gs queued behind it. But a blocking call
// may wait for one of those Gs (a future that a queued task fulfils); then
// no M comes back, and the program would hang without a word. Go treats
// running out of threads as fatal ("runtime: program exceeds 10000-thread
// limit"). block_on's deadlock check rightly stays quiet (a call inside
// mpg::blocking is a possible wake-up): the report is sysmon's.
//
// The condition, sampled by sysmon under mu_ every millisecond while
// unheld_work_ is set (serve_unheld_ps, in the critical section it takes
// anyway):
//   - all max_threads Ms exist, or the OS refused the last M that
//     assign_m() tried to start (m_refused_: RLIMIT_NPROC, a cgroup's pids
//     limit, memory), and none is idle (midle_ is empty), so assign_m()
//     can neither start nor wake an M for an unheld P: every M holds a P
//     or is inside mpg::blocking (nblocking_ counts those);
//   - some P is unheld (p_status::idle), and Gs are queued on an unheld P
//     or on the global queue, or posted functions wait: the stranded work;
//   - the runtime is not stopping.
// With it, a mark of the stranded work's departures: for each unheld P its
// id, its run queue's taken_mark() and runnext, and its tasks_run (which
// moves when an M held the P and ran a G on it between two samples); the
// global queue's pulls while it holds Gs (a pull takes the oldest first);
// the posted functions run while some wait. Arrivals leave the mark alone:
// Gs that the timers and completions sysmon serves for an unheld P ready
// go to the global queue, and stranded Gs are no less stranded for more
// arriving behind them.
//
// Starving: the condition has held on every sample, with the same mark,
// for thread_starvation_threshold. A sample without the condition, or with
// another mark (a stranded G was taken, or a P held in between), ends the
// watch, and the next starving sample starts a new one. One report per
// watch: a hang is reported once, and again only after some stranded G
// has moved and others have been stranded as long again.
//
// Why not only "every M is inside mpg::blocking": an M that holds another
// P steals only when its own P runs dry, so a busy P beside the blocked
// ones strands the unheld P's Gs as surely; the mark tells whether they
// move, whoever takes them. Either way a blocking call slower than the
// threshold that would have returned is reported too: the report says how
// long the tasks have waited, and that a call waiting for them may wait
// for ever, not that it does.
//
// Why report and go on rather than abort as Go does: sysmon cannot tell a
// blocking call that waits for a stranded G from one that is merely slow,
// and a slow call that returns is the case the limit is there to survive;
// aborting would end programs that recover. The report names the limit,
// the Ms inside mpg::blocking and the stranded Gs, and dumps the tasks, in
// which each blocking call shows as "blocking" at its site.
//
// The dump has no await chains. They are read only while no G runs
// (inspect.cpp), and sysmon cannot stop the world: that posts a function
// for every P to run, and no M is free to run them. So it writes the task
// lines alone (write_dump without chains, as the dump on a signal does
// when the Ps do not all come), which read each G's atomics and are safe
// while Gs run. The report goes to stderr in one fwrite from sysmon, as
// its long-task report does: a stderr that blocks holds sysmon up until it
// drains.
//
// Cost: nothing on sysmon's tick while no P is unheld with work (the tick
// already loads unheld_work_, relaxed); while one is, a walk of the idle
// list under the lock that serve_unheld_ps takes anyway, and a few
// relaxed loads.
#include <cstdio>
#include <cstring>
#include <exception>
#include <sstream>
#include <string>

#include "sched/scheduler.hpp"

namespace mpg::detail {

namespace {

// mix(): a hash step (boost's hash_combine, widened to 64 bits). Marks are
// only compared for equality, so a collision at worst prolongs a watch
// past one departure.
std::uint64_t mix(std::uint64_t h, std::uint64_t v) noexcept {
  return h ^ (v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2));
}

}  // namespace

scheduler::starvation_sample scheduler::sample_starvation() const noexcept {
  starvation_sample s;
  const bool at_limit = allm_.size() >= opts_.max_threads;
  if (stopping() || midle_ != nullptr || (!at_limit && !m_refused_)) return s;
  bool unheld = false;
  std::uint64_t mark = 0;
  for (processor* p = pidle_; p != nullptr; p = p->idle_next) {
    if (p->status != p_status::idle) continue;
    unheld = true;
    s.stranded += p->runq.size();
    mark = mix(mark, p->id);
    mark = mix(mark, p->runq.taken_mark());
    mark = mix(mark, p->runq.has_runnext() ? 1 : 0);
    // Relaxed: a counter sampled for change (its one writer is the P's
    // holder, and nobody holds it now; one that held it since moved it).
    mark = mix(mark, p->tasks_run.load(std::memory_order_relaxed));
  }
  if (!unheld) return s;
  // Relaxed: gsize_, gpulls_ and nblocking_ change under mu_, which we hold.
  const std::uint64_t global = gsize_.load(std::memory_order_relaxed);
  s.stranded += global;
  if (global != 0) mark = mix(mark, gpulls_.load(std::memory_order_relaxed));
  s.posts = posts_queued();
  // Relaxed: a counter sampled for change; a run that this load misses
  // moves the mark at the next sample.
  if (s.posts) mark = mix(mark, posts_run_.load(std::memory_order_relaxed));
  s.starved = s.stranded != 0 || s.posts;
  s.mark = mark;
  s.blocking = nblocking_.load(std::memory_order_relaxed);
  s.threads = static_cast<std::uint32_t>(allm_.size());
  s.refused = !at_limit;
  static_assert(sizeof s.refused_why == sizeof m_refused_why_);
  if (s.refused) std::memcpy(s.refused_why, m_refused_why_, sizeof s.refused_why);
  return s;
}

void scheduler::watch_starvation(const starvation_sample& s, std::int64_t now_ns) noexcept {
  starvation_watch& w = starvation_;
  if (!s.starved) {
    w = starvation_watch{};
    return;
  }
  if (w.since < 0 || s.mark != w.mark) {
    w = starvation_watch{now_ns, s.mark, false};
    return;
  }
  // Saturated: milliseconds::max() ("never") has no nanosecond form.
  const std::int64_t threshold_ns =
      to_ns(saturating_add(steady_time{}, opts_.thread_starvation_threshold));
  if (w.reported || now_ns - w.since < threshold_ns) return;
  w.reported = true;
  // Relaxed: a statistics counter. Counted before the report is written,
  // so that whoever reads the report finds it counted.
  thread_limit_reports_.fetch_add(1, std::memory_order_relaxed);
  try {
    report_starvation(s, now_ns - w.since);
  } catch (const std::exception&) {
    std::fputs("mpg: thread limit reached (the report could not be built)\n", stderr);
  }
}

void scheduler::report_starvation(const starvation_sample& s, std::int64_t waited_ns) const {
  std::ostringstream os;
  os << "mpg: thread limit reached (";
  if (s.refused) {
    os << "the OS refused a new thread: " << s.refused_why << "; " << s.threads
       << " M(s) started, runtime_options::max_threads = " << opts_.max_threads;
  } else {
    os << "runtime_options::max_threads = " << opts_.max_threads;
  }
  os << "): " << s.stranded << " runnable task(s)" << (s.posts ? " and posted functions" : "")
     << " have waited " << waited_ns / 1'000'000 << " ms with no M to run them\n";
  os << "mpg: " << s.blocking << " of " << s.threads << " M(s) inside mpg::blocking"
     << (s.blocking < s.threads ? ", the others running Ps" : "")
     << "; a blocking call that waits for one of these tasks may wait for ever"
     << (s.refused ? " (raise the OS's limit on threads" : " (raise max_threads")
     << ", or wait in a task rather than inside mpg::blocking)\n";
  write_dump(os, false, "tasks may run while the monitor writes this report");
  const std::string text = os.str();
  std::fwrite(text.data(), 1, text.size(), stderr);
}

}  // namespace mpg::detail
