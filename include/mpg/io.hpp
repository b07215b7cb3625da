// mpg/io.hpp: io::submit, any io_uring operation as an awaitable.
//
//   int res = co_await mpg::io::submit([&](io_uring_sqe* sqe) {
//     io_uring_prep_read(sqe, fd, buf, sizeof buf, 0);
//   });
//
// The callback prepares one operation on an SQE of the current P's ring,
// which it gets blank (zeroed: whatever it leaves unset is 0). It runs
// synchronously inside co_await, under the ring's lock, so it must be short,
// must not await and must call nothing of mpg (a spawn, a wake, an I/O op
// may need that ring's lock). Everything it points the SQE at (buffers,
// paths, iovecs, sockaddrs) must stay alive until co_await returns, which it
// does: the awaiting task stays suspended until the operation's final CQE.
// This header only forward-declares io_uring_sqe; include <liburing.h>
// yourself to call the prep helpers.
//
// The ring is shared with every other task on the P, so io::submit owns
// what reaches beyond one operation:
//   - user_data, and the flags IOSQE_IO_LINK, IO_HARDLINK, CQE_SKIP_SUCCESS
//     and IO_DRAIN: any the callback sets is cleared (a link would chain
//     another task's next op to this one; a drain would hold every later SQE
//     of the ring until every earlier op, an idle recv or accept too, ends).
//     IOSQE_ASYNC and IOSQE_FIXED_FILE stay the callback's (the rings have
//     no registered files: a fixed file reads -EBADF).
//   - Refused, completing with -EINVAL, the operation not submitted (a NOP
//     goes in its place): IOSQE_BUFFER_SELECT (the group-0 buffers are the
//     runtime's, for tcp_stream::receive(), and a buffer taken here would
//     never go back), and the multishot operations (IORING_ACCEPT_MULTISHOT
//     or IORING_RECV_MULTISHOT in ioprio of an ACCEPT, RECV or RECVMSG,
//     IORING_POLL_ADD_MULTI, IORING_TIMEOUT_MULTISHOT, IORING_OP_READ_MULTISHOT,
//     IORING_OP_RECV_ZC), whose final CQE may never come while each result
//     (an accepted fd) would go to nobody; PROVIDE_BUFFERS or REMOVE_BUFFERS
//     on group 0; and what reaches the ring's other requests, whose
//     user_data are the runtime's: IORING_OP_MSG_RING, whatever its target
//     (it posts a CQE of any user_data into a ring, possibly one of the
//     runtime's); a POLL_REMOVE or TIMEOUT_REMOVE that updates (any flag in
//     its len or timeout_flags: it would rewrite a request of the runtime,
//     a poll's user_data or a link timeout's deadline); an ASYNC_CANCEL with
//     IORING_ASYNC_CANCEL_ANY, or with IORING_ASYNC_CANCEL_OP unless
//     IORING_ASYNC_CANCEL_FD or _USERDATA narrows it (it would end the
//     runtime's own operations, its wake reads among them); and
//     IORING_OP_PIPE, whose two new fds are written into the caller's
//     memory, where a task killed at shutdown would leak them (pipe2(2)
//     does not block).
//   - Not refused: a plain POLL_REMOVE or TIMEOUT_REMOVE, and an
//     ASYNC_CANCEL by user_data or fd. The runtime's requests carry the
//     addresses of its records as user_data, so one of those may find
//     another task's operation on this ring (a cancel by fd does, on a
//     shared fd): that operation then ends with -ECANCELED, which its task
//     sees as its error (a stream's multishot receive re-arms).
//   - A callback that throws: its SQE becomes a NOP, and co_await rethrows
//     the exception once the NOP completes.
//
// The result is cqe->res: a value >= 0 on success, -errno on failure, with
// readings of our own:
//   -EINVAL     besides the kernel's: refused, as above;
//   -ETIME      the deadline (overloads below) passed first: the operation was
//               cancelled by an IORING_OP_LINK_TIMEOUT in the same ring, or
//               never submitted because the deadline had already passed;
//   -ECANCELED  the operation was cancelled (the runtime is shutting down,
//               or the context of the overload that takes one was
//               cancelled: whether the operation was in flight or not yet
//               started, it then never runs; a context that ended by its
//               deadline reads -ETIME instead);
//   -EINTR      an operation the kernel ran in an io-wq worker was
//               interrupted (the kernel's internal restart codes are never
//               passed through), or one with a deadline was cancelled
//               before its deadline because the kernel, short of memory,
//               took it without its IORING_OP_LINK_TIMEOUT; retry it.
// Operations that post several CQEs resume at the last one (no
// IORING_CQE_F_MORE) with the first one's result: so IORING_OP_SEND_ZC works
// as a plain send.
//
// At shutdown (~runtime, lib/sched/shutdown.cpp) the ops in flight are
// cancelled (-ECANCELED) and every ring is drained; then the tasks still
// live are destroyed unrun, among them those whose op completed (during
// the drain, or earlier for a task that no M ran again) with a result they
// never read. When that result is a new file descriptor, the awaiter
// closes it, as fs::open and listener::accept do: an ACCEPT, OPENAT,
// OPENAT2 or SOCKET SQE without a direct descriptor (file_index 0) makes
// one. Any other result is dropped. (An op still in flight when the drain
// gives up on its ring, after 10 s, is beyond this: an fd it makes later is
// not closed.)
//
// Fault injection (runtime_options::io_faults, MPG_FAULTS; tests only)
// never applies to io::submit: its result is always the kernel's cqe->res,
// which only the caller knows how to retry. (A completion may still travel
// through the kernel's CQ overflow list, which the caller cannot tell.)
//
// Where it resumes: the task is readied by whichever thread reaps the CQE:
// the M holding the ring's P (at the tail of that P's queue), or sysmon for a
// P busy in one long task or left without an M (onto the global queue).
#pragma once

#include <cerrno>
#include <chrono>
#include <coroutine>
#include <exception>
#include <source_location>
#include <type_traits>
#include <utility>

#include "mpg/context.hpp"
#include "mpg/detail/sched/clock.hpp"
#include "mpg/detail/sched/g.hpp"
#include "mpg/detail/io/io_context.hpp"
#include "mpg/detail/io/io_op.hpp"

namespace mpg::detail {

// user_prep<Prep>: an io::submit callback and what became of its SQE. The
// thunk is the io_prep_fn the reactor calls, with the user_prep as ctx.
//
// `state` is end_user_sqe()'s verdict (io_op.hpp), or `refused` when the
// callback threw, and it is also what the awaiter owes: `new_fd` says that
// a result >= 0 is an fd nobody has read yet, which the awaiter's
// destructor closes (close_unread_fd); result() hands it to the task and
// sets `plain`. An SQE that makes no fd costs the awaiter one byte compare
// in result() and one in its destructor.
//
// Ordering: no atomic. The thunk runs inside the task's await_suspend, on
// its M (reactor::start calls it synchronously, or not at all for an op it
// fails at once); result() runs in the resumed task, after the park/ready
// protocol (g.hpp) ordered the suspend before it, and the destructor of a
// frame killed unread runs in ~runtime's step 6, after that M was joined.
template <class Prep>
struct user_prep {
  explicit user_prep(Prep p) noexcept(std::is_nothrow_move_constructible_v<Prep>)
      : fn(std::move(p)) {}

  static void thunk(io_uring_sqe* sqe, const void* ctx) noexcept {
    auto& self = *static_cast<user_prep*>(const_cast<void*>(ctx));
    begin_user_sqe(sqe);
#if __cpp_exceptions
    try {
      self.fn(sqe);
    } catch (...) {
      self.error = std::current_exception();
      refuse_user_sqe(sqe);
      self.state = user_sqe::refused;
      return;
    }
#else
    self.fn(sqe);
#endif
    self.state = end_user_sqe(sqe);  // read after the callback filled the SQE
  }

  // result(): what co_await returns for the op's result `res`: the
  // callback's exception rethrown, or -EINVAL if the SQE was refused; a new
  // fd is the task's from here.
  int result(int res) {
    if (state == user_sqe::plain) [[likely]] return res;
    if (state == user_sqe::new_fd) {
      state = user_sqe::plain;
      return res;
    }
#if __cpp_exceptions
    if (error) std::rethrow_exception(error);
#endif
    return -EINVAL;
  }

  // owns_fd(): the op's result, if >= 0, is an fd that no task has read.
  bool owns_fd() const noexcept { return state == user_sqe::new_fd; }

  Prep fn;
  std::exception_ptr error;
  user_sqe state = user_sqe::plain;
};

}  // namespace mpg::detail

namespace mpg::io {

using clock = std::chrono::steady_clock;

// submit_awaiter<Prep>: the awaitable returned by io::submit. Awaited once.
template <class Prep>
class [[nodiscard]] submit_awaiter {
 public:
  using mpg_awaiter = detail::runtime_awaiter_tag;  // g.hpp
  explicit submit_awaiter(Prep prep) noexcept(std::is_nothrow_move_constructible_v<Prep>)
      : prep_(std::move(prep)) {}
  submit_awaiter(Prep prep, clock::time_point deadline) noexcept(
      std::is_nothrow_move_constructible_v<Prep>)
      : prep_(std::move(prep)) {
    op_.has_deadline = true;
    op_.deadline = deadline;
  }

  // Copied or moved only outside its co_await (before it, or after it
  // resumed), when it owns no fd: the defaults are right (declared, as the
  // destructor would hide the moves).
  submit_awaiter(const submit_awaiter&) = default;
  submit_awaiter(submit_awaiter&&) = default;
  submit_awaiter& operator=(const submit_awaiter&) = default;
  submit_awaiter& operator=(submit_awaiter&&) = default;
  // A frame destroyed with the op's new fd unread (a task killed at
  // shutdown) closes it.
  ~submit_awaiter() {
    if (prep_.owns_fd()) [[unlikely]] detail::close_unread_fd(op_);
  }

  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) {
    return detail::io_park_start(&op_, &detail::user_prep<Prep>::thunk, &prep_, nullptr, h,
                                 "io.submit", where_);
  }
  // Rethrows what the callback threw.
  int await_resume() { return prep_.result(op_.outcome()); }

  // link_parent(): the site of the awaiting task's co_await (its
  // await_transform calls it, mpg/task.hpp): where the task shows as parked.
  void link_parent(std::source_location where) noexcept { where_ = where; }

 private:
  detail::user_prep<Prep> prep_;
  std::source_location where_{};
  detail::io_op op_;
};

// submit_context_awaiter<Prep>: the awaitable of io::submit(prep, ctx): the
// operation bound to ctx (mpg/detail/io/io_context.hpp). Awaited once.
template <class Prep>
class [[nodiscard]] submit_context_awaiter {
 public:
  using mpg_awaiter = detail::runtime_awaiter_tag;  // g.hpp
  // ctx must outlive the co_await (it does as an argument of the same
  // full-expression, or as a variable of the awaiting task).
  submit_context_awaiter(Prep prep, const context& ctx) noexcept(
      std::is_nothrow_move_constructible_v<Prep>)
      : prep_(std::move(prep)), bind_(ctx.node_for_internal_use().get()) {}
  // As submit_awaiter's (the binding stops watching ctx after this).
  ~submit_context_awaiter() {
    if (prep_.owns_fd()) [[unlikely]] detail::close_unread_fd(op_);
  }

  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) {
    detail::io_slot* slot = bind_.bind(nullptr);  // watches ctx from here
    bind_.attach(op_);
    return detail::io_park_start(&op_, &detail::user_prep<Prep>::thunk, &prep_, slot, h,
                                 "io.submit", where_);
  }
  // Resumes after the op's final CQE; stops watching ctx first (waiting for
  // a cancel of ctx that is running its watcher on another thread). Rethrows
  // what the callback threw.
  int await_resume() {
    bind_.unbind();
    return prep_.result(bind_.result(op_.outcome(), op_));
  }

  // link_parent(): as submit_awaiter's.
  void link_parent(std::source_location where) noexcept { where_ = where; }

 private:
  detail::user_prep<Prep> prep_;
  std::source_location where_{};
  detail::io_op op_;
  detail::io_context_binding bind_;
};

// submit(): one operation, no deadline.
template <class Prep>
  requires std::is_invocable_v<std::decay_t<Prep>&, io_uring_sqe*>
submit_awaiter<std::decay_t<Prep>> submit(Prep&& prep) {
  return submit_awaiter<std::decay_t<Prep>>(std::forward<Prep>(prep));
}

// submit(prep, deadline): -ETIME if the deadline passes first.
template <class Prep>
  requires std::is_invocable_v<std::decay_t<Prep>&, io_uring_sqe*>
submit_awaiter<std::decay_t<Prep>> submit(Prep&& prep, clock::time_point deadline) {
  return submit_awaiter<std::decay_t<Prep>>(std::forward<Prep>(prep), deadline);
}

// submit(prep, timeout): the same with a deadline of now + timeout.
template <class Prep, class Rep, class Period>
  requires std::is_invocable_v<std::decay_t<Prep>&, io_uring_sqe*>
submit_awaiter<std::decay_t<Prep>> submit(Prep&& prep, std::chrono::duration<Rep, Period> timeout) {
  return submit_awaiter<std::decay_t<Prep>>(std::forward<Prep>(prep),
                                            detail::deadline_after(timeout));  // saturating
}

// submit(prep, ctx): -ECANCELED once ctx is cancelled, -ETIME once it
// missed its deadline, whether the operation was in flight or not started.
template <class Prep>
  requires std::is_invocable_v<std::decay_t<Prep>&, io_uring_sqe*>
submit_context_awaiter<std::decay_t<Prep>> submit(Prep&& prep, const context& ctx) {
  return submit_context_awaiter<std::decay_t<Prep>>(std::forward<Prep>(prep), ctx);
}

}  // namespace mpg::io
