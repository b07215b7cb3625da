// test/fork_join_tests.cpp: work-first fork-join (lib/sched/work_deque.hpp,
// spawn.hpp's join). Spawned children wait in their P's deque and a join of
// the newest one runs it inline, so a fork-join tree runs depth-first on
// one P: its live set is proportional to its depth, not its breadth. The
// FIFO queue and the deque's oldest entries keep their turns against a task
// that spawns forever.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
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
    for (int i = 0; i < fanout; ++i)
      hs.push_back(mpg::spawn(tree(live, num + i * sub, sub, fanout)));
    for (auto& h : hs) sum += co_await h;
  }
  live->leave();
  co_return sum;
}

// tasks_run(): how many tasks the scheduler has started, on every P.
std::uint64_t tasks_run(const mpg::runtime& rt) {
  std::uint64_t run = 0;
  for (std::uint64_t n : rt.stats().tasks_run) run += n;
  return run;
}

mpg::task<long> fib(int n) {
  if (n < 2) co_return n;
  mpg::join_handle<long> a = mpg::spawn(fib(n - 1));
  long b = co_await fib(n - 2);
  co_return co_await a + b;
}

// fib's value, and with it its spawns: a call with n >= 2 spawns one task,
// fib_number(n + 1) - 1 in all.
constexpr long fib_number(int n) { return n < 2 ? n : fib_number(n - 1) + fib_number(n - 2); }

}  // namespace

TEST_CASE("a fork-join tree runs depth-first on one P: the live set follows the depth") {
  mpg::runtime_options o;
  o.procs = 1;
  mpg::runtime rt(o);
  live_count live;
  // 10-ary, depth 6: 1,111,111 tasks (depth 5 under the sanitizers).
  const long leaves = mpg_test::kSanitized ? 100'000 : 1'000'000;
  const long sum = rt.block_on(tree(&live, 0, leaves, 10));
  CHECK(sum == leaves * (leaves - 1) / 2);
  CHECK(live.now.load() == 0);
  // Started and unfinished tasks. Depth-first, that is the path from the
  // root (7 levels), plus a path for each subtree that an oldest-spawn
  // turn started out of order (sysmon.cpp, "Oldest spawns": a few at
  // most, since a turn waits for the deque to shrink back). Breadth-first
  // would hold whole levels: hundreds of thousands. (Turns every 488th
  // tick, whatever the deque, give a peak in the thousands here: their
  // subtrees pile up.)
  CAPTURE(live.peak.load());
  CHECK(live.peak.load() <= 200);
}

TEST_CASE("a join of the newest spawned child runs it inline on one P") {
  mpg::runtime rt({.procs = 1});
  auto total_run = [&] { return tasks_run(rt); };
  rt.block_on([]() -> mpg::task<void> { co_return; }());
  const std::uint64_t spawned_before = rt.stats().spawned;
  const std::uint64_t run_before = total_run();
  // fib(16): 1,596 spawns; every join finds its child at the bottom of the
  // deque, so the scheduler runs only block_on's root task. (A tree small
  // enough that g++'s unoptimised chain of transfers stays under half the
  // M's stack: past that, the transfer guard resumes the chain from the
  // loop, stack_guard.hpp. Under AddressSanitizer, whose stack frames are
  // larger, fib(12): 232 spawns.)
  const int n = mpg_test::kSanitized ? 12 : 16;
  CHECK(rt.block_on(fib(n)) == fib_number(n));
  const std::uint64_t spawns = static_cast<std::uint64_t>(fib_number(n + 1) - 1);
  CHECK(rt.stats().spawned - spawned_before >= spawns);
  CAPTURE(total_run() - run_before);
  CHECK(total_run() - run_before <= 2);
}

TEST_CASE("joins in spawn order take each child from under its younger siblings on one P") {
  mpg::runtime rt({.procs = 1});
  auto total_run = [&] { return tasks_run(rt); };
  rt.block_on([]() -> mpg::task<void> { co_return; }());
  const std::uint64_t run_before = total_run();
  live_count live;
  // 10-ary, 1,000 leaves: 1,110 spawns. A node joins its first child from
  // under the nine spawned after it (work_deque.hpp, take_private_if) and
  // then finds each later one at the bottom of the deque, so the scheduler
  // runs only the children of the few nodes whose first child the deque
  // had published for thieves (a spawn into a deque with nothing public
  // publishes): 35 here, where parking at every node's first join had it
  // run 1,224.
  CHECK(rt.block_on(tree(&live, 0, 1000, 10)) == 1000L * 999 / 2);
  CAPTURE(total_run() - run_before);
  CHECK(total_run() - run_before <= 100);
}

// fib(25) joins 121,392 children inline on one P: one chain of transfers
// from block_on's root to the end. g++'s unoptimised build overflowed the
// stack (SIGSEGV) at fib(22) before the transfer guard
// (mpg/detail/sched/stack_guard.hpp), which unwinds such a chain to the M's
// loop whenever it fills half of the stack.
TEST_CASE("a fork-join tree joined inline on one P does not overflow the stack") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(fib(25)) == 75'025);
}

namespace {
mpg::task<long> fib_join_op(int n) {
  if (n < 2) co_return n;
  mpg::join_handle<long> a = mpg::spawn(fib_join_op(n - 1));
  long b = co_await fib_join_op(n - 2);
  co_return co_await a.join() + b;
}
}  // namespace

// The same through `co_await h.join()`, which links the child into the
// await chain as `co_await h` does: the transfer guard walks that chain
// before it unwinds, and found an unlinked child (g++'s unoptimised build
// overflowed the stack).
TEST_CASE("a fork-join tree joined with join() on one P does not overflow the stack") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(fib_join_op(25)) == 75'025);
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

// A chain that keeps the deque larger than it was at an oldest-spawn turn:
// each link joins the ballast its predecessor spawned (the newest entry:
// it runs inline), spawns a ballast and its successor, and, for 48 links
// after the decoy ran, an extra entry that stays behind.
struct growing_spawner {
  static constexpr long kMaxLinks = 20'000'000;
  std::atomic<bool> decoy_ran{false};
  std::atomic<bool> setter_ran{false};
  long links = 0;  // the chain's own (one P, one link at a time)
  int grow_left = 48;
  bool stopped_by_setter = false;  // written by the last link
  mpg::wait_group ended;
};

mpg::task<void> ballast() { co_return; }

mpg::task<void> growing_chain(growing_spawner* s, mpg::join_handle<void> prev) {
  if (prev.valid()) co_await prev;
  ++s->links;
  if (s->setter_ran.load(std::memory_order_relaxed) || s->links >= growing_spawner::kMaxLinks) {
    s->stopped_by_setter = s->setter_ran.load(std::memory_order_relaxed);
    s->ended.done();
    co_return;
  }
  if (s->decoy_ran.load(std::memory_order_relaxed) && s->grow_left > 0) {
    --s->grow_left;
    mpg::go(ballast());
  }
  mpg::join_handle<void> next_ballast = mpg::spawn(ballast());
  mpg::go(growing_chain(s, std::move(next_ballast)));
}

}  // namespace

TEST_CASE("an endless spawner whose deque has grown still gives its oldest spawn a turn") {
  // The decoy gets the first oldest-spawn turn; then the deque stays larger
  // than at that turn, so the setter's turn is the one given to a grown
  // deque (sysmon.cpp, kGrownFirstWait). Without it the chain runs until
  // kMaxLinks and the setter never does.
  mpg::runtime_options o;
  o.procs = 1;
  mpg::runtime rt(o);
  growing_spawner s;
  s.ended.add(1);
  rt.block_on([&]() -> mpg::task<void> {
    mpg::go([](growing_spawner* st) -> mpg::task<void> {
      st->decoy_ran.store(true, std::memory_order_relaxed);
      co_return;
    }(&s));
    mpg::go([](growing_spawner* st) -> mpg::task<void> {
      st->setter_ran.store(true, std::memory_order_relaxed);
      co_return;
    }(&s));
    mpg::go(growing_chain(&s, mpg::join_handle<void>()));
    co_await s.ended.wait();
  }());
  CAPTURE(s.links);
  CHECK(s.decoy_ran.load());
  CHECK(s.stopped_by_setter);  // the setter ran while the chain still spawned
  CHECK(s.grow_left == 0);
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

namespace {
mpg::task<void> count_run(std::atomic<int>* ran) {
  ran->fetch_add(1);
  co_return;
}
}  // namespace

// A task that spawns and then computes without spawning, joining or
// suspending does not come back to its deque to publish its spawns; sysmon
// publishes them (work_deque.hpp, "Forced publication"), so the idle P
// runs them while the spawner keeps its P. Without that this task would
// wait for its children for ever; the bound makes that a failed check.
TEST_CASE("spawns of a task that computes without suspending reach an idle P") {
  mpg::runtime_options o;
  o.procs = 2;
  o.long_task_threshold = std::chrono::hours(1);  // no report: the loop is the point
  mpg::runtime rt(o);
  std::atomic<int> ran{0};
  constexpr int kChildren = 5;
  const bool all_ran = rt.block_on([&]() -> mpg::task<bool> {
    std::vector<mpg::join_handle<void>> hs;
    for (int i = 0; i < kChildren; ++i) hs.push_back(mpg::spawn(count_run(&ran)));
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (ran.load() < kChildren && std::chrono::steady_clock::now() < give_up) {
    }
    const bool all = ran.load() == kChildren;
    for (auto& h : hs) co_await h;
    co_return all;
  }());
  CHECK(all_ran);
  // The first spawn was public at once; the others needed sysmon.
  CHECK(rt.stats().forced_publications >= 1);
}
