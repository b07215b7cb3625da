// mpg/detail/sched/fastrand.hpp: a per-thread pseudo-random generator for
// scheduling decisions (Go's cheaprand): select's poll order.
//
// wyrand: one add and one 64x64->128 multiply per draw, passes BigCrush and
// PractRand, and its state is one word in thread-local storage. Not for
// anything that needs unpredictability. Each thread seeds itself on first
// use from the time and the address of its state (distinct per thread), so
// two Ms never replay the same sequence.
//
// fastrandn(n) maps a draw to [0, n) with Lemire's multiply-shift: the bias
// is below n / 2^32, far under what the fairness tests can see, and it needs
// no division.
#pragma once

#include <chrono>
#include <cstdint>

namespace mpg::detail {

__extension__ typedef unsigned __int128 fastrand_u128;

// Never inlined: inlined into a coroutine (select's await_suspend is), the
// address of `state` may be computed once and kept in the coroutine frame
// across suspension points (clang does), so that after the task moved to
// another M the draw would read and write the first M's state: a data race
// (test/select_any_tests.cpp, the arming tests, under TSan). Out of line,
// each call finds its own thread's state.
[[gnu::noinline]] inline std::uint64_t fastrand64() noexcept {
  constinit thread_local std::uint64_t state = 0;
  if (state == 0) [[unlikely]] {
    state = static_cast<std::uint64_t>(
                std::chrono::steady_clock::now().time_since_epoch().count()) ^
            (reinterpret_cast<std::uintptr_t>(&state) * 0x9E3779B97F4A7C15ull);
    if (state == 0) state = 1;
  }
  state += 0xa0761d6478bd642full;
  const fastrand_u128 t = static_cast<fastrand_u128>(state) * (state ^ 0xe7037ed1a0b428dbull);
  return static_cast<std::uint64_t>(t >> 64) ^ static_cast<std::uint64_t>(t);
}

// fastrandn(): uniform in [0, n), n > 0.
inline std::uint32_t fastrandn(std::uint32_t n) noexcept {
  return static_cast<std::uint32_t>(
      (static_cast<std::uint64_t>(static_cast<std::uint32_t>(fastrand64())) * n) >> 32);
}

}  // namespace mpg::detail
