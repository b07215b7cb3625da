// lib/io/net.cpp: TCP (and Unix stream) connections over the per-P io_uring
// reactor (mpg/net.hpp): tcp_stream's reads, writes, deadlines, shutdown and
// close. Where streams come from, listen(), a listener's accept() and
// dial(), is listen_dial.cpp, which follows the rules below too.
//
// Every blocking step is one io_uring request (recv, send, accept, connect,
// and a timeout for the accept back-off) awaited through detail::io_awaiter;
// the cheap non-blocking set-up calls (socket, bind, listen, setsockopt,
// shutdown, close) are plain syscalls. Addresses (TCP and Unix) are parsed
// in address.cpp; a host-name lookup for dial runs under mpg::blocking, and
// listen, which is not a coroutine, looks names up only when its caller
// holds no P. Sockets stay in blocking mode: io_uring then waits for
// readiness itself (FAST_POLL) and never hands us -EAGAIN; if a caller made
// one non-blocking anyway, -EAGAIN is answered with a POLL_ADD and a retry.
// -EINTR (an io-wq worker interrupted) is retried, a connect as connect(2)
// allows (listen_dial.cpp, connect_fd). Short sends are continued; a short
// recv is returned as it is. The fault injection tests (test/fault_injection_tests.cpp)
// hold every loop here to that.
//
// Cancellation and close (see mpg/detail/io/io_op.hpp): each direction of a
// stream, and a listener, has an io_slot. close() closes both slots (which
// cancels what is in flight and submits it first) before it closes the fd, so
// an SQE prepared with the old fd number is in the kernel before that number
// can be reused.
//
// Deadlines and contexts. Each direction's deadline is a detail::io_deadline
// that its ops follow (live_deadline): set_read_deadline() from any task
// kicks the read in flight when the new deadline is earlier than the one it
// is armed with, and every loop below treats -EINTR as "issue again" and
// -ETIME as final only if the deadline it follows has passed by now (else
// the deadline moved later and the op is issued again). An operation given
// a context binds it (detail::io_context_binding) for its whole loop, so a
// cancel that lands between two issues is seen by the next one.
//
// Rejected: a single slot per stream (one task reads while another writes);
// SOCK_NONBLOCK sockets with a try-the-syscall-first fast path (Go's way): a
// failed recv costs a syscall per message in request/response traffic, where
// io_uring batches the operations of many tasks into one io_uring_enter.
#include "mpg/net.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "io/address.hpp"
#include "io/fd_awaiter.hpp"
#include "io/fd_close.hpp"
#include "io/io_status.hpp"
#include "io/net_op.hpp"
#include "mpg/detail/io/io_context.hpp"
#include "mpg/detail/sched/clock.hpp"
#include "io/reactor.hpp"
#include "io/recv_queue.hpp"

namespace mpg::net {

namespace {

using op::deadline_ns;
using op::make_op;
using op::op_bounds;
using op::wait_ready;
using detail::io_awaiter;
using detail::io_context_binding;
using detail::io_opcode;
using detail::io_request;
using detail::prep_request;

constexpr std::size_t kMaxIo = std::size_t{1} << 30;

// net_error(): an operation's negative result as a Status (with its errno;
// io_status.hpp). closed_error(): use of a closed stream (net::is_closed).
absl::Status net_error(int res, absl::string_view what) {
  return detail::io_result_status(res, what);
}

absl::Status closed_error(absl::string_view what) {
  return detail::closed_status(what, "network connection");
}

}  // namespace

// --- tcp_stream --------------------------------------------------------------

tcp_stream::tcp_stream(tcp_stream&& o) noexcept
    : fd_(detail::take_fd(o.fd_)),
      read_deadline_(o.read_deadline_),
      write_deadline_(o.write_deadline_),
      recv_(o.recv_.exchange(nullptr, std::memory_order_relaxed)) {}

void tcp_stream::drop_recv() noexcept {
  // The stream's reference; an armed multishot keeps the queue until its
  // final CQE (recv_queue.hpp, "Lifetime").
  if (detail::recv_queue* q = recv_.exchange(nullptr, std::memory_order_acq_rel)) q->unref();
}

void tcp_stream::set_deadline(std::optional<clock::time_point> t) noexcept {
  set_read_deadline(t);
  set_write_deadline(t);
}
void tcp_stream::set_read_deadline(std::optional<clock::time_point> t) noexcept {
  read_deadline_.set(deadline_ns(t), &read_slot_);
  // A receive waiting on the held buffers re-reads the deadline (W3 in
  // recv_queue.hpp). Acquire: the queue is published with a release.
  if (detail::recv_queue* q = recv_.load(std::memory_order_acquire)) q->kick();
}
void tcp_stream::set_write_deadline(std::optional<clock::time_point> t) noexcept {
  write_deadline_.set(deadline_ns(t), &write_slot_);
}

tcp_stream& tcp_stream::operator=(tcp_stream&& o) noexcept {
  if (this != &o) {
    close();
    fd_.store(detail::take_fd(o.fd_), std::memory_order_relaxed);
    read_deadline_ = o.read_deadline_;
    write_deadline_ = o.write_deadline_;
    drop_recv();
    recv_.store(o.recv_.exchange(nullptr, std::memory_order_relaxed), std::memory_order_relaxed);
    read_slot_.closed.store(false, std::memory_order_relaxed);   // no op in flight (precondition)
    write_slot_.closed.store(false, std::memory_order_relaxed);
  }
  return *this;
}

// --- read_op -----------------------------------------------------------------
//
// The recv of read(buf) lives in the awaiting task's frame (read_op is an
// io_op), as an io_awaiter's does; the loop of do_read is not repeated here.
// Its first issue is made by await_suspend; on_complete, which the reactor
// calls under its lock on the op's final completion, either readies the task
// (the result is final: the common case) or, when do_read's loop would issue
// the recv again, creates do_read's frame for the rest of the read, makes it
// the G's resume point with the awaiting task as its continuation, and
// readies the G: the task resumes in that loop, and await_resume reads its
// result. Creating the frame allocates (the frame allocator: a thread-local
// list, or the depot's mutex, or malloc) and touches nothing of the
// reactor's, so it may run under the reactor lock; it happens only for
// -EINTR, -EAGAIN, or an -ETIME whose deadline moved later. on_complete
// touches nothing of the op after readying the G (it may run at once on
// another M).
//
// An idle connection's task holds a read_op and a write_op in its frame
// (g++ keeps each co_await's awaiter in a slot of its own): each is the
// io_op, the stream_op shell and three words, its state byte in the io_op's
// tail padding.
static_assert(sizeof(read_op) <= sizeof(detail::io_op) + 40);
static_assert(sizeof(write_op) <= sizeof(detail::io_op) + 40);
// A write_vectored_op adds its msghdr and iovecs (kInlineIov of them).
static_assert(sizeof(write_vectored_op) <= sizeof(detail::io_op) + 40 + 56 + 16 * 4 + 16);

namespace {
// retry_issue(): do_read's and do_write's loops would issue the op again
// after `res`, which followed the deadline `live`.
bool retry_issue(int res, const detail::io_deadline& live) noexcept {
  if (res == -EINTR || res == -EAGAIN) return true;
  if (res != -ETIME) return false;
  const std::int64_t ns = live.ns();
  return ns == detail::io_deadline::kNone || detail::mono_now_ns() < ns;
}
}  // namespace

std::coroutine_handle<> read_op::await_suspend(std::coroutine_handle<> h) {
  refuse_second_await();
  if (buf_.empty()) {
    state_ = state::empty;
    return h;
  }
  if (s_->recv_.load(std::memory_order_relaxed) != nullptr) {
    // The stream receives with a multishot (receive() was used): copy from
    // what it holds, in the task form.
    state_ = state::slow;
    return run_now(s_->do_read_held(buf_, std::nullopt, nullptr), h);
  }
  const int fd = s_->fd_.load(std::memory_order_relaxed);
  if (fd < 0) {
    state_ = state::closed;
    return h;
  }
  // Read only by prep_request inside io_start (under the reactor lock).
  const io_request rq{.op = io_opcode::recv,
                      .fd = fd,
                      .addr = buf_.data(),
                      .len = static_cast<std::uint32_t>(std::min(buf_.size(), kMaxIo)),
                      .poll_first = !s_->data_left_.load(std::memory_order_relaxed)};
  op().complete = &read_op::on_complete;
  op().live_deadline = s_->read_deadline_.live();
  if (detail::io_park_start(&op(), prep_request, &rq, &s_->read_slot_, h, "net.read",
                            detail::noted_wait_site()))
    return detail::switch_after_park();  // published: *this is the reactor's (K3, g.hpp)
  return h;  // op().res says why (await_resume)
}

void read_op::on_complete(detail::io_op* op) noexcept {
  auto* self = static_cast<read_op*>(op);
  detail::g* gp = op->waiter;
  if (retry_issue(op->outcome(), self->s_->read_deadline_)) {
    self->state_ = state::slow;
    // The G is parked at the awaiting task (park() in await_suspend): it
    // resumes in do_read instead, which returns to the awaiting task.
    self->hand_over(self->s_->do_read(self->buf_, std::nullopt, nullptr), gp);
  }
  detail::ready_tail(gp);  // stealable, as the reactor's own (reactor.cpp)
}

read_op::result_type read_op::await_resume() {
  // The read ends here, whichever way it went (waiter is null if it was
  // never issued; a refused op's G holds nothing).
  detail::io_release_claim(&s_->read_slot_, op().waiter);
  switch (state_) {
    case state::empty: return std::size_t{0};
    case state::closed: return closed_error("read");
    case state::slow: return task_result();
    case state::issued: break;
  }
  const int res = op().outcome();
  // A result on_complete did not hand to do_read (or io_start's refusal:
  // a closed slot, no reactor) is final. The hint is the reader's: a read
  // refused because another is in flight (EALREADY) leaves it alone.
  if (res != -EALREADY) {
    s_->data_left_.store(
        res > 0 && (static_cast<std::size_t>(res) == std::min(buf_.size(), kMaxIo) ||
                    (op().cqe_flags & detail::kCqeSockNonempty) != 0),
        std::memory_order_relaxed);
  }
  if (res >= 0) return static_cast<std::size_t>(res);
  return net_error(res, "read");
}

read_op::operator task<result_type>() && { return s_->do_read(buf_, std::nullopt, nullptr); }

task<absl::StatusOr<std::size_t>> tcp_stream::read(std::span<char> buf,
                                                   clock::time_point deadline) {
  return do_read(buf, deadline, nullptr);
}
task<absl::StatusOr<std::size_t>> tcp_stream::read(std::span<char> buf, const context& ctx) {
  return do_read(buf, std::nullopt, ctx.node_for_internal_use());
}
// --- write_op ----------------------------------------------------------------
//
// As read_op, for one send: on_complete hands the rest of the write to
// do_write (a frame of its own) after a short send, or a result do_write's
// loop would issue again after. A send that took everything, or failed for
// good, readies the task with no frame.

std::coroutine_handle<> write_op::await_suspend(std::coroutine_handle<> h) {
  refuse_second_await();
  if (data_.empty()) {
    state_ = state::empty;
    return h;
  }
  const int fd = s_->fd_.load(std::memory_order_relaxed);
  if (fd < 0) {
    state_ = state::closed;
    return h;
  }
  // Read only by prep_request inside io_start (under the reactor lock).
  const io_request rq{.op = io_opcode::send,
                      .fd = fd,
                      .addr = const_cast<char*>(data_.data()),
                      .len = static_cast<std::uint32_t>(std::min(data_.size(), kMaxIo)),
                      .flags = MSG_NOSIGNAL};
  op().complete = &write_op::on_complete;
  op().live_deadline = s_->write_deadline_.live();
  if (detail::io_park_start(&op(), prep_request, &rq, &s_->write_slot_, h, "net.write",
                            detail::noted_wait_site()))
    return detail::switch_after_park();  // published: *this is the reactor's (K3, g.hpp)
  return h;  // op().res says why (await_resume)
}

void write_op::on_complete(detail::io_op* op) noexcept {
  auto* self = static_cast<write_op*>(op);
  detail::g* gp = op->waiter;
  const int res = op->outcome();
  const bool short_send = res > 0 && static_cast<std::size_t>(res) < self->data_.size();
  if (short_send || retry_issue(res, self->s_->write_deadline_)) {
    self->state_ = state::slow;
    std::string_view rest = self->data_;
    if (short_send) rest.remove_prefix(static_cast<std::size_t>(res));
    // As read_op::on_complete: the G resumes in do_write.
    self->hand_over(self->s_->do_write(rest, std::nullopt, nullptr), gp);
  }
  detail::ready_tail(gp);
}

write_op::result_type write_op::await_resume() {
  detail::io_release_claim(&s_->write_slot_, op().waiter);  // as read_op's
  switch (state_) {
    case state::empty: return absl::OkStatus();
    case state::closed: return closed_error("write");
    case state::slow: return task_result();
    case state::issued: break;
  }
  // A result on_complete did not hand to do_write (or io_start's refusal)
  // is final: all of data, no progress, or an error.
  const int res = op().outcome();
  if (res > 0) return absl::OkStatus();
  if (res == 0) return absl::InternalError("write: send made no progress");
  return net_error(res, "write");
}

write_op::operator task<result_type>() && { return s_->do_write(data_, std::nullopt, nullptr); }

// --- write_vectored_op -------------------------------------------------------
//
// As write_op, for one sendmsg of up to kInlineIov buffers: its msghdr and
// iovecs are the op's own storage, in the awaiting frame, which outlives the
// op's completion as the buffers do. More buffers go to do_write_vectored at
// once; a short send, or a result the loop would issue again after, hands
// it the rest (the bytes sent skipped, in whole buffers and in part).

std::coroutine_handle<> write_vectored_op::await_suspend(std::coroutine_handle<> h) {
  static_assert(sizeof(msghdr) <= sizeof(msg_) && alignof(msghdr) <= alignof(void*));
  static_assert(sizeof(iovec) * kInlineIov <= sizeof(iov_) && alignof(iovec) <= alignof(void*));
  refuse_second_await();
  // The bytes of iov_ hold an array of iovec from here (an array of
  // unsigned char provides storage for objects created in it).
  iovec* const iov = std::launder(reinterpret_cast<iovec*>(iov_));
  std::size_t n = 0;
  std::size_t total = 0;
  for (std::string_view b : bufs_) {
    if (b.empty()) continue;  // its data() may be null
    if (n == kInlineIov) {  // more than the op holds: the loop from the start
      state_ = state::slow;
      return run_now(s_->do_write_vectored(bufs_, 0), h);
    }
    new (&iov[n++]) iovec{const_cast<char*>(b.data()), b.size()};
    total += b.size();
  }
  if (n == 0) {
    state_ = state::empty;
    return h;
  }
  const int fd = s_->fd_.load(std::memory_order_relaxed);
  if (fd < 0) {
    state_ = state::closed;
    return h;
  }
  auto* msg = new (msg_) msghdr{};
  msg->msg_iov = iov;
  msg->msg_iovlen = n;
  total_ = total;
  // Read only by prep_request inside io_start (under the reactor lock).
  const io_request rq{.op = io_opcode::sendmsg, .fd = fd, .addr = msg, .flags = MSG_NOSIGNAL};
  op().complete = &write_vectored_op::on_complete;
  op().live_deadline = s_->write_deadline_.live();
  if (detail::io_park_start(&op(), prep_request, &rq, &s_->write_slot_, h, "net.write",
                            detail::noted_wait_site()))
    return detail::switch_after_park();  // published: *this is the reactor's (K3, g.hpp)
  return h;  // op().res says why (await_resume)
}

void write_vectored_op::on_complete(detail::io_op* op) noexcept {
  auto* self = static_cast<write_vectored_op*>(op);
  detail::g* gp = op->waiter;
  const int res = op->outcome();
  const bool short_send = res > 0 && static_cast<std::size_t>(res) < self->total_;
  if (short_send || retry_issue(res, self->s_->write_deadline_)) {
    self->state_ = state::slow;
    // As read_op::on_complete: the G resumes in do_write_vectored.
    const std::size_t sent = short_send ? static_cast<std::size_t>(res) : 0;
    self->hand_over(self->s_->do_write_vectored(self->bufs_, sent), gp);
  }
  detail::ready_tail(gp);
}

write_vectored_op::result_type write_vectored_op::await_resume() {
  // As write_op's (waiter is null when the op was never issued).
  detail::io_release_claim(&s_->write_slot_, op().waiter);
  switch (state_) {
    case state::empty: return absl::OkStatus();
    case state::closed: return closed_error("write");
    case state::slow: return task_result();
    case state::issued: break;
  }
  // A result on_complete did not hand to do_write_vectored (or io_start's
  // refusal) is final: all of the buffers, no progress, or an error.
  const int res = op().outcome();
  if (res > 0) return absl::OkStatus();
  if (res == 0) return absl::InternalError("write: sendmsg made no progress");
  return net_error(res, "write");
}

write_vectored_op::operator task<result_type>() && { return s_->do_write_vectored(bufs_, 0); }

task<absl::Status> tcp_stream::write(std::string_view data, clock::time_point deadline) {
  return do_write(data, deadline, nullptr);
}
task<absl::Status> tcp_stream::write(std::string_view data, const context& ctx) {
  return do_write(data, std::nullopt, ctx.node_for_internal_use());
}

task<absl::StatusOr<std::size_t>> tcp_stream::do_read(std::span<char> buf,
                                                      std::optional<clock::time_point> deadline,
                                                      std::shared_ptr<detail::context_node> ctx) {
  // First: a read_op's issue may have claimed the slot for this read.
  const detail::io_claim claim(&read_slot_);
  if (buf.empty()) co_return std::size_t{0};
  if (recv_.load(std::memory_order_relaxed) != nullptr) {
    co_return co_await do_read_held(buf, deadline, std::move(ctx));
  }
  io_context_binding bind(ctx.get());  // ctx, a parameter, keeps the node alive
  bind.bind(&read_slot_);
  const op_bounds b{.deadline = deadline, .live = &read_deadline_, .bind = &bind};
  // A recv that polls first reads -EAGAIN when io_uring cannot arm its poll
  // (a file that is not a socket, a regular file say, adopted as a stream),
  // and the poll below finds such a file ready at once: polling first again
  // would loop for ever. After an -EAGAIN the recv goes straight in, and the
  // kernel says what is wrong (ENOTSOCK).
  bool may_poll_first = true;
  for (;;) {
    int fd = fd_.load(std::memory_order_relaxed);
    if (fd < 0) co_return closed_error("read");
    // Poll first (skip the recv attempt that would find the socket empty)
    // unless the last recv said data was left behind or filled the buffer.
    io_request rq{.op = io_opcode::recv,
                  .fd = fd,
                  .addr = buf.data(),
                  .len = static_cast<std::uint32_t>(std::min(buf.size(), kMaxIo)),
                  .poll_first = may_poll_first && !data_left_.load(std::memory_order_relaxed)};
    io_awaiter op = make_op(&rq, &read_slot_, "net.read", b);
    int res = co_await op;
    res = bind.result(res, op.op);
    if (res == -EALREADY) co_return net_error(res, "read");  // the hint is the other reader's
    data_left_.store(res > 0 && (static_cast<std::uint32_t>(res) == rq.len ||
                                 (op.op.cqe_flags & detail::kCqeSockNonempty) != 0),
                     std::memory_order_relaxed);
    if (res >= 0) co_return static_cast<std::size_t>(res);
    if (res == -EINTR || (res == -ETIME && !b.expired())) continue;
    if (res == -EAGAIN) {
      may_poll_first = false;
      res = co_await wait_ready(fd, POLLIN, &read_slot_, b);
      if (res >= 0 || res == -EINTR || (res == -ETIME && !b.expired())) continue;
    }
    co_return net_error(res, "read");
  }
}

task<absl::Status> tcp_stream::do_write(std::string_view data,
                                        std::optional<clock::time_point> deadline,
                                        std::shared_ptr<detail::context_node> ctx) {
  const detail::io_claim claim(&write_slot_);
  io_context_binding bind(ctx.get());  // ctx, a parameter, keeps the node alive
  bind.bind(&write_slot_);
  const op_bounds b{.deadline = deadline, .live = &write_deadline_, .bind = &bind};
  while (!data.empty()) {
    int fd = fd_.load(std::memory_order_relaxed);
    if (fd < 0) co_return closed_error("write");
    io_request rq{.op = io_opcode::send,
                  .fd = fd,
                  .addr = const_cast<char*>(data.data()),
                  .len = static_cast<std::uint32_t>(std::min(data.size(), kMaxIo)),
                  .flags = MSG_NOSIGNAL};
    io_awaiter op = make_op(&rq, &write_slot_, "net.write", b);
    int res = co_await op;
    res = bind.result(res, op.op);
    if (res > 0) {
      data.remove_prefix(static_cast<std::size_t>(res));
      continue;
    }
    if (res == 0) co_return absl::InternalError("write: send made no progress");
    if (res == -EINTR || (res == -ETIME && !b.expired())) continue;
    if (res == -EAGAIN) {
      res = co_await wait_ready(fd, POLLOUT, &write_slot_, b);
      if (res >= 0 || res == -EINTR || (res == -ETIME && !b.expired())) continue;
    }
    co_return net_error(res, "write");
  }
  co_return absl::OkStatus();
}

task<absl::Status> tcp_stream::do_write_vectored(std::span<const std::string_view> bufs,
                                                 std::size_t sent) {
  // At most kMaxIov iovecs per sendmsg (the kernel's UIO_MAXIOV); after a
  // short write the first iovec is advanced in place.
  constexpr std::size_t kMaxIov = 1024;
  const detail::io_claim claim(&write_slot_);
  io_context_binding bind(nullptr);
  bind.bind(&write_slot_);
  const op_bounds b{.live = &write_deadline_, .bind = &bind};
  std::size_t next = 0;  // first buffer not yet in iov
  // The bytes already sent (a write_vectored_op's first sendmsg): whole
  // buffers skipped, and the rest of a buffer it sent in part.
  std::string_view rest;
  for (; next < bufs.size() && sent > 0; ++next) {
    if (bufs[next].size() > sent) {
      rest = bufs[next].substr(sent);
      sent = 0;
    } else {
      sent -= bufs[next].size();
    }
  }
  // Inline for the usual few regions (a buffered writer's send is its
  // buffer and a payload or two): no allocation per write.
  absl::InlinedVector<iovec, 8> iov;
  iov.reserve(std::min(bufs.size() - next + 1, kMaxIov));
  std::size_t first = 0;
  for (;;) {
    if (first == iov.size()) {  // refill
      iov.clear();
      first = 0;
      if (!rest.empty()) {
        iov.push_back(iovec{const_cast<char*>(rest.data()), rest.size()});
        rest = {};
      }
      for (; next < bufs.size() && iov.size() < kMaxIov; ++next)
        if (!bufs[next].empty())
          iov.push_back(iovec{const_cast<char*>(bufs[next].data()), bufs[next].size()});
      if (iov.empty()) co_return absl::OkStatus();
    }
    int fd = fd_.load(std::memory_order_relaxed);
    if (fd < 0) co_return closed_error("write");
    msghdr msg{};
    msg.msg_iov = iov.data() + first;
    msg.msg_iovlen = iov.size() - first;
    io_request rq{.op = io_opcode::sendmsg, .fd = fd, .addr = &msg, .flags = MSG_NOSIGNAL};
    io_awaiter op = make_op(&rq, &write_slot_, "net.write", b);
    int res = co_await op;
    res = bind.result(res, op.op);
    if (res > 0) {
      std::size_t n = static_cast<std::size_t>(res);
      while (first < iov.size() && n >= iov[first].iov_len) n -= iov[first++].iov_len;
      if (n > 0) {
        iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + n;
        iov[first].iov_len -= n;
      }
      continue;
    }
    if (res == 0) co_return absl::InternalError("write: sendmsg made no progress");
    if (res == -EINTR || (res == -ETIME && !b.expired())) continue;
    if (res == -EAGAIN) {
      res = co_await wait_ready(fd, POLLOUT, &write_slot_, b);
      if (res >= 0 || res == -EINTR || (res == -ETIME && !b.expired())) continue;
    }
    co_return net_error(res, "write");
  }
}

absl::Status tcp_stream::shutdown(shutdown_how how) noexcept {
  int h = how == shutdown_how::read ? SHUT_RD : how == shutdown_how::write ? SHUT_WR : SHUT_RDWR;
  // C6 of fd_close.hpp: close() cannot release the number under the call.
  return detail::with_open_fd(
      fd_, write_slot_,
      [h](int fd) {
        if (::shutdown(fd, h) != 0) return detail::errno_status(errno, "shutdown");
        return absl::OkStatus();
      },
      [] { return closed_error("shutdown"); });
}

void tcp_stream::cancel() noexcept {
  // Acquire: the queue is published with a release.
  if (detail::recv_queue* q = recv_.load(std::memory_order_acquire)) q->cancel();
  detail::io_cancel(&read_slot_, false);
  detail::io_cancel(&write_slot_, false);
}

void tcp_stream::close() noexcept {
  // The close protocol (fd_close.hpp): a task woken here may destroy the
  // stream as soon as it runs.
  const int fd = detail::claim_close(fd_);
  if (fd < 0) return;
  // Held buffers go back to their rings; a receive waiting reads kCancelled.
  // Acquire: the queue is published with a release.
  detail::g* reader = nullptr;
  // seq_cst, as claim_close()'s CAS: against a first reader that installs
  // the queue and then loads fd_ (recv_queue.cpp, recv_queue_for_reader),
  // each side writes one word and then reads the other; in the one total
  // order of those four operations either this load sees the queue (and
  // closes it) or that reader's load sees the fd claimed (and returns
  // closed), never neither.
  if (detail::recv_queue* q = recv_.load(std::memory_order_seq_cst)) reader = q->close();
  // Close the slots first: an op in flight is cancelled and its SQE is in
  // the kernel before the fd number is released.
  detail::io_cancel(&read_slot_, true);
  detail::run_close_hook(this);
  detail::io_cancel(&write_slot_, true);
  ::close(fd);
  detail::finish_close(fd_);
  // The receiver's G, taken out of the queue under its lock, is readied
  // last, from a local.
  if (reader != nullptr) detail::ready(reader);
}

absl::StatusOr<std::string> tcp_stream::local_address() const {
  return detail::socket_name(fd_, write_slot_, false);
}
absl::StatusOr<std::string> tcp_stream::remote_address() const {
  return detail::socket_name(fd_, write_slot_, true);
}

}  // namespace mpg::net
