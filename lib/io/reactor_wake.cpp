// lib/io/reactor_wake.cpp: an M asleep in its P's ring and the wake-up that
// ends the sleep (reactor.hpp; submitting and reaping are in reactor.cpp). One
// of the seven source files of libmpg that include liburing.h (reactor.hpp
// says which).
//
// A consequence of task_work: io_uring runs an op's completion on the thread
// that submitted it (the one that called io_uring_enter). If that M has since
// handed the P to another M and sits in an uninterruptible syscall, the op's
// CQE waits for it; an M that sleeps interruptibly (futex, nanosleep) is woken
// to run it. Ms should not exit while ops they submitted are in flight (the
// kernel cancels an exiting thread's io-wq work).
//
// Waking a waiting M. wait() sleeps in io_uring_enter(GETEVENTS). wake()
// must end that sleep from any thread without the lock, so the ring always
// holds a READ of an eventfd: wake() writes the eventfd, the read completes,
// the CQE ends the sleep. Because the read's completion runs as task_work of
// the thread that submitted it, a read submitted by some other thread that
// is busy running tasks would not wake us promptly (a thread busy in user
// space runs it at its next tick: 10 ms here); so wait() makes sure a
// read submitted by the waiting thread itself is armed (at most two reads
// exist: the old armer's and ours; a write completes one of them, the other
// stays armed). When both are other threads' (the P came to this M from two
// Ms that waited in its ring before), wait() cancels one (an ASYNC_CANCEL by
// its tag, which only that read carries) and sleeps at most 1 ms at a time
// until the cancelled read's CQE frees its slot; the next wait() arms ours
// there. A write happens only when a thread is (about to be) asleep:
// wake_state_ (reactor.hpp) is a Dekker handshake between the waiter, which
// adds itself and then looks for a notification, and wake(), which sets the
// notification and then looks for a waiter. Either the waiter sees the
// notification and does not sleep, or wake() sees the waiter and writes.
//
// Three rejected designs: an eventfd registered for CQ notifications
// (io_uring_register_eventfd) inverts the direction we need; IORING_OP_MSG_RING
// (5.18) needs a ring in the waking thread, which may be any thread; a signal
// to the waiter (Go's approach for preemption) would claim a signal number in
// every program that links mpg.
//
// wait() flushes under lock_ and then sleeps in a second io_uring_enter,
// where the floor server submits and sleeps in one (io_uring_submit_and_wait):
// on http_hello with 2 Ps an M sleeps about once every seven requests, so
// at most one enter per seven requests would go. Not done: the sleeping
// enter runs without lock_, and a close on another thread may meanwhile
// find the kernel refusing its flush and rewrite the fd of a closing op's
// SQE still in the SQ (reactor_cancel.cpp, forget_fd_if_closing_locked),
// which is safe only because the kernel reads SQEs inside an enter made
// under lock_: the sleeper's enter could read the old fd just before the
// rewrite and resolve it after the close that follows, when the number may
// name another file.
#include "io/reactor.hpp"

#include "io/buffer_ring.hpp"

#include <errno.h>
#include <liburing.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>

#include "mpg/detail/sched/clock.hpp"

namespace mpg::detail {

int current_tid() noexcept {
  thread_local int tid = static_cast<int>(::gettid());
  return tid;
}


void reactor::arm_wake_locked(int i) noexcept {
  io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
  if (sqe == nullptr) {
    flush_locked();
    sqe = io_uring_get_sqe(ring_.get());
    if (sqe == nullptr) return;  // ensure_wake_armed_locked retries at the next wait
  }
  io_uring_prep_read(sqe, event_fd_, &wake_reads_[i].value, sizeof(std::uint64_t), 0);
  io_uring_sqe_set_data64(sqe, kWakeTag + static_cast<std::uint64_t>(i));
  wake_reads_[i].armed = true;
  wake_reads_[i].cancelled = false;
  wake_reads_[i].armer = 0;  // set by the flush that submits it
  unsubmitted_.store(io_uring_sq_ready(ring_.get()), std::memory_order_relaxed);
}

bool reactor::ensure_wake_armed_locked() noexcept {
  const int me = current_tid();
  int idle = -1;
  for (int i = 0; i < 2; ++i) {
    if (wake_reads_[i].armed && (wake_reads_[i].armer == me || wake_reads_[i].armer == 0)) {
      return true;  // ours, or unsubmitted: the flush that follows makes it ours
    }
    if (!wake_reads_[i].armed && idle < 0) idle = i;
  }
  if (idle >= 0) {
    arm_wake_locked(idle);
    return wake_reads_[idle].armed;
  }
  // Both reads are other threads': free a slot for ours (the top of the
  // file). Until its CQE comes, the caller sleeps briefly.
  cancel_foreign_wake_locked();
  return false;
}

void reactor::cancel_foreign_wake_locked() noexcept {
  const int i = wake_reads_[0].cancelled ? 1 : 0;
  if (wake_reads_[i].cancelled) return;  // both asked already
  io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
  if (sqe == nullptr) return;  // asked again at the next wait
  io_uring_prep_cancel64(sqe, kWakeTag + static_cast<std::uint64_t>(i), 0);
  io_uring_sqe_set_data64(sqe, kIgnoreTag);
  add_pending_locked(1);
  wake_reads_[i].cancelled = true;
  unsubmitted_.store(io_uring_sq_ready(ring_.get()), std::memory_order_relaxed);
}

bool reactor::has_own_wake_read(int tid) noexcept {
  lock_.lock();
  bool own = false;
  for (const wake_read& w : wake_reads_) own = own || (w.armed && w.armer == tid);
  lock_.unlock();
  return own;
}

void reactor::enter_wait(std::optional<clock::time_point> deadline) noexcept {
  if (!deadline) {
    io_uring_enter(static_cast<unsigned>(ring_fd_), 0, 1, IORING_ENTER_GETEVENTS, nullptr);
    return;
  }
  auto now = clock::now();
  if (*deadline <= now) return;
  auto rel = std::chrono::duration_cast<std::chrono::nanoseconds>(*deadline - now).count();
  __kernel_timespec ts{};
  ts.tv_sec = rel / 1'000'000'000;
  ts.tv_nsec = rel % 1'000'000'000;
  io_uring_getevents_arg arg{};
  arg.sigmask = 0;
  arg.sigmask_sz = _NSIG / 8;
  arg.ts = reinterpret_cast<std::uintptr_t>(&ts);
  io_uring_enter2(static_cast<unsigned>(ring_fd_), 0, 1,
                  IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
                  reinterpret_cast<sigset_t*>(&arg), sizeof arg);
}

unsigned reactor::wait(std::optional<clock::time_point> deadline) noexcept {
  lock_.lock();
  unsigned n = reap_locked();
  bool can_be_woken = true;
  if (n == 0) {
    // Before sleeping, the buffers that came back since the last batch go
    // to the kernel too (reap_locked refills by batches).
    if (buffer_ring* b = bufs_.load(std::memory_order_relaxed)) b->refill();
    if (!shutting_down_) can_be_woken = ensure_wake_armed_locked();
  }
  // Cancels owed (reactor_cancel.cpp, O2): until every one is issued, the
  // sleep is short, as without a wake read.
  if (owed_ != nullptr && !issue_owed_locked()) can_be_woken = false;
  flush_locked();  // our SQEs and a (re-)armed wake read go in before we sleep
  lock_.unlock();
  if (n != 0) return n;
  if (!can_be_woken) {  // no wake read of ours, or cancels owed: never sleep long
    auto soon = clock::now() + std::chrono::milliseconds(1);
    if (!deadline || *deadline > soon) deadline = soon;
  }
  // seq_cst: the Dekker handshake with wake() (reactor.hpp, wake_state_).
  std::uint32_t s = wake_state_.fetch_add(2, std::memory_order_seq_cst);
  if ((s & 1) == 0) enter_wait(deadline);
  // Consume the notification before leaving, so a wake() in between writes
  // the eventfd (a spurious return later) rather than being lost.
  wake_state_.fetch_and(~1u, std::memory_order_seq_cst);
  wake_state_.fetch_sub(2, std::memory_order_seq_cst);
  lock_.lock();
  n = reap_locked();
  lock_.unlock();
  return n;
}

void reactor::wake() noexcept {
  std::uint32_t s = wake_state_.fetch_or(1, std::memory_order_seq_cst);
  if ((s & 1) == 0 && (s >> 1) != 0) {
    std::uint64_t one = 1;
    while (::write(event_fd_, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }
}

}  // namespace mpg::detail
