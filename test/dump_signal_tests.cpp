// runtime_options.dump_signal: on the signal, every task of the runtime is
// dumped to stderr and the program goes on; several runtimes may share the
// signal; the previous disposition comes back when the last one goes; a
// dump being written to stderr does not hold up a runtime's destruction,
// not even the last one's; a burst of signals during a dump is one dump.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "mpg/mpg.hpp"
#include "child_process.hpp"
#include "sched/dump_signal.hpp"
#include "stderr_capture.hpp"
#include "test_support.hpp"

namespace {

mpg::task<int> wait_for_value(mpg::chan<int> c) {
  auto v = co_await c.recv();
  co_return v ? *v : -1;
}

mpg::task<int> send_then_join(mpg::chan<int> c, mpg::join_handle<int> h) {
  co_await c.send(41);
  co_return co_await h + 1;
}

mpg::task<int> add_one(int x) { co_return x + 1; }

std::atomic<int> test_handler_calls{0};
extern "C" void test_handler(int) { test_handler_calls.fetch_add(1, std::memory_order_relaxed); }

using handler_t = void (*)(int);
handler_t current_handler(int sig) {
  struct sigaction cur;
  ::sigaction(sig, nullptr, &cur);
  return cur.sa_handler;
}
bool handler_is(int sig, handler_t h) { return current_handler(sig) == h; }

}  // namespace

TEST_CASE("dump_signal: the signal dumps the tasks to stderr and the runtime goes on") {
  mpg_test::stderr_capture cap;
  cap.echo_on_exit(true);
  mpg::runtime rt({.procs = 2, .dump_signal = SIGUSR1});
  mpg::chan<int> c;
  auto h = rt.spawn(wait_for_value(c), "sig-waiter");
  ::kill(::getpid(), SIGUSR1);
  // The dumper writes asynchronously: wait for its text (bounded).
  REQUIRE(cap.wait_for("(sig-waiter)"));
  CHECK(cap.count("task dump") == 1);
  // The runtime is unaffected: the waiter still receives, other work runs.
  CHECK(rt.block_on(send_then_join(c, std::move(h))) == 42);
  CHECK(rt.block_on(add_one(1)) == 2);
  // A second signal dumps again (the task above is gone, the header stays).
  ::kill(::getpid(), SIGUSR1);
  REQUIRE(cap.wait_for("task dump", 2));
  cap.echo_on_exit(false);
}

TEST_CASE("dump_signal: runtimes sharing the signal each dump; the old disposition returns") {
  struct sigaction mine;
  std::memset(&mine, 0, sizeof mine);
  mine.sa_handler = test_handler;
  sigemptyset(&mine.sa_mask);
  struct sigaction before;
  REQUIRE(::sigaction(SIGUSR2, &mine, &before) == 0);
  {
    mpg_test::stderr_capture cap;
    cap.echo_on_exit(true);
    mpg::chan<int> ca, cb;
    auto a =
        std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1, .dump_signal = SIGUSR2});
    auto ha = a->spawn(wait_for_value(ca), "in-runtime-a");
    {
      mpg::runtime b({.procs = 1, .dump_signal = SIGUSR2});
      auto hb = b.spawn(wait_for_value(cb), "in-runtime-b");
      CHECK(!handler_is(SIGUSR2, test_handler));
      ::kill(::getpid(), SIGUSR2);
      REQUIRE(cap.wait_for("(in-runtime-a)"));
      REQUIRE(cap.wait_for("(in-runtime-b)"));
      // b's task ends before b does (so no shutdown report names it).
      cb.close();
      CHECK(b.block_on(std::move(hb)) == -1);
    }
    // b is gone: the handler stays for a, and a dump shows only a.
    CHECK(!handler_is(SIGUSR2, test_handler));
    ::kill(::getpid(), SIGUSR2);
    REQUIRE(cap.wait_for("(in-runtime-a)", 2));
    CHECK(cap.count("(in-runtime-b)") == 1);
    ca.close();
    CHECK(a->block_on(std::move(ha)) == -1);
    a.reset();
    cap.echo_on_exit(false);
  }
  CHECK(handler_is(SIGUSR2, test_handler));
  CHECK(test_handler_calls.load() == 0);
  ::sigaction(SIGUSR2, &before, nullptr);
}

TEST_CASE("dump_signal: 0 installs nothing; an uncatchable signal is refused") {
  const handler_t before = current_handler(SIGUSR1);
  {
    mpg::runtime rt({.procs = 1});
    CHECK(handler_is(SIGUSR1, before));
  }
  CHECK_THROWS_AS(mpg::runtime({.procs = 1, .dump_signal = SIGKILL}), std::invalid_argument);
  // The registry is still usable after the refusal.
  mpg::runtime rt({.procs = 1, .dump_signal = SIGUSR1});
  CHECK(!handler_is(SIGUSR1, before));
  CHECK(rt.block_on(add_one(2)) == 3);
}

namespace {
// The moment of the test below: the dumper has built a dump's text and is
// about to write it to stderr, which blocks (as a pipe nobody reads would).
std::atomic<bool> dump_write_held{false};
std::atomic<bool> dump_write_released{false};
void hold_dump_write() {
  mpg::detail::g_dump_write_hook.store(nullptr, std::memory_order_relaxed);  // once
  dump_write_held.store(true);
  (void)mpg_test::wait_until([] { return dump_write_released.load(); }, std::chrono::seconds(60));
}
}  // namespace

TEST_CASE("dump_signal: a runtime is destroyed while a dump is being written to stderr") {
  mpg_test::stderr_capture cap;
  // keep shares the signal, so destroying rt is not the last unregistration
  // (that one also stops the dumper thread: the next test).
  mpg::runtime keep({.procs = 1, .dump_signal = SIGUSR2});
  auto rt =
      std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1, .dump_signal = SIGUSR2});
  mpg::detail::g_dump_write_hook.store(&hold_dump_write, std::memory_order_relaxed);
  ::kill(::getpid(), SIGUSR2);
  REQUIRE(mpg_test::wait_until([] { return dump_write_held.load(); }));
  std::atomic<bool> gone{false};
  std::thread destroyer([&] {
    rt.reset();
    gone.store(true);
  });
  // While the write is held (bounded well below the hook's own bound).
  CHECK(mpg_test::wait_until([&] { return gone.load(); }, std::chrono::seconds(10)));
  dump_write_released.store(true);
  destroyer.join();
  CHECK(cap.wait_for("task dump", 2));  // the held write went out: both runtimes' dumps
}

TEST_CASE("dump_signal: the last runtime is destroyed while a dump is being written to stderr") {
  mpg_test::stderr_capture cap;
  dump_write_held.store(false);
  dump_write_released.store(false);
  // The only runtime with a dump signal: its destruction stops the dumper.
  auto rt =
      std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1, .dump_signal = SIGUSR2});
  mpg::detail::g_dump_write_hook.store(&hold_dump_write, std::memory_order_relaxed);
  ::kill(::getpid(), SIGUSR2);
  REQUIRE(mpg_test::wait_until([] { return dump_write_held.load(); }));
  std::atomic<bool> gone{false};
  std::thread destroyer([&] {
    rt.reset();
    gone.store(true);
  });
  CHECK(mpg_test::wait_until([&] { return gone.load(); }, std::chrono::seconds(10)));
  dump_write_released.store(true);
  destroyer.join();
  CHECK(cap.wait_for("task dump"));  // the held write went out
  // A runtime made now gets a dumper again.
  mpg::runtime again({.procs = 1, .dump_signal = SIGUSR2});
  ::kill(::getpid(), SIGUSR2);
  CHECK(cap.wait_for("task dump", 2));
}

TEST_CASE("dump_signal: signals that come during a dump make one dump more, not one each") {
  // Signals no other test here sends: a byte an earlier test left in the
  // dumper's pipe would dump these runtimes once more.
  const int burst = SIGRTMIN + 3;
  const int marker_sig = SIGRTMIN + 4;
  mpg_test::stderr_capture cap;
  dump_write_held.store(false);
  dump_write_released.store(false);
  mpg::runtime rt({.procs = 1, .dump_signal = burst});
  mpg::runtime marker({.procs = 1, .dump_signal = marker_sig});
  mpg::detail::g_dump_write_hook.store(&hold_dump_write, std::memory_order_relaxed);
  ::kill(::getpid(), burst);
  REQUIRE(mpg_test::wait_until([] { return dump_write_held.load(); }));
  // Each kill() runs the handler before it returns (the signal is not
  // blocked in this thread), so five bytes wait in the pipe, then the
  // marker's, which is dumped after them.
  for (int i = 0; i < 5; ++i) ::kill(::getpid(), burst);
  ::kill(::getpid(), marker_sig);
  dump_write_released.store(true);
  // The marker: every burst signal before it is dumped.
  REQUIRE(cap.wait_for("signal " + std::to_string(marker_sig) + " ("));
  // The held dump, and one for the five.
  CHECK(cap.count("signal " + std::to_string(burst) + " (") == 2);
}

namespace {
std::atomic<bool> dump_written{false};
void note_dump_write() { dump_written.store(true); }
}  // namespace

// A program that blocks the dump signal in its main thread before it makes
// the runtime (so that every thread, the Ms included, inherits the block)
// still gets its dump: the dumper keeps the registered signals unblocked.
// In a child, whose only thread is this one (not under ThreadSanitizer,
// which ends a child of a process with threads that starts threads).
TEST_CASE("dump_signal: the dump comes though every thread of the program blocks the signal" *
          doctest::skip(mpg_test::kThreadSanitized)) {
  auto r = mpg_test::run_child(
      [] {
        mpg_test::block_signal(SIGUSR2);
        mpg::runtime rt({.procs = 1, .dump_signal = SIGUSR2});
        mpg::detail::g_dump_write_hook.store(&note_dump_write, std::memory_order_relaxed);
        mpg::chan<int> c;
        auto h = rt.spawn(wait_for_value(c), "blocked-sig-waiter");
        ::kill(::getpid(), SIGUSR2);
        const bool dumped = mpg_test::wait_until([] { return dump_written.load(); },
                                                 std::chrono::seconds(10));
        std::printf("dumped=%d\n", dumped ? 1 : 0);
        std::fflush(stdout);
        c.close();
        (void)rt.block_on(std::move(h));
      },
      std::chrono::seconds(60));
  CHECK_FALSE(r.timed_out);
  INFO(r.output);
  CHECK(r.output.find("dumped=1") != std::string::npos);
}
