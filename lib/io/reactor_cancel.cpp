// lib/io/reactor_cancel.cpp: how the reactor stops ops in flight: cancel()
// and try_cancel() for one op (io_op.cpp's io_cancel and kin, through the
// op's io_slot), the cancels it owes, and cancel_all() at shutdown. One of
// the seven source files of libmpg that include liburing.h (reactor.hpp).
//
// A close with the op's SQE still in the SQ. close() cancels the op and
// then releases its fd number; the cancel's flush submits the op's SQE
// first, so the kernel has resolved the number before it is released. If
// the kernel refuses that flush (or the cancel is owed, below), the op's
// SQE would be submitted later, against whatever file reused the number.
// So, for a closing slot, SQEs of the op still in the SQ get fd -1
// (forget_fd_if_closing_locked): submitted later, they fail with EBADF,
// which the op reads as cancelled (io_op::outcome).
//
// A cancel that finds no SQE. cancel() needs one SQE for its ASYNC_CANCEL,
// and get_sqes_locked() may find none: the SQ is full and the kernel keeps
// refusing submissions (-EBUSY, while completions it cannot post wait in
// its overflow list) through all of its attempts. Dropped, the cancel would
// be lost for good: a close(), a cancelled context or an earlier deadline
// asks once, and the op it meant to end (a read of a quiet socket) would
// keep its task waiting for ever. So cancel() owes it instead:
//   O1. Under lock_, with the op still in the slot (so in flight: its final
//       CQE, dispatched under lock_, has not come), the reactor records the
//       stop in op->stop, as for a cancel it prepares, and puts the slot on
//       its owed list (once: a second request finds it there).
//   O2. The next flush() or wait() (the P's holder flushes when
//       has_unsubmitted(), which counts owed cancels; sysmon does for a P
//       without one; wake() rouses a holder asleep in wait()) prepares an
//       ASYNC_CANCEL for each owed slot's op while SQEs are to be had, and
//       submits them. Until none is owed, wait() sleeps at most 1 ms.
//   O3. Dispatching an op's final CQE takes its slot off the list first
//       (settle_owed_locked), so a cancel is only ever prepared for an op
//       still in flight, and the op's address, which the next op of its
//       frame reuses, is never cancelled on its behalf (io_op.hpp,
//       "Cancelling by address", holds as for any cancel).
// The list runs through the slots (io_slot::owed_next): a cancel allocates
// nothing, and a slot outlives its op in flight (io_op.hpp). It is short
// and rarely non-empty, so it is searched, not indexed. try_cancel() owes
// nothing: its stop (io_stop::move) is only worth making when cheap, and
// its caller is told (false) and goes another way.
#include <errno.h>
#include <liburing.h>

#include <cstdio>

#include "io/reactor.hpp"
#include "mpg/detail/sched/clock.hpp"

namespace mpg::detail {

namespace {

// matches(): whether a stop request applies to `op`, which is in flight (its
// fields are stable and its frame alive while the reactor lock is held).
bool matches(const io_op* op, const io_stop_request& rq) noexcept {
  switch (rq.why) {
    case io_stop::kick:  // only an op armed later than the new deadline (none: never)
      return op->live_deadline != nullptr && rq.deadline_ns != io_deadline::kNone &&
             (!op->has_deadline || to_ns(op->deadline) > rq.deadline_ns);
    case io_stop::context:
      return op->ctx == rq.ctx;
    default:
      return true;
  }
}

}  // namespace

void reactor::cancel(io_slot* slot, io_op* op, const io_stop_request& rq) noexcept {
  lock_.lock();
  cancel_locked(slot, op, rq, /*owe=*/true);
  lock_.unlock();
}

bool reactor::try_cancel(io_slot* slot, io_op* op, const io_stop_request& rq) noexcept {
  if (!lock_.try_lock()) return false;
  const bool asked = cancel_locked(slot, op, rq, /*owe=*/false);
  lock_.unlock();
  return asked;
}

bool reactor::cancel_locked(io_slot* slot, io_op* op, const io_stop_request& rq,
                            bool owe) noexcept {
  const bool refused = owe && faults_ != nullptr && faults_->refuse_cancel();
  // May reap, and so complete op: check after.
  io_uring_sqe* sqe = refused ? nullptr : get_sqes_locked(1);
  // Relaxed: the slot is cleared under lock_, which we hold.
  const bool live = slot->op.load(std::memory_order_relaxed) == op && matches(op, rq);
  if (sqe == nullptr) {
    if (owe && live) {  // O1
      if (rq.why > op->stop) op->stop = rq.why;
      io_slot* s = owed_;
      while (s != nullptr && s != slot) s = s->owed_next;
      if (s == nullptr) {
        slot->owed_next = owed_;
        owed_ = slot;
        // Under lock_, the one writer: a load and a store.
        owed_count_.store(owed_count_.load(std::memory_order_relaxed) + 1,
                          std::memory_order_relaxed);
      }
      // The op's own SQE, if still in the SQ, goes in now if the kernel
      // takes it (as below: a close() may follow); then wake a holder
      // asleep in wait() to issue the cancel (O2).
      flush_locked();
      forget_fd_if_closing_locked(slot, op);
      wake();
    }
    return false;
  }
  if (live) {
    if (rq.why > op->stop) op->stop = rq.why;
    io_uring_prep_cancel64(sqe, reinterpret_cast<std::uintptr_t>(op), 0);
  } else {
    io_uring_prep_nop(sqe);
  }
  io_uring_sqe_set_data64(sqe, kIgnoreTag);
  add_pending_locked(1);
  // Submit now: the op's own SQE, ahead of the cancel, goes in too, so a
  // close() that follows cannot let the kernel resolve a reused fd number.
  flush_locked();
  if (live) forget_fd_if_closing_locked(slot, op);
  return true;
}

void reactor::forget_fd_if_closing_locked(const io_slot* slot, const io_op* op) noexcept {
  io_uring* ring = ring_.get();
  // Acquire: pairs with io_cancel's release store (made under the slot
  // lock, which the caller holds too).
  if (io_uring_sq_ready(ring) == 0 || !slot->closed.load(std::memory_order_acquire)) return;
  // The kernel refused the flush: SQEs wait in the SQ, maybe the op's.
  // Without SQPOLL the kernel reads them only inside io_uring_enter, under
  // lock_, so they can be rewritten here; the SQ maps its slots to SQEs
  // one to one (liburing sets that up).
  const io_uring_sq& sq = ring->sq;
  const auto data = reinterpret_cast<std::uintptr_t>(op);
  for (unsigned i = *sq.khead; i != sq.sqe_tail; ++i) {
    io_uring_sqe* sqe = &sq.sqes[i & sq.ring_mask];
    if (sqe->user_data == data) sqe->fd = -1;  // fails EBADF: outcome() reads ECANCELED
  }
}

bool reactor::issue_owed_locked() noexcept {
  while (io_slot* s = owed_) {  // O2
    io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
    if (sqe == nullptr) {
      flush_locked();
      sqe = io_uring_get_sqe(ring_.get());
      if (sqe == nullptr) return false;  // the next flush or wait tries again
    }
    owed_ = s->owed_next;
    s->owed_next = nullptr;
    owed_count_.store(owed_count_.load(std::memory_order_relaxed) - 1,
                      std::memory_order_relaxed);
    // On the list, the slot's op is in flight (O3). Relaxed: as in cancel_locked.
    io_op* op = s->op.load(std::memory_order_relaxed);
    io_uring_prep_cancel64(sqe, reinterpret_cast<std::uintptr_t>(op), 0);
    io_uring_sqe_set_data64(sqe, kIgnoreTag);
    add_pending_locked(1);
  }
  return true;
}

void reactor::settle_owed_locked(io_slot* slot) noexcept {
  for (io_slot** link = &owed_; *link != nullptr; link = &(*link)->owed_next) {  // O3
    if (*link == slot) {
      *link = slot->owed_next;
      slot->owed_next = nullptr;
      owed_count_.store(owed_count_.load(std::memory_order_relaxed) - 1,
                        std::memory_order_relaxed);
      return;
    }
  }
}

void reactor::cancel_all() noexcept {
  lock_.lock();
  shutting_down_ = true;
  auto issue_cancel = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    if (io_uring_sqe* sqe = get_sqes_locked(1)) {
      io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
      io_uring_sqe_set_data64(sqe, kIgnoreTag);
      add_pending_locked(1);
    }
    flush_locked();
  };
  issue_cancel();
  reap_locked();
  lock_.unlock();
  auto start_time = clock::now();
  auto last_cancel = start_time;
  while (pending_.load(std::memory_order_relaxed) != 0) {
    auto now = clock::now();
    if (now - start_time > std::chrono::seconds(10)) {
      std::fprintf(stderr, "mpg: %u io_uring operations did not complete at shutdown\n",
                   pending_.load(std::memory_order_relaxed));
      return;
    }
    enter_wait(now + std::chrono::milliseconds(10));
    lock_.lock();
    reap_locked();
    // Re-cancel now and then: an op may have been in a state the first
    // cancel could not reach (being issued on another thread's task_work).
    if (pending_.load(std::memory_order_relaxed) != 0 &&
        clock::now() - last_cancel > std::chrono::milliseconds(100)) {
      issue_cancel();
      last_cancel = clock::now();
    }
    lock_.unlock();
  }
}

}  // namespace mpg::detail
