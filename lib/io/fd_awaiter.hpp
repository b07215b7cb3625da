// lib/io/fd_awaiter.hpp: the awaiter of an operation whose result is a new
// file descriptor: the openat of fs::open (fs.cpp) and the accept of
// listener::accept (listen_dial.cpp).
//
// The kernel makes the fd when the op completes, and from then on the fd is
// the awaiting task's: await_resume hands it over (io_op::outcome() returns
// any res >= 0 as it is, also for an op that a cancel, a context or a
// deadline asked to stop too late, so such an op is never reported as
// cancelled and its fd never dropped). A task that never reads it is one
// whose frame is destroyed after the reactor dispatched the op's final
// CQE: at shutdown (lib/sched/shutdown.cpp) step 3 drains every ring,
// readying the Gs of the ops that complete then, and step 6 destroys every
// G still live unrun, among them those of ops that completed earlier but
// that no M ran again (their P was busy in another task until ~runtime
// stopped its M). This awaiter lives in that frame, so its destructor
// closes the fd the task did not read. (An op still in flight when its
// frame goes, one that step 3 gave up on after its 10 s, is beyond this:
// ~reactor's quiet drain reads no op, so an fd such an op makes later is
// not closed.)
//
// An fd's op is distinguished by its awaiter, not by a mark in the io_op:
// the reactor stays unaware of what an op's result means, and an io_op
// keeps its size (one cache line). A completed op costs one store and one
// predictable branch. (io::submit's awaiters, mpg/io.hpp, do the same for
// an SQE whose opcode makes an fd, marked by end_user_sqe: user_sqe::new_fd.)
//
// Ordering: no atomic of its own. `taken_` is the awaiting task's, written
// and read only by that task's frame. The destructor reads op.got_first
// and op.res only when the frame is destroyed without await_resume, that
// is in ~runtime's step 6, after step 3 dispatched every final CQE. The
// reactor wrote them in that dispatch, on the thread that runs ~runtime
// (step 3's reap) or on an M or sysmon, which steps 1 and 2 joined: either
// way before the destructor reads them. The close is a plain close(2)
// (close_unread_fd, io_op.cpp): no M runs tasks by then, so no P waits on it.
#pragma once

#include "mpg/detail/io/io_op.hpp"

namespace mpg::detail {

class io_fd_awaiter : public io_awaiter {
 public:
  explicit io_fd_awaiter(const io_awaiter& a) noexcept : io_awaiter(a) {}
  // Not copyable: two awaiters would own one fd (a copy made by the
  // compiler for co_await would not compile, rather than close twice).
  io_fd_awaiter(const io_fd_awaiter&) = delete;
  io_fd_awaiter& operator=(const io_fd_awaiter&) = delete;
  ~io_fd_awaiter() {
    if (!taken_) [[unlikely]] close_unread_fd(op);
  }

  int await_resume() noexcept {
    taken_ = true;
    return io_awaiter::await_resume();
  }

 private:
  bool taken_ = false;
};

}  // namespace mpg::detail
