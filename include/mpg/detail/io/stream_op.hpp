// mpg/detail/io/stream_op.hpp: what the frame-less stream awaiters
// (net::read_op, net::write_op, net::write_vectored_op, net::receive_op)
// have in common.
//
// Each does its first (and usually only) step from the awaiting task's
// frame. When the step must be made again, the rest of the operation goes
// on in the task form of the same loop (tcp_stream::do_read, do_write,
// do_write_vectored, do_receive): a frame of its own, owned here, that
// returns to the awaiting task. Two ways in:
//   hand_over(t, gp)  the G is parked at the awaiting task and is readied
//                     by the caller right after: it resumes in t instead.
//                     Called by the op's waker (a completion under the
//                     reactor lock, or a recv_queue waker) while nobody
//                     else touches the G's resume point.
//   run_now(t, h)     the awaiting task h is not parked: await_suspend
//                     transfers to the returned handle at once.
// Either way the task form gets the co_await's site as its caller site, so
// the await chain of a dump goes on through it (task.hpp).
#pragma once

#include <coroutine>
#include <cstdint>
#include <source_location>
#include <utility>

#include "mpg/detail/sched/g.hpp"
#include "mpg/task.hpp"

namespace mpg::detail {

template <class R>
class stream_op {
 public:
  using mpg_awaiter = runtime_awaiter_tag;  // g.hpp
  using result_type = R;

  stream_op(const stream_op&) = delete;
  stream_op& operator=(const stream_op&) = delete;

  // link_parent(): the site of the awaiting task's co_await (its
  // await_transform calls it, task.hpp): where the task shows as parked,
  // and the await-chain link of the task form when the op moves there. It
  // is noted in the G (g.hpp), not kept here: an idle connection's frame
  // holds a read and a write op. What is kept is that a task awaits the
  // op: slow_ holds kLinked until a task form takes its place. A plain
  // coroutine's await makes no call here, and its task form gets no site:
  // a set caller_where_ says that the continuation is a task frame
  // (task.hpp), which the await chain and the transfer guard
  // (stack_guard.hpp) rely on, and the G's noted site may be an older
  // await's.
  // An op awaited a second time keeps its task form, which the second
  // await then refuses (refuse_second_await).
  void link_parent(std::source_location where) noexcept {
    note_wait_site(where);
    if (!handed_over())
      slow_ = task<R>::handle_type::from_address(reinterpret_cast<void*>(kLinked));
  }

 protected:
  stream_op() noexcept = default;
  stream_op(stream_op&&) noexcept {}  // before awaited: nothing to move
  // Idempotent (g++ 12 may destroy a temporary of a co_await's
  // full-expression twice: the second run finds slow_ null).
  ~stream_op() {
    if (handed_over()) std::exchange(slow_, {}).destroy();
  }

  void hand_over(task<R>&& t, g* gp) noexcept {
    const bool by_task = linked();
    slow_ = std::move(t).release();
    slow_.promise().continuation_ = gp->resume;
    // park() stored the site before the op was published, which the
    // waker's lock (the reactor's, the queue's) orders before this read
    // (and before the read of slow_'s kLinked).
    if (by_task) slow_.promise().caller_where_ = gp->wait_where.load(std::memory_order_relaxed);
    gp->resume = slow_;
  }
  std::coroutine_handle<> run_now(task<R>&& t, std::coroutine_handle<> h) noexcept {
    const bool by_task = linked();
    slow_ = std::move(t).release();
    slow_.promise().continuation_ = h;
    if (by_task) slow_.promise().caller_where_ = noted_wait_site();
    return slow_;
  }
  bool handed_over() const noexcept { return slow_ && !linked(); }
  // refuse_second_await(): each op's await_suspend begins with it. An op
  // is awaited at most once, as a task is; a second await of one whose
  // first went on in its task form would replace that frame (a leak), so
  // it throws runtime_misuse_error as a task awaited twice does. (A
  // second await of an op whose first finished without its task form
  // holds nothing to lose; it is the same misuse, answered as the
  // operation answers it.)
  void refuse_second_await() const {
    if (handed_over()) [[unlikely]] throw_task_awaited_twice();
  }
  R task_result() { return slow_.promise().result(); }

 private:
  // slow_'s address between link_parent() and a hand-over: no frame's.
  static constexpr std::uintptr_t kLinked = 1;
  bool linked() const noexcept {
    return reinterpret_cast<std::uintptr_t>(slow_.address()) == kLinked;
  }
  typename task<R>::handle_type slow_{};
};

}  // namespace mpg::detail
