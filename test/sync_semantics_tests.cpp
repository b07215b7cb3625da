// test/sync_semantics_tests.cpp: the sync primitives' semantics and misuse
// handling: counter limits, once with a throwing f and several waiters, the
// fairness claims of the headers (each on 1 P), try variants racing parked
// waiters.
#include <doctest/doctest.h>

#include "test_support.hpp"
#include "watchdog.hpp"

#include <mpg/mpg.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <thread>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

// The test's access to the reader count (rwmutex.hpp befriends it): taking
// 2^29 read locks one by one takes seconds, minutes under the sanitizers.
struct mpg::detail::rwmutex_probe {
  static void add_readers(mpg::rwmutex& rw, std::uint32_t n) { rw.state_.fetch_add(n); }
  static void remove_readers(mpg::rwmutex& rw, std::uint32_t n) { rw.state_.fetch_sub(n); }
};

namespace {

using mpg_test::yield_some;

// ---------------------------------------------------------------- limits

TEST_CASE("rwmutex reader count at its limit neither wraps nor corrupts the state") {
  mpg::rwmutex rw;
  // All but one of the kMaxReaders readers enter at once (the probe), the
  // last one through try_lock_shared.
  mpg::detail::rwmutex_probe::add_readers(rw, mpg::rwmutex::kMaxReaders - 1);
  REQUIRE(rw.try_lock_shared());
  const std::uint32_t got = mpg::rwmutex::kMaxReaders;
  // One more reader: refused, never a wrap of the count; lock_shared(),
  // which could only wait for a reader to leave, throws.
  CHECK_FALSE(rw.try_lock_shared());
  mpg::runtime rt({.procs = 1});
  const bool lock_threw = rt.block_on([](mpg::rwmutex* rw) -> mpg::task<bool> {
    try {
      co_await rw->lock_shared();
    } catch (const mpg::sync_misuse_error&) {
      co_return true;
    }
    rw->unlock_shared();
    co_return false;
  }(&rw));
  CHECK(lock_threw);
  // The readers leave: two through unlock_shared, the rest at once.
  CHECK_NOTHROW(rw.unlock_shared());
  mpg::detail::rwmutex_probe::remove_readers(rw, got - 2);
  CHECK_NOTHROW(rw.unlock_shared());
  CHECK_THROWS_AS(rw.unlock_shared(), mpg::sync_misuse_error);  // none left
  CHECK(rw.try_lock());  // free again
}

TEST_CASE("wait_group add(INT_MAX) twice and negative counters throw, count unchanged") {
  mpg::wait_group wg;
  wg.add(INT_MAX);
  CHECK_THROWS_AS(wg.add(INT_MAX), mpg::sync_misuse_error);
  CHECK_THROWS_AS(wg.add(1), mpg::sync_misuse_error);
  CHECK(wg.count() == INT_MAX);
  CHECK_THROWS_AS(wg.add(INT64_MIN), mpg::sync_misuse_error);
  CHECK_THROWS_AS(wg.add(INT64_MAX), mpg::sync_misuse_error);
  wg.add(-INT_MAX);
  CHECK(wg.count() == 0);
  CHECK_THROWS_AS(wg.done(), mpg::sync_misuse_error);
  CHECK_THROWS_AS(wg.add(-1), mpg::sync_misuse_error);
  wg.add(0);
  CHECK(wg.count() == 0);
}

TEST_CASE("semaphore limits: constructor bounds, over-release at the maximum") {
  CHECK_THROWS_AS(mpg::semaphore(-1), mpg::sync_misuse_error);
  CHECK_THROWS_AS(mpg::semaphore(INT64_MAX), mpg::sync_misuse_error);
  CHECK_THROWS_AS(mpg::semaphore(mpg::semaphore::kMaxPermits + 1), mpg::sync_misuse_error);
  mpg::semaphore big(mpg::semaphore::kMaxPermits);
  CHECK(big.available() == mpg::semaphore::kMaxPermits);
  CHECK_THROWS_AS(big.release(), mpg::sync_misuse_error);
  CHECK(big.try_acquire());
  big.release();
  CHECK(big.available() == mpg::semaphore::kMaxPermits);
  mpg::semaphore zero(0);
  CHECK_FALSE(zero.try_acquire());
  CHECK_THROWS_AS(zero.release(), mpg::sync_misuse_error);
}

TEST_CASE("mutex and rwmutex misuse throws sync_misuse_error") {
  mpg::mutex m;
  CHECK_THROWS_AS(m.unlock(), mpg::sync_misuse_error);
  mpg::rwmutex rw;
  CHECK_THROWS_AS(rw.unlock(), mpg::sync_misuse_error);
  CHECK_THROWS_AS(rw.unlock_shared(), mpg::sync_misuse_error);
  REQUIRE(rw.try_lock());
  CHECK_THROWS_AS(rw.unlock_shared(), mpg::sync_misuse_error);  // RUnlock of a write lock
  rw.unlock();
  REQUIRE(rw.try_lock_shared());
  CHECK_THROWS_AS(rw.unlock(), mpg::sync_misuse_error);  // Unlock of a read lock
  rw.unlock_shared();
  CHECK(rw.try_lock());
  rw.unlock();
}

// ------------------------------------------------------------------ once

mpg::task<std::string> once_throw_with_waiters() {
  mpg::once o;
  int runs = 0;
  int waiters_back = 0;
  int waiters_threw = 0;
  std::vector<mpg::join_handle<void>> hs;
  // The runner: f yields (so that the callers park), then throws.
  auto runner = mpg::spawn([](mpg::once* o, int* runs) -> mpg::task<void> {
    co_await o->call([runs]() -> mpg::task<> {
      ++*runs;
      co_await yield_some(20);
      throw std::runtime_error("f failed");
    });
  }(&o, &runs));
  co_await mpg::yield();  // the runner is inside f
  for (int i = 0; i < 3; ++i)
    hs.push_back(mpg::spawn([](mpg::once* o, int* runs, int* back, int* threw) -> mpg::task<void> {
      try {
        co_await o->call([runs]() -> mpg::task<> {
          ++*runs;
          co_return;
        });
        ++*back;
      } catch (...) {
        ++*threw;
      }
    }(&o, &runs, &waiters_back, &waiters_threw)));
  bool runner_threw = false;
  try {
    co_await runner;
  } catch (const std::runtime_error&) {
    runner_threw = true;
  }
  for (auto& h : hs) co_await h;
  if (!runner_threw) co_return "the first caller did not get f's exception";
  if (runs != 1) co_return "f ran " + std::to_string(runs) + " times";
  if (waiters_threw != 0) co_return "a waiter got the exception";
  if (waiters_back != 3) co_return "waiters back: " + std::to_string(waiters_back);
  if (!o.done()) co_return "not done";
  co_return "ok";
}

TEST_CASE("once whose f throws with several callers parked: all return, once done") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(once_throw_with_waiters()) == "ok");
}

// -------------------------------------------------------------- fairness

mpg::task<void> lock_and_log(mpg::mutex* m, std::vector<int>* order, int id) {
  co_await m->lock();
  order->push_back(id);
  m->unlock();
}

// mutex: a woken waiter that loses after > 1 ms switches to starvation
// mode; then unlock hands over directly, try_lock and arrivals do not barge.
mpg::task<std::string> mutex_starvation_one_p() {
  mpg::mutex m;
  std::vector<int> order;
  co_await m.lock();
  auto b = mpg::spawn(lock_and_log(&m, &order, 1));
  co_await mpg::yield();  // B parks
  co_await mpg::sleep_for(std::chrono::milliseconds(3));  // B's wait exceeds 1 ms
  m.unlock();              // wakes B (normal mode)
  if (!m.try_lock()) co_return "normal mode: an arrival could not barge";  // documented
  co_await mpg::yield();   // B retries, loses, and starves
  // Starvation mode now: C arrives and must queue behind B.
  auto c = mpg::spawn(lock_and_log(&m, &order, 2));
  co_await mpg::yield();  // C parks
  m.unlock();             // hands to B directly
  if (m.try_lock()) co_return "starvation mode: try_lock barged past the queued waiter";
  co_await b;
  co_await c;
  if (order != std::vector<int>{1, 2}) co_return "wrong order";
  if (!m.try_lock()) co_return "left locked";
  m.unlock();
  co_return "ok";
}

TEST_CASE("mutex starvation mode on 1 P") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(mutex_starvation_one_p()) == "ok");
}

// rwmutex: a queued writer blocks new readers; a writer's unlock admits all
// queued readers (even one queued after a second writer) before that writer.
struct rw_log {
  std::vector<std::string> events;
  int readers_inside = 0;
  int max_readers_inside = 0;
};

mpg::task<void> rw_reader(mpg::rwmutex* rw, rw_log* log, std::string name) {
  co_await rw->lock_shared();
  log->events.push_back(name + "+");
  ++log->readers_inside;
  log->max_readers_inside = std::max(log->max_readers_inside, log->readers_inside);
  co_await yield_some(5);
  --log->readers_inside;
  log->events.push_back(name + "-");
  rw->unlock_shared();
}

mpg::task<void> rw_writer(mpg::rwmutex* rw, rw_log* log, std::string name, mpg::chan<int> gate) {
  co_await rw->lock();
  log->events.push_back(name + "+");
  (void)co_await gate.recv();
  log->events.push_back(name + "-");
  rw->unlock();
}

mpg::task<std::string> rwmutex_fairness_one_p() {
  mpg::rwmutex rw;
  rw_log log;
  mpg::chan<int> gate1(1), gate2(1);
  co_await rw.lock_shared();  // main is a reader
  std::vector<mpg::join_handle<void>> hs;
  hs.push_back(mpg::spawn(rw_writer(&rw, &log, "W1", gate1)));
  co_await yield_some(10);  // W1 queued
  if (rw.try_lock_shared()) co_return "a reader passed a queued writer";
  hs.push_back(mpg::spawn(rw_reader(&rw, &log, "R1")));
  co_await yield_some(10);  // R1 queued behind W1
  if (!log.events.empty()) co_return "someone got in early";
  rw.unlock_shared();       // last reader: W1 owns it
  co_await yield_some(10);  // W1 runs, waits on its gate holding the lock
  hs.push_back(mpg::spawn(rw_writer(&rw, &log, "W2", gate2)));
  co_await yield_some(10);  // W2 queued
  hs.push_back(mpg::spawn(rw_reader(&rw, &log, "R2")));
  co_await yield_some(10);  // R2 queued (behind W1, after W2)
  co_await gate2.send(0);   // W2 will not wait on its gate
  co_await gate1.send(0);   // W1 unlocks: R1 and R2 both, then W2
  for (auto& h : hs) co_await h;
  std::string got;
  for (auto& e : log.events) got += e + " ";
  if (log.events.size() != 8 || log.events[0] != "W1+" || log.events[1] != "W1-" ||
      log.events[6] != "W2+" || log.events[7] != "W2-")
    co_return "order: " + got;
  if (log.max_readers_inside != 2) co_return "readers not admitted together: " + got;
  co_return "ok";
}

TEST_CASE("rwmutex writer preference and phase fairness on 1 P") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(rwmutex_fairness_one_p()) == "ok");
}

// semaphore: FIFO, and try_acquire never takes a permit a waiter is owed.
mpg::task<std::string> semaphore_fifo_one_p() {
  mpg::semaphore sem(2);
  co_await sem.acquire();
  co_await sem.acquire();
  std::vector<int> order;
  std::vector<mpg::join_handle<void>> hs;
  for (int i = 0; i < 4; ++i) {
    hs.push_back(mpg::spawn([](mpg::semaphore* s, std::vector<int>* order,
                               int i) -> mpg::task<void> {
      co_await s->acquire();
      order->push_back(i);
      co_await mpg::yield();
      s->release();
    }(&sem, &order, i)));
    co_await mpg::yield();  // i parks
  }
  sem.release();
  if (sem.try_acquire()) co_return "try_acquire took a permit owed to a waiter";
  if (sem.available() != 0) co_return "permit left free with waiters";
  // Each waiter, once granted, releases to the next: the grants form a
  // chain in queue order whatever order the scheduler runs them in.
  for (auto& h : hs) co_await h;
  if (order != std::vector<int>{0, 1, 2, 3}) co_return "not FIFO";
  if (sem.available() != 1) co_return "permits after the chain: " + std::to_string(sem.available());
  sem.release();
  if (sem.available() != 2) co_return "permits lost: " + std::to_string(sem.available());
  co_return "ok";
}

TEST_CASE("semaphore FIFO without barging on 1 P") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(semaphore_fifo_one_p()) == "ok");
}

}  // namespace

// ---------------------------------------------- try variants vs. waiters
// Stress on 2 Ps (plus a plain thread for the semaphore): try_* mixed with
// parking acquires. A lost wake-up shows as a deadlock_error or the
// watchdog; broken exclusion as a count above the limit.
namespace stress {
struct state {
  mpg::mutex m;
  mpg::rwmutex rw;
  mpg::semaphore sem{2};
  int m_inside = 0, m_bad = 0;
  int rw_writers = 0, rw_readers = 0, rw_bad = 0;
  std::atomic<int> sem_inside{0};
  std::atomic<int> sem_bad{0};
};

mpg::task<void> worker(state* st, int id, int n) {
  for (int i = 0; i < n; ++i) {
    // mutex
    if ((i + id) % 3 == 0) {
      if (st->m.try_lock()) {
        if (++st->m_inside != 1) ++st->m_bad;
        --st->m_inside;
        st->m.unlock();
      }
    } else {
      co_await st->m.lock();
      if (++st->m_inside != 1) ++st->m_bad;
      if (i % 7 == 0) co_await mpg::yield();
      --st->m_inside;
      st->m.unlock();
    }
    // rwmutex
    switch ((i + id) % 4) {
      case 0:
        if (st->rw.try_lock()) {
          if (++st->rw_writers != 1 || st->rw_readers != 0) ++st->rw_bad;
          --st->rw_writers;
          st->rw.unlock();
        }
        break;
      case 1:
        if (st->rw.try_lock_shared()) {
          st->rw.unlock_shared();
        }
        break;
      case 2:
        co_await st->rw.lock();
        if (++st->rw_writers != 1) ++st->rw_bad;
        if (i % 5 == 0) co_await mpg::yield();
        --st->rw_writers;
        st->rw.unlock();
        break;
      default:
        co_await st->rw.lock_shared();
        if (i % 5 == 0) co_await mpg::yield();
        st->rw.unlock_shared();
        break;
    }
    // semaphore
    bool got = true;  // an if, not ?: (g++ 12 miscompiles co_await in a conditional expression)
    if ((i + id) % 2 == 0)
      got = st->sem.try_acquire();
    else
      co_await st->sem.acquire();
    if (got) {
      if (st->sem_inside.fetch_add(1) + 1 > 2) st->sem_bad.fetch_add(1);
      if (i % 3 == 0) co_await mpg::yield();
      st->sem_inside.fetch_sub(1);
      st->sem.release();
    }
  }
}

mpg::task<std::string> run(int tasks, int n) {
  state st;
  std::atomic<bool> stop{false};
  std::thread plain([&] {
    while (!stop.load()) {
      if (st.sem.try_acquire()) {
        if (st.sem_inside.fetch_add(1) + 1 > 2) st.sem_bad.fetch_add(1);
        st.sem_inside.fetch_sub(1);
        st.sem.release();
      }
      std::this_thread::yield();
    }
  });
  std::vector<mpg::join_handle<void>> hs;
  for (int t = 0; t < tasks; ++t) hs.push_back(mpg::spawn(worker(&st, t, n)));
  for (auto& h : hs) co_await h;
  stop.store(true);
  plain.join();
  if (st.m_bad || st.rw_bad || st.sem_bad.load()) co_return "exclusion broken";
  if (!st.m.try_lock()) co_return "mutex left locked";
  if (!st.rw.try_lock()) co_return "rwmutex left locked";
  if (st.sem.available() != 2) co_return "semaphore permits: " + std::to_string(st.sem.available());
  co_return "ok";
}
}  // namespace stress

TEST_CASE("try variants racing parked waiters (2 Ps, stress)") {
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog wd(std::chrono::seconds(60), "try stress", &rt);
  CHECK(rt.block_on(stress::run(8, mpg_test::kSanitized ? 20000 : 100000)) == "ok");
}

// wait_group reused before the previous round's waiter has run (Go panics
// "WaitGroup is reused before previous Wait has returned"; mpg's design
// takes the waiters off at the crossing, so the reuse is sound).
mpg::task<std::string> wg_reuse_before_wait_returns() {
  mpg::wait_group wg;
  wg.add(1);
  bool back = false;
  auto w = mpg::spawn([](mpg::wait_group* wg, bool* back) -> mpg::task<void> {
    co_await wg->wait();
    *back = true;
  }(&wg, &back));
  co_await yield_some(5);  // w parks
  wg.done();               // readies w; w has not run yet
  wg.add(1);               // the next round starts at once
  co_await w;
  if (!back) co_return "waiter lost";
  if (wg.count() != 1) co_return "count";
  wg.done();
  co_await wg.wait();
  co_return "ok";
}

TEST_CASE("wait_group reused before the previous wait returned") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(wg_reuse_before_wait_returns()) == "ok");
}

// Self-deadlocks (Go: "all goroutines are asleep"): block_on reports them.
TEST_CASE("recursive once and relocking a held mutex end in deadlock_error") {
  mpg::runtime rt({.procs = 1});
  CHECK_THROWS_AS(rt.block_on([]() -> mpg::task<void> {
    mpg::once o;
    co_await o.call([&o]() -> mpg::task<> { co_await o.call([] {}); });
  }()), mpg::deadlock_error);
  CHECK_THROWS_AS(rt.block_on([]() -> mpg::task<void> {
    mpg::mutex m;
    co_await m.lock();
    co_await m.lock();
  }()), mpg::deadlock_error);
}

// An acquire awaiter kept in a variable and awaited again acquires again:
// with one permit held by the first await, the second parks (and, with no
// one to release, block_on reports the deadlock).
TEST_CASE("a stored acquire awaiter awaited twice acquires twice") {
  mpg::runtime rt({.procs = 1});
  CHECK_THROWS_AS(rt.block_on([]() -> mpg::task<void> {
    mpg::semaphore sem(1);
    auto a = sem.acquire();
    co_await a;
    CHECK(sem.available() == 0);
    co_await a;
  }()), mpg::deadlock_error);
  CHECK_THROWS_AS(rt.block_on([]() -> mpg::task<void> {
    mpg::rwmutex rw;
    auto a = rw.lock();
    co_await a;
    co_await a;
  }()), mpg::deadlock_error);
  CHECK_THROWS_AS(rt.block_on([]() -> mpg::task<void> {
    mpg::rwmutex rw;
    auto r = rw.lock_shared();
    co_await r;
    co_await rw.lock();  // parks the writer: a later reader waits behind it
    co_await r;
  }()), mpg::deadlock_error);
  // mutex: the first await parks (the lock is held by another task), the
  // second takes the fast path, the third parks for ever.
  int reached = 0;
  CHECK_THROWS_AS(rt.block_on([](int* reached) -> mpg::task<void> {
    mpg::mutex m;
    co_await m.lock();
    auto unlocker = mpg::spawn([](mpg::mutex* m) -> mpg::task<void> {
      m->unlock();
      co_return;
    }(&m));
    auto a = m.lock(std::source_location::current());
    co_await a;  // parks until the unlocker runs
    co_await unlocker;
    m.unlock();
    co_await a;  // fast path
    CHECK_FALSE(m.try_lock());
    *reached = 1;
    co_await a;
  }(&reached)), mpg::deadlock_error);
  CHECK(reached == 1);
}

// mutex in and out of starvation mode on 2 Ps: sections long enough that
// woken waiters lose for more than 1 ms, plus try_lock bargers; the last
// task to count deletes the mutex right after its unlock.
namespace {
struct starve_round {
  mpg::mutex m;
  bool inside = false;  // guarded by m
  int count = 0;        // guarded by m
  std::atomic<bool> bad{false};
};

mpg::task<void> starve_user(starve_round* r, int id, int per, int total, mpg::wait_group* wg) {
  for (int i = 0; i < per; ++i) {
    if ((i + id) % 5 == 0 && r->m.try_lock()) {
    } else {
      co_await r->m.lock();
    }
    if (r->inside) r->bad.store(true);
    r->inside = true;
    mpg_test::busy_for(std::chrono::microseconds((i * 37 + id * 11) % 300));
    r->inside = false;
    const bool last = ++r->count == total;
    const bool bad = r->bad.load();
    r->m.unlock();
    if (last) {
      if (bad) std::abort();
      delete r;
    }
    if (i % 3 == 0) co_await mpg::yield();
  }
  wg->done();
}

mpg::task<void> starve_rounds(int rounds) {
  constexpr int kTasks = 6, kPer = 40;
  mpg::wait_group wg;
  for (int r = 0; r < rounds; ++r) {
    auto* round = new starve_round;
    wg.add(kTasks);
    for (int t = 0; t < kTasks; ++t) mpg::go(starve_user(round, t, kPer, kTasks * kPer, &wg));
    co_await wg.wait();
  }
}
}  // namespace

TEST_CASE("mutex starvation mode on 2 Ps with try_lock and destruction after the last unlock") {
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog wd(std::chrono::seconds(100), "starve stress", &rt);
  rt.block_on(starve_rounds(mpg_test::kSanitized ? 10 : 40));
}
