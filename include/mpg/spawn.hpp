// mpg/spawn.hpp: spawn, go, yield, consume_budget and join_handle<T>.
//
// spawn(t) turns task t into a new G, runnable at once on the caller's P (in
// its runnext slot, as Go's newproc does) where any idle P may steal it. The
// returned join_handle<T> is awaited at most once for the task's result; its
// exception is rethrown there. Dropping the handle detaches the task; an
// exception escaping a detached task (or a `go` task) terminates the process
// with a report naming the task.
//
// Where a join resumes: if the task had finished, co_await completes without
// suspending (unless the cooperative budget ran out, then it yields once);
// otherwise the joiner is resumed by the M that finishes the task, on that
// M's P (runnext).
#pragma once

#include <coroutine>
#include <cstdint>
#include <source_location>
#include <utility>

#include "mpg/detail/sched/frame.hpp"
#include "mpg/detail/sched/g.hpp"
#include "mpg/task.hpp"

namespace mpg {

namespace detail {
[[noreturn]] void throw_join_twice();
[[noreturn]] void throw_task_killed();
// drop_join(): the handle side of a spawned frame goes away without a join
// (frame.hpp: Running -> Detached; Done -> destroy; Killed -> free memory).
template <class Promise>
void drop_join(std::coroutine_handle<Promise> root) noexcept {
  frame_header* hdr = header_of(root.address());
  // acq_rel: acquire the finisher's result writes before destroying them;
  // release our handle's last use before the finisher destroys the frame.
  const std::uintptr_t old = hdr->join.exchange(kJoinDetached, std::memory_order_acq_rel);
  if (old == kJoinDone) {
    promise_base& p = root.promise();
    if (p.exception_) report_lost_exception(p.exception_, p.gid_, p.name_);
    root.destroy();
  } else if (old == kJoinKilled) {
    release_frame_memory(hdr);
  } else if (old == kJoinInline) {
    root.destroy();  // the joiner was destroyed while running it inline
  }
}
// join_suspend(): the join's await_suspend. If no M has started the task,
// claim it and return its frame to run it inline (work-first: no switch
// through the scheduler); else park the current G at h until the task
// finishes (noop returned), or return h when it finished already.
// The park site is promise->caller_where_ (link_parent).
std::coroutine_handle<> join_suspend(std::coroutine_handle<> root, promise_base* promise,
                                     std::coroutine_handle<> h);
}  // namespace detail

// join_handle<T>
//
// Move-only; awaited at most once (as an lvalue or rvalue).
template <class T>
class [[nodiscard]] join_handle {
 public:
  using handle_type = std::coroutine_handle<detail::promise<T>>;

  join_handle() noexcept = default;
  explicit join_handle(handle_type h) noexcept : h_(h) {}
  join_handle(join_handle&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  join_handle& operator=(join_handle&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  join_handle(const join_handle&) = delete;
  join_handle& operator=(const join_handle&) = delete;
  ~join_handle() { reset(); }

  bool valid() const noexcept { return static_cast<bool>(h_); }
  // done(): the task has finished (its result is ready).
  bool done() const noexcept {
    return h_ && detail::header_of(h_.address())->join.load(std::memory_order_acquire) ==
                     detail::kJoinDone;
  }
  // id(): the G id the task ran as (0 for an empty handle).
  std::uint64_t id() const noexcept { return h_ ? h_.promise().gid_ : 0; }

  // detach(): drop the handle; the task runs on.
  void detach() noexcept { reset(); }

  struct awaiter {
    using mpg_awaiter = detail::runtime_awaiter_tag;
    join_handle* self;
    bool await_ready() const noexcept {
      // Acquire: pairs with the finisher's acq_rel exchange so the result is visible.
      return detail::header_of(self->h_.address())->join.load(std::memory_order_acquire) ==
                 detail::kJoinDone &&
             !detail::consume_budget_now();
    }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) {
      return detail::join_suspend(self->h_, &self->h_.promise(), h);
    }
    T await_resume() {
      handle_type h = std::exchange(self->h_, {});
      struct destroy_on_exit {
        handle_type h;
        ~destroy_on_exit() {
          if (h) h.destroy();
        }
      } guard{h};
      if (detail::header_of(h.address())->join.load(std::memory_order_acquire) ==
          detail::kJoinKilled) {
        guard.h = {};
        detail::drop_join(h);
        detail::throw_task_killed();
      }
      return h.promise().result();
    }
  };
  awaiter operator co_await() & { return awaiter{checked()}; }
  awaiter operator co_await() && { return awaiter{checked()}; }

  handle_type release() noexcept { return std::exchange(h_, {}); }

  // link_parent(): the site of the joining task's co_await, called by its
  // await_transform (task.hpp): where the join parks, and the await-chain
  // line of the joiner when the child runs inline. It goes into the
  // child's promise, a field the child itself never touches.
  void link_parent(std::source_location where) noexcept {
    if (h_) h_.promise().caller_where_ = where;
  }

 private:
  join_handle* checked() {
    if (!h_) detail::throw_join_twice();
    return this;
  }
  void reset() noexcept {
    if (h_) detail::drop_join(std::exchange(h_, {}));
  }
  handle_type h_{};
};

namespace detail {
template <class T>
typename task<T>::handle_type spawn_frame(task<T>&& t, const char* name, scheduler* s) {
  auto h = t.release();
  if (!h) throw_task_awaited_twice();
  h.promise().name_ = name;
  spawn_root(h, name, s, &h.promise());
  return h;
}
}  // namespace detail

// spawn(): start t as a new G of the current runtime. Throws std::logic_error
// outside a task. `name` (static storage) appears in dumps and reports.
template <class T>
join_handle<T> spawn(task<T> t, const char* name = nullptr) {
  return join_handle<T>(detail::spawn_frame(std::move(t), name, nullptr));
}

// go(): start t as a detached G (Go's `go` statement).
void go(task<void> t, const char* name = nullptr);

// yield(): Go's Gosched. The G goes to the back of its P's local queue.
struct yield_awaiter {
  using mpg_awaiter = detail::runtime_awaiter_tag;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) const noexcept { detail::requeue_current(h); }
  void await_resume() const noexcept {}
};
yield_awaiter yield();

// consume_budget(): a cooperative scheduling point that costs nothing until
// the G's budget for this time slice is spent; then it yields. Loops that
// never otherwise suspend call it to stay fair (Tokio's consume_budget).
struct budget_awaiter {
  using mpg_awaiter = detail::runtime_awaiter_tag;
  bool await_ready() const noexcept { return !detail::consume_budget_now(); }
  void await_suspend(std::coroutine_handle<> h) const noexcept { detail::requeue_current(h); }
  void await_resume() const noexcept {}
};
budget_awaiter consume_budget();

}  // namespace mpg
