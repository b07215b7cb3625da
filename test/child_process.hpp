// test/child_process.hpp: run a piece of a test in a forked child process,
// for behaviour that ends the process (a report on stderr and abort()) or
// that must not outlive the test (a seccomp filter).
#pragma once

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <string>
#include <utility>

namespace mpg_test {

// child_result: what a forked child wrote to stdout and stderr, and its
// wait status as waitpid() reports it.
struct child_result {
  std::string output;
  int status = 0;
};

// run_child(): runs fn in a forked child, which exits with status 0 when fn
// returns; collects its output and waits for it.
template <class F>
child_result run_child(F fn) {
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
  char buf[512];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) r.output.append(buf, static_cast<std::size_t>(n));
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
