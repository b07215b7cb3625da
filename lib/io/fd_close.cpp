// lib/io/fd_close.cpp: claim_close(), C1 and C4 of the close protocol
// (fd_close.hpp).
#include "io/fd_close.hpp"

#include <thread>

#include "mpg/detail/sync/cpu_relax.hpp"

namespace mpg::detail {

namespace {
// Relaxed: a count for tests; nothing is ordered by it.
std::atomic<std::uint64_t> g_close_waits{0};
constexpr int kSpinsBeforeYield = 64;
}  // namespace

int claim_close(std::atomic<int>& fd) noexcept {
  // Relaxed: the CAS below (or C4's acquire) is what orders.
  int seen = fd.load(std::memory_order_relaxed);
  for (;;) {
    if (seen == -1) return -1;
    if (seen == kClosingFd) break;
    // acq_rel (fd_close.hpp): on failure `seen` is reloaded and looked at again.
    if (fd.compare_exchange_weak(seen, kClosingFd, std::memory_order_acq_rel,
                                 std::memory_order_acquire)) {
      return seen;  // C1
    }
  }
  // C4: another close() holds the claim.
  g_close_waits.fetch_add(1, std::memory_order_relaxed);
  for (int spins = 0; fd.load(std::memory_order_acquire) == kClosingFd; ++spins) {
    if (spins < kSpinsBeforeYield) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
  return -1;
}

std::uint64_t close_waits() noexcept { return g_close_waits.load(std::memory_order_relaxed); }

}  // namespace mpg::detail
