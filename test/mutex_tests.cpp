// test/mutex_tests.cpp: mpg::mutex. Mutual exclusion checked with a plain
// (non-atomic) counter from many tasks on two Ps (TSan also checks that each
// critical section happens-before the next); try_lock; scoped_lock guards;
// unlock of an unlocked mutex throws; a task other than the locker may
// unlock; parked waiters are all served; starvation mode bounds how long a
// waiter can be overtaken by a task that relocks in a loop; and sections
// that hold the lock for more than 1 ms (starvation hand-off) stay exclusive;
// a locker killed at shutdown, also one in starvation mode, leaves the
// mutex sound for a later unlock.
#include <doctest/doctest.h>

#include "test_support.hpp"

#include <mpg/mpg.hpp>

#include <atomic>
#include <chrono>
#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr int kScale = mpg_test::kSanitized ? 1 : 5;

using mpg_test::yield_some;

struct shared_counter {
  mpg::mutex m;
  long value = 0;      // guarded by m; deliberately not atomic
  int inside = 0;      // tasks inside the section (must stay <= 1)
  int max_inside = 0;
};

mpg::task<void> increment(shared_counter* c, int n, bool scoped) {
  for (int i = 0; i < n; ++i) {
    if (scoped) {
      auto g = co_await c->m.scoped_lock();
      ++c->inside;
      if (c->inside > c->max_inside) c->max_inside = c->inside;
      ++c->value;
      --c->inside;
    } else {
      co_await c->m.lock();
      ++c->inside;
      if (c->inside > c->max_inside) c->max_inside = c->inside;
      ++c->value;
      if (i % 64 == 0) co_await mpg::yield();  // hold the lock across a switch
      --c->inside;
      c->m.unlock();
    }
  }
}

mpg::task<std::string> exclusion(int tasks, int per_task) {
  shared_counter c;
  std::vector<mpg::join_handle<void>> hs;
  for (int t = 0; t < tasks; ++t) hs.push_back(mpg::spawn(increment(&c, per_task, t % 2 == 0)));
  for (auto& h : hs) co_await h;
  if (c.max_inside != 1) co_return "two tasks inside the section";
  if (c.value != static_cast<long>(tasks) * per_task)
    co_return "lost increments: " + std::to_string(c.value);
  if (!c.m.try_lock()) co_return "mutex left locked";
  c.m.unlock();
  co_return "ok";
}

TEST_CASE("mutex: mutual exclusion with a non-atomic counter, 8 tasks on 2 Ps") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(exclusion(8, 10000 * kScale)) == "ok");
  CHECK(rt.block_on(exclusion(64, 500 * kScale)) == "ok");
}

mpg::task<std::string> try_lock_and_misuse() {
  mpg::mutex m;
  if (!m.try_lock()) co_return "try_lock on a free mutex failed";
  if (m.try_lock()) co_return "try_lock on a held mutex succeeded";
  m.unlock();
  try {
    m.unlock();
    co_return "unlock of an unlocked mutex did not throw";
  } catch (const mpg::sync_misuse_error&) {
  }
  // The failed unlock changed nothing.
  if (!m.try_lock()) co_return "state corrupted by the bad unlock";
  m.unlock();
  {
    auto g = co_await m.scoped_lock();
    if (!g.owns_lock() || m.try_lock()) co_return "guard does not hold the lock";
    g.unlock();
    if (g.owns_lock()) co_return "guard still owns after unlock()";
    if (!m.try_lock()) co_return "guard unlock() did not unlock";
    m.unlock();
    g = co_await m.scoped_lock();
  }
  if (!m.try_lock()) co_return "guard did not unlock at scope end";
  m.unlock();
  co_return "ok";
}

TEST_CASE("mutex: try_lock, scoped_lock guards, unlock of unlocked throws sync_misuse_error") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(try_lock_and_misuse()) == "ok");
  mpg::mutex m;
  CHECK_THROWS_AS(m.unlock(), std::logic_error);
}

mpg::task<std::string> unlock_by_another_task() {
  mpg::mutex m;
  co_await m.lock();
  auto h = mpg::spawn([](mpg::mutex* m) -> mpg::task<void> {
    m->unlock();
    co_return;
  }(&m));
  co_await h;
  if (!m.try_lock()) co_return "not unlocked";
  m.unlock();
  co_return "ok";
}

TEST_CASE("mutex: may be unlocked by a task other than the locker (as in Go)") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(unlock_by_another_task()) == "ok");
}

mpg::task<std::string> many_waiters() {
  mpg::mutex m;
  std::atomic<int> done{0};
  co_await m.lock();
  std::vector<mpg::join_handle<void>> hs;
  for (int i = 0; i < 200; ++i)
    hs.push_back(mpg::spawn([](mpg::mutex* m, std::atomic<int>* done) -> mpg::task<void> {
      co_await m->lock();
      done->fetch_add(1);
      m->unlock();
    }(&m, &done)));
  co_await yield_some(50);
  if (done.load() != 0) co_return "a waiter got a held mutex";
  m.unlock();
  for (auto& h : hs) co_await h;
  co_return done.load() == 200 ? "ok" : "waiters lost";
}

TEST_CASE("mutex: every parked waiter is eventually served") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(many_waiters()) == "ok");
}

// A hog relocks in a tight loop; a waiter must still get the mutex (normal
// mode lets the hog barge; after 1 ms of waiting, starvation mode hands the
// mutex to the waiter). The hog's loop is bounded: exhausting it fails.
mpg::task<std::string> starvation_bounded() {
  mpg::mutex m;
  std::atomic<bool> got{false};
  std::atomic<bool> hog_started{false};
  auto hog = mpg::spawn([](mpg::mutex* m, std::atomic<bool>* got,
                           std::atomic<bool>* started) -> mpg::task<long> {
    long rounds = 0;
    const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!got->load()) {
      co_await m->lock();
      started->store(true);
      // Hold it a little, so the waiter finds it locked most of the time.
      for (int i = 0; i < 200; ++i) mpg::detail::cpu_relax();
      m->unlock();
      if (++rounds % 1024 == 0 && std::chrono::steady_clock::now() > limit) co_return -1;
    }
    co_return rounds;
  }(&m, &got, &hog_started));
  while (!hog_started.load()) co_await mpg::yield();
  co_await m.lock();
  got.store(true);
  m.unlock();
  const long rounds = co_await hog;
  if (rounds < 0) co_return "waiter starved for 10 s";
  co_return "ok";
}

TEST_CASE("mutex: a waiter is not starved by a task relocking in a loop (starvation mode)") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(starvation_bounded()) == "ok");
}

// Long sections (> 1 ms) push waiters into starvation mode, where unlock
// hands the mutex over directly; exclusion and progress must hold there too.
mpg::task<void> slow_section(shared_counter* c, int n) {
  for (int i = 0; i < n; ++i) {
    co_await c->m.lock();
    ++c->inside;
    if (c->inside > c->max_inside) c->max_inside = c->inside;
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(1200);
    while (std::chrono::steady_clock::now() < until) mpg::detail::cpu_relax();
    ++c->value;
    --c->inside;
    c->m.unlock();
  }
}

mpg::task<std::string> starvation_mode_exclusion() {
  shared_counter c;
  std::vector<mpg::join_handle<void>> hs;
  for (int t = 0; t < 4; ++t) hs.push_back(mpg::spawn(slow_section(&c, 15)));
  for (int t = 0; t < 4; ++t) hs.push_back(mpg::spawn(increment(&c, 2000, t % 2 == 0)));
  for (auto& h : hs) co_await h;
  if (c.max_inside != 1) co_return "two tasks inside the section";
  if (c.value != 4 * 15 + 4 * 2000) co_return "lost increments";
  co_return "ok";
}

TEST_CASE("mutex: exclusion and progress through starvation-mode hand-offs") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(starvation_mode_exclusion()) == "ok");
}

mpg::task<std::string> lock_yields_on_budget() {
  // One P: a loop of uncontended lock/unlock never waits; the budget must
  // still let another task run.
  mpg::mutex m;
  std::atomic<bool> flag{false};
  mpg::go([](std::atomic<bool>* f) -> mpg::task<void> {
    f->store(true);
    co_return;
  }(&flag));
  for (int i = 0; i < 1'000'000; ++i) {
    if (flag.load()) co_return "ok";
    co_await m.lock();
    m.unlock();
  }
  co_return "lock() never yielded";
}

TEST_CASE("mutex: uncontended lock() still honours the cooperative budget") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(lock_yields_on_budget()) == "ok");
}

// Shutdown: ~runtime kills the tasks still parked and frees their frames. A
// locker killed while queued must unlink its waiter, or a later unlock()
// (from a destructor run later in the same shutdown, or after the runtime
// is gone) reads the freed waiter (ASan, where the frame cache is off).

mpg::task<void> park_in_lock(mpg::mutex* m) {
  co_await m->lock();
  m->unlock();  // not reached: killed while parked
}

// Takes over the mutex the caller locked (a mutex is not tied to a task)
// and parks for good; killing it runs ~guard, which unlocks.
mpg::task<void> hold_until_killed(mpg::mutex* m, mpg::chan<int> never) {
  mpg::mutex::guard g(m);
  (void)co_await never.recv();
}

mpg::task<void> park_locker_then_holder(mpg::mutex* m) {
  mpg::chan<int> never;
  if (!m->try_lock()) throw std::logic_error("mutex not free");
  mpg::go(hold_until_killed(m, never), "holder");  // unlocks m when killed
  mpg::go(park_in_lock(m), "locker");              // newer: killed first
  co_await yield_some(10);                         // both park (one P)
}

TEST_CASE("mutex: a locker killed at shutdown leaves the mutex sound for a later unlock") {
  mpg::mutex m;
  {
    mpg::runtime rt({.procs = 1});
    rt.block_on(park_locker_then_holder(&m));
    REQUIRE(mpg_test::dump_shows(rt, "mutex lock"));
  }  // kills the locker, then the holder, whose ~guard unlocks m
  CHECK(m.try_lock());
  m.unlock();
}

// m.lock() is a runtime request (the mutex itself): the task's co_await
// builds the awaiter with the co_await's site, so a parked locker shows its
// own line, for lock() and for scoped_lock().
constexpr int kLockLine = __LINE__ + 2;
mpg::task<void> park_at_lock(mpg::mutex* m) {
  co_await m->lock();
  m->unlock();
}
constexpr int kScopedLockLine = __LINE__ + 2;
mpg::task<void> park_at_scoped_lock(mpg::mutex* m) {
  auto g = co_await m->scoped_lock();
}

TEST_CASE("mutex: a parked locker shows the site of its own co_await in the dump") {
  mpg::mutex m;
  mpg::runtime rt({.procs = 1});
  std::string dump;
  rt.block_on([](mpg::mutex* m, mpg::runtime* rt, std::string* dump) -> mpg::task<void> {
    if (!m->try_lock()) throw std::logic_error("mutex not free");
    auto a = mpg::spawn(park_at_lock(m));
    auto b = mpg::spawn(park_at_scoped_lock(m));
    co_await yield_some(10);  // both park (one P)
    std::ostringstream os;
    rt->dump(os);
    *dump = os.str();
    m->unlock();
    co_await a;
    co_await b;
  }(&m, &rt, &dump));
  INFO(dump);
  CHECK(dump.find("mutex lock at " __FILE__ ":" + std::to_string(kLockLine)) != std::string::npos);
  CHECK(dump.find("mutex lock at " __FILE__ ":" + std::to_string(kScopedLockLine)) !=
        std::string::npos);
}

// Outside a task, operator co_await of the request gives the same awaiter
// (without a site).
mpg_test::eager_coroutine lock_twice_from_a_plain_coroutine(mpg::mutex* m, int* done) {
  co_await m->lock();
  m->unlock();
  {
    auto g = co_await m->scoped_lock();
    if (g.owns_lock() && !m->try_lock()) ++*done;
  }
  if (m->try_lock()) {
    m->unlock();
    ++*done;
  }
}

TEST_CASE("mutex: lock() and scoped_lock() awaited by a coroutine that is not a task") {
  mpg::runtime rt({.procs = 1});
  mpg::mutex m;
  int done = rt.block_on([](mpg::mutex* m) -> mpg::task<int> {
    int d = 0;
    lock_twice_from_a_plain_coroutine(m, &d);  // the mutex is free: it never suspends
    co_return d;
  }(&m));
  CHECK(done == 2);
}

// A waiter that was woken, lost the mutex to a barging locker after waiting
// more than 1 ms, and went back to the queue has switched the mutex to
// starvation mode. Killed there, it must take kWaiters and kStarving with
// it, or the next unlock() would hand the mutex to the freed waiter.
mpg::task<void> park_starving_locker(mpg::mutex* m) {
  if (!m->try_lock()) throw std::logic_error("mutex not free");
  mpg::go(park_in_lock(m), "starving locker");
  co_await yield_some(10);  // the locker parks (one P)
  // Past the starvation threshold (1 ms) since it parked; not a sync sleep.
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
  while (std::chrono::steady_clock::now() < until) mpg::detail::cpu_relax();
  m->unlock();  // readies the locker, which loses to this barging relock:
  if (!m->try_lock()) throw std::logic_error("barging try_lock failed");
  co_await yield_some(10);  // it retries, finds m locked, starves, parks at the front
}

TEST_CASE("mutex: a starving waiter killed at shutdown takes starvation mode with it") {
  mpg::mutex m;
  {
    mpg::runtime rt({.procs = 1});
    rt.block_on(park_starving_locker(&m));
    REQUIRE(mpg_test::dump_shows(rt, "mutex lock"));
  }  // kills the locker; m stays locked (by the finished block_on task)
  m.unlock();
  CHECK(m.try_lock());  // not left in starvation mode
  m.unlock();
}

}  // namespace
