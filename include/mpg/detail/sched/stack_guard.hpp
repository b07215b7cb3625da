// mpg/detail/sched/stack_guard.hpp: chains of symmetric transfers kept off
// the thread's stack where the compiler does not keep them off it.
//
// A task that awaits another, a join that runs its child inline, a task's
// end that resumes its awaiter and a park that switches to the P's next G
// each transfer control by returning the next coroutine's handle from
// await_suspend. clang lowers the resume of that handle to a guaranteed
// tail call at every optimisation level, with or without sanitizers. g++ 12
// makes it a tail call only when it optimises sibling calls (-O2 and up,
// no sanitizer): at -O0, -Og and -O1, and under -fsanitize=address, each
// transfer is a call that returns only when the whole chain ends. Every
// transfer then takes stack, and a loop of 100,000 co_awaits of a small
// task, or a fork-join tree of a few tens of thousands of tasks, overflows
// an M's 8 MiB stack.
//
// The guard, in code that g++ compiles: before such a transfer, the task
// compares the stack pointer with the bounds of the M's stack. Once more
// than half of that stack is in use, the transfer may instead end the
// chain: resume_on_fresh_stack() puts the current G in its P's runnext
// slot with the handle as its resume point (as ready() does) and returns
// the no-op handle, so that every call of the chain returns, down to the
// M's loop, which resumes the G next, from the bottom of its stack. (Not
// the back of the run queue, as a yield: the P would start its newest
// spawns first, out of a fork-join tree's depth-first order.)
// The check is two thread-local loads, a subtraction and a compare (about
// five instructions per transfer, in g++'s code only); it sits where a
// chain can grow without a bound: runtime awaiters that return a handle
// (task awaits, joins, I/O operations, through runtime_await,
// foreign_await.hpp) and a task's end (task.hpp). Channel, mutex and select
// awaiters return either the no-op handle, their own task's handle after a
// budget check, or the P's next G, which spends the G budget (kBudget): at
// most that many of them nest in a row.
//
// When unwinding is sound. Returning the no-op handle hands control back
// to whatever called the chain's first resume. That is the M's loop only
// if every frame between is a transfer; a coroutine that is not a task,
// called or resumed directly by a task's code, is a plain call frame, and
// unwinding would return into that task's code while its G waits in the
// run queue: one G run twice. So resume_on_fresh_stack() unwinds only when
//   U1. the current G is running (not parked, as while a foreign awaitable
//       runs a coroutine of its own inline: foreign_await.hpp), and
//   U2. the await chain from the transfer's task frame out to the G's root
//       frame is made of task frames linked by task awaits (each frame's
//       caller_where_ is set, task.hpp), which it walks. A coroutine that
//       is not a task anywhere in the chain breaks the walk.
// The walk starts at the task that transfers (the awaiting task, or the
// task that ends), except after a runtime awaiter whose result is the G's
// resume point: that is a switch to the P's next G (the task that switched
// has published its park, and another M may run it: it is not touched),
// and the walk starts at the target, that G's parked frame. Runtime
// awaiters return task frames, the no-op handle or the P's next G (g.hpp),
// so a target equal to a stale resume point of the same G is a task frame
// too, and the walk from it is as sound. Where U1 or U2 fails, the
// transfer nests as it would without the guard, and the next 64 trips of
// the same G on this M decline without walking the chain again (a walk
// costs the chain's depth).
//
// The bounds are the calling thread's, set by each M when it starts
// (lib/sched/stack_guard.cpp). A thread that is not an M has a span of 0,
// so its check never fires: a task runs only on Ms, and on any other thread
// there is no G to queue.
#pragma once

#include <coroutine>
#include <cstdint>

namespace mpg::detail {

#if defined(__clang__)
inline constexpr bool kGuardTransfers = false;
#else
inline constexpr bool kGuardTransfers = true;
#endif

// The part of the M's stack the chains may use: addresses in
// [low, low + span) are its second half, the one a chain must not reach.
struct stack_bounds {
  std::uintptr_t low = 0;
  std::uintptr_t span = 0;
};
// initial-exec, as every thread_local of the runtime: defined in libmpg,
// which an executable links at start-up, so the access is one load through
// the GOT and no call to __tls_get_addr. constinit: no TLS wrapper call.
extern constinit __attribute__((tls_model("initial-exec"))) thread_local stack_bounds
    tls_stack_bounds;

// resume_on_fresh_stack(h, from, may_switch): the slow path of
// guard_transfer(): when unwinding is sound (U1, U2 above), queues the
// current G at h and returns the no-op handle; else returns h. `from` is
// the frame of the task that transfers; may_switch, that h may be the P's
// next G (a runtime awaiter's result, which is a task frame).
std::coroutine_handle<> resume_on_fresh_stack(std::coroutine_handle<> h, void* from,
                                              bool may_switch) noexcept;

// guard_transfer(h, from, may_switch): h, unless the stack of this M is
// more than half used, then resume_on_fresh_stack(h, from, may_switch).
// The address of a local stands for the stack pointer; under
// AddressSanitizer's fake stacks it lies outside the bounds and the check
// passes.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wattributes"
[[gnu::always_inline]] inline std::coroutine_handle<> guard_transfer(
    std::coroutine_handle<> h, void* from, bool may_switch = false) noexcept {
  if constexpr (kGuardTransfers) {
    char probe;
    const stack_bounds& b = tls_stack_bounds;
    if (reinterpret_cast<std::uintptr_t>(&probe) - b.low < b.span) [[unlikely]]
      return resume_on_fresh_stack(h, from, may_switch);
  }
  return h;
}
#pragma GCC diagnostic pop

}  // namespace mpg::detail
