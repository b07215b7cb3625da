// mpg/asio.hpp: mpg as the executor of standalone Asio (post, dispatch,
// co_spawn), and an mpg task awaiting an Asio operation (a timer).
#include <doctest/doctest.h>

// Asio 1.22 looks for clang's pre-C++20 <experimental/coroutine> before it
// enables co_await support; clang 16 has the standard <coroutine>.
#if defined(__clang__) && !defined(ASIO_HAS_CO_AWAIT)
#define ASIO_HAS_CO_AWAIT 1
#endif
#include <asio.hpp>

#include <atomic>
#include <chrono>
#include <latch>
#include <mutex>
#include <thread>

#include "mpg/asio.hpp"
#include "mpg/mpg.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

// countdown: a plain-thread latch (the test thread waits; tasks and posted
// functions count down).
using countdown = std::latch;

// An io_context run by a thread of its own for the test's lifetime.
struct io_thread {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::thread t{[this] { io.run(); }};
  ~io_thread() {
    work.reset();
    t.join();
  }
};

asio::awaitable<void> asio_coroutine(mpg::runtime_handle h, bool* on_runtime, countdown* done) {
  *on_runtime = h.running_in_this_thread();
  // Suspends, resumes on ex.
  co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
  *on_runtime = *on_runtime && h.running_in_this_thread();
  done->count_down();
}

mpg::task<long> wait_on_timer(asio::io_context& io, std::chrono::milliseconds d, bool* on_runtime) {
  mpg::runtime_handle h = mpg::runtime_handle::current();
  const auto start = std::chrono::steady_clock::now();
  asio::steady_timer t(io, d);
  std::error_code ec = co_await t.async_wait(mpg::use_task);
  *on_runtime = h.running_in_this_thread() && !ec;
  co_return std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - start)
      .count();
}

mpg::task<bool> dispatch_inside(mpg::asio_executor ex) {
  bool ran = false;
  asio::dispatch(ex, [&ran] { ran = true; });  // inline: already on this runtime
  co_return ran;
}

}  // namespace

TEST_CASE("asio::post runs the function on the runtime") {
  mpg::runtime rt({.procs = 2});
  mpg::asio_executor ex(rt.handle());
  std::atomic<int> on{0};
  countdown done(100);
  for (int i = 0; i < 100; ++i)
    asio::post(ex, [&] {
      if (rt.handle().running_in_this_thread()) on.fetch_add(1);
      done.count_down();
    });
  done.wait();
  CHECK(on.load() == 100);
}

TEST_CASE("asio::dispatch is inline on the runtime and posted from outside") {
  mpg::runtime rt({.procs = 2});
  mpg::asio_executor ex(rt.handle());
  CHECK(rt.block_on(dispatch_inside(ex)));
  std::atomic<bool> on{false};
  countdown done(1);
  asio::dispatch(ex, [&] {
    on = rt.handle().running_in_this_thread();
    done.count_down();
  });
  done.wait();
  CHECK(on.load());
}

TEST_CASE("asio::co_spawn runs an Asio coroutine on the runtime") {
  mpg::runtime rt({.procs = 2});
  mpg::asio_executor ex(rt.handle());
  bool on_runtime = false;
  countdown done(1);
  asio::co_spawn(ex, asio_coroutine(rt.handle(), &on_runtime, &done), asio::detached);
  done.wait();
  CHECK(on_runtime);
}

TEST_CASE("a task awaits an Asio timer (250 ms: no deadlock_error while it is pending)") {
  io_thread io;
  mpg::runtime rt({.procs = 2});
  bool on_runtime = false;
  const long ms = rt.block_on(wait_on_timer(io.io, 250ms, &on_runtime));
  CHECK(ms >= 250);
  CHECK(on_runtime);
}

// A task killed by ~runtime while it awaits an Asio operation: the timer in
// its frame is destroyed with it, which cancels the wait and queues the
// handler (operation_aborted) on an io_context that nobody runs yet. When
// it runs, after ~runtime, the handler must touch nothing of the task, its
// frame or its runtime (ASan).
mpg::task<void> wait_an_hour(asio::io_context& io) {
  asio::steady_timer t(io, 1h);
  (void)co_await t.async_wait(mpg::use_task);
}

TEST_CASE("a task killed while it awaits an Asio operation leaves the handler harmless") {
  asio::io_context io;
  {
    mpg::runtime rt({.procs = 1});
    rt.go(wait_an_hour(io), "asio waiter");
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    while (!mpg_test::dump_shows(rt, "asio operation") &&
           std::chrono::steady_clock::now() < give_up)
      std::this_thread::yield();
    REQUIRE(mpg_test::dump_shows(rt, "asio operation"));
  }  // kills the waiter: ~steady_timer queues the handler
  io.restart();
  CHECK(io.run() == 1);  // the handler ran, and found the task gone
}

TEST_CASE("use_task outside a task throws") {
  io_thread io;
  asio::steady_timer t(io.io, 1ms);
  CHECK_THROWS_AS(([&] {
                    auto a = t.async_wait(mpg::use_task);
                    a.await_suspend(std::noop_coroutine());
                  }()),
                  mpg::runtime_misuse_error);
}

// Completions inside the initiating function (asio.hpp, A0).

namespace {

// An operation whose initiation completes it at once and then goes on
// working until the task has resumed (or 2 s pass): what any initiation
// that completes inline and then returns does, with its last steps slowed
// down. asio::dispatch on an mpg::asio_executor from a task of its runtime
// is one: execute() runs the handler inline (asio.hpp).
struct inline_then_wait {
  std::atomic<bool>* resumed;
  bool* overlapped;
  template <class Handler>
  void operator()(Handler&& h) const {
    std::forward<Handler>(h)(42);
    // Still inside the task's await_suspend: the task must not run yet.
    *overlapped =
        mpg_test::wait_until([r = resumed] { return r->load(); }, std::chrono::seconds(2));
  }
};

mpg::task<int> await_inline_op(std::atomic<bool>* resumed, bool* overlapped) {
  int v = co_await asio::async_initiate<const mpg::use_task_t&, void(int)>(
      inline_then_wait{resumed, overlapped}, mpg::use_task);
  resumed->store(true);
  co_return v;
}

mpg::task<int> dispatch_many(mpg::asio_executor ex, int n) {
  int done = 0;
  for (int i = 0; i < n; ++i) {
    co_await asio::dispatch(ex, mpg::use_task);
    ++done;
  }
  co_return done;
}

}  // namespace

TEST_CASE("co_await asio::dispatch(mpg executor, use_task) completes inline and goes on") {
  mpg::runtime rt({.procs = 2});
  mpg::asio_executor ex(rt.handle());
  CHECK(rt.block_on(dispatch_many(ex, 1000)) == 1000);
}

TEST_CASE("a use_task operation completed inside its initiation does not run the task "
          "before the initiation returns") {
  std::atomic<bool> resumed{false};
  bool overlapped = false;
  mpg::runtime rt({.procs = 2});
  const int v = rt.block_on(await_inline_op(&resumed, &overlapped));
  CHECK(v == 42);
  CHECK_FALSE(overlapped);  // the task must not run while its await_suspend still runs
}
