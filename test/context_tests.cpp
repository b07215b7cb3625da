// test/context_tests.cpp: the context tree. background() is never
// cancelled; cancel closes done() and sets err() to kCancelled, idempotent
// and callable from any thread; cancellation reaches children and
// grandchildren (with the parent's cause) but never parents or siblings;
// a child of a cancelled parent is born cancelled; deadlines cancel with
// kDeadlineExceeded no earlier than the deadline and propagate down;
// done().recv() works as a select case; dropped children are freed; tasks
// killed at shutdown while waiting on done() leave it sound for a cancel;
// a deadline context dropped by a killed task cancels its timer soundly
// after a killed sleeper's.
#include <doctest/doctest.h>

#include "test_support.hpp"
#include "watchdog.hpp"

#include <mpg/mpg.hpp>

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

bool done_closed(const mpg::context& c) {
  // A closed done() channel yields nullopt at once; a live one has no value.
  mpg::chan<std::monostate> d = c.done();
  return !d.try_recv().has_value() && c.cancelled();
}

TEST_CASE("background is never cancelled") {
  mpg::context bg = mpg::background();
  CHECK(bg.err().ok());
  CHECK_FALSE(bg.cancelled());
  CHECK_FALSE(bg.deadline().has_value());
  CHECK_FALSE(bg.done().try_recv().has_value());
  mpg::context dflt;  // default: background
  CHECK(dflt.err().ok());
}

TEST_CASE("with_cancel: cancel closes done and sets kCancelled; idempotent; structured binding") {
  auto [ctx, cancel] = mpg::with_cancel(mpg::background());
  CHECK(ctx.err().ok());
  cancel();
  CHECK(ctx.err().code() == absl::StatusCode::kCancelled);
  CHECK(done_closed(ctx));
  cancel();  // again: nothing changes
  cancel();
  CHECK(ctx.err().code() == absl::StatusCode::kCancelled);
}

TEST_CASE("cancellation reaches children and grandchildren, never parents or siblings") {
  auto [root, cancel_root] = mpg::with_cancel(mpg::background());
  auto [a, cancel_a] = mpg::with_cancel(root);
  auto [b, cancel_b] = mpg::with_cancel(root);
  auto [a1, cancel_a1] = mpg::with_cancel(a);
  auto [a2, cancel_a2] = mpg::with_cancel(a);
  auto [a1x, cancel_a1x] = mpg::with_cancel(a1);
  auto [b1, cancel_b1] = mpg::with_cancel(b);

  cancel_a1();  // a leaf's parent: only a1 and a1x
  CHECK(a1.cancelled());
  CHECK(a1x.cancelled());
  CHECK_FALSE(a.cancelled());
  CHECK_FALSE(a2.cancelled());
  CHECK_FALSE(root.cancelled());

  cancel_root();  // everything below the root
  for (const mpg::context* c : {&root, &a, &b, &a2, &b1}) {
    CHECK(c->err().code() == absl::StatusCode::kCancelled);
    CHECK(done_closed(*c));
  }
  // A child of a cancelled parent is born cancelled, with the parent's cause.
  auto [late, cancel_late] = mpg::with_cancel(b1);
  CHECK(late.err().code() == absl::StatusCode::kCancelled);
}

mpg::task<std::string> tasks_wake_on_grandchild_done() {
  auto [root, cancel] = mpg::with_cancel(mpg::background());
  std::vector<mpg::context> leaves;
  std::vector<mpg::cancel_func> keep;
  for (int i = 0; i < 3; ++i) {
    auto [child, cc] = mpg::with_cancel(root);
    keep.push_back(cc);
    for (int j = 0; j < 3; ++j) {
      auto [grandchild, gc] = mpg::with_cancel(child);
      keep.push_back(gc);
      leaves.push_back(grandchild);
    }
  }
  std::vector<mpg::join_handle<int>> hs;
  mpg::chan<int> work;  // never sent on
  for (auto& leaf : leaves)
    for (int k = 0; k < 4; ++k)
      hs.push_back(mpg::spawn([](mpg::context c, mpg::chan<int> work, int k) -> mpg::task<int> {
        if (k % 2 == 0) {
          (void)co_await c.done().recv();  // plain wait
        } else {
          auto r = co_await mpg::select(work.recv(), c.done().recv());
          if (r.index() != 1) co_return 0;
        }
        co_return c.err().code() == absl::StatusCode::kCancelled ? 1 : 0;
      }(leaf, work, k)));
  for (int i = 0; i < 20; ++i) co_await mpg::yield();
  cancel();
  int woken = 0;
  for (auto& h : hs) woken += co_await h;
  co_return woken == static_cast<int>(hs.size()) ? "ok"
                                                 : "a waiter on a grandchild missed the cancel";
}

TEST_CASE("tasks waiting on grandchildren's done() wake when the root is cancelled") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(tasks_wake_on_grandchild_done()) == "ok");
}

mpg::task<std::string> timeout_behaviour() {
  const auto start = std::chrono::steady_clock::now();
  auto [ctx, cancel] = mpg::with_timeout(mpg::background(), 3ms);
  auto [child, cancel_child] = mpg::with_cancel(ctx);
  auto [longer, cancel_longer] = mpg::with_timeout(ctx, 1h);  // parent's deadline is earlier
  if (!ctx.deadline() || *ctx.deadline() < start + 3ms) co_return "deadline not recorded";
  if (longer.deadline() != ctx.deadline()) co_return "child deadline is not the earlier one";
  // Live until its deadline: judged by the clock read after err(), so a
  // preemption past the 3 ms (a loaded machine) cannot fail the check.
  const bool live = ctx.err().ok();
  if (!live && std::chrono::steady_clock::now() < start + 3ms) co_return "cancelled too early";
  (void)co_await child.done().recv();
  if (std::chrono::steady_clock::now() < start + 3ms) co_return "deadline fired early";
  if (ctx.err().code() != absl::StatusCode::kDeadlineExceeded) co_return "ctx: wrong cause";
  if (child.err().code() != absl::StatusCode::kDeadlineExceeded) co_return "child: wrong cause";
  if (longer.err().code() != absl::StatusCode::kDeadlineExceeded) co_return "longer: wrong cause";
  cancel();  // after the deadline: no change
  if (ctx.err().code() != absl::StatusCode::kDeadlineExceeded) co_return "cause overwritten";
  // A deadline in the past: cancelled at once.
  auto [past, cancel_past] = mpg::with_deadline(mpg::background(), start - 1s);
  if (past.err().code() != absl::StatusCode::kDeadlineExceeded) co_return "past deadline live";
  // Cancelling before the deadline: kCancelled, and the timer is stopped.
  auto [early, cancel_early] = mpg::with_timeout(mpg::background(), 1h);
  cancel_early();
  if (early.err().code() != absl::StatusCode::kCancelled) co_return "early cancel cause";
  co_return "ok";
}

TEST_CASE(
    "with_timeout / with_deadline: kDeadlineExceeded no earlier than the deadline, inherited") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(timeout_behaviour()) == "ok");
}

mpg::task<std::string> dropped_contexts() {
  // Children dropped without cancel are freed (ASan checks) and the parent
  // can still be cancelled; pending deadline timers die with their context.
  auto [root, cancel] = mpg::with_cancel(mpg::background());
  for (int i = 0; i < 1000; ++i) {
    auto [c, cc] = mpg::with_cancel(root);
    auto [t, tc] = mpg::with_timeout(c, 1h);
    (void)t;
  }
  cancel();
  co_return root.cancelled() ? "ok" : "root not cancelled";
}

TEST_CASE("with_deadline under a cancelled parent: the parent's error, and no timer needed") {
  auto [parent, cancel] = mpg::with_cancel(mpg::background());
  cancel();
  // Past deadline: Go reports the parent's Canceled, not DeadlineExceeded.
  auto [past, c1] = mpg::with_deadline(parent, std::chrono::steady_clock::now() - 1s);
  CHECK(past.err().code() == absl::StatusCode::kCancelled);
  // Future deadline outside any runtime: no timer is armed, so no throw.
  std::optional<std::pair<mpg::context, mpg::cancel_func>> future;
  CHECK_NOTHROW(future.emplace(mpg::with_deadline(parent, std::chrono::steady_clock::now() + 1h)));
  CHECK(future->first.err().code() == absl::StatusCode::kCancelled);
}

TEST_CASE("dropping uncancelled children frees them; their timers are stopped") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(dropped_contexts()) == "ok");
}

TEST_CASE("cancel from plain threads while contexts are created and dropped concurrently") {
  for (int round = 0; round < 50; ++round) {
    auto [root, cancel] = mpg::with_cancel(mpg::background());
    std::atomic<bool> go{false};
    std::vector<std::thread> ts;
    for (int t = 0; t < 3; ++t)
      ts.emplace_back([&, t] {
        while (!go.load()) std::this_thread::yield();
        if (t == 0) {
          cancel();
        } else {
          for (int i = 0; i < 200; ++i) {
            auto [c, cc] = mpg::with_cancel(root);
            auto [g, gc] = mpg::with_cancel(c);
            if (i % 2) gc();
          }
        }
      });
    go.store(true);
    for (auto& th : ts) th.join();
    CHECK(root.err().code() == absl::StatusCode::kCancelled);
    auto [after, ca] = mpg::with_cancel(root);
    CHECK(after.cancelled());
  }
}

// Shutdown: ~runtime kills the tasks still parked and frees their frames.
// Tasks killed while waiting on done() (plainly or in a select) must leave
// the done channel without their waiters, or a cancel() after the runtime is
// gone closes it over freed memory (ASan, where the frame cache is off). The
// deadline timer armed on the dead runtime must not fire or be touched.
mpg::task<mpg::context> park_on_done(mpg::context parent) {
  auto [ctx, cancel] = mpg::with_timeout(parent, 1h);
  (void)cancel;  // dropped: the parent's cancel_func cancels ctx
  mpg::go([](mpg::context ctx) -> mpg::task<void> {
    (void)co_await ctx.done().recv();
  }(ctx), "done waiter");
  mpg::go([](mpg::context ctx) -> mpg::task<void> {
    mpg::chan<int> never;
    (void)co_await mpg::select(never.recv(), ctx.done().recv());
  }(ctx), "select waiter");
  co_await mpg_test::yield_some(10);  // both park (one P)
  co_return ctx;
}

TEST_CASE("context: tasks killed at shutdown waiting on done() leave it sound for a later cancel") {
  auto [root, cancel] = mpg::with_cancel(mpg::background());
  mpg::context ctx;
  {
    mpg::runtime rt({.procs = 1});
    ctx = rt.block_on(park_on_done(root));
    REQUIRE(mpg_test::dump_shows(rt, "chan receive"));
    REQUIRE(mpg_test::dump_shows(rt, "select"));
  }  // kills both waiters
  cancel();
  CHECK(ctx.cancelled());
  CHECK(done_closed(ctx));
}

// A task killed at shutdown holding the only handle to a deadline context
// cancels its timer (~context_node) while the runtime kills tasks. A sleeper
// killed before it (newer: higher id) had its timer in the same heap, below the
// context's (later deadline): the cancel moves it, so it must be out of the
// heap before its frame is freed (ASan, where the frame cache is off).
mpg::task<void> park_sleeper_then_deadline_holder() {
  mpg::go([]() -> mpg::task<void> {
    auto [ctx, cancel] = mpg::with_timeout(mpg::background(), 1h);
    (void)co_await ctx.done().recv();
  }(), "deadline holder");
  mpg::go([]() -> mpg::task<void> { co_await mpg::sleep_for(2h); }(), "sleeper");
  co_await mpg_test::yield_some(10);  // both park (one P)
}

TEST_CASE(
    "context: a deadline dropped by a task killed at shutdown cancels soundly after a killed "
    "sleeper") {
  mpg::runtime rt({.procs = 1});
  rt.block_on(park_sleeper_then_deadline_holder());
  REQUIRE(mpg_test::dump_shows(rt, "sleep"));
  REQUIRE(mpg_test::dump_shows(rt, "chan receive"));
}

// A deadline context cancelled before its deadline (by its cancel_func,
// or by its parent's) keeps no hold on the runtime's timer heaps: its
// handles may go after ~runtime, and the node's destructor must then touch
// nothing of the runtime (ASan: the Ps are freed).
TEST_CASE("context: a cancelled deadline context dropped after its runtime is gone") {
  mpg::context own, child;
  mpg::cancel_func cancel_own, cancel_parent;
  {
    mpg::runtime rt({.procs = 1});
    rt.block_on([&]() -> mpg::task<void> {
      auto [c, cc] = mpg::with_timeout(mpg::background(), 1h);
      cc();  // its timer is taken out of the heap
      own = c;
      cancel_own = cc;
      auto [parent, pc] = mpg::with_cancel(mpg::background());
      auto [k, kc] = mpg::with_timeout(parent, 1h);
      (void)kc;
      pc();  // the child's timer goes with the parent's cancel
      child = k;
      cancel_parent = pc;
      co_return;
    }());
  }
  CHECK(own.err().code() == absl::StatusCode::kCancelled);
  CHECK(child.err().code() == absl::StatusCode::kCancelled);
  own = {};
  cancel_own = {};
  child = {};
  cancel_parent = {};
}

// A deadline fires on a parent whose only owner is its child: the parent's
// cancel holds the child while it cancels it, and the child's last user
// handle goes meanwhile (here from a watcher on the child, as a task woken
// on another M could drop it). When the cancel lets go of the child, the
// child frees the parent, inside the parent's own fire(): the parent's
// destructor must not wait for that fire() to end.
std::optional<mpg::context> g_last_child_handle;

void drop_last_child_handle(mpg::detail::context_watcher*) noexcept {
  g_last_child_handle.reset();
}

TEST_CASE("context: a deadline that frees its own context through a child does not hang") {
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog wd(std::chrono::seconds(20), "a deadline freeing its own context", &rt);
  mpg::detail::context_watcher w;
  w.fn = &drop_last_child_handle;
  rt.block_on([&]() -> mpg::task<void> {
    mpg::chan<std::monostate> child_done;
    {
      auto [parent, cancel_parent] = mpg::with_timeout(mpg::background(), 1ms);
      auto [child, cancel_child] = mpg::with_cancel(parent);
      (void)cancel_parent;
      (void)cancel_child;
      child_done = child.done();
      REQUIRE(child.node_for_internal_use()->watch(&w));
      g_last_child_handle = child;
    }  // the parent lives on as the child's parent only
    (void)co_await child_done.recv();  // the deadline's cancel reached the child
  }());
  CHECK(!g_last_child_handle.has_value());
}

}  // namespace

namespace {
// A chain of contexts, each the child of the one before (a loop that narrows
// ctx = with_cancel(ctx).first; Go runs it at any depth). Dropping the last
// handle frees the chain, and cancelling its root reaches every node: neither
// may recurse once per level on the thread's stack.
constexpr int kChainDepth = 300000;

TEST_CASE("context: a deep chain of contexts is freed without overflowing the stack") {
  mpg::context ctx = mpg::background();
  for (int i = 0; i < kChainDepth; ++i) ctx = mpg::with_cancel(ctx).first;
  ctx = mpg::background();  // the leaf goes, and with it every ancestor
  CHECK(!ctx.cancelled());
}

TEST_CASE("context: a deep chain of contexts is cancelled without overflowing the stack") {
  auto [root, cancel] = mpg::with_cancel(mpg::background());
  std::vector<mpg::context> chain;  // held, so that only the cancel walks it
  chain.reserve(kChainDepth);
  chain.push_back(root);
  for (int i = 0; i < kChainDepth; ++i) chain.push_back(mpg::with_cancel(chain.back()).first);
  cancel();
  CHECK(chain.back().err().code() == absl::StatusCode::kCancelled);
  while (!chain.empty()) chain.pop_back();  // leaf first: no chain to free at once
}
}  // namespace

namespace {
// A context is a handle, like cancel_func, which tolerates being moved from
// (its call does nothing). A moved-from context must stay a valid handle too
// (std types are "valid but unspecified"; the default context is
// background()), not a null pointer that every call dereferences.
TEST_CASE("context: a moved-from context is still a valid handle") {
  auto [ctx, cancel] = mpg::with_cancel(mpg::background());
  mpg::context taken = std::move(ctx);
  cancel();
  CHECK(taken.cancelled());
  CHECK_NOTHROW((void)ctx.cancelled());
  CHECK_NOTHROW((void)ctx.err());
  CHECK_NOTHROW((void)ctx.deadline());
  CHECK_NOTHROW((void)mpg::with_cancel(ctx));
}
}  // namespace

// The destruction rule (a sync object may be destroyed by the last task that
// returns from waiting on it) applied to a context: a task waits on ctx.done()
// while another thread calls the cancel_func that lives in the waiter's frame
// (passed by reference, as a wait_group is). Once done() closes, the waiter
// returns and its frame, the last owner of the node, goes; the cancel must not
// touch the node after the waiter can see the release. Many other waiters on
// done() keep the canceller in close_if_open()'s wake loop while the first one
// returns.
namespace {
std::atomic<const mpg::cancel_func*> g_cancel_ref{nullptr};

mpg::task<void> owner_waits_on_done() {
  auto [parent, cancel_parent] = mpg::with_cancel(mpg::background());
  auto [ctx, cancel] = mpg::with_timeout(parent, 1h);  // a pending timer too
  mpg::chan<std::monostate> d = ctx.done();
  for (int i = 0; i < 300; ++i)
    mpg::go([](mpg::chan<std::monostate> d) -> mpg::task<void> { (void)co_await d.recv(); }(d),
            "other waiter");
  co_await mpg_test::yield_some(20);
  g_cancel_ref.store(&cancel, std::memory_order_release);
  (void)co_await d.recv();
  // Returns: ctx and cancel (the node's last owners) go with the frame.
}
}  // namespace

TEST_CASE("context: a cancel touches nothing of the context once a waiter on done() may free it") {
  for (int round = 0; round < 30; ++round) {
    mpg::runtime rt({.procs = 2});
    mpg_test::watchdog wd(std::chrono::seconds(60), "cancel vs freeing waiter", &rt);
    g_cancel_ref.store(nullptr);
    std::thread canceller([] {
      const mpg::cancel_func* c;
      while ((c = g_cancel_ref.load(std::memory_order_acquire)) == nullptr) {
        std::this_thread::yield();
      }
      (*c)();  // the release; *c and its node may go while this runs
    });
    rt.block_on(owner_waits_on_done());
    canceller.join();
  }
}

// Go's CancelFunc holds the context's lock while it
// closes Done and cancels the children, so once any call to it returns -
// the first or a later one, from any goroutine - the whole subtree is
// cancelled. Here a later call returns at once while the first is still
// walking the subtree: after cancel() returned, a descendant is still live.
TEST_CASE("context: after a later cancel() returns, every descendant is cancelled too") {
  constexpr int kKids = 2000;
  int live_after_return = 0;
  for (int round = 0; round < 50 && live_after_return == 0; ++round) {
    auto [root, cancel] = mpg::with_cancel(mpg::background());
    std::vector<std::pair<mpg::context, mpg::cancel_func>> kids;
    kids.reserve(kKids);
    for (int i = 0; i < kKids; ++i) kids.push_back(mpg::with_cancel(root));
    std::thread first([&cancel] { cancel(); });
    while (!root.cancelled()) std::this_thread::yield();  // the first call has begun
    cancel();  // a later call: returns, so (as in Go) the subtree is cancelled
    for (auto& k : kids) live_after_return += k.first.cancelled() ? 0 : 1;
    first.join();
  }
  CHECK(live_after_return == 0);
}

// cancels racing at every level of a tree (cancel_funcs from
// plain threads and tasks, deadline timers firing at once), with tasks
// waiting on done() that drop their handles as soon as they wake. Looks for
// a hang (losers waiting for winners), a use after free, or a live node
// after a cancel returned.
namespace {
struct tree_round {
  std::vector<std::pair<mpg::context, mpg::cancel_func>> mids;
  std::vector<std::pair<mpg::context, mpg::cancel_func>> leaves;
  std::pair<mpg::context, mpg::cancel_func> root;
};

mpg::task<void> build_and_race(int round, std::atomic<int>* bad) {
  tree_round t;
  t.root = mpg::with_cancel(mpg::background());
  for (int i = 0; i < 16; ++i) {
    if (i % 2 == 0)
      t.mids.push_back(mpg::with_timeout(t.root.first, std::chrono::microseconds(50 * (i % 5))));
    else
      t.mids.push_back(mpg::with_cancel(t.root.first));
    for (int k = 0; k < 8; ++k) {
      if (k % 3 == 0)
        t.leaves.push_back(
            mpg::with_timeout(t.mids.back().first, std::chrono::microseconds(30 * k)));
      else
        t.leaves.push_back(mpg::with_cancel(t.mids.back().first));
    }
  }
  mpg::wait_group wg;
  // Waiters on done() of each leaf, each holding the leaf's only other
  // handles (moved into the frame) and dropping them on wake.
  for (auto& l : t.leaves) {
    wg.add(1);
    mpg::go([](mpg::context c, mpg::cancel_func f, mpg::wait_group* wg) -> mpg::task<void> {
      (void)co_await c.done().recv();
      f();  // a later cancel: returns with the subtree cancelled
      wg->done();
    }(l.first, l.second, &wg));
  }
  // Tasks cancelling mids.
  for (std::size_t i = 1; i < t.mids.size(); i += 3) {
    wg.add(1);
    mpg::go([](mpg::cancel_func f, mpg::wait_group* wg) -> mpg::task<void> {
      f();
      wg->done();
      co_return;
    }(t.mids[i].second, &wg));
  }
  // A plain thread cancels the root, and the middle ones, at once.
  std::thread th([&t, round] {
    if (round % 2) t.root.second();
    for (std::size_t i = 0; i < t.mids.size(); i += 2) t.mids[i].second();
    t.root.second();
  });
  t.root.second();
  for (auto& l : t.leaves)
    if (!l.first.cancelled()) bad->fetch_add(1);
  t.leaves.clear();
  co_await wg.wait();
  th.join();  // the thread's root cancel returned only once all is cancelled
}
}  // namespace

TEST_CASE("context: racing cancels at every level and deadlines finish") {
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog wd(std::chrono::seconds(120), "context cancel race", &rt);
  std::atomic<int> bad{0};
  const int rounds = mpg_test::kSanitized ? 100 : 300;
  for (int round = 0; round < rounds; ++round) rt.block_on(build_and_race(round, &bad));
  CHECK(bad.load() == 0);
}

// a cancel of an ancestor that starts while another call is
// still cancelling a descendant's subtree. The descendant's winner unlinks it
// from its parent at the end of cancel_one(), before it walks its children,
// so the ancestor's cancel no longer meets it, does not wait for it, and
// returns with descendants still live (Go: the child leaves the parent's map
// only after its own subtree is cancelled).
TEST_CASE("context: an ancestor's cancel returns with a descendant's subtree cancelled") {
  constexpr int kKids = 2000;
  int live_after_return = 0;
  for (int round = 0; round < 50 && live_after_return == 0; ++round) {
    auto [root, cancel_root] = mpg::with_cancel(mpg::background());
    auto [mid, cancel_mid] = mpg::with_cancel(root);
    std::vector<std::pair<mpg::context, mpg::cancel_func>> kids;
    kids.reserve(kKids);
    for (int i = 0; i < kKids; ++i) kids.push_back(mpg::with_cancel(mid));
    std::thread first([&cancel_mid] { cancel_mid(); });
    // The mid's winner has walked past cancel_one(mid) (so mid is unlinked
    // from root) once it has cancelled a kid; the walk starts at the oldest.
    while (!kids.front().first.cancelled()) std::this_thread::yield();
    cancel_root();  // the root's winner: must return with the whole tree cancelled
    for (auto& k : kids) live_after_return += k.first.cancelled() ? 0 : 1;
    first.join();
  }
  CHECK(live_after_return == 0);
}
