// mpg/blocking.hpp: co_await mpg::blocking(fn) runs a call that io_uring
// cannot carry (a slow library, getaddrinfo, a blocking driver) without
// stalling a P.
//
// As Go's entersyscall/exitsyscall: the M hands its P to another M (an idle
// one, or a new one up to runtime_options.max_threads) when the P has work,
// or puts it on the idle list, then runs fn on its own thread. Afterwards it
// takes a P back (its old one if idle, else any idle P) and the task goes
// on without a switch; if no P is free, the task is queued globally and the
// M parks. So with procs = 1, other tasks keep running while fn blocks.
//
// Where it resumes: on the same OS thread when a P was free, otherwise on
// whichever M picks it from the global queue. fn's exception is rethrown.
#pragma once

#include <coroutine>
#include <exception>
#include <memory>
#include <optional>
#include <source_location>
#include <type_traits>
#include <utility>

#include "mpg/detail/sched/g.hpp"

namespace mpg {

namespace detail {
// enter_blocking(): park the current G at h ("blocking") and give away its P.
void enter_blocking(std::coroutine_handle<> h, std::source_location where);
// exit_blocking(): take a P back. true: got one, continue on this thread;
// false: the G was queued globally and the caller must suspend.
bool exit_blocking() noexcept;
}  // namespace detail

template <class F>
class blocking_awaiter {
 public:
  using mpg_awaiter = detail::runtime_awaiter_tag;  // g.hpp
  using result_type = std::invoke_result_t<F&>;

  blocking_awaiter(F fn, std::source_location where) : fn_(std::move(fn)), where_(where) {}

  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) {
    detail::enter_blocking(h, where_);
    try {
      if constexpr (std::is_void_v<result_type>) {
        fn_();
      } else if constexpr (std::is_reference_v<result_type>) {
        auto&& r = fn_();  // named: an lvalue, whatever the reference's kind
        result_.emplace(std::addressof(r));
      } else {
        result_.emplace(fn_());
      }
    } catch (...) {
      error_ = std::current_exception();
    }
    // After exit_blocking() returns false another M may already run us:
    // touch nothing of this awaiter after it.
    return !detail::exit_blocking();
  }
  result_type await_resume() {
    if (error_) std::rethrow_exception(error_);
    if constexpr (std::is_reference_v<result_type>) {
      return static_cast<result_type>(**result_);
    } else if constexpr (!std::is_void_v<result_type>) {
      return std::move(*result_);
    }
  }

 private:
  F fn_;
  std::source_location where_;
  // A reference result is kept as a pointer (std::optional holds no
  // references).
  using stored_type = std::conditional_t<std::is_reference_v<result_type>,
                                         std::remove_reference_t<result_type>*, result_type>;
  std::conditional_t<std::is_void_v<result_type>, bool, std::optional<stored_type>> result_{};
  std::exception_ptr error_;
};

// blocking(): see the file comment. Throws std::logic_error outside a task.
template <class F>
blocking_awaiter<std::decay_t<F>> blocking(
    F&& fn, std::source_location where = std::source_location::current()) {
  return blocking_awaiter<std::decay_t<F>>(std::forward<F>(fn), where);
}

}  // namespace mpg
