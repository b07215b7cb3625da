// test/fork_join_tests.cpp: work-first fork-join (lib/sched/work_deque.hpp,
// spawn.hpp's join). Spawned children wait in their P's deque and a join of
// the newest one runs it inline, so a fork-join tree runs depth-first on
// one P: its live set is proportional to its depth, not its breadth. The
// FIFO queue keeps its turn against a task that spawns forever.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "mpg/mpg.hpp"
#include "test_support.hpp"

namespace {

struct live_count {
  std::atomic<int> now{0};
  std::atomic<int> peak{0};
  void enter() {
    const int n = now.fetch_add(1) + 1;
    int p = peak.load();
    while (n > p && !peak.compare_exchange_weak(p, n)) {
    }
  }
  void leave() { now.fetch_sub(1); }
};

// A skynet tree: each node spawns `fanout` children, then joins them in
// spawn order (so all but the last join find their child under newer ones).
mpg::task<long> tree(live_count* live, long num, long size, int fanout) {
  live->enter();
  long sum = num;
  if (size > 1) {
    sum = 0;
    std::vector<mpg::join_handle<long>> hs;
    const long sub = size / fanout;
    for (int i = 0; i < fanout; ++i) hs.push_back(mpg::spawn(tree(live, num + i * sub, sub, fanout)));
    for (auto& h : hs) sum += co_await h;
  }
  live->leave();
  co_return sum;
}

mpg::task<long> fib(int n) {
  if (n < 2) co_return n;
  mpg::join_handle<long> a = mpg::spawn(fib(n - 1));
  long b = co_await fib(n - 2);
  co_return co_await a + b;
}

}  // namespace

TEST_CASE("a fork-join tree runs depth-first on one P: the live set follows the depth") {
  mpg::runtime_options o;
  o.procs = 1;
  mpg::runtime rt(o);
  live_count live;
  const long leaves = 100'000;  // 10-ary, depth 5: 111,111 tasks
  const long sum = rt.block_on(tree(&live, 0, leaves, 10));
  CHECK(sum == leaves * (leaves - 1) / 2);
  CHECK(live.now.load() == 0);
  // Started and unfinished tasks. Depth-first, that is the path from the
  // root (6 levels), plus the subtrees that the fairness turn starts from
  // the deque's old end every 488th tick (find_runnable.cpp), each again a
  // path: about 135 here. Breadth-first would hold whole levels: tens of
  // thousands.
  CAPTURE(live.peak.load());
  CHECK(live.peak.load() <= 1'000);
}

TEST_CASE("a join of the newest spawned child runs it inline on one P") {
  mpg::runtime_options o;
  o.procs = 1;
  mpg::runtime rt(o);
  auto total_run = [&] {
    std::uint64_t run = 0;
    for (std::uint64_t n : rt.stats().tasks_run) run += n;
    return run;
  };
  rt.block_on([]() -> mpg::task<void> { co_return; }());
  const std::uint64_t spawned_before = rt.stats().spawned;
  const std::uint64_t run_before = total_run();
  CHECK(rt.block_on(fib(20)) == 6765);
  // 10,945 spawns; every join finds its child at the bottom of the deque,
  // so the scheduler runs only block_on's root task.
  CHECK(rt.stats().spawned - spawned_before >= 10'945);
  CAPTURE(total_run() - run_before);
  CHECK(total_run() - run_before <= 2);
}

TEST_CASE("fork-join on two Ps: stolen children resume their parents") {
  mpg::runtime_options o;
  o.procs = 2;
  mpg::runtime rt(o);
  live_count live;
  for (int round = 0; round < (mpg_test::kSanitized ? 2 : 10); ++round) {
    CHECK(rt.block_on(fib(18)) == 2584);
    const long leaves = 10'000;
    CHECK(rt.block_on(tree(&live, 0, leaves, 10)) == leaves * (leaves - 1) / 2);
  }
  CHECK(live.now.load() == 0);
}

namespace {

// An endless chain: every task spawns its successor and ends, so the spawn
// deque is never empty.
mpg::task<void> chain(std::atomic<bool>* stop, std::atomic<long>* links, mpg::wait_group* wg) {
  links->fetch_add(1, std::memory_order_relaxed);
  if (!stop->load(std::memory_order_relaxed)) mpg::go(chain(stop, links, wg));
  else wg->done();
  co_return;
}

mpg::task<void> yielder(std::atomic<bool>* stop, int yields) {
  for (int i = 0; i < yields; ++i) co_await mpg::yield();  // to the FIFO queue
  stop->store(true, std::memory_order_relaxed);
}

}  // namespace

TEST_CASE("a task that spawns forever does not starve the FIFO queue") {
  mpg::runtime_options o;
  o.procs = 1;
  mpg::runtime rt(o);
  std::atomic<bool> stop{false};
  std::atomic<long> links{0};
  mpg::wait_group chain_ended;
  chain_ended.add(1);
  rt.block_on([&]() -> mpg::task<void> {
    auto y = mpg::spawn(yielder(&stop, 50));
    mpg::go(chain(&stop, &links, &chain_ended));
    co_await y;
    co_await chain_ended.wait();
  }());
  // The yielder finished while the chain ran: it got its turns, first from
  // the deque's old end, then from the ring. (Without the fairness turn it
  // never runs and this hangs.)
  CHECK(stop.load());
  CHECK(links.load() > 0);
}

namespace {

mpg::task<int> gated(mpg::oneshot_receiver<void> rx) {
  (void)co_await rx;
  co_return 7;
}
mpg::task<int> trivial() { co_return 1; }

}  // namespace

TEST_CASE("joining another runtime's task never takes a local spawn that has its id") {
  // Ids are per runtime: a G of this runtime at the bottom of the joiner's
  // deque can carry the id of a child spawned on another runtime. The join
  // must leave it there (it runs later, once) and park for the real child.
  mpg::runtime a({.procs = 1});
  mpg::runtime b({.procs = 1});
  // Move b's ids past the first ones a's spawns will take.
  for (int i = 0; i < 20; ++i) CHECK(b.block_on(trivial()) == 1);
  auto [tx, rx] = mpg::oneshot<void>();
  std::thread sender;
  const int got = a.block_on([&, rx = std::move(rx)]() mutable -> mpg::task<int> {
    mpg::join_handle<int> remote = b.spawn(gated(std::move(rx)));
    std::vector<mpg::join_handle<int>> locals;
    bool matched = false;
    for (int i = 0; i < 4096 && !matched; ++i) {
      locals.push_back(mpg::spawn(trivial()));
      matched = locals.back().id() == remote.id();
    }
    CAPTURE(remote.id());
    CAPTURE(locals.front().id());
    CHECK(matched);  // the newest local spawn now has the remote child's id
    // Release the remote child once this task waits in its join.
    sender = std::thread([&] {
      while (!mpg_test::dump_shows(a, "join")) std::this_thread::yield();
      tx.send();
    });
    int sum = co_await remote;
    for (auto& h : locals) sum += co_await h;
    co_return sum - static_cast<int>(locals.size());
  }());
  sender.join();
  CHECK(got == 7);
}
