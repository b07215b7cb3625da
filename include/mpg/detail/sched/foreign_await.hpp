// mpg/detail/sched/foreign_await.hpp: how a task awaits anything.
//
// The task promise (task.hpp) routes every co_await through
// await_transform(), which picks one of two wrappers, each returned by value
// (g++ 12 copies an awaitable that await_transform returns by reference):
//
//   runtime_await<Aw>  for runtime awaiters (g.hpp: the runtime_awaiter_tag
//                      opt-in). It forwards the three calls to Aw and
//                      compiles to what co_await of Aw would: await_ready
//                      and await_resume are forced inline (clang 16
//                      otherwise keeps a send's await_ready as a call).
//                      await_suspend is left to the compiler (forced
//                      inline, it saved no instruction) and passes a
//                      handle it returns through the transfer guard
//                      (stack_guard.hpp). (A task or join operand first
//                      gets the co_await's site for the await chain:
//                      task.hpp.)
//   foreign_await<Aw>  for anything else. The foreign awaiter never sees the
//                      task's handle: it gets a bridge handle (a tiny
//                      coroutine frame of its own) and resuming that, from
//                      any thread, readies the G on its runtime. The task
//                      continues on a P, never on the resuming thread.
//
// Aw is the awaiter after operator co_await (member or free): held by value
// when operator co_await returns one, else by reference to the operand (a
// temporary of the co_await's full-expression, or a named object; either
// outlives the wrapper).
//
// The foreign protocol (foreign_wait; lib/sched/foreign_await.cpp). The
// bridge frame holds a state word and the G:
//   kSuspending  the task is inside the foreign await_suspend
//   kParked      await_suspend returned "suspended": the bridge owns the wake
//   kResumed     the bridge has been resumed
//   kAbandoned   the task's frame was destroyed while it waited (shutdown)
// await_suspend parks the G ("external", at the co_await site), counts one
// external waker on its runtime (the deadlock check) and calls the foreign
// await_suspend with the bridge. Then
//   - the awaiter declined to suspend (false, or returned the bridge): the
//     park is undone and the task goes on at once;
//   - else a CAS kSuspending -> kParked. It fails when the bridge was resumed
//     in the meantime (inline inside await_suspend, or by a thread that won
//     the race): the park is undone and the task goes on at once on this M;
//     otherwise the wrapper touches nothing more, and the bridge, when
//     resumed, exchanges kResumed and readies the G (it saw kParked).
// The bridge's last access to its own frame is that exchange (it runs in
// the bridge's final await_suspend, where the frame counts as suspended), so
// the task destroys the bridge in await_resume as soon as it runs again. A
// bridge that finds kAbandoned destroys itself. The external waker is
// removed exactly once: in await_resume, when the awaiter declined, or when
// the frame is destroyed while waiting.
//
// A task resumed anywhere but on its own G (an awaiter resumed the task's
// handle directly on a thread of its own) is reported and the process
// aborts: await_resume of a foreign await checks current_g(), and so does
// finish_root() for every root.
#pragma once

#include <absl/base/attributes.h>

#include <atomic>
#include <coroutine>
#include <source_location>
#include <type_traits>
#include <utility>

#include "mpg/detail/sched/g.hpp"
#include "mpg/detail/sched/stack_guard.hpp"

namespace mpg::detail {

template <class A>
concept has_member_co_await = requires(A&& a) { static_cast<A&&>(a).operator co_await(); };
template <class A>
concept has_free_co_await = requires(A&& a) { operator co_await(static_cast<A&&>(a)); };

// get_awaiter(): what co_await would await: operator co_await's result, or
// the operand itself (always as an lvalue reference; see the top).
template <class A>
decltype(auto) get_awaiter(A&& a) {
  if constexpr (has_member_co_await<A>)
    return static_cast<A&&>(a).operator co_await();
  else if constexpr (has_free_co_await<A>)
    return operator co_await(static_cast<A&&>(a));
  else
    return static_cast<std::remove_reference_t<A>&>(a);
}

template <class A>
using awaiter_t = decltype(get_awaiter(std::declval<A>()));

template <class A>
concept runtime_awaitable = runtime_awaiter<std::remove_cvref_t<awaiter_t<A>>>;

// runtime_request: an operand that names a runtime operation without being
// its awaiter (mutex::lock() returns one: a reference to an empty base of
// the mutex). await_transform builds the awaiter from it, as a prvalue, with
// the co_await's site (make_awaiter), so the coroutine frame holds the
// awaiter alone: no operand temporary and no wrapper, which is what a
// pass-through costs on g++ 12 (task.hpp). Outside a task, its operator
// co_await gives the same awaiter without a site. Marked like runtime
// awaiters (g.hpp):
//     using mpg_request = mpg::detail::runtime_request_tag;
template <class A>
concept runtime_request =
    requires { typename std::remove_cvref_t<A>::mpg_request; } &&
    std::is_same_v<typename std::remove_cvref_t<A>::mpg_request, runtime_request_tag>;

// request_base<Owner, Op>: the empty base of Owner that Owner's operation Op
// returns (`return *this;`), a runtime request. Owner makes the awaiter:
//     static auto make_awaiter(Owner&, Op, std::source_location);
// Not copyable: it is the owner.
template <class Owner, class Op>
class request_base {
 public:
  using mpg_request = runtime_request_tag;
  request_base(const request_base&) = delete;
  request_base& operator=(const request_base&) = delete;
  auto make_awaiter(std::source_location where) noexcept {
    return Owner::make_awaiter(static_cast<Owner&>(*this), Op{}, where);
  }
  auto operator co_await() noexcept { return make_awaiter({}); }

 protected:
  request_base() noexcept = default;
  ~request_base() = default;
};

// passed_awaiter_t: what runtime_await holds. The awaiter by reference to
// the operand, except an empty one (yield(), consume_budget()), which is
// copied: a copy of an empty object costs nothing, a reference costs a
// pointer in the frame.
template <class A>
using passed_awaiter_t = std::conditional_t<
    std::is_lvalue_reference_v<awaiter_t<A>> &&
        std::is_empty_v<std::remove_cvref_t<awaiter_t<A>>> &&
        std::is_trivially_copyable_v<std::remove_cvref_t<awaiter_t<A>>>,
    std::remove_cvref_t<awaiter_t<A>>, awaiter_t<A>>;

// runtime_await: a runtime awaiter passed through.
template <class Aw>
struct runtime_await {
  Aw aw;
  ABSL_ATTRIBUTE_ALWAYS_INLINE decltype(auto) await_ready() noexcept(
      noexcept(std::declval<Aw&>().await_ready())) {
    return aw.await_ready();
  }
  // A handle returned passes the transfer guard (stack_guard.hpp).
  template <class P>
  decltype(auto) await_suspend(std::coroutine_handle<P> h) noexcept(
      noexcept(std::declval<Aw&>().await_suspend(h))) {
    using R = decltype(aw.await_suspend(h));
    if constexpr (kGuardTransfers && std::is_convertible_v<R, std::coroutine_handle<>>) {
      return guard_transfer(aw.await_suspend(h), h.address(), /*may_switch=*/true);
    } else {
      return aw.await_suspend(h);
    }
  }
  ABSL_ATTRIBUTE_ALWAYS_INLINE decltype(auto) await_resume() noexcept(
      noexcept(std::declval<Aw&>().await_resume())) {
    return aw.await_resume();
  }
};
// foreign_wait: the part of foreign_await that does not depend on the
// awaiter (see the protocol at the top).
class foreign_wait {
 public:
  foreign_wait() noexcept = default;
  foreign_wait(const foreign_wait&) = delete;
  foreign_wait& operator=(const foreign_wait&) = delete;
  ~foreign_wait() {
    if (bridge_) abandon();
  }

  // begin(): parks the current G at h and returns the bridge handle.
  std::coroutine_handle<> begin(std::coroutine_handle<> h, std::source_location where);
  // commit(): the foreign awaiter suspended. True: the G stays parked and
  // the caller must not touch *this again. False: the bridge was resumed
  // already; the park is undone and the task goes on.
  bool commit() noexcept;
  // cancel(): the foreign awaiter declined to suspend (or threw).
  void cancel() noexcept;
  // end(): in await_resume, back on the G.
  void end() noexcept {
    if (gp_ != nullptr) finish();
  }

 private:
  void finish() noexcept;
  void abandon() noexcept;

  std::coroutine_handle<> bridge_{};
  g* gp_ = nullptr;
  scheduler* sched_ = nullptr;
};

// foreign_await: any other awaiter, behind a bridge.
template <class Aw>
class foreign_await {
 public:
  template <class Make>
  foreign_await(Make&& make, std::source_location where) : aw_(make()), where_(where) {}
  foreign_await(const foreign_await&) = delete;
  foreign_await& operator=(const foreign_await&) = delete;

  bool await_ready() { return static_cast<bool>(aw_.await_ready()); }

  // The task's own handle, when it goes on at once, passes the transfer
  // guard (stack_guard.hpp); `next` belongs to the foreign side, not to
  // the G, and is returned as it is.
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) {
    std::coroutine_handle<> bridge = wait_.begin(h, where_);
    using R = decltype(aw_.await_suspend(bridge));
    if constexpr (std::is_void_v<R>) {
      call_inner(bridge);
      return wait_.commit() ? std::noop_coroutine() : guard_transfer(h, h.address());
    } else if constexpr (std::is_same_v<R, bool>) {
      if (!call_inner(bridge)) {
        wait_.cancel();
        return guard_transfer(h, h.address());
      }
      return wait_.commit() ? std::noop_coroutine() : guard_transfer(h, h.address());
    } else {
      std::coroutine_handle<> next = call_inner(bridge);
      if (next == bridge) {
        wait_.cancel();
        return guard_transfer(h, h.address());
      }
      if (wait_.commit()) return next;
      // Resumed already, and the awaiter wants `next` to run: the G goes to
      // the back of its P's queue at h (it may run elsewhere at once: no
      // access to *this after this call).
      requeue_current(h);
      return next;
    }
  }

  decltype(auto) await_resume() {
    wait_.end();
    return aw_.await_resume();
  }

 private:
  decltype(auto) call_inner(std::coroutine_handle<> bridge) {
    try {
      return aw_.await_suspend(bridge);
    } catch (...) {
      wait_.cancel();
      throw;
    }
  }

  Aw aw_;
  std::source_location where_;
  foreign_wait wait_;
};

}  // namespace mpg::detail
