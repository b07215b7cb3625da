// test/fd_result_tests.cpp: a file descriptor that an operation makes is
// never lost. An open (openat) or accept whose result is not read, because
// ~runtime destroys its task after the op completed, closes the new fd
// (lib/io/fd_awaiter.hpp), as does a dial killed with its socket made and
// its connect in flight; an accept that completes although its context was
// cancelled first returns the connection. The same holds for io::submit with
// an opcode that makes an fd (ACCEPT, OPENAT), and an io::submit whose result
// is not an fd (a write's byte count, a refused SQE's NOP) closes nothing.
//
// The shutdown cases put the op's completion where no task can take it. The
// runtime has one P. The op's task parks in the op; hold_p() then runs on
// the P, puts the P's ring's SQEs in the kernel, and holds the P without
// suspending until ~runtime has begun, so the M neither runs that task nor
// reaps for it; the op completes (a FIFO's writer end opened by the test,
// a connection waiting) and the test waits until the new fd shows in
// /proc/self/fd. ~runtime then stops the M, drains the ring (the op's CQE
// readies its task, which never runs again) and kills the task
// (lib/sched/shutdown.cpp, steps 3 and 6). An op that could complete at
// once (an accept with its connection waiting, a dial) stays in the SQ
// until hold_p() holds the P (the reactors' flushes are refused until then:
// g_flush_refuse_hook), so that the M's loop cannot reap it and run its
// task first. Each case counts the process's open fds before the runtime
// and after it.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mpg/fs.hpp>
#include <mpg/io.hpp>
#include <mpg/mpg.hpp>
#include <mpg/net.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <system_error>
#include <thread>

#include "io/reactor.hpp"
#include "sched/machine.hpp"
#include "sched/scheduler.hpp"
#include "temp_files.hpp"
#include "test_support.hpp"
#include "watchdog.hpp"

namespace {
using namespace std::chrono_literals;
using mpg::task;
using mpg_test::wait_until;

// open_fds(): the process's open file descriptors (the directory stream
// that reads them counts too, each time alike).
int open_fds() {
  int n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++n;
  REQUIRE_FALSE(ec);
  return n;
}

// fds_on(): the open file descriptors of the process on `path`.
int fds_on(const std::string& path) {
  int n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    std::error_code link_ec;
    if (std::filesystem::read_symlink(it->path(), link_ec) == path) ++n;
  }
  return n;
}

struct stage {
  std::atomic<bool> armed{false};    // the op's task is about to await it
  std::atomic<bool> holding{false};  // hold_p() holds the P, the op in the kernel
  std::atomic<bool> resumed{false};  // the op's task ran again: the case missed its aim
};

// Refuses the reactors' flushes while set (reactor.hpp, g_flush_refuse_hook).
// Relaxed: the test sets it before it starts its tasks (rt.go orders that),
// and the thread that clears it (hold_p's, the test task's) flushes next
// itself; a stale read elsewhere (sysmon) only puts a flush off.
std::atomic<bool> g_refuse{false};
bool refuse_while_set() { return g_refuse.load(std::memory_order_relaxed); }

// hold_p(): see the top of the file. It waits for `armed` with yields: on
// the one P it runs again only once the op's task has suspended, in its op.
// Its spin makes system calls (sched_yield), whose return runs the ring's
// task_work, so a completion the kernel posts that way (a connect woken by
// its peer) is posted while the P is held.
task<void> hold_p(stage* st) {
  while (!st->armed.load(std::memory_order_acquire)) co_await mpg::yield();
  g_refuse.store(false, std::memory_order_relaxed);
  mpg::detail::current_reactor()->flush();
  const mpg::detail::scheduler* s = mpg::detail::current_m()->sched;
  st->holding.store(true, std::memory_order_release);
  while (!s->stopping()) std::this_thread::yield();
}

task<void> open_fifo(std::string path, stage* st) {
  st->armed.store(true, std::memory_order_release);
  // O_CREAT sends the open to io-wq at once (io_cancel_tests.cpp), where it
  // waits for a writer.
  auto f = co_await mpg::fs::open(path, O_RDONLY | O_CREAT, 0600);
  st->resumed.store(true, std::memory_order_release);
}

task<void> accept_one(mpg::net::listener* ln, stage* st) {
  st->armed.store(true, std::memory_order_release);
  auto c = co_await ln->accept();
  st->resumed.store(true, std::memory_order_release);
}

task<void> dial_one(std::string address, stage* st) {
  st->armed.store(true, std::memory_order_release);
  auto c = co_await mpg::net::dial(address);
  st->resumed.store(true, std::memory_order_release);
}

// The io::submit counterparts of open_fifo and accept_one, and an op whose
// result (a write's byte count, `n`) is not an fd. The path and the buffer
// live in the frame, as io::submit asks.
task<void> submit_openat(std::string path, stage* st) {
  st->armed.store(true, std::memory_order_release);
  const int fd = co_await mpg::io::submit([&](io_uring_sqe* sqe) {
    io_uring_prep_openat(sqe, AT_FDCWD, path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
  });
  st->resumed.store(true, std::memory_order_release);
  if (fd >= 0) ::close(fd);
}

// bound: through the overload that takes a context (a live one).
task<void> submit_accept(int ln_fd, bool bound, stage* st) {
  auto [ctx, cancel] = mpg::with_cancel(mpg::background());
  auto prep = [&](io_uring_sqe* sqe) {
    io_uring_prep_accept(sqe, ln_fd, nullptr, nullptr, SOCK_CLOEXEC);
  };
  st->armed.store(true, std::memory_order_release);
  int fd = -1;
  if (bound)  // an if, not ?: (g++ 12 miscompiles co_await in a conditional expression)
    fd = co_await mpg::io::submit(prep, ctx);
  else
    fd = co_await mpg::io::submit(prep);
  st->resumed.store(true, std::memory_order_release);
  if (fd >= 0) ::close(fd);
}

task<void> submit_accept_multishot(int ln_fd, stage* st) {
  st->armed.store(true, std::memory_order_release);
  // Refused (-EINVAL): a NOP goes in its place and completes with 0.
  const int res = co_await mpg::io::submit([&](io_uring_sqe* sqe) {
    io_uring_prep_multishot_accept(sqe, ln_fd, nullptr, nullptr, SOCK_CLOEXEC);
  });
  st->resumed.store(true, std::memory_order_release);
  CHECK(res == -EINVAL);
}

task<void> submit_write(int fd, int n, stage* st) {
  st->armed.store(true, std::memory_order_release);
  std::string bytes(static_cast<std::size_t>(n), 'x');
  const int res = co_await mpg::io::submit([&](io_uring_sqe* sqe) {
    io_uring_prep_write(sqe, fd, bytes.data(), static_cast<unsigned>(n), 0);
  });
  st->resumed.store(true, std::memory_order_release);
  CHECK(res == n);
}

// connect_to(): a blocking client socket connected to 127.0.0.1:port, once
// the listener `ln_fd` has the connection queued (readable).
int connect_to(std::uint16_t port, int ln_fd) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) == 0);
  pollfd p{.fd = ln_fd, .events = POLLIN, .revents = 0};
  REQUIRE(::poll(&p, 1, 10'000) == 1);
  return fd;
}

// refusing_flushes: g_flush_refuse_hook installed for a scope, refusing
// from the start.
struct refusing_flushes {
  refusing_flushes() {
    g_refuse.store(true, std::memory_order_relaxed);
    mpg::detail::g_flush_refuse_hook.store(&refuse_while_set);
  }
  ~refusing_flushes() {
    mpg::detail::g_flush_refuse_hook.store(nullptr);
    g_refuse.store(false, std::memory_order_relaxed);
  }
};

// check_open_killed(): `opener` opens a FIFO, and its task is killed at
// shutdown once the open completed (hold_p keeps the one P from it): the
// fd it made is closed with its frame.
void check_open_killed(task<void> (*opener)(std::string, stage*), const char* name) {
  mpg_test::temp_dir dir("mpg_fdres");
  const std::string fifo = dir.path + "/fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const int before = open_fds();
  stage st;
  {
    mpg::runtime rt({.procs = 1});
    mpg_test::watchdog wd(30s, name, &rt);
    rt.go(opener(fifo, &st), name);
    rt.go(hold_p(&st), "hold_p");
    REQUIRE(wait_until([&] { return st.holding.load(std::memory_order_acquire); }));
    // A non-blocking open for writing fails (ENXIO) until a reader is in the
    // FIFO's open: then it succeeds and completes the reader's open.
    int w = -1;
    REQUIRE(wait_until([&] {
      w = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
      return w >= 0;
    }));
    // The task's fd is made (the io-wq worker installed it) beside ours.
    CHECK(wait_until([&] { return fds_on(fifo) == 2; }));
    ::close(w);
  }
  CHECK_FALSE(st.resumed.load());
  CHECK(fds_on(fifo) == 0);
  CHECK(open_fds() == before);
}

// check_accept_killed(): the task that make_acceptor(&st) makes accepts a
// queued connection on ln, and is killed at shutdown once the accept
// completed (flushes refused until hold_p's): the fd it made is closed.
template <class MakeAcceptor>
void check_accept_killed(mpg::net::listener& ln, MakeAcceptor make_acceptor, const char* name) {
  const int client = connect_to(ln.port(), ln.native_handle());
  const int before = open_fds();
  stage st;
  {
    mpg::runtime rt({.procs = 1});
    const int with_rt = open_fds();
    mpg_test::watchdog wd(30s, name, &rt);
    refusing_flushes refusing;
    rt.go(make_acceptor(&st), name);
    rt.go(hold_p(&st), "hold_p");
    REQUIRE(wait_until([&] { return st.holding.load(std::memory_order_acquire); }));
    // hold_p's flush issued the accept, which took the queued connection.
    CHECK(wait_until([&] { return open_fds() == with_rt + 1; }));
  }
  CHECK_FALSE(st.resumed.load());
  CHECK(open_fds() == before);
  ::close(client);
}

}  // namespace

TEST_CASE("an open whose task is killed at shutdown after the open completed closes its fd") {
  check_open_killed(open_fifo, "open_fifo");
}

TEST_CASE("an accept whose task is killed at shutdown after the accept completed closes its fd") {
  auto ln = mpg::net::listen("127.0.0.1:0");
  REQUIRE(ln.ok());
  check_accept_killed(*ln, [&](stage* st) { return accept_one(&*ln, st); }, "accept_one");
}

TEST_CASE("a dial whose task is killed at shutdown closes its socket") {
  auto ln = mpg::net::listen("127.0.0.1:0");
  REQUIRE(ln.ok());
  const int before = open_fds();
  stage st;
  {
    mpg::runtime rt({.procs = 1});
    const int with_rt = open_fds();
    mpg_test::watchdog wd(30s, "dial at shutdown", &rt);
    refusing_flushes refusing;
    rt.go(dial_one(ln->address(), &st), "dial_one");
    rt.go(hold_p(&st), "hold_p");
    REQUIRE(wait_until([&] { return st.holding.load(std::memory_order_acquire); }));
    // The dial's socket, its connect issued by hold_p's flush (its result,
    // whenever it comes, goes to no task).
    CHECK(open_fds() == with_rt + 1);
  }
  CHECK_FALSE(st.resumed.load());
  CHECK(open_fds() == before);
}

TEST_CASE("an accept that completes after its context was cancelled returns the connection") {
  // The accept waits in the SQ (flushes refused) while its context is
  // cancelled: the cancel records the stop and queues its ASYNC_CANCEL
  // behind the accept. The next flush issues the accept, which takes the
  // queued connection (res >= 0), and then the cancel, which finds it done.
  auto ln = mpg::net::listen("127.0.0.1:0");
  REQUIRE(ln.ok());
  const int client = connect_to(ln->port(), ln->native_handle());
  const int before = open_fds();
  {
    mpg::runtime rt({.procs = 1});
    mpg_test::watchdog wd(30s, "accept with a late cancel", &rt);
    refusing_flushes refusing;
    rt.block_on([](mpg::net::listener* ln) -> task<void> {
      auto [ctx, cancel] = mpg::with_cancel(mpg::background());
      auto h = mpg::spawn(ln->accept(ctx));
      while (!ln->accept_pending()) co_await mpg::yield();
      cancel();
      g_refuse.store(false, std::memory_order_relaxed);
      absl::StatusOr<mpg::net::tcp_stream> c = co_await h;
      REQUIRE(c.ok());
      CHECK(c->is_open());
      CHECK(ctx.cancelled());
    }(&*ln));
  }
  CHECK(open_fds() == before);
  ::close(client);
}

TEST_CASE("an io::submit openat whose task is killed at shutdown once it completed closes its fd") {
  check_open_killed(submit_openat, "submit_openat");
}

TEST_CASE("an io::submit accept whose task is killed at shutdown once it completed closes its fd") {
  auto ln = mpg::net::listen("127.0.0.1:0");
  REQUIRE(ln.ok());
  for (const bool bound : {false, true}) {
    CAPTURE(bound);
    check_accept_killed(
        *ln, [&](stage* st) { return submit_accept(ln->native_handle(), bound, st); },
        "submit_accept");
  }
}

TEST_CASE("an io::submit whose result is no fd closes nothing when its task is killed unread") {
  // A write of `held` bytes completes with the number of an fd the test
  // holds; a refused multishot accept's NOP with 0, which fd 0 is (opened
  // here on /dev/null if the test runs without one). Both stay open.
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  const int opened0 = ::fcntl(0, F_GETFD) == -1 ? ::open("/dev/null", O_RDONLY) : -1;
  REQUIRE(::fcntl(0, F_GETFD) != -1);
  const int held = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  REQUIRE(held > 0);
  REQUIRE(held < 4096);  // the pipe takes it at once
  auto ln = mpg::net::listen("127.0.0.1:0");
  REQUIRE(ln.ok());
  const int before = open_fds();
  stage st_write, st_refused;
  {
    mpg::runtime rt({.procs = 1});
    mpg_test::watchdog wd(30s, "no fd at shutdown", &rt);
    refusing_flushes refusing;
    rt.go(submit_write(fds[1], held, &st_write), "submit_write");
    rt.go(hold_p(&st_write), "hold_p");
    REQUIRE(wait_until([&] { return st_write.holding.load(std::memory_order_acquire); }));
    // The write completed (its bytes are in the pipe), its task never ran.
    int queued = 0;
    CHECK(wait_until([&] {
      return ::ioctl(fds[0], FIONREAD, &queued) == 0 && queued == held;
    }));
  }
  {
    mpg::runtime rt({.procs = 1});
    mpg_test::watchdog wd(30s, "refused at shutdown", &rt);
    refusing_flushes refusing;
    rt.go(submit_accept_multishot(ln->native_handle(), &st_refused), "submit_refused");
    rt.go(hold_p(&st_refused), "hold_p");
    REQUIRE(wait_until([&] { return st_refused.holding.load(std::memory_order_acquire); }));
  }
  CHECK_FALSE(st_write.resumed.load());
  CHECK_FALSE(st_refused.resumed.load());
  CHECK(::fcntl(held, F_GETFD) != -1);
  CHECK(::fcntl(0, F_GETFD) != -1);
  CHECK(open_fds() == before);
  ::close(held);
  if (opened0 >= 0) ::close(opened0);
  ::close(fds[0]);
  ::close(fds[1]);
}
