// test/io_submit_tests.cpp: mpg::io::submit, any io_uring operation as an
// awaitable: NOP, reads and writes on a pipe, a kernel timeout, deadlines by
// link timeout, link flags from the callback ignored, many tasks
// submitting at once on several Ps, and what io::submit refuses or repairs:
// a callback that leaves the SQE blank, link flags, IOSQE_IO_DRAIN,
// IOSQE_CQE_SKIP_SUCCESS, IOSQE_BUFFER_SELECT, multishot operations,
// MSG_RING, updates by TIMEOUT_REMOVE and POLL_REMOVE, cancels of any
// request or of an opcode's, a callback that throws.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mpg/io.hpp>
#include <mpg/mpg.hpp>
#include <mpg/net.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "stream_pair.hpp"
#include "watchdog.hpp"

namespace {
using namespace std::chrono_literals;
using mpg::task;
using clock_type = std::chrono::steady_clock;

struct pipe_fds {
  int rd = -1, wr = -1;
  pipe_fds() {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    rd = fds[0];
    wr = fds[1];
  }
  ~pipe_fds() {
    ::close(rd);
    ::close(wr);
  }
  // unread(): how many bytes wait in the pipe.
  int unread() const {
    int n = -1;
    REQUIRE(::ioctl(rd, FIONREAD, &n) == 0);
    return n;
  }
};
}  // namespace

TEST_CASE("submit with a NOP returns 0") {
  mpg::runtime rt({.procs = 1});
  int res = rt.block_on([]() -> task<int> {
    co_return co_await mpg::io::submit([](io_uring_sqe* sqe) { io_uring_prep_nop(sqe); });
  }());
  CHECK(res == 0);
}

TEST_CASE("submit carries a write and a read through a pipe") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    pipe_fds p;
    char out[] = "hello";
    int w = co_await mpg::io::submit([&](io_uring_sqe* sqe) {
      io_uring_prep_write(sqe, p.wr, out, 5, 0);
    });
    CHECK(w == 5);
    char in[8] = {};
    int r = co_await mpg::io::submit([&](io_uring_sqe* sqe) {
      io_uring_prep_read(sqe, p.rd, in, sizeof in, 0);
    });
    CHECK(r == 5);
    CHECK(std::string_view(in, 5) == "hello");
    // A bad fd is a negative errno, not an exception.
    int bad = co_await mpg::io::submit([&](io_uring_sqe* sqe) {
      io_uring_prep_read(sqe, -1, in, sizeof in, 0);
    });
    CHECK(bad == -EBADF);
  }());
}

TEST_CASE("a kernel timeout op completes with -ETIME no earlier than asked") {
  mpg::runtime rt({.procs = 1});
  rt.block_on([]() -> task<void> {
    __kernel_timespec ts{.tv_sec = 0, .tv_nsec = 20'000'000};
    auto t0 = clock_type::now();
    int res =
        co_await mpg::io::submit([&](io_uring_sqe* sqe) { io_uring_prep_timeout(sqe, &ts, 0, 0); });
    CHECK(res == -ETIME);
    CHECK(clock_type::now() - t0 >= 20ms);
  }());
}

TEST_CASE("a deadline cancels the op by link timeout: -ETIME; a met deadline keeps the result") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    pipe_fds p;
    char in[8];
    auto t0 = clock_type::now();
    int res = co_await mpg::io::submit(
        [&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, p.rd, in, sizeof in, 0); }, 25ms);
    CHECK(res == -ETIME);
    CHECK(clock_type::now() - t0 >= 25ms);
    REQUIRE(::write(p.wr, "ab", 2) == 2);
    res = co_await mpg::io::submit(
        [&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, p.rd, in, sizeof in, 0); },
        clock_type::now() + 10s);
    CHECK(res == 2);
    // Already past: not submitted at all.
    res = co_await mpg::io::submit([&](io_uring_sqe* sqe) { io_uring_prep_nop(sqe); }, t0);
    CHECK(res == -ETIME);
  }());
}

TEST_CASE("a huge timeout saturates: the op is not timed out at once") {
  mpg::runtime rt({.procs = 1});
  int r = rt.block_on([]() -> mpg::task<int> {
    co_return co_await mpg::io::submit([](io_uring_sqe* s) { io_uring_prep_nop(s); },
                                       std::chrono::nanoseconds::max());
  }());
  CHECK(r == 0);  // not -ETIME
}

TEST_CASE("link flags set by the callback are ignored") {
  mpg::runtime rt({.procs = 1});
  rt.block_on([]() -> task<void> {
    int res = co_await mpg::io::submit([](io_uring_sqe* sqe) {
      io_uring_prep_nop(sqe);
      sqe->flags |= IOSQE_IO_LINK;
    });
    CHECK(res == 0);
    // Were the link kept, this op would be chained to (and fail with) the one above.
    res = co_await mpg::io::submit([](io_uring_sqe* sqe) { io_uring_prep_nop(sqe); });
    CHECK(res == 0);
  }());
}

TEST_CASE("IOSQE_CQE_SKIP_SUCCESS from the callback is cleared: the op's CQE comes") {
  // Were it kept, the NOP's success would post no CQE and the task would
  // wait for ever: the watchdog ends that.
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog dog(10s, "a NOP whose CQE was skipped", &rt);
  int res = rt.block_on([]() -> task<int> {
    co_return co_await mpg::io::submit([](io_uring_sqe* sqe) {
      io_uring_prep_nop(sqe);
      sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    });
  }());
  CHECK(res == 0);
}

TEST_CASE("many tasks on several Ps submit at once") {
  mpg::runtime rt({.procs = 2});
  int total = rt.block_on([]() -> task<int> {
    constexpr int kTasks = 200, kOps = 100;
    std::vector<mpg::join_handle<int>> hs;
    for (int t = 0; t < kTasks; ++t) {
      hs.push_back(mpg::spawn([]() -> task<int> {
        int ok = 0;
        for (int i = 0; i < kOps; ++i) {
          int r = co_await mpg::io::submit([](io_uring_sqe* sqe) { io_uring_prep_nop(sqe); });
          ok += r == 0;
        }
        co_return ok;
      }()));
    }
    int sum = 0;
    for (auto& h : hs) sum += co_await h;
    co_return sum;
  }());
  CHECK(total == 200 * 100);
}

TEST_CASE("an op submitted by an M that then blocks in mpg::blocking still completes") {
  // procs = 1: the reader submits on M1; the blocker then holds M1 in a
  // blocking call (the P moves to another M) until the reader has finished.
  // io_uring runs the read's completion as task_work of M1, the submitter:
  // it must interrupt M1's (interruptible) wait. A stuck completion would
  // deadlock this test.
  mpg::runtime rt({.procs = 1});
  rt.block_on([]() -> task<void> {
    pipe_fds p;
    std::promise<void> read_done;
    std::future<void> read_done_f = read_done.get_future();
    std::atomic<bool> reader_parked{false};
    auto reader = mpg::spawn([](int fd, std::promise<void>& done,
                                std::atomic<bool>& parked) -> task<int> {
      char in[4];
      parked.store(true);
      int r = co_await mpg::io::submit(
          [&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, fd, in, sizeof in, 0); });
      done.set_value();
      co_return r;
    }(p.rd, read_done, reader_parked));
    while (!reader_parked.load()) co_await mpg::yield();
    co_await mpg::yield();  // the reader's SQE is flushed by this M before we block
    auto blocker = mpg::spawn([](std::future<void>& f) -> task<void> {
      co_await mpg::blocking([&] { f.wait(); });
    }(read_done_f));
    co_await mpg::yield();
    REQUIRE(::write(p.wr, "ok", 2) == 2);
    CHECK(co_await reader == 2);
    co_await blocker;
  }());
}

TEST_CASE("a callback that writes nothing submits a NOP, not the last SQE of its slot") {
  // A ring of 4 SQEs, every slot last holding a one-byte read of the pipe:
  // the blank callback must not re-run one of them (which would take the Z).
  mpg::runtime rt({.procs = 1, .ring_entries = 4});
  rt.block_on([]() -> task<void> {
    pipe_fds p;
    char in[16] = {};
    REQUIRE(::write(p.wr, "0123456789abcdef", 16) == 16);
    for (int i = 0; i < 16; ++i) {
      int r = co_await mpg::io::submit([&](io_uring_sqe* sqe) {
        io_uring_prep_read(sqe, p.rd, &in[i], 1, 0);
      });
      REQUIRE(r == 1);
    }
    CHECK(std::string_view(in, 16) == "0123456789abcdef");
    REQUIRE(::write(p.wr, "Z", 1) == 1);
    int r = co_await mpg::io::submit([](io_uring_sqe*) {}, 200ms);
    CHECK(r == 0);
    CHECK(p.unread() == 1);
  }());
}

TEST_CASE("IOSQE_IO_DRAIN from the callback is cleared: it does not wait for other tasks' ops") {
  // procs = 1: A's read of an empty pipe is on the one ring before B's NOP.
  // A drained NOP would wait for A's read, which waits for the test's write,
  // which waits for the NOP: the watchdog ends that.
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog dog(10s, "a drained NOP waits for an unrelated read", &rt);
  rt.block_on([]() -> task<void> {
    pipe_fds p;
    std::atomic<bool> a_started{false}, a_done{false};
    auto a = mpg::spawn([](int fd, std::atomic<bool>& started,
                           std::atomic<bool>& done) -> task<int> {
      char in[4];
      started.store(true);
      int r = co_await mpg::io::submit([&](io_uring_sqe* sqe) {
        io_uring_prep_read(sqe, fd, in, sizeof in, 0);
      });
      done.store(true);
      co_return r;
    }(p.rd, a_started, a_done));
    while (!a_started.load()) co_await mpg::yield();
    int b = co_await mpg::io::submit([](io_uring_sqe* sqe) {
      io_uring_prep_nop(sqe);
      sqe->flags |= IOSQE_IO_DRAIN;
    });
    CHECK(b == 0);
    CHECK(!a_done.load());
    REQUIRE(::write(p.wr, "ok", 2) == 2);
    CHECK(co_await a == 2);
  }());
}

TEST_CASE("IOSQE_BUFFER_SELECT is refused: -EINVAL, the runtime's provided buffers untouched") {
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog dog(10s, "a recv with IOSQE_BUFFER_SELECT", &rt);
  rt.block_on([]() -> task<void> {
    // A receive() creates the P's ring of provided buffers (group 0).
    mpg_test::stream_pair p = co_await mpg_test::connect_pair();
    REQUIRE((co_await p.server.write(std::string_view("a"))).ok());
    auto got = co_await p.client.receive();
    REQUIRE(got.ok());
    CHECK(got->view() == "a");
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    REQUIRE(::write(sv[1], "b", 1) == 1);
    int r = co_await mpg::io::submit(
        [&](io_uring_sqe* sqe) {
          io_uring_prep_recv(sqe, sv[0], nullptr, 16, 0);
          sqe->flags |= IOSQE_BUFFER_SELECT;
          sqe->buf_group = 0;
        },
        2s);
    CHECK(r == -EINVAL);
    char c = 0;
    CHECK(::recv(sv[0], &c, 1, MSG_DONTWAIT) == 1);  // not submitted: the byte is still there
    CHECK(c == 'b');
    ::close(sv[0]);
    ::close(sv[1]);
  }());
}

TEST_CASE("multishot operations are refused at once: -EINVAL") {
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog dog(20s, "a multishot op through io::submit", &rt);
  rt.block_on([]() -> task<void> {
    auto ln = mpg::net::listen("127.0.0.1:0");
    REQUIRE(ln.ok());
    // A connection waits in the backlog: a multishot accept would take it
    // and post its fd with IORING_CQE_F_MORE, then wait for more.
    int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(c >= 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(ln->port());
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(c, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    const int lfd = ln->native_handle();
    auto t0 = clock_type::now();
    int r = co_await mpg::io::submit(
        [&](io_uring_sqe* sqe) { io_uring_prep_multishot_accept(sqe, lfd, nullptr, nullptr, 0); },
        2s);
    CHECK(r == -EINVAL);
    pipe_fds p;
    REQUIRE(::write(p.wr, "x", 1) == 1);
    r = co_await mpg::io::submit(
        [&](io_uring_sqe* sqe) { io_uring_prep_poll_multishot(sqe, p.rd, POLLIN); }, 2s);
    CHECK(r == -EINVAL);
    __kernel_timespec ts{.tv_sec = 0, .tv_nsec = 1'000'000};
    r = co_await mpg::io::submit(
        [&](io_uring_sqe* sqe) { io_uring_prep_timeout(sqe, &ts, 0, 1U << 6); }, 2s);
    CHECK(r == -EINVAL);  // IORING_TIMEOUT_MULTISHOT (Linux 6.4)
    CHECK(clock_type::now() - t0 < 1s);
    // The connection is still in the backlog for a plain accept.
    int a = co_await mpg::io::submit(
        [&](io_uring_sqe* sqe) { io_uring_prep_accept(sqe, lfd, nullptr, nullptr, 0); }, 2s);
    CHECK(a >= 0);
    if (a >= 0) ::close(a);
    ::close(c);
  }());
}

// IORING_OP_PIPE (Linux 6.16) writes two new fds into the caller's memory.
TEST_CASE("IORING_OP_PIPE is refused: -EINVAL, no fds made") {
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog dog(20s, "a PIPE through io::submit", &rt);
  rt.block_on([]() -> task<void> {
    int fds[2] = {-1, -1};
    int r = co_await mpg::io::submit(
        [&](io_uring_sqe* sqe) {
          io_uring_prep_nop(sqe);
          sqe->opcode = 62;  // IORING_OP_PIPE
          sqe->fd = 0;
          sqe->addr = reinterpret_cast<std::uint64_t>(fds);
        },
        2s);
    CHECK(r == -EINVAL);
    CHECK(fds[0] == -1);
    CHECK(fds[1] == -1);
    for (int fd : fds)
      if (fd >= 0) ::close(fd);
  }());
}

TEST_CASE("a cancel of any request, and buffers of the runtime's group, are refused") {
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog dog(20s, "refused io::submit ops", &rt);
  rt.block_on([]() -> task<void> {
    int r = co_await mpg::io::submit([](io_uring_sqe* sqe) {
      io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
    });
    CHECK(r == -EINVAL);
    static char bufs[4][64];
    r = co_await mpg::io::submit([](io_uring_sqe* sqe) {
      io_uring_prep_provide_buffers(sqe, bufs, 64, 4, /*bgid=*/0, /*bid=*/0);
    });
    CHECK(r == -EINVAL);
    r = co_await mpg::io::submit(
        [](io_uring_sqe* sqe) { io_uring_prep_remove_buffers(sqe, 4, 0); });
    CHECK(r == -EINVAL);
    // Another group is the caller's own business.
    r = co_await mpg::io::submit([](io_uring_sqe* sqe) {
      io_uring_prep_provide_buffers(sqe, bufs, 64, 4, /*bgid=*/7, /*bid=*/0);
    });
    CHECK(r == 0);
    r = co_await mpg::io::submit(
        [](io_uring_sqe* sqe) { io_uring_prep_remove_buffers(sqe, 4, 7); });
    CHECK(r == 4);
  }());
}

TEST_CASE("IORING_OP_MSG_RING is refused: -EINVAL, and no CQE reaches its target ring") {
  // The target here is a ring of the test's own; one of the runtime's would
  // take the posted user_data for the address of one of its records.
  io_uring target;
  REQUIRE(io_uring_queue_init(4, &target, 0) == 0);
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog dog(10s, "a MSG_RING through io::submit", &rt);
  const int target_fd = target.ring_fd;
  int r = rt.block_on([target_fd]() -> task<int> {
    co_return co_await mpg::io::submit([target_fd](io_uring_sqe* sqe) {
      io_uring_prep_msg_ring(sqe, target_fd, /*len=*/7, /*data=*/0x5eed0, 0);
    });
  }());
  CHECK(r == -EINVAL);
  io_uring_cqe* cqe = nullptr;
  CHECK(io_uring_peek_cqe(&target, &cqe) == -EAGAIN);  // nothing was posted
  io_uring_queue_exit(&target);
}

TEST_CASE("an update by TIMEOUT_REMOVE or POLL_REMOVE is refused: another task's deadline holds") {
  // procs = 1: the reader's read and its link timeout are on the one ring,
  // ahead of the update. The runtime's link timeouts all carry user_data 1
  // (reactor.cpp's kIgnoreTag): an update of "1" would move the reader's
  // deadline an hour away.
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog dog(20s, "a deadline moved by TIMEOUT_REMOVE", &rt);
  rt.block_on([]() -> task<void> {
    pipe_fds p;
    std::atomic<bool> started{false}, done{false};
    auto reader = mpg::spawn([](int fd, std::atomic<bool>& started,
                                std::atomic<bool>& done) -> task<int> {
      char in[4];
      started.store(true);
      int r = co_await mpg::io::submit(
          [&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, fd, in, sizeof in, 0); }, 300ms);
      done.store(true);
      co_return r;
    }(p.rd, started, done));
    while (!started.load()) co_await mpg::yield();
    __kernel_timespec later{.tv_sec = 3600, .tv_nsec = 0};
    int r = co_await mpg::io::submit([&](io_uring_sqe* sqe) {
      io_uring_prep_timeout_update(sqe, &later, /*user_data=*/1, IORING_LINK_TIMEOUT_UPDATE);
    });
    CHECK(r == -EINVAL);
    const auto give_up = clock_type::now() + 5s;
    while (!done.load() && clock_type::now() < give_up) co_await mpg::yield();
    if (!done.load()) REQUIRE(::write(p.wr, "ab", 2) == 2);  // let it end
    CHECK(co_await reader == -ETIME);  // its deadline fired
    // Updates of anything else are refused alike; plain removals go to the
    // kernel (which finds nothing here).
    r = co_await mpg::io::submit([&](io_uring_sqe* sqe) {
      io_uring_prep_timeout_update(sqe, &later, /*user_data=*/0x5eed0, 0);
    });
    CHECK(r == -EINVAL);
    r = co_await mpg::io::submit([](io_uring_sqe* sqe) {
      io_uring_prep_poll_update(sqe, /*old_user_data=*/0x5eed0, /*new_user_data=*/0x5eed8, POLLIN,
                                IORING_POLL_UPDATE_EVENTS | IORING_POLL_UPDATE_USER_DATA);
    });
    CHECK(r == -EINVAL);
    r = co_await mpg::io::submit([](io_uring_sqe* sqe) {
      io_uring_prep_poll_update(sqe, 0x5eed0, 0x5eed8, 0, IORING_POLL_UPDATE_USER_DATA);
    });
    CHECK(r == -EINVAL);
    r = co_await mpg::io::submit(
        [](io_uring_sqe* sqe) { io_uring_prep_timeout_remove(sqe, 0x5eed0, 0); });
    CHECK(r == -ENOENT);
    r = co_await mpg::io::submit(
        [](io_uring_sqe* sqe) { io_uring_prep_poll_remove(sqe, 0x5eed0); });
    CHECK(r == -ENOENT);
  }());
}

TEST_CASE("a cancel of every op of an opcode is refused; one narrowed by fd is the caller's") {
  // procs = 1: the reader's read is on the one ring, ahead of the cancels.
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog dog(20s, "a cancel by opcode", &rt);
  rt.block_on([]() -> task<void> {
    pipe_fds p;
    std::atomic<bool> started{false};
    auto reader = mpg::spawn([](int fd, std::atomic<bool>& started) -> task<int> {
      char in[4];
      started.store(true);
      co_return co_await mpg::io::submit(
          [&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, fd, in, sizeof in, 0); });
    }(p.rd, started));
    while (!started.load()) co_await mpg::yield();
    constexpr unsigned kCancelOp = 1U << 5;  // IORING_ASYNC_CANCEL_OP (Linux 6.6)
    // Every READ on the ring: the runtime's wake reads and the reader's.
    int r = co_await mpg::io::submit([](io_uring_sqe* sqe) {
      io_uring_prep_cancel64(sqe, 0, kCancelOp | IORING_ASYNC_CANCEL_ALL);
      sqe->len = IORING_OP_READ;
    });
    CHECK(r == -EINVAL);
    // Narrowed to the pipe's fd: the reader's read, which ends with -ECANCELED.
    const int rd = p.rd;
    r = co_await mpg::io::submit([rd](io_uring_sqe* sqe) {
      io_uring_prep_cancel64(sqe, 0, kCancelOp | IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL);
      sqe->fd = rd;
      sqe->len = IORING_OP_READ;
    });
    CHECK(r == 1);
    CHECK(co_await reader == -ECANCELED);
  }());
}

TEST_CASE("a callback that throws: co_await rethrows, nothing is submitted, the runtime goes on") {
  mpg::runtime rt({.procs = 1});
  rt.block_on([]() -> task<void> {
    pipe_fds p;
    for (int with_deadline = 0; with_deadline < 2; ++with_deadline) {
      auto prep = [&](io_uring_sqe* sqe) {
        io_uring_prep_write(sqe, p.wr, "x", 1, 0);
        throw std::runtime_error("prep failed");
      };
      std::string what;
      try {
        if (with_deadline) (void)co_await mpg::io::submit(prep, 2s);
        else (void)co_await mpg::io::submit(prep);
      } catch (const std::runtime_error& e) {
        what = e.what();
      }
      CHECK(what == "prep failed");
    }
    std::string what;
    try {
      auto [ctx, cancel] = mpg::with_cancel(mpg::background());
      (void)co_await mpg::io::submit(
          [](io_uring_sqe*) { throw std::runtime_error("prep failed in a context"); }, ctx);
    } catch (const std::runtime_error& e) {
      what = e.what();
    }
    CHECK(what == "prep failed in a context");
    CHECK(p.unread() == 0);
    int r = co_await mpg::io::submit([&](io_uring_sqe* sqe) {
      io_uring_prep_write(sqe, p.wr, "y", 1, 0);
    });
    CHECK(r == 1);
    CHECK(p.unread() == 1);
  }());
}
