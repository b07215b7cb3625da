// test/io_edge_tests.cpp: the I/O API on bad and edge-case input: adopted
// descriptors that are not open or not sockets, a non-blocking open that
// would block, sizes past 32 bits, many iovecs, malformed addresses.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mpg/buffered.hpp>
#include <mpg/fs.hpp>
#include <mpg/io_error.hpp>
#include <mpg/mpg.hpp>
#include <mpg/net.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "stream_pair.hpp"
#include "temp_files.hpp"
#include "test_support.hpp"
#include "watchdog.hpp"

namespace {
using mpg::task;
using namespace std::chrono_literals;
}  // namespace

TEST_CASE("net: a stream adopting a descriptor that is not open reports EBADF, not 'closed'") {
  mpg::runtime rt({.procs = 1});
  rt.block_on([]() -> task<void> {
    // A number that names no open file: far above what the process opens
    // (a freed low number could be taken at once by another thread).
    int bad = 4000;
    while (::fcntl(bad, F_GETFD) != -1) ++bad;
    {
      mpg::net::tcp_stream s(bad);
      char buf[8];
      auto r = co_await s.read(std::span<char>(buf));
      CHECK(!r.ok());
      CHECK(mpg::errno_of(r.status()) == EBADF);
      CHECK(!mpg::net::is_closed(r.status()));
      (void)s.native_handle();
    }
    {
      mpg::net::tcp_stream s(bad);
      auto r = co_await s.receive();
      INFO(r.status());
      CHECK(!r.ok());
      CHECK(mpg::errno_of(r.status()) == EBADF);
      CHECK(!mpg::net::is_closed(r.status()));
      // The stream is still open (we never closed it): a second receive
      // says the same.
      CHECK(s.is_open());
      auto r2 = co_await s.receive();
      INFO(r2.status());
      CHECK(mpg::errno_of(r2.status()) == EBADF);
      CHECK(!mpg::net::is_closed(r2.status()));
      // Stop the destructor closing a number someone else may get.
      (void)s.close();
    }
  }());
}

TEST_CASE("net: receive() on an adopted pipe reports ENOTSOCK with its errno") {
  mpg::runtime rt({.procs = 1});
  rt.block_on([]() -> task<void> {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    mpg::net::tcp_stream s(p[0]);
    auto r = co_await s.receive();
    INFO(r.status());
    CHECK(!r.ok());
    CHECK(mpg::errno_of(r.status()) == ENOTSOCK);
    char buf[4];
    auto r2 = co_await s.read(std::span<char>(buf));
    INFO(r2.status());
    CHECK(mpg::errno_of(r2.status()) == ENOTSOCK);
    ::close(p[1]);
  }());
}

TEST_CASE("fs: write_at of 5 GiB (past UINT32_MAX) to /dev/null writes it all") {
  const std::size_t n = (std::size_t{5} << 30) + 3;
  void* m = ::mmap(nullptr, n, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  REQUIRE(m != MAP_FAILED);
  mpg::runtime rt({.procs = 1});
  rt.block_on([](std::string_view data) -> task<void> {
    auto f = co_await mpg::fs::open("/dev/null", O_WRONLY);
    REQUIRE(f.ok());
    auto st = co_await f->write_at(data, 0);
    CHECK(st.ok());
  }(std::string_view(static_cast<const char*>(m), n)));
  ::munmap(m, n);
}

TEST_CASE("net: write_vectored of 3000 buffers across short sends arrives intact") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto pr = co_await mpg_test::connect_pair();
    std::vector<std::string> store;
    std::string expect;
    for (int i = 0; i < 3000; ++i) {
      std::string b(static_cast<std::size_t>((i * 37) % 1500 + (i % 7 == 0 ? 0 : 1)), '\0');
      for (std::size_t j = 0; j < b.size(); ++j) b[j] = static_cast<char>('A' + (i + j) % 53);
      if (i == 1500) b.assign(3 << 20, 'z');  // one large buffer in the middle
      expect += b;
      store.push_back(std::move(b));
    }
    std::vector<std::string_view> views(store.begin(), store.end());
    auto reader = mpg::spawn([](mpg::net::tcp_stream& s, std::size_t want) -> task<std::string> {
      std::string got;
      std::vector<char> buf(777);
      while (got.size() < want) {
        auto r = co_await s.read(std::span<char>(buf));
        REQUIRE(r.ok());
        if (*r == 0) break;
        got.append(buf.data(), *r);
      }
      co_return got;
    }(pr.server, expect.size()));
    auto st = co_await pr.client.write_vectored(std::span<const std::string_view>(views));
    CHECK(st.ok());
    auto got = co_await reader;
    CHECK(got.size() == expect.size());
    CHECK(got == expect);
  }());
}

TEST_CASE("malformed addresses are refused by dial, listen and listen_udp, never a crash") {
  mpg::runtime rt({.procs = 1});
  rt.block_on([]() -> task<void> {
    for (const char* a : {"", ":", "[", "]", "[]", "[::1]", "[::1]:", "[::1]80", "[::1]:65536",
                          "[::1]:-1", "127.0.0.1:", "127.0.0.1:1x", "::1:80", "[::1%]:80",
                          "[%eth0]:80", "unix:", "[::1]:80]", "1.2.3.4: 80"}) {
      auto d = co_await mpg::net::dial(a);
      INFO("dial ", a, ": ", d.status());
      CHECK(!d.ok());
      auto l = mpg::net::listen(a);
      INFO("listen ", a, ": ", l.status());
      CHECK(!l.ok());
      auto u = mpg::net::listen_udp(a);
      INFO("listen_udp ", a, ": ", u.status());
      CHECK(!u.ok());
    }
  }());
}

namespace {
// A 5 GiB sparse pattern: zero but for marks at chosen offsets (a private
// anonymous mapping: its unwritten pages are the shared zero page, so only
// the marked pages take memory).
struct big_pattern {
  std::size_t n = (std::size_t{5} << 30) + 3;
  char* p = nullptr;
  std::vector<std::size_t> marks;
  static char mark_of(std::size_t off) { return static_cast<char>((off * 131) % 251 + 1); }
  big_pattern() {
    void* m = ::mmap(nullptr, n, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    REQUIRE(m != MAP_FAILED);
    p = static_cast<char*>(m);
    const std::size_t g = std::size_t{1} << 30;
    for (std::size_t off : {std::size_t{0}, std::size_t{1}, g - 1, g, g + 1, 2 * g - 4097,
                            2 * g - 1, 2 * g, 4 * g - 1, 4 * g, 4 * g + 1, n - 1}) {
      p[off] = mark_of(off);
      marks.push_back(off);
    }
  }
  ~big_pattern() { ::munmap(p, n); }
};

// drain(): reads fd to EOF on a plain thread; returns the byte count and
// whether exactly the marks (at their offsets, with their values) were seen.
struct drained {
  std::size_t bytes = 0;
  std::size_t marks_ok = 0;
  std::size_t stray = 0;
};
drained drain(int fd, const big_pattern& bp) {
  drained d;
  std::vector<char> buf(1 << 20), zero(1 << 20);
  for (;;) {
    ssize_t r = ::read(fd, buf.data(), buf.size());
    if (r <= 0) break;
    const auto k = static_cast<std::size_t>(r);
    if (std::memcmp(buf.data(), zero.data(), k) != 0) {
      for (std::size_t i = 0; i < k; ++i) {
        if (buf[i] == 0) continue;
        const std::size_t off = d.bytes + i;
        bool is_mark = false;
        for (std::size_t m : bp.marks) is_mark |= (m == off && buf[i] == big_pattern::mark_of(off));
        if (is_mark) ++d.marks_ok; else ++d.stray;
      }
    }
    d.bytes += k;
  }
  return d;
}
}  // namespace

TEST_CASE("net: write and write_vectored of 5 GiB (past UINT32_MAX) arrive whole and in order") {
  big_pattern bp;
  for (int form : {0, 2}) {  // write; write_vectored cut in three
    CAPTURE(form);
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    drained d;
    std::thread reader([&] { d = drain(sv[1], bp); });
    {
      mpg::runtime rt({.procs = 1});
      mpg_test::watchdog wd(120s, "5 GiB write", &rt);
      rt.block_on([](int fd, const big_pattern& bp, int form) -> task<void> {
        mpg::net::tcp_stream s(fd);
        const std::string_view all(bp.p, bp.n);
        absl::Status st;
        if (form == 0) {
          st = co_await s.write(all);
        } else {
          const std::string_view three[3] = {all.substr(0, 5), all.substr(5, bp.n - 10),
                                             all.substr(bp.n - 5)};
          st = co_await s.write_vectored(std::span<const std::string_view>(three));
        }
        CHECK(st.ok());
      }(sv[0], bp, form));
    }
    reader.join();
    ::close(sv[1]);
    CHECK(d.bytes == bp.n);
    CHECK(d.marks_ok == bp.marks.size());
    CHECK(d.stray == 0);
  }
}

namespace {
// adopted_file_case(): runs `body` on a tcp_stream adopting a regular file
// (not a socket), under a watchdog: a hang fails the test.
template <class Body>
void adopted_file_case(const char* what, Body body) {
  mpg_test::temp_dir dir;
  const std::string path = dir.path + "/f";
  const int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog wd(10s, what, &rt);
  rt.block_on([](int fd, Body body) -> task<void> {
    mpg::net::tcp_stream s(fd);
    co_await body(s);
  }(fd, body));
}
}  // namespace

TEST_CASE("a tcp_stream adopting a regular file: read() reports ENOTSOCK, never spins") {
  adopted_file_case("read on a regular file", [](mpg::net::tcp_stream& s) -> task<void> {
    char buf[4];
    auto r = co_await s.read(std::span<char>(buf));
    INFO(r.status());
    CHECK(mpg::errno_of(r.status()) == ENOTSOCK);
    auto r2 = co_await s.read(std::span<char>(buf), std::chrono::steady_clock::now() + 1h);
    INFO(r2.status());
    CHECK(mpg::errno_of(r2.status()) == ENOTSOCK);
  });
}

TEST_CASE("a tcp_stream adopting a regular file: receive() reports ENOTSOCK, never spins") {
  adopted_file_case("receive on a regular file", [](mpg::net::tcp_stream& s) -> task<void> {
    auto r = co_await s.receive();
    INFO(r.status());
    CHECK(mpg::errno_of(r.status()) == ENOTSOCK);
    auto r2 = co_await s.receive();
    INFO(r2.status());
    CHECK(mpg::errno_of(r2.status()) == ENOTSOCK);
    char buf[4];
    auto r3 = co_await s.read(std::span<char>(buf));
    INFO(r3.status());
    CHECK(mpg::errno_of(r3.status()) == ENOTSOCK);
  });
}

TEST_CASE("a tcp_stream adopting a regular file: writes and the rest report ENOTSOCK") {
  adopted_file_case("write on a regular file", [](mpg::net::tcp_stream& s) -> task<void> {
    auto w = co_await s.write(std::string_view("abc"));
    CHECK(mpg::errno_of(w) == ENOTSOCK);
    std::vector<std::string> many(1500, "x");
    std::vector<std::string_view> views(many.begin(), many.end());
    auto wv = co_await s.write_vectored(std::span<const std::string_view>(views));
    CHECK(mpg::errno_of(wv) == ENOTSOCK);
    auto wv2 = co_await s.write_vectored(std::span<const std::string_view>(views).first(2));
    CHECK(mpg::errno_of(wv2) == ENOTSOCK);
    CHECK(mpg::errno_of(s.shutdown()) == ENOTSOCK);
    CHECK(mpg::errno_of(s.local_address().status()) == ENOTSOCK);
  });
}

TEST_CASE("a udp_socket adopting a regular file reports ENOTSOCK") {
  mpg_test::temp_dir dir;
  const std::string path = dir.path + "/f";
  const int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog wd(10s, "udp on a regular file", &rt);
  rt.block_on([](int fd) -> task<void> {
    mpg::net::udp_socket u(fd);
    char buf[4];
    auto r = co_await u.recv_from(std::span<char>(buf));
    CHECK(mpg::errno_of(r.status()) == ENOTSOCK);
    auto s = co_await u.send(std::string_view("x"));
    CHECK(mpg::errno_of(s) == ENOTSOCK);
    auto s2 = co_await u.send_to(std::string_view("x"), "127.0.0.1:9");
    INFO(s2);
    CHECK(!s2.ok());
  }(fd));
}

TEST_CASE("fs: open with O_NONBLOCK of a file under a lease fails with EAGAIN, not a busy retry") {
  mpg_test::temp_dir dir;
  const std::string path = dir.path + "/leased";
  const int holder = ::open(path.c_str(), O_CREAT | O_RDONLY | O_CLOEXEC, 0600);
  REQUIRE(holder >= 0);
  // The lease's holder is told of a break by SIGIO, whose default ends the process.
  struct sigaction ign {}, old {};
  ign.sa_handler = SIG_IGN;
  REQUIRE(::sigaction(SIGIO, &ign, &old) == 0);
  if (::fcntl(holder, F_SETLEASE, F_RDLCK) != 0) {
    MESSAGE("leases unavailable here: skipped");
    ::sigaction(SIGIO, &old, nullptr);
    ::close(holder);
    return;
  }
  // open(2) itself: EWOULDBLOCK at once.
  const int direct = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  const int direct_errno = errno;
  CHECK(direct == -1);
  CHECK(direct_errno == EWOULDBLOCK);
  // mpg's open the same, at once: a retry would spin until the kernel
  // breaks the lease (lease-break-time, 45 s by default), which the
  // watchdog turns into a failure first.
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog wd(30s, "non-blocking open under a lease", &rt);
  rt.block_on([](std::string path) -> task<void> {
    auto f = co_await mpg::fs::open(path, O_WRONLY | O_NONBLOCK);
    INFO(f.status());
    CHECK(!f.ok());
    CHECK(mpg::errno_of(f.status()) == EWOULDBLOCK);
  }(path));
  ::sigaction(SIGIO, &old, nullptr);
  ::close(holder);
}
