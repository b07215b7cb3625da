// mpg/detail/sync/cpu_relax.hpp: the spin-wait hint every spinning loop in
// mpg uses (the spinlock's backoff, the mutex's active spin, an M spinning
// for work before it parks).
#pragma once

namespace mpg::detail {

// cpu_relax(): PAUSE on x86 (about 25 ns on the EPYC machines mpg is
// measured on), YIELD on ARM; a no-op elsewhere.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace mpg::detail
