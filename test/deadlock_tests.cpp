// Deadlock detection: block_on throws mpg::deadlock_error, naming the
// blocked tasks, when every task waits on something only another task could
// provide (Go's "all goroutines are asleep - deadlock!"). Timers, I/O and
// blocking calls in flight are possible wake-ups, not deadlocks, and so is
// any other runtime of the process that is not inert: its tasks may send on
// a channel or finish a task that a task of this one waits for.
#include <doctest/doctest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "mpg/mpg.hpp"
#include "sched/scheduler.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

mpg::task<int> wait_forever(mpg::chan<int> c) {
  auto v = co_await c.recv();
  co_return v ? *v : -1;
}

mpg::task<int> two_tasks_waiting_on_each_other() {
  mpg::chan<int> a, b;
  auto h = mpg::spawn(wait_forever(a), "waits-on-a");
  auto v = co_await b.recv();  // nobody sends on b
  co_return (v ? *v : 0) + co_await h;
}

mpg::task<int> sleeps_then_returns() {
  co_await mpg::sleep_for(100ms);
  co_return 5;
}

mpg::task<int> blocking_call_then_returns() {
  co_return co_await mpg::blocking([] {
    usleep(250 * 1000);  // a slow library call, not synchronisation
    return 9;
  });
}

// Receives on c, saying first that it is about to wait.
mpg::task<int> receive_after_saying_so(mpg::chan<int> c, std::atomic<bool>* waiting) {
  waiting->store(true, std::memory_order_release);
  auto v = co_await c.recv();  // no suspension between the store and this park
  co_return v ? *v : -1;
}

// A task of another runtime that sends on c once the receiver has waited
// through more than three of the deadlock check's looks (50 ms apart),
// running all the while and never parking.
mpg::task<void> send_after_busy_spell(mpg::chan<int> c, std::atomic<bool>* waiting) {
  while (!waiting->load(std::memory_order_acquire)) {
  }
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < 400ms) {
  }
  co_await c.send(7);
}

// Every task of two runtimes waits on a channel that only the other side
// could serve.
mpg::task<int> wait_on_other_runtime(mpg::runtime* other) {
  mpg::chan<int> to_other, from_other;
  auto h = other->spawn(wait_forever(to_other), "other-runtime-waiter");
  auto v = co_await from_other.recv();  // h stays unjoined: the runtimes kill both at the end
  co_return v ? *v : 0;
}

// A task of a runtime whose destructor has begun, still running its turn
// (stop() waits for it), sends once the receiver's deadlock check has
// looked five times with the receiver parked: the check must count that
// runtime as live until its tasks have stopped. The receiver is parked once
// its M has parked with nothing to run after the receiver said it would
// wait; only looks from then on count (a send while the receiver is not
// there yet would park the sender, and ~runtime would kill it). The hook
// counts the looks; nothing sleeps.
std::atomic<int> g_looks{0};
std::atomic<bool> g_send_now{false};
const mpg::runtime* g_receiver_rt = nullptr;
std::atomic<bool> g_receiving{false};
std::atomic<std::uint64_t> g_parks_before{0};
void count_look(int) {
  // acquire: pairs with the receiver's release store, so that the parks
  // count read with it is the one from before the receiver's park.
  if (!g_receiving.load(std::memory_order_acquire)) return;
  if (g_receiver_rt->stats().parks == g_parks_before.load(std::memory_order_relaxed)) return;
  if (g_looks.fetch_add(1, std::memory_order_relaxed) + 1 >= 5)
    g_send_now.store(true, std::memory_order_release);
}

mpg::task<int> receive_when_parked_counts(const mpg::runtime* rt, mpg::chan<int> c) {
  g_parks_before.store(rt->stats().parks, std::memory_order_relaxed);
  // release: publishes g_parks_before to count_look.
  g_receiving.store(true, std::memory_order_release);
  auto v = co_await c.recv();
  co_return v ? *v : -1;
}

mpg::task<void> send_when_told(mpg::chan<int> c, std::atomic<bool>* started) {
  started->store(true, std::memory_order_release);
  while (!g_send_now.load(std::memory_order_acquire)) {
  }
  co_await c.send(7);
}

mpg::task<int> receive_one(mpg::chan<int> c) {
  auto v = co_await c.recv();
  co_return v ? *v : -1;
}

// A wake-up from a thread the check does not count (here the checking
// thread itself, from the hook) that lands just as the deadlock is decided:
// the task and block_on's waiter task run while block_on decides, dumps and
// returns or throws. Either outcome is right; what must not happen is the
// waiter touching what block_on freed (ASan), or its M stuck on block_on's
// lock while the dump stops the world.
mpg::chan<int>* g_late_chan = nullptr;
mpg::runtime* g_late_rt = nullptr;
void send_at_decision(int quiet_looks) {
  if (quiet_looks != 3) return;
  const std::uint64_t before = g_late_rt->stats().completed;
  (void)g_late_chan->try_send(5);
  // Until the task has ended: its waiter then runs at once (the switch at
  // finish) and wants block_on's lock, which this hook holds.
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  while (g_late_rt->stats().completed == before && std::chrono::steady_clock::now() < give_up)
    std::this_thread::yield();
}

}  // namespace

TEST_CASE("a wake-up that lands as block_on decides on a deadlock is sound") {
  mpg::runtime rt({.procs = 1});
  mpg::chan<int> c;
  g_late_chan = &c;
  g_late_rt = &rt;
  mpg::detail::g_deadlock_look_hook.store(&send_at_decision, std::memory_order_relaxed);
  int got = 0;
  try {
    got = rt.block_on(receive_one(c));
  } catch (const mpg::deadlock_error&) {
    got = -2;
  }
  mpg::detail::g_deadlock_look_hook.store(nullptr, std::memory_order_relaxed);
  CHECK((got == 5 || got == -2));
  // The task and the waiter end either way (bounded wait, no sleep).
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  while (rt.stats().live != 0 && std::chrono::steady_clock::now() < give_up)
    std::this_thread::yield();
  CHECK(rt.stats().live == 0);
}

TEST_CASE("a task waiting on a task of a runtime being destroyed is not a deadlock") {
  auto a = std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1});
  auto b = std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1});
  mpg::chan<int> c;
  std::atomic<bool> started{false};
  b->go(send_when_told(c, &started), "sender of a runtime being destroyed");
  while (!started.load(std::memory_order_acquire)) std::this_thread::yield();
  mpg::runtime_handle hb = b->handle();
  std::thread destroyer([&] { b.reset(); });
  while (hb.post([] {})) std::this_thread::yield();  // ~runtime has begun
  g_receiver_rt = a.get();
  mpg::detail::g_deadlock_look_hook.store(&count_look, std::memory_order_relaxed);
  int got = 0;
  try {
    got = a->block_on(receive_when_parked_counts(a.get(), c));
  } catch (const mpg::deadlock_error&) {
    got = -2;
  }
  mpg::detail::g_deadlock_look_hook.store(nullptr, std::memory_order_relaxed);
  g_send_now.store(true, std::memory_order_release);  // lets the sender end if the check threw
  destroyer.join();
  CHECK(got == 7);
}

namespace {

// An M leaving mpg::blocking is held after its call has returned and before
// it takes a P back (as a preemption could hold it) while block_on's check
// looks four times, or until it decides: the G must still count as a
// possible wake-up there, not as a task asleep.
std::atomic<int> g_exit_looks{0};
std::atomic<bool> g_exit_decided{false};
void count_exit_look(int quiet_looks) {
  g_exit_looks.fetch_add(1, std::memory_order_relaxed);
  if (quiet_looks >= 3) g_exit_decided.store(true, std::memory_order_relaxed);
}
void hold_blocking_exit() {
  const int from = g_exit_looks.load(std::memory_order_relaxed);
  CHECK(mpg_test::wait_until([from] {
    return g_exit_decided.load(std::memory_order_relaxed) ||
           g_exit_looks.load(std::memory_order_relaxed) >= from + 4;
  }));
}

mpg::task<int> quick_blocking_call() {
  co_return co_await mpg::blocking([] { return 3; });
}

}  // namespace

TEST_CASE("a task leaving mpg::blocking is not taken for a deadlock") {
  mpg::runtime rt({.procs = 1});
  mpg::detail::g_deadlock_look_hook.store(&count_exit_look, std::memory_order_relaxed);
  mpg::detail::g_exit_blocking_hook.store(&hold_blocking_exit, std::memory_order_relaxed);
  int got = 0;
  try {
    got = rt.block_on(quick_blocking_call());
  } catch (const mpg::deadlock_error&) {
    got = -2;
  }
  mpg::detail::g_exit_blocking_hook.store(nullptr, std::memory_order_relaxed);
  mpg::detail::g_deadlock_look_hook.store(nullptr, std::memory_order_relaxed);
  CHECK(got == 3);
  CHECK_FALSE(g_exit_decided.load(std::memory_order_relaxed));
  CHECK(g_exit_looks.load(std::memory_order_relaxed) >= 4);
}

TEST_CASE("block_on reports a deadlock naming the blocked tasks") {
  mpg::runtime rt({.procs = 2});
  std::string what;
  try {
    rt.block_on(two_tasks_waiting_on_each_other());
  } catch (const mpg::deadlock_error& e) {
    what = e.what();
  }
  CHECK(what.find("deadlock") != std::string::npos);
  CHECK(what.find("waits-on-a") != std::string::npos);
  CHECK(what.find("chan receive") != std::string::npos);
}

TEST_CASE("a deadlock_error is a std::logic_error") {
  mpg::runtime rt({.procs = 1});
  CHECK_THROWS_AS(rt.block_on(wait_forever(mpg::chan<int>())), std::logic_error);
}

TEST_CASE("a task asleep on a timer is not a deadlock") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(sleeps_then_returns()) == 5);
}

TEST_CASE("a task inside mpg::blocking is not a deadlock") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(blocking_call_then_returns()) == 9);
}

TEST_CASE("a task waiting on a busy task of another runtime is not a deadlock") {
  // The receiver's runtime alone is quiescent for the whole spell; the
  // sender's runtime is running a task. A check blind to other runtimes
  // throws deadlock_error here after about 150 ms.
  mpg::runtime a({.procs = 1});
  mpg::runtime b({.procs = 1});
  mpg::chan<int> c;
  std::atomic<bool> waiting{false};
  auto sender = b.spawn(send_after_busy_spell(c, &waiting), "busy-sender");
  CHECK(a.block_on(receive_after_saying_so(c, &waiting)) == 7);
  b.block_on(std::move(sender));
}

TEST_CASE("two runtimes whose tasks all wait on each other are a deadlock") {
  mpg::runtime a({.procs = 1});
  mpg::runtime b({.procs = 1});
  std::string what;
  try {
    a.block_on(wait_on_other_runtime(&b));
  } catch (const mpg::deadlock_error& e) {
    what = e.what();
  }
  CHECK(what.find("deadlock") != std::string::npos);
  CHECK(what.find("chan receive") != std::string::npos);
}
