// perf/sync_workloads.hpp: the channel, select, mutex and timer workloads of
// the benchmark suite, for perf/mpg_bench.cpp.
//
// Each run_* function runs one workload on the given runtime and returns the
// wall time per op in nanoseconds (std::chrono::steady_clock around the
// whole block_on, spawning included). The op of each is stated next to it,
// matching docs/benchmarks.md and perf/go/workloads.go. The functions
// self-check their results and report failures through *ok.
//
// run_sync_workload(name, n) is the entry point mpg_bench.cpp calls: it runs
// the named workload and prints the RESULT line of perf/run.py's protocol;
// it returns 0 (ok), 1 (check failed) or 2 (not one of these workloads).
#pragma once

#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "mpg/mpg.hpp"

namespace mpg_perf {

using bench_clock = std::chrono::steady_clock;

inline long sync_peak_rss_kb() {
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
  return ru.ru_maxrss;
}

template <class F>
double sync_time_ns(F&& f) {
  const auto t0 = bench_clock::now();
  f();
  return std::chrono::duration<double, std::nano>(bench_clock::now() - t0).count();
}

// --- pingpong ----------------------------------------------------------------
// Two tasks bounce one int over two unbuffered channels (ping, pong), n
// round trips. Op: one round trip (a send and a receive on each channel).

inline mpg::task<void> pingpong_echo(mpg::chan<long> ping, mpg::chan<long> pong) {
  while (auto v = co_await ping.recv()) co_await pong.send(*v + 1);
  pong.close();
}

inline mpg::task<long> pingpong_main(long n) {
  mpg::chan<long> ping, pong;
  auto echo = mpg::spawn(pingpong_echo(ping, pong));
  long v = 0;
  for (long i = 0; i < n; ++i) {
    co_await ping.send(v);
    v = *co_await pong.recv();
  }
  ping.close();
  co_await echo;
  co_return v;
}

inline double run_pingpong(mpg::runtime& rt, long n, bool* ok = nullptr) {
  long v = 0;
  const double ns = sync_time_ns([&] { v = rt.block_on(pingpong_main(n)); });
  if (ok) *ok = v == n;
  return ns / static_cast<double>(n);
}

// --- chan_mpmc -----------------------------------------------------------------
// The ints 0..n-1 through one channel of capacity 1024, from 4 producers
// (producer p sends p, p+4, ...) to 4 consumers. Op: one item.

inline mpg::task<void> mpmc_producer(mpg::chan<long> c, long p, long n, long step) {
  for (long v = p; v < n; v += step) co_await c.send(v);
}

inline mpg::task<void> mpmc_consumer(mpg::chan<long> c, std::atomic<long>* sum,
                                     std::atomic<long>* count) {
  long s = 0, k = 0;
  while (auto v = co_await c.recv()) {
    s += *v;
    ++k;
  }
  sum->fetch_add(s);
  count->fetch_add(k);
}

inline mpg::task<bool> chan_mpmc_main(long n) {
  constexpr long kProducers = 4, kConsumers = 4;
  mpg::chan<long> c(1024);
  std::atomic<long> sum{0}, count{0};
  std::vector<mpg::join_handle<void>> prod, cons;
  for (long i = 0; i < kConsumers; ++i) cons.push_back(mpg::spawn(mpmc_consumer(c, &sum, &count)));
  for (long p = 0; p < kProducers; ++p)
    prod.push_back(mpg::spawn(mpmc_producer(c, p, n, kProducers)));
  for (auto& h : prod) co_await h;
  c.close();
  for (auto& h : cons) co_await h;
  co_return count.load() == n && sum.load() == n * (n - 1) / 2;
}

inline double run_chan_mpmc(mpg::runtime& rt, long n, bool* ok = nullptr) {
  bool good = false;
  const double ns = sync_time_ns([&] { good = rt.block_on(chan_mpmc_main(n)); });
  if (ok) *ok = good;
  return ns / static_cast<double>(n);
}

// --- mutex_contention ------------------------------------------------------------
// 8 tasks each increment a shared (plain) counter under one mpg::mutex
// n/8 times. Op: one lock + increment + unlock.

inline mpg::task<void> mutex_worker(mpg::mutex* m, long* counter, long per) {
  for (long i = 0; i < per; ++i) {
    co_await m->lock();
    ++*counter;
    m->unlock();
  }
}

inline mpg::task<long> mutex_contention_main(long per) {
  mpg::mutex m;
  long counter = 0;
  std::vector<mpg::join_handle<void>> hs;
  for (int w = 0; w < 8; ++w) hs.push_back(mpg::spawn(mutex_worker(&m, &counter, per)));
  for (auto& h : hs) co_await h;
  co_return counter;
}

inline double run_mutex_contention(mpg::runtime& rt, long n, bool* ok = nullptr) {
  const long per = n / 8;
  long counter = 0;
  const double ns = sync_time_ns([&] { counter = rt.block_on(mutex_contention_main(per)); });
  if (ok) *ok = counter == per * 8 && per > 0;
  return ns / static_cast<double>(per * 8);
}

// --- idle_tasks -----------------------------------------------------------------------
// n tasks (mpg::go) each signal a wait_group and block receiving on one
// channel; once all have started, the peak RSS is read; then close() releases
// them and a second wait_group joins them. Op: one task (spawn, block,
// release, finish). *bytes_per_task: peak RSS growth over the baseline read
// before the first task starts, divided by n (the figure that matters).

struct idle_shared {
  mpg::chan<char> release;
  mpg::wait_group started, done;
};

// One pointer parameter: the frame of an idle task is what this workload
// measures, so it carries no more than a Go closure would.
inline mpg::task<void> idle_task(idle_shared* s) {
  s->started.done();
  (void)co_await s->release.recv();
  s->done.done();
}

inline mpg::task<long> idle_tasks_main(long n, long* peak_kb) {
  idle_shared s;
  s.started.add(n);
  s.done.add(n);
  for (long i = 0; i < n; ++i) mpg::go(idle_task(&s));
  co_await s.started.wait();
  co_await mpg::yield();  // let the last starters reach their recv
  *peak_kb = sync_peak_rss_kb();
  s.release.close();
  co_await s.done.wait();
  co_return s.done.count();
}

inline double run_idle_tasks(mpg::runtime& rt, long n, double* bytes_per_task = nullptr,
                             bool* ok = nullptr) {
  const long baseline = sync_peak_rss_kb();
  long peak = baseline, left = -1;
  const double ns = sync_time_ns([&] { left = rt.block_on(idle_tasks_main(n, &peak)); });
  if (bytes_per_task)
    *bytes_per_task = static_cast<double>(peak - baseline) * 1024.0 / static_cast<double>(n);
  if (ok) *ok = left == 0;
  return ns / static_cast<double>(n);
}

// --- select2_timer ------------------------------------------------------------------------
// A producer alternates sends on two unbuffered channels a and b; the
// consumer receives n values with select(a.recv(), b.recv(), after(1s).recv())
// (the timer never fires: it is armed and cancelled each time). Op: one
// select that receives one value.

inline mpg::task<void> select2_producer(mpg::chan<long> a, mpg::chan<long> b, long n) {
  for (long i = 0; i < n; ++i) co_await (i % 2 ? b : a).send(i);
}

inline mpg::task<bool> select2_timer_main(long n) {
  using namespace std::chrono_literals;
  mpg::chan<long> a, b;
  auto prod = mpg::spawn(select2_producer(a, b, n));
  long sum = 0;
  for (long i = 0; i < n; ++i) {
    auto r = co_await mpg::select(a.recv(), b.recv(), mpg::after(1s).recv());
    if (r.index() == 0) sum += *std::get<0>(r);
    else if (r.index() == 1) sum += *std::get<1>(r);
    else co_return false;
  }
  co_await prod;
  co_return sum == n * (n - 1) / 2;
}

inline double run_select2_timer(mpg::runtime& rt, long n, bool* ok = nullptr) {
  bool good = false;
  const double ns = sync_time_ns([&] { good = rt.block_on(select2_timer_main(n)); });
  if (ok) *ok = good;
  return ns / static_cast<double>(n);
}

// --- timers_100k -------------------------------------------------------------------------------
// n tasks (default 100,000) each sleep_for(1 ms) concurrently; joined with a
// wait_group. Op: one sleeping task (spawn, arm, fire, resume, finish); the
// wall time includes the 1 ms sleep once.

inline mpg::task<void> timer_sleeper(mpg::wait_group* wg) {
  using namespace std::chrono_literals;
  co_await mpg::sleep_for(1ms);
  wg->done();
}

inline mpg::task<long> timers_main(long n) {
  mpg::wait_group wg;
  wg.add(n);
  for (long i = 0; i < n; ++i) mpg::go(timer_sleeper(&wg));
  co_await wg.wait();
  co_return wg.count();
}

inline double run_timers_100k(mpg::runtime& rt, long n = 100000, bool* ok = nullptr) {
  long left = -1;
  const double ns = sync_time_ns([&] { left = rt.block_on(timers_main(n)); });
  if (ok) *ok = left == 0;
  return ns / static_cast<double>(n);
}

// --- The entry point for mpg_bench -------------------------------------------------------------

inline int run_sync_workload(const std::string& w, long arg) {
  auto report = [](const char* name, long ops, double ns_per_op, bool ok, double bpt = -1.0) {
    std::printf(
        "RESULT workload=%s impl=mpg ops=%ld ns_per_op=%.2f wall_ms=%.2f peak_rss_kb=%ld check=%s",
        name, ops, ns_per_op, ns_per_op * static_cast<double>(ops) / 1e6, sync_peak_rss_kb(),
        ok ? "ok" : "FAIL");
    if (bpt >= 0) std::printf(" bytes_per_task=%.1f", bpt);
    std::printf("\n");
    return ok ? 0 : 1;
  };
  bool ok = false;
  if (w == "pingpong") {
    const long n = arg > 0 ? arg : 1'000'000;
    mpg::runtime rt;
    const double x = run_pingpong(rt, n, &ok);
    return report("pingpong", n, x, ok);
  }
  if (w == "chan_mpmc") {
    const long n = arg > 0 ? arg : 10'000'000;
    mpg::runtime rt;
    const double x = run_chan_mpmc(rt, n, &ok);
    return report("chan_mpmc", n, x, ok);
  }
  if (w == "mutex_contention") {
    const long n = arg > 0 ? arg : 2'000'000;
    mpg::runtime rt;
    const double x = run_mutex_contention(rt, n, &ok);
    return report("mutex_contention", n / 8 * 8, x, ok);
  }
  if (w == "idle_tasks") {
    const long n = arg > 0 ? arg : 1'000'000;
    mpg::runtime rt;
    double bpt = 0;
    const double x = run_idle_tasks(rt, n, &bpt, &ok);
    return report("idle_tasks", n, x, ok, bpt);
  }
  if (w == "select2_timer") {
    const long n = arg > 0 ? arg : 1'000'000;
    mpg::runtime rt;
    const double x = run_select2_timer(rt, n, &ok);
    return report("select2_timer", n, x, ok);
  }
  if (w == "timers_100k") {
    const long n = arg > 0 ? arg : 100'000;
    mpg::runtime rt;
    const double x = run_timers_100k(rt, n, &ok);
    return report("timers_100k", n, x, ok);
  }
  return 2;
}

}  // namespace mpg_perf
