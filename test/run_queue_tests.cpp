// test/run_queue_tests.cpp: a P's local run queue (lib/sched/run_queue.hpp) as a
// seam, with tiny capacities to reach the full/half/steal edges; a
// concurrent owner-versus-thieves stress; and local-queue overflow to the
// global queue in a running runtime.
#include <doctest/doctest.h>

#include <mpg/mpg.hpp>

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "fake_gs.hpp"
#include "mpg/detail/sync/cpu_relax.hpp"
#include "sched/run_queue.hpp"

namespace mpg::detail {
struct run_queue_test_access {
  static run_queue::owner owner_of(run_queue& q) { return run_queue::owner(q); }
};
}  // namespace mpg::detail

namespace {

using mpg::detail::g;
using mpg_test::fake_gs;
using mpg::detail::run_queue;

// own(): the owner side of a queue. In the runtime only the M holding the
// P can make one (machine::local_runq()); the test is every queue's owner.
run_queue::owner own(run_queue& q) { return mpg::detail::run_queue_test_access::owner_of(q); }

g* pop(run_queue& q, bool skip_runnext = false, bool* from_next = nullptr) {
  bool dummy = false;
  return own(q).pop(
      skip_runnext ? mpg::detail::runnext_policy::skip : mpg::detail::runnext_policy::take,
      from_next != nullptr ? from_next : &dummy);
}

mpg::detail::runnext_policy runnext(bool take) {
  return take ? mpg::detail::runnext_policy::take : mpg::detail::runnext_policy::skip;
}

}  // namespace

TEST_CASE("push_tail fills the ring, then returns false") {
  for (std::uint32_t cap : {4u, 8u}) {
    CAPTURE(cap);
    fake_gs gs(cap + 1);
    run_queue q(cap);
    CHECK(q.capacity() == cap);
    for (std::uint32_t i = 0; i < cap; ++i) CHECK(own(q).push_tail(gs[i]));
    CHECK(q.size() == cap);
    CHECK_FALSE(own(q).push_tail(gs[cap]));
    CHECK(q.size() == cap);
    // Popping one makes room for one.
    CHECK(pop(q) == gs[0]);
    CHECK(own(q).push_tail(gs[cap]));
    CHECK_FALSE(own(q).push_tail(gs[0]));
  }
}

TEST_CASE("pop is FIFO across wrap-around") {
  fake_gs gs(40);
  run_queue q(4);
  std::size_t next_in = 0, next_out = 0;
  // Keep 0..4 items queued while 40 pass through a ring of 4.
  while (next_out < gs.n) {
    while (next_in < gs.n && own(q).push_tail(gs[next_in])) ++next_in;
    bool from_next = true;
    g* gp = pop(q, false, &from_next);
    REQUIRE(gp != nullptr);
    CHECK_FALSE(from_next);
    CHECK(gp == gs[next_out]);
    ++next_out;
  }
  CHECK(pop(q) == nullptr);
  CHECK(q.size() == 0);
  CHECK(q.empty_seq_cst());
}

TEST_CASE("runnext is popped first and a displaced G is returned") {
  fake_gs gs(5);
  run_queue q(4);
  CHECK(own(q).push_tail(gs[0]));
  CHECK(own(q).push_tail(gs[1]));
  CHECK(own(q).put_runnext(gs[2]) == nullptr);
  CHECK(q.has_runnext());
  CHECK(q.size() == 3);
  CHECK(own(q).put_runnext(gs[3]) == gs[2]);  // displaced: the caller queues it
  bool from_next = false;
  CHECK(pop(q, false, &from_next) == gs[3]);
  CHECK(from_next);
  CHECK_FALSE(q.has_runnext());
  CHECK(pop(q, false, &from_next) == gs[0]);
  CHECK_FALSE(from_next);

  SUBCASE("skip_runnext takes the queue first, then falls back to runnext") {
    CHECK(own(q).put_runnext(gs[4]) == nullptr);
    CHECK(pop(q, true, &from_next) == gs[1]);
    CHECK_FALSE(from_next);
    CHECK(pop(q, true, &from_next) == gs[4]);
    CHECK(from_next);
    CHECK(pop(q, true, &from_next) == nullptr);
  }
}

TEST_CASE("the switches' pop leaves public spawns to the full pop, ahead of the ring") {
  fake_gs gs(3);
  run_queue q(8);
  bool from_next = false;
  CHECK(own(q).push_spawn(gs[0]));  // the first spawn of an idle deque is public
  CHECK(own(q).push_tail(gs[1]));
  // pop_switch makes no call, and taking a public spawn back is one: it
  // declines rather than run the ring's gs[1] out of order.
  CHECK(own(q).pop_switch(mpg::detail::runnext_policy::take, &from_next) == nullptr);
  CHECK(q.size() == 2);
  CHECK(pop(q) == gs[0]);
  CHECK(pop(q) == gs[1]);
  // Private spawns it pops itself, newest first.
  CHECK(own(q).push_spawn(gs[0]));  // public
  CHECK(own(q).push_spawn(gs[2]));  // private
  CHECK(own(q).pop_switch(mpg::detail::runnext_policy::take, &from_next) == gs[2]);
  CHECK_FALSE(from_next);
  CHECK(pop(q) == gs[0]);
  CHECK(pop(q) == nullptr);
}

TEST_CASE("take_half removes the older half in order") {
  fake_gs gs(8);
  run_queue q(8);
  for (std::size_t i = 0; i < 8; ++i) REQUIRE(own(q).push_tail(gs[i]));
  g* out[8] = {};
  CHECK(own(q).take_half(out) == 4);
  for (std::size_t i = 0; i < 4; ++i) CHECK(out[i] == gs[i]);
  CHECK(q.size() == 4);
  for (std::size_t i = 4; i < 8; ++i) CHECK(pop(q) == gs[i]);
  // One item: half of it is nothing.
  REQUIRE(own(q).push_tail(gs[0]));
  CHECK(own(q).take_half(out) == 0);
  CHECK(pop(q) == gs[0]);
}

TEST_CASE("push_tail_chain appends a linked batch in order across wrap-around") {
  fake_gs gs(12);
  run_queue q(8);
  // Move head and tail to 5, so that the batch wraps past the ring's end.
  for (std::size_t i = 0; i < 5; ++i) REQUIRE(own(q).push_tail(gs[i]));
  for (std::size_t i = 0; i < 5; ++i) REQUIRE(pop(q) == gs[i]);
  REQUIRE(own(q).push_tail(gs[5]));
  // A chain of 6 (gs[6]..gs[11]) through g::link; push the first 5 of it.
  for (std::size_t i = 6; i < 11; ++i) gs[i]->link = gs[i + 1];
  gs[11]->link = nullptr;
  CHECK(own(q).push_tail_chain(gs[6], 5) == gs[11]);  // the rest of the chain
  CHECK(q.size() == 6);
  CHECK(own(q).free_slots() == 2);
  for (std::size_t i = 5; i < 11; ++i) CHECK(pop(q) == gs[i]);
  CHECK(pop(q) == nullptr);
  // The whole chain: what follows it is its last link.
  CHECK(own(q).push_tail_chain(gs[6], 6) == nullptr);
  for (std::size_t i = 6; i < 12; ++i) CHECK(pop(q) == gs[i]);
  CHECK(q.size() == 0);
}

TEST_CASE("steal_into takes half, rounded up, and returns the last one to run") {
  fake_gs gs(8);
  for (std::uint32_t queued : {1u, 2u, 5u, 8u}) {
    CAPTURE(queued);
    run_queue victim(8);
    run_queue thief(8);
    for (std::uint32_t i = 0; i < queued; ++i) REQUIRE(own(victim).push_tail(gs[i]));
    const std::uint32_t want = queued - queued / 2;
    std::uint32_t count = 0;
    g* run = victim.steal_into(own(thief), runnext(false), &count);
    CHECK(count == want);
    CHECK(run == gs[want - 1]);
    CHECK(thief.size() == want - 1);
    for (std::uint32_t i = 0; i + 1 < want; ++i) CHECK(pop(thief) == gs[i]);
    CHECK(pop(thief) == nullptr);
    CHECK(victim.size() == queued - want);
    for (std::uint32_t i = want; i < queued; ++i) CHECK(pop(victim) == gs[i]);
  }
  SUBCASE("capacity 4") {
    run_queue victim(4);
    run_queue thief(4);
    for (std::size_t i = 0; i < 4; ++i) REQUIRE(own(victim).push_tail(gs[i]));
    std::uint32_t count = 0;
    CHECK(victim.steal_into(own(thief), runnext(false), &count) == gs[1]);
    CHECK(count == 2);
    CHECK(pop(thief) == gs[0]);
    CHECK(pop(victim) == gs[2]);
    CHECK(pop(victim) == gs[3]);
  }
}

TEST_CASE("steal_into takes runnext only when asked and the queue is empty") {
  fake_gs gs(3);
  run_queue victim(4);
  run_queue thief(4);
  std::uint32_t count = 7;
  CHECK(victim.steal_into(own(thief), runnext(true), &count) == nullptr);  // nothing at all
  CHECK(count == 0);
  CHECK(own(victim).put_runnext(gs[0]) == nullptr);
  CHECK(victim.steal_into(own(thief), runnext(false), &count) == nullptr);
  CHECK(count == 0);
  CHECK(victim.has_runnext());
  // With a queued G, the queue is stolen, not runnext.
  REQUIRE(own(victim).push_tail(gs[1]));
  CHECK(victim.steal_into(own(thief), runnext(true), &count) == gs[1]);
  CHECK(count == 1);
  CHECK(victim.has_runnext());
  CHECK(victim.steal_into(own(thief), runnext(true), &count) == gs[0]);
  CHECK(count == 1);
  CHECK_FALSE(victim.has_runnext());
  CHECK(thief.size() == 0);
}

namespace {

// One owner pushes (tail, chains and runnext), pops and takes halves; two thieves
// steal into their own queues and drain them. Every G must come out once.
void stress(std::uint32_t cap, std::size_t n) {
  fake_gs gs(n);
  mpg_test::exactly_once tally(gs);
  auto got = [&](g* gp) { tally.got(gp); };
  run_queue owner_q(cap);

  auto thief = [&](bool take_next) {
    run_queue mine(cap);
    while (tally.total() < n) {
      std::uint32_t count = 0;
      g* gp = owner_q.steal_into(own(mine), runnext(take_next), &count);
      if (gp == nullptr) {
        std::this_thread::yield();
        continue;
      }
      got(gp);
      while (g* more = pop(mine)) got(more);
    }
  };
  std::thread t1(thief, false);
  std::thread t2(thief, true);

  std::vector<g*> half(cap / 2 + 1);
  std::size_t next = 0;
  std::uint64_t rnd = 12345;
  while (next < n) {
    rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
    const unsigned op = static_cast<unsigned>(rnd >> 60);
    if (op < 9) {
      g* gp = gs[next++];
      if (op < 3) gp = own(owner_q).put_runnext(gp);
      while (gp != nullptr && !own(owner_q).push_tail(gp)) {
        // Full: take half out, as local_put does for the global queue.
        const std::uint32_t k = own(owner_q).take_half(half.data());
        for (std::uint32_t i = 0; i < k; ++i) got(half[i]);
      }
    } else if (op < 13) {
      if (g* gp = pop(owner_q, op == 12)) got(gp);
    } else if (op == 13) {
      // A chain of up to 3, as global_get moves a batch: only what fits.
      const std::uint32_t k = static_cast<std::uint32_t>(
          std::min<std::size_t>({3, n - next, own(owner_q).free_slots()}));
      for (std::uint32_t i = 0; i + 1 < k; ++i) gs[next + i]->link = gs[next + i + 1];
      if (k > 0) own(owner_q).push_tail_chain(gs[next], k);
      next += k;
    }
  }
  while (tally.total() < n) {
    if (g* gp = pop(owner_q)) got(gp);
  }
  t1.join();
  t2.join();
  CHECK(tally.total() == n);
  CHECK(tally.dupes() == 0);
  CHECK(tally.missing() == 0);
  CHECK(owner_q.size() == 0);
}

}  // namespace

TEST_CASE("concurrent owner and two thieves obtain every G exactly once") {
  SUBCASE("capacity 4") { stress(4, 100'000); }
  SUBCASE("capacity 8") { stress(8, 100'000); }
  SUBCASE("capacity 256") { stress(256, 100'000); }
}

// The owner's plain take of runnext against thieves that take it by CAS
// ("Taking runnext", run_queue.hpp): the owner puts each G in runnext and
// takes it back at once, as a ping-pong pair's hand-offs do, while two
// thieves try to steal it between the two. Every G must come out once,
// and a thief must see what the owner wrote into the G before the put
// (g::link, a plain field: ThreadSanitizer reports a race if the put's
// store is not a release or the steal's CAS not an acquire).
TEST_CASE("the owner's plain take of runnext and thieves' steals obtain every G exactly once") {
  constexpr std::size_t n = 20'000;
  fake_gs gs(n);
  mpg_test::exactly_once tally(gs);
  run_queue owner_q(8);
  std::atomic<std::uint64_t> stolen{0};
  std::atomic<int> unseen{0};
  auto thief = [&] {
    run_queue mine(8);
    while (tally.total() < n) {
      std::uint32_t count = 0;
      if (g* gp = owner_q.steal_into(own(mine), runnext(true), &count)) {
        if (gp->link != gp) unseen.fetch_add(1);
        tally.got(gp);
        stolen.fetch_add(1, std::memory_order_relaxed);
      }
    }
  };
  std::thread t1(thief);
  std::thread t2(thief);
  for (std::size_t i = 0; i < n; ++i) {
    gs[i]->link = gs[i];
    CHECK(own(owner_q).put_runnext(gs[i]) == nullptr);
    // A few instructions between put and take, where the thieves strike;
    // every 8th G waits (boundedly) for a thief to take it, so that
    // steals surely happen.
    const int spins = i % 8 == 0 ? 200'000 : static_cast<int>(i % 64);
    for (int spin = 0; spin < spins && owner_q.has_runnext(); ++spin) mpg::detail::cpu_relax();
    bool from_next = false;
    if (g* gp = own(owner_q).pop(mpg::detail::runnext_policy::take, &from_next)) {
      CHECK(from_next);
      tally.got(gp);
    }
  }
  t1.join();
  t2.join();
  CHECK(tally.total() == n);
  CHECK(tally.dupes() == 0);
  CHECK(tally.missing() == 0);
  CHECK(unseen.load() == 0);
  CHECK_FALSE(owner_q.has_runnext());
  // Both sides took some: the race was run.
  CHECK(stolen.load() > 0);
  CHECK(stolen.load() < n);
}

// A thief's whole steal (T1-T3) between any two instructions of the
// owner's put and take of runnext: a signal handler on the owner's thread
// steals, signalled by another thread one signal at a time.
namespace {
struct handler_thief {
  run_queue* victim;
  run_queue* mine;
  const fake_gs* gs;
  std::atomic<int>* taken;  // per G; owner's thread only: no locked ops
  std::atomic<std::uint64_t> stolen{0}, ran{0};
};
std::atomic<handler_thief*> the_handler_thief{nullptr};
void bump(std::atomic<int>& n) {
  n.store(n.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}
extern "C" void steal_on_signal(int) {
  handler_thief* t = the_handler_thief.load(std::memory_order_relaxed);
  if (t == nullptr) return;
  std::uint32_t count = 0;
  if (g* gp = t->victim->steal_into(own(*t->mine), runnext(true), &count)) {
    bump(t->taken[t->gs->index(gp)]);
    t->stolen.fetch_add(1, std::memory_order_relaxed);
  }
  t->ran.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

TEST_CASE(
    "a thief's steal of runnext at any instruction of the owner's take obtains every G exactly "
    "once") {
  constexpr std::size_t kGs = 64;
  constexpr std::uint64_t kSignals = 100'000;
  fake_gs gs(kGs);
  std::unique_ptr<std::atomic<int>[]> taken(new std::atomic<int>[kGs]);
  for (std::size_t i = 0; i < kGs; ++i) taken[i].store(0);
  run_queue owner_q(8), thief_q(8);
  handler_thief thief{&owner_q, &thief_q, &gs, taken.get()};
  the_handler_thief.store(&thief);
  struct sigaction sa {}, before {};
  sa.sa_handler = steal_on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  REQUIRE(::sigaction(SIGURG, &sa, &before) == 0);
  const pthread_t owner_thread = ::pthread_self();
  std::atomic<bool> done{false};
  // Wait for each handler, then pause a varying while: a signal sent while
  // one is pending runs at that one's instruction again (at its sigreturn).
  std::thread kicker([&] {
    for (std::uint32_t r = 1; !done.load(std::memory_order_relaxed);) {
      const std::uint64_t ran = thief.ran.load(std::memory_order_relaxed);
      ::pthread_kill(owner_thread, SIGURG);
      while (thief.ran.load(std::memory_order_relaxed) == ran &&
             !done.load(std::memory_order_relaxed))
        mpg::detail::cpu_relax();
      r = r * 1103515245u + 12345u;
      for (std::uint32_t i = (r >> 16) % 64; i > 0; --i) mpg::detail::cpu_relax();
    }
  });
  std::uint64_t puts = 0, wrong = 0;  // wrong: a G taken twice or never
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (thief.ran.load(std::memory_order_relaxed) < kSignals &&
         (puts % 1024 != 0 || std::chrono::steady_clock::now() < deadline)) {
    const std::size_t i = puts++ % kGs;
    if (own(owner_q).put_runnext(gs[i]) != nullptr) ++wrong;
    bool from_next = false;
    if (g* gp = own(owner_q).pop(mpg::detail::runnext_policy::take, &from_next))
      bump(taken[gs.index(gp)]);
    // A handler runs to completion before the owner goes on: by now
    // exactly one side took gs[i].
    if (taken[i].load(std::memory_order_relaxed) != 1 || owner_q.has_runnext()) ++wrong;
    taken[i].store(0, std::memory_order_relaxed);
  }
  done.store(true, std::memory_order_relaxed);
  kicker.join();
  the_handler_thief.store(nullptr);  // pending signals find no thief
  sigset_t urg;
  sigemptyset(&urg);
  sigaddset(&urg, SIGURG);
  REQUIRE(::pthread_sigmask(SIG_BLOCK, &urg, nullptr) == 0);
  REQUIRE(::sigaction(SIGURG, &before, nullptr) == 0);
  REQUIRE(::pthread_sigmask(SIG_UNBLOCK, &urg, nullptr) == 0);
  MESSAGE("puts " << puts << ", wrong " << wrong << ", signals " << thief.ran.load() << ", steals "
                  << thief.stolen.load());
  CHECK(wrong == 0);
  CHECK(thief.stolen.load() > 0);  // the interleavings were run
}

namespace {

mpg::task<int> child(int i) { co_return i; }

struct overflow_result {
  long sum = 0;
  std::uint64_t pushes = 0;
};

// Spawns n children without suspending, then joins them all.
mpg::task<overflow_result> spawn_many(mpg::runtime* rt, int n) {
  const auto before = rt->stats().global_queue_pushes;
  std::vector<mpg::join_handle<int>> hs;
  for (int i = 0; i < n; ++i) hs.push_back(mpg::spawn(child(i)));
  const auto after = rt->stats().global_queue_pushes;
  overflow_result r;
  for (auto& h : hs) r.sum += co_await h;
  r.pushes = after - before;
  co_return r;
}

}  // namespace

TEST_CASE("a full local queue overflows to the global queue and every task completes") {
  for (unsigned procs : {1u, 2u}) {
    for (unsigned capacity : {4u, 16u}) {
      CAPTURE(procs);
      CAPTURE(capacity);
      // With 16 slots the M takes up to 8 Gs at a time from the global
      // queue, 7 of them into its ring as one chain (scheduler::global_get).
      mpg::runtime rt({.procs = procs, .local_queue_capacity = capacity});
      overflow_result r = rt.block_on(spawn_many(&rt, 100));
      CHECK(r.sum == 4950);
      if (procs == 1 && capacity == 4) {
        // With one P nothing steals: nearly every child overflows (3 per
        // overflow of a 4-slot ring); a foreign block_on push adds at most 1.
        CHECK(r.pushes >= 50);
      }
    }
  }
}
