// test/shutdown_tests.cpp: ~runtime with tasks still alive. Parked and
// runnable tasks are destroyed (their frames, and every frame they await,
// run their destructors and are freed: LSan in the ASan build checks the
// freeing), a join_handle that outlives its runtime can still be
// dropped, and sleepers killed on every P leave no timer in a freed frame.
// The shutdown report goes to stderr.
#include <doctest/doctest.h>

#include <mpg/mpg.hpp>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <thread>

namespace {

// Counts destructor runs: one lives in every frame of interest.
struct counted {
  std::atomic<int>* dtors;
  ~counted() { dtors->fetch_add(1); }
};

// Parks the current G with nothing that will ever ready it.
struct park_forever {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) const { mpg::detail::park(h, "forever"); }
  void await_resume() const noexcept {}
};

mpg::task<void> inline_leaf(std::atomic<int>* dtors, std::atomic<bool>* parked) {
  counted c{dtors};
  parked->store(true);
  co_await park_forever{};
}

mpg::task<void> inline_mid(std::atomic<int>* dtors, std::atomic<bool>* parked, int depth) {
  counted c{dtors};
  if (depth == 0) {
    co_await inline_leaf(dtors, parked);
  } else {
    co_await inline_mid(dtors, parked, depth - 1);
  }
}

// A chain of spawned tasks, each joining the next; the last one awaits an
// inline chain (depth 2 mids + leaf) that parks forever.
mpg::task<void> join_chain(std::atomic<int>* dtors, std::atomic<bool>* parked, int n) {
  counted c{dtors};
  if (n == 0) {
    co_await inline_mid(dtors, parked, 1);
  } else {
    auto h = mpg::spawn(join_chain(dtors, parked, n - 1), "chain");
    // Let the child start first, so the join parks instead of running the
    // child inline (work-first join).
    co_await mpg::yield();
    co_await h;
  }
}

mpg::task<void> yield_forever(std::atomic<int>* dtors, std::atomic<int>* started) {
  counted c{dtors};
  started->fetch_add(1);
  for (;;) co_await mpg::yield();
}

mpg::task<int> never_finishes(std::atomic<int>* dtors, std::atomic<bool>* parked) {
  counted c{dtors};
  parked->store(true);
  co_await park_forever{};
  co_return 1;
}

// Spins the main thread (yielding the CPU) until `pred` holds; bounded.
template <class Pred>
bool wait_until(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

}  // namespace

TEST_CASE("~runtime destroys a chain of tasks parked in joins, running every destructor") {
  for (unsigned procs : {1u, 2u}) {
    CAPTURE(procs);
    std::atomic<int> dtors{0};
    std::atomic<bool> parked{false};
    constexpr int kChain = 5;  // spawned tasks: kChain + 1; inline frames: 3
    {
      mpg::runtime rt({.procs = procs});
      rt.go(join_chain(&dtors, &parked, kChain), "chain-root");
      REQUIRE(wait_until([&] { return parked.load(); }));
      CHECK(dtors.load() == 0);
      CHECK(rt.stats().live >= kChain + 1);
    }
    CHECK(dtors.load() == kChain + 1 + 3);
  }
}

TEST_CASE("~runtime destroys runnable tasks that never finish") {
  std::atomic<int> dtors{0};
  std::atomic<int> started{0};
  constexpr int kTasks = 10;
  {
    mpg::runtime rt({.procs = 2});
    for (int i = 0; i < kTasks; ++i) rt.go(yield_forever(&dtors, &started), "yielder");
    REQUIRE(wait_until([&] { return started.load() == kTasks; }));
    CHECK(dtors.load() == 0);
  }
  CHECK(dtors.load() == kTasks);
}

TEST_CASE("~runtime destroys tasks that never started") {
  std::atomic<int> dtors{0};
  std::atomic<int> started{0};
  {
    // Spawned from the main thread onto a runtime that is shut down at once:
    // whether or not they got to run, they are destroyed (a frame that never
    // started has no `counted` yet; ASan/LSan check those frames are freed).
    mpg::runtime rt({.procs = 1});
    for (int i = 0; i < 100; ++i) rt.go(yield_forever(&dtors, &started), "late");
  }
  CHECK(dtors.load() == started.load());
}

TEST_CASE("a join_handle that outlives its runtime can be dropped") {
  std::atomic<int> dtors{0};
  std::atomic<bool> parked{false};
  mpg::join_handle<int> h;
  {
    mpg::runtime rt({.procs = 2});
    h = rt.spawn(never_finishes(&dtors, &parked), "orphan");
    REQUIRE(wait_until([&] { return parked.load(); }));
    CHECK_FALSE(h.done());
  }
  CHECK(dtors.load() == 1);  // the frame was destroyed...
  CHECK(h.valid());          // ...but its memory stays for the handle
  CHECK_FALSE(h.done());
  auto raw = h.release();
  CHECK(mpg::detail::header_of(raw.address())->join.load() == mpg::detail::kJoinKilled);
  mpg::join_handle<int> back(raw);  // dropping it frees the memory
}

TEST_CASE("a killed task's handle is freed when dropped") {
  std::atomic<int> dtors{0};
  std::atomic<bool> parked{false};
  {
    mpg::join_handle<int> h;
    {
      mpg::runtime rt({.procs = 1});
      h = rt.spawn(never_finishes(&dtors, &parked), "orphan");
      REQUIRE(wait_until([&] { return parked.load(); }));
    }
    CHECK(dtors.load() == 1);
  }  // drop: release_frame_memory (LSan/ASan check it)
  CHECK(dtors.load() == 1);
}

namespace {

struct closes_on_destroy {
  mpg::chan<int> c;
  ~closes_on_destroy() { c.close(); }
};

mpg::task<void> parked_receiver(mpg::chan<int> c) { (void)co_await c.recv(); }

mpg::task<void> parked_holding_closer(mpg::chan<int> c, mpg::chan<int> never) {
  closes_on_destroy closer{c};
  (void)co_await never.recv();
}

mpg::task<void> park_receiver_then_closer() {
  mpg::chan<int> c, never;
  mpg::go(parked_receiver(c), "receiver");                   // lower id: killed first
  mpg::go(parked_holding_closer(c, never), "closer-holder");  // closes c when killed
  for (int i = 0; i < 10; ++i) co_await mpg::yield();       // both park (one P)
}

}  // namespace

TEST_CASE("a receiver killed at shutdown leaves its channel sound for a later close") {
  // Without the unlink in ~recv_op, the close() run by the second task's
  // destructor would walk the first task's freed waiter (ASan in CI).
  {
    mpg::runtime rt({.procs = 1});
    rt.block_on(park_receiver_then_closer());
    CHECK(rt.stats().live >= 2);
  }
}

namespace {

mpg::task<void> sleep_long(std::atomic<int>* dtors, std::atomic<int>* started, int i) {
  counted c{dtors};
  started->fetch_add(1);
  // Distinct deadlines, so the timers are spread through the heaps.
  co_await mpg::sleep_for(std::chrono::hours(1) + std::chrono::seconds(i % 7));
}

}  // namespace

TEST_CASE("~runtime kills sleepers on every P without touching their freed timers") {
  // The timers live in the sleepers' frames; the runtime must take them out
  // of the P heaps before it frees the frames (ASan: the frame cache is
  // off there). An M cannot be preempted, so a sleeper that has started is
  // parked with its timer armed by the time ~runtime has stopped the Ms.
  constexpr int kSleepers = 64;
  std::atomic<int> dtors{0};
  std::atomic<int> started{0};
  {
    mpg::runtime rt({.procs = 2});
    for (int i = 0; i < kSleepers; ++i) rt.go(sleep_long(&dtors, &started, i), "sleeper");
    REQUIRE(wait_until([&] { return started.load() == kSleepers; }));
  }
  CHECK(dtors.load() == kSleepers);
}
