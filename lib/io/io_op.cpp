// lib/io/io_op.cpp: the bridge from awaiters to the reactor of their P
// (mpg/detail/io/io_op.hpp): io_start() publishes an op under its slot's
// lock, io_cancel() and io_stop_in_flight() stop the op in flight, an
// io_deadline moved earlier kicks it, io_op::outcome() turns the kernel's
// result into the one the awaiter reports, end_user_sqe() judges the SQE of
// an io::submit callback, close_unread_fd() closes a new fd that no task read,
// and prep_request() writes the SQE of an io_request.
#include <errno.h>
#include <liburing.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

#include "io/buffer_ring.hpp"
#include "io/reactor.hpp"
#include "mpg/context.hpp"
#include "mpg/detail/io/io_op.hpp"
#include "mpg/detail/sched/clock.hpp"

namespace mpg::detail {

namespace {

// The kernel's restart codes (include/linux/errno.h; no userspace header has
// them). A syscall interrupted by a signal leaves one in its return value and
// the signal-delivery path turns it into EINTR or a restart. An io-wq worker
// interrupted by a cancel (an ASYNC_CANCEL that found it running and returned
// -EALREADY, a link timeout, cancel_all) has no such path, and the op's CQE
// carries the raw code: an openat blocked on a FIFO completes with
// -ERESTARTSYS (-512) on Linux 6.18.
constexpr int kErestartSys = 512;
constexpr int kErestartNoIntr = 513;
constexpr int kErestartNoHand = 514;
constexpr int kErestartRestartBlock = 516;

bool interrupted(int res) noexcept {
  return res == -EINTR || res == -kErestartSys || res == -kErestartNoIntr ||
         res == -kErestartNoHand || res == -kErestartRestartBlock;
}

}  // namespace

int io_op::outcome() const noexcept {
  if (res >= 0) return res;  // the common case: no stop to look into
  const bool intr = interrupted(res);
  // -EBADF: a closing object's SQE that waited in the SQ, its fd forgotten
  // (reactor_cancel.cpp): cancelled by that close.
  if (res == -ECANCELED || intr || (res == -EBADF && cancel_requested())) {
    if (cancel_requested()) return -ECANCELED;
    if (has_deadline && clock::now() >= deadline) return -ETIME;
    // Re-issue: with the new deadline (kick), or on another P (move).
    if (stop == io_stop::kick || stop == io_stop::move) return -EINTR;
  }
  return intr ? -EINTR : res;
}

bool io_start(io_op* op, io_prep_fn prep, const void* ctx, io_slot* slot) {
  op->res = 0;
  op->cqe_flags = 0;
  op->got_first = false;
  op->stop = io_stop::none;
  op->slot = slot;
  if (op->has_deadline && io_op::clock::now() >= op->deadline) {
    op->res = -ETIME;
    return false;
  }
  reactor* r = current_reactor();
  if (r == nullptr) {
    op->res = -ENXIO;
    return false;
  }
  if (slot == nullptr) {
    r->start(op, prep, ctx);
    return true;
  }
  slot->lock.lock();
  if (slot->closed.load(std::memory_order_relaxed)) {  // under the lock: authoritative
    slot->lock.unlock();
    op->res = -ECANCELED;
    op->stop = io_stop::cancel;
    return false;
  }
  // Another op of this object is in flight, or another G's logical
  // operation holds the slot between two of its issues (io_slot::holder):
  // its caller broke the object's one-at-a-time rule (two tasks reading one
  // stream). Published over it, this op would hide the first from every
  // cancel and close, which would then wait for it for ever; slipped in
  // between two issues, it would split the first one's bytes. Refused, the
  // caller gets a clear error.
  g* const holder = slot->holder.load(std::memory_order_relaxed);  // io_slot::holder
  if (slot->op.load(std::memory_order_relaxed) != nullptr ||
      (holder != nullptr && holder != op->waiter)) {
    slot->lock.unlock();
    op->res = -EALREADY;
    return false;
  }
  // Sticky stop requests (io_op.hpp, "Why an op was stopped"): both read
  // under the slot lock, which their writers take after writing them.
  if (op->ctx != nullptr && op->ctx->cancelled()) {
    slot->lock.unlock();
    op->res = -ECANCELED;
    op->stop = io_stop::context;
    return false;
  }
  if (op->live_deadline != nullptr) {
    // Relaxed: the setter's store precedes its slot section (io_deadline).
    const std::int64_t ns = op->live_deadline->load(std::memory_order_relaxed);
    if (ns != io_deadline::kNone && (!op->has_deadline || ns < to_ns(op->deadline))) {
      op->has_deadline = true;
      op->deadline = from_ns(ns);
      if (io_op::clock::now() >= op->deadline) {
        slot->lock.unlock();
        op->res = -ETIME;
        return false;
      }
    }
  }
  slot->owner = r;
  if (slot->claims) slot->holder.store(op->waiter, std::memory_order_relaxed);
  slot->op.store(op, std::memory_order_relaxed);  // ordered for the reactor by its lock
  r->start(op, prep, ctx);
  // The op is published and may complete, and its task resume elsewhere,
  // before this unlock. The slot outlives it: an object's slot lives until
  // its close(), which takes this lock; a context binding's own slot (in
  // the awaiting frame) until its unbind(), which takes it too.
  slot->lock.unlock();
  return true;
}

void io_cancel(io_slot* slot, bool close) noexcept {
  slot->lock.lock();
  if (close) slot->closed.store(true, std::memory_order_release);
  if (io_op* op = slot->op.load(std::memory_order_relaxed)) slot->owner->cancel(slot, op, {});
  slot->lock.unlock();
}

void io_stop_in_flight(io_slot* slot, const io_stop_request& rq) noexcept {
  slot->lock.lock();
  if (io_op* op = slot->op.load(std::memory_order_relaxed)) slot->owner->cancel(slot, op, rq);
  slot->lock.unlock();
}

bool io_try_stop_in_flight(io_slot* slot, const io_stop_request& rq) noexcept {
  slot->lock.lock();
  bool asked = true;
  if (io_op* op = slot->op.load(std::memory_order_relaxed))
    asked = slot->owner->try_cancel(slot, op, rq);
  slot->lock.unlock();
  return asked;
}

void io_deadline::set(std::int64_t ns, io_slot* slot) noexcept {
  ns_.store(ns, std::memory_order_relaxed);  // ordered by the slot lock below
  // A later deadline (or none) needs no kick: see the class comment.
  io_stop_in_flight(slot, {.why = io_stop::kick, .deadline_ns = ns});
}

void begin_user_sqe(io_uring_sqe* sqe) noexcept { std::memset(sqe, 0, sizeof *sqe); }

void refuse_user_sqe(io_uring_sqe* sqe) noexcept {
  std::memset(sqe, 0, sizeof *sqe);
  io_uring_prep_nop(sqe);
}

user_sqe end_user_sqe(io_uring_sqe* sqe) noexcept {
  // Encodings newer than liburing 2.3's headers (kernel UAPI):
  // IORING_TIMEOUT_MULTISHOT (6.4), IORING_ASYNC_CANCEL_USERDATA and _OP
  // (6.6), IORING_OP_READ_MULTISHOT (6.7), IORING_OP_RECV_ZC (6.15) and
  // IORING_OP_PIPE (6.16).
  constexpr unsigned kTimeoutMultishot = 1U << 6;
  constexpr unsigned kCancelUserdata = 1U << 4;
  constexpr unsigned kCancelOp = 1U << 5;
  constexpr unsigned kOpReadMultishot = 49;
  constexpr unsigned kOpRecvZc = 58;
  constexpr unsigned kOpPipe = 62;
  // IOSQE_BUFFER_SELECT would take a buffer of the P's provided-buffer ring
  // (group 0, buffer_ring.hpp) that nothing gives back, and PROVIDE_BUFFERS
  // or REMOVE_BUFFERS on that group would corrupt the ring's accounting. A
  // multishot op posts results with IORING_CQE_F_MORE for as long as it
  // lasts: the task, which resumes at the final CQE, would wait for ever
  // while the results (an accepted fd each) go to nobody. (RECV_ZC is
  // multishot by design; a multishot URING_CMD needs BUFFER_SELECT.)
  //
  // Reaching past the op, into the ring's other requests, whose user_data
  // are the addresses of the runtime's records (io_op.hpp) or its tags:
  //   - MSG_RING posts a CQE with a user_data of the caller's choosing into
  //     any ring, this P's or another P's among them, whose reactor would
  //     read it as an io_op. No fd check would do: a dup() of a ring fd
  //     names the same ring. Refused whatever its target.
  //   - POLL_REMOVE and TIMEOUT_REMOVE with an update (any flag: a plain
  //     removal takes none) rewrite the request they find: a poll's
  //     user_data or events (a runtime poll's CQE then lands on any
  //     address, or a one-shot poll turns multishot), a timeout's or a
  //     link timeout's expiry (the runtime's link timeouts, which carry the
  //     deadlines of other tasks' ops, all carry one tag, kIgnoreTag).
  //   - An ASYNC_CANCEL that matches any request, or every request of an
  //     opcode (IORING_ASYNC_CANCEL_OP with neither an fd nor a user_data
  //     to narrow it), would end the runtime's own, its wake reads among
  //     them.
  // A plain removal or a cancel by user_data or fd only ends what it finds
  // with -ECANCELED, which the runtime takes as that op's result: an error
  // of the task that awaits it, or a multishot receive that re-arms.
  //
  // The opcodes that make a file descriptor (user_sqe::new_fd) are marked
  // here too, in the same switch: another opcode pays nothing for them.
  // PIPE makes two, written into the caller's memory rather than returned:
  // a task killed once it completed would leak them, so it is refused
  // (pipe2(2) does not block).
  bool refused = (sqe->flags & IOSQE_BUFFER_SELECT) != 0;
  bool new_fd = false;
  switch (sqe->opcode) {
    case IORING_OP_ASYNC_CANCEL: {
      const unsigned f = sqe->cancel_flags;
      const bool narrowed = (f & (IORING_ASYNC_CANCEL_FD | kCancelUserdata)) != 0;
      refused |= (f & IORING_ASYNC_CANCEL_ANY) != 0 || ((f & kCancelOp) != 0 && !narrowed);
      break;
    }
    case IORING_OP_POLL_REMOVE:
      refused |= sqe->len != 0;
      break;
    case IORING_OP_TIMEOUT_REMOVE:
      refused |= sqe->timeout_flags != 0;
      break;
    case IORING_OP_MSG_RING:
      refused = true;
      break;
    case IORING_OP_PROVIDE_BUFFERS:
    case IORING_OP_REMOVE_BUFFERS:
      refused |= sqe->buf_group == buffer_ring::kGroup;
      break;
    case IORING_OP_ACCEPT:
      refused |= (sqe->ioprio & IORING_ACCEPT_MULTISHOT) != 0;
      new_fd = sqe->file_index == 0;
      break;
    case IORING_OP_OPENAT:
    case IORING_OP_OPENAT2:
    case IORING_OP_SOCKET:
      new_fd = sqe->file_index == 0;  // else a direct descriptor: no fd
      break;
    case IORING_OP_RECV:
    case IORING_OP_RECVMSG:
      refused |= (sqe->ioprio & IORING_RECV_MULTISHOT) != 0;
      break;
    case IORING_OP_POLL_ADD:
      refused |= (sqe->len & IORING_POLL_ADD_MULTI) != 0;
      break;
    case IORING_OP_TIMEOUT:
      refused |= (sqe->timeout_flags & kTimeoutMultishot) != 0;
      break;
    case kOpReadMultishot:
    case kOpRecvZc:
    case kOpPipe:
      refused = true;
      break;
    default:
      break;
  }
  if (!refused) return new_fd ? user_sqe::new_fd : user_sqe::plain;
  refuse_user_sqe(sqe);
  return user_sqe::refused;
}

// Ordering: no atomic. The caller's awaiter is destroyed with its frame by
// ~runtime (step 6), after step 3 dispatched every final CQE: the reactor
// wrote op.got_first and op.res in that dispatch, on ~runtime's thread or on
// an M or sysmon that steps 1 and 2 joined, so before this reads them. The
// awaiter's own mark (io_fd_awaiter::taken_, user_prep::state) was written
// by the task's frame on an M that was joined as well.
void close_unread_fd(const io_op& op) noexcept {
  if (op.got_first && op.res >= 0) ::close(op.res);
}

void prep_request(io_uring_sqe* sqe, const void* ctx) {
  const io_request& r = *static_cast<const io_request*>(ctx);
  switch (r.op) {
    case io_opcode::nop:
      io_uring_prep_nop(sqe);
      break;
    case io_opcode::recv:
      io_uring_prep_recv(sqe, r.fd, r.addr, r.len, r.flags);
      if (r.poll_first) sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
      break;
    case io_opcode::send:
      io_uring_prep_send(sqe, r.fd, r.addr, r.len, r.flags);
      break;
    case io_opcode::accept:
      io_uring_prep_accept(sqe, r.fd, static_cast<sockaddr*>(r.addr),
                           static_cast<socklen_t*>(r.addr2), r.flags);
      break;
    case io_opcode::connect:
      io_uring_prep_connect(sqe, r.fd, static_cast<const sockaddr*>(r.addr), r.len);
      break;
    case io_opcode::read:
      io_uring_prep_read(sqe, r.fd, r.addr, r.len, r.off);
      break;
    case io_opcode::write:
      io_uring_prep_write(sqe, r.fd, r.addr, r.len, r.off);
      break;
    case io_opcode::fsync:
      io_uring_prep_fsync(sqe, r.fd, static_cast<unsigned>(r.flags));
      break;
    case io_opcode::openat:
      io_uring_prep_openat(sqe, r.fd, static_cast<const char*>(r.addr), r.flags, r.mode);
      break;
    case io_opcode::statx:
      io_uring_prep_statx(sqe, r.fd, static_cast<const char*>(r.addr), r.flags, r.len,
                          static_cast<struct statx*>(r.addr2));
      break;
    case io_opcode::timeout:
      io_uring_prep_timeout(sqe, static_cast<__kernel_timespec*>(r.addr), 0,
                            static_cast<unsigned>(r.flags));
      break;
    case io_opcode::poll:
      io_uring_prep_poll_add(sqe, r.fd, r.len);
      break;
    case io_opcode::sendmsg:
      io_uring_prep_sendmsg(sqe, r.fd, static_cast<const msghdr*>(r.addr),
                            static_cast<unsigned>(r.flags));
      break;
    case io_opcode::recvmsg:
      io_uring_prep_recvmsg(sqe, r.fd, static_cast<msghdr*>(r.addr),
                            static_cast<unsigned>(r.flags));
      break;
  }
}

}  // namespace mpg::detail
