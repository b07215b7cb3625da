// mpg/task.hpp: task<T>, the lazy, move-only coroutine type of mpg.
//
// A task does nothing until it is awaited or spawned. `co_await t` runs the
// child inline on the awaiting G: the parent suspends, control transfers to
// the child (symmetric transfer), and when the child finishes its final
// awaiter transfers straight back to the parent. No frame of the chain stays
// on the thread stack, so a chain of a million awaits does not grow it. Where
// the compiler makes a transfer a call rather than a tail call (g++ below
// -O2 or with sanitizers), the transfer guard bounds the stack a chain uses
// (mpg/detail/sched/stack_guard.hpp): the awaits of runtime awaiters
// (runtime_await) and the final awaiter pass their handles through it.
//
// T may be void, a move-only type or any value type (no references). An
// exception that escapes the child is rethrown by co_await in the parent.
// A task is awaited at most once; awaiting it again throws std::logic_error.
//
// Any awaitable may be awaited inside a task: the promise's await_transform
// passes mpg's own awaiters through and puts any other one behind a bridge
// that brings the task back onto its runtime however it is resumed
// (mpg/detail/sched/foreign_await.hpp).
//
// Await chains. When a task awaits a child task (or joins a spawned one),
// the child's promise records the site of the co_await (caller_where_), a
// constant that await_transform supplies: one store, nothing in the frame.
// The continuation is the parent; a set caller_where_ says that it is a
// task frame. The task dump walks these links from
// a parked frame out to the root (lib/sched/inspect.cpp).
//
// Frames come from the recycling allocator of mpg/detail/sched/frame.hpp.
#pragma once

#include <bit>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <source_location>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "absl/base/attributes.h"
#include "mpg/detail/sched/foreign_await.hpp"
#include "mpg/detail/sched/frame.hpp"
#include "mpg/detail/sched/g.hpp"
#include "mpg/detail/sched/stack_guard.hpp"

namespace mpg {

template <class T = void>
class task;

template <class T>
class join_handle;

namespace detail {

// site_ptr: what std::source_location holds (one pointer to static data),
// as __builtin_source_location() gives it (g++ and clang, the builtin both
// standard libraries build source_location::current() on).
using site_ptr = decltype(__builtin_source_location());
static_assert(sizeof(std::source_location) == sizeof(site_ptr));
inline std::source_location to_source_location(site_ptr p) noexcept {
  return std::bit_cast<std::source_location>(p);
}

[[noreturn]] void rethrow_task_exception(const std::exception_ptr& e);

class promise_base {
 public:
  static void* operator new(std::size_t size) { return allocate_frame(size); }
  static void operator delete(void* p, std::size_t size) noexcept { free_frame(p, size); }

  std::suspend_always initial_suspend() noexcept { return {}; }

  // Final awaiter: an inline-awaited task resumes its parent (symmetric
  // transfer); a spawned root settles its join state and returns to the
  // scheduler loop.
  struct final_awaiter {
    bool await_ready() noexcept { return false; }
    template <class Promise>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> h) noexcept {
      promise_base& p = h.promise();
      if (p.continuation_) return guard_transfer(p.continuation_, h.address());
      return finish_root(h, &p);
    }
    void await_resume() noexcept {}
  };
  final_awaiter final_suspend() noexcept { return {}; }

  void unhandled_exception() noexcept { exception_ = std::current_exception(); }

  // Every co_await in a task comes through here (foreign_await.hpp): a
  // runtime request becomes its awaiter, runtime awaiters pass through
  // unchanged; anything else waits behind a bridge, so that it can resume
  // the task from any thread.
  //
  // A child task or a joined one is linked into this task's await chain
  // here (the awaiter's link_parent, called once the operand has made its
  // awaiter, so that the awaiter's handle is known to be valid and the link
  // is a single store), with the site of the co_await; an awaiter with no
  // site of its own (an I/O op: net.hpp, io.hpp) takes it through the same
  // hook, as the place the task parks at. The site comes as
  // the pointer that std::source_location wraps (site_ptr, a scalar): g++
  // 12 gives a class-type default argument of a co_await's await_transform
  // a slot in the coroutine frame and stores it on every await, a scalar
  // it does not.
  template <class A>
    requires runtime_request<A>
  auto await_transform(A&& a, site_ptr where = __builtin_source_location()) noexcept(
      noexcept(a.make_awaiter(std::source_location{}))) {
    return a.make_awaiter(to_source_location(where));
  }
  template <class A>
    requires(runtime_awaitable<A> && !runtime_request<A>)
  runtime_await<passed_awaiter_t<A>> await_transform(
      A&& a, site_ptr where = __builtin_source_location()) noexcept(
      noexcept(get_awaiter(std::declval<A>()))) {
    runtime_await<passed_awaiter_t<A>> w{get_awaiter(static_cast<A&&>(a))};
    if constexpr (requires { w.aw.link_parent(to_source_location(where)); })
      w.aw.link_parent(to_source_location(where));
    return w;
  }
  template <class A>
    requires(!runtime_awaitable<A>)
  foreign_await<awaiter_t<A>> await_transform(
      A&& a, std::source_location where = std::source_location::current()) {
    return foreign_await<awaiter_t<A>>(
        [&]() -> decltype(auto) { return get_awaiter(static_cast<A&&>(a)); }, where);
  }

  // Forced inline, with the throw out of line: g++ 12 kept it a call in
  // every await of a task.
  ABSL_ATTRIBUTE_ALWAYS_INLINE void rethrow_if_failed() {
    if (exception_) [[unlikely]] rethrow_task_exception(exception_);
  }

  // awaited_by_task(): a task's co_await awaits this frame, so that
  // continuation_ is a task frame and the await chain goes on through it
  // (caller_where_, below). The walks of the task dump (inspect.cpp) and
  // of the transfer guard (stack_guard.cpp) follow only such links.
  bool awaited_by_task() const noexcept {
    const char* file = caller_where_.file_name();
    return continuation_ && file != nullptr && *file != '\0';
  }

  std::coroutine_handle<> continuation_{};
  // The await chain (lib/sched/inspect.cpp walks it for the task dump):
  // the site of the co_await with which a task awaits this one, or joins
  // it. Set only by a task's own await (task::link_parent,
  // join_handle::link_parent), so when it is set, continuation_ is a task
  // frame: the walk goes on through it. Empty for a task awaited by a
  // plain coroutine: the walk stops. Written by the awaiting task before it
  // suspends; read only while no M can run the task.
  std::source_location caller_where_{};
  std::exception_ptr exception_{};
  // Set when the frame is spawned as a G's root: used by reports.
  std::uint64_t gid_ = 0;
  const char* name_ = nullptr;
};

template <class T>
class promise final : public promise_base {
  // The task dump finds a parked frame's promise_base at a fixed offset
  // (lib/sched/inspect.cpp), which holds for promises aligned to at most 16:
  // an over-aligned T is kept in an allocation of its own.
  static constexpr bool kInline = alignof(T) <= 16;

 public:
  task<T> get_return_object() noexcept;

  template <class U>
    requires std::is_convertible_v<U&&, T>
  void return_value(U&& v) noexcept(kInline && std::is_nothrow_constructible_v<T, U&&>) {
    if constexpr (kInline)
      value_.emplace(std::forward<U>(v));
    else
      value_ = std::make_unique<T>(std::forward<U>(v));
  }

  // result(): the value, or the exception rethrown. Moves the value out.
  T result() {
    rethrow_if_failed();
    return std::move(*value_);
  }

 private:
  std::conditional_t<kInline, std::optional<T>, std::unique_ptr<T>> value_;
};

template <>
class promise<void> final : public promise_base {
 public:
  task<void> get_return_object() noexcept;
  void return_void() noexcept {}
  void result() { rethrow_if_failed(); }
};

[[noreturn]] void throw_task_awaited_twice();

}  // namespace detail

// task<T>
//
// Move-only owner of a lazy coroutine frame. Destroying a task that was
// never awaited destroys its frame (the body never runs).
template <class T>
class [[nodiscard]] task {
 public:
  using promise_type = detail::promise<T>;
  using handle_type = std::coroutine_handle<promise_type>;
  using value_type = T;

  static_assert(!std::is_reference_v<T>, "task<T&> is not supported: return a pointer or value");

  task() noexcept = default;
  explicit task(handle_type h) noexcept : h_(h) {}
  task(task&& o) noexcept : h_(std::exchange(o.h_, {})), awaited_(o.awaited_) {}
  task& operator=(task&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, {});
      awaited_ = o.awaited_;
    }
    return *this;
  }
  task(const task&) = delete;
  task& operator=(const task&) = delete;
  // Idempotent on purpose: g++ 12 can destroy a temporary task in a
  // full-expression containing co_await twice; the second run finds h_ null.
  ~task() { reset(); }

  bool valid() const noexcept { return static_cast<bool>(h_); }

  // Awaiting: runs the child inline on this G (symmetric transfer).
  struct awaiter {
    using mpg_awaiter = detail::runtime_awaiter_tag;
    handle_type h;
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> parent) noexcept {
      h.promise().continuation_ = parent;
      return h;
    }
    T await_resume() { return h.promise().result(); }
    // The awaiting task's await_transform: its co_await's site (task.hpp).
    void link_parent(std::source_location where) noexcept { h.promise().caller_where_ = where; }
  };
  awaiter operator co_await() & { return awaiter{take_for_await()}; }
  awaiter operator co_await() && { return awaiter{take_for_await()}; }

  // link_parent(): records the site of the co_await with which a task
  // awaits this one, for the await chain, by an mpg awaiter that awaits
  // this task on a task's behalf (a task's own co_await links through
  // awaiter::link_parent; a plain coroutine's never links). Does nothing on a task
  // that cannot be awaited.
  void link_parent(std::source_location where) noexcept {
    if (h_ && !awaited_) h_.promise().caller_where_ = where;
  }

  // release(): gives up ownership of the frame (used by spawn). A task
  // that was awaited keeps its frame (finished, or running as a child) and
  // gives a null handle: spawn, go and block_on then throw as a second
  // await does, instead of resuming a frame past its final suspend.
  handle_type release() noexcept {
    if (awaited_) return {};
    return std::exchange(h_, {});
  }

 private:
  handle_type take_for_await() {
    if (!h_ || awaited_) detail::throw_task_awaited_twice();
    awaited_ = true;
    return h_;
  }
  void reset() noexcept {
    if (h_) {
      handle_type h = std::exchange(h_, {});
      h.destroy();
    }
  }

  handle_type h_{};
  bool awaited_ = false;
};

namespace detail {
template <class T>
task<T> promise<T>::get_return_object() noexcept {
  return task<T>(std::coroutine_handle<promise<T>>::from_promise(*this));
}
inline task<void> promise<void>::get_return_object() noexcept {
  return task<void>(std::coroutine_handle<promise<void>>::from_promise(*this));
}
}  // namespace detail

}  // namespace mpg
