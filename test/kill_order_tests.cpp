// test/kill_order_tests.cpp: ~runtime's kill (lib/sched/shutdown.cpp, step
// 6) in the orders it can meet: which frame goes first among the waiter,
// the waker or owner, the object's frame and a join handle's frame, with a
// wake-up in flight (readied but not run) or not, and across two runtimes
// destroyed one after the other (docs/api.md, ~runtime), and a task's own
// join word met inside its destroy.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "mpg/mpg.hpp"
#include "sched/scheduler.hpp"
#include "test_support.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;

namespace {

// live_tasks(): whether rt's dump counts n live tasks.
bool live_tasks(const mpg::runtime& rt, int n) {
  std::ostringstream os;
  rt.dump(os);
  const std::string head = absl::StrCat("mpg: ", n, " live task(s)");
  return os.str().find(head) == 0;
}

// all_waiting(): rt's dump counts n live tasks, none running or runnable.
bool all_waiting(const mpg::runtime& rt, int n) {
  std::ostringstream os;
  rt.dump(os);
  const std::string d = os.str();
  return d.find(absl::StrCat("mpg: ", n, " live task(s)")) == 0 &&
         d.find("[runnable") == std::string::npos && d.find("[running") == std::string::npos;
}

}  // namespace

// --- A join run inline through a handle in a younger task's frame ----------
//
// One P. The joiner (oldest) waits for the address of a handle that a
// younger task (the owner) keeps in its frame; the owner spawns the child,
// sends the address, which readies the joiner into runnext, and parks. The
// joiner runs next and finds the child the newest entry of the P's spawn
// deque: it runs it inline (kJoinInline), and the child parks inside the
// joiner's G. ~runtime kills the owner first, whose handle's drop destroys
// the child's frame (drop_join, kJoinInline); the joiner's kill must not
// read its await chain through that frame. The child parks at the bottom
// of a chain of awaits, one deep enough for the deep-chain thread
// (shutdown.cpp, destroy_root) in the second case: the owner's kill
// destroys that chain through its handle.
namespace {

std::atomic<bool> g_child_reached{false};

// nest(): `depth` awaits down, then waits on c.
mpg::task<void> nest(int depth, mpg::chan<int> c) {
  if (depth == 0) {
    g_child_reached.store(true);
    (void)co_await c.recv();
    co_return;
  }
  co_await nest(depth - 1, c);
}

mpg::task<void> join_inline_through(mpg::chan<mpg::join_handle<void>*> addr,
                                    std::atomic<int>* joining) {
  auto h = co_await addr.recv();
  joining->store(1);
  co_await **h;
}

mpg::task<void> own_child_handle(mpg::chan<mpg::join_handle<void>*> addr, mpg::chan<int> never,
                                 int depth) {
  mpg::join_handle<void> h = mpg::spawn(nest(depth, never));
  mpg::join_handle<void>* p = &h;
  (void)co_await addr.send(p);
  (void)co_await never.recv();
}

// inline_join_round(): one round, with the child `depth` awaits down,
// reached within `bound`.
void inline_join_round(int depth, std::chrono::seconds bound) {
  g_child_reached.store(false);
  mpg::chan<int> never;
  mpg::chan<mpg::join_handle<void>*> addr;
  std::atomic<int> joining{0};
  mpg::runtime rt({.procs = 1});
  rt.go(join_inline_through(addr, &joining), "joiner");
  REQUIRE(mpg_test::wait_until([&] { return mpg_test::dump_shows(rt, "chan receive"); }, 10s));
  rt.go(own_child_handle(addr, never, depth), "owner");
  REQUIRE(mpg_test::wait_until([&] { return joining.load() != 0; }, 10s));
  REQUIRE(mpg_test::wait_until([] { return g_child_reached.load(); }, bound));
  // Both wait on `never`: the owner, and the child inside the joiner's G
  // (run inline: no G of its own, so two tasks, neither parked on a join).
  REQUIRE(mpg_test::wait_until([&] { return all_waiting(rt, 2); }, 10s));
  CHECK_FALSE(mpg_test::dump_shows(rt, "join"));
}

}  // namespace

TEST_CASE("~runtime: a join run inline through a handle in a younger frame, owner killed first") {
  for (int round = 0; round < 20; ++round) inline_join_round(0, 10s);
}

TEST_CASE("~runtime: a deep chain run inline through a handle in a younger frame") {
  inline_join_round(mpg_test::kThreadSanitized ? 12000 : 1000000, 20s);
}

// --- A select on another runtime's join, readied and killed before it ran ---
//
// Runtime A's select task waits on the join of a task of runtime B through
// a handle in a younger task of A (the owner), or in its own frame. A's only
// M is held by a task that returns once ~A has begun, so a select readied
// meanwhile never runs: by the joined task's end (J3 from B's M), or by
// another case (a channel send from this thread). ~A kills the owner first
// (its handle's drop meets Done, or the select's waiter: J4 must not come
// back through it), then the select. B's task, if still running, must then
// end soundly.
namespace {

mpg::task<void> hold_m_until_stopping(std::atomic<int>* started) {
  mpg::detail::scheduler* s = mpg::detail::current_g()->sched;
  started->store(1);
  (void)mpg_test::wait_until([s] { return s->stopping(); }, 20s);
  co_return;
}

// value_turns: the place (1 for the first) at which each of B's two tasks
// of a round took its value, counted in `taken`.
struct value_turns {
  std::atomic<int> taken{0}, joined{0}, blocker{0};
};

// value_after(): c's value (-1 if closed), noting in *turn its place among
// the takes counted in *taken. After the note it ends without suspending.
// Relaxed: in the round that reads them the notes are made on B's one P,
// one task at a time, and read after block_on returned (see there).
mpg::task<int> value_after(mpg::chan<int> c, std::atomic<int>* taken, std::atomic<int>* turn) {
  auto v = co_await c.recv();
  turn->store(taken->fetch_add(1, std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  co_return v ? *v : -1;
}

// kill_mark: a local of a task that never ends here, so destroyed by
// ~runtime's kill of the task: records in *turn the place of that kill
// among the marks of the round (1 for the first), counted in *kills.
// Relaxed: the kill runs on the thread of ~runtime, which reads the turns
// after it (or on a thread it joins first, for a deep chain).
struct kill_mark {
  std::atomic<int>* kills;
  std::atomic<int>* turn;
  ~kill_mark() {
    turn->store(kills->fetch_add(1, std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
};

// The turns of the kills of the select and of the owner in one round.
struct kill_turns {
  std::atomic<int> kills{0}, select{0}, owner{0};
};

// Selects on *h (from `addr`) and on `other`; 1 when it ends (never, here).
mpg::task<void> select_on(mpg::chan<mpg::join_handle<int>*> addr, mpg::chan<int> other,
                          std::atomic<int>* selecting, std::atomic<int>* ended,
                          kill_turns* turns) {
  kill_mark mark{&turns->kills, &turns->select};
  auto h = co_await addr.recv();
  selecting->store(1);
  (void)co_await mpg::select(**h, other.recv());
  ended->store(1);
}

mpg::task<void> own_handle(mpg::join_handle<int> h, mpg::chan<mpg::join_handle<int>*> addr,
                           mpg::chan<int> never, kill_turns* turns) {
  kill_mark mark{&turns->kills, &turns->owner};
  mpg::join_handle<int>* p = &h;
  (void)co_await addr.send(p);
  (void)co_await never.recv();
}

// How the select is readied before ~A.
enum class readied_by { joined_end, other_case, nothing };

void cross_runtime_select_round(readied_by how) {
  mpg::runtime b({.procs = 1});
  mpg::chan<int> feed(1), other, never;
  mpg::chan<mpg::join_handle<int>*> addr;
  std::atomic<int> selecting{0}, ended{0}, started{0};
  kill_turns turns;
  value_turns took;
  mpg::join_handle<int> hb = b.spawn(value_after(feed, &took.taken, &took.joined), "b.joined");
  {
    auto a = std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1});
    a->go(select_on(addr, other, &selecting, &ended, &turns), "a.select");
    REQUIRE(mpg_test::wait_until([&] { return mpg_test::dump_shows(*a, "chan receive"); }, 10s));
    a->go(own_handle(std::move(hb), addr, never, &turns), "a.owner");
    REQUIRE(mpg_test::wait_until([&] { return mpg_test::dump_shows(*a, "select"); }, 10s));
    a->go(hold_m_until_stopping(&started));
    REQUIRE(mpg_test::wait_until([&] { return started.load() != 0; }, 10s));
    // No dump of A from here on: its only P is held, so a dump would wait
    // for it.
    if (how == readied_by::joined_end) {
      REQUIRE(feed.try_send(7));  // B's task ends: J3 readies the select on A
      mpg::chan<int> zero(1);
      REQUIRE(zero.try_send(0));
      CHECK(b.block_on(value_after(zero, &took.taken, &took.blocker)) == 0);
      // The round's premise: B's one P ran the joined task's end, J3
      // included, before block_on's task (B's global queue is FIFO, and the
      // joined task was queued or readied first), so the select was readied
      // before ~A. The joined task ends right after its take, without
      // suspending: if its take came first, so did its end. block_on returns
      // after its task ended, on that P after any task that ran before it.
      CHECK(took.joined.load(std::memory_order_relaxed) == 1);
      CHECK(took.blocker.load(std::memory_order_relaxed) == 2);
    } else if (how == readied_by::other_case) {
      // Unbuffered: taken only by the select's waiting case, which wins.
      REQUIRE(other.try_send(1));
    }
  }  // ~A: the owner (handle) first, then the select, neither having run
  CHECK(ended.load() == 0);
  // The order the round is about (step 6 kills the newest first): the
  // owner's handle is dropped while the select is still there, readied or
  // parked. With the select killed first, the round would test nothing of
  // what it is named for.
  CHECK(turns.owner.load(std::memory_order_relaxed) == 1);
  CHECK(turns.select.load(std::memory_order_relaxed) == 2);
  if (how != readied_by::joined_end) {
    // B's task is detached now (the owner's kill dropped the handle): it
    // ends and frees itself.
    REQUIRE(feed.try_send(7));
    CHECK(mpg_test::wait_until([&] { return live_tasks(b, 0); }, 10s));
  }
}

}  // namespace

TEST_CASE("~runtime: a select readied by another runtime's joined task, killed before it ran") {
  for (int round = 0; round < 10; ++round) cross_runtime_select_round(readied_by::joined_end);
}

TEST_CASE("~runtime: a select readied by another case with a cross-runtime join case queued") {
  for (int round = 0; round < 10; ++round) cross_runtime_select_round(readied_by::other_case);
}

TEST_CASE("~runtime: a parked select on a cross-runtime join through a younger owner's handle") {
  for (int round = 0; round < 10; ++round) cross_runtime_select_round(readied_by::nothing);
}

// --- Waiters of runtime A on primitives in a task frame of runtime B ----
//
// B's task owns a mutex, a semaphore and a rwmutex, all taken, and parks;
// A's tasks queue on them. Destroyed one at a time (docs/api.md), in either
// order: A first (its waiters unlink, P3), or B first (the primitives
// detach A's waiters, whose kill then leaves the freed queues alone).
namespace {

struct owned {
  std::atomic<mpg::mutex*> m{nullptr};
  std::atomic<mpg::semaphore*> s{nullptr};
  std::atomic<mpg::rwmutex*> rw{nullptr};
};

mpg::task<void> own_taken_primitives(owned* o, mpg::chan<int> never) {
  mpg::mutex m;
  mpg::semaphore s(1);
  mpg::rwmutex rw;
  // Fresh: each take succeeds (the waiters below park only if they did).
  (void)m.try_lock();
  (void)s.try_acquire();
  (void)rw.try_lock();
  o->m.store(&m);
  o->s.store(&s);
  o->rw.store(&rw);
  (void)co_await never.recv();
}

mpg::task<void> lock_owned(mpg::mutex* m) { co_await m->lock(); }
mpg::task<void> acquire_owned(mpg::semaphore* s) { co_await s->acquire(); }
mpg::task<void> lock_shared_owned(mpg::rwmutex* rw) { co_await rw->lock_shared(); }

void waiters_on_other_runtime(bool a_first) {
  owned o;
  mpg::chan<int> never;
  auto b = std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1});
  auto a = std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 2});
  b->go(own_taken_primitives(&o, never), "b.owner");
  REQUIRE(mpg_test::wait_until([&] { return o.rw.load() != nullptr; }, 10s));
  for (int i = 0; i < 2; ++i) {
    a->go(lock_owned(o.m.load()));
    a->go(acquire_owned(o.s.load()));
    a->go(lock_shared_owned(o.rw.load()));
  }
  REQUIRE(mpg_test::wait_until([&] { return all_waiting(*a, 6); }, 10s));
  CHECK(mpg_test::dump_shows(*a, "mutex lock"));
  CHECK(mpg_test::dump_shows(*a, "semaphore acquire"));
  CHECK(mpg_test::dump_shows(*a, "rwmutex lock_shared"));
  if (a_first) {
    a.reset();
    b.reset();
  } else {
    b.reset();
    a.reset();
  }
}

}  // namespace

TEST_CASE("~runtime: waiters on primitives in another runtime's frame, their runtime first") {
  for (int round = 0; round < 10; ++round) waiters_on_other_runtime(true);
}

TEST_CASE("~runtime: waiters on primitives in another runtime's frame, the owner's first") {
  for (int round = 0; round < 10; ++round) waiters_on_other_runtime(false);
}

// --- A task's join word met inside the task's own destroy -----------------
//
// The kill settles a root's join word once the root's destroy is over
// (frame.hpp, the shutdown's transition), so what that destroy destroys
// finds the task unfinished: its own handle, owned by its frame, is dropped
// (the word becomes Detached, and the free at the end frees the frame,
// once); a select case on its join, in the frames of a child that a joiner
// runs inline and whose handle the task's frame owns, is withdrawn (J4,
// spawn.hpp: its waiter is still in the word). (With the word made Killed
// before the destroy, the drop freed the frame under the destroy, ASan's
// heap-use-after-free, and J4 waited for the kill's wake-up, which comes
// after the destroy: the killing thread hung.)
namespace {

mpg::task<void> own_handle([[maybe_unused]] std::unique_ptr<mpg::join_handle<void>> mine,
                           mpg::chan<int> never) {
  (void)co_await never.recv();
}

// The child, run inline by select_inline's G: selects on the join of the
// task that owns its handle.
mpg::task<void> select_on_owner(mpg::join_handle<void>** owner, mpg::chan<int> never) {
  auto r = co_await mpg::select(**owner, never.recv());
  (void)r;
}

mpg::task<void> wait_on(mpg::chan<int> never) { (void)co_await never.recv(); }

mpg::task<void> select_inline(mpg::chan<int> never) {
  // Published at once (its P's spawn deque had no public entry), so that
  // the next two spawns stay private, where a join takes a buried child.
  mpg::go(wait_on(never), "filler");
  mpg::join_handle<void>* owner_handle = nullptr;
  auto child = std::make_unique<mpg::join_handle<void>>(
      mpg::spawn(select_on_owner(&owner_handle, never), "child"));
  mpg::join_handle<void>* c = child.get();
  // Younger than the child, so killed before this task.
  mpg::join_handle<void> owner = mpg::spawn(own_handle(std::move(child), never), "owner");
  owner_handle = &owner;
  // The child is under the owner in this P's spawn deque: run inline.
  co_await *c;
}

}  // namespace

TEST_CASE("~runtime: a task whose frame owns its own handle is freed once") {
  mpg::chan<int> never;
  mpg::runtime rt({.procs = 1});
  auto own = std::make_unique<mpg::join_handle<void>>();
  mpg::join_handle<void>* slot = own.get();
  *slot = rt.spawn(own_handle(std::move(own), never), "self-owner");
  REQUIRE(mpg_test::wait_until([&] { return all_waiting(rt, 1); }, 10s));
}

TEST_CASE("~runtime: a select on a task's join, destroyed inside that task's destroy") {
  mpg::chan<int> never;
  mpg_test::watchdog wd(30s, "a select case destroyed inside its task's destroy");
  mpg::runtime rt({.procs = 1});
  rt.go(select_inline(never), "selector");
  // The selector, parked on the select inside the child it runs inline (no
  // G of the child's, no join parked), the filler and the owner.
  REQUIRE(mpg_test::wait_until([&] { return all_waiting(rt, 3); }, 10s));
  REQUIRE(mpg_test::dump_shows(rt, "select"));
  CHECK_FALSE(mpg_test::dump_shows(rt, "join"));
}
