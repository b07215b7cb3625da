// lib/sched/schedtrace.hpp: MPG_DEBUG=schedtrace=N, the periodic scheduler
// line on stderr (schedtrace.cpp).
#pragma once

#include <absl/base/thread_annotations.h>

#include <condition_variable>
#include <cstdint>
#include <thread>

#include "sched/thread_mutex.hpp"

namespace mpg::detail {

class scheduler;

// schedtrace_thread: a thread of its own (sysmon's period changes with the
// load; this one keeps a fixed beat) that prints s's line every period_ms
// until destroyed.
class schedtrace_thread {
 public:
  schedtrace_thread(scheduler* s, std::uint32_t period_ms);
  ~schedtrace_thread();
  schedtrace_thread(const schedtrace_thread&) = delete;
  schedtrace_thread& operator=(const schedtrace_thread&) = delete;

 private:
  void main();

  scheduler* const sched_;
  const std::int64_t period_ns_;
  const std::int64_t start_ns_;
  thread_mutex mu_;
  std::condition_variable cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace mpg::detail
