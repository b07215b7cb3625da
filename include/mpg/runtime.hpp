// mpg/runtime.hpp: the runtime: Ps, Ms, block_on, spawn from any thread,
// statistics and the task dump.
//
// A runtime owns `procs` Ps (Go's GOMAXPROCS) and the Ms (OS threads) that
// run them. Ms start lazily as work appears and park when there is none.
// block_on() runs a task from a plain thread, which only waits. Several
// runtimes may exist in one process; a task belongs to the runtime it was
// spawned on, and spawn/go inside it use that runtime.
//
// The constructor throws std::runtime_error when io_uring cannot be set up
// (a seccomp profile that denies io_uring_setup, as Docker's default one
// does), and std::invalid_argument when local_queue_capacity is not a power
// of two from 2 to 65536.
//
// ~runtime stops and joins every M. Tasks still suspended are destroyed
// (their frames freed) and reported on stderr with their ids and names.
// A plain thread may wake the runtime's tasks (oneshot send, try_send,
// close, cancel, done, release, resuming a foreign awaiter) until ~runtime
// begins, not while it runs: such a wake racing ~runtime can reach the task
// after it was destroyed. Join or stop those threads first (post() and
// external_work are the exceptions: they refuse work once ~runtime began).
//
// Deadlock detection: while block_on() waits, the runtime counts as
// deadlocked when nothing is runnable or running and nothing can wake a
// task: no timer pending, no I/O in flight, no call inside mpg::blocking,
// no other runtime of the process that could (tasks of two runtimes may
// share a channel or a join), and no progress between several looks 50 ms
// apart. Plain threads are not counted as possible wakers: a task that
// waits for a plain thread to try_send() to it counts as blocked, unless an
// mpg::external_work guard lives (mpg/runtime_handle.hpp lists every
// possible wake-up).
//
// fork() without exec: the child has none of the runtime's Ms, so, as in
// Go, a runtime of the parent must not be used in the child, nor destroyed
// there (end the child with _exit() or exec). A runtime made in the child
// works: a fork waits for mpg's process-wide locks (the runtime registry's,
// the frame depot's, the post caches' orphan list's, the signal ones), so
// that the child has none of them held, and mpg/signal.hpp, "fork() without
// exec", says what mpg resets at a fork for that.
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "mpg/detail/sched/g.hpp"
#include "mpg/runtime_handle.hpp"
#include "mpg/runtime_options.hpp"
#include "mpg/runtime_stats.hpp"
#include "mpg/spawn.hpp"
#include "mpg/task.hpp"

namespace mpg {

namespace detail {
// block_on support: a plain thread waits for a join, through a waiter task
// that joins it and signals the thread. The waiter may outlive block_on: a
// deadlock_error leaves it parked on the join, and a wake-up that comes
// later (from a thread the check does not count) resumes it. So what the
// two share lives on the heap, owned by both (a shared_ptr parameter of the
// waiter's frame, released however that frame goes): the handle, the
// result and the wait state.
struct block_on_state;
std::shared_ptr<block_on_state> new_block_on_state();
void block_on_signal(block_on_state*) noexcept;
void block_on_wait(scheduler* s, block_on_state*);
// check_block_on_caller(): throws runtime_misuse_error when the calling
// thread holds a P of any runtime (a task, a posted function, a coroutine
// resumed there): blocking it would stall that P, for ever if what block_on
// waits for needs it. A thread in mpg::blocking has given its P away.
void check_block_on_caller();

template <class T>
struct block_on_slot {
  explicit block_on_slot(join_handle<T> handle)
      : h(std::move(handle)), st(new_block_on_state()) {}
  join_handle<T> h;
  std::shared_ptr<block_on_state> st;
  // The value (unused for void).
  std::optional<std::conditional_t<std::is_void_v<T>, std::monostate, T>> out;
  std::exception_ptr err;
};

// join_into: block_on's join, which puts the result into the slot inside
// await_resume, an ordinary function, so that the waiter's frame holds no
// T. g++ keeps a co_await's result in the frame, which is aligned to 16
// bytes: a T aligned beyond that would be misaligned there (README,
// "Over-aligned locals").
template <class T>
struct join_into {
  using mpg_awaiter = runtime_awaiter_tag;
  typename join_handle<T>::awaiter inner;
  block_on_slot<T>* slot;
  bool await_ready() { return inner.await_ready(); }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) {
    return inner.await_suspend(h);
  }
  void await_resume() { slot->out.emplace(inner.await_resume()); }
  void link_parent(std::source_location where) noexcept { inner.link_parent(where); }
};

template <class T>
task<void> block_on_waiter(std::shared_ptr<block_on_slot<T>> slot) {
  try {
    if constexpr (std::is_void_v<T>) {
      co_await slot->h;
    } else {
      co_await join_into<T>{slot->h.operator co_await(), slot.get()};
    }
  } catch (...) {
    slot->err = std::current_exception();
  }
  block_on_signal(slot->st.get());
}
}  // namespace detail

class runtime {
 public:
  explicit runtime(runtime_options opts = {});
  ~runtime();
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  unsigned procs() const noexcept;

  // spawn(): start t on this runtime from any thread (inside or outside it).
  template <class T>
  join_handle<T> spawn(task<T> t, const char* name = nullptr) {
    return join_handle<T>(detail::spawn_frame(std::move(t), name, sched_));
  }
  // spawn(op): an operation awaiter with a task form, as mpg::spawn(op)
  // takes (spawn.hpp): rt.spawn(s.write(data)) from any thread.
  template <class Op>
    requires detail::op_with_task_form<Op>
  join_handle<typename Op::result_type> spawn(Op&& op, const char* name = nullptr) {
    return spawn(task<typename Op::result_type>(std::move(op)), name);
  }
  // go(): a detached task on this runtime, from any thread.
  void go(task<void> t, const char* name = nullptr);

  // block_on(): run t to completion from a plain thread; returns its value or
  // rethrows its exception. Throws std::logic_error on a thread that holds a
  // P (inside a task or a posted function), and mpg::deadlock_error when
  // every task is blocked with no possible wake-up. Called inside
  // mpg::blocking, it throws runtime_misuse_error if ~runtime begins while
  // it waits (~runtime waits for that blocking call, and runs no task).
  template <class T>
  T block_on(task<T> t) {
    detail::check_block_on_caller();
    return block_on(spawn(std::move(t), "block_on"));
  }
  // block_on(op): an operation awaiter with a task form, run to completion
  // as its task: rt.block_on(s.read(buf)).
  template <class Op>
    requires detail::op_with_task_form<Op>
  typename Op::result_type block_on(Op&& op) {
    return block_on(task<typename Op::result_type>(std::move(op)));
  }
  template <class T>
  T block_on(join_handle<T> h) {
    detail::check_block_on_caller();
    auto slot = std::make_shared<detail::block_on_slot<T>>(std::move(h));
    spawn(detail::block_on_waiter<T>(slot), "block_on.wait").detach();
    detail::block_on_wait(sched_, slot->st.get());
    // Taken out of the slot: the waiter may release the slot last, and the
    // exception is then this thread's to free (its count lives in the
    // uninstrumented C++ runtime, which ThreadSanitizer cannot see).
    if (std::exception_ptr e = std::exchange(slot->err, nullptr)) std::rethrow_exception(e);
    if constexpr (!std::is_void_v<T>) return std::move(*slot->out);
  }

  // handle(): a copyable reference to this runtime for any thread
  // (mpg/runtime_handle.hpp): post functions, hop coroutines onto it.
  runtime_handle handle() const noexcept;

  runtime_stats stats() const;
  // dump(): every live task: id, name, state, and where it waits; below
  // each waiting task its await chain, innermost first, one indented line
  // per coroutine: the function and, where known, file:line, e.g.
  //   task 7 (worker) [waiting: chan receive at worker.cpp:42 in consume(mpg::chan<int>)]
  //         at consume(mpg::chan<int>) worker.cpp:42
  //         at pipeline() main.cpp:9
  // Any thread may call it, inside a task or not. To read the chains it
  // stops the world: it holds every other P until the dump is written (a
  // few milliseconds); when that fails (a task that does not suspend for
  // 2 s, a runtime shutting down, or a dump from a task that meets another
  // dump gathering the Ps, which needs the task's P: it returns at once)
  // the dump says so and leaves them out.
  void dump(std::ostream& os) const;

  detail::scheduler* scheduler_for_internal_use() const noexcept { return sched_; }

 private:
  detail::scheduler* sched_;
};

}  // namespace mpg
