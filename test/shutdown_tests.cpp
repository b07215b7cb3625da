// test/shutdown_tests.cpp: ~runtime with tasks still alive. Parked and
// runnable tasks are destroyed (their frames, and every frame they await,
// run their destructors and are freed: LSan in the ASan build checks the
// freeing), a join_handle that outlives its runtime can still be
// dropped, sleepers killed on every P leave no timer in a freed frame, and
// a waiter parked on a primitive in another killed task's frame (a parent's,
// or a younger task's) never unlinks itself from freed memory.
// The shutdown report goes to stderr.
#include <doctest/doctest.h>

#include "test_support.hpp"

#include <mpg/mpg.hpp>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <memory>
#include <thread>

namespace {

// Counts destructor runs: one lives in every frame of interest.
struct counted {
  std::atomic<int>* dtors;
  ~counted() { dtors->fetch_add(1); }
};

// Parks the current G with nothing that will ever ready it.
struct park_forever {
  using mpg_awaiter = mpg::detail::runtime_awaiter_tag;
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

// A fork-join tree: every inner call spawns a child and joins it, which
// runs inline on the joiner's P or, on 2 Ps, may be stolen first.
mpg::task<long> tree(int depth) {
  if (depth == 0) co_return 1;
  mpg::join_handle<long> left = mpg::spawn(tree(depth - 1));
  const long right = co_await tree(depth - 1);
  const long l = co_await left;
  co_return l + right;
}

mpg::task<void> ends_at_once() { co_return; }

mpg::task<void> spawn_and_park(std::atomic<int>* dtors, std::atomic<bool>* parked) {
  for (int i = 0; i < 100; ++i) mpg::go(ends_at_once());
  mpg::go(inline_leaf(dtors, parked), "parked-inside");
  co_return;
}

}  // namespace

TEST_CASE("~runtime kills the tasks left parked after thousands ended every way") {
  // ~runtime looks for live tasks only when its counts of Gs spawned and
  // ended say that some are live (shutdown.cpp). Here Gs are made and
  // ended every way there is: from the runtime's own tasks and from
  // outside it (block_on, spawn, go), joined inline, joined after another
  // P took them, detached; the two left parked must still be found.
  for (unsigned procs : {1u, 2u}) {
    CAPTURE(procs);
    std::atomic<int> dtors{0};
    std::atomic<bool> parked_inside{false};
    std::atomic<bool> parked_outside{false};
    {
      mpg::runtime rt({.procs = procs});
      CHECK(rt.block_on(tree(12)) == 4096);
      for (int i = 0; i < 100; ++i) rt.go(ends_at_once());
      rt.block_on(spawn_and_park(&dtors, &parked_inside));
      mpg::join_handle<int> h = rt.spawn(never_finishes(&dtors, &parked_outside), "parked");
      REQUIRE(mpg_test::wait_until([&] { return parked_inside.load() && parked_outside.load(); }));
      CHECK(rt.stats().live >= 2);
      CHECK(dtors.load() == 0);
    }
    CHECK(dtors.load() == 2);
  }
}

TEST_CASE("~runtime destroys a chain of tasks parked in joins, running every destructor") {
  for (unsigned procs : {1u, 2u}) {
    CAPTURE(procs);
    std::atomic<int> dtors{0};
    std::atomic<bool> parked{false};
    constexpr int kChain = 5;  // spawned tasks: kChain + 1; inline frames: 3
    {
      mpg::runtime rt({.procs = procs});
      rt.go(join_chain(&dtors, &parked, kChain), "chain-root");
      REQUIRE(mpg_test::wait_until([&] { return parked.load(); }));
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
    REQUIRE(mpg_test::wait_until([&] { return started.load() == kTasks; }));
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
    REQUIRE(mpg_test::wait_until([&] { return parked.load(); }));
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
      REQUIRE(mpg_test::wait_until([&] { return parked.load(); }));
    }
    CHECK(dtors.load() == 1);
  }  // drop: release_frame_memory (LSan/ASan check it)
  CHECK(dtors.load() == 1);
}

namespace {

// A local whose destructor, run by ~runtime's kill of its task, lets another
// thread drop the task's join_handle and waits until it has: the drop lands
// in the middle of the frame's destroy. (Bounded: a drop that never comes
// fails the test's checks, not the wait.)
struct drop_window {
  std::atomic<int>* phase;  // 1: the destroy has begun; 2: the handle is dropped
  ~drop_window() {
    phase->store(1);
    (void)mpg_test::wait_until([&] { return phase->load() == 2; }, std::chrono::seconds(10));
  }
};

mpg::task<int> dropped_while_destroyed(std::atomic<int>* dtors, std::atomic<bool>* parked,
                                       std::atomic<int>* phase) {
  counted c{dtors};  // destroyed after the window: it reads the frame then
  drop_window w{phase};
  parked->store(true);
  co_await park_forever{};
  co_return 1;
}

}  // namespace

// The kill destroys the frame first and settles the join word at its free
// (frame.hpp): a handle dropped during the destroy finds the task
// unfinished and detaches it, and the free then frees the memory, once.
// (Settled before the destroy, the drop freed the memory under it: ASan's
// heap-use-after-free in counted's destructor, and with the frame cache the
// frame listed twice, on the dropping thread and on the killing one.)
TEST_CASE("a handle dropped while ~runtime destroys its task frees the frame once, after") {
  std::atomic<int> dtors{0};
  std::atomic<bool> parked{false};
  std::atomic<int> phase{0};
  const bool cached = mpg::detail::frame_cache_enabled();
  auto rt = std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1});
  mpg::join_handle<int> h = rt->spawn(dropped_while_destroyed(&dtors, &parked, &phase), "victim");
  REQUIRE(mpg_test::wait_until([&] { return parked.load(); }));
  void* frame = h.release().address();
  // The size before the kill marks the header (the word is the killer's then).
  const std::size_t size = mpg::detail::header_of(frame)->size;
  void* dropper_got = nullptr;
  std::thread dropper([&] {
    using handle = std::coroutine_handle<mpg::detail::promise<int>>;
    mpg::join_handle<int> mine(handle::from_address(frame));
    if (!mpg_test::wait_until([&] { return phase.load() == 1; }, std::chrono::seconds(10))) return;
    mine.detach();  // the drop, in the destroy's window
    // What this thread's frame cache hands out next for that size.
    if (cached) dropper_got = mpg::detail::allocate_frame(size);
    phase.store(2);
  });
  rt.reset();
  dropper.join();
  CHECK(phase.load() == 2);
  CHECK(dtors.load() == 1);
  if (!cached) return;
  // The killing thread's free recycled the frame here, and only here.
  void* mine = mpg::detail::allocate_frame(size);
  CHECK(mine == frame);
  CHECK(dropper_got != frame);
  mpg::detail::free_frame(mine, size);
  mpg::detail::free_frame(dropper_got, size);
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
  mpg::go(parked_holding_closer(c, never), "closer-holder");  // closes c when killed
  mpg::go(parked_receiver(c), "receiver");                   // newer: killed first
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
    REQUIRE(mpg_test::wait_until([&] { return started.load() == kSleepers; }));
  }
  CHECK(dtors.load() == kSleepers);
}

// Frames that borrow a sync object from another killed frame. ~runtime frees
// the killed frames one after another; a waiter parked on a primitive that
// lives in another task's frame must not unlink itself from freed memory,
// whichever of the two frames goes first (ASan: the frame cache is off).
namespace {

// The parent owns the primitives in its frame, holds them, and spawns
// children that park on them; then it parks for good itself.
mpg::task<void> parent_owning_primitives(std::atomic<int>* parked) {
  mpg::mutex m;
  mpg::semaphore sem(0);
  mpg::wait_group wg;
  mpg::rwmutex rw;
  mpg::chan<int> ch;
  co_await m.lock();
  co_await rw.lock();
  wg.add(1);
  mpg::go([](mpg::mutex* m) -> mpg::task<void> { co_await m->lock(); }(&m), "mutex-child");
  mpg::go([](mpg::semaphore* s) -> mpg::task<void> { co_await s->acquire(); }(&sem), "sem-child");
  mpg::go([](mpg::wait_group* wg) -> mpg::task<void> { co_await wg->wait(); }(&wg), "wg-child");
  mpg::go([](mpg::rwmutex* rw) -> mpg::task<void> { co_await rw->lock_shared(); }(&rw),
          "rw-child");
  // By reference: the parent's handle is the only one.
  mpg::go([](mpg::chan<int>* ch) -> mpg::task<void> { (void)co_await ch->recv(); }(&ch),
          "chan-child");
  parked->store(1);
  co_await park_forever{};
}

// The reverse: older tasks park on primitives that live in a younger
// task's frame. The younger one publishes its primitives, then parks.
struct borrowed {
  std::atomic<mpg::mutex*> m{nullptr};
  std::atomic<mpg::semaphore*> sem{nullptr};
  std::atomic<mpg::wait_group*> wg{nullptr};
};

template <class T>
mpg::task<T*> take(std::atomic<T*>* p) {
  while (p->load() == nullptr) co_await mpg::yield();
  co_return p->load();
}

mpg::task<void> younger_owner(borrowed* b) {
  mpg::mutex m;
  mpg::semaphore sem(0);
  mpg::wait_group wg;
  co_await m.lock();
  wg.add(1);
  b->m.store(&m);
  b->sem.store(&sem);
  b->wg.store(&wg);
  co_await park_forever{};
}

mpg::task<void> older_borrowers(borrowed* b) {
  mpg::go(
      [](borrowed* b) -> mpg::task<void> {
        mpg::mutex* m = co_await take(&b->m);
        co_await m->lock();
      }(b),
      "old-mutex");
  mpg::go(
      [](borrowed* b) -> mpg::task<void> {
        mpg::semaphore* s = co_await take(&b->sem);
        co_await s->acquire();
      }(b),
      "old-sem");
  mpg::go(
      [](borrowed* b) -> mpg::task<void> {
        mpg::wait_group* wg = co_await take(&b->wg);
        co_await wg->wait();
      }(b),
      "old-wg");
  mpg::go(younger_owner(b), "young-owner");
  co_await mpg_test::yield_some(50);  // one P: all of them park
}

}  // namespace

TEST_CASE("~runtime frees a parent owning primitives whose children wait on them") {
  std::atomic<int> parked{0};
  {
    mpg::runtime rt({.procs = 1});
    rt.go(parent_owning_primitives(&parked), "parent");
    REQUIRE(mpg_test::wait_until([&] {
      return parked.load() == 1 && mpg_test::dump_shows(rt, "mutex lock") &&
             mpg_test::dump_shows(rt, "semaphore acquire") &&
             mpg_test::dump_shows(rt, "wait_group wait") &&
             mpg_test::dump_shows(rt, "rwmutex lock_shared") &&
             mpg_test::dump_shows(rt, "chan receive");
    }));
  }
}

TEST_CASE("~runtime frees a younger task owning primitives that older tasks wait on") {
  borrowed b;
  {
    mpg::runtime rt({.procs = 1});
    rt.block_on(older_borrowers(&b));
    REQUIRE(mpg_test::dump_shows(rt, "mutex lock"));
    REQUIRE(mpg_test::dump_shows(rt, "semaphore acquire"));
    REQUIRE(mpg_test::dump_shows(rt, "wait_group wait"));
  }
}
