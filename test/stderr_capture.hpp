// test/stderr_capture.hpp: captures what the process writes to stderr (fd 2)
// for a scope, so tests can wait for the runtime's diagnostics.
//
// fd 2 is pointed at a pipe whose reader thread appends everything to a
// string; wait_for() blocks on a condition variable until a text appears
// (the reader notifies on every read) or a bounded limit passes, so a test
// waits exactly as long as the output takes and fails, rather than hangs,
// when it never comes. The destructor restores fd 2 and copies what was
// captured to it when asked (echo), so a failing test still shows it.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace mpg_test {

class stderr_capture {
 public:
  stderr_capture() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) std::abort();
    saved_ = ::dup(STDERR_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[1]);
    read_fd_ = fds[0];
    reader_ = std::thread([this] { read_all(); });
  }
  ~stderr_capture() {
    // Closing the last write end (fd 2) ends the reader at EOF.
    ::dup2(saved_, STDERR_FILENO);
    reader_.join();
    ::close(read_fd_);
    if (echo_) {
      const std::string s = text();
      [[maybe_unused]] ssize_t n = ::write(saved_, s.data(), s.size());
    }
    ::close(saved_);
  }
  stderr_capture(const stderr_capture&) = delete;
  stderr_capture& operator=(const stderr_capture&) = delete;

  // text(): everything captured so far.
  std::string text() const {
    std::lock_guard<std::mutex> l(mu_);
    return text_;
  }
  // count(): how many times `needle` occurs in the captured text.
  std::size_t count(std::string_view needle) const {
    std::lock_guard<std::mutex> l(mu_);
    return count_locked(needle);
  }
  // wait_for(): true once `needle` occurs at least n times; false after
  // `limit` without that (a failure, never a normal outcome).
  bool wait_for(std::string_view needle, std::size_t n = 1,
                std::chrono::milliseconds limit = std::chrono::seconds(20)) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, limit, [&] { return count_locked(needle) >= n; });
  }
  void echo_on_exit(bool on) { echo_ = on; }
  // sync(): everything written to fd 2 before this call is in text() when
  // it returns (a marker is written and waited for; the pipe is FIFO).
  // Returns false if the marker did not come back within the limit.
  bool sync() {
    const std::string marker = "[capture sync " + std::to_string(++syncs_) + "]\n";
    if (::write(STDERR_FILENO, marker.data(), marker.size()) != static_cast<ssize_t>(marker.size()))
      return false;
    return wait_for(marker);
  }

 private:
  std::size_t count_locked(std::string_view needle) const {
    std::size_t n = 0;
    for (std::size_t pos = text_.find(needle); pos != std::string::npos;
         pos = text_.find(needle, pos + needle.size()))
      ++n;
    return n;
  }
  void read_all() {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(read_fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      {
        std::lock_guard<std::mutex> l(mu_);
        text_.append(buf, static_cast<std::size_t>(n));
      }
      cv_.notify_all();
    }
  }

  int saved_ = -1;
  int read_fd_ = -1;
  bool echo_ = false;
  int syncs_ = 0;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string text_;
  std::thread reader_;
};

}  // namespace mpg_test
