// mpg/runtime_handle.hpp: a cheap, copyable reference to a runtime, usable
// from any thread, and the external_work guard.
//
//   mpg::runtime_handle h = rt.handle();   // or runtime_handle::current() in a task
//   bool queued = h.post([] { ... });      // any thread: run a plain function on a P
//   bool mine = h.running_in_this_thread();
//   co_await h.schedule();                 // a coroutine that is NOT an mpg task hops onto a P
//   mpg::external_work guard(h);           // any thread: "a wake-up may come from outside"
//
// post(fn) queues fn (no coroutine frame: one small node per call, from the
// posting thread's node cache: a function of up to about 100 bytes costs no
// malloc once the cache is warm; larger ones use operator new) on the
// runtime's posted-function queue and wakes an M exactly as a spawn from a
// plain thread does; an M holding a P runs it. Posted functions:
//   - run on an M that holds a P of the runtime, outside any task: they may
//     call everything a plain thread may (rt.spawn, try_send, close, cancel,
//     done, release, post) and runtime_handle::current(), but not co_await
//     or block (they hold a P while they run, like a task that never yields);
//   - run in the order one thread posted them when one M drains them; posts
//     from different threads, or drained by different Ms, are unordered;
//   - are not tasks: they take no share of a task's cooperative budget. An M
//     runs at most 32 of them in a row (a batch), and looks at the queue
//     when its P's local queue is empty and on every 61st scheduling tick
//     (as for the global run queue), so a flood of posts and runnable tasks
//     make progress side by side;
//   - must not throw (an exception escaping one calls std::terminate).
// A handle may outlive its runtime. ~runtime first turns the handle's
// "alive" state off and waits for the posts already inside (a post racing
// with ~runtime either is queued or returns false, never both or neither);
// after that every post returns false and external_work guards register
// nothing. Functions still queued when the runtime stops are DESTROYED
// WITHOUT RUNNING (their captures' destructors run, on the thread running
// ~runtime): a queued function is not a promise that it will run, only that
// it runs or is destroyed, never leaked. The same holds for schedule(): a
// coroutine whose hop is destroyed at shutdown is never resumed.
//
// Threads: everything here may be called from any thread, inside the runtime
// or not, except runtime_handle::current() (inside a task or posted function
// of a runtime; elsewhere it throws mpg::runtime_misuse_error, a
// std::logic_error).
#pragma once

#include <coroutine>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "mpg/detail/sched/post_node.hpp"
#include "mpg/errors.hpp"

namespace mpg {

namespace detail {
class scheduler;

// The control block shared by a runtime and its handles (lib/sched/post.cpp).
struct handle_state;
std::shared_ptr<handle_state> current_handle_state();  // throws outside a runtime
// handle_post(): false (and n untouched) when the runtime is shutting down
// or gone; true when n is queued.
bool handle_post(handle_state* st, post_node* n) noexcept;
bool handle_running_here(const handle_state* st) noexcept;
// handle_waker_add(): counts a possible wake-up on a live runtime; false
// (nothing counted) when it is gone. handle_waker_remove() undoes a
// successful add; a no-op once the runtime has shut down.
bool handle_waker_add(handle_state* st) noexcept;
void handle_waker_remove(handle_state* st) noexcept;
bool in_mpg_task() noexcept;
// in_task_on_p(): the caller is a task running on a P (not the thread of
// an mpg::blocking call, which keeps its task's G but holds no P).
bool in_task_on_p() noexcept;
// on_p(): the caller runs on an M that holds a P (a task or a posted
// function; not the thread of an mpg::blocking call).
bool on_p() noexcept;
[[noreturn]] void throw_schedule_misuse(bool runtime_gone);
}  // namespace detail

class runtime_handle {
 public:
  // An empty handle refers to no runtime: it refuses all work.
  runtime_handle() noexcept = default;

  // current(): the runtime of the calling task or posted function. Throws
  // mpg::runtime_misuse_error (a std::logic_error) anywhere else.
  static runtime_handle current() { return runtime_handle(detail::current_handle_state()); }

  // post(): queue fn to run on one of the runtime's Ps. Any thread. Returns
  // false, and destroys nothing but its own copy of fn, when the runtime is
  // shutting down or gone (or the handle is empty).
  template <class F>
  bool post(F&& fn) const {
    using fn_t = std::decay_t<F>;
    static_assert(std::is_invocable_v<fn_t&>,
                  "runtime_handle::post needs a function callable with no arguments");
    if (!st_) return false;
    detail::post_node* n = detail::post_fn<fn_t>::make(std::forward<F>(fn));
    if (detail::handle_post(st_.get(), n)) return true;
    detail::release_post(n, false);
    return false;
  }

  // running_in_this_thread(): the caller is one of this runtime's tasks or
  // posted functions (or a thread of its Ms).
  bool running_in_this_thread() const noexcept {
    return st_ && detail::handle_running_here(st_.get());
  }

  // schedule(): `co_await h.schedule()` in a coroutine that is not an mpg
  // task (an Asio or library coroutine) continues it inside a function
  // posted to h's runtime. Inline (no suspension) when it already runs
  // there. Throws mpg::runtime_misuse_error when the runtime is gone or
  // shutting down, and when awaited by an mpg task of another runtime (a
  // task belongs to its runtime; spawn on the other one instead). The
  // coroutine then runs outside any task: awaits that complete at once
  // complete; yield() and any await that would wait throw
  // runtime_misuse_error.
  struct schedule_awaiter;
  schedule_awaiter schedule() const noexcept;

  friend bool operator==(const runtime_handle& a, const runtime_handle& b) noexcept {
    return a.st_ == b.st_;
  }
  explicit operator bool() const noexcept { return st_ != nullptr; }

 private:
  friend class external_work;
  friend class runtime;
  explicit runtime_handle(std::shared_ptr<detail::handle_state> st) noexcept : st_(std::move(st)) {}
  std::shared_ptr<detail::handle_state> st_;
};

struct runtime_handle::schedule_awaiter {
  runtime_handle h;
  bool failed = false;
  // Inside mpg::blocking the thread is one of the runtime's Ms but holds no
  // P: it hops as any other thread does.
  bool await_ready() const noexcept { return h.running_in_this_thread() && detail::on_p(); }
  bool await_suspend(std::coroutine_handle<> c) {
    if (detail::in_task_on_p()) detail::throw_schedule_misuse(false);
    // After a successful post, c may already run elsewhere and destroy
    // this awaiter: nothing below touches it.
    if (h.post([c] { c.resume(); })) return true;
    failed = true;
    return false;
  }
  void await_resume() const {
    if (failed) detail::throw_schedule_misuse(true);
  }
};

inline runtime_handle::schedule_awaiter runtime_handle::schedule() const noexcept {
  return schedule_awaiter{*this};
}

// external_work: an RAII guard, constructed and destroyed on any thread.
// While any guard of a runtime lives, that runtime's block_on never reports
// a deadlock: it stands for "a wake-up may come from outside the runtime"
// (a plain thread that will try_send, a callback from another library).
// A guard may outlive its runtime; it then touches nothing (its handle's
// control block says the runtime is gone).
//
// The deadlock check (block_on) counts these as possible wake-ups, and
// reports deadlock_error only when none exists (and nothing is runnable or
// running, through several looks 50 ms apart):
//   - timers (sleeps, deadlines, tickers, after());
//   - I/O in flight on any P's ring;
//   - calls inside mpg::blocking;
//   - live oneshot senders (at least those whose receiver is awaited in
//     that runtime);
//   - tasks awaiting a foreign (non-mpg) awaitable, including Asio
//     operations awaited through mpg/asio.hpp;
//   - live external_work guards;
//   - any other runtime of the process that is not inert (a task runnable
//     or running there, or one of the above of its own): its tasks may
//     serve a channel, join or sync object that a task of this one awaits.
// Functions queued by runtime_handle::post count as runnable work. Nothing
// else does: a plain thread that will try_send() to a task is not seen
// unless a guard (or one of the above) stands for it.
class external_work {
 public:
  explicit external_work(const runtime_handle& h) noexcept : st_(h.st_) {
    if (st_ && !detail::handle_waker_add(st_.get())) st_.reset();
  }
  ~external_work() {
    if (st_) detail::handle_waker_remove(st_.get());
  }
  external_work(const external_work&) = delete;
  external_work& operator=(const external_work&) = delete;

 private:
  std::shared_ptr<detail::handle_state> st_;
};

}  // namespace mpg
