// test/work_deque_tests.cpp: a P's spawn deque (lib/sched/work_deque.hpp) as a
// seam: the owner's LIFO end, the thieves' FIFO end, pop_if of the bottom
// entry, and a concurrent owner-versus-thieves stress in which every G must
// come out exactly once (run under TSan in CI).
#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "sched/work_deque.hpp"
#include "test_support.hpp"

namespace {

using mpg::detail::g;
using mpg::detail::work_deque;

struct fake_gs {
  explicit fake_gs(std::size_t n) : gs(new g[n]) {}
  g* operator[](std::size_t i) const { return &gs[i]; }
  std::size_t index(const g* gp) const { return static_cast<std::size_t>(gp - gs.get()); }
  std::unique_ptr<g[]> gs;
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

namespace {

// One owner pushes, pops and pop_ifs; two thieves steal. Every G must come
// out exactly once, including the last-entry races between pop and steal.
void stress(std::uint32_t cap, std::size_t n) {
  fake_gs gs(n);
  std::unique_ptr<std::atomic<int>[]> seen(new std::atomic<int>[n]);
  for (std::size_t i = 0; i < n; ++i) seen[i].store(0);
  std::atomic<std::size_t> total{0};
  std::atomic<std::size_t> dupes{0};
  auto got = [&](g* gp) {
    if (seen[gs.index(gp)].fetch_add(1) != 0) dupes.fetch_add(1);
    total.fetch_add(1);
  };
  work_deque d(cap);
  auto thief = [&] {
    while (total.load() < n) {
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
  while (total.load() < n) {
    if (g* gp = d.pop()) got(gp);
  }
  t1.join();
  t2.join();
  CHECK(total.load() == n);
  CHECK(dupes.load() == 0);
  std::size_t missing = 0;
  for (std::size_t i = 0; i < n; ++i) missing += seen[i].load() == 1 ? 0 : 1;
  CHECK(missing == 0);
  CHECK(d.size() == 0);
}

}  // namespace

TEST_CASE("concurrent owner and two thieves obtain every spawned G exactly once") {
  const std::size_t n = mpg_test::kSanitized ? 50'000 : 300'000;
  SUBCASE("capacity 2") { stress(2, n); }
  SUBCASE("capacity 8") { stress(8, n); }
  SUBCASE("capacity 256") { stress(256, n); }
}
