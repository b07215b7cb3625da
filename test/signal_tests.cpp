// test/signal_tests.cpp: mpg::signal: deliveries by raise, kill and
// pthread_kill (to a thread made before notify, to a thread that blocks the
// signal until it unblocks it), several channels per signal, a full channel
// dropping a delivery, stop() restoring the previous disposition (losing no
// delivery meanwhile, and leaving a handler the program installed since),
// and the signals that are refused.
//
// Signals are process-wide: every test stops what it registers.
#include <doctest/doctest.h>
#include <pthread.h>
#include <signal.h>

#include <mpg/mpg.hpp>
#include <mpg/signal.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "io/signal_relay.hpp"
#include "sched/scheduler.hpp"
#include "sched/signal_handler.hpp"
#include "child_process.hpp"
#include "stderr_capture.hpp"
#include "test_support.hpp"

namespace {

using mpg::task;

// gate: a one-shot event on a pthread mutex and condition variable. Not
// std::binary_semaphore: its futex wait is a raw syscall that TSan does not
// intercept, and TSan runs a signal handler for a thread only when the
// thread is in (or enters) a call it intercepts.
class gate {
 public:
  void open() {
    std::lock_guard lk(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return open_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

enum class disposition { dfl, ign, handler };

// The disposition of sig now.
disposition disposition_of(int sig) {
  struct sigaction sa {};
  REQUIRE(::sigaction(sig, nullptr, &sa) == 0);
  if (sa.sa_handler == SIG_DFL) return disposition::dfl;
  if (sa.sa_handler == SIG_IGN) return disposition::ign;
  return disposition::handler;
}

// The moment of the ~runtime test below: the relay held inside a delivery
// while a runtime is destroyed.
std::atomic<bool> relay_held{false};
std::atomic<bool> wait_reached{false};
std::atomic<bool> runtime_gone{false};
std::atomic<bool> waited_first{false};
std::atomic<bool> relay_released{false};

void hold_relay() {
  mpg::detail::g_signal_deliver_hook.store(nullptr, std::memory_order_relaxed);  // once
  relay_held.store(true);
  (void)mpg_test::wait_until([] { return wait_reached.load() || runtime_gone.load(); });
  waited_first.store(wait_reached.load() && !runtime_gone.load());
  relay_released.store(true);
}
void note_wait() { wait_reached.store(true); }

}  // namespace

TEST_CASE("raise delivers the signal number to the channel") {
  mpg::runtime rt({.procs = 2});
  int got = rt.block_on([]() -> task<int> {
    mpg::chan<int> sigs = mpg::signal::notify({SIGUSR1, SIGUSR2});
    CHECK(sigs.capacity() >= 1);
    ::raise(SIGUSR2);
    auto v = co_await sigs.recv();
    mpg::signal::stop(sigs);
    co_return v.value_or(0);
  }());
  CHECK(got == SIGUSR2);
}

TEST_CASE("pthread_kill to a thread made before notify is caught on that thread") {
  gate release;
  pthread_t worker_id{};
  std::thread worker([&] { release.wait(); });
  worker_id = worker.native_handle();
  mpg::runtime rt({.procs = 1});
  int got = rt.block_on([&]() -> task<int> {
    mpg::chan<int> sigs = mpg::signal::notify({SIGUSR1});
    REQUIRE(::pthread_kill(worker_id, SIGUSR1) == 0);
    auto v = co_await sigs.recv();
    mpg::signal::stop(sigs);
    co_return v.value_or(0);
  }());
  release.open();
  worker.join();
  CHECK(got == SIGUSR1);
}

TEST_CASE("a signal sent to a thread that blocks it arrives when the thread unblocks it") {
  gate blocked, sent, done;
  std::atomic<bool> was_pending{false};
  std::atomic<std::size_t> queued_before_unblock{99};
  mpg::chan<int> sigs = mpg::signal::notify({SIGUSR2}, 4);  // plain thread, no runtime
  std::thread worker([&] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
    blocked.open();
    sent.wait();
    sigset_t pending;
    sigpending(&pending);
    was_pending.store(sigismember(&pending, SIGUSR2) == 1);
    // Blocked here, so the handler has not run: nothing can have been sent.
    queued_before_unblock.store(sigs.size());
    ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);  // the handler runs here
    done.wait();
  });
  blocked.wait();
  REQUIRE(::pthread_kill(worker.native_handle(), SIGUSR2) == 0);
  sent.open();
  mpg::runtime rt({.procs = 1});
  mpg::external_work outside(rt.handle());  // the relay thread will send
  int got = rt.block_on([&]() -> task<int> {
    auto v = co_await sigs.recv();
    co_return v.value_or(0);
  }());
  done.open();
  worker.join();
  mpg::signal::stop(sigs);
  CHECK(was_pending.load());
  CHECK(queued_before_unblock.load() == 0);
  CHECK(got == SIGUSR2);
}

TEST_CASE("kill to the process is caught while the waiting thread blocks the signal") {
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  mpg::runtime rt({.procs = 2});  // its threads start with SIGUSR1 unblocked
  ::pthread_sigmask(SIG_BLOCK, &set, &old);
  int got = rt.block_on([]() -> task<int> {
    mpg::chan<int> sigs = mpg::signal::notify({SIGUSR1});
    REQUIRE(::kill(::getpid(), SIGUSR1) == 0);
    auto v = co_await sigs.recv();
    mpg::signal::stop(sigs);
    co_return v.value_or(0);
  }());
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  CHECK(got == SIGUSR1);
}

TEST_CASE("every channel gets the signal; a full one drops it; a stopped one gets nothing") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    // Deliveries go to channels in registration order: once `all` has a
    // signal, `small` and `stopped` have been offered it already.
    mpg::chan<int> stopped = mpg::signal::notify({SIGUSR1});
    mpg::chan<int> small = mpg::signal::notify({SIGUSR1});  // capacity 1
    mpg::chan<int> all = mpg::signal::notify({SIGUSR1}, 8);
    mpg::signal::stop(stopped);
    ::raise(SIGUSR1);
    CHECK((co_await all.recv()).value_or(0) == SIGUSR1);
    CHECK(small.size() == 1);
    ::raise(SIGUSR1);  // small is full: dropped there
    CHECK((co_await all.recv()).value_or(0) == SIGUSR1);
    CHECK(small.size() == 1);
    CHECK(small.try_recv().value_or(0) == SIGUSR1);
    CHECK(!small.try_recv().has_value());
    CHECK(stopped.size() == 0);
    mpg::signal::stop(small);
    mpg::signal::stop(all);
  }());
}

TEST_CASE("stop puts back the previous disposition once no channel wants the signal") {
  REQUIRE(disposition_of(SIGUSR1) == disposition::dfl);
  mpg::chan<int> a = mpg::signal::notify({SIGUSR1});
  mpg::chan<int> b = mpg::signal::notify({SIGUSR1});
  CHECK(disposition_of(SIGUSR1) == disposition::handler);
  mpg::signal::stop(a);
  CHECK(disposition_of(SIGUSR1) == disposition::handler);  // b still wants it
  mpg::signal::stop(b);
  CHECK(disposition_of(SIGUSR1) == disposition::dfl);
  mpg::signal::stop(b);  // not registered: no effect
  CHECK(disposition_of(SIGUSR1) == disposition::dfl);

  // A signal that was ignored before goes back to being ignored.
  ::signal(SIGUSR2, SIG_IGN);
  mpg::chan<int> c = mpg::signal::notify({SIGUSR2});
  CHECK(disposition_of(SIGUSR2) == disposition::handler);
  mpg::signal::stop(c);
  CHECK(disposition_of(SIGUSR2) == disposition::ign);
  ::signal(SIGUSR2, SIG_DFL);

  // notify(ch, ...) adds signals to a registered channel.
  mpg::chan<int> d(2);
  mpg::signal::notify(d, {SIGUSR1});
  mpg::signal::notify(d, {SIGUSR2});
  CHECK(disposition_of(SIGUSR1) == disposition::handler);
  CHECK(disposition_of(SIGUSR2) == disposition::handler);
  mpg::signal::stop(d);
  CHECK(disposition_of(SIGUSR1) == disposition::dfl);
  CHECK(disposition_of(SIGUSR2) == disposition::dfl);
}

TEST_CASE("~runtime waits for a delivery in progress before it deletes its scheduler") {
  // A delivery that takes a task off the channel readies it after the
  // channel's lock; if ~runtime killed that task and deleted its scheduler
  // meanwhile, the ready would use freed memory. Here the relay is held at
  // the start of a delivery, while a task of the runtime waits on the
  // channel, and the runtime is destroyed: ~runtime must wait for the
  // delivery to end before it finishes.
  mpg::chan<int> sigs = mpg::signal::notify({SIGUSR1});
  auto rt = std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1});
  std::atomic<bool> waiting{false};
  rt->go([](mpg::chan<int> ch, std::atomic<bool>* w) -> task<void> {
    w->store(true);
    (void)co_await ch.recv();
  }(sigs, &waiting));
  REQUIRE(mpg_test::wait_until([&] { return waiting.load(); }));
  mpg::detail::g_signal_deliver_hook.store(&hold_relay, std::memory_order_relaxed);
  mpg::detail::g_signal_wait_hook.store(&note_wait, std::memory_order_relaxed);
  ::raise(SIGUSR1);
  REQUIRE(mpg_test::wait_until([] { return relay_held.load(); }));
  {
    mpg_test::stderr_capture cap;  // the shutdown report names the waiting task
    rt.reset();
    runtime_gone.store(true);
    CHECK(cap.wait_for("1 task(s) still alive"));
  }
  REQUIRE(mpg_test::wait_until([] { return relay_released.load(); }));
  mpg::detail::g_signal_wait_hook.store(nullptr, std::memory_order_relaxed);
  CHECK(waited_first.load());
  // The delivery itself went on: its waiter was gone, so it was buffered.
  CHECK(mpg_test::wait_until([&] { return sigs.size() == 1; }));
  CHECK(sigs.try_recv().value_or(0) == SIGUSR1);
  mpg::signal::stop(sigs);
}

TEST_CASE("a runtime's dump_signal and a channel share the signal, in either order") {
  REQUIRE(disposition_of(SIGUSR1) == disposition::dfl);
  SUBCASE("the runtime first, destroyed while the channel wants the signal") {
    mpg_test::stderr_capture cap;
    auto rt =
        std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1, .dump_signal = SIGUSR1});
    mpg::chan<int> sigs = mpg::signal::notify({SIGUSR1});
    ::raise(SIGUSR1);
    CHECK(mpg_test::wait_until([&] { return sigs.size() == 1; }));  // the channel got it
    CHECK(cap.wait_for("task dump"));                 // and the runtime dumped
    CHECK(sigs.try_recv().value_or(0) == SIGUSR1);
    rt.reset();
    // The channel still wants the signal: its handler stays.
    REQUIRE(disposition_of(SIGUSR1) == disposition::handler);
    ::raise(SIGUSR1);
    CHECK(mpg_test::wait_until([&] { return sigs.size() == 1; }));
    mpg::signal::stop(sigs);
    CHECK(disposition_of(SIGUSR1) == disposition::dfl);
  }
  SUBCASE("the channel first, stopped while the runtime dumps on the signal") {
    mpg_test::stderr_capture cap;
    mpg::chan<int> sigs = mpg::signal::notify({SIGUSR1});
    auto rt =
        std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1, .dump_signal = SIGUSR1});
    ::raise(SIGUSR1);
    CHECK(mpg_test::wait_until([&] { return sigs.size() == 1; }));
    CHECK(cap.wait_for("task dump"));
    mpg::signal::stop(sigs);
    // The runtime still dumps on it.
    REQUIRE(disposition_of(SIGUSR1) == disposition::handler);
    ::raise(SIGUSR1);
    CHECK(cap.wait_for("task dump", 2));
    rt.reset();
    CHECK(disposition_of(SIGUSR1) == disposition::dfl);
  }
}

TEST_CASE("notify refuses signals that cannot be caught") {
  CHECK_THROWS_AS(mpg::signal::notify({SIGKILL}), std::invalid_argument);
  CHECK_THROWS_AS(mpg::signal::notify({SIGSTOP}), std::invalid_argument);
  CHECK_THROWS_AS(mpg::signal::notify({0}), std::invalid_argument);
  // In range, but reserved by the C library (its threads use them):
  // sigaction refuses them, and so does notify, leaving nothing installed.
  CHECK_THROWS_AS(mpg::signal::notify({SIGUSR1, 32}), std::invalid_argument);
  CHECK(disposition_of(SIGUSR1) == disposition::dfl);
  CHECK_THROWS_AS(mpg::runtime({.procs = 1, .dump_signal = 33}), std::invalid_argument);
  CHECK_THROWS_AS(mpg::signal::notify({}), std::invalid_argument);
  CHECK(disposition_of(SIGKILL) == disposition::dfl);
  // A moved-from channel would miss every delivery.
  mpg::chan<int> ch;
  mpg::chan<int> taken = std::move(ch);
  CHECK_THROWS_AS(mpg::signal::notify(ch, {SIGUSR1}), mpg::runtime_misuse_error);
  CHECK(disposition_of(SIGUSR1) == disposition::dfl);
}

TEST_CASE("notify and dump_signal refuse the fault signals, leaving their disposition alone") {
  // The shared handler returns; returning from a fault runs the faulting
  // instruction again, so a caught SIGSEGV would loop for ever.
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS}) {
    CAPTURE(sig);
    struct sigaction before {};  // a sanitizer's handler, in sanitized builds
    REQUIRE(::sigaction(sig, nullptr, &before) == 0);
    CHECK_THROWS_AS(mpg::signal::notify({sig}), std::invalid_argument);
    CHECK_THROWS_AS(mpg::signal::notify({SIGUSR1, sig}), std::invalid_argument);
    CHECK_THROWS_AS(mpg::runtime({.procs = 1, .dump_signal = sig}), std::invalid_argument);
    struct sigaction after {};
    REQUIRE(::sigaction(sig, nullptr, &after) == 0);
    CHECK((after.sa_handler == before.sa_handler));
  }
  CHECK(disposition_of(SIGUSR1) == disposition::dfl);
}

namespace {
std::atomic<int> app_handler_calls{0};
extern "C" void app_handler(int) { app_handler_calls.fetch_add(1, std::memory_order_relaxed); }
void raise_sigusr2() { ::raise(SIGUSR2); }

struct sigaction app_action() {
  struct sigaction sa {};
  sa.sa_handler = app_handler;
  sigemptyset(&sa.sa_mask);
  return sa;
}
}  // namespace

TEST_CASE("a signal delivered while the last channel stops reaches the old disposition") {
  // The moment: the last holder's release, between its two steps (restoring
  // the disposition and clearing its bit). A delivery there must reach the
  // channel's sink or the old disposition, here an application handler.
  const struct sigaction app = app_action();
  struct sigaction before {};
  REQUIRE(::sigaction(SIGUSR2, &app, &before) == 0);
  app_handler_calls.store(0);
  mpg::chan<int> c = mpg::signal::notify({SIGUSR2});
  REQUIRE(disposition_of(SIGUSR2) == disposition::handler);
  mpg::detail::g_signal_release_hook.store(&raise_sigusr2, std::memory_order_relaxed);
  mpg::signal::stop(c);
  mpg::detail::g_signal_release_hook.store(nullptr, std::memory_order_relaxed);
  // raise() runs the handler before it returns, in this thread.
  CHECK(app_handler_calls.load() == 1);
  struct sigaction now {};
  REQUIRE(::sigaction(SIGUSR2, nullptr, &now) == 0);
  CHECK((now.sa_handler == app_handler));
  ::sigaction(SIGUSR2, &before, nullptr);
}

TEST_CASE("stop leaves alone a handler the program installed after notify") {
  REQUIRE(disposition_of(SIGUSR2) == disposition::dfl);
  mpg::chan<int> c = mpg::signal::notify({SIGUSR2});
  const struct sigaction app = app_action();
  REQUIRE(::sigaction(SIGUSR2, &app, nullptr) == 0);
  mpg::signal::stop(c);
  struct sigaction now {};
  REQUIRE(::sigaction(SIGUSR2, nullptr, &now) == 0);
  CHECK((now.sa_handler == app_handler));
  // And a later notify claims the signal afresh, and its stop puts the
  // program's handler back.
  mpg::chan<int> d = mpg::signal::notify({SIGUSR2});
  CHECK(disposition_of(SIGUSR2) == disposition::handler);
  REQUIRE(::sigaction(SIGUSR2, nullptr, &now) == 0);
  CHECK((now.sa_handler != app_handler));
  mpg::signal::stop(d);
  REQUIRE(::sigaction(SIGUSR2, nullptr, &now) == 0);
  CHECK((now.sa_handler == app_handler));
  ::signal(SIGUSR2, SIG_DFL);
}

namespace {
std::atomic<int> release_hook_calls{0};
// Called by each release inside stop(): on the first (SIGUSR1's, made
// before SIGUSR2's), SIGUSR2 is still the channel's, its disposition still
// mpg's handler.
void raise_sigusr2_on_first_release() {
  if (release_hook_calls.fetch_add(1) == 0) ::raise(SIGUSR2);
}
}  // namespace

// signal.hpp: "A delivery while stop() runs reaches either the channels or
// the restored disposition, never neither." Caught before its release, the
// signal is pending for the relay, which can offer it only once stop() has
// dropped the lock, channel and all: stop() offers it first. (Not under
// ThreadSanitizer, which runs the handler of a raise() at a later
// intercepted call of its own choosing, so that it lands where TSan says.)
TEST_CASE("a signal caught before stop() restored its disposition reaches the stopping channel" *
          doctest::skip(mpg_test::kThreadSanitized)) {
  const struct sigaction app = app_action();
  struct sigaction before {};
  REQUIRE(::sigaction(SIGUSR2, &app, &before) == 0);
  app_handler_calls.store(0);
  release_hook_calls.store(0);
  mpg::chan<int> c = mpg::signal::notify({SIGUSR1, SIGUSR2}, 4);
  mpg::detail::g_signal_release_hook.store(&raise_sigusr2_on_first_release,
                                           std::memory_order_relaxed);
  mpg::signal::stop(c);
  mpg::detail::g_signal_release_hook.store(nullptr, std::memory_order_relaxed);
  REQUIRE(release_hook_calls.load() == 2);
  // Offered by stop() itself, with no wait for the relay.
  CHECK(c.size() == 1);
  CHECK(app_handler_calls.load() == 0);
  ::sigaction(SIGUSR2, &before, nullptr);
}

namespace {
std::atomic<int> deadlock_looks{0};
void count_look(int) { deadlock_looks.fetch_add(1); }
}  // namespace

// signal.hpp: notify() in a task keeps that task's runtime from reporting a
// deadlock until stop(), also for a channel another runtime registered
// first (and is gone since): each runtime keeps a guard of its own.
TEST_CASE("notify() in a task guards its runtime for a channel another runtime registered") {
  mpg::chan<int> ch(1);
  {
    mpg::runtime a({.procs = 1});
    a.block_on([](mpg::chan<int> ch) -> mpg::task<void> {
      mpg::signal::notify(ch, {SIGUSR1});
      co_return;
    }(ch));
  }
  mpg::runtime b({.procs = 1});
  deadlock_looks.store(0);
  mpg::detail::g_deadlock_look_hook.store(&count_look);
  // The signal comes once b's check has looked ten times (three quiet looks
  // in a row make a report), or after 10 s.
  std::thread raiser([&] {
    (void)mpg_test::wait_until([] { return deadlock_looks.load() >= 10; },
                               std::chrono::seconds(10));
    ::kill(::getpid(), SIGUSR2);
  });
  int got = 0;
  std::string err;
  try {
    got = b.block_on([](mpg::chan<int> ch) -> mpg::task<int> {
      mpg::signal::notify(ch, {SIGUSR2});
      co_return (co_await ch.recv()).value_or(0);
    }(ch));
  } catch (const mpg::deadlock_error& e) {
    err = e.what();
  }
  raiser.join();
  mpg::detail::g_deadlock_look_hook.store(nullptr);
  mpg::signal::stop(ch);
  CHECK_MESSAGE(err.empty(), err);
  CHECK(got == SIGUSR2);
}

// signal.hpp: notify "works whichever threads exist and whatever their
// signal masks": a program that blocks the signal in its main thread before
// it makes the runtime (so that every thread inherits the block) still gets
// it, as the relay keeps the wanted signals unblocked (Go's sigM does the
// same). In a child, whose only thread is this one (not under
// ThreadSanitizer, which ends a child of a process with threads that starts
// threads).
TEST_CASE("notify delivers a signal that every thread of the program blocks" *
          doctest::skip(mpg_test::kThreadSanitized)) {
  auto r = mpg_test::run_child(
      [] {
        mpg_test::block_signal(SIGUSR2);
        mpg::chan<int> sigs = mpg::signal::notify({SIGUSR2});
        mpg::runtime rt({.procs = 1});
        const int got = rt.block_on([](mpg::chan<int> c) -> mpg::task<int> {
          ::kill(::getpid(), SIGUSR2);
          // Bound: 10 s.
          auto res = co_await mpg::select(c.recv(), mpg::after(std::chrono::seconds(10)).recv());
          co_return res.index() == 0 ? std::get<0>(res).value_or(-1) : 0;
        }(sigs));
        std::printf("got=%d\n", got);
        std::fflush(stdout);
        mpg::signal::stop(sigs);
      },
      std::chrono::seconds(60));
  CHECK_FALSE(r.timed_out);
  INFO(r.output);
  CHECK(r.output.find("got=" + std::to_string(SIGUSR2)) != std::string::npos);
}
