// test/work_deque_tests.cpp: a P's spawn deque (lib/sched/work_deque.hpp) as a
// seam: the owner's LIFO end, the thieves' FIFO end, pop_if of the bottom
// entry, which entries thieves can see (published ones) and when the owner
// publishes or takes them back, and a concurrent owner-versus-thieves
// stress in which every G must come out exactly once (run under TSan in
// CI).
#include <doctest/doctest.h>

#include <atomic>
#include <coroutine>
#include <memory>
#include <thread>
#include <vector>

#include "fake_gs.hpp"
#include "sched/work_deque.hpp"
#include "test_support.hpp"

namespace {

using mpg::detail::g;
using mpg_test::fake_gs;
using mpg::detail::work_deque;

// reusing_thief: a thread that steals one entry and reuses its G (writes
// its root, as init_g does) once constructed; the flag it sets after is
// relaxed, so nothing orders that write before what the owner does next,
// and under TSan an owner that looked at the G would race with it. join()
// gives the G it stole.
class reusing_thief {
 public:
  explicit reusing_thief(work_deque& d)
      : t_([this, &d] {
          stolen_ = d.steal();
          if (stolen_ != nullptr) stolen_->root = std::coroutine_handle<>::from_address(stolen_);
          reused_.store(true, std::memory_order_relaxed);
        }) {
    while (!reused_.load(std::memory_order_relaxed)) std::this_thread::yield();
  }
  g* join() {
    t_.join();
    return stolen_;
  }

 private:
  std::atomic<bool> reused_{false};
  g* stolen_ = nullptr;
  std::thread t_;  // last: started once the fields above are made
};

}  // namespace

TEST_CASE("the owner pops the newest entry, a thief the oldest") {
  fake_gs gs(4);
  work_deque d(4);
  CHECK(d.pop() == nullptr);
  CHECK(d.steal() == nullptr);
  for (int i = 0; i < 4; ++i) CHECK(d.push(gs[i]));
  CHECK(d.size() == 4);
  CHECK_FALSE(d.push(gs[0]));  // full
  CHECK(d.steal() == gs[0]);
  CHECK(d.pop() == gs[3]);
  CHECK(d.steal() == gs[1]);
  CHECK(d.pop() == gs[2]);
  CHECK(d.pop() == nullptr);
  CHECK(d.steal() == nullptr);
  CHECK(d.empty_seq_cst());
  // The ring wraps: slots are reused after thieves moved top past them.
  for (int round = 0; round < 10; ++round) {
    for (int i = 0; i < 3; ++i) CHECK(d.push(gs[i]));
    CHECK(d.steal() == gs[0]);
    CHECK(d.pop() == gs[2]);
    CHECK(d.pop() == gs[1]);
  }
}

TEST_CASE("pop_if takes only the bottom entry") {
  fake_gs gs(3);
  work_deque d(8);
  CHECK_FALSE(d.pop_if(gs[0]));  // empty
  CHECK(d.push(gs[0]));
  CHECK(d.push(gs[1]));
  CHECK_FALSE(d.pop_if(gs[0]));  // not the newest
  CHECK(d.size() == 2);
  CHECK(d.pop_if(gs[1]));
  CHECK(d.pop_if(gs[0]));
  CHECK(d.size() == 0);
  // A stolen entry cannot be popped, even though its slot still holds it.
  CHECK(d.push(gs[2]));
  CHECK(d.steal() == gs[2]);
  CHECK_FALSE(d.pop_if(gs[2]));
  CHECK(d.size() == 0);
}

TEST_CASE("thieves see only published entries; the owner publishes when they took them all") {
  fake_gs gs(8);
  work_deque d(8);
  // An idle deque's first entry is public at once; later ones are private
  // while a public one waits.
  for (int i = 0; i < 5; ++i) CHECK(d.push(gs[i]));
  CHECK(d.size() == 5);
  CHECK(d.steal() == gs[0]);
  CHECK(d.steal() == nullptr);  // gs[1..4] are private
  CHECK(d.size() == 4);
  // The owner's next pop finds the public part empty and publishes the
  // older half of what stays private (gs[1], gs[2]).
  CHECK(d.pop() == gs[4]);
  CHECK(d.steal() == gs[1]);
  CHECK(d.steal() == gs[2]);
  CHECK(d.steal() == nullptr);
  // So does its next push: the older half of {gs[3], gs[5]}, rounded up.
  CHECK(d.push(gs[5]));
  CHECK(d.steal() == gs[3]);
  CHECK(d.steal() == nullptr);
  CHECK(d.pop() == gs[5]);
  CHECK(d.pop() == nullptr);
  CHECK(d.empty_seq_cst());
}

TEST_CASE("the owner takes published entries back, newest first") {
  fake_gs gs(8);
  work_deque d(8);
  CHECK(d.push(gs[0]));  // public
  CHECK(d.steal() == gs[0]);
  // gs[1] goes public on its push (the public part was empty), the rest
  // stays private.
  for (int i = 1; i < 8; ++i) CHECK(d.push(gs[i]));
  for (int i = 7; i >= 2; --i) CHECK(d.pop() == gs[i]);
  CHECK_FALSE(d.has_private());
  CHECK_FALSE(d.public_empty());
  // The last public entry: the owner races thieves for it on top.
  CHECK(d.pop_newest_if([&](g* e) { return e == gs[1]; }) == gs[1]);
  CHECK(d.pop() == nullptr);
  CHECK(d.steal() == nullptr);
  // Two public entries: the newer comes back, the oldest stays public.
  for (int i = 1; i < 6; ++i) CHECK(d.push(gs[i]));  // gs[1] public, gs[2..5] private
  CHECK(d.steal() == gs[1]);
  CHECK(d.pop() == gs[5]);  // publishes gs[2], gs[3]
  CHECK(d.pop() == gs[4]);
  CHECK_FALSE(d.has_private());
  CHECK(d.pop_newest_if([](g*) { return false; }) == nullptr);  // no match: nothing moves
  CHECK(d.size() == 2);
  CHECK(d.pop() == gs[3]);
  CHECK(d.steal() == gs[2]);
  CHECK(d.size() == 0);
  CHECK(d.pop() == nullptr);
}

TEST_CASE("pop_oldest takes the oldest entry, public or private") {
  fake_gs gs(4);
  work_deque d(4);
  CHECK(d.pop_oldest() == nullptr);
  for (int i = 0; i < 4; ++i) CHECK(d.push(gs[i]));  // gs[0] public, the rest private
  const std::int64_t top = d.oldest_position();
  CHECK(d.pop_oldest() == gs[0]);
  CHECK(d.oldest_position() == top + 1);
  CHECK(d.pop_oldest() == gs[1]);  // the first private one
  CHECK(d.oldest_position() == top + 2);
  CHECK(d.steal() == nullptr);     // gs[2], gs[3] stay private
  CHECK(d.pop() == gs[3]);         // publishes gs[2]
  CHECK(d.steal() == gs[2]);
  CHECK(d.pop_oldest() == nullptr);
}

TEST_CASE("a forced publication makes private entries stealable, and the owner follows it") {
  fake_gs gs(4);
  work_deque d(8);
  std::uint64_t word = 0;
  CHECK_FALSE(d.unpublished(&word));  // empty
  for (int i = 0; i < 4; ++i) CHECK(d.push(gs[i]));  // gs[0] public, the rest private
  CHECK_FALSE(d.unpublished(&word));
  CHECK_FALSE(d.force_publish());  // thieves have gs[0]: nothing to force
  CHECK(d.steal() == gs[0]);
  CHECK(d.unpublished(&word));
  // The owner has not been back: sysmon publishes the older half of its
  // private entries (gs[1], gs[2]).
  CHECK(d.force_publish());
  CHECK_FALSE(d.unpublished(&word));
  CHECK(d.steal() == gs[1]);
  // The owner's view of split is behind: its switch-path pop gives up
  // rather than risk a published entry, and follows the word...
  CHECK(d.pop_newest_private() == nullptr);
  CHECK(d.size() == 2);
  // ... so the next pops are right: gs[3] private, gs[2] public.
  CHECK(d.pop() == gs[3]);
  CHECK(d.steal() == gs[2]);
  CHECK(d.pop() == nullptr);
  // pop() itself follows a forced publication without giving up.
  for (int i = 0; i < 3; ++i) CHECK(d.push(gs[i]));  // gs[0] public, gs[1], gs[2] private
  CHECK(d.steal() == gs[0]);
  CHECK(d.force_publish());  // gs[1]
  CHECK(d.pop() == gs[2]);
  CHECK(d.pop() == gs[1]);   // taken back from the public part
  CHECK(d.steal() == nullptr);
}

// The join's pop (pop_newest_private_if) after a forced publication it has
// not seen: the entry may be stolen and its G reused by the thief's thread
// (init_g writes its plain fields) while the owner still counts it as
// private. match must not look at the G before the claim says it is ours;
// under TSan a look would be a data race with the thief's write
// (reusing_thief: nothing orders the two).
TEST_CASE("a join's pop after an unseen forced publication claims before it matches") {
  fake_gs gs(2);
  work_deque d(8);
  CHECK(d.push(gs[0]));  // public
  CHECK(d.push(gs[1]));  // private
  CHECK(d.steal() == gs[0]);
  CHECK(d.force_publish());  // gs[1] public; the owner has not looked
  reusing_thief thief(d);
  int looked = 0;
  g* got = d.pop_newest_private_if([&](g* e) {
    ++looked;
    return e->root.address() == nullptr;
  });
  CHECK(thief.join() == gs[1]);
  CHECK(got == nullptr);
  CHECK(looked == 0);
  CHECK(d.size() == 0);
}

// take_private_if: the first join of a task that joins its children in
// spawn order takes its child from under the younger ones, and reverses
// those so that the next child is the newest. The same outcomes with the
// hint push() gave (looked at first), with a hint at another entry and
// with none (the scan).
TEST_CASE("take_private_if takes a buried private entry and leaves the next one at the bottom") {
  constexpr std::uint16_t kNoHint = 0xffffu;
  for (const char* hints : {"pushed", "other", "none"}) {
    CAPTURE(hints);
    fake_gs gs(6);
    work_deque d(8);
    std::uint16_t at[6] = {};
    auto push = [&](int i) { return d.push(gs[i], &at[i]); };
    // The hint for gs[i]: where it was pushed, the position of its
    // neighbour (an entry that is not the one looked for), or none.
    auto hint = [&](int i) {
      if (hints[0] == 'p') return at[i];
      if (hints[0] == 'o') return at[i == 5 ? 4 : i + 1];
      return kNoHint;
    };
    for (int i = 0; i < 6; ++i) CHECK(push(i));  // gs[0] public, gs[1..5] private
    for (int i = 0; i < 6; ++i) CHECK(at[i] == i);
    auto is = [](g* want) { return [want](g* e) { return e == want; }; };
    // Not among the newest max_scan private entries: nothing moves.
    CHECK(d.take_private_if(is(gs[1]), is(gs[1]), 4, hint(1)) == nullptr);
    // A public entry is never taken (thieves may be at it).
    CHECK(d.take_private_if(is(gs[0]), is(gs[0]), 16, hint(0)) == nullptr);
    // Found, but match refuses it after the claim: the deque is as it was.
    CHECK(d.take_private_if(is(gs[2]), [](g*) { return false; }, 16, hint(2)) == nullptr);
    CHECK(d.size() == 6);
    CHECK(d.take_private_if(is(gs[2]), is(gs[2]), 16, hint(2)) == gs[2]);
    CHECK(d.size() == 5);
    // gs[3..5] reversed: gs[3], spawned right after gs[2], is the newest.
    // Their pushed positions are stale now: gs[4] stayed, gs[3] and gs[5]
    // swapped; gs[3]'s old position holds gs[5], which it must not take.
    CHECK(d.take_private_if(is(gs[3]), is(gs[3]), 16, at[3]) == gs[3]);
    CHECK(d.size() == 4);
    CHECK(d.pop() == gs[4]);
    CHECK(d.pop() == gs[5]);
    CHECK(d.pop() == gs[1]);
    CHECK(d.steal() == gs[0]);
    CHECK(d.pop() == nullptr);
    // The oldest private entry, at split (bottom goes down to split for the
    // claim), and the newest.
    for (int i = 0; i < 3; ++i) CHECK(push(i));  // gs[0] public, gs[1], gs[2] private
    CHECK(d.take_private_if(is(gs[1]), is(gs[1]), 16, hint(1)) == gs[1]);
    CHECK(d.take_private_if(is(gs[2]), is(gs[2]), 16, hint(2)) == gs[2]);
    CHECK(d.steal() == gs[0]);
    // The oldest entry of all, with nothing public, stays: taking it would
    // put another entry at top with top unmoved (oldest_position()).
    for (int i = 0; i < 3; ++i) CHECK(push(i));  // gs[0] public, gs[1], gs[2] private
    CHECK(d.steal() == gs[0]);                   // top == split, at gs[1]
    CHECK(d.take_private_if(is(gs[1]), is(gs[1]), 16, hint(1)) == nullptr);
    CHECK(d.size() == 2);
    CHECK(d.pop_oldest() == gs[1]);  // still the entry at top
    CHECK(d.pop() == gs[2]);
    CHECK(d.size() == 0);
  }
}

// As for the join's pop above: after a forced publication the owner has
// not seen, the entry found may be a thief's and its G reused; match (which
// reads the G's plain fields) must not run before the claim says it is
// ours, and the claim must fail.
TEST_CASE("take_private_if after an unseen forced publication claims before it matches") {
  fake_gs gs(3);
  work_deque d(8);
  for (int i = 0; i < 3; ++i) CHECK(d.push(gs[i]));  // gs[0] public, gs[1], gs[2] private
  CHECK(d.steal() == gs[0]);
  CHECK(d.force_publish());  // gs[1] public; the owner has not looked
  reusing_thief thief(d);
  int looked = 0;
  g* got = d.take_private_if([&](g* e) { return e == gs[1]; },
                             [&](g* e) {
                               ++looked;
                               return e->root.address() == nullptr;
                             },
                             16, /*hint=*/1);
  CHECK(thief.join() == gs[1]);
  CHECK(got == nullptr);
  CHECK(looked == 0);
  CHECK(d.pop() == gs[2]);
  CHECK(d.size() == 0);
}

namespace {

// One owner pushes, pops, pop_ifs, take_private_ifs and pop_oldests; two
// thieves steal; a third thread forces publications. Every G must come out
// exactly once,
// including the races between the owner's taking back or publishing, the
// thieves' steals and the forced publications.
void stress(std::uint32_t cap, std::size_t n) {
  fake_gs gs(n);
  mpg_test::exactly_once tally(gs);
  auto got = [&](g* gp) { tally.got(gp); };
  work_deque d(cap);
  auto thief = [&] {
    while (tally.total() < n) {
      if (g* gp = d.steal()) got(gp);
      else std::this_thread::yield();
    }
  };
  std::thread t1(thief);
  std::thread t2(thief);
  // sysmon's forced publication, as often as it can (sysmon: once a
  // millisecond at most), racing the owner's pops.
  std::thread forcer([&] {
    while (tally.total() < n) {
      if (!d.force_publish()) std::this_thread::yield();
    }
  });
  std::size_t next = 0;
  std::uint64_t rnd = 12345;
  g* last_pushed = nullptr;
  g* recent[4] = {};  // the last pushes, for joins in spawn order
  std::uint16_t recent_at[4] = {};  // where they were pushed: hints, stale once moved
  while (next < n) {
    rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
    const unsigned op = static_cast<unsigned>(rnd >> 60);
    if (op < 8) {
      if (d.push(gs[next], &recent_at[next % 4])) {
        last_pushed = gs[next];
        recent[next % 4] = gs[next];
        ++next;
      } else if (g* gp = d.pop()) {
        got(gp);
      }
    } else if (op < 10) {
      // A join that finds its child under younger siblings. find looks at
      // the slot's pointer only; match after the claim.
      if (g* want = recent[(rnd >> 40) % 4]) {
        auto is = [want](g* e) { return e == want; };
        if (g* gp = d.take_private_if(is, is, 8, recent_at[(rnd >> 40) % 4])) got(gp);
        recent[(rnd >> 40) % 4] = nullptr;
      }
    } else if (op < 13) {
      if (g* gp = d.pop()) got(gp);
    } else if (op < 15) {
      if (last_pushed != nullptr) {
        // A join of the newest child: succeeds only if it is still the bottom.
        if (d.pop_if(last_pushed)) got(last_pushed);
        last_pushed = nullptr;
      }
    } else if (g* gp = d.pop_oldest()) {  // a fairness turn
      got(gp);
    }
  }
  while (tally.total() < n) {
    if (g* gp = d.pop()) got(gp);
  }
  t1.join();
  t2.join();
  forcer.join();
  CHECK(tally.total() == n);
  CHECK(tally.dupes() == 0);
  CHECK(tally.missing() == 0);
  CHECK(d.size() == 0);
}

}  // namespace

TEST_CASE("concurrent owner and two thieves obtain every spawned G exactly once") {
  const std::size_t n = mpg_test::kSanitized ? 50'000 : 300'000;
  SUBCASE("capacity 2") { stress(2, n); }
  SUBCASE("capacity 8") { stress(8, n); }
  SUBCASE("capacity 256") { stress(256, n); }
}
