// test/work_deque_tests.cpp: a P's spawn deque (lib/sched/work_deque.hpp) as a
// seam: the owner's LIFO end, the thieves' FIFO end, pop_if of the bottom
// entry, and a concurrent owner-versus-thieves stress in which every G must
// come out exactly once (run under TSan in CI).
#include <doctest/doctest.h>

#include <atomic>
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

namespace {

// One owner pushes, pops and pop_ifs; two thieves steal. Every G must come
// out exactly once, including the last-entry races between pop and steal.
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
  std::size_t next = 0;
  std::uint64_t rnd = 12345;
  g* last_pushed = nullptr;
  while (next < n) {
    rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
    const unsigned op = static_cast<unsigned>(rnd >> 60);
    if (op < 8) {
      if (d.push(gs[next])) {
        last_pushed = gs[next];
        ++next;
      } else if (g* gp = d.pop()) {
        got(gp);
      }
    } else if (op < 13) {
      if (g* gp = d.pop()) got(gp);
    } else if (last_pushed != nullptr) {
      // A join of the newest child: succeeds only if it is still the bottom.
      if (d.pop_if(last_pushed)) got(last_pushed);
      last_pushed = nullptr;
    }
  }
  while (tally.total() < n) {
    if (g* gp = d.pop()) got(gp);
  }
  t1.join();
  t2.join();
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
