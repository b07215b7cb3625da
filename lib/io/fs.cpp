// lib/io/fs.cpp: files over the per-P io_uring reactor (mpg/fs.hpp).
//
// Each operation is one io_request (openat, read, write, fsync, statx)
// awaited through detail::io_awaiter with submit_now set: the SQE goes to the
// kernel inside co_await, under the reactor lock, so the fd number is
// resolved before any close() that follows can release it. Short reads and
// writes are continued; -EINTR and -EAGAIN (an io-wq worker interrupted, a
// file someone opened O_NONBLOCK) are retried.
#include "mpg/fs.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
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

task<absl::StatusOr<file_info>> do_statx(int dirfd, std::string path, int at_flags) {
  if (dirfd < 0 && dirfd != AT_FDCWD) co_return closed_error("stat");
  struct statx sx {};
  io_request rq{.op = io_opcode::statx,
                .fd = dirfd,
                .addr = path.data(),
                .addr2 = &sx,
                .len = STATX_BASIC_STATS,
                .flags = at_flags};
  int res;
  do {
    res = co_await make_op(&rq, "fs.stat");
  } while (res == -EINTR || res == -EAGAIN);
  if (res < 0) co_return fs_error(res, path.empty() ? "stat" : absl::StrCat("stat ", path));
  file_info info;
  info.size = sx.stx_size;
  info.mode = sx.stx_mode;
  info.inode = sx.stx_ino;
  info.nlink = sx.stx_nlink;
  info.modified = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::seconds(sx.stx_mtime.tv_sec) +
          std::chrono::nanoseconds(sx.stx_mtime.tv_nsec)));
  co_return info;
}

}  // namespace

task<absl::StatusOr<file>> open(std::string path, int flags, unsigned mode) {
  io_request rq{.op = io_opcode::openat,
                .fd = AT_FDCWD,
                .addr = path.data(),
                .flags = flags | O_CLOEXEC,
                .mode = mode};
  int res;
  do {
    res = co_await make_op(&rq, "fs.open");
  } while (res == -EINTR || res == -EAGAIN);
  if (res < 0) co_return fs_error(res, absl::StrCat("open ", path));
  co_return file(res);
}

task<absl::StatusOr<file_info>> stat(std::string path) {
  return do_statx(AT_FDCWD, std::move(path), 0);
}

task<absl::StatusOr<std::size_t>> file::read_at(std::span<char> buf, std::uint64_t offset) {
  std::size_t done = 0;
  while (done < buf.size()) {
    int fd = fd_.load(std::memory_order_relaxed);
    if (fd < 0) co_return closed_error("read_at");
    io_request rq{.op = io_opcode::read,
                  .fd = fd,
                  .addr = buf.data() + done,
                  .len = static_cast<std::uint32_t>(std::min(buf.size() - done, kMaxIo)),
                  .off = offset + done};
    int res = co_await make_op(&rq, "fs.read");
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
  while (!data.empty()) {
    int fd = fd_.load(std::memory_order_relaxed);
    if (fd < 0) co_return closed_error("write_at");
    io_request rq{.op = io_opcode::write,
                  .fd = fd,
                  .addr = const_cast<char*>(data.data()),
                  .len = static_cast<std::uint32_t>(std::min(data.size(), kMaxIo)),
                  .off = offset};
    int res = co_await make_op(&rq, "fs.write");
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
  int fd = fd_.load(std::memory_order_relaxed);
  if (fd < 0) co_return closed_error("fsync");
  io_request rq{.op = io_opcode::fsync, .fd = fd, .flags = data_only ? 1 /*IORING_FSYNC_DATASYNC*/ : 0};
  int res;
  do {
    res = co_await make_op(&rq, "fs.fsync");
  } while (res == -EINTR || res == -EAGAIN);
  if (res < 0) co_return fs_error(res, "fsync");
  co_return absl::OkStatus();
}

task<absl::StatusOr<file_info>> file::stat() {
  // A closed file (-1) is caught in do_statx.
  return do_statx(fd_.load(std::memory_order_relaxed), std::string(), AT_EMPTY_PATH);
}

absl::Status file::close() noexcept {
  int fd = fd_.exchange(-1, std::memory_order_acq_rel);
  if (fd < 0) return absl::OkStatus();
  if (::close(fd) != 0 && errno != EINTR) return detail::errno_status(errno, "close");
  return absl::OkStatus();
}

}  // namespace mpg::fs
