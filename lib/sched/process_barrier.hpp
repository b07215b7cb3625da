// lib/sched/process_barrier.hpp: an asymmetric barrier. The rare side calls
// process_barrier(), which makes every thread of the process that is
// running execute a full memory barrier before it returns (Linux's
// membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)); the frequent side then
// needs only a compiler barrier (owner_barrier()) where a Dekker-style
// store-then-load pair would need a full fence:
//
//   frequent:  store X; owner_barrier(); load Y
//   rare:      store Y; process_barrier(); load X
//
// Either the rare side's load sees the frequent side's store, or the
// frequent side's load sees the rare side's store. A process_barrier()
// costs microseconds (12-21 us measured on the 2-CPU machine class with
// the other CPU busy), an interrupt of every CPU running one of our
// threads, so it is for paths taken every few milliseconds at most.
//
// Under ThreadSanitizer, which does not know membarrier, both sides are
// seq_cst fences: the same guarantee in the C++ model, checked by TSan.
#pragma once

#include <atomic>

#include "absl/base/config.h"

namespace mpg::detail {

// process_barrier_available(): whether process_barrier() works here (the
// first call registers the process with the kernel; thread-safe). False
// without membarrier's private expedited command (Linux before 4.14, or a
// seccomp filter that refuses it); the rare side must then not rely on it.
bool process_barrier_available() noexcept;

// process_barrier(): the rare side. Requires process_barrier_available().
void process_barrier() noexcept;

// owner_barrier(): the frequent side.
inline void owner_barrier() noexcept {
#if defined(ABSL_HAVE_THREAD_SANITIZER)
  std::atomic_thread_fence(std::memory_order_seq_cst);
#else
  std::atomic_signal_fence(std::memory_order_seq_cst);  // the compiler's order only
#endif
}

}  // namespace mpg::detail
