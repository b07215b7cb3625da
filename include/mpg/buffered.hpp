// mpg/buffered.hpp: buffered_reader and buffered_writer over a stream (Go's
// bufio.Reader and bufio.Writer), for line protocols and framed messages.
//
//   mpg::net::buffered_reader in(conn);            // conn: a tcp_stream (by reference)
//   absl::StatusOr<std::string_view> line = co_await in.read_line();  // "\n" or "\r\n" stripped
//   absl::StatusOr<std::string> body = co_await in.read_exact(n);
//   mpg::net::buffered_writer out(conn);
//   co_await out.write("HTTP/1.1 200 OK\r\n");     // small: copied into the buffer
//   std::array<std::string_view, 2> parts{head, big_body};
//   co_await out.write_vectored(parts);            // big pieces go as their own iovec
//   absl::Status s = co_await out.flush();
//
// Streams. Both are templates over the stream type, held by reference (it
// must outlive them): the reader needs
//   read(std::span<char>)          (0: end of stream)
// awaitable as absl::StatusOr<std::size_t>, and the writer
//   write(std::string_view)        (writes it all)
// awaitable as absl::Status (a task, or an awaiter such as net::tcp_stream's),
// plus, optionally, write_vectored(std::span<const std::string_view>): the
// writer then sends its buffer and large payloads in one sendmsg each flush
// (net::tcp_stream has it); without it each piece is one write().
//
// Errors (absl::Status; never exceptions):
//   kOutOfRange        the stream ended cleanly where a read would start
//                      (Go's io.EOF): is_eof(s).
//   kDataLoss          the stream ended inside a line, a read_exact or a
//                      peek (Go's io.ErrUnexpectedEOF): is_unexpected_eof(s).
//                      A line's or a peek's partial data stays buffered
//                      (buffered_view()); a read_exact's are consumed:
//                      read_exact(span)'s are in the span's prefix,
//                      read_exact(n)'s string is dropped, and the message
//                      says how many bytes came (as Rust's read_exact, the
//                      count is not a value; Go's io.ReadFull returns it).
//   kResourceExhausted read_until/read_line found no delimiter within the
//                      buffer's capacity (Go's bufio.ErrBufferFull); peek(n)
//                      with n above the capacity. The bytes stay buffered.
//   kInvalidArgument   read_exact(n) with n above std::string's max_size();
//                      nothing is read.
//   kFailedPrecondition
//                      the reader or writer was moved from.
//   anything else      the stream's own error, passed through.
//
// Views. read_until, read_line and peek return a std::string_view into the
// reader's buffer, valid until the next call on the reader (as Go's
// ReadSlice). Copy it to keep it.
//
// The reader's buffer is one allocation of `capacity` bytes (the maximum
// line length), made at construction. Bytes [r_, w_) are unread; a read
// that needs room moves them to the front first (one memmove of at most a
// line), so a line is always contiguous. read_exact copies what is buffered
// and reads the rest straight into its destination when that is larger than
// the buffer. read_exact(n)'s string grows as the bytes arrive (doubling,
// from max(capacity, 64 KiB)), so an n taken from a peer's length prefix
// costs memory for the bytes that came, not for n.
//
// The writer's buffer (capacity bytes) collects small writes. A payload of
// at least `large` bytes is never copied: write() and write_vectored() send
// the buffered bytes and the payload together (one sendmsg with an iovec per
// region) before returning, so the payload need only live until then.
// Otherwise a write that does not fit flushes first. Nothing is sent until
// the buffer fills, a large payload comes, or flush() is called. Empty
// pieces are skipped. After an error the writer keeps failing with it (as
// Go's bufio.Writer).
//
// Moves. A moved-from reader or writer is empty (capacity() and buffered()
// 0) and fails every call with kFailedPrecondition; assigning another to it
// makes it usable again.
//
// Concurrency: one task uses a reader (or a writer) at a time; a reader and
// a writer over one tcp_stream may be used by two tasks (the stream allows
// one read and one write at once).
//
// Awaiters, not tasks. Every call but read_exact returns an awaiter to
// co_await at once (mpg/detail/io/buffered_op.hpp): a call the buffer
// answers (a line read in with the ones before it, a write that fits beside
// the buffered bytes) finishes inside the co_await, with no coroutine frame;
// only a call that must read or send runs as a task of its own. Like a
// task, an awaiter is awaited at most once: a second await of one that ran
// its task form throws runtime_misuse_error. Converted to a task
// (task<R>(call)), a call can be spawned or kept to await later.
#pragma once

#include <absl/status/status.h>
#include <absl/status/statusor.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mpg/detail/io/buffered_op.hpp"
#include "mpg/task.hpp"

namespace mpg::detail {
absl::Status buffered_eof_error();
absl::Status buffered_unexpected_eof_error(std::size_t have, std::size_t want);
absl::Status buffered_no_delimiter_error(std::size_t capacity);
absl::Status buffered_peek_too_large_error(std::size_t n, std::size_t capacity);
absl::Status buffered_read_exact_too_large_error(std::size_t n, std::size_t max_size);
absl::Status buffered_moved_from_error(const char* what);
}  // namespace mpg::detail

namespace mpg::net {

// is_eof(): s is the clean end of stream of a buffered read (kOutOfRange).
bool is_eof(const absl::Status& s) noexcept;
// is_unexpected_eof(): the stream ended inside a read that needed more
// (kDataLoss).
bool is_unexpected_eof(const absl::Status& s) noexcept;

// buffered_reader<Stream>
template <class Stream>
class buffered_reader {
  // The fast paths and task forms of the calls below (buffered_op.hpp).
  bool buffered_until(std::optional<absl::StatusOr<std::string_view>>* out, char delim,
                      bool strip) noexcept;
  task<absl::StatusOr<std::string_view>> read_until_task(char delim, bool strip);
  bool buffered_peek(std::optional<absl::StatusOr<std::string_view>>* out, std::size_t n) noexcept;
  task<absl::StatusOr<std::string_view>> peek_task(std::size_t n);
  bool buffered_read(std::optional<absl::StatusOr<std::size_t>>* out, std::span<char> buf) noexcept;
  task<absl::StatusOr<std::size_t>> read_task(std::span<char> buf);

 public:
  // What read_until, read_line, peek and read return: awaited at once, they
  // take what the buffer holds without a frame of their own, and go on in
  // their task form when they must read (mpg/detail/io/buffered_op.hpp).
  // mpg::spawn(in.read_line()) spawns the task form; to keep one, convert
  // it: task<absl::StatusOr<std::string_view>>(in.read_line()).
  using line_op =
      detail::buffered_op<absl::StatusOr<std::string_view>, buffered_reader,
                          &buffered_reader::buffered_until, &buffered_reader::read_until_task,
                          char, bool>;
  using peek_op =
      detail::buffered_op<absl::StatusOr<std::string_view>, buffered_reader,
                          &buffered_reader::buffered_peek, &buffered_reader::peek_task,
                          std::size_t>;
  using read_op = detail::buffered_op<absl::StatusOr<std::size_t>, buffered_reader,
                                      &buffered_reader::buffered_read,
                                      &buffered_reader::read_task, std::span<char>>;

  static constexpr std::size_t kDefaultCapacity = 64 * 1024;
  // read_exact(n)'s string starts at min(n, max(capacity, this)) bytes.
  static constexpr std::size_t kReadExactStep = 64 * 1024;

  explicit buffered_reader(Stream& s, std::size_t capacity = kDefaultCapacity)
      : s_(&s), cap_(capacity > 0 ? capacity : 1), buf_(new char[cap_]) {}
  // The source is left empty: its calls fail with kFailedPrecondition.
  buffered_reader(buffered_reader&& o) noexcept
      : s_(std::exchange(o.s_, nullptr)),
        cap_(std::exchange(o.cap_, 0)),
        buf_(std::move(o.buf_)),
        r_(std::exchange(o.r_, 0)),
        w_(std::exchange(o.w_, 0)) {}
  buffered_reader& operator=(buffered_reader&& o) noexcept {
    if (this != &o) {
      s_ = std::exchange(o.s_, nullptr);
      cap_ = std::exchange(o.cap_, 0);
      buf_ = std::move(o.buf_);
      r_ = std::exchange(o.r_, 0);
      w_ = std::exchange(o.w_, 0);
    }
    return *this;
  }

  std::size_t capacity() const noexcept { return cap_; }
  // buffered(): bytes read from the stream and not yet consumed.
  std::size_t buffered() const noexcept { return w_ - r_; }
  std::string_view buffered_view() const noexcept { return {buf_.get() + r_, w_ - r_}; }

  // buffered_reader::read_until()
  //
  // The bytes up to and including the first `delim`, consumed. Errors:
  // kResourceExhausted when capacity() bytes hold no delim; kOutOfRange at
  // a clean end of stream; kDataLoss when it ends after some bytes without
  // delim.
  line_op read_until(char delim) noexcept { return line_op(this, delim, false); }

  // buffered_reader::read_line()
  //
  // read_until('\n') without the "\n" or "\r\n". Errors as read_until.
  line_op read_line() noexcept { return line_op(this, '\n', true); }

  // buffered_reader::peek()
  //
  // The next n bytes, not consumed. kResourceExhausted if n > capacity();
  // kOutOfRange or kDataLoss if the stream ends first (nothing or some
  // bytes buffered).
  peek_op peek(std::size_t n) noexcept { return peek_op(this, n); }

  // buffered_reader::consume(): drop n buffered bytes (n <= buffered()),
  // e.g. after a peek.
  void consume(std::size_t n) noexcept { r_ += std::min(n, w_ - r_); }

  // buffered_reader::read_exact()
  //
  // Fills out completely. Errors: kOutOfRange if the stream ends before the
  // first byte, kDataLoss if it ends later (what was read is in out's
  // prefix, and consumed: the message gives its length). A stream error
  // part way leaves out's contents unspecified.
  task<absl::Status> read_exact(std::span<char> out) {
    if (!buf_) co_return moved_from();
    std::size_t done = 0;
    while (done < out.size()) {
      absl::StatusOr<std::size_t> n = co_await read(out.subspan(done));
      if (!n.ok()) co_return n.status();
      if (*n == 0) co_return eof_at(done, out.size());
      done += *n;
    }
    co_return absl::OkStatus();
  }
  // The same into a string of n bytes, which grows as they arrive: a
  // stream that ends first costs memory for what came. kInvalidArgument if
  // n is above std::string's max_size().
  task<absl::StatusOr<std::string>> read_exact(std::size_t n) {
    if (!buf_) co_return moved_from();
    std::string s;
    if (n > s.max_size()) {
      co_return mpg::detail::buffered_read_exact_too_large_error(n, s.max_size());
    }
    std::size_t done = 0;
    while (done < n) {
      if (done == s.size()) {
        s.resize(done + std::min(n - done, std::max({done, cap_, kReadExactStep})));
      }
      std::span<char> rest(s.data() + done, s.size() - done);
      absl::StatusOr<std::size_t> got = co_await read(rest);
      if (!got.ok()) co_return got.status();
      if (*got == 0) co_return eof_at(done, n);
      done += *got;
    }
    co_return s;
  }

  // buffered_reader::read(): Go's bufio.Reader.Read: buffered bytes if any,
  // else one read of the stream (straight into buf when it is at least the
  // capacity). 0 at end of stream.
  read_op read(std::span<char> buf) noexcept { return read_op(this, buf); }

 private:
  // fill(): one read of the stream into the free tail of the buffer, after
  // moving the unread bytes to the front if the tail is full. The bytes it
  // got (0: end of stream).
  task<absl::StatusOr<std::size_t>> fill() {
    if (w_ == cap_) {
      std::memmove(buf_.get(), buf_.get() + r_, w_ - r_);
      w_ -= r_;
      r_ = 0;
    } else if (r_ == w_) {
      r_ = w_ = 0;
    }
    absl::StatusOr<std::size_t> n = co_await s_->read(std::span<char>(buf_.get() + w_, cap_ - w_));
    if (n.ok()) w_ += *n;
    co_return n;
  }
  std::size_t take(std::span<char> out) noexcept {
    const std::size_t n = std::min(out.size(), w_ - r_);
    if (n > 0) std::memcpy(out.data(), buf_.get() + r_, n);
    r_ += n;
    return n;
  }
  // take_through(): consumes the buffered bytes up to and including the
  // delimiter at delim; strip: read_line's, without its "\n" or "\r\n".
  std::string_view take_through(const char* delim, bool strip) noexcept {
    const std::size_t end = static_cast<std::size_t>(delim - buf_.get()) + 1;
    std::string_view line(buf_.get() + r_, end - r_);
    r_ = end;
    if (strip) {
      line.remove_suffix(1);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    }
    return line;
  }
  static absl::Status eof_at(std::size_t have, std::size_t want) {
    return have == 0 ? mpg::detail::buffered_eof_error()
                     : mpg::detail::buffered_unexpected_eof_error(have, want);
  }
  static absl::Status moved_from() {
    return mpg::detail::buffered_moved_from_error("buffered_reader");
  }

  Stream* s_;
  std::size_t cap_;
  std::unique_ptr<char[]> buf_;  // null: moved from
  std::size_t r_ = 0;            // first unread byte
  std::size_t w_ = 0;            // end of the bytes read
};

// The reader's fast paths and task forms (buffered_op.hpp). A fast path
// that declines leaves the reader as it was: the task form starts over.

template <class Stream>
bool buffered_reader<Stream>::buffered_until(
    std::optional<absl::StatusOr<std::string_view>>* out, char delim, bool strip) noexcept {
  if (!buf_) return false;
  const void* p = std::memchr(buf_.get() + r_, delim, w_ - r_);
  if (p == nullptr) return false;
  out->emplace(take_through(static_cast<const char*>(p), strip));
  return true;
}

template <class Stream>
task<absl::StatusOr<std::string_view>> buffered_reader<Stream>::read_until_task(char delim,
                                                                                bool strip) {
  if (!buf_) co_return moved_from();
  std::size_t scanned = 0;  // bytes of [r_, w_) known to hold no delim
  for (;;) {
    const char* from = buf_.get() + r_ + scanned;
    if (const void* p = std::memchr(from, delim, w_ - r_ - scanned)) {
      co_return take_through(static_cast<const char*>(p), strip);
    }
    scanned = w_ - r_;
    if (scanned == cap_) co_return mpg::detail::buffered_no_delimiter_error(cap_);
    absl::StatusOr<std::size_t> n = co_await fill();
    if (!n.ok()) co_return n.status();
    if (*n == 0) co_return eof_at(scanned, scanned + 1);
  }
}

template <class Stream>
bool buffered_reader<Stream>::buffered_peek(std::optional<absl::StatusOr<std::string_view>>* out,
                                            std::size_t n) noexcept {
  if (!buf_ || w_ - r_ < n) return false;
  out->emplace(std::string_view(buf_.get() + r_, n));
  return true;
}

template <class Stream>
task<absl::StatusOr<std::string_view>> buffered_reader<Stream>::peek_task(std::size_t n) {
  if (!buf_) co_return moved_from();
  if (n > cap_) co_return mpg::detail::buffered_peek_too_large_error(n, cap_);
  while (w_ - r_ < n) {
    absl::StatusOr<std::size_t> got = co_await fill();
    if (!got.ok()) co_return got.status();
    if (*got == 0) co_return eof_at(w_ - r_, n);
  }
  co_return std::string_view(buf_.get() + r_, n);
}

template <class Stream>
bool buffered_reader<Stream>::buffered_read(std::optional<absl::StatusOr<std::size_t>>* out,
                                            std::span<char> buf) noexcept {
  if (!buf_ || (r_ == w_ && !buf.empty())) return false;
  out->emplace(take(buf));
  return true;
}

template <class Stream>
task<absl::StatusOr<std::size_t>> buffered_reader<Stream>::read_task(std::span<char> buf) {
  if (!buf_) co_return moved_from();
  if (buf.empty()) co_return std::size_t{0};
  if (r_ == w_) {
    if (buf.size() >= cap_) co_return co_await s_->read(buf);
    absl::StatusOr<std::size_t> n = co_await fill();
    if (!n.ok() || *n == 0) co_return n;
  }
  co_return take(buf);
}

// buffered_writer<Stream>
template <class Stream>
class buffered_writer {
  // The fast paths and task forms of the calls below (buffered_op.hpp).
  bool buffered_write(std::optional<absl::Status>* out, std::string_view data) noexcept;
  task<absl::Status> write_task(std::string_view data);
  bool buffered_write_vectored(std::optional<absl::Status>* out,
                               std::span<const std::string_view> pieces) noexcept;
  task<absl::Status> write_vectored_task(std::span<const std::string_view> pieces);
  bool buffered_flush(std::optional<absl::Status>* out) noexcept;
  task<absl::Status> flush_task();

 public:
  // What write, write_vectored and flush return: awaited at once, a write
  // that fits beside the buffered bytes (and a flush with nothing buffered)
  // finishes without a frame of its own; one that must send goes on in its
  // task form (mpg/detail/io/buffered_op.hpp). mpg::spawn(out.flush())
  // spawns the task form; to keep one, convert it: task<absl::Status>(out.flush()).
  using write_op = detail::buffered_op<absl::Status, buffered_writer,
                                       &buffered_writer::buffered_write,
                                       &buffered_writer::write_task, std::string_view>;
  using write_vectored_op =
      detail::buffered_op<absl::Status, buffered_writer, &buffered_writer::buffered_write_vectored,
                          &buffered_writer::write_vectored_task,
                          std::span<const std::string_view>>;
  using flush_op = detail::buffered_op<absl::Status, buffered_writer,
                                       &buffered_writer::buffered_flush,
                                       &buffered_writer::flush_task>;

  static constexpr std::size_t kDefaultCapacity = 16 * 1024;
  static constexpr std::size_t kDefaultLarge = 2 * 1024;

  // large: payloads of at least this many bytes are sent from where they
  // are (never copied); clamped to the capacity.
  explicit buffered_writer(Stream& s, std::size_t capacity = kDefaultCapacity,
                           std::size_t large = kDefaultLarge)
      : s_(&s),
        cap_(capacity > 0 ? capacity : 1),
        large_(std::min(large > 0 ? large : 1, cap_)),
        buf_(new char[cap_]) {}
  // The source is left empty: its calls fail with kFailedPrecondition.
  buffered_writer(buffered_writer&& o) noexcept
      : s_(std::exchange(o.s_, nullptr)),
        cap_(std::exchange(o.cap_, 0)),
        large_(std::exchange(o.large_, 0)),
        buf_(std::move(o.buf_)),
        n_(std::exchange(o.n_, 0)),
        err_(std::exchange(o.err_, absl::OkStatus())) {}
  buffered_writer& operator=(buffered_writer&& o) noexcept {
    if (this != &o) {
      s_ = std::exchange(o.s_, nullptr);
      cap_ = std::exchange(o.cap_, 0);
      large_ = std::exchange(o.large_, 0);
      buf_ = std::move(o.buf_);
      n_ = std::exchange(o.n_, 0);
      err_ = std::exchange(o.err_, absl::OkStatus());
    }
    return *this;
  }

  std::size_t buffered() const noexcept { return n_; }
  std::size_t capacity() const noexcept { return cap_; }

  // buffered_writer::write()
  //
  // Buffers data, or sends it (with what is buffered) at once if it is
  // large. Returns the first error of the stream, now or from before.
  write_op write(std::string_view data) noexcept { return write_op(this, data); }

  // buffered_writer::write_vectored()
  //
  // Writes the pieces in order: small ones are copied into the buffer,
  // large ones are sent in place, together with the buffered bytes around
  // them, before this returns.
  write_vectored_op write_vectored(std::span<const std::string_view> pieces) noexcept {
    return write_vectored_op(this, pieces);
  }

  // buffered_writer::flush(): sends everything buffered.
  flush_op flush() noexcept { return flush_op(this); }

 private:
  // send(): the regions to the stream, what the caller awaits: the
  // stream's own write_vectored when it has one (no frame of the writer's
  // in between), else send_each. The caller keeps an error (keep_error).
  auto send(std::span<const std::string_view> regions) {
    if constexpr (requires(Stream& s) { s.write_vectored(regions); }) {
      return s_->write_vectored(regions);
    } else {
      return send_each(regions);
    }
  }
  task<absl::Status> send_each(std::span<const std::string_view> regions) {
    absl::Status st;
    for (std::string_view r : regions) {
      st = co_await s_->write(r);
      if (!st.ok()) break;
    }
    co_return st;
  }
  // keep_error(): a failed send's status is the writer's from now on.
  void keep_error(const absl::Status& st) {
    if (!st.ok()) err_ = st;
  }
  static absl::Status moved_from() {
    return mpg::detail::buffered_moved_from_error("buffered_writer");
  }

  Stream* s_;
  std::size_t cap_;
  std::size_t large_;
  std::unique_ptr<char[]> buf_;  // null: moved from
  std::size_t n_ = 0;            // buffered bytes
  absl::Status err_;             // sticky
};

// The writer's fast paths and task forms (buffered_op.hpp). A fast path
// that declines leaves the writer as it was: the task form starts over.

template <class Stream>
bool buffered_writer<Stream>::buffered_write(std::optional<absl::Status>* out,
                                             std::string_view data) noexcept {
  // Its own, not write_vectored's with one piece: a write is the common
  // call (the Redis example makes several per reply), and the two loops
  // over one piece cost it about 40 instructions per request.
  if (!buf_ || !err_.ok() || data.size() >= large_ || n_ + data.size() > cap_) return false;
  if (!data.empty()) std::memcpy(buf_.get() + n_, data.data(), data.size());  // data() may be null
  n_ += data.size();
  out->emplace();
  return true;
}

template <class Stream>
task<absl::Status> buffered_writer<Stream>::write_task(std::string_view data) {
  const std::string_view one[1] = {data};
  co_return co_await write_vectored_task(std::span<const std::string_view>(one));
}

template <class Stream>
bool buffered_writer<Stream>::buffered_write_vectored(
    std::optional<absl::Status>* out, std::span<const std::string_view> pieces) noexcept {
  if (!buf_ || !err_.ok()) return false;
  std::size_t total = 0;
  for (std::string_view p : pieces) {
    if (p.size() >= large_) return false;
    total += p.size();
  }
  if (n_ + total > cap_) return false;
  for (std::string_view p : pieces) {
    if (p.empty()) continue;  // its data() may be null, which memcpy must not get
    std::memcpy(buf_.get() + n_, p.data(), p.size());
    n_ += p.size();
  }
  out->emplace();
  return true;
}

template <class Stream>
task<absl::Status> buffered_writer<Stream>::write_vectored_task(
    std::span<const std::string_view> pieces) {
  if (!buf_) co_return moved_from();
  if (!err_.ok()) co_return err_;
  std::vector<std::string_view> out;  // regions of one send, in order
  std::size_t from = 0;               // buffer bytes not yet in `out`
  for (std::string_view p : pieces) {
    if (p.empty()) continue;  // its data() may be null, which memcpy must not get
    if (p.size() >= large_) {
      if (n_ > from) out.emplace_back(buf_.get() + from, n_ - from);
      out.push_back(p);
      from = n_;
      continue;
    }
    if (n_ + p.size() > cap_) {
      // No room: send what is pending (buffer regions and payloads) and
      // start the buffer over.
      if (n_ > from) out.emplace_back(buf_.get() + from, n_ - from);
      absl::Status st = co_await send(out);
      keep_error(st);
      if (!st.ok()) co_return st;
      out.clear();
      n_ = from = 0;
    }
    std::memcpy(buf_.get() + n_, p.data(), p.size());
    n_ += p.size();
  }
  if (!out.empty()) {
    // A large payload went in: send it now, with the buffer around it.
    if (n_ > from) out.emplace_back(buf_.get() + from, n_ - from);
    absl::Status st = co_await send(out);
    keep_error(st);
    n_ = 0;
    co_return st;
  }
  co_return absl::OkStatus();
}

template <class Stream>
bool buffered_writer<Stream>::buffered_flush(std::optional<absl::Status>* out) noexcept {
  if (!buf_ || !err_.ok() || n_ != 0) return false;
  out->emplace();
  return true;
}

template <class Stream>
task<absl::Status> buffered_writer<Stream>::flush_task() {
  if (!buf_) co_return moved_from();
  if (!err_.ok()) co_return err_;
  if (n_ == 0) co_return absl::OkStatus();
  const std::string_view one[1] = {std::string_view(buf_.get(), n_)};
  absl::Status st = co_await send(std::span<const std::string_view>(one));
  keep_error(st);
  n_ = 0;
  co_return st;
}

}  // namespace mpg::net
