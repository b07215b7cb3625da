// test/io_submit_tests.cpp: mpg::io::submit, any io_uring operation as an
// awaitable: NOP, reads and writes on a pipe, a kernel timeout, deadlines by
// link timeout, link flags from the callback ignored, and many tasks
// submitting at once on several Ps.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <mpg/io.hpp>
#include <mpg/mpg.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <string_view>
#include <vector>

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
    int res = co_await mpg::io::submit([&](io_uring_sqe* sqe) { io_uring_prep_timeout(sqe, &ts, 0, 0); });
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
    auto reader = mpg::spawn([](int fd, std::promise<void>& done, std::atomic<bool>& parked) -> task<int> {
      char in[4];
      parked.store(true);
      int r = co_await mpg::io::submit([&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, fd, in, sizeof in, 0); });
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
