// perf/servers/stats_sampler.hpp: `--stats N` of the mpg servers in
// perf/servers/: every N seconds, one line on stderr with what the runtime's
// counters (mpg::runtime_stats) moved by in that interval:
//
//   stats 1.0s: tasks_run 650112 (P0 322044, P1 328068) steals 866 stolen 3317 parks 1828
//       wakeups 6 ring_wakeups 6 global_pulls 0 threads 2
//
// (one line each). How often tasks change Ps, and how often Ms sleep and
// are woken, under a load generator's run, without a profiler. The sampler is
// a thread of its own that reads runtime::stats(), which any thread may call;
// declared after the runtime, it stops and joins before the runtime ends.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>

#include <mpg/runtime.hpp>

namespace perf {

class stats_sampler {
 public:
  // period_s <= 0: no sampler.
  stats_sampler(const mpg::runtime& rt, long period_s) {
    if (period_s > 0) thread_ = std::thread([this, &rt, period_s] { run(rt, period_s); });
  }
  stats_sampler(const stats_sampler&) = delete;
  stats_sampler& operator=(const stats_sampler&) = delete;
  ~stats_sampler() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run(const mpg::runtime& rt, long period_s) {
    mpg::runtime_stats last = rt.stats();
    auto since = std::chrono::steady_clock::now();
    for (;;) {
      {
        std::unique_lock<std::mutex> l(mu_);
        if (cv_.wait_for(l, std::chrono::seconds(period_s), [this] { return stop_; })) return;
      }
      const mpg::runtime_stats now = rt.stats();
      const auto at = std::chrono::steady_clock::now();
      print(last, now, std::chrono::duration<double>(at - since).count());
      last = now;
      since = at;
    }
  }

  static void print(const mpg::runtime_stats& a, const mpg::runtime_stats& b, double seconds) {
    std::uint64_t run = 0;
    std::string per_p;
    for (std::size_t i = 0; i < b.tasks_run.size(); ++i) {
      const std::uint64_t d = b.tasks_run[i] - (i < a.tasks_run.size() ? a.tasks_run[i] : 0);
      run += d;
      per_p += (i == 0 ? "" : ", ") + std::string("P") + std::to_string(i) + " " +
               std::to_string(d);
    }
    std::fprintf(stderr,
                 "stats %.1fs: tasks_run %llu (%s) steals %llu stolen %llu parks %llu "
                 "wakeups %llu ring_wakeups %llu global_pulls %llu threads %llu\n",
                 seconds, static_cast<unsigned long long>(run), per_p.c_str(),
                 static_cast<unsigned long long>(b.steals - a.steals),
                 static_cast<unsigned long long>(b.stolen_tasks - a.stolen_tasks),
                 static_cast<unsigned long long>(b.parks - a.parks),
                 static_cast<unsigned long long>(b.wakeups - a.wakeups),
                 static_cast<unsigned long long>(b.ring_wakeups - a.ring_wakeups),
                 static_cast<unsigned long long>(b.global_queue_pulls - a.global_queue_pulls),
                 static_cast<unsigned long long>(b.threads));
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;  // last: started once the members it uses exist
};

}  // namespace perf
