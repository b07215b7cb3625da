// mpg/asio.hpp: mpg as an executor for standalone Asio (header only; needs
// <asio.hpp>, Debian's libasio-dev), and Asio operations awaited by tasks.
//
//   mpg::asio_executor ex(rt.handle());
//   asio::post(ex, [] { ... });                  // runs in a function posted to rt
//   asio::dispatch(ex, [] { ... });              // inline when already on rt, else posted
//   asio::co_spawn(ex, some_awaitable(), asio::detached);   // an Asio coroutine on rt
//
//   // inside an mpg task: await any Asio operation with the use_task token
//   asio::steady_timer t(io, 10ms);
//   std::error_code ec = co_await t.async_wait(mpg::use_task);
//   auto [ec2, n] = co_await sock.async_read_some(buf, mpg::use_task);
//
// asio_executor models Asio's standard executor (execution::executor): its
// context is one process-wide asio::execution_context with no services
// (Asio's I/O objects still need an io_context of their own), it is
// blocking.possibly by default (execute() runs the function inline when the
// caller already runs on that runtime, which is what asio::dispatch wants)
// and blocking.never when required (asio::post), outstanding_work.untracked
// (a runtime has no run() that could return early), relationship.fork.
// Functions go through runtime_handle::post, so the rules of
// mpg/runtime_handle.hpp hold: they run on a P outside any task, and once
// the runtime shuts down they are destroyed without running.
//
// use_task: a completion token for Asio initiating functions, only inside an
// mpg task. co_await gives the completion's arguments: nothing for void(),
// the value for one argument, a std::tuple for several (the error_code is
// returned, not thrown). The operation is started when the task awaits it;
// the task parks, Asio completes it on whatever thread runs the I/O object's
// executor, and the completion readies the task on its own runtime. While it
// waits the task shows "asio operation" in dump(), and the operation counts
// as a possible wake-up for the deadlock check. If the operation's
// completion handler is destroyed without being called (its io_context is
// destroyed with the operation pending), the task waits forever. A task
// killed by ~runtime while it waits leaves its operation behind: when the
// handler runs later, it finds the task gone and does nothing. A handler
// that runs while ~runtime runs is a plain thread waking a task of it,
// which mpg/runtime.hpp rules out: stop the io_context's threads (or let
// its operations finish) before the runtime is destroyed.
//
// Threads: asio_executor and its copies may be used from any thread.
//
// clang and Asio 1.22: Asio enables asio::awaitable / co_spawn under clang
// only when it finds <experimental/coroutine>; with clang 16 and C++20,
// define ASIO_HAS_CO_AWAIT=1 before including <asio.hpp> to use them (this
// header itself does not need them).
#pragma once

#include <asio/async_result.hpp>
#include <asio/execution.hpp>
#include <asio/execution_context.hpp>

#include <atomic>
#include <coroutine>
#include <exception>
#include <memory>
#include <optional>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <utility>

#include "mpg/detail/sched/g.hpp"
#include "mpg/runtime_handle.hpp"

namespace mpg {

namespace detail {
// The marker of awaiters that park through the runtime (task.hpp's
// await_transform passes them through unchanged).
struct runtime_awaiter_tag;

// The one execution_context that every asio_executor reports.
inline ::asio::execution_context& asio_context() noexcept {
  static ::asio::execution_context ctx;
  return ctx;
}
}  // namespace detail

class asio_executor {
 public:
  explicit asio_executor(runtime_handle h) noexcept : h_(std::move(h)) {}

  const runtime_handle& handle() const noexcept { return h_; }

  ::asio::execution_context& query(::asio::execution::context_t) const noexcept {
    return detail::asio_context();
  }
  ::asio::execution::blocking_t query(::asio::execution::blocking_t) const noexcept {
    return never_ ? ::asio::execution::blocking_t(::asio::execution::blocking.never)
                  : ::asio::execution::blocking_t(::asio::execution::blocking.possibly);
  }
  static constexpr ::asio::execution::outstanding_work_t query(
      ::asio::execution::outstanding_work_t) noexcept {
    return ::asio::execution::outstanding_work.untracked;
  }
  static constexpr ::asio::execution::relationship_t query(
      ::asio::execution::relationship_t) noexcept {
    return ::asio::execution::relationship.fork;
  }
  static constexpr ::asio::execution::mapping_t query(::asio::execution::mapping_t) noexcept {
    return ::asio::execution::mapping.thread;
  }

  asio_executor require(::asio::execution::blocking_t::never_t) const noexcept {
    asio_executor e(*this);
    e.never_ = true;
    return e;
  }
  asio_executor require(::asio::execution::blocking_t::possibly_t) const noexcept {
    asio_executor e(*this);
    e.never_ = false;
    return e;
  }

  // execute(): run f on the runtime: inline when blocking.possibly and the
  // caller already runs there, else posted. When the runtime is gone, f is
  // destroyed without running.
  template <class F>
  void execute(F&& f) const {
    if (!never_ && h_.running_in_this_thread()) {
      std::decay_t<F> fn(std::forward<F>(f));
      fn();
      return;
    }
    (void)h_.post(std::forward<F>(f));
  }

  friend bool operator==(const asio_executor& a, const asio_executor& b) noexcept {
    return a.h_ == b.h_ && a.never_ == b.never_;
  }
  friend bool operator!=(const asio_executor& a, const asio_executor& b) noexcept {
    return !(a == b);
  }

 private:
  runtime_handle h_;
  bool never_ = false;
};

struct use_task_t {
  constexpr use_task_t() noexcept = default;
};
inline constexpr use_task_t use_task{};

namespace detail {

template <class... Args>
struct asio_result {
  using type = std::tuple<std::decay_t<Args>...>;
};
template <class A>
struct asio_result<A> {
  using type = std::decay_t<A>;
};
template <>
struct asio_result<> {
  using type = void;
};

// The awaiter that use_task makes of an Asio operation: parks the task,
// starts the operation, and the completion handler readies the task.
//
// The handler may outlive the task: a task killed by ~runtime while parked
// here has its frame (and this awaiter) destroyed, and an I/O object that
// goes with it (or its io_context, run later) may still call the handler.
// So the handler shares a counted record with the awaiter, never the
// awaiter itself, and one exchange of the record's state decides:
//   A0. the record starts kSuspending; once the initiation has returned,
//       await_suspend moves it to kPending with a CAS. If the handler ran
//       first (an initiation that completes at once, as asio::dispatch does
//       on an executor of this runtime, or one that completed on another
//       thread meanwhile), the CAS fails: the task goes on at once, never
//       readied while its own await_suspend still runs;
//   A1. the handler stores the result, then exchanges to kCompleted, and
//       readies the task only if it found kPending;
//   A2. the awaiter's destructor, if the task never resumed (killed), and
//       await_suspend, if the initiation threw, exchange to kAbandoned; a
//       handler that comes later touches only the record.
// acq_rel on both: the winner's writes reach the loser. The task reads the
// result after ready() (the run queues order it). The deadlock check's
// count of possible wake-ups is held from the start until the task resumes
// (await_resume) or is killed (the destructor), on the task's side, so no
// moment between the completion and the task's run goes uncounted.
template <class Initiation, class InitArgs, class... Args>
class asio_op_awaiter {
 public:
  using mpg_awaiter = runtime_awaiter_tag;
  using result_type = typename asio_result<Args...>::type;

  asio_op_awaiter(Initiation init, InitArgs args)
      : init_(std::move(init)), args_(std::move(args)) {}
  asio_op_awaiter(asio_op_awaiter&&) = default;  // before it is awaited
  asio_op_awaiter& operator=(asio_op_awaiter&&) = delete;
  ~asio_op_awaiter() {
    if (op_) {  // A2: killed while parked (await_resume lets go of op_)
      op_->state.exchange(kAbandoned, std::memory_order_acq_rel);
      external_waker_remove(sched_);
    }
  }

  bool await_ready() const noexcept { return false; }

  bool await_suspend(std::coroutine_handle<> h,
                     std::source_location where = std::source_location::current()) {
    auto op = std::make_shared<record>();
    park(h, "asio operation", where);  // throws outside a task
    op->gp = current_g();
    sched_ = op->gp->sched;
    external_waker_add(sched_);
    op_ = op;
    record* rec = op.get();
    try {
      std::apply([&](auto&&... a) { std::move(init_)(handler{std::move(op)}, std::move(a)...); },
                 std::move(args_));
    } catch (...) {
      // A handler the initiation kept must not ready the task later.
      op_->state.exchange(kAbandoned, std::memory_order_acq_rel);
      op_.reset();
      external_waker_remove(sched_);
      cancel_park();
      throw;
    }
    // A0. The initiation may have completed the operation already (inline,
    // as asio::dispatch does on a runtime that runs the caller, or on
    // another thread): then the handler found kSuspending and left the
    // task alone, and it goes on at once. Else the handler readies it.
    int expected = kSuspending;
    if (rec->state.compare_exchange_strong(expected, kPending, std::memory_order_acq_rel,
                                           std::memory_order_acquire))
      return true;  // the task may run (and this awaiter be gone) from here on
    cancel_park();
    return false;
  }

  result_type await_resume() {
    external_waker_remove(sched_);
    const std::shared_ptr<record> op = std::move(op_);
    if constexpr (std::is_void_v<result_type>) {
      return;
    } else if constexpr (sizeof...(Args) == 1) {
      return std::get<0>(std::move(*op->result));
    } else {
      return std::move(*op->result);
    }
  }

 private:
  static constexpr int kPending = 0, kCompleted = 1, kAbandoned = 2, kSuspending = 3;
  struct record {
    std::atomic<int> state{kSuspending};
    std::optional<std::tuple<std::decay_t<Args>...>> result;
    g* gp = nullptr;
  };
  struct handler {
    std::shared_ptr<record> op;
    template <class... A>
    void operator()(A&&... a) {
      op->result.emplace(std::forward<A>(a)...);
      // A1.
      if (op->state.exchange(kCompleted, std::memory_order_acq_rel) == kPending) ready(op->gp);
    }
  };

  Initiation init_;
  InitArgs args_;
  std::shared_ptr<record> op_;  // from await_suspend until await_resume
  scheduler* sched_ = nullptr;
};

}  // namespace detail
}  // namespace mpg

template <class... Args>
struct asio::async_result<mpg::use_task_t, void(Args...)> {
  template <class Initiation, class... InitArgs>
  static auto initiate(Initiation&& init, mpg::use_task_t, InitArgs&&... args) {
    using tuple_t = std::tuple<std::decay_t<InitArgs>...>;
    return mpg::detail::asio_op_awaiter<std::decay_t<Initiation>, tuple_t, Args...>(
        std::forward<Initiation>(init), tuple_t(std::forward<InitArgs>(args)...));
  }
};
