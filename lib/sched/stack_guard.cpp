// lib/sched/stack_guard.cpp: the bounds of each M's stack and the slow path
// of the transfer guard (mpg/detail/sched/stack_guard.hpp).
#include "mpg/detail/sched/stack_guard.hpp"

#include <pthread.h>

#include "sched/machine.hpp"

namespace mpg::detail {

constinit __attribute__((tls_model("initial-exec"))) thread_local stack_bounds tls_stack_bounds;

void guard_this_thread_stack() noexcept {
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) != 0) return;  // unguarded: span stays 0
  void* base = nullptr;
  std::size_t size = 0;
  if (pthread_attr_getstack(&attr, &base, &size) == 0 && base != nullptr)
    tls_stack_bounds = stack_bounds{reinterpret_cast<std::uintptr_t>(base), size / 2};
  pthread_attr_destroy(&attr);
}

std::coroutine_handle<> resume_on_fresh_stack(std::coroutine_handle<> h) noexcept {
  if (h.address() == std::noop_coroutine().address()) return h;  // the chain ends anyway
  machine* m = current_m();
  if (m == nullptr || m->p() == nullptr || current_g() == nullptr) return h;
  requeue_current(h);
  return std::noop_coroutine();
}

}  // namespace mpg::detail
