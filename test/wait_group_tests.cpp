// test/wait_group_tests.cpp: mpg::wait_group. wait() on zero returns at
// once; waiters park until the counter reaches zero and all of them wake;
// the work of the tasks is visible after wait() (plain data); a negative
// counter throws and leaves the counter as it was; reuse across rounds,
// also with done() from a plain thread racing the waiter (no waiter is woken
// by the previous round's done() while the counter is not zero); a waiter
// killed at shutdown leaves the group sound for a later done(); an awaiter
// awaited a second time waits on the counter as it is then.
#include <doctest/doctest.h>

#include "test_support.hpp"

#include <mpg/mpg.hpp>

#include <atomic>
#include <string>
#include <thread>
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

mpg::task<std::string> awaiter_awaited_again() {
  mpg::wait_group wg;
  auto w = wg.wait();
  co_await w;  // zero: at once
  wg.add(1);
  std::atomic<bool> released{false};
  mpg::go([](mpg::wait_group* wg, std::atomic<bool>* released) -> mpg::task<void> {
    co_await mpg_test::yield_some(100);
    released->store(true);
    wg->done();
  }(&wg, &released));
  co_await w;  // the counter is 1 now: this await waits
  co_return released.load() ? "ok" : "returned with the counter at 1";
}

TEST_CASE("wait_group: an awaiter awaited again waits on the counter as it is now") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(awaiter_awaited_again()) == "ok");
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

// Reuse with done() from a plain thread. Rounds alternate: in a racing
// round the thread calls done() as soon as the waiter announces the round,
// so its decrement lands while the waiter is in wait() (often holding the
// queue lock to re-check the counter, which makes done() back off); in the
// checking round that follows the thread calls done() only once the waiter
// is parked. A done() that decides "I reached zero" apart from the state it
// then wakes on (a late wake-up of the racing round) readies the waiter of
// the checking round while the counter is still 1: the waiter sees it.
struct reuse_shared {
  mpg::wait_group wg;
  std::atomic<int> announced{0};  // the round the waiter has added for
  std::atomic<bool> stop{false};
  std::atomic<int> early{0};      // wake-ups with a non-zero counter
};

mpg::task<void> reuse_waiter(reuse_shared* s, int rounds) {
  for (int r = 1; r <= rounds; ++r) {
    s->wg.add(1);
    s->announced.store(r, std::memory_order_release);
    co_await s->wg.wait();
    // Only this round's done() may wake us, and it is the only one: the
    // counter must be 0. A waiter woken early waits again, so the thread's
    // done() for this round still finds it.
    while (s->wg.count() != 0) {
      s->early.fetch_add(1);
      co_await s->wg.wait();
    }
  }
}

void reuse_doer(reuse_shared* s, const mpg::runtime* rt, int rounds) {
  for (int r = 1; r <= rounds; ++r) {
    // Spin without yielding: the racing round needs done() to follow the
    // announcement closely (bounded: the waiter announces at once).
    for (int spins = 0; s->announced.load(std::memory_order_acquire) < r; ++spins) {
      if (s->stop.load()) return;
      if (spins > 1000) std::this_thread::yield();
    }
    if (r % 2 == 0) {
      // Checking round: done() only once the waiter is parked.
      while (!mpg_test::dump_shows(*rt, "wait_group wait")) {
        if (s->stop.load()) return;
        std::this_thread::yield();
      }
    }
    s->wg.done();
  }
}

// A second waiter that only adds traffic on the group's lock: it re-checks
// the counter under the lock whenever the counter is not zero, which is
// when the thread's done() is about to take that lock too.
mpg::task<void> reuse_noise(reuse_shared* s) {
  while (!s->stop.load(std::memory_order_relaxed)) co_await s->wg.wait();
}

mpg::task<void> reuse_main(reuse_shared* s, int rounds) {
  auto noise = mpg::spawn(reuse_noise(s));
  co_await reuse_waiter(s, rounds);
  s->stop.store(true);
  s->wg.add(1);  // wake the noise waiter if it is parked
  s->wg.done();
  co_await noise;
}

TEST_CASE(
    "wait_group: reused with done() from a plain thread, no waiter wakes while the count is 1") {
  constexpr int kRounds = 30000;
  reuse_shared s;
  mpg::runtime rt({.procs = 2});
  // The plain thread is what wakes the waiter: a possible wake-up that the
  // deadlock check must count (it may be descheduled for long on a loaded
  // machine while every task waits for it).
  mpg::external_work doer_alive(rt.handle());
  std::thread doer(reuse_doer, &s, &rt, kRounds);
  try {
    rt.block_on(reuse_main(&s, kRounds));
  } catch (...) {
    s.stop.store(true);
    doer.join();
    throw;
  }
  doer.join();
  CHECK(s.early.load() == 0);
  CHECK(s.wg.count() == 0);
}

}  // namespace
