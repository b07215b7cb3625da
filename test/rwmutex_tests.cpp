// test/rwmutex_tests.cpp: mpg::rwmutex. Readers share, writers exclude
// everyone (checked on plain, non-atomic data); a waiting writer blocks new
// readers, so a stream of readers cannot starve it; a writer's unlock admits
// the readers queued behind it before the next writer; misuse throws; a
// waiter killed at shutdown leaves the lock sound, and a killed writer lets
// the readers queued behind it in.
#include <doctest/doctest.h>

#include "test_support.hpp"

#include <mpg/mpg.hpp>

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

namespace {

constexpr int kScale = mpg_test::kSanitized ? 1 : 5;

mpg::task<std::string> readers_share_writers_exclude() {
  mpg::rwmutex rw;
  co_await rw.lock_shared();
  // Another reader gets in; a writer does not.
  if (!rw.try_lock_shared()) co_return "second reader refused";
  if (rw.try_lock()) co_return "writer admitted with readers inside";
  rw.unlock_shared();
  rw.unlock_shared();
  co_await rw.lock();
  if (rw.try_lock_shared()) co_return "reader admitted with a writer inside";
  if (rw.try_lock()) co_return "second writer admitted";
  rw.unlock();
  if (!rw.try_lock()) co_return "not free after unlock";
  rw.unlock();
  co_return "ok";
}

TEST_CASE("rwmutex: readers share, a writer excludes readers and writers") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(readers_share_writers_exclude()) == "ok");
}

TEST_CASE("rwmutex: unlocking what is not locked throws sync_misuse_error") {
  mpg::rwmutex rw;
  CHECK_THROWS_AS(rw.unlock(), mpg::sync_misuse_error);
  CHECK_THROWS_AS(rw.unlock_shared(), mpg::sync_misuse_error);
  CHECK(rw.try_lock_shared());
  CHECK_THROWS_AS(rw.unlock(), mpg::sync_misuse_error);  // held shared, not exclusive
  rw.unlock_shared();
  CHECK(rw.try_lock());
  CHECK_THROWS_AS(rw.unlock_shared(), mpg::sync_misuse_error);
  rw.unlock();
}

// Writers keep a pair equal (a, a); readers must never see it torn. The
// data is plain: exclusion and the happens-before edges are what keep it
// consistent (TSan checks the latter).
struct pair_data {
  mpg::rwmutex rw;
  long a = 0;
  long b = 0;
  std::atomic<int> readers_inside{0};
  std::atomic<int> max_readers{0};
  std::atomic<int> torn{0};
};

mpg::task<void> pair_writer(pair_data* d, int n) {
  for (int i = 0; i < n; ++i) {
    co_await d->rw.lock();
    if (d->readers_inside.load() != 0) d->torn.fetch_add(1);
    ++d->a;
    if (i % 16 == 0) co_await mpg::yield();
    ++d->b;
    d->rw.unlock();
  }
}

mpg::task<void> pair_reader(pair_data* d, int n) {
  for (int i = 0; i < n; ++i) {
    co_await d->rw.lock_shared();
    const int inside = d->readers_inside.fetch_add(1) + 1;
    int m = d->max_readers.load();
    while (inside > m && !d->max_readers.compare_exchange_weak(m, inside)) {
    }
    if (d->a != d->b) d->torn.fetch_add(1);
    if (i % 8 == 0) co_await mpg::yield();
    if (d->a != d->b) d->torn.fetch_add(1);
    d->readers_inside.fetch_sub(1);
    d->rw.unlock_shared();
  }
}

mpg::task<std::string> mixed_stress() {
  pair_data d;
  std::vector<mpg::join_handle<void>> hs;
  const int n = 2000 * kScale;
  for (int i = 0; i < 3; ++i) hs.push_back(mpg::spawn(pair_writer(&d, n)));
  for (int i = 0; i < 6; ++i) hs.push_back(mpg::spawn(pair_reader(&d, n)));
  for (auto& h : hs) co_await h;
  if (d.torn.load() != 0) co_return "torn reads or a writer beside readers";
  if (d.a != 3L * n || d.b != 3L * n) co_return "lost writes";
  if (!d.rw.try_lock()) co_return "left locked";
  d.rw.unlock();
  co_return "ok";
}

TEST_CASE("rwmutex: stress with readers and writers on plain data") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(mixed_stress()) == "ok");
}

// A stream of overlapping readers (there is always at least one inside) must
// not starve a writer: once it waits, new readers queue behind it.
mpg::task<std::string> writer_not_starved() {
  mpg::rwmutex rw;
  std::atomic<bool> writer_done{false};
  std::atomic<long> reader_rounds{0};
  auto reader = [](mpg::rwmutex* rw, std::atomic<bool>* done,
                   std::atomic<long>* rounds) -> mpg::task<int> {
    const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done->load()) {
      co_await rw->lock_shared();
      co_await mpg::yield();  // overlap with the other readers
      rw->unlock_shared();
      if (rounds->fetch_add(1) % 256 == 0 && std::chrono::steady_clock::now() > limit) co_return 1;
    }
    co_return 0;
  };
  std::vector<mpg::join_handle<int>> rs;
  for (int i = 0; i < 4; ++i) rs.push_back(mpg::spawn(reader(&rw, &writer_done, &reader_rounds)));
  while (reader_rounds.load() < 100) co_await mpg::yield();
  co_await rw.lock();  // must get in while the readers keep going
  writer_done.store(true);
  rw.unlock();
  int timed_out = 0;
  for (auto& r : rs) timed_out += co_await r;
  co_return timed_out == 0 ? "ok" : "writer starved by readers";
}

TEST_CASE("rwmutex: a writer is not starved by a stream of readers") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(writer_not_starved()) == "ok");
}

mpg::task<std::string> waiting_writer_blocks_new_readers() {
  mpg::rwmutex rw;
  co_await rw.lock_shared();
  std::atomic<bool> writer_in{false};
  auto w = mpg::spawn([](mpg::rwmutex* rw, std::atomic<bool>* in) -> mpg::task<void> {
    co_await rw->lock();
    in->store(true);
    rw->unlock();
  }(&rw, &writer_in));
  // Once the writer waits, try_lock_shared fails (bounded wait for it to park).
  bool blocked = false;
  for (int i = 0; i < 100000 && !blocked; ++i) {
    if (rw.try_lock_shared()) {
      rw.unlock_shared();
      co_await mpg::yield();
    } else {
      blocked = true;
    }
  }
  if (!blocked) co_return "new readers still admitted while a writer waits";
  if (writer_in.load()) co_return "writer got in beside a reader";
  rw.unlock_shared();  // last reader out hands the lock to the writer
  co_await w;
  if (!writer_in.load()) co_return "writer never got in";
  co_return "ok";
}

TEST_CASE("rwmutex: a waiting writer blocks new readers; the last reader hands it the lock") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(waiting_writer_blocks_new_readers()) == "ok");
}

mpg::task<std::string> writer_unlock_admits_queued_readers() {
  // Phase fairness: readers queued behind a writer get in before the next
  // queued writer.
  mpg::rwmutex rw;
  co_await rw.lock();
  std::atomic<int> readers_in{0};
  std::atomic<int> order{0};
  std::atomic<int> writer2_order{-1};
  std::atomic<int> started{0};
  std::vector<mpg::join_handle<void>> hs;
  for (int i = 0; i < 5; ++i)
    hs.push_back(mpg::spawn([](mpg::rwmutex* rw, std::atomic<int>* in, std::atomic<int>* order,
                               std::atomic<int>* started) -> mpg::task<void> {
      started->fetch_add(1);
      co_await rw->lock_shared();
      in->fetch_add(1);
      order->fetch_add(1);
      rw->unlock_shared();
    }(&rw, &readers_in, &order, &started)));
  hs.push_back(mpg::spawn([](mpg::rwmutex* rw, std::atomic<int>* order, std::atomic<int>* w2,
                             std::atomic<int>* started) -> mpg::task<void> {
    started->fetch_add(1);
    co_await rw->lock();
    w2->store(order->fetch_add(1));
    rw->unlock();
  }(&rw, &order, &writer2_order, &started)));
  // One P: each task runs until it parks, so all six are queued now.
  while (started.load() < 6) co_await mpg::yield();
  rw.unlock();
  for (auto& h : hs) co_await h;
  if (readers_in.load() != 5) co_return "readers lost";
  if (writer2_order.load() != 5) co_return "second writer overtook queued readers";
  co_return "ok";
}

TEST_CASE("rwmutex: a writer's unlock admits the queued readers before the next writer") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(writer_unlock_admits_queued_readers()) == "ok");
}

// Shutdown: ~runtime kills the tasks still parked and frees their frames. A
// waiter killed while queued must unlink itself, or a later unlock reads
// the freed waiter (ASan, where the frame cache is off).

mpg::task<void> park_reader(mpg::rwmutex* rw) {
  co_await rw->lock_shared();
  rw->unlock_shared();  // not reached when killed while parked
}

mpg::task<void> park_writer(mpg::rwmutex* rw) {
  co_await rw->lock();
  rw->unlock();  // not reached: killed while parked
}

mpg::task<void> go_and_park(mpg::task<void> t, const char* name) {
  mpg::go(std::move(t), name);
  co_await mpg_test::yield_some(10);  // it parks (one P)
}

TEST_CASE("rwmutex: a reader killed at shutdown leaves the rwmutex sound for the writer's unlock") {
  mpg::rwmutex rw;
  REQUIRE(rw.try_lock());  // a writer holds it from outside any runtime
  {
    mpg::runtime rt({.procs = 1});
    rt.block_on(go_and_park(park_reader(&rw), "reader"));
    REQUIRE(mpg_test::dump_shows(rt, "rwmutex lock_shared"));
  }  // kills the queued reader
  rw.unlock();
  CHECK(rw.try_lock_shared());
  rw.unlock_shared();
  CHECK(rw.try_lock());
  rw.unlock();
}

// Readers queued behind a writer must not wait for it once it is killed: its
// awaiter's unlink admits them (here they belong to another runtime, which
// lives on).
mpg::task<void> reader_reports(mpg::rwmutex* rw, mpg::chan<int> admitted) {
  co_await rw->lock_shared();
  rw->unlock_shared();
  co_await admitted.send(1);
}

TEST_CASE("rwmutex: a writer killed at shutdown admits the readers queued behind it") {
  mpg::rwmutex rw;
  mpg::chan<int> admitted(1);
  REQUIRE(rw.try_lock_shared());  // a reader holds it from outside any runtime
  mpg::runtime a({.procs = 1});
  {
    mpg::runtime b({.procs = 1});
    b.block_on(go_and_park(park_writer(&rw), "writer"));
    REQUIRE(mpg_test::dump_shows(b, "rwmutex lock"));
    a.block_on(go_and_park(reader_reports(&rw, admitted), "reader"));
    REQUIRE(mpg_test::dump_shows(a, "rwmutex lock_shared"));
  }  // kills the writer, queued behind our reader and ahead of a's reader
  rw.unlock_shared();
  CHECK(a.block_on([](mpg::chan<int> c) -> mpg::task<int> {
          co_return (co_await c.recv()).value_or(0);
        }(admitted)) == 1);
  CHECK(rw.try_lock());
  rw.unlock();
}

}  // namespace
