// mpg/once.hpp: once, Go's sync.Once for tasks.
//
//   mpg::once init;
//   co_await init.call([]() -> mpg::task<> { co_await load_config(); });
//
// The first caller runs f, which returns void or an mpg::task (which may
// itself await; its value is discarded); any other result, an awaitable
// say, does not compile. Callers that arrive while it runs park until it
// finishes; later callers return at once. When call() returns, f has
// completed and its effects are visible to the caller.
// If f throws, the exception reaches only the caller that ran it, and the
// once counts as done (Go: "if f panics, Do considers it to have
// returned").
//
// Design. An atomic state (idle, running, done) for the fast path: a call on
// a done once is one acquire load. Parked callers wait in a detail::
// parking_queue (the protocol, and the rule that lets the once be destroyed
// by the last caller to return, are there). The first caller turns idle
// into running under the queue lock, which makes it the runner (its
// awaiter's `runner` flag); it runs f outside the lock, then, under the lock
// again, sets done and takes every queued caller, and readies them after it.
// The slow path is a small coroutine (it must await f), entered by
// symmetric transfer, so a done once costs no allocation.
//
// Shutdown. A caller killed while it waits (~runtime destroys its frame)
// unlinks itself in its awaiter's destructor (parking_queue.hpp, P3), so the
// runner's finish(), on another runtime or after this one is gone, readies
// only live callers. A once destroyed with callers still queued detaches
// them. A runner killed while f runs (its frame destroyed with f suspended,
// f having neither returned nor thrown) gives the once back, as POSIX does
// for a cancelled pthread_once init routine ("the effect on once_control
// shall be as if pthread_once() was never called"): its awaiter, destroyed
// with its runner flag still set, hands the run to the first caller still
// queued, of any runtime, which then runs its own f as if it had been the
// first caller (parking_queue.hpp, P4: the record is that caller's runner
// flag, set under the queue lock before ready()); with nobody queued it
// turns the state back to idle, and the next call runs f. A caller handed
// the run and killed before it ran passes it on the same way. Not when the
// once was destroyed earlier in the same kill (it lived in a younger
// frame): a once reports its destruction to the kill, as a mutex does
// (parking_queue.hpp, "Shutdown"). Go has no task kill, so this is mpg's
// rule: f may run again after a killed run did part of its work, and must
// cope with what that run left (as an initialisation must after a crash).
//
// Invariants: while the state is running, exactly one caller holds the run
// (its runner flag is set until it calls finish(), or until its awaiter's
// destructor gives the run back): the caller that found the once idle, or
// one a give-back handed the run to. Nobody is queued unless the state is
// running (under the queue lock).
//
// Memory ordering: the runner stores done with release after f completes;
// the fast path loads it with acquire, so f's effects happen-before any call
// that returns without parking. Parked callers are ordered after f through
// the queue lock and ready(). A give-back's change of the state (to idle,
// or none: running passes to the caller handed the run) is under the queue
// lock, relaxed: outside the lock only done is ever read. The runner flag
// is a plain field: written by its own task under the lock, or by a
// give-back under the lock before ready(), and read by its task after it
// resumes (ordered by ready()) or by its destructor on the killing thread
// (detail/sync/waitq.hpp, kQueued: the same argument).
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <concepts>
#include <functional>
#include <source_location>
#include <type_traits>
#include <utility>

#include "mpg/detail/sched/g.hpp"
#include "mpg/detail/sync/parking_queue.hpp"
#include "mpg/detail/sync/waitq.hpp"
#include "mpg/task.hpp"

namespace mpg {

namespace detail {
template <class R>
inline constexpr bool is_task_v = false;
template <class T>
inline constexpr bool is_task_v<task<T>> = true;
// once_function: what once::call() takes: a callable returning void or an
// mpg::task. Any other result (an awaitable such as sleep_for's) would be
// dropped unawaited, so it does not compile.
template <class F>
concept once_function =
    std::invocable<std::decay_t<F>&> &&
    (std::is_void_v<std::invoke_result_t<std::decay_t<F>&>> ||
     is_task_v<std::invoke_result_t<std::decay_t<F>&>>);
}  // namespace detail

class once {
 public:
  template <class F>
  class call_awaiter;

  once() noexcept = default;
  // Reports itself to a runtime's kill in progress on this thread, so that
  // a runner killed later in that kill leaves it alone (see "Shutdown").
  ~once();
  once(const once&) = delete;
  once& operator=(const once&) = delete;

  // once::call()
  //
  // `co_await o.call(f)`: runs f if no call has yet, else waits for the one
  // running (if any). See the file comment for exceptions.
  template <class F>
    requires detail::once_function<F>
  call_awaiter<std::decay_t<F>> call(F&& f,
                                     std::source_location where = std::source_location::current()) {
    return call_awaiter<std::decay_t<F>>(this, std::forward<F>(f), where);
  }

  // done(): f has completed (a snapshot).
  bool done() const noexcept { return state_.load(std::memory_order_acquire) == kDone; }

 private:
  // One attempt under the queue lock: become the runner, find it done, or
  // park.
  struct wait_awaiter : detail::waiter {
    using mpg_awaiter = detail::runtime_awaiter_tag;  // g.hpp
    wait_awaiter(once* o, std::source_location w) noexcept : self(o), where(w) {}
    // Destroyed while still queued: only when its task is killed at runtime
    // shutdown (detail/sync/waitq.hpp, kQueued; the plain read of the bit is
    // argued there). Unlink, so that finish() does not walk freed memory.
    // Destroyed holding the run: its task was killed while f ran, or after
    // a give-back handed it the run and before it ran. Give the run back,
    // so that the once's other callers are still served ("Shutdown").
    ~wait_awaiter() {
      if (queued()) [[unlikely]]
        unqueue();
      else if (runner) [[unlikely]]
        give_back();
    }
    void unqueue() noexcept;
    void give_back() noexcept;
    once* self;
    std::source_location where;
    // This caller holds the run of f: set by its own await_suspend (it found
    // the once idle) or by a give-back (P4), both under the queue lock;
    // cleared once f has completed, just before finish(), or by give_back().
    bool runner = false;
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h);
    void await_resume() const noexcept {}
  };

  template <class F>
  task<void> run_or_wait(F f, std::source_location where) {
    wait_awaiter w(this, where);
    co_await w;
    if (!w.runner) co_return;  // it ran (we may have waited for it)
    std::exception_ptr failure;
    try {
      if constexpr (detail::is_task_v<std::invoke_result_t<F&>>)
        co_await std::invoke(f);
      else
        std::invoke(f);
    } catch (...) {
      failure = std::current_exception();
    }
    w.runner = false;  // f completed: finish() ends the run, not ~wait_awaiter
    finish();
    if (failure) std::rethrow_exception(failure);
  }
  void finish() noexcept;

  static constexpr std::uint32_t kIdle = 0;
  static constexpr std::uint32_t kRunning = 1;
  static constexpr std::uint32_t kDone = 2;

  std::atomic<std::uint32_t> state_{kIdle};
  detail::parking_queue<> q_;
};

template <class F>
class [[nodiscard]] once::call_awaiter {
 public:
  using mpg_awaiter = detail::runtime_awaiter_tag;  // g.hpp
  template <class G>
  call_awaiter(once* o, G&& f, std::source_location where)
      : o_(o), f_(std::forward<G>(f)), where_(where) {}
  call_awaiter(const call_awaiter&) = delete;
  call_awaiter& operator=(const call_awaiter&) = delete;

  bool await_ready() noexcept {
    if (!o_->done()) return false;
    fast_ = true;
    return !detail::consume_budget_now();
  }
  // Not inlined: clang before 19 may move a store into the awaiter (here
  // slow_awaiter_'s initialisation) below an inlined await_suspend's call
  // that publishes h (llvm/llvm-project#56301), so that the task already
  // resumed elsewhere reads the slot before it is written. Out of line, the
  // awaiter is in memory and written before requeue_current() publishes h.
  template <class P>
  [[gnu::noinline]] std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) {
    if (fast_) {  // done, but the budget ran out
      detail::requeue_current(h);
      return std::noop_coroutine();
    }
    slow_ = o_->run_or_wait(std::move(f_), where_);
    if constexpr (std::is_base_of_v<detail::promise_base, P>)
      slow_.link_parent(where_);  // h's await chain (task.hpp)
    slow_awaiter_ = slow_.operator co_await();
    return slow_awaiter_.await_suspend(h);
  }
  void await_resume() {
    if (slow_awaiter_.h) slow_awaiter_.await_resume();
  }

 private:
  once* o_;
  F f_;
  std::source_location where_;
  bool fast_ = false;
  task<void> slow_;
  task<void>::awaiter slow_awaiter_{};
};

}  // namespace mpg
