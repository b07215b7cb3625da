// test/task_edge_tests.cpp: task<T>, spawn and the runtime's options at
// their edges: a spent task spawned, absurd option values, a million-deep
// fork-join chain, a result whose move throws, dump() during shutdown.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mpg/mpg.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

mpg::task<int> forty_two() { co_return 42; }

mpg::task<int> spawn_after_await() {
  mpg::task<int> t = forty_two();
  int a = co_await t;  // t is spent: its frame is at its final suspend
  int b = -1;
  try {
    // Spawning a spent task must be refused as awaiting it again is.
    b = co_await mpg::spawn(std::move(t));
  } catch (const std::logic_error&) {
    b = 0;
  }
  co_return a + b;
}

mpg::task<int> go_after_await() {
  mpg::task<void> t = []() -> mpg::task<void> { co_return; }();
  co_await t;
  try {
    mpg::go(std::move(t));
  } catch (const std::logic_error&) {
    co_return 1;
  }
  co_return 0;
}

}  // namespace

TEST_CASE("spawning a task that was already awaited throws std::logic_error") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(spawn_after_await()) == 42);
}

TEST_CASE("go() of a task that was already awaited throws std::logic_error") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(go_after_await()) == 1);
}

TEST_CASE("runtime::block_on of a task that was already awaited throws std::logic_error") {
  mpg::runtime rt({.procs = 1});
  mpg::task<int> t = forty_two();
  auto first = [](mpg::task<int>* t) -> mpg::task<int> { co_return co_await *t; };
  CHECK(rt.block_on(first(&t)) == 42);
  CHECK_THROWS_AS((void)rt.block_on(std::move(t)), std::logic_error);
}

TEST_CASE("runtime_options: an absurd local_queue_capacity is refused, not allocated") {
  // A power of two: 1u << 31 slots would be 40 GiB a P.
  CHECK_THROWS_AS(mpg::runtime({.procs = 1, .local_queue_capacity = 1u << 31}),
                  std::invalid_argument);
}

TEST_CASE("runtime_options: 4096 Ps start, run a task and stop") {
  const auto t0 = std::chrono::steady_clock::now();
  {
    mpg::runtime rt({.procs = 4096});
    CHECK(rt.block_on(forty_two()) == 42);
  }
  MESSAGE("4096 Ps: " << std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now() - t0)
                             .count()
                      << " ms");
}

namespace {
mpg::task<void> spin_yield(std::atomic<bool>* stop) {
  while (!stop->load()) co_await mpg::yield();
}
mpg::task<int> park_forever(mpg::chan<int> c, std::atomic<bool>* parked) {
  parked->store(true);
  auto v = co_await c.recv();  // nobody sends
  co_return v ? *v : -1;
}
}  // namespace

TEST_CASE("dump() from a plain thread while tasks run and end lists the live tasks") {
  std::atomic<bool> stop{false};
  mpg::chan<int> c;
  std::atomic<bool> parked{false};
  auto rt = std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 2});
  for (int i = 0; i < 4; ++i) rt->go(spin_yield(&stop), "spinner");
  auto h = rt->spawn(park_forever(c, &parked), "parked");
  h.detach();
  REQUIRE(mpg_test::wait_until([&] { return parked.load(); }));
  std::atomic<bool> go{false};
  int with_the_parked_task = 0;
  std::thread dumper([&] {
    go.store(true);
    for (int k = 0; k < 50; ++k) {
      std::ostringstream os;
      rt->dump(os);
      if (os.str().find("parked") != std::string::npos) ++with_the_parked_task;
    }
  });
  while (!go.load()) std::this_thread::yield();
  std::thread stopper([&] {
    std::this_thread::yield();
    stop.store(true);
  });
  stopper.join();
  dumper.join();
  CHECK(with_the_parked_task == 50);  // every dump lists the live tasks
  rt.reset();
}

namespace {
mpg::task<int> fork_nest(int depth) {
  if (depth == 0) co_return 0;
  auto h = mpg::spawn(fork_nest(depth - 1));
  co_return 1 + co_await h;
}
}  // namespace

TEST_CASE("a fork-join chain a million spawns deep completes") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(fork_nest(1000000)) == 1000000);
}

namespace {
// Its move throws once armed: the result is taken by a throwing move.
struct throwing_move {
  static inline std::atomic<bool> armed{false};
  std::unique_ptr<int> p = std::make_unique<int>(7);
  throwing_move() = default;
  throwing_move(throwing_move&& o) : p(std::move(o.p)) {
    if (armed.load()) throw std::runtime_error("move");
  }
};
mpg::task<throwing_move> make_tm() { co_return throwing_move{}; }
mpg::task<int> take_tm() {
  int caught = 0;
  throwing_move::armed.store(true);
  try {
    (void)co_await make_tm();
  } catch (const std::runtime_error&) {
    ++caught;
  }
  auto h = mpg::spawn(make_tm());
  try {
    (void)co_await h;
  } catch (const std::runtime_error&) {
    ++caught;
  }
  co_return caught;
}
}  // namespace

TEST_CASE("a result whose move throws is reported at the await, nothing leaks") {
  throwing_move::armed.store(false);
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(take_tm()) == 2);
  throwing_move::armed.store(false);
}

namespace {
std::atomic<bool> g_deep_reached{false};

mpg::task<int> nest(int depth, mpg::chan<int> c) {
  if (depth == 0) {
    g_deep_reached.store(true);
    auto v = co_await c.recv();  // parks at the bottom of the chain
    co_return v ? *v : 0;
  }
  co_return 1 + co_await nest(depth - 1, c);
}

struct counted {  // a local of the outermost frame, destroyed last
  int* destroyed;
  ~counted() { ++*destroyed; }
};

// Each level spawns the next and joins it: the join runs the child inline
// (it is the newest entry of the P's deque), so the chain is one G, and its
// kill destroys each child from its parent's handle (drop_join, spawn.hpp:
// the kJoinInline branch), one frame's destruction inside its parent's as
// for plain awaits.
mpg::task<int> nest_spawned(int depth, mpg::chan<int> c) {
  if (depth == 0) {
    g_deep_reached.store(true);
    auto v = co_await c.recv();
    co_return v ? *v : 0;
  }
  auto child = mpg::spawn(nest_spawned(depth - 1, c));
  co_return 1 + co_await child;
}

// kill_deep_chain(): a task whose chain (made by nest) is kDepth frames deep
// parks at its bottom; ~runtime kills it. Returns how many times the local
// of its outermost frame was destroyed. ThreadSanitizer keeps a shadow call
// stack of its own, of 64 Ki calls a thread, which so deep a destruction
// overflows: there the chain is only deep enough to take the deep-chain
// thread.
int kill_deep_chain(mpg::task<int> (*nest)(int, mpg::chan<int>), const char* name) {
  constexpr int kDepth = mpg_test::kThreadSanitized ? 12000 : 1000000;
  g_deep_reached.store(false);
  mpg::chan<int> c;
  int destroyed = 0;
  {
    mpg::runtime rt({.procs = 1});
    rt.go([](mpg::task<int> (*nest)(int, mpg::chan<int>), mpg::chan<int> c,
             int* destroyed) -> mpg::task<void> {
      counted outer{destroyed};
      (void)co_await nest(kDepth, c);
    }(nest, c, &destroyed), name);
    REQUIRE(mpg_test::wait_until([] { return g_deep_reached.load(); }));
  }  // ~runtime destroys the root frame, and with it the whole chain
  return destroyed;
}
}  // namespace

// Running a chain of a million awaits takes no stack (task.hpp); destroying
// it at shutdown, one frame's destruction inside its parent's, takes a
// thread of its own (shutdown.cpp, destroy_root).
TEST_CASE("a chain of a million nested awaits parked at its bottom is killed at shutdown") {
  CHECK(kill_deep_chain(&nest, "deep") == 1);
}

TEST_CASE("a chain of a million inline joins parked at its bottom is killed at shutdown") {
  CHECK(kill_deep_chain(&nest_spawned, "deep-joins") == 1);
}

// ~runtime kills newest first. A task that selects on the join of a task
// through a handle held in a younger, unrelated task's frame: the joined
// task (younger still) is killed first, which takes the select's waiter off
// its join word (J3); then the handle's owner, whose frame (the handle) goes
// and whose dropped handle frees the joined task's frame; then the
// selecting task, whose join case's destructor (J4) read the word through
// the freed handle and frame (ASan: heap-use-after-free in join_op::word).
namespace {
std::atomic<mpg::join_handle<void>*> g_younger_handle{nullptr};

mpg::task<void> recv_forever(mpg::chan<int> c) { (void)co_await c.recv(); }

mpg::task<void> select_on_younger_handle(std::atomic<bool>* selecting) {
  mpg::join_handle<void>* h = nullptr;
  while ((h = g_younger_handle.load()) == nullptr) co_await mpg::yield();
  selecting->store(true);
  (void)co_await mpg::select(*h, mpg::after(1h).recv());
}

mpg::task<void> own_handle(mpg::chan<int> c) {
  mpg::join_handle<void> h = mpg::spawn(recv_forever(c));
  g_younger_handle.store(&h);
  (void)co_await c.recv();
}

// kill_rounds(): 20 rounds of start(rt, c, first, &waiting), which spawns
// the round's tasks (c: a channel nobody sends on; first: a handle a task
// may take over), then, once the waiting task says it waits and the dump
// shows it parked on `reason`, ~runtime.
template <class Start>
void kill_rounds(const char* reason, Start start) {
  for (int round = 0; round < 20; ++round) {
    g_younger_handle = nullptr;
    mpg::chan<int> c;
    mpg::runtime rt({.procs = 2});
    mpg::join_handle<void> first;
    std::atomic<bool> waiting{false};
    start(rt, c, first, &waiting);
    REQUIRE(mpg_test::wait_until([&] { return waiting.load(); }));
    REQUIRE(mpg_test::wait_until([&] { return mpg_test::dump_shows(rt, reason); }));
  }
}
}  // namespace

TEST_CASE("~runtime: a select on a join through a handle in a younger task's frame") {
  kill_rounds("select", [](mpg::runtime& rt, mpg::chan<int> c, mpg::join_handle<void>&,
                           std::atomic<bool>* selecting) {
    rt.go(select_on_younger_handle(selecting), "selector");
    rt.go(own_handle(c), "owner");
  });
}

// The same with the joined task the oldest of the three (spawned first, its
// handle moved into the younger owner's frame): the owner's kill drops the
// handle with the select's waiter in the join word, and the selecting
// task's kill then read the word through the freed handle.
namespace {
std::atomic<mpg::join_handle<void>*> g_handle_to_take{nullptr};

mpg::task<void> take_handle(mpg::chan<int> c) {
  mpg::join_handle<void> h = std::move(*g_handle_to_take.load());
  g_younger_handle.store(&h);
  (void)co_await c.recv();
}
}  // namespace

TEST_CASE("~runtime: a select on an older task's join through a handle in a younger frame") {
  kill_rounds("select", [](mpg::runtime& rt, mpg::chan<int> c, mpg::join_handle<void>& first,
                           std::atomic<bool>* selecting) {
    first = rt.spawn(recv_forever(c), "joined");
    g_handle_to_take = &first;
    rt.go(select_on_younger_handle(selecting), "selector");
    rt.go(take_handle(c), "owner");
  });
}

// The same with a plain join: the joining task the oldest, the joined task
// next, the handle's owner the youngest. The owner's kill drops the handle
// with the joiner's G in the join word; the joined task's kill then frees
// its frame; the joiner's kill must not take itself back out of that word
// (shutdown.cpp, take_back_joiner), which is gone.
namespace {
mpg::task<void> join_younger_handle(std::atomic<bool>* joining) {
  mpg::join_handle<void>* h = nullptr;
  while ((h = g_younger_handle.load()) == nullptr) co_await mpg::yield();
  joining->store(true);
  co_await *h;
}
}  // namespace

TEST_CASE("~runtime: a plain join, oldest, through a handle in a younger frame of an older task") {
  kill_rounds("join", [](mpg::runtime& rt, mpg::chan<int> c, mpg::join_handle<void>& joined,
                         std::atomic<bool>* joining) {
    rt.go(join_younger_handle(joining), "joiner");
    joined = rt.spawn(recv_forever(c), "joined");
    g_handle_to_take = &joined;
    rt.go(take_handle(c), "owner");
  });
}
