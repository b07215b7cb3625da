// test/child_process.hpp: run a piece of a test in a forked child process,
// for behaviour that ends the process (a report on stderr and abort()), that
// must not outlive the test (a seccomp filter), or that concerns the child of
// a fork itself.
#pragma once

#include <doctest/doctest.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <string>
#include <utility>

namespace mpg_test {

// child_result: what a forked child wrote to stdout and stderr, its wait
// status as waitpid() reports it, and whether run_child() killed it for
// outliving its limit (a hang).
struct child_result {
  std::string output;
  int status = 0;
  bool timed_out = false;
};

// run_child(): runs fn in a forked child, which exits with status 0 when fn
// returns; collects its output and waits for it. A child that has not closed
// its output within `limit` (none by default) is killed with SIGKILL.
template <class F>
child_result run_child(F fn, std::chrono::milliseconds limit = std::chrono::milliseconds::max()) {
  using clock = std::chrono::steady_clock;
  const bool bounded = limit != std::chrono::milliseconds::max();
  const clock::time_point deadline = bounded ? clock::now() + limit : clock::time_point::max();
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::signal(SIGABRT, SIG_DFL);  // not doctest's crash handler
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    fn();
    _exit(0);
  }
  close(fds[1]);
  child_result r;
  for (;;) {
    int wait_ms = -1;
    if (bounded) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now()).count();
      if (left <= 0) {
        kill(pid, SIGKILL);
        r.timed_out = true;
        break;
      }
      wait_ms = static_cast<int>(std::min<long long>(left, 1000));
    }
    pollfd p{fds[0], POLLIN, 0};
    const int k = poll(&p, 1, wait_ms);
    if (k < 0 && errno != EINTR) break;
    if (k <= 0) continue;  // interrupted, or a second passed: look at the deadline again
    char buf[512];
    const ssize_t n = read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    r.output.append(buf, static_cast<std::size_t>(n));
  }
  close(fds[0]);
  REQUIRE(waitpid(pid, &r.status, 0) == pid);
  return r;
}

// run_in_child(): run_child() for code that is expected to abort; returns
// the output and sets *aborted when the child ended by SIGABRT.
template <class F>
std::string run_in_child(F fn, bool* aborted) {
  child_result r = run_child(fn);
  *aborted = WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT;
  return std::move(r.output);
}

}  // namespace mpg_test
