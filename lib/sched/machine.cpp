// lib/sched/machine.cpp: the M's parker, a futex word with an optional deadline.
#include "sched/machine.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

namespace mpg::detail {

namespace {
long futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                const timespec* abs_timeout) {
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, the clock
  // behind std::chrono::steady_clock on Linux.
  return syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word),
                 FUTEX_WAIT_BITSET_PRIVATE, expected, abs_timeout, nullptr, FUTEX_BITSET_MATCH_ANY);
}
void futex_wake_one(std::atomic<std::uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE_PRIVATE, 1, nullptr,
          nullptr, 0);
}
}  // namespace

bool parker::park(std::optional<std::chrono::steady_clock::time_point> deadline) noexcept {
  timespec ts{};
  if (deadline) {
    auto ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(deadline->time_since_epoch()).count();
    if (ns < 0) ns = 0;
    ts.tv_sec = ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
  }
  for (;;) {
    // Acquire: pairs with unpark's release exchange (see machine.hpp).
    if (word_.exchange(0, std::memory_order_acquire) == 1) return true;
    long r = futex_wait(&word_, 0, deadline ? &ts : nullptr);
    if (r == -1 && errno == ETIMEDOUT) {
      return word_.exchange(0, std::memory_order_acquire) == 1;
    }
  }
}

void parker::unpark() noexcept {
  // Release: the waker's writes (handed P, flags) happen before the wakee's
  // acquire in park().
  if (word_.exchange(1, std::memory_order_release) == 0) futex_wake_one(&word_);
}

}  // namespace mpg::detail
