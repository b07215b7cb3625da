// test/reap_wake_tests.cpp: which Gs readied by I/O completions wake
// another M (find_runnable.cpp, "Waking after a reap").
//
// An M whose P has only I/O in flight sleeps in that P's ring, holding it.
// A completion it reaps readies one G onto its own P, which it runs at once:
// that is no work for another M. Counting its own parked P as idle, a
// wake_p() per readied G would start a spinner on every completion, and the
// spinner would find nothing and park again. The case below counts the
// Ms woken (runtime_stats::wakeups) over ping-pong rounds with a plain
// thread: each round readies the echoing G twice, by its read's and by its
// write's completion, and it is the only G. (That more readied work still
// finds an M is the parking protocol's liveness, which park_stress_tests
// checks.)
#include <doctest/doctest.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <atomic>
#include <span>
#include <thread>

#include "mpg/mpg.hpp"
#include "mpg/net.hpp"
#include "test_support.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;

namespace {

int connect_blocking(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

bool write_byte(int fd, char b) {
  ssize_t n;
  while ((n = ::write(fd, &b, 1)) < 0 && errno == EINTR) {
  }
  return n == 1;
}

int read_byte(int fd) {
  char b = 0;
  ssize_t n;
  while ((n = ::read(fd, &b, 1)) < 0 && errno == EINTR) {
  }
  return n == 1 ? static_cast<unsigned char>(b) : -1;
}

// The task side: echo `rounds` single bytes.
mpg::task<int> echo_bytes(mpg::net::tcp_stream* s, int rounds) {
  int echoed = 0;
  for (int r = 0; r < rounds; ++r) {
    char b = 0;
    auto n = co_await s->read(std::span<char>(&b, 1));
    if (!n.ok() || *n != 1) break;
    if (!(co_await s->write(std::string_view(&b, 1))).ok()) break;
    ++echoed;
  }
  co_return echoed;
}

struct echo_run {
  int echoed = 0;
  int answered = 0;
  std::uint64_t wakeups = 0;
};

// The plain thread writes a byte and waits (blocking read) for the echo, so
// each round the runtime has nothing to run until the byte arrives.
echo_run ping_pong_rounds(mpg::runtime& rt, int rounds) {
  echo_run out;
  rt.block_on([&]() -> mpg::task<void> {
    auto ln = mpg::net::listen("127.0.0.1:0");
    REQUIRE(ln.ok());
    auto accepting = mpg::spawn(ln->accept());
    std::atomic<int> answered{0};
    const std::uint16_t port = ln->port();
    int fd = -1;
    std::thread peer([&] {
      fd = connect_blocking(port);
    });
    auto s = co_await accepting;
    peer.join();
    REQUIRE(s.ok());
    // Warm up (Ms started, rings armed), then count.
    auto warm = mpg::spawn(echo_bytes(&*s, 20));
    for (int r = 0; r < 20; ++r) {
      REQUIRE(write_byte(fd, 'w'));
      REQUIRE(read_byte(fd) == 'w');
    }
    CHECK(co_await warm == 20);
    const std::uint64_t wakeups0 = rt.stats().wakeups;
    auto echo = mpg::spawn(echo_bytes(&*s, rounds));
    std::thread pinger([&] {
      for (int r = 0; r < rounds; ++r) {
        const char b = static_cast<char>('a' + r % 26);
        if (!write_byte(fd, b) || read_byte(fd) != static_cast<unsigned char>(b)) break;
        answered.fetch_add(1, std::memory_order_relaxed);
      }
    });
    out.echoed = co_await echo;
    pinger.join();
    out.wakeups = rt.stats().wakeups - wakeups0;
    out.answered = answered.load(std::memory_order_relaxed);
    ::close(fd);
  }());
  return out;
}

}  // namespace

TEST_CASE("a completion reaped by a ring-sleeping M wakes no other M for its one G") {
  mpg_test::watchdog dog(60s, "reap_wake ping-pong");
  mpg::runtime rt(mpg::runtime_options{.procs = 2});
  constexpr int kRounds = 400;
  const echo_run run = ping_pong_rounds(rt, kRounds);
  REQUIRE(run.echoed == kRounds);
  REQUIRE(run.answered == kRounds);
  MESSAGE("Ms woken over " << kRounds << " rounds: " << run.wakeups);
  CHECK(run.wakeups < kRounds / 10);
}
