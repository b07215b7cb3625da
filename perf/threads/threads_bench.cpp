// perf/threads/threads_bench.cpp: the plain-OS-thread baselines of
// docs/benchmarks.md, built from std::thread, std::mutex and
// std::condition_variable only; what mpg is measured against when each task
// is a thread.
//
// Protocol (shared by every program under perf/):
//
//   threads_bench WORKLOAD [N]
//
// runs one workload once and prints exactly one line to stdout:
//
//   RESULT workload=<name> impl=threads ops=<count> ns_per_op=<float>
//          wall_ms=<float> peak_rss_kb=<int> check=<ok|FAIL>
//
// (one line; idle_tasks adds bytes_per_task=<float>). Exit status: 0 ok,
// 1 when the self-check failed (the RESULT line says check=FAIL), 2 for an
// unknown workload or a bad N (no RESULT line), 3 for a workload that is
// infeasible with one thread per task (skynet, fib: 1.1 to 1.3 million
// threads; no RESULT line).
//
// The sizes are smaller than Go's and mpg's where a thread per task would take
// minutes; ns_per_op stays comparable because it is per op.

#include <sched.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

constexpr int kExitCheckFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitInfeasible = 3;

// What a workload reports besides its wall time.
struct result {
  std::int64_t ops = 0;          // the divisor of ns_per_op
  bool ok = false;               // the workload's self-check
  double bytes_per_task = -1.0;  // idle_tasks only; < 0: not reported
};

// Peak resident set size of this process in KiB (Linux reports ru_maxrss in
// KiB).
long peak_rss_kb() {
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
  return ru.ru_maxrss;
}

// chan is an "unbuffered channel" on a mutex and two condition variables:
// send() returns only once a receiver has taken the value (a rendezvous), as a
// Go send on an unbuffered channel does.
template <typename T>
class chan {
 public:
  void send(T v) {
    std::unique_lock lk(mu_);
    can_send_.wait(lk, [&] { return !full_; });  // one sender at a time
    value_ = std::move(v);
    full_ = true;
    const std::uint64_t ticket = ++sent_;
    changed_.notify_all();
    changed_.wait(lk, [&] { return taken_ >= ticket; });  // wait for the receiver
  }

  T recv() {
    std::unique_lock lk(mu_);
    changed_.wait(lk, [&] { return full_; });
    T v = std::move(*value_);
    value_.reset();
    full_ = false;
    ++taken_;
    changed_.notify_all();
    can_send_.notify_one();
    return v;
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;   // a value arrived or was taken
  std::condition_variable can_send_;  // the slot is free
  std::optional<T> value_;
  bool full_ = false;
  std::uint64_t sent_ = 0;   // values put in the slot
  std::uint64_t taken_ = 0;  // values taken out of it
};

// bounded_queue is a blocking queue of fixed capacity on a mutex and two
// condition variables (not_full_, not_empty_); close() lets consumers drain
// it and then see std::nullopt.
template <typename T>
class bounded_queue {
 public:
  explicit bounded_queue(std::size_t capacity) : capacity_(capacity) {}

  void push(T v) {
    std::unique_lock lk(mu_);
    not_full_.wait(lk, [&] { return items_.size() < capacity_; });
    items_.push_back(std::move(v));
    lk.unlock();
    not_empty_.notify_one();
  }

  std::optional<T> pop() {
    std::unique_lock lk(mu_);
    not_empty_.wait(lk, [&] { return !items_.empty() || closed_; });
    if (items_.empty()) return std::nullopt;
    T v = std::move(items_.front());
    items_.pop_front();
    lk.unlock();
    not_full_.notify_one();
    return v;
  }

  void close() {
    {
      std::lock_guard lk(mu_);
      closed_ = true;
    }
    not_empty_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable not_full_;
  std::condition_variable not_empty_;
  std::deque<T> items_;
  const std::size_t capacity_;
  bool closed_ = false;
};

// spawn_join: n threads, started and joined in batches of 1,000, that each add
// 1 to an atomic counter. Op: one thread.
result spawn_join(std::int64_t n) {
  constexpr std::int64_t kBatch = 1000;
  std::atomic<std::int64_t> counter{0};
  std::vector<std::thread> batch;
  batch.reserve(kBatch);
  for (std::int64_t started = 0; started < n;) {
    const std::int64_t k = std::min(kBatch, n - started);
    for (std::int64_t i = 0; i < k; ++i) {
      batch.emplace_back([&] { counter.fetch_add(1, std::memory_order_relaxed); });
    }
    for (auto& t : batch) t.join();
    batch.clear();
    started += k;
  }
  return {.ops = n, .ok = counter.load() == n};
}

// yield_ping: two threads pinned to one CPU that only call sched_yield, n
// switches in all. Op: one switch (one sched_yield).
result yield_ping(std::int64_t n) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return {.ops = 1, .ok = false};
  int cpu = 0;
  while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &allowed)) ++cpu;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);

  const std::int64_t per_thread = n / 2;
  std::atomic<bool> pinned_ok{true};
  auto body = [&] {
    if (sched_setaffinity(0, sizeof one, &one) != 0) pinned_ok = false;  // this thread only
    for (std::int64_t i = 0; i < per_thread; ++i) sched_yield();
  };
  std::thread a(body), b(body);
  a.join();
  b.join();
  return {.ops = per_thread * 2, .ok = pinned_ok.load() && per_thread > 0};
}

// pingpong: two threads bounce one int over two unbuffered channels, n round
// trips. Op: one round trip.
result pingpong(std::int64_t n) {
  chan<std::int64_t> ping, pong;
  std::thread echo([&] {
    for (std::int64_t i = 0; i < n; ++i) pong.send(ping.recv() + 1);
  });
  std::int64_t v = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    ping.send(v);
    v = pong.recv();
  }
  echo.join();
  return {.ops = n, .ok = v == n};
}

// oneshot: n std::promise/std::future pairs made beforehand; one thread
// sets value i on promise i, in order, while another gets future i, in
// order. Op: one hand-off.
result oneshot(std::int64_t n) {
  std::vector<std::promise<std::int64_t>> ps(static_cast<std::size_t>(n));
  std::vector<std::future<std::int64_t>> fs;
  fs.reserve(static_cast<std::size_t>(n));
  for (auto& p : ps) fs.push_back(p.get_future());
  std::int64_t sum = 0;
  std::thread receiver([&] {
    for (auto& f : fs) sum += f.get();
  });
  for (std::int64_t i = 0; i < n; ++i) ps[static_cast<std::size_t>(i)].set_value(i);
  receiver.join();
  return {.ops = n, .ok = sum == n * (n - 1) / 2};
}

// chan_mpmc: the ints 0..n-1 through one bounded queue of capacity 1024 from 4
// producer threads to 4 consumer threads. Op: one item.
result chan_mpmc(std::int64_t n) {
  constexpr int kProducers = 4, kConsumers = 4;
  bounded_queue<std::int64_t> q(1024);
  std::atomic<std::int64_t> sum{0}, count{0};
  std::vector<std::thread> producers, consumers;
  for (int c = 0; c < kConsumers; ++c) {
    consumers.emplace_back([&] {
      std::int64_t s = 0, k = 0;
      while (auto v = q.pop()) {
        s += *v;
        ++k;
      }
      sum += s;
      count += k;
    });
  }
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (std::int64_t v = p; v < n; v += kProducers) q.push(v);
    });
  }
  for (auto& t : producers) t.join();
  q.close();
  for (auto& t : consumers) t.join();
  return {.ops = n, .ok = count.load() == n && sum.load() == n * (n - 1) / 2};
}

// mutex_contention: 8 threads each increment a shared counter under a
// std::mutex n/8 times. Op: one lock + increment + unlock.
result mutex_contention(std::int64_t n) {
  constexpr int kWorkers = 8;
  const std::int64_t per = n / kWorkers;
  std::mutex mu;
  std::int64_t counter = 0;
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorkers; ++w) {
    workers.emplace_back([&] {
      for (std::int64_t i = 0; i < per; ++i) {
        std::lock_guard lk(mu);
        ++counter;
      }
    });
  }
  for (auto& t : workers) t.join();
  const std::int64_t ops = per * kWorkers;
  return {.ops = ops, .ok = ops > 0 && counter == ops};
}

// idle_tasks: n threads blocked on one condition variable; the peak RSS is read
// once all are waiting, then they are released and joined. bytes_per_task is
// the peak RSS growth over the baseline read before the first thread starts,
// divided by n.
result idle_tasks(std::int64_t n) {
  const long baseline = peak_rss_kb();
  std::mutex mu;
  std::condition_variable cv_ready, cv_release;
  std::int64_t waiting = 0, woken = 0;
  bool released = false;
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    threads.emplace_back([&] {
      std::unique_lock lk(mu);
      if (++waiting == n) cv_ready.notify_one();
      cv_release.wait(lk, [&] { return released; });
      ++woken;
    });
  }
  {
    std::unique_lock lk(mu);
    cv_ready.wait(lk, [&] { return waiting == n; });
  }
  const long peak = peak_rss_kb();
  {
    std::lock_guard lk(mu);
    released = true;
  }
  cv_release.notify_all();
  for (auto& t : threads) t.join();
  return {.ops = n,
          .ok = woken == n,
          .bytes_per_task = static_cast<double>(peak - baseline) * 1024.0 / static_cast<double>(n)};
}

// post: 4 producer threads push plain functions onto a queue guarded by a
// mutex and a condition variable; one consumer thread runs them (swapping
// the whole queue out per lock). The clock stops when the last has run.
result post(std::int64_t n) {
  constexpr int kPosters = 4;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> q;
  std::int64_t ran = 0;
  std::thread consumer([&] {
    std::deque<std::function<void()>> batch;
    while (ran < n) {
      {
        std::unique_lock lk(mu);
        cv.wait(lk, [&] { return !q.empty(); });
        batch.swap(q);
      }
      for (auto& f : batch) f();
      batch.clear();
    }
  });
  std::vector<std::thread> ts;
  for (int t = 0; t < kPosters; ++t)
    ts.emplace_back([&, t] {
      const std::int64_t mine = n / kPosters + (t < n % kPosters ? 1 : 0);
      for (std::int64_t i = 0; i < mine; ++i) {
        bool was_empty;
        {
          std::lock_guard lk(mu);
          was_empty = q.empty();
          q.emplace_back([&ran] { ++ran; });  // only the consumer runs these
        }
        if (was_empty) cv.notify_one();
      }
    });
  for (auto& t : ts) t.join();
  consumer.join();
  return {.ops = n, .ok = ran == n};
}

struct workload {
  std::string_view name;
  std::int64_t default_n;  // 0: infeasible with threads
  result (*run)(std::int64_t);
  std::string_view n_meaning;
};

constexpr workload kWorkloads[] = {
    {"spawn_join", 20'000, spawn_join, "threads, in batches of 1,000"},
    {"skynet", 0, nullptr, "infeasible: 1,111,111 threads"},
    {"fib", 0, nullptr, "infeasible: 1,346,268 threads"},
    {"fib32", 0, nullptr, "infeasible: 3,524,577 threads"},
    {"yield_ping", 1'000'000, yield_ping, "switches"},
    {"pingpong", 100'000, pingpong, "round trips"},
    {"chan_mpmc", 2'000'000, chan_mpmc, "items"},
    {"mutex_contention", 2'000'000, mutex_contention, "lock+increment ops in all (8 threads)"},
    {"idle_tasks", 10'000, idle_tasks, "blocked threads"},
    {"post", 2'000'000, post, "functions posted from 4 threads to one consumer thread"},
    {"oneshot", 1'000'000, oneshot, "hand-offs (std::promise/std::future)"},
};

void usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s WORKLOAD [N]\nworkloads:\n", argv0);
  for (const auto& w : kWorkloads) {
    std::fprintf(stderr, "  %-17.*s N = %.*s", static_cast<int>(w.name.size()), w.name.data(),
                 static_cast<int>(w.n_meaning.size()), w.n_meaning.data());
    if (w.default_n > 0)
      std::fprintf(stderr, " (default %lld)", static_cast<long long>(w.default_n));
    std::fputc('\n', stderr);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    usage(argv[0]);
    return kExitUsage;
  }
  const std::string_view name = argv[1];
  const auto* w = std::find_if(std::begin(kWorkloads), std::end(kWorkloads),
                               [&](const workload& x) { return x.name == name; });
  if (w == std::end(kWorkloads)) {
    std::fprintf(stderr, "unknown workload '%s'\n", argv[1]);
    usage(argv[0]);
    return kExitUsage;
  }
  if (w->run == nullptr) {
    std::fprintf(stderr, "%s: infeasible with one OS thread per task\n", argv[1]);
    return kExitInfeasible;
  }
  std::int64_t n = w->default_n;
  if (argc == 3) {
    char* end = nullptr;
    n = std::strtoll(argv[2], &end, 10);
    if (end == argv[2] || *end != '\0' || n <= 0) {
      std::fprintf(stderr, "bad N '%s'\n", argv[2]);
      return kExitUsage;
    }
  }

  const auto start = std::chrono::steady_clock::now();
  const result r = w->run(n);
  const double wall_ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();

  std::printf(
      "RESULT workload=%s impl=threads ops=%lld ns_per_op=%.3f wall_ms=%.3f peak_rss_kb=%ld "
      "check=%s",
      argv[1], static_cast<long long>(r.ops),
      wall_ns / static_cast<double>(std::max<std::int64_t>(r.ops, 1)), wall_ns / 1e6, peak_rss_kb(),
      r.ok ? "ok" : "FAIL");
  if (r.bytes_per_task >= 0) std::printf(" bytes_per_task=%.1f", r.bytes_per_task);
  std::printf("\n");
  return r.ok ? 0 : kExitCheckFailed;
}
