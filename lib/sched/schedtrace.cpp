// lib/sched/schedtrace.cpp: MPG_DEBUG=schedtrace=N (Go's
// GODEBUG=schedtrace=N). Every N ms each runtime that was constructed with
// it prints one line on stderr:
//   SCHED 20ms: gomaxprocs=2 idleprocs=1 threads=3 spinningthreads=0 idlethreads=1 runqueue=0 [4 0]
// elapsed ms since the runtime was constructed; Ps; idle Ps; Ms started;
// spinning Ms; idle Ms (parked without a P); the global run queue's length;
// then each P's local queue length (runnext included), in P order.
//
// Beat. The k-th line is due at start + k*N; the thread sleeps until the
// next due time (or until stopped) and prints one line per wake-up, then
// moves the due time past now, skipping beats it missed (a descheduled
// thread does not print a burst). So a run of T ms prints at most T/N
// lines, however late the thread wakes; how many fewer depends on how late
// it is scheduled.
//
// The numbers are a snapshot: the counters are relaxed loads, the idle M
// list and the global queue are read under the scheduler lock (as Go's
// schedtrace reads them under sched.lock), the local queues without it.
#include "sched/schedtrace.hpp"

#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <string>

#include "sched/scheduler.hpp"

namespace mpg::detail {

schedtrace_thread::schedtrace_thread(scheduler* s, std::uint32_t period_ms)
    : sched_(s), period_ns_(std::int64_t{period_ms} * 1000000), start_ns_(mono_now_ns()) {
  thread_ = std::thread([this] { main(); });
}

schedtrace_thread::~schedtrace_thread() {
  {
    thread_mutex_lock l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void schedtrace_thread::main() {
  pthread_setname_np(pthread_self(), "mpg-schedtrace");
  std::int64_t due = start_ns_ + period_ns_;
  std::string line;
  for (;;) {
    {
      thread_mutex_lock l(mu_);
      const std::int64_t wait = due - mono_now_ns();
      if (wait > 0)
        l.wait_for(cv_, std::chrono::nanoseconds(wait),
                   [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; });
      if (stop_) return;
    }
    const std::int64_t now = mono_now_ns();
    if (now < due) continue;  // a spurious wake-up
    sched_->schedtrace_line((now - start_ns_) / 1000000, &line);
    // One write per line, so lines of several runtimes never interleave.
    std::size_t off = 0;
    while (off < line.size()) {
      const ssize_t n = ::write(STDERR_FILENO, line.data() + off, line.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    }
    while (due <= now) due += period_ns_;
  }
}

void scheduler::schedtrace_line(std::int64_t elapsed_ms, std::string* out) const {
  std::uint32_t idle_ms = 0;
  std::uint64_t global = 0;
  {
    thread_mutex_lock l(mu_);
    for (machine* m = midle_; m != nullptr; m = m->idle_next) ++idle_ms;
    global = gsize_.load(std::memory_order_relaxed);
  }
  // Relaxed: a diagnostic snapshot (see the top of the file).
  char buf[160];
  std::snprintf(buf, sizeof buf,
                "SCHED %lldms: gomaxprocs=%u idleprocs=%u threads=%llu spinningthreads=%u "
                "idlethreads=%u runqueue=%llu [",
                static_cast<long long>(elapsed_ms), procs(),
                npidle_.load(std::memory_order_relaxed),
                static_cast<unsigned long long>(threads_.load(std::memory_order_relaxed)),
                nmspinning_.load(std::memory_order_relaxed), idle_ms,
                static_cast<unsigned long long>(global));
  out->assign(buf);
  for (std::uint32_t i = 0; i < procs(); ++i) {
    if (i != 0) out->push_back(' ');
    out->append(std::to_string(ps_[i]->runq.size()));
  }
  out->append("]\n");
}

}  // namespace mpg::detail
