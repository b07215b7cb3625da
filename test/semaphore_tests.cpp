// test/semaphore_tests.cpp: mpg::semaphore. At most N holders at once;
// try_acquire; waiters are served in FIFO order by direct hand-off (and
// try_acquire cannot overtake them); releasing beyond the initial count
// throws sync_misuse_error; an acquirer killed at shutdown leaves the
// semaphore sound for a later release.
#include <doctest/doctest.h>

#include "test_support.hpp"

#include <mpg/mpg.hpp>

#include <atomic>
#include <string>
#include <vector>

namespace {

mpg::task<std::string> bounded_concurrency(int permits, int tasks) {
  mpg::semaphore sem(permits);
  std::atomic<int> inside{0}, max_inside{0}, done{0};
  std::vector<mpg::join_handle<void>> hs;
  for (int t = 0; t < tasks; ++t)
    hs.push_back(mpg::spawn([](mpg::semaphore* sem, std::atomic<int>* inside,
                               std::atomic<int>* max_inside,
                               std::atomic<int>* done) -> mpg::task<void> {
      for (int i = 0; i < 200; ++i) {
        co_await sem->acquire();
        const int now = inside->fetch_add(1) + 1;
        int m = max_inside->load();
        while (now > m && !max_inside->compare_exchange_weak(m, now)) {
        }
        if (i % 4 == 0) co_await mpg::yield();
        inside->fetch_sub(1);
        sem->release();
      }
      done->fetch_add(1);
    }(&sem, &inside, &max_inside, &done)));
  for (auto& h : hs) co_await h;
  if (max_inside.load() > permits) co_return "more holders than permits";
  if (done.load() != tasks) co_return "tasks lost";
  if (sem.available() != permits) co_return "permits leaked";
  co_return "ok";
}

TEST_CASE("semaphore: never more holders than permits") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(bounded_concurrency(1, 8)) == "ok");
  CHECK(rt.block_on(bounded_concurrency(3, 16)) == "ok");
}

TEST_CASE("semaphore: try_acquire, available, and release beyond the count throws") {
  mpg::semaphore sem(2);
  CHECK(sem.available() == 2);
  CHECK(sem.try_acquire());
  CHECK(sem.try_acquire());
  CHECK_FALSE(sem.try_acquire());
  sem.release();
  sem.release();
  CHECK_THROWS_AS(sem.release(), mpg::sync_misuse_error);
  CHECK(sem.available() == 2);
  CHECK_THROWS_AS(mpg::semaphore(-1), std::logic_error);
  mpg::semaphore zero(0);
  CHECK_FALSE(zero.try_acquire());
  // The largest count the state word holds; past it, and the "unlimited"
  // INT64_MAX, a clear error rather than a wrapped, negative count.
  mpg::semaphore big(mpg::semaphore::kMaxPermits);
  CHECK(big.try_acquire());
  CHECK(big.available() == mpg::semaphore::kMaxPermits - 1);
  CHECK_THROWS_AS(mpg::semaphore(INT64_MAX), mpg::sync_misuse_error);
  CHECK_THROWS_AS(mpg::semaphore(INT64_MIN), mpg::sync_misuse_error);
}

mpg::task<std::string> release_of_zero_with_a_waiter() {
  mpg::semaphore zero(0);
  auto waiter = mpg::spawn([](mpg::semaphore* s) -> mpg::task<void> {
    co_await s->acquire();
  }(&zero));
  co_await mpg_test::yield_some(10);  // it parks (one P)
  std::string verdict = "a release of a 0-permit semaphore handed a permit to a waiter";
  try {
    zero.release();
  } catch (const mpg::sync_misuse_error&) {
    verdict = "ok";
  }
  if (verdict != "ok") {
    co_await waiter;
    co_return verdict;
  }
  waiter.detach();  // parked for good; the runtime's shutdown kills it
  co_return verdict;
}

TEST_CASE("semaphore: releasing a semaphore of 0 permits throws, even with a waiter") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(release_of_zero_with_a_waiter()) == "ok");
}

mpg::task<std::string> fifo_handoff() {
  // One P: each spawned task runs until it parks, so the queue order is the
  // spawn order; releases must serve it in that order.
  mpg::semaphore sem(1);
  co_await sem.acquire();
  std::vector<int> order;  // plain: one P, and hand-offs order the writes
  std::atomic<int> started{0};
  std::vector<mpg::join_handle<void>> hs;
  for (int i = 0; i < 10; ++i) {
    hs.push_back(mpg::spawn([](mpg::semaphore* sem, std::vector<int>* order, int i,
                               std::atomic<int>* started) -> mpg::task<void> {
      started->fetch_add(1);
      co_await sem->acquire();
      order->push_back(i);
      sem->release();
    }(&sem, &order, i, &started)));
    while (started.load() < i + 1) co_await mpg::yield();
  }
  // Waiters exist: try_acquire must not overtake them.
  if (sem.try_acquire()) co_return "try_acquire overtook the waiters";
  sem.release();
  for (auto& h : hs) co_await h;
  for (int i = 0; i < 10; ++i)
    if (order[static_cast<std::size_t>(i)] != i) co_return "not FIFO";
  co_return "ok";
}

TEST_CASE("semaphore: waiters are served in FIFO order") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(fifo_handoff()) == "ok");
}

// Shutdown: ~runtime kills the tasks still parked and frees their frames. An
// acquirer killed while queued must unlink itself, or a later release()
// hands the permit to the freed waiter (ASan, where the frame cache is off).
mpg::task<void> park_acquirer(mpg::semaphore* sem) {
  mpg::go([](mpg::semaphore* sem) -> mpg::task<void> {
    co_await sem->acquire();
    sem->release();  // not reached: killed while parked
  }(sem), "acquirer");
  co_await mpg_test::yield_some(10);  // it parks (one P)
}

TEST_CASE("semaphore: an acquirer killed at shutdown leaves it sound for a later release") {
  mpg::semaphore sem(1);
  REQUIRE(sem.try_acquire());
  {
    mpg::runtime rt({.procs = 1});
    rt.block_on(park_acquirer(&sem));
    REQUIRE(mpg_test::dump_shows(rt, "semaphore acquire"));
  }  // kills the queued acquirer
  sem.release();  // nobody waits now: the permit comes back
  CHECK(sem.available() == 1);
  CHECK(sem.try_acquire());
  sem.release();
}

}  // namespace
