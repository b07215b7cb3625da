// test/park_stress_tests.cpp: no lost wakeups. Many rounds of work arriving
// while Ms are going to sleep: bursts spawned from a foreign thread after
// idle gaps, chains and trees of joins that ready Gs across Ps, and two
// tasks handing a token back and forth through park/ready. A lost wakeup
// leaves a round waiting forever: the meson timeout (120 s) turns it into a
// failure. Each scenario runs for a bounded number of rounds and a bounded
// time, so the executable stays short under TSan too.
#include <doctest/doctest.h>

#include <mpg/mpg.hpp>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <mutex>
#include <thread>
#include <vector>

#ifndef __has_feature
#define __has_feature(x) 0
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || \
    __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr auto kBudget = std::chrono::milliseconds(1000);
#else
constexpr auto kBudget = std::chrono::milliseconds(1500);
#endif

namespace {

// Runs round(i) until max_rounds or the time budget; returns rounds done.
template <class F>
int run_rounds(int max_rounds, F round) {
  const auto deadline = std::chrono::steady_clock::now() + kBudget;
  int i = 0;
  for (; i < max_rounds; ++i) {
    if (i >= 50 && std::chrono::steady_clock::now() > deadline) break;
    if (!round(i)) break;
  }
  return i;
}

// An idle gap: yields the CPU until some M of rt parks after `parks_before`
// (so the next burst arrives at a sleeping runtime), or a short bound passes
// (the Ms may have parked already).
void idle_gap(mpg::runtime& rt, std::uint64_t parks_before) {
  for (int i = 0; i < 500 && rt.stats().parks == parks_before; ++i) std::this_thread::yield();
}

mpg::task<int> short_task(int v) { co_return v + 1; }

// Every other level yields between spawn and join, so its join parks and
// is readied by the child's M (possibly another P's); the other levels join
// a child still in runnext, which runs inline (work-first).
mpg::task<int> join_chain(int n) {
  if (n == 0) co_return 0;
  auto h = mpg::spawn(join_chain(n - 1));
  if (n % 2 == 0) co_await mpg::yield();
  int below = co_await h;
  co_return below + 1;
}

mpg::task<int> join_tree(int depth) {
  if (depth == 0) co_return 1;
  auto l = mpg::spawn(join_tree(depth - 1));
  auto r = mpg::spawn(join_tree(depth - 1));
  int a = co_await l;
  int b = co_await r;
  co_return a + b;
}

// A one-slot handoff between two tasks through park/ready (the protocol of
// mpg/detail/sched/g.hpp): put() readies the waiter, if any, else leaves a token.
struct handoff {
  std::mutex mu;
  int tokens = 0;
  mpg::detail::g* waiter = nullptr;

  void put() {
    mpg::detail::g* w = nullptr;
    {
      std::lock_guard<std::mutex> l(mu);
      if (waiter != nullptr) {
        w = waiter;
        waiter = nullptr;
      } else {
        ++tokens;
      }
    }
    if (w != nullptr) mpg::detail::ready(w);
  }

  struct take_awaiter {
    using mpg_awaiter = mpg::detail::runtime_awaiter_tag;
    handoff* self;
    bool await_ready() {
      std::lock_guard<std::mutex> l(self->mu);
      if (self->tokens == 0) return false;
      --self->tokens;
      return true;
    }
    bool await_suspend(std::coroutine_handle<> h) {
      mpg::detail::park(h, "handoff");
      std::lock_guard<std::mutex> l(self->mu);
      if (self->tokens > 0) {
        --self->tokens;
        mpg::detail::cancel_park();
        return false;
      }
      self->waiter = mpg::detail::current_g();
      return true;  // the unlock publishes; the frame is not touched after
    }
    void await_resume() const noexcept {}
  };
  take_awaiter take() { return take_awaiter{this}; }
};

mpg::task<int> pinger(handoff* mine, handoff* theirs, int n) {
  int got = 0;
  for (int i = 0; i < n; ++i) {
    theirs->put();
    co_await mine->take();
    ++got;
  }
  co_return got;
}

mpg::task<int> ponger(handoff* mine, handoff* theirs, int n) {
  int got = 0;
  for (int i = 0; i < n; ++i) {
    co_await mine->take();
    ++got;
    theirs->put();
  }
  co_return got;
}

mpg::task<int> ping_pong(int n) {
  handoff a, b;
  auto p = mpg::spawn(pinger(&a, &b, n), "pinger");
  auto q = mpg::spawn(ponger(&b, &a, n), "ponger");
  int x = co_await p;
  int y = co_await q;
  co_return x + y;
}

mpg::task<void> count_up(std::atomic<std::uint64_t>* n) {
  n->fetch_add(1);
  co_return;
}

// Yields until *n reaches target; false if the bound ran out.
mpg::task<bool> wait_count(std::atomic<std::uint64_t>* n, std::uint64_t target) {
  for (int i = 0; i < 10'000'000; ++i) {
    if (n->load() >= target) co_return true;
    co_await mpg::yield();
  }
  co_return false;
}

}  // namespace

TEST_CASE("bursts spawned from a foreign thread after idle gaps all complete") {
  for (unsigned procs : {2u, 4u}) {
    CAPTURE(procs);
    mpg::runtime rt({.procs = procs});
    int failures = 0;
    const int rounds = run_rounds(20000, [&](int i) {
      if (i % 2 == 0) idle_gap(rt, rt.stats().parks);
      const int burst = 1 + i % 8;
      std::vector<mpg::join_handle<int>> hs;
      for (int k = 0; k < burst; ++k) hs.push_back(rt.spawn(short_task(k), "burst"));
      int sum = 0;
      for (auto& h : hs) sum += rt.block_on(std::move(h));
      if (sum != burst * (burst + 1) / 2) ++failures;
      return failures == 0;
    });
    MESSAGE("procs " << procs << ": " << rounds << " burst rounds");
    CHECK(failures == 0);
    CHECK(rounds >= 50);
  }
}

TEST_CASE("detached tasks from a second foreign thread all run while the first waits") {
  mpg::runtime rt({.procs = 2});
  std::atomic<std::uint64_t> done{0};
  std::atomic<std::uint64_t> sent{0};
  std::atomic<bool> stop{false};
  std::thread spawner([&] {
    // Detached tasks from another plain thread, racing the Ms' parking.
    while (!stop.load()) {
      rt.go(count_up(&done), "from-spawner");
      if (sent.fetch_add(1) % 64 == 63) idle_gap(rt, rt.stats().parks);
    }
  });
  const int rounds = run_rounds(20000, [&](int i) { return rt.block_on(short_task(i)) == i + 1; });
  stop.store(true);
  spawner.join();
  CHECK(rounds >= 50);
  CHECK(sent.load() > 0);
  CHECK(rt.block_on(wait_count(&done, sent.load())));
  CHECK(done.load() == sent.load());
}

TEST_CASE("chains and trees of joins ready Gs across Ps without lost wakeups") {
  for (unsigned procs : {2u, 4u}) {
    CAPTURE(procs);
    mpg::runtime rt({.procs = procs});
    int failures = 0;
    const int rounds = run_rounds(20000, [&](int i) {
      if (i % 4 == 0) idle_gap(rt, rt.stats().parks);
      if (rt.block_on(join_chain(50)) != 50) ++failures;
      if (rt.block_on(join_tree(6)) != 64) ++failures;
      return failures == 0;
    });
    MESSAGE("procs " << procs << ": " << rounds << " join rounds");
    CHECK(failures == 0);
    CHECK(rounds >= 50);
  }
}

TEST_CASE("two tasks handing a token back and forth through park/ready never stall") {
  for (unsigned procs : {2u, 4u}) {
    CAPTURE(procs);
    mpg::runtime rt({.procs = procs});
    int failures = 0;
    const int rounds = run_rounds(20000, [&](int i) {
      if (i % 4 == 0) idle_gap(rt, rt.stats().parks);
      if (rt.block_on(ping_pong(100)) != 200) ++failures;
      return failures == 0;
    });
    MESSAGE("procs " << procs << ": " << rounds << " ping-pong rounds");
    CHECK(failures == 0);
    CHECK(rounds >= 50);
  }
}
