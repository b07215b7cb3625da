// lib/io/fd_close.cpp: claim_close() and take_fd(), C1, C4 and C5 of the
// close protocol (fd_close.hpp).
#include "io/fd_close.hpp"

#include <thread>

#include "mpg/detail/sync/cpu_relax.hpp"

namespace mpg::detail {

namespace {
// Relaxed: a count for tests; nothing is ordered by it.
std::atomic<std::uint64_t> g_close_waits{0};
constexpr int kSpinsBeforeYield = 64;

// C4: waits until the word leaves kClosingFd. Acquire: pairs with C3.
void wait_out_close(std::atomic<int>& fd) noexcept {
  g_close_waits.fetch_add(1, std::memory_order_relaxed);
  for (int spins = 0; fd.load(std::memory_order_acquire) == kClosingFd; ++spins) {
    if (spins < kSpinsBeforeYield) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
}

}  // namespace

int claim_close(std::atomic<int>& fd) noexcept {
  // Acquire, as every load here: a closed word (-1) may have been stored by
  // a closer whose accesses must happen before the caller's next ones.
  int seen = fd.load(std::memory_order_acquire);
  for (;;) {
    if (seen == kClosingFd) {
      wait_out_close(fd);  // C4: another close() holds the claim
      return -1;
    }
    if (seen < 0) return -1;  // closed, or never open
    // acq_rel (C1), and seq_cst: a stream's close() orders this claim and
    // its load of the receive queue against a first reader's install of
    // the queue and load of the fd (net.cpp, tcp_stream::close). On failure
    // `seen` is reloaded (acquire) and looked at again.
    if (fd.compare_exchange_weak(seen, kClosingFd, std::memory_order_seq_cst,
                                 std::memory_order_acquire)) {
      return seen;
    }
  }
}

int take_fd(std::atomic<int>& fd) noexcept {
  int seen = fd.load(std::memory_order_acquire);
  for (;;) {
    if (seen == kClosingFd) {
      wait_out_close(fd);  // C5: as C4, then the word is -1
      seen = fd.load(std::memory_order_acquire);
      continue;
    }
    // acq_rel: the mover takes the number with what was done to it.
    if (fd.compare_exchange_weak(seen, -1, std::memory_order_acq_rel,
                                 std::memory_order_acquire)) {
      return seen < 0 ? -1 : seen;
    }
  }
}

std::uint64_t close_waits() noexcept { return g_close_waits.load(std::memory_order_relaxed); }

}  // namespace mpg::detail
