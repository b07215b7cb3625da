// lib/sched/process_barrier.cpp: membarrier(2) behind process_barrier()
// (process_barrier.hpp).
#include "sched/process_barrier.hpp"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace mpg::detail {

namespace {
#if !defined(ABSL_HAVE_THREAD_SANITIZER)
int membarrier(int cmd) noexcept { return static_cast<int>(::syscall(SYS_membarrier, cmd, 0, 0)); }
#endif

bool register_once() noexcept {
#if defined(ABSL_HAVE_THREAD_SANITIZER)
  return true;  // seq_cst fences stand in (process_barrier.hpp)
#else
  const int cmds = membarrier(MEMBARRIER_CMD_QUERY);
  if (cmds < 0 || (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) return false;
  return membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
#endif
}
}  // namespace

bool process_barrier_available() noexcept {
  static const bool available = register_once();  // thread-safe static init
  return available;
}

void process_barrier() noexcept {
#if defined(ABSL_HAVE_THREAD_SANITIZER)
  std::atomic_thread_fence(std::memory_order_seq_cst);
#else
  // Cannot fail once registered; the result carries nothing to act on.
  (void)membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
#endif
}

}  // namespace mpg::detail
