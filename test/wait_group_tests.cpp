// test/wait_group_tests.cpp: mpg::wait_group. wait() on zero returns at
// once; waiters park until the counter reaches zero and all of them wake;
// the work of the tasks is visible after wait() (plain data); a negative
// counter throws and leaves the counter as it was; reuse across rounds; a
// waiter killed at shutdown leaves the group sound for a later done().
#include <doctest/doctest.h>

#include "test_support.hpp"

#include <mpg/mpg.hpp>

#include <atomic>
#include <string>
#include <vector>

namespace {

mpg::task<std::string> zero_does_not_wait() {
  mpg::wait_group wg;
  co_await wg.wait();
  wg.add(2);
  wg.done();
  wg.done();
  co_await wg.wait();
  co_return wg.count() == 0 ? "ok" : "bad count";
}

TEST_CASE("wait_group: wait on a zero counter returns at once") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(zero_does_not_wait()) == "ok");
}

mpg::task<std::string> workers_and_waiters(int workers, int waiters) {
  mpg::wait_group wg;
  std::vector<long> results(static_cast<std::size_t>(workers), 0);  // plain data
  std::atomic<int> woken{0};
  wg.add(workers);
  std::vector<mpg::join_handle<void>> ws;
  for (int i = 0; i < waiters; ++i)
    ws.push_back(mpg::spawn([](mpg::wait_group* wg, std::atomic<int>* woken) -> mpg::task<void> {
      co_await wg->wait();
      woken->fetch_add(1);
    }(&wg, &woken)));
  for (int i = 0; i < workers; ++i)
    mpg::go([](mpg::wait_group* wg, long* slot, int i) -> mpg::task<void> {
      if (i % 3 == 0) co_await mpg::yield();
      *slot = static_cast<long>(i) * i;
      wg->done();
    }(&wg, &results[static_cast<std::size_t>(i)], i));
  co_await wg.wait();
  for (int i = 0; i < workers; ++i)
    if (results[static_cast<std::size_t>(i)] != static_cast<long>(i) * i)
      co_return "a worker's write is not visible after wait()";
  for (auto& h : ws) co_await h;
  if (woken.load() != waiters) co_return "waiters not all woken";
  co_return "ok";
}

TEST_CASE("wait_group: every waiter wakes when the counter reaches zero; work is visible") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(workers_and_waiters(1000, 20)) == "ok");
  for (int round = 0; round < 200; ++round) {
    CAPTURE(round);
    REQUIRE(rt.block_on(workers_and_waiters(8, 3)) == "ok");
  }
}

TEST_CASE("wait_group: a negative counter throws sync_misuse_error and changes nothing") {
  mpg::wait_group wg;
  CHECK_THROWS_AS(wg.done(), mpg::sync_misuse_error);
  CHECK(wg.count() == 0);
  wg.add(2);
  CHECK_THROWS_AS(wg.add(-3), std::logic_error);
  CHECK(wg.count() == 2);
  wg.add(-2);
  CHECK(wg.count() == 0);
}

mpg::task<std::string> reuse_rounds() {
  mpg::wait_group wg;
  for (int round = 0; round < 100; ++round) {
    std::atomic<int> n{0};
    wg.add(4);
    for (int i = 0; i < 4; ++i)
      mpg::go([](mpg::wait_group* wg, std::atomic<int>* n) -> mpg::task<void> {
        n->fetch_add(1);
        wg->done();
        co_return;
      }(&wg, &n));
    co_await wg.wait();
    if (n.load() != 4) co_return "wait returned early in round " + std::to_string(round);
  }
  co_return "ok";
}

TEST_CASE("wait_group: reusable once the previous round's waiters are released") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(reuse_rounds()) == "ok");
}

// Shutdown: ~runtime kills the tasks still parked and frees their frames. A
// waiter killed while queued must unlink itself, or the done() that reaches
// zero later walks the freed waiter (ASan, where the frame cache is off).
mpg::task<void> park_waiter(mpg::wait_group* wg) {
  mpg::go([](mpg::wait_group* wg) -> mpg::task<void> { co_await wg->wait(); }(wg), "waiter");
  co_await mpg_test::yield_some(10);  // it parks (one P)
}

TEST_CASE("wait_group: a waiter killed at shutdown leaves the group sound for a later done()") {
  mpg::wait_group wg;
  wg.add(1);
  {
    mpg::runtime rt({.procs = 1});
    rt.block_on(park_waiter(&wg));
    REQUIRE(mpg_test::dump_shows(rt, "wait_group wait"));
  }  // kills the queued waiter
  wg.done();
  CHECK(wg.count() == 0);
}

}  // namespace
