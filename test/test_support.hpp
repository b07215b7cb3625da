// test/test_support.hpp: small helpers shared by the test suites.
#pragma once

#include "mpg/mpg.hpp"

#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <coroutine>
#include <exception>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>

namespace mpg_test {

#ifndef __has_feature
#define __has_feature(x) 0
#endif
// kSanitized: true in ASan/TSan builds, where stress loops run smaller.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || \
    __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
// kThreadSanitized: true in TSan builds only.
#if defined(__SANITIZE_THREAD__) || __has_feature(thread_sanitizer)
inline constexpr bool kThreadSanitized = true;
#else
inline constexpr bool kThreadSanitized = false;
#endif
// kAddressSanitized: true in ASan builds only.
#if defined(__SANITIZE_ADDRESS__) || __has_feature(address_sanitizer)
inline constexpr bool kAddressSanitized = true;
#else
inline constexpr bool kAddressSanitized = false;
#endif

// block_signal(): blocks sig in the calling thread; threads it makes later
// inherit the block.
inline void block_signal(int sig) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

// busy_for(): busy for d without suspending (work, not a wait).
inline void busy_for(std::chrono::microseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
  }
}

// yield_some(): yields up to n times so that other tasks get to run (never
// needed for correctness, only to give a wrong implementation the chance to
// show it).
inline mpg::task<void> yield_some(int n) {
  for (int i = 0; i < n; ++i) co_await mpg::yield();
}

// eager_coroutine: a coroutine that is not an mpg task: starts at once,
// frees itself at the end.
struct eager_coroutine {
  struct promise_type {
    eager_coroutine get_return_object() { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { std::terminate(); }
  };
};

// dump_shows(): some task of rt is parked with wait reason `reason` (as the
// task dump prints it). Shutdown tests check with it, before destroying the
// runtime, that the task they mean to kill is parked where they think.
inline bool dump_shows(const mpg::runtime& rt, std::string_view reason) {
  std::ostringstream os;
  rt.dump(os);
  return os.str().find(": " + std::string(reason) + " at ") != std::string::npos;
}

// wait_until(): a plain thread (or a hook) yields the CPU until `pred`
// holds, at most `limit`; false when it never did (a failure, never a
// normal outcome). Tasks wait with mpg::yield() instead.
template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(30)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

}  // namespace mpg_test
