// mpg/fs.hpp: files over io_uring: open, read_at, write_at, fsync, stat.
//
//   absl::StatusOr<mpg::fs::file> f = co_await mpg::fs::open("data.bin", O_RDONLY);
//   absl::StatusOr<std::size_t> n = co_await f->read_at(std::span<char>(buf), 0);
//
// Each call is an io_uring request (openat, read, write, fsync, statx) on the
// current P's ring; the task is parked while the kernel (or an io-wq worker,
// for reads that miss the page cache) does it, and its P runs other tasks.
// Unlike sockets, file requests are submitted at once rather than at the
// scheduler's next flush: they are rarer and often slow, and submitting at
// once lets close() follow an operation on the same file safely.
//
// Errors are absl::Status values with the errno's meaning; a request the
// kernel will not take when it is made (it refuses submissions) fails with
// EBUSY rather than wait in the ring for a later flush. Positional reads
// and writes may run concurrently from several tasks, as pread/pwrite.
// Closing a file while another task has an operation on it in flight is
// allowed (the kernel keeps the file until the operation completes): an
// operation either reached the kernel before close() released the number,
// or it fails as closed (net::is_closed); it never reaches a file that
// later reused the number, nor the file a move-assignment put in its
// place. Offsets above INT64_MAX, and paths with a NUL byte, are refused
// (kInvalidArgument).
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mpg/task.hpp"

namespace mpg::fs {

// file_info: what stat() reports (statx).
struct file_info {
  std::uint64_t size = 0;
  std::uint32_t mode = 0;  // file type and permission bits (st_mode)
  std::uint64_t inode = 0;
  std::uint32_t nlink = 0;
  std::chrono::system_clock::time_point modified{};
  bool is_regular() const noexcept { return S_ISREG(mode); }
  bool is_directory() const noexcept { return S_ISDIR(mode); }
};

// file: an open file descriptor. Move-only; the destructor closes it.
class file {
 public:
  file() noexcept = default;
  // Adopts fd; a negative fd makes a closed file.
  explicit file(int fd) noexcept : fd_(fd < 0 ? -1 : fd), mode_(probe_mode(fd)) {}
  // Moves are not thread-safe: no operation may be starting on `o`.
  file(file&& o) noexcept
      : fd_(o.fd_.exchange(-1, std::memory_order_relaxed)),
        mode_(o.mode_.load(std::memory_order_relaxed)) {}
  // Closes the file this held (close()), then takes o's. An operation of
  // another task still in flight on this file (say a read_at between two
  // passes) never continues on the file assigned: its next step fails as
  // closed (net::is_closed). Operations that start after the assignment
  // use the new file.
  file& operator=(file&& o) noexcept {
    if (this != &o) {
      (void)close();
      mode_.store(o.mode_.load(std::memory_order_relaxed), std::memory_order_relaxed);
      fd_.store(o.fd_.exchange(-1, std::memory_order_relaxed), std::memory_order_relaxed);
      reopen();
    }
    return *this;
  }
  file(const file&) = delete;
  file& operator=(const file&) = delete;
  ~file() { (void)close(); }

  bool is_open() const noexcept { return fd_.load(std::memory_order_relaxed) >= 0; }
  int native_handle() const noexcept { return fd_.load(std::memory_order_relaxed); }

  // read_at(): fills buf from offset; fewer bytes only at end of file (Go's
  // ReadAt). Returns the number of bytes read. On a file that cannot seek
  // (a pipe, a FIFO, a socket) read_at and write_at fail with ESPIPE, as
  // pread(2) does (io_uring would ignore the offset); write_at on a file
  // opened with O_APPEND fails with kInvalidArgument, as Go's WriteAt
  // does (the kernel would append instead).
  task<absl::StatusOr<std::size_t>> read_at(std::span<char> buf, std::uint64_t offset);
  // write_at(): writes all of data at offset (short writes are continued).
  task<absl::Status> write_at(std::string_view data, std::uint64_t offset);
  // fsync(): flush data and metadata; data_only: fdatasync.
  task<absl::Status> fsync(bool data_only = false);
  task<absl::StatusOr<file_info>> stat();
  // close(): idempotent; reports the close(2) error the first time. Waits
  // for operations of other tasks that are being submitted (a few
  // microseconds), never for operations in flight. A close() (or ~file)
  // racing another close() returns once that one has closed the
  // descriptor (is_open() is false), so the file may be destroyed then.
  absl::Status close() noexcept;

 private:
  friend struct file_submission;  // lib/io/fs.cpp

  // -1 once closed (or never opened).
  std::atomic<int> fd_{-1};
  // What positional operations must refuse (probed when the fd is adopted;
  // read under the submission gate, as fd_): kAppend, kStream.
  static constexpr std::uint8_t kAppend = 1;
  static constexpr std::uint8_t kStream = 2;
  static std::uint8_t probe_mode(int fd) noexcept;
  std::atomic<std::uint8_t> mode_{0};
  // The submission gate (lib/io/fs.cpp, "Close and submission"): the number
  // of operations being submitted (the bits below kClosed), with kClosing
  // set once close() began and kClosed once it has closed the descriptor;
  // the high 32 bits are the generation, which operator= advances.
  static constexpr std::uint64_t kClosing = std::uint64_t{1} << 31;
  static constexpr std::uint64_t kClosed = std::uint64_t{1} << 30;
  static constexpr std::uint64_t kCountMask = kClosed - 1;
  static constexpr std::uint64_t kGenerationOne = std::uint64_t{1} << 32;
  static constexpr std::uint32_t generation_of(std::uint64_t users) noexcept {
    return static_cast<std::uint32_t>(users >> 32);
  }
  // generation(): taken by an operation when it starts. Relaxed: an S1
  // under a newer generation than the one loaded here refuses, and one
  // under this generation acquires what it needs itself (fs.cpp).
  std::uint32_t generation() const noexcept {
    return generation_of(users_.load(std::memory_order_relaxed));
  }
  // reopen(): step O1 of "Close and submission", after operator= stored fd_.
  void reopen() noexcept;
  std::atomic<std::uint64_t> users_{0};
};

// open(): openat(AT_FDCWD, path, flags | O_CLOEXEC, mode). A task destroyed
// at runtime shutdown after its open completed closes the new descriptor.
// EINTR is retried, and so is EAGAIN unless flags has O_NONBLOCK: then it
// is the answer (a file under a lease, say), as open(2) gives it.
task<absl::StatusOr<file>> open(std::string path, int flags, unsigned mode = 0644);
// stat(): statx of path (follows symlinks).
task<absl::StatusOr<file_info>> stat(std::string path);

}  // namespace mpg::fs
