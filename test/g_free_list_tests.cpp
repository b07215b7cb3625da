// test/g_free_list_tests.cpp: the pools of dead Gs (lib/sched/g_free_list.hpp)
// as a seam, and Gs flowing between the Ps' pools and the global one in a
// running runtime: a G retired on one P is reused by a spawn on another, so
// the number of Gs ever made stays bounded by the peak of live tasks.
#include <doctest/doctest.h>

#include <mpg/mpg.hpp>

#include <cstddef>
#include <vector>

#include <mpg/wait_group.hpp>

#include "fake_gs.hpp"
#include "sched/g_free_list.hpp"
#include "sched/scheduler.hpp"

namespace {

using mpg::detail::g;
using mpg::detail::g_free_list;
using mpg_test::fake_gs;

TEST_CASE("a G free list pops the most recently pushed G first and counts its Gs") {
  fake_gs gs(4);
  g_free_list l;
  CHECK(l.empty());
  CHECK(l.size() == 0);
  for (std::size_t i = 0; i < 4; ++i) l.push(gs[i]);
  CHECK(!l.empty());
  CHECK(l.size() == 4);
  for (std::size_t i = 4; i-- > 0;) {
    g* gp = l.pop();
    CHECK(gp == gs[i]);
    CHECK(gp->link == nullptr);  // a popped G is in no list
  }
  CHECK(l.empty());
  CHECK(l.size() == 0);
}

TEST_CASE("move_to moves at most n Gs, newest first, and stops when the list is empty") {
  fake_gs gs(5);
  g_free_list from, to;
  for (std::size_t i = 0; i < 5; ++i) from.push(gs[i]);
  from.move_to(to, 2);
  CHECK(from.size() == 3);
  CHECK(to.size() == 2);
  // gs[4] moved first, then gs[3], which is now on top of `to`.
  CHECK(to.pop() == gs[3]);
  CHECK(to.pop() == gs[4]);
  from.move_to(to, 10);  // more than it holds
  CHECK(from.empty());
  CHECK(to.size() == 3);
  CHECK(to.pop() == gs[0]);
  CHECK(to.pop() == gs[1]);
  CHECK(to.pop() == gs[2]);
  CHECK(to.empty());
}

mpg::task<void> wait_for(mpg::wait_group* gate) { co_await gate->wait(); }

// One wave: n tasks, all live at once (each waits at a gate that opens
// once the last is spawned), then joined. They finish on both Ps, whose
// pools pass what they cannot keep to the global pool.
mpg::task<std::size_t> wave(std::size_t n) {
  mpg::wait_group gate;
  gate.add(1);
  std::vector<mpg::join_handle<void>> hs;
  hs.reserve(n);
  for (std::size_t i = 0; i < n; ++i) hs.push_back(mpg::spawn(wait_for(&gate)));
  gate.done();
  for (auto& h : hs) co_await h;
  co_return mpg::detail::current_scheduler()->g_count();
}

TEST_CASE("Gs retired on the Ps are reused: waves of spawns do not make new Gs") {
  constexpr std::size_t kTasks = 2000;
  constexpr int kWaves = 20;
  mpg::runtime rt({.procs = 2});
  const std::size_t first = rt.block_on(wave(kTasks));
  CHECK(first >= kTasks);  // all were live at once
  std::size_t last = first;
  for (int w = 0; w < kWaves; ++w) last = rt.block_on(wave(kTasks));
  // A spawn makes Gs (a batch of 32) only when its P's pool and the global
  // pool are empty, so what a wave can add is bounded by the Gs the other
  // P keeps in its pool (at most 128), whatever the first wave made: the
  // Gs ever made stay below the peak of live tasks (kTasks, the wave's own
  // task and block_on's) plus both Ps' pools and a batch. A pool that lost
  // the Gs it was given would add about kTasks per wave.
  CAPTURE(first);
  CAPTURE(last);
  CHECK(last <= kTasks + 8 + 2 * 128 + 32);
}

}  // namespace
