// lib/sched/stack_guard.cpp: the bounds of each M's stack and the slow path
// of the transfer guard (mpg/detail/sched/stack_guard.hpp, whose U1 and U2
// say when unwinding a chain is sound).
#include "mpg/detail/sched/stack_guard.hpp"

#include <pthread.h>

#include "mpg/task.hpp"
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

namespace {
// U2: the chain from the task frame `frame` out to gp's root frame is made
// of task frames, each awaited by the next with a task's co_await (a set
// caller_where_; task.hpp). Every frame walked belongs to gp, which this
// thread runs, and is suspended.
bool chain_of_tasks(const g* gp, const void* frame) noexcept {
  const void* const root = gp->root.address();
  while (frame != root) {
    const promise_base& p =
        std::coroutine_handle<promise_base>::from_address(const_cast<void*>(frame)).promise();
    if (!p.awaited_by_task()) return false;
    frame = p.continuation_.address();
  }
  return true;
}
}  // namespace

// The last failure of U1 or U2 on this thread: the G, and how many more of
// its trips through this path decline without a walk. A chain that
// failed usually keeps the frame that failed while it grows, and walking
// it again at every transfer would cost the square of its depth; after
// kDeclineWithoutWalk trips the walk is made again, so a chain whose
// non-task frame has returned meanwhile is unwound again.
constexpr int kDeclineWithoutWalk = 64;
constinit thread_local std::uint64_t tls_declined_gid = 0;
constinit thread_local int tls_declines_left = 0;

std::coroutine_handle<> resume_on_fresh_stack(std::coroutine_handle<> h, void* from,
                                              bool may_switch) noexcept {
  if (h.address() == std::noop_coroutine().address()) return h;  // the chain ends anyway
  machine* m = current_m();
  g* gp = current_g();
  if (m == nullptr || m->p() == nullptr || gp == nullptr) return h;
  // Relaxed: the id of the G this thread runs (ids are never reused).
  const std::uint64_t gid = gp->id.load(std::memory_order_relaxed);
  if (gid == tls_declined_gid && tls_declines_left > 0) {
    --tls_declines_left;
    return h;
  }
  // U1. Relaxed: the status of the G this thread runs, written by this
  // thread (begin_run, park, cancel_park).
  // U2, from the target when a runtime awaiter switched to the P's next G
  // (then `from` belongs to the G that parked, which may run elsewhere),
  // else from the task that transfers.
  const void* start = may_switch && gp->resume.address() == h.address() ? h.address() : from;
  if (gp->status.load(std::memory_order_relaxed) != g_status::running ||
      !chain_of_tasks(gp, start)) {
    tls_declined_gid = gid;
    tls_declines_left = kDeclineWithoutWalk;
    return h;
  }
  // Into runnext: the G goes on next, from the M's loop, as if the chain
  // had not been cut (a yield to the ring's tail would let the P start the
  // newest spawns first, out of a fork-join tree's depth-first order).
  requeue_current_next(h);
  return std::noop_coroutine();
}

}  // namespace mpg::detail
