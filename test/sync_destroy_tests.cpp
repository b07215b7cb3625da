// test/sync_destroy_tests.cpp: a sync object may be destroyed by the task
// that has just returned from waiting on it (Go's everyday
// `{ var wg sync.WaitGroup; ...; wg.Wait() }`, and POSIX's "destroying a
// mutex right after the last unlock is safe"). Every release path must stop
// touching the object once a waiter can observe the release. Each test runs
// many rounds on a fresh heap object that the last user deletes at once;
// ASan reports a release path that touches the freed object, and TSan one
// whose last touch is not ordered before the delete.
#include <doctest/doctest.h>

#include "test_support.hpp"

#include <mpg/detail/sync/cpu_relax.hpp>
#include <mpg/mpg.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

// The tests' access to a wait_group's queue (wait_group.hpp befriends it):
// to hold the queue lock while a select's clean-up is on its way to it.
struct mpg::detail::wait_group_probe {
  // waiters(): the group's waiter count.
  static std::uint64_t waiters(const mpg::wait_group& wg) {
    return mpg::wait_group::waiters(wg.state_.load(std::memory_order_acquire));
  }
  // hold_lock_until_cleaning(): runs f() with the group's queue lock held,
  // then holds it until the select waiter at the front of the queue has
  // begun its clean-up (W4's kCleaning: its select waits for this lock).
  template <class F>
  static void hold_lock_until_cleaning(mpg::wait_group& wg, F f) {
    wg.q_.wake([&](mpg::detail::waitq* queues) -> mpg::detail::waiter* {
      f();
      for (;;) {
        mpg::detail::waiter* w = queues[0].front();
        // Acquire, as the crossing's reads (the select's CAS is an RMW).
        if (w != nullptr && w->sel() != nullptr &&
            static_cast<mpg::wait_group::wait_awaiter*>(w)->sel_cleanup_.load(
                std::memory_order_acquire) == mpg::wait_group::wait_awaiter::kCleaning)
          return nullptr;
        mpg::detail::cpu_relax();
      }
    });
  }
};

namespace {

constexpr int kRounds = mpg_test::kSanitized ? 3000 : 5000;

// A plain thread that calls a release on objects handed to it through a
// one-slot mailbox, as fast as they come. Made inside a task; while it
// lives it counts as a possible wake-up for the deadlock check (a release
// may be the one a parked task waits for, and a loaded machine may not run
// this thread for longer than the check's quiet period).
template <class T, class Release>
class releaser_thread {
 public:
  explicit releaser_thread(Release release) : release_(release), thread_([this] { run(); }) {}
  ~releaser_thread() {
    stop_.store(true);
    thread_.join();
  }
  void hand(T* obj) {
    while (slot_.load(std::memory_order_acquire) != nullptr) std::this_thread::yield();
    slot_.store(obj, std::memory_order_release);
  }

 private:
  void run() {
    while (!stop_.load(std::memory_order_relaxed)) {
      T* obj = slot_.load(std::memory_order_acquire);
      if (obj == nullptr) continue;  // spin: a release must follow closely
      slot_.store(nullptr, std::memory_order_relaxed);
      release_(obj);
    }
  }
  mpg::external_work alive_{mpg::runtime_handle::current()};
  Release release_;
  std::atomic<T*> slot_{nullptr};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// wait_group: done() from another task and from a plain thread; the waiter
// deletes the group as soon as wait() returns.
mpg::task<void> wait_group_rounds(int rounds) {
  auto done = [](mpg::wait_group* wg) { wg->done(); };
  releaser_thread<mpg::wait_group, decltype(done)> thread(done);
  for (int r = 0; r < rounds; ++r) {
    auto* wg = new mpg::wait_group;
    wg->add(2);
    mpg::go([](mpg::wait_group* wg) -> mpg::task<void> {
      wg->done();
      co_return;
    }(wg));
    thread.hand(wg);
    if (r % 3 == 0) co_await mpg::yield();  // sometimes park, sometimes not
    co_await wg->wait();
    delete wg;
  }
}

TEST_CASE("wait_group: the waiter may destroy it as soon as wait() returns") {
  mpg::runtime rt({.procs = 2});
  rt.block_on(wait_group_rounds(kRounds * 8));
}

// mutex: tasks lock, count and unlock; whoever counts last deletes the
// mutex right after its own unlock, while the others may still be inside
// theirs.
struct mutex_round {
  mpg::mutex m;
  int count = 0;  // guarded by m
};

mpg::task<void> mutex_user(mutex_round* r, int per_task, int total, mpg::wait_group* wg) {
  for (int i = 0; i < per_task; ++i) {
    co_await r->m.lock();
    const bool last = ++r->count == total;
    r->m.unlock();
    if (last) delete r;
  }
  wg->done();
}

mpg::task<void> mutex_rounds(int rounds) {
  constexpr int kTasks = 4, kPer = 3;
  mpg::wait_group wg;
  for (int r = 0; r < rounds; ++r) {
    auto* round = new mutex_round;
    wg.add(kTasks);
    for (int t = 0; t < kTasks; ++t) mpg::go(mutex_user(round, kPer, kTasks * kPer, &wg));
    co_await wg.wait();
  }
}

TEST_CASE("mutex: may be destroyed right after the last unlock") {
  mpg::runtime rt({.procs = 2});
  rt.block_on(mutex_rounds(kRounds));
}

// semaphore: as the mutex (one permit), plus a semaphore used as a signal
// from a plain thread (its permit returned by release()), deleted by the
// task it woke.
struct semaphore_round {
  mpg::semaphore s{1};
  int count = 0;  // guarded by the permit
};

mpg::task<void> semaphore_user(semaphore_round* r, int per_task, int total, mpg::wait_group* wg) {
  for (int i = 0; i < per_task; ++i) {
    co_await r->s.acquire();
    const bool last = ++r->count == total;
    r->s.release();
    if (last) delete r;
  }
  wg->done();
}

mpg::task<void> semaphore_rounds(int rounds) {
  constexpr int kTasks = 4, kPer = 3;
  mpg::wait_group wg;
  auto release = [](mpg::semaphore* s) { s->release(); };
  releaser_thread<mpg::semaphore, decltype(release)> thread(release);
  for (int r = 0; r < rounds; ++r) {
    auto* round = new semaphore_round;
    wg.add(kTasks);
    for (int t = 0; t < kTasks; ++t) mpg::go(semaphore_user(round, kPer, kTasks * kPer, &wg));
    auto* signal = new mpg::semaphore(1);  // its one permit is ours...
    co_await signal->acquire();
    thread.hand(signal);                    // ...until the thread returns it
    co_await signal->acquire();
    delete signal;
    co_await wg.wait();
  }
}

TEST_CASE("semaphore: may be destroyed right after the last release") {
  mpg::runtime rt({.procs = 2});
  rt.block_on(semaphore_rounds(kRounds));
}

// rwmutex: readers and writers take turns; each task ends with a writer's
// section that counts it, and whoever counts last deletes the rwmutex right
// after that unlock, while the others may still be inside theirs.
// (Readers cannot count: the last reader to count may not be the last to
// unlock_shared.)
struct rwmutex_round {
  mpg::rwmutex rw;
  int count = 0;  // guarded by rw, exclusively
};

mpg::task<void> rwmutex_user(rwmutex_round* r, bool writer, int per_task, int total,
                             mpg::wait_group* wg) {
  for (int i = 0; i < per_task; ++i) {
    if (writer) {
      co_await r->rw.lock();
      r->rw.unlock();
    } else {
      co_await r->rw.lock_shared();
      r->rw.unlock_shared();
    }
  }
  co_await r->rw.lock();
  const bool last = ++r->count == total;
  r->rw.unlock();
  if (last) delete r;
  wg->done();
}

mpg::task<void> rwmutex_rounds(int rounds) {
  constexpr int kTasks = 5, kPer = 3;
  mpg::wait_group wg;
  for (int r = 0; r < rounds; ++r) {
    auto* round = new rwmutex_round;
    wg.add(kTasks);
    for (int t = 0; t < kTasks; ++t)
      mpg::go(rwmutex_user(round, t % 2 == 0, kPer, kTasks, &wg));
    co_await wg.wait();
  }
}

TEST_CASE("rwmutex: may be destroyed right after the last unlock") {
  mpg::runtime rt({.procs = 2});
  rt.block_on(rwmutex_rounds(kRounds));
}

// once: callers race; whoever returns last from call() deletes it.
struct once_round {
  mpg::once o;
  std::atomic<int> returned{0};
  int value = 0;  // written by f, read after call()
};

mpg::task<void> once_user(once_round* r, int total, mpg::wait_group* wg) {
  co_await r->o.call([r]() -> mpg::task<> {
    co_await mpg::yield();  // the others arrive and park meanwhile
    r->value = 7;
  });
  const bool ok = r->value == 7;
  if (r->returned.fetch_add(1) + 1 == total) delete r;
  if (!ok) throw std::logic_error("call() returned before f completed");
  wg->done();
}

mpg::task<void> once_rounds(int rounds) {
  constexpr int kTasks = 4;
  mpg::wait_group wg;
  for (int r = 0; r < rounds; ++r) {
    auto* round = new once_round;
    wg.add(kTasks);
    for (int t = 0; t < kTasks; ++t) mpg::go(once_user(round, kTasks, &wg));
    co_await wg.wait();
  }
}

TEST_CASE("once: may be destroyed by the last caller to return") {
  mpg::runtime rt({.procs = 2});
  rt.block_on(once_rounds(kRounds));
}

// Channels are handles to a reference-counted state, so "destroy after the
// last use" is dropping the last handle; the state also goes when a closer
// or sender on another thread is the last one out.
mpg::task<void> chan_rounds(int rounds) {
  auto close = [](mpg::chan<int>* c) {
    (void)c->try_send(1);
    c->close();
    delete c;  // drops this thread's handle: maybe the last one
  };
  releaser_thread<mpg::chan<int>, decltype(close)> thread(close);
  for (int r = 0; r < rounds; ++r) {
    auto ch = std::make_unique<mpg::chan<int>>(r % 2);
    thread.hand(new mpg::chan<int>(*ch));
    while (co_await ch->recv()) {
    }
    ch.reset();  // after the receive that saw the close: maybe the last handle
  }
}

TEST_CASE("chan: the last handle may be dropped right after a receive returns") {
  mpg::runtime rt({.procs = 2});
  rt.block_on(chan_rounds(kRounds));
}

// wait_group and a select woken by it: the select's task waits on the group
// too, but once the group has woken it (its case won) it no longer touches
// the group, so the plain waiter that runs first may destroy it. On one P,
// in an order made sure: the owner queues first, the select second; done()
// readies the owner into runnext and the select behind it, so the owner
// returns and deletes the group before the select runs again.
mpg::task<void> wg_select_waiter(mpg::wait_group* wg, mpg::chan<int> never, bool* parking) {
  *parking = true;  // one P: the select below parks before anything else runs
  auto r = co_await mpg::select(wg->wait(), never.recv());
  CHECK(r.index() == 0);
}

mpg::task<void> wg_select_releaser(mpg::wait_group* wg, const bool* parking) {
  while (!*parking) co_await mpg::yield();
  wg->done();
}

// The owner of the one-P wait_group tests: makes the group (count 1), spawns
// the select's task and the releaser that make_waiter and make_releaser
// build from the group and a flag (set as the select is about to park),
// waits on the group, deletes it as soon as its wait returns (the select
// has not run again yet), then joins both.
template <class MakeWaiter, class MakeReleaser>
mpg::task<void> wg_destroying_owner(MakeWaiter make_waiter, MakeReleaser make_releaser) {
  bool parking = false;
  auto wg = std::make_unique<mpg::wait_group>();
  wg->add(1);
  mpg::join_handle<void> sel = mpg::spawn(make_waiter(wg.get(), &parking));
  mpg::join_handle<void> rel = mpg::spawn(make_releaser(wg.get(), &parking));
  co_await wg->wait();
  wg.reset();
  co_await sel;
  co_await rel;
}

mpg::task<void> wg_select_owner() {
  mpg::chan<int> never;
  return wg_destroying_owner(
      [never](mpg::wait_group* wg, bool* parking) { return wg_select_waiter(wg, never, parking); },
      wg_select_releaser);
}

TEST_CASE("wait_group: a waiter may destroy it before a select that it woke runs again") {
  mpg::runtime rt({.procs = 1});
  for (int i = 0; i < 100; ++i) rt.block_on(wg_select_owner());
}

// wait_group and a select whose wait case lost: the select's task waits on
// the group too, but another case won, and the done() that ends the round
// drops the select's waiter there. The plain waiter that the done() readies
// may destroy the group at once, so the select's clean-up must not come
// back to it (wait_group.hpp, W1-W4). One P, in an order made sure: the
// owner queues first, the select second; the releaser's send wins the
// select's receive (readying it into runnext), then its done() readies the
// owner into runnext and moves the select behind it, so the owner deletes
// the group before the select runs its clean-up.
mpg::task<void> wg_lost_waiter(mpg::wait_group* wg, mpg::chan<int> ch, bool* parking) {
  *parking = true;  // one P: the select below parks before anything else runs
  auto r = co_await mpg::select(wg->wait(), ch.recv());
  REQUIRE(r.index() == 1);
  CHECK(std::get<1>(r) == std::optional<int>(7));
}

mpg::task<void> wg_lost_releaser(mpg::wait_group* wg, mpg::chan<int> ch, const bool* parking) {
  while (!*parking) co_await mpg::yield();
  co_await ch.send(7);  // the select is parked on ch: its receive wins
  wg->done();
}

mpg::task<void> wg_lost_owner() {
  mpg::chan<int> ch;
  return wg_destroying_owner(
      [ch](mpg::wait_group* wg, bool* parking) { return wg_lost_waiter(wg, ch, parking); },
      [ch](mpg::wait_group* wg, bool* parking) { return wg_lost_releaser(wg, ch, parking); });
}

TEST_CASE("wait_group: a waiter may destroy it before a select whose wait case lost runs again") {
  mpg::runtime rt({.procs = 1});
  for (int i = 0; i < 100; ++i) rt.block_on(wg_lost_owner());
}

// The same with two wait cases on the one group: one wins, the done() drops
// the other, and neither may bring the select back to the group.
mpg::task<void> wg_twice_waiter(mpg::wait_group* wg, bool* parking) {
  *parking = true;
  // Either case may win (they queue in a random order); the check is the
  // sanitizer's: nothing touches the group after the owner deletes it.
  co_await mpg::select(wg->wait(), wg->wait());
}

mpg::task<void> wg_twice_owner() {
  return wg_destroying_owner(wg_twice_waiter, wg_select_releaser);
}

TEST_CASE("wait_group: a waiter may destroy it before a select with two wait cases runs again") {
  mpg::runtime rt({.procs = 1});
  for (int i = 0; i < 100; ++i) rt.block_on(wg_twice_owner());
}

// On two Ps the select's clean-up and the done() race: the select, woken by
// one releaser's send, may be cleaning up on one P while the other
// releaser's done() on the other P ends the round and readies the owner,
// which deletes the group. The send completes only once the select has
// queued, so the group outlives the select's arming, and the receive
// always wins; the done() follows the send closely (the flag), so that the
// two sides meet in every order (wait_group.hpp, W2-W4).
mpg::task<void> wg_race_waiter(mpg::wait_group* wg, mpg::chan<int> ch) {
  auto r = co_await mpg::select(wg->wait(), ch.recv());
  CHECK(r.index() == 1);
}

mpg::task<void> wg_race_sender(mpg::chan<int> ch, std::atomic<bool>* sent) {
  co_await ch.send(1);
  sent->store(true, std::memory_order_release);
}

mpg::task<void> wg_race_releaser(mpg::wait_group* wg, const std::atomic<bool>* sent) {
  while (!sent->load(std::memory_order_acquire)) co_await mpg::yield();
  wg->done();
}

mpg::task<void> wg_race_rounds(int rounds) {
  for (int i = 0; i < rounds; ++i) {
    mpg::chan<int> ch;
    std::atomic<bool> sent{false};
    auto wg = std::make_unique<mpg::wait_group>();
    wg->add(1);
    mpg::join_handle<void> sel = mpg::spawn(wg_race_waiter(wg.get(), ch));
    mpg::join_handle<void> snd = mpg::spawn(wg_race_sender(ch, &sent));
    mpg::join_handle<void> rel = mpg::spawn(wg_race_releaser(wg.get(), &sent));
    co_await wg->wait();
    wg.reset();
    co_await sel;
    co_await snd;
    co_await rel;
  }
}

TEST_CASE("wait_group: a select whose wait case lost races the done() that ends the round") {
  mpg::runtime rt({.procs = 2});
  rt.block_on(wg_race_rounds(kRounds));
}

// A select's frame outlives every touch of its waiters by a crossing to
// zero. The select's clean-up of its lost case is on its way to the group's
// lock (W4, kCleaning) when the done() that would end the round takes the
// lock first and must let that clean-up through (W2). Once the clean-up has
// taken its waiter off, its select returns and its task reuses that part of
// its frame (the next select, a CHECK): the crossing must read nothing of
// the awaiter outside the lock (TSan: such a read races the task's next
// writes there). A plain thread holds the lock (the probe) until the
// clean-up has begun, then calls done() at once, ahead of the clean-up's
// next probe of the lock.
mpg::task<void> wg_cleaning_selects(mpg::wait_group* a, mpg::wait_group* b, int rounds) {
  for (int i = 0; i < rounds; ++i) {
    auto r = co_await mpg::select(a[i].wait(), b[i].wait());
    CHECK(r.index() == 0);
  }
}

mpg::task<void> wg_cleaning_rounds(int rounds) {
  using probe = mpg::detail::wait_group_probe;
  std::vector<mpg::wait_group> a(static_cast<std::size_t>(rounds));
  std::vector<mpg::wait_group> b(static_cast<std::size_t>(rounds));
  for (int i = 0; i < rounds; ++i) {
    a[static_cast<std::size_t>(i)].add(1);
    b[static_cast<std::size_t>(i)].add(1);
  }
  mpg::join_handle<void> sel = mpg::spawn(wg_cleaning_selects(a.data(), b.data(), rounds));
  mpg::external_work alive{mpg::runtime_handle::current()};
  std::thread releaser([&a, &b, rounds] {
    for (std::size_t i = 0; i < static_cast<std::size_t>(rounds); ++i) {
      // Queued on b (so on a too: both under the select's locks).
      while (probe::waiters(b[i]) == 0) std::this_thread::yield();
      // a's done() wins the select; its clean-up of b waits for b's lock.
      probe::hold_lock_until_cleaning(b[i], [&] { a[i].done(); });
      b[i].done();  // the crossing meets the clean-up in kCleaning (W2)
    }
  });
  co_await sel;
  releaser.join();
}

TEST_CASE("wait_group: a crossing that lets a select's clean-up through reads none of it after") {
  mpg::runtime rt({.procs = 2});
  rt.block_on(wg_cleaning_rounds(mpg_test::kSanitized ? 300 : 1000));
}

}  // namespace
