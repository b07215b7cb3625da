// lib/io/fs.cpp: files over the per-P io_uring reactor (mpg/fs.hpp).
//
// Each operation is one io_request (openat, read, write, fsync, statx)
// awaited through detail::io_awaiter with submit_now set: the SQE goes to the
// kernel inside co_await, under the reactor lock, and the kernel resolves
// the fd number when it issues the request there. Short reads and writes
// are continued; -EINTR and -EAGAIN (an io-wq worker interrupted, a file
// someone opened O_NONBLOCK) are retried, but not an -EAGAIN of an open
// asked to be O_NONBLOCK (open(2)'s EWOULDBLOCK: see open()).
//
// Close and submission. The number close(2) releases may be reused at once
// by another open, so an operation on a file must reach the kernel before
// close() calls close(2), or fail as closed: never load the number, lose
// the race to close(), and submit it for whatever file has it by then. A
// file's users_ counts the operations being submitted (Go's fdMutex, in
// small), and holds the file's generation, which a move-assignment onto the
// file advances (file::operator=, reopen()). An operation takes the
// generation when it starts and passes it to each of its submissions: it
// belongs to the file it started on, and never continues (a short read's
// next pass, a retry) on the file assigned after.
//   S1. An operation's await_suspend (file_submission) adds one to users_
//       (acquire: see O1). If kClosing was set, or the generation is not
//       the operation's, or fd_ is -1, it takes the one back (release) and
//       fails as closed. Otherwise it submits fd_ (io_start), and takes the
//       one back (release), also when the submission throws (an await
//       outside a task).
//   C1. close() sets kClosing (acq_rel; the caller that set it is the one
//       that closes), waits until the count is 0 (acquire loads), then
//       takes fd_, calls close(2), and sets kClosed (release) as its last
//       touch of the file.
//   C2. A close() that finds kClosing set already (another close(), or
//       ~file, racing the first) waits until kClosed is set (acquire
//       loads): when it returns the descriptor is closed and fd_ is -1, and
//       the first closer no longer uses the file, so the caller may destroy
//       it. The wait also ends if the generation moves on (an O1 that
//       followed the first close()).
//   O1. operator= closes the file (C1 or C2), stores the new fd_, then in
//       one compare-and-swap (release) clears kClosing and kClosed and
//       advances the generation, keeping the count: a refused S1 may still
//       hold one, which it takes back after. An S1 that counts itself under
//       the new generation acquires the CAS (the RMWs after it continue its
//       release sequence), so it loads the new fd_.
// The read-modify-writes of users_ are totally ordered. An S1 whose add
// comes before C1's set is counted, and C1 waits for its release, so its
// submission happens before close(2); an S1 whose add comes after sees
// kClosing. A submission neither waits nor suspends, so C1's wait is short,
// and the file is alive through it (~file closes, so it waits too). The
// generation is 32 bits: an operation would meet its own generation again
// only if the file were assigned 2^32 times while it was in flight.
#include "mpg/fs.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "io/fd_awaiter.hpp"
#include "io/fs_hooks.hpp"
#include "io/io_status.hpp"
#include "io/reactor.hpp"

namespace mpg::fs {

namespace {

using detail::io_awaiter;
using detail::io_opcode;
using detail::io_request;

constexpr std::size_t kMaxIo = std::size_t{1} << 30;

io_awaiter make_op(const io_request* rq, const char* reason) {
  io_awaiter aw(detail::prep_request, rq, nullptr, reason);
  aw.op.submit_now = true;
  return aw;
}

// fs_error(): an operation's negative result as a Status (with its errno;
// io_status.hpp). closed_error(): use of a closed file (net::is_closed).
absl::Status fs_error(int res, absl::string_view what) {
  return detail::io_result_status(res, what);
}

absl::Status closed_error(absl::string_view what) { return detail::closed_status(what, "file"); }

// path_what(): "<what> \"<path>\"", the path escaped (io_status.hpp,
// quoted()): a path is any bytes but NUL, a line break included.
std::string path_what(absl::string_view what, const std::string& path) {
  return absl::StrCat(what, " ", detail::quoted(path));
}

absl::Status check_path(const std::string& path, absl::string_view what) {
  if (path.find('\0') == std::string::npos) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(path_what(what, path), ": the path has a NUL byte"));
}

// check_range(): offsets are off_t: above INT64_MAX the kernel would take
// -1 for "the file's current position".
absl::Status check_range(std::uint64_t offset, std::size_t size, absl::string_view what) {
  constexpr std::uint64_t kMax = std::numeric_limits<std::int64_t>::max();
  if (offset <= kMax && size <= kMax - offset) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": offset ", offset, " and size ", size, " pass the largest offset"));
}

file_info to_file_info(const struct statx& sx) {
  file_info info;
  info.size = sx.stx_size;
  info.mode = sx.stx_mode;
  info.inode = sx.stx_ino;
  info.nlink = sx.stx_nlink;
  info.modified = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::seconds(sx.stx_mtime.tv_sec) +
          std::chrono::nanoseconds(sx.stx_mtime.tv_nsec)));
  return info;
}

}  // namespace

// What file_submission's await gives when S1 found the file closing, or not
// the operation's any more (no errno: -EBADF would be the kernel's, for a
// file not open for reading).
constexpr int kRefusedClosed = std::numeric_limits<int>::min();
// ... and when the file is in O_APPEND mode and the operation a write_at.
constexpr int kRefusedAppend = std::numeric_limits<int>::min() + 1;

std::uint8_t file::probe_mode(int fd) noexcept {
  if (fd < 0) return 0;
  const int saved = errno;
  std::uint8_t mode = 0;
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0 && (fl & O_APPEND) != 0) mode |= kAppend;
  if (::lseek(fd, 0, SEEK_CUR) < 0 && errno == ESPIPE) mode |= kStream;
  errno = saved;
  return mode;
}

// file_submission: the awaiter of an operation on an open file: S1 of "Close
// and submission" around io_awaiter's steps. The request's fd is filled in
// here, under the gate.
struct file_submission {
  using mpg_awaiter = detail::runtime_awaiter_tag;
  detail::io_awaiter io;
  file* f;
  io_request* rq;
  std::uint32_t generation;  // the operation's (taken when it started)
  std::uint8_t refuse;       // file::kAppend, kStream: modes this op refuses
  // Refused here: kRefusedClosed, kRefusedAppend or -ESPIPE; 0 if not.
  int refusal = 0;

  file_submission(file* fl, std::uint32_t gen, io_request* r, const char* reason,
                  std::uint8_t refuse_modes = 0) noexcept
      : io(make_op(r, reason)), f(fl), rq(r), generation(gen), refuse(refuse_modes) {}

  void link_parent(std::source_location w) noexcept { io.link_parent(w); }
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) {
    // acquire: O1's release, so that under a new generation the load of
    // fd_ below sees the fd_ operator= stored. What decides otherwise is
    // users_'s modification order (the top of the file); close() writes
    // fd_ only after it acquired our release below, so the load of fd_ in
    // between cannot see that write.
    std::atomic<std::uint64_t>& users = f->users_;
    const std::uint64_t prev = users.fetch_add(1, std::memory_order_acquire);
    if ((prev & file::kClosing) != 0 || file::generation_of(prev) != generation) {
      refusal = kRefusedClosed;
    } else {
      rq->fd = f->fd_.load(std::memory_order_relaxed);  // stable while counted
      // Stable while counted, as fd_ (operator= stores it before O1).
      const std::uint8_t mode = f->mode_.load(std::memory_order_relaxed) & refuse;
      if (rq->fd < 0) {
        refusal = kRefusedClosed;  // never opened (or moved from)
      } else if (mode != 0) {
        refusal = (mode & file::kStream) != 0 ? -ESPIPE : kRefusedAppend;
      }
    }
    if (refusal != 0) {
      if (auto hook = detail::g_file_refused_hook.load(std::memory_order_relaxed)) [[unlikely]]
        hook(f);
      users.fetch_sub(1, std::memory_order_release);
      return false;
    }
    if (auto hook = detail::g_file_submit_hook.load(std::memory_order_relaxed)) [[unlikely]]
      hook(f);
    bool started;
    try {
      started = io.await_suspend(h);  // true: may resume elsewhere already
    } catch (...) {
      // Nothing was submitted (park() throws runtime_misuse_error outside a
      // task): take the one back, or close() would wait for it for ever.
      // Release, as below.
      users.fetch_sub(1, std::memory_order_release);
      throw;
    }
    // release: our submission happens before close()'s close(2). Only
    // `users` (the file, which close() keeps alive until this) is touched
    // after a start: the frame may be gone.
    users.fetch_sub(1, std::memory_order_release);
    return started;
  }
  int await_resume() const noexcept { return refusal != 0 ? refusal : io.await_resume(); }
};

task<absl::StatusOr<file>> open(std::string path, int flags, unsigned mode) {
  if (absl::Status st = check_path(path, "open"); !st.ok()) co_return st;
  io_request rq{.op = io_opcode::openat,
                .fd = AT_FDCWD,
                .addr = path.data(),
                .flags = flags | O_CLOEXEC,
                .mode = mode};
  int res;
  do {
    // The new fd is the awaiter's until it is read (fd_awaiter.hpp).
    detail::io_fd_awaiter open_op(make_op(&rq, "fs.open"));
    res = co_await open_op;
    // With O_NONBLOCK, -EAGAIN is open(2)'s answer (EWOULDBLOCK: a file
    // under a lease), which the caller asked for: a retry would be a busy
    // loop until the lease is broken (lease-break-time, 45 s by default).
  } while (res == -EINTR || (res == -EAGAIN && (flags & O_NONBLOCK) == 0));
  if (res < 0) co_return fs_error(res, path_what("open", path));
  co_return file(res);
}

task<absl::StatusOr<file_info>> stat(std::string path) {
  if (absl::Status st = check_path(path, "stat"); !st.ok()) co_return st;
  struct statx sx {};
  io_request rq{.op = io_opcode::statx,
                .fd = AT_FDCWD,
                .addr = path.data(),
                .addr2 = &sx,
                .len = STATX_BASIC_STATS,
                .flags = 0};
  int res;
  do {
    res = co_await make_op(&rq, "fs.stat");
  } while (res == -EINTR || res == -EAGAIN);
  if (res < 0) co_return fs_error(res, path_what("stat", path));
  co_return to_file_info(sx);
}

task<absl::StatusOr<std::size_t>> file::read_at(std::span<char> buf, std::uint64_t offset) {
  if (absl::Status st = check_range(offset, buf.size(), "read_at"); !st.ok()) co_return st;
  const std::uint32_t gen = generation();
  std::size_t done = 0;
  while (done < buf.size()) {
    io_request rq{.op = io_opcode::read,
                  .addr = buf.data() + done,
                  .len = static_cast<std::uint32_t>(std::min(buf.size() - done, kMaxIo)),
                  .off = offset + done};
    int res = co_await file_submission(this, gen, &rq, "fs.read", kStream);
    if (res == kRefusedClosed) co_return closed_error("read_at");
    if (res == 0) break;  // end of file
    if (res > 0) {
      done += static_cast<std::size_t>(res);
      continue;
    }
    if (res == -EINTR || res == -EAGAIN) continue;
    co_return fs_error(res, "read_at");
  }
  co_return done;
}

task<absl::Status> file::write_at(std::string_view data, std::uint64_t offset) {
  if (absl::Status st = check_range(offset, data.size(), "write_at"); !st.ok()) co_return st;
  const std::uint32_t gen = generation();
  while (!data.empty()) {
    io_request rq{.op = io_opcode::write,
                  .addr = const_cast<char*>(data.data()),
                  .len = static_cast<std::uint32_t>(std::min(data.size(), kMaxIo)),
                  .off = offset};
    int res = co_await file_submission(this, gen, &rq, "fs.write", kStream | kAppend);
    if (res == kRefusedClosed) co_return closed_error("write_at");
    if (res == kRefusedAppend) {
      co_return absl::InvalidArgumentError("write_at: the file was opened with O_APPEND");
    }
    if (res > 0) {
      data.remove_prefix(static_cast<std::size_t>(res));
      offset += static_cast<std::uint64_t>(res);
      continue;
    }
    if (res == 0) co_return absl::InternalError("write_at: write made no progress");
    if (res == -EINTR || res == -EAGAIN) continue;
    co_return fs_error(res, "write_at");
  }
  co_return absl::OkStatus();
}

task<absl::Status> file::fsync(bool data_only) {
  io_request rq{.op = io_opcode::fsync, .flags = data_only ? 1 /*IORING_FSYNC_DATASYNC*/ : 0};
  const std::uint32_t gen = generation();
  int res;
  do {
    res = co_await file_submission(this, gen, &rq, "fs.fsync");
  } while (res == -EINTR || res == -EAGAIN);
  if (res == kRefusedClosed) co_return closed_error("fsync");
  if (res < 0) co_return fs_error(res, "fsync");
  co_return absl::OkStatus();
}

task<absl::StatusOr<file_info>> file::stat() {
  static char empty_path[] = "";
  struct statx sx {};
  io_request rq{.op = io_opcode::statx,
                .addr = empty_path,
                .addr2 = &sx,
                .len = STATX_BASIC_STATS,
                .flags = AT_EMPTY_PATH};
  const std::uint32_t gen = generation();
  int res;
  do {
    res = co_await file_submission(this, gen, &rq, "fs.stat");
  } while (res == -EINTR || res == -EAGAIN);
  if (res == kRefusedClosed) co_return closed_error("stat");
  if (res < 0) co_return fs_error(res, "stat");
  co_return to_file_info(sx);
}

absl::Status file::close() noexcept {
  // C1 and C2 of "Close and submission" (the top of the file).
  const std::uint64_t prev = users_.fetch_or(kClosing, std::memory_order_acq_rel);
  if ((prev & kClosing) != 0) {  // C2: closed already, or closing on another thread
    if ((prev & kClosed) == 0) {
      if (auto hook = detail::g_file_close_wait_hook.load(std::memory_order_relaxed)) hook();
      // acquire: the first closer's release of kClosed; its writes (fd_)
      // happen before our return.
      auto closed = [&](std::uint64_t v) {
        return (v & kClosed) != 0 || generation_of(v) != generation_of(prev);
      };
      while (!closed(users_.load(std::memory_order_acquire))) std::this_thread::yield();
    }
    return absl::OkStatus();
  }
  if ((users_.load(std::memory_order_acquire) & kCountMask) != 0) {
    if (auto hook = detail::g_file_close_wait_hook.load(std::memory_order_relaxed)) hook();
    while ((users_.load(std::memory_order_acquire) & kCountMask) != 0) std::this_thread::yield();
  }
  const int fd = fd_.exchange(-1, std::memory_order_relaxed);
  int err = 0;
  if (fd >= 0 && ::close(fd) != 0 && errno != EINTR) err = errno;
  // release: our writes to the file happen before a C2 closer returns (and
  // perhaps destroys the file). Nothing of *this is touched after it.
  users_.fetch_or(kClosed, std::memory_order_release);
  if (err != 0) return detail::errno_status(err, "close");
  return absl::OkStatus();
}

void file::reopen() noexcept {
  // O1 of "Close and submission". release: the caller's store of fd_
  // happens before a submission counted under the new generation loads it.
  std::uint64_t v = users_.load(std::memory_order_relaxed);
  while (!users_.compare_exchange_weak(v, (v & ~(kClosing | kClosed)) + kGenerationOne,
                                       std::memory_order_release, std::memory_order_relaxed)) {
  }
}

}  // namespace mpg::fs
