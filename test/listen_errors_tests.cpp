// test/listen_errors_tests.cpp: which error listen() and listen_udp() report
// when no resolved address binds: the first address's, with its errno, as
// dial's. A seccomp filter in a forked child makes every address fail with
// an error that passes to the next one, each with its own errno:
// "localhost:0" is 127.0.0.1, whose bind() fails with EADDRNOTAVAIL, then
// ::1, whose socket() fails with EAFNOSUPPORT. This file's tests start no
// runtime, so each child is forked from a process with one thread.
#include <doctest/doctest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <string>

#include "child_process.hpp"
#include "mpg/io_error.hpp"
#include "mpg/net.hpp"
#include "mpg/udp.hpp"

namespace {

// fail_addresses(): socket(AF_INET6, ...) fails with EAFNOSUPPORT and
// bind() with EADDRNOTAVAIL; everything else is allowed.
void fail_addresses() {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_bind, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EADDRNOTAVAIL & SECCOMP_RET_DATA)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[0])),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_INET6, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EAFNOSUPPORT & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof(filter) / sizeof(filter[0])), filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(3);
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) _exit(4);
}

// report(): the child's line for the parent: the errno kept in s, then s.
// Written with write(2): stdout's buffer may hold the parent's output.
void report(const absl::Status& s) {
  const std::string line =
      "errno=" + std::to_string(mpg::errno_of(s)) + " " + s.ToString() + "\n";
  if (::write(1, line.data(), line.size()) != static_cast<ssize_t>(line.size())) _exit(6);
}

// check_first_error(): the child's output says EADDRNOTAVAIL, for 127.0.0.1.
void check_first_error(const mpg_test::child_result& r) {
  INFO(r.output);
  REQUIRE(WIFEXITED(r.status));
  REQUIRE(WEXITSTATUS(r.status) == 0);
  CHECK(r.output.find("errno=" + std::to_string(EADDRNOTAVAIL) + " ") != std::string::npos);
  CHECK(r.output.find("127.0.0.1:0") != std::string::npos);
}

}  // namespace

TEST_CASE("listen reports the first address's error, with its errno, when none binds") {
  mpg_test::child_result r = mpg_test::run_child([] {
    fail_addresses();
    auto ln = mpg::net::listen("localhost:0");
    if (ln.ok()) _exit(5);
    report(ln.status());
  });
  check_first_error(r);
}

TEST_CASE("listen_udp reports the first address's error, with its errno, when none binds") {
  mpg_test::child_result r = mpg_test::run_child([] {
    fail_addresses();
    auto u = mpg::net::listen_udp("localhost:0");
    if (u.ok()) _exit(5);
    report(u.status());
  });
  check_first_error(r);
}
