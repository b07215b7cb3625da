// perf/mpg_bench.cpp: the mpg side of the benchmark suite.
//
// Protocol (perf/run.py): `mpg_bench WORKLOAD [N]` runs one workload once and
// prints one line:
//   RESULT workload=<name> impl=mpg ops=<n> ns_per_op=<x> wall_ms=<x>
//          peak_rss_kb=<n> check=<ok|FAIL> [bytes_per_task=<x>]
// The runtime uses MPG_PROCS (else all CPUs of the affinity mask), except
// yield_ping which runs on one P by definition. Workloads are defined in
// docs/benchmarks.md; the op of each is stated next to it below.
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "coroutine_floor.hpp"
#include "mpg/detail/sched/frame.hpp"
#include "mpg/mpg.hpp"
#if __has_include("sync_workloads.hpp")
#include "sync_workloads.hpp"
#define MPG_HAVE_SYNC_WORKLOADS 1
#endif

namespace {

using clock_type = std::chrono::steady_clock;

long peak_rss_kb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

void print_result(const char* name, long ops, double wall_ns, bool ok, const char* extra = "") {
  std::printf(
      "RESULT workload=%s impl=mpg ops=%ld ns_per_op=%.2f wall_ms=%.2f peak_rss_kb=%ld "
      "check=%s%s\n",
      name, ops, wall_ns / static_cast<double>(ops), wall_ns / 1e6, peak_rss_kb(),
      ok ? "ok" : "FAIL", extra);
}

template <class F>
double time_ns(F&& f) {
  auto t0 = clock_type::now();
  f();
  return std::chrono::duration<double, std::nano>(clock_type::now() - t0).count();
}

// spawn_join: op = start one task that adds 1 to an atomic, and wait for
// it. Written as Go's version is: detached tasks (go) and a wait_group.
mpg::task<void> add_one_done(std::atomic<long>* c, mpg::wait_group* wg) {
  c->fetch_add(1, std::memory_order_relaxed);
  wg->done();
  co_return;
}
mpg::task<long> spawn_join(long n) {
  std::atomic<long> counter{0};
  mpg::wait_group wg;
  wg.add(static_cast<int>(n));
  for (long i = 0; i < n; ++i) mpg::go(add_one_done(&counter, &wg));
  co_await wg.wait();
  co_return counter.load();
}

// spawn_join_handles: the same with one join_handle per task, all kept and
// joined at the end (every frame lives until its join).
mpg::task<void> add_one(std::atomic<long>* c) {
  c->fetch_add(1, std::memory_order_relaxed);
  co_return;
}
mpg::task<long> spawn_join_handles(long n) {
  std::atomic<long> counter{0};
  std::vector<mpg::join_handle<void>> hs;
  hs.reserve(static_cast<std::size_t>(n));
  for (long i = 0; i < n; ++i) hs.push_back(mpg::spawn(add_one(&counter)));
  for (auto& h : hs) co_await h;
  co_return counter.load();
}

// skynet: op = one task (1,111,111 in all for 1,000,000 leaves).
mpg::task<long> skynet(long num, long size) {
  if (size == 1) co_return num;
  mpg::join_handle<long> hs[10];
  const long sub = size / 10;
  for (int i = 0; i < 10; ++i) hs[i] = mpg::spawn(skynet(num + i * sub, sub));
  long sum = 0;
  for (auto& h : hs) sum += co_await h;
  co_return sum;
}

// fib: op = one task; every call with n >= 2 spawns fib(n-1) and runs
// fib(n-2) inline.
mpg::task<long> fib(int n) {
  if (n < 2) co_return n;
  mpg::join_handle<long> a = mpg::spawn(fib(n - 1));
  long b = co_await fib(n - 2);
  co_return co_await a + b;
}
long fib_value(int n) {
  long a = 0, b = 1;
  for (int i = 0; i < n; ++i) {
    long c = a + b;
    a = b;
    b = c;
  }
  return a;
}

// yield_ping: two tasks that only yield, on one P; op = one switch.
mpg::task<void> yielder(long n) {
  for (long i = 0; i < n; ++i) co_await mpg::yield();
}
mpg::task<void> yield_ping(long n) {
  auto a = mpg::spawn(yielder(n));
  auto b = mpg::spawn(yielder(n));
  co_await a;
  co_await b;
}

// oneshot: n oneshot pairs made beforehand; a plain thread sends value i on
// sender i, in order, while a task awaits receiver i, in order (so the task
// parks whenever it catches up with the thread). Op: one hand-off.
mpg::task<long> oneshot_receive_all(std::vector<mpg::oneshot_receiver<long>>& rxs) {
  long sum = 0;
  for (auto& rx : rxs) {
    absl::StatusOr<long> v = co_await rx;
    if (v.ok()) sum += *v;
  }
  co_return sum;
}
int run_oneshot(long n) {
  std::vector<mpg::oneshot_sender<long>> txs;
  std::vector<mpg::oneshot_receiver<long>> rxs;
  txs.reserve(static_cast<std::size_t>(n));
  rxs.reserve(static_cast<std::size_t>(n));
  for (long i = 0; i < n; ++i) {
    auto [tx, rx] = mpg::oneshot<long>();
    txs.push_back(std::move(tx));
    rxs.push_back(std::move(rx));
  }
  mpg::runtime rt;
  long r = 0;
  double ns = time_ns([&] {
    auto h = rt.spawn(oneshot_receive_all(rxs), "oneshot");
    std::thread sender([&] {
      for (long i = 0; i < n; ++i) txs[static_cast<std::size_t>(i)].send(i);
    });
    r = rt.block_on(std::move(h));
    sender.join();
  });
  print_result("oneshot", n, ns, r == n * (n - 1) / 2);
  return 0;
}

int run_fib(const char* name, int n, bool cache) {
  mpg::detail::set_frame_cache_enabled(cache);
  mpg::runtime rt;
  long r = 0;
  double ns = time_ns([&] { r = rt.block_on(fib(n)); });
  // Op: one spawned task (calls with n >= 2: fib(n+1) - 1), as perf/go.
  print_result(name, fib_value(n + 1) - 1, ns, r == fib_value(n));
  return 0;
}

// post: op = one plain function posted through a runtime_handle from one of
// 4 plain threads (not tasks) and run on a P; the clock stops when the last
// one has run. Each function adds 1 to a counter; the last one signals.
long run_post(long n) {
  constexpr int kPosters = 4;
  mpg::runtime rt;
  mpg::runtime_handle h = rt.handle();
  std::atomic<long> ran{0};
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  auto fn = [&] {
    if (ran.fetch_add(1, std::memory_order_relaxed) + 1 == n) {
      std::lock_guard<std::mutex> l(mu);
      done = true;
      cv.notify_one();
    }
  };
  std::vector<std::thread> ts;
  for (int t = 0; t < kPosters; ++t)
    ts.emplace_back([&, t] {
      const long mine = n / kPosters + (t < n % kPosters ? 1 : 0);
      for (long i = 0; i < mine; ++i) h.post(fn);
    });
  for (auto& t : ts) t.join();
  std::unique_lock<std::mutex> l(mu);
  cv.wait(l, [&] { return done; });
  return ran.load();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s WORKLOAD [N]\n", argv[0]);
    return 2;
  }
  const std::string w = argv[1];
  const long arg = argc > 2 ? std::atol(argv[2]) : 0;
  if (w == "spawn_join" || w == "spawn_join_malloc" || w == "spawn_join_handles") {
    mpg::detail::set_frame_cache_enabled(w != "spawn_join_malloc");
    const long n = arg > 0 ? arg : 1000000;
    mpg::runtime rt;
    long r = 0;
    double ns = time_ns([&] {
      r = rt.block_on(w == "spawn_join_handles" ? spawn_join_handles(n) : spawn_join(n));
    });
    print_result(w.c_str(), n, ns, r == n);
    return 0;
  }
  if (w == "skynet") {
    const long leaves = arg > 0 ? arg : 1000000;
    mpg::runtime rt;
    long r = 0;
    double ns = time_ns([&] { r = rt.block_on(skynet(0, leaves)); });
    long tasks = 0;
    for (long s = leaves; s >= 1; s /= 10) tasks += leaves / s;
    print_result("skynet", tasks, ns, r == leaves * (leaves - 1) / 2);
    return 0;
  }
  if (w == "fib") return run_fib("fib", arg > 0 ? static_cast<int>(arg) : 30, true);
  if (w == "fib_malloc") return run_fib("fib_malloc", arg > 0 ? static_cast<int>(arg) : 30, false);
  if (w == "fib32") return run_fib("fib32", 32, true);
  if (w == "fib_floor") {
    // fib with no runtime (coroutine_floor.hpp); op as fib's.
    const int n = arg > 0 ? static_cast<int>(arg) : 30;
    long r = 0;
    const double ns = time_ns([&] { r = mpg_perf::floor::run(n); });
    print_result("fib_floor", fib_value(n + 1) - 1, ns, r == fib_value(n));
    return 0;
  }
  if (w == "yield_ping") {
    const long n = arg > 0 ? arg : 1000000;
    mpg::runtime rt({.procs = 1});
    double ns = time_ns([&] { rt.block_on(yield_ping(n)); });
    print_result("yield_ping", 2 * n, ns, true);
    return 0;
  }
  if (w == "post") {
    const long n = arg > 0 ? arg : 2000000;
    long r = 0;
    double ns = time_ns([&] { r = run_post(n); });
    print_result("post", n, ns, r == n);
    return 0;
  }
  if (w == "oneshot") return run_oneshot(arg > 0 ? arg : 1000000);
#ifdef MPG_HAVE_SYNC_WORKLOADS
  if (int rc = mpg_perf::run_sync_workload(w, arg); rc != 2) return rc;
#endif
  std::fprintf(stderr, "mpg_bench: unknown workload %s\n", w.c_str());
  return 2;
}
