// mpg/detail/io/buffered_op.hpp: what the calls of net::buffered_reader and
// net::buffered_writer return (mpg/buffered.hpp): an awaiter that needs no
// frame when the buffer already answers.
//
// Most calls of a buffered reader or writer touch only its buffer: a line
// that a read brought in with the lines before it, bytes that fit beside
// the ones buffered. Such a call is finished in await_ready, on the
// awaiting task's frame. Only a call that must read or send goes on in its
// task form: a coroutine of the reader or writer with a frame of its own,
// started by await_suspend (stream_op's run_now) and returning to the
// awaiting task. A task form does the whole call again from the start; the
// fast path it replaces changed nothing when it declined.
//
// Owner's fast path: `bool (Owner::*Fast)(std::optional<R>* out, Args...)
// noexcept`, true with *out engaged when the buffer answers; its task form:
// `task<R> (Owner::*Slow)(Args...)`. Both are template arguments, so an op
// holds only the owner, the arguments and the result.
//
// Converted to a task (the operator below) an op is the task form alone,
// for a caller that spawns the call or keeps it to await later.
#pragma once

#include <cassert>
#include <coroutine>
#include <optional>
#include <tuple>
#include <utility>

#include "mpg/detail/io/stream_op.hpp"
#include "mpg/task.hpp"

namespace mpg::detail {

template <class R, class Owner, auto Fast, auto Slow, class... Args>
class buffered_op : public stream_op<R> {
 public:
  buffered_op(Owner* owner, Args... args) noexcept : owner_(owner), args_(args...) {}
  buffered_op(buffered_op&& o) noexcept  // before awaited
      : stream_op<R>(std::move(o)), owner_(o.owner_), args_(o.args_) {}

  // A second await declines here, so that await_suspend refuses it.
  bool await_ready() noexcept {
    if (this->handed_over()) [[unlikely]] return false;
    const bool done =
        std::apply([this](Args... a) { return (owner_->*Fast)(&result_, a...); }, args_);
    assert(!done || result_ok(*result_));
    return done;
  }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) {
    this->refuse_second_await();
    return this->run_now(slow(), h);
  }
  R await_resume() {
    if (this->handed_over()) return this->task_result();
    return std::move(*result_);
  }

  operator task<R>() && { return slow(); }

 private:
  task<R> slow() {
    return std::apply([this](Args... a) { return (owner_->*Slow)(a...); }, args_);
  }

  Owner* owner_;
  std::tuple<Args...> args_;
  // result_ok(): what a fast path may answer. Only a success: an error
  // (a sticky one, a closed stream) goes through the task form. So result_
  // never holds an absl::Status with a heap-held payload, and a second run
  // of the destructor (g++ 12 may destroy a co_await's temporary twice:
  // stream_op.hpp) frees nothing, whatever the standard library's
  // std::optional does with its flag.
  template <class X>
  static bool result_ok(const X& r) noexcept {
    if constexpr (requires { r.ok(); })
      return r.ok();
    else
      return true;
  }

  // A fast path's result, engaged only by it: an absl::StatusOr made
  // empty would cost every op a kUnknown status (a call into absl's
  // Status constructor), and a status its destructor frees.
  std::optional<R> result_;
};

}  // namespace mpg::detail
