// test/watchdog.hpp: turns a hang into a prompt test failure with a message.
//
// A test that can hang when the runtime loses a wakeup arms a watchdog for
// its scope. If the scope makes no progress for the limit (it has not ended,
// and pet() was not called since the last check), the watchdog prints what
// hung, the runtime's task dump (when given a runtime; the dump gets one
// second, since a broken runtime might not answer), and ends the process
// with exit status 1: waiting for the meson timeout would be slower, and
// destructors of a hung runtime would hang too. Ending the scope disarms it.
// Without pet() it fires after `limit`; with pet() after each step, between
// one and two limits after the last step. Limits are generous (seconds):
// the watchdog catches hangs, not slowness.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>

#include "mpg/runtime.hpp"

namespace mpg_test {

class watchdog {
 public:
  watchdog(std::chrono::milliseconds limit, std::string what, const mpg::runtime* rt = nullptr)
      : what_(std::move(what)), rt_(rt), thread_([this, limit] { watch(limit); }) {}
  ~watchdog() {
    {
      std::lock_guard<std::mutex> l(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  watchdog(const watchdog&) = delete;
  watchdog& operator=(const watchdog&) = delete;

  // pet(): the watched scope made progress.
  void pet() noexcept { progress_.fetch_add(1, std::memory_order_relaxed); }

 private:
  void watch(std::chrono::milliseconds limit) {
    std::uint64_t seen = progress_.load(std::memory_order_relaxed);
    for (;;) {
      std::unique_lock<std::mutex> l(mu_);
      if (cv_.wait_for(l, limit, [this] { return done_; })) return;
      // Relaxed: a count compared with itself; no data hangs on it.
      const std::uint64_t now = progress_.load(std::memory_order_relaxed);
      if (now == seen) break;
      seen = now;
    }
    std::fprintf(stderr, "watchdog: %s made no progress for %lld ms (a lost wakeup or lost task)\n",
                 what_.c_str(), static_cast<long long>(limit.count()));
    if (rt_ != nullptr) {
      // The dump runs on its own thread: a wedged runtime must not wedge us.
      auto dumped = std::make_shared<std::atomic<bool>>(false);
      std::thread([rt = rt_, dumped] {
        std::ostringstream os;
        rt->dump(os);
        std::fprintf(stderr, "watchdog: task dump:\n%s", os.str().c_str());
        dumped->store(true);
      }).detach();
      for (int i = 0; i < 100 && !dumped->load(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::fflush(stderr);
    std::_Exit(1);
  }

  std::string what_;
  const mpg::runtime* rt_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;  // guarded by mu_
  std::atomic<std::uint64_t> progress_{0};
  std::thread thread_;
};

}  // namespace mpg_test
