// mpg/net.hpp: TCP over io_uring: listen, accept, dial, read, write.
//
//   absl::StatusOr<mpg::net::listener> ln = mpg::net::listen("127.0.0.1:0");
//   absl::StatusOr<mpg::net::tcp_stream> c = co_await ln->accept();
//   absl::StatusOr<std::size_t> n = co_await c->read(std::span<char>(buf));  // 0 at EOF
//   absl::Status w = co_await c->write(std::string_view("hello"));           // all of it
//
// Every operation is one io_uring request on the current P's ring (recv,
// send, accept, connect); a task that waits for one is parked and its P runs
// other tasks, as with Go's netpoller. Errors are absl::Status values with
// the errno's meaning (absl::ErrnoToStatus); never exceptions. Two codes are
// ours: kDeadlineExceeded when a deadline passed, kCancelled when the
// operation was cancelled (cancel(), close() from another task, shutdown).
//
// Addresses are "host:port": "127.0.0.1:8080", "[::1]:0", "localhost:80",
// ":8080" (listen: every interface, dual-stack; dial: this host),
// "[fe80::1%eth0]:80" (an IPv6 address with a zone, an interface name or
// index, kept as the address's scope id and printed back), or a Unix
// stream socket: "unix:/run/app.sock" (a path; relative paths too) or
// "unix:@name" (Linux's abstract namespace). The port is 1 to 5 ASCII
// digits, at most 65535, with nothing around it; a host with a NUL byte, like
// any malformed address, is kInvalidArgument. Unix sockets use the same
// listener and tcp_stream types (TCP_NODELAY does not apply). Names other
// than "localhost" go to getaddrinfo, which blocks: dial runs it under
// mpg::blocking (the P keeps running other tasks); listen, which is not a
// coroutine, runs it only when called from a plain thread, and inside a task
// (or posted function) refuses a host name with kInvalidArgument. An IPv6
// address with a zone needs no lookup and is taken anywhere.
//
// Errors keep their errno and whether they mean "use of a closed stream or
// listener": see mpg/io_error.hpp (errno_of, net::is_closed).
//
// Concurrency: one task may read a stream while another writes it; one read
// and one write at a time, and one accept() per listener: a second one
// started before the first returned fails at once with errno EALREADY
// (kAlreadyExists), also while the first is between two of its requests
// (after a short send, say): a write's bytes are never split by another
// write's. cancel() and close() may be called from any task
// (any P): an operation in flight then completes with kCancelled once the
// kernel confirms it, and its buffer is not touched after that.
//
// Deadlines are absolute steady_clock time points carried by an
// IORING_OP_LINK_TIMEOUT in the same ring. A stream's deadlines
// (set_deadline() and kin) may be set from any task and apply to the
// operation in flight too, as in Go: a read blocked when another task sets
// a read deadline in the past completes with kDeadlineExceeded; one set in
// the future ends it then; one moved later, or removed, lets it go on. A
// deadline that has passed comes before bytes already received, as Go's
// (receive() and a read after it too: the held bytes stay held).
//
// Contexts: every blocking operation has an overload that takes an
// mpg::context. When that context ends (cancel, or its deadline) the
// operation completes with the context's code, kCancelled or
// kDeadlineExceeded, whether it was in flight or had not started yet: a
// context is sticky where cancel() is not, so "check the context, then
// read" needs no check. This is how a task wakes a read blocked in another
// task for good.
//
// Buffers passed to read/write must outlive the awaited call (the returned
// task, read_op, write_op or write_vectored_op is lazy; co_await it in the
// same full-expression, or keep the buffer).
// Moving a stream or listener that has an operation in flight is undefined.
#pragma once

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <source_location>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mpg/context.hpp"
#include "mpg/detail/io/io_op.hpp"
#include "mpg/detail/io/stream_op.hpp"
#include "mpg/task.hpp"

namespace mpg::net {
class recv_buffer;
}  // namespace mpg::net

namespace mpg::detail {
class buffer_ring;
class recv_queue;

// recv_waiter: a reader waiting on a stream's recv_queue
// (lib/io/recv_queue.hpp has the protocol). Lives in the reader's awaiter.
struct recv_waiter {
  g* gp = nullptr;
  std::uint8_t wake = 0;  // why it was woken: recv_queue::wake_reason, under its lock
  bool handed = false;    // the waker put the head buffer in *out (W1's hand-off)
  net::recv_buffer* out = nullptr;  // where a hand-off goes; null: none (the reader copies)
  // Set by a frame-less awaiter: called by the waker, before ready(gp),
  // when the reader must wait again (it hands the rest to a task).
  void (*convert)(recv_waiter*) noexcept = nullptr;
  void* user = nullptr;
};
}  // namespace mpg::detail

namespace mpg::net {

using clock = std::chrono::steady_clock;

enum class shutdown_how { read, write, both };

class tcp_stream;

// recv_buffer: bytes received by tcp_stream::receive(), borrowed from the
// ring of provided buffers of the P whose ring received them (or, when
// that ring was empty, from the heap). Move-only; the destructor (or
// reset()) gives the buffer back, from any task on any P. Keep it no
// longer than needed: a P's ring is shared by all its connections.
class recv_buffer {
 public:
  recv_buffer() noexcept = default;
  recv_buffer(recv_buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)),
        bid_(o.bid_),
        ring_(std::exchange(o.ring_, nullptr)),
        base_(std::exchange(o.base_, nullptr)) {}
  recv_buffer& operator=(recv_buffer&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      bid_ = o.bid_;
      ring_ = std::exchange(o.ring_, nullptr);
      base_ = std::exchange(o.base_, nullptr);
    }
    return *this;
  }
  recv_buffer(const recv_buffer&) = delete;
  recv_buffer& operator=(const recv_buffer&) = delete;
  ~recv_buffer() { reset(); }

  const char* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  std::string_view view() const noexcept { return {data_, size_}; }
  // reset(): give the buffer back now (idempotent).
  void reset() noexcept {
    if (ring_ != nullptr || base_ != nullptr) give_back();
  }

 private:
  friend class detail::recv_queue;
  void give_back() noexcept;

  char* data_ = nullptr;
  std::uint32_t size_ = 0;
  std::uint16_t bid_ = 0;                 // in ring_
  detail::buffer_ring* ring_ = nullptr;   // null: a heap buffer at base_
  char* base_ = nullptr;                  // the heap buffer to free
};

// receive_op: what tcp_stream::receive() returns, awaited at once:
//
//   absl::StatusOr<mpg::net::recv_buffer> b = co_await s.receive();  // empty at EOF
//
// The next received bytes as a buffer the stream hands over (no copy, no
// buffer of the caller's). The stream receives with a multishot recv on
// the ring of the P of its reader, into that P's provided buffers, and
// holds what arrives until it is taken (lib/io/recv_queue.hpp). Frame-less
// when bytes are held, or arrive while it waits with no read deadline set
// (with one, the wait goes on in the task form, which looks at the
// deadline before any bytes); a wait that must be made again (a deadline
// set meanwhile, the ring out of buffers) goes on in the task form, as
// read_op's. Bounded by the stream's read deadline; cancel()
// and close() end it with kCancelled. Once a stream has used receive(),
// read(buf) copies from the held buffers (both may be mixed).
class receive_op : public detail::stream_op<absl::StatusOr<recv_buffer>> {
 public:
  receive_op(receive_op&& o) noexcept : stream_op(std::move(o)), s_(o.s_) {}  // before awaited

  bool await_ready();
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h);
  result_type await_resume();

  operator task<result_type>() &&;

 private:
  friend class tcp_stream;
  explicit receive_op(tcp_stream* s) noexcept : s_(s) {}
  // take(): a step's result (recv_queue::step as an int, and its errno).
  bool take(int step, int err) noexcept;
  static void convert(detail::recv_waiter* w) noexcept;

  tcp_stream* s_;
  int res_ = 1;  // 1: buf_ holds the result; else an error (-errno, or closed: recv_queue.cpp)
  detail::recv_waiter w_;
  recv_buffer buf_;
};

// read_op: what tcp_stream::read(buf) returns, awaited at once:
//
//   absl::StatusOr<std::size_t> n = co_await s.read(std::span<char>(buf));
//
// It issues the recv from the awaiting task's own frame, with no coroutine
// frame of its own (an idle connection costs no more than its task). When
// the recv must be issued again (-EINTR, -EAGAIN on a socket made
// non-blocking, the stream's read deadline moved later), its completion
// hands the rest of the read to the task form of the same loop, which the
// awaiting task then runs; what the caller sees is the same either way. Like
// a task it is awaited at most once and must not outlive the stream or the
// buffer. mpg::spawn(s.read(buf)) spawns its task form (spawn.hpp); to keep
// one, convert it: task<absl::StatusOr<std::size_t>>(s.read(buf)).
class read_op : public detail::stream_op<absl::StatusOr<std::size_t>>, private detail::io_op {
 public:
  read_op(read_op&& o) noexcept
      : stream_op(std::move(o)), s_(o.s_), buf_(o.buf_) {}  // before awaited

  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h);
  result_type await_resume();

  // The same read as a task (tcp_stream's read loop in a frame of its own).
  operator task<result_type>() &&;

 private:
  friend class tcp_stream;
  read_op(tcp_stream* s, std::span<char> buf) noexcept : s_(s), buf_(buf) {}
  static void on_complete(detail::io_op* op) noexcept;

  detail::io_op& op() noexcept { return *this; }

  // state_ first: it takes the io_op base's tail padding.
  enum class state : std::uint8_t { issued, closed, empty, slow };
  state state_ = state::issued;
  tcp_stream* s_;
  std::span<char> buf_;
};

// write_op: what tcp_stream::write(data) returns, awaited at once, as
// read_op (above): one send from the awaiting task's frame; a short send, or
// one to issue again, hands the rest of the write to the task form of the
// loop. mpg::spawn(s.write(data)) spawns its task form; to keep one,
// convert it: task<absl::Status>(s.write(data)).
class write_op : public detail::stream_op<absl::Status>, private detail::io_op {
 public:
  write_op(write_op&& o) noexcept
      : stream_op(std::move(o)), s_(o.s_), data_(o.data_) {}  // before awaited

  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h);
  result_type await_resume();

  // The same write as a task (tcp_stream's write loop in a frame of its own).
  operator task<result_type>() &&;

 private:
  friend class tcp_stream;
  write_op(tcp_stream* s, std::string_view data) noexcept : s_(s), data_(data) {}
  static void on_complete(detail::io_op* op) noexcept;

  detail::io_op& op() noexcept { return *this; }

  // state_ first: it takes the io_op base's tail padding.
  enum class state : std::uint8_t { issued, closed, empty, slow };
  state state_ = state::issued;
  tcp_stream* s_;
  std::string_view data_;
};

// write_vectored_op: what tcp_stream::write_vectored(bufs) returns, awaited
// at once, as write_op (above): one sendmsg from the awaiting task's frame,
// with the iovecs of up to kInlineIov non-empty buffers kept in the op. More
// buffers than that go to the task form of the loop from the start; a short
// send, or one to issue again, hands the rest to it. mpg::spawn spawns its
// task form; to keep one, convert it: task<absl::Status>(s.write_vectored(bufs)).
class write_vectored_op : public detail::stream_op<absl::Status>, private detail::io_op {
 public:
  // The non-empty buffers one sendmsg of the op itself takes.
  static constexpr std::size_t kInlineIov = 4;

  write_vectored_op(write_vectored_op&& o) noexcept  // before awaited
      : stream_op(std::move(o)), s_(o.s_), bufs_(o.bufs_) {}

  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h);
  result_type await_resume();

  // The same write as a task (tcp_stream's loop in a frame of its own).
  operator task<result_type>() &&;

 private:
  friend class tcp_stream;
  write_vectored_op(tcp_stream* s, std::span<const std::string_view> bufs) noexcept
      : s_(s), bufs_(bufs) {}
  static void on_complete(detail::io_op* op) noexcept;

  detail::io_op& op() noexcept { return *this; }

  // state_ first: it takes the io_op base's tail padding.
  enum class state : std::uint8_t { issued, closed, empty, slow };
  state state_ = state::issued;
  tcp_stream* s_;
  std::span<const std::string_view> bufs_;
  std::size_t total_ = 0;  // the bytes of the one sendmsg
  // The sendmsg's struct msghdr and struct iovec[kInlineIov], which the
  // kernel may read until the op completes: storage here, the types in
  // net.cpp (no system header in this one).
  alignas(void*) unsigned char msg_[56];
  alignas(void*) unsigned char iov_[kInlineIov * 16];
};

// tcp_stream: a connected TCP socket (TCP_NODELAY on). Move-only; the
// destructor closes it.
class tcp_stream {
 public:
  tcp_stream() noexcept = default;
  // Adopts a connected stream socket (blocking mode, as accept/dial make
  // it); a negative fd makes a closed stream.
  explicit tcp_stream(int fd) noexcept : fd_(fd < 0 ? -1 : fd) {}
  tcp_stream(tcp_stream&& o) noexcept;
  tcp_stream& operator=(tcp_stream&& o) noexcept;
  tcp_stream(const tcp_stream&) = delete;
  tcp_stream& operator=(const tcp_stream&) = delete;
  ~tcp_stream() {
    close();
    drop_recv();
  }

  bool is_open() const noexcept { return fd_.load(std::memory_order_relaxed) >= 0; }
  int native_handle() const noexcept {
    const int fd = fd_.load(std::memory_order_relaxed);
    return fd >= 0 ? fd : -1;
  }

  // read(): up to buf.size() bytes as soon as any arrive; 0 at end of stream
  // (and for an empty buf, without I/O). Bounded by the stream's read
  // deadline; with a deadline argument, by that one instead; with a
  // context, by the stream's read deadline and the context.
  // read(buf) is a read_op (above), awaited like the task the others return.
  read_op read(std::span<char> buf) noexcept { return read_op(this, buf); }
  task<absl::StatusOr<std::size_t>> read(std::span<char> buf, clock::time_point deadline);
  task<absl::StatusOr<std::size_t>> read(std::span<char> buf, const context& ctx);
  // write(): all of data (short writes are continued), or an error. After an
  // error some prefix of data may have been sent. Deadlines and contexts as
  // read()'s, with the write deadline.
  // write(data) is a write_op (above), awaited like the task the others return.
  write_op write(std::string_view data) noexcept { return write_op(this, data); }
  task<absl::Status> write(std::string_view data, clock::time_point deadline);
  // write_vectored(): all of bufs, in order, with sendmsg (one iovec per
  // buffer, no copy), continuing short writes; an error as write(). The
  // buffers (and the span) must outlive the awaited call. A
  // write_vectored_op (above), awaited like the task the others return.
  write_vectored_op write_vectored(std::span<const std::string_view> bufs) noexcept {
    return write_vectored_op(this, bufs);
  }
  task<absl::Status> write(std::string_view data, const context& ctx);

  // receive(): the next received bytes, borrowed (recv_buffer, above; 0
  // bytes at end of stream). With a deadline argument, bounded by it
  // instead of the stream's read deadline; with a context, by the
  // stream's read deadline and the context. One read (receive or read) at
  // a time.
  receive_op receive() noexcept { return receive_op(this); }
  task<absl::StatusOr<recv_buffer>> receive(clock::time_point deadline);
  task<absl::StatusOr<recv_buffer>> receive(const context& ctx);
  // held_buffers(): diagnostics: buffers of a P's ring that the stream
  // holds unread (its share of the ring; bytes held beyond it are copies).
  std::size_t held_buffers() const noexcept;

  // set_deadline(), set_read_deadline(), set_write_deadline()
  //
  // The stream's deadlines (std::nullopt: none), Go's SetDeadline and kin.
  // Any task, any P, at any time: they apply to the operation in flight in
  // that direction (if it follows the stream's deadline, i.e. was not given
  // a deadline argument) and to later ones. An operation in flight whose
  // deadline passes completes with kDeadlineExceeded; moving a deadline
  // later, or removing it, before it passed lets the operation go on.
  void set_deadline(std::optional<clock::time_point> t) noexcept;
  void set_read_deadline(std::optional<clock::time_point> t) noexcept;
  void set_write_deadline(std::optional<clock::time_point> t) noexcept;

  // shutdown(): half-close (default: no more writes; the peer reads EOF).
  // Like the address calls below, it may race with close() from another
  // task: it acts on this stream's socket or fails as closed, never on a
  // file that reused the number.
  absl::Status shutdown(shutdown_how how = shutdown_how::write) noexcept;
  // cancel(): the read and write in flight, if any, complete with kCancelled.
  // Later operations are not affected (use a context, or a deadline in the
  // past, to end an operation whether or not it has started). Any task, any P.
  void cancel() noexcept;
  // close(): cancels operations in flight and closes the socket. Idempotent;
  // later operations fail with kFailedPrecondition (net::is_closed). A task
  // it wakes may destroy the stream at once: close() touches nothing of it
  // after a woken task can run, and a close() (or the destructor) that
  // meets one in progress returns when that one has finished.
  void close() noexcept;

  // Diagnostics: an operation is in flight in that direction.
  bool read_pending() const noexcept {
    return read_slot_.op.load(std::memory_order_relaxed) != nullptr;
  }
  bool write_pending() const noexcept {
    return write_slot_.op.load(std::memory_order_relaxed) != nullptr;
  }

  absl::StatusOr<std::string> local_address() const;
  absl::StatusOr<std::string> remote_address() const;

 private:
  friend class read_op;
  friend class write_op;
  friend class write_vectored_op;
  friend class receive_op;
  task<absl::StatusOr<recv_buffer>> do_receive(std::optional<clock::time_point> deadline,
                                               std::shared_ptr<detail::context_node> ctx);
  task<absl::StatusOr<std::size_t>> do_read_held(std::span<char> buf,
                                                 std::optional<clock::time_point> deadline,
                                                 std::shared_ptr<detail::context_node> ctx);
  detail::recv_queue* recv_queue_for_reader();
  // plain_read_under_way(): a read() of another task (the stream does not
  // receive yet) holds the read direction: a receive() started meanwhile
  // is refused with EALREADY (io_slot::holder; the reader of a receive is
  // never in a plain read itself). Relaxed: a hint against the misuse of
  // the one-reader rule, as in io_start.
  bool plain_read_under_way() const noexcept {
    return read_slot_.holder.load(std::memory_order_relaxed) != nullptr;
  }
  void drop_recv() noexcept;
  task<absl::StatusOr<std::size_t>> do_read(std::span<char> buf,
                                            std::optional<clock::time_point> deadline,
                                            std::shared_ptr<detail::context_node> ctx);
  task<absl::Status> do_write(std::string_view data, std::optional<clock::time_point> deadline,
                              std::shared_ptr<detail::context_node> ctx);
  // do_write_vectored(): write_vectored's loop, the first `sent` bytes of
  // bufs already sent.
  task<absl::Status> do_write_vectored(std::span<const std::string_view> bufs, std::size_t sent);

  // The socket; negative once close() has begun (lib/io/fd_close.hpp: -2
  // while it runs, then -1). Relaxed where it is only read as a number:
  // what must be ordered (an op's SQE reaching the kernel before close()
  // releases the number) is ordered by the io_slot locks, which close()
  // takes before it releases it; close()'s own claim and finish order the
  // object's end (fd_close.hpp).
  std::atomic<int> fd_{-1};
  // The last recv left data in the socket: a hint for the next read's
  // poll-first choice, written by the reader's completed recv. Relaxed
  // atomic: a second read refused with EALREADY (net.cpp) reads it while
  // the first may write it; it orders nothing.
  std::atomic<bool> data_left_{false};
  detail::io_deadline read_deadline_;   // followed by the op in read_slot_
  detail::io_deadline write_deadline_;  // followed by the op in write_slot_
  detail::io_slot read_slot_{true};   // claiming (io_op.hpp)
  // Mutable: the const address calls take its lock (fd_close.hpp, C6).
  mutable detail::io_slot write_slot_{true};
  // The multishot receive, once receive() was used (lib/io/recv_queue.hpp);
  // made and read by the reader; close() and set_read_deadline() read it
  // too (acquire: it is published with a release by the reader).
  std::atomic<detail::recv_queue*> recv_{nullptr};
};

struct listen_options {
  bool reuse_port = false;  // SO_REUSEPORT (SO_REUSEADDR is always on)
  int backlog = 0;          // 0: SOMAXCONN
};

// listener: a listening TCP socket. Move-only; the destructor closes it.
class listener {
 public:
  listener() noexcept = default;
  listener(listener&& o) noexcept;
  listener& operator=(listener&& o) noexcept;
  listener(const listener&) = delete;
  listener& operator=(const listener&) = delete;
  ~listener() { close(); }

  bool is_open() const noexcept { return fd_.load(std::memory_order_relaxed) >= 0; }
  int native_handle() const noexcept {
    const int fd = fd_.load(std::memory_order_relaxed);
    return fd >= 0 ? fd : -1;
  }
  // port(): the TCP port; 0 for a Unix listener.
  std::uint16_t port() const noexcept { return port_; }
  // address(): "127.0.0.1:port", "[::1]:port", "unix:/path", "unix:@name".
  std::string address() const;

  // accept(): the next connection. When the process or system is out of file
  // descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) it sleeps and
  // retries, 5 ms doubling to 1 s, as Go's net/http server does; aborted
  // connections are skipped. On a closed listener it returns kCancelled,
  // whether it was blocked when close() was called or started after. A
  // connection the kernel had accepted before a cancel (close(), the
  // context, the deadline) reached the accept is returned, never dropped;
  // a task destroyed at runtime shutdown with one unread closes it.
  task<absl::StatusOr<tcp_stream>> accept();
  task<absl::StatusOr<tcp_stream>> accept(clock::time_point deadline);
  // accept(ctx): kCancelled or kDeadlineExceeded (the context's code) once
  // ctx ends, blocked or not yet started.
  task<absl::StatusOr<tcp_stream>> accept(const context& ctx);

  // close(): stops listening; the accept() in flight, and every later one,
  // returns kCancelled (a later one also satisfies net::is_closed). Idempotent. A Unix listener
  // on a path removes its socket file (as Go's does); one on an abstract
  // name has no file. An accept it wakes may destroy the listener at once,
  // as tcp_stream::close() allows.
  void close() noexcept;

  // Diagnostics: an accept() is in flight.
  bool accept_pending() const noexcept {
    return slot_.op.load(std::memory_order_relaxed) != nullptr;
  }
  // accept_backoffs(): how many times accept() slept on resource exhaustion.
  std::uint64_t accept_backoffs() const noexcept {
    return backoffs_.load(std::memory_order_relaxed);
  }

 private:
  friend absl::StatusOr<listener> listen(std::string_view address, listen_options opts);
  task<absl::StatusOr<tcp_stream>> do_accept(std::optional<clock::time_point> deadline,
                                             std::shared_ptr<detail::context_node> ctx);

  std::atomic<int> fd_{-1};  // as tcp_stream::fd_
  std::uint16_t port_ = 0;
  std::string unix_path_;  // the socket file this listener created, if any
  // Claiming (io_op.hpp). Mutable: address() takes its lock (fd_close.hpp, C6).
  mutable detail::io_slot slot_{true};
  std::atomic<std::uint64_t> backoffs_{0};
};

// listen(): a listener on address; port 0 picks a free port (see port()).
// Binding a Unix path that exists fails with EADDRINUSE (remove a stale
// socket file first). Any thread; inside a task it never blocks (see above).
absl::StatusOr<listener> listen(std::string_view address, listen_options opts = {});

// dial(): connect to address (TCP or Unix), trying each resolved address in
// turn. In a task. When none connects, the error is the first address's (as
// Go's), unless it only says this host cannot use that family (EAFNOSUPPORT,
// EADDRNOTAVAIL): then the first that says more. A deadline or context
// that ends the dial is what it reports.
task<absl::StatusOr<tcp_stream>> dial(std::string_view address);
task<absl::StatusOr<tcp_stream>> dial(std::string_view address, clock::time_point deadline);
// dial(address, ctx): kCancelled or kDeadlineExceeded (the context's code)
// once ctx ends. A host-name lookup is not interrupted; its result is
// dropped if ctx ended meanwhile.
task<absl::StatusOr<tcp_stream>> dial(std::string_view address, const context& ctx);

}  // namespace mpg::net

#include "mpg/udp.hpp"  // UDP sockets: listen_udp, dial_udp, udp_socket
