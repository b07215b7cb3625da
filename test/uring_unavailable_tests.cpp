// When io_uring cannot be set up (here: a seccomp filter makes io_uring_setup
// fail with EPERM, as Docker's default profile does), constructing a runtime
// fails with an exception whose message says why and what to do; nothing
// crashes. Runs in a forked child so the filter stays out of other tests;
// this file has no other test, so the child is forked before any thread.
#include <doctest/doctest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <string>

#include "child_process.hpp"
#include "mpg/mpg.hpp"

namespace {

void deny_io_uring_setup() {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof(filter) / sizeof(filter[0])), filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(3);
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) _exit(4);
}

}  // namespace

TEST_CASE("a runtime without io_uring fails to start with a message saying why") {
  const mpg_test::child_result r = mpg_test::run_child([] {
    deny_io_uring_setup();
    std::string msg = "constructed";
    try {
      mpg::runtime rt({.procs = 1});
    } catch (const std::exception& e) {
      msg = e.what();
    }
    const ssize_t w = write(1, msg.data(), msg.size());
    if (w != static_cast<ssize_t>(msg.size())) _exit(5);
  });
  CHECK(WIFEXITED(r.status));
  CHECK(WEXITSTATUS(r.status) == 0);
  const std::string& msg = r.output;
  INFO("message: " << msg);
  CHECK(msg.find("io_uring") != std::string::npos);
  CHECK(msg.find("seccomp") != std::string::npos);  // says why
  CHECK(msg.find("sysctl") != std::string::npos);   // and what to do
}
