// runtime_handle and external_work (mpg/runtime_handle.hpp): posting plain
// functions from any thread, hopping a foreign coroutine onto a P, handles
// that outlive their runtime, and the deadlock check's external wake-ups.
#include <doctest/doctest.h>

#include <atomic>
#include <latch>
#include <coroutine>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

#include "mpg/mpg.hpp"
#include "mpg/net.hpp"
#include "sched/scheduler.hpp"
#include "stream_pair.hpp"
#include "test_support.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;

namespace {

// countdown: a plain-thread latch (the test thread waits; tasks and posted
// functions count down).
using countdown = std::latch;

// A coroutine that is not an mpg task.
using plain_coro = mpg_test::eager_coroutine;

plain_coro hop_onto(mpg::runtime_handle h, bool* before, bool* after, std::thread::id* where,
                    countdown* done) {
  *before = h.running_in_this_thread();
  co_await h.schedule();
  *after = h.running_in_this_thread();
  *where = std::this_thread::get_id();
  done->count_down();
}

plain_coro hop_expecting_refusal(mpg::runtime_handle h, bool* threw) {
  try {
    co_await h.schedule();
  } catch (const mpg::runtime_misuse_error&) {
    *threw = true;
  }
}

// probe: counts its own destruction once, however often it is moved.
struct probe {
  std::atomic<long>* destroyed;
  bool live = true;
  explicit probe(std::atomic<long>* d) : destroyed(d) {}
  probe(probe&& o) noexcept : destroyed(o.destroyed), live(std::exchange(o.live, false)) {}
  probe(const probe&) = delete;
  ~probe() {
    if (live) destroyed->fetch_add(1, std::memory_order_relaxed);
  }
};

mpg::task<int> recv_one(mpg::chan<int> c) {
  auto v = co_await c.recv();
  co_return v ? *v : -1;
}

}  // namespace

TEST_CASE("post from 4 threads x 5000: every function runs exactly once, on a P") {
  mpg::runtime rt({.procs = 2});
  mpg::runtime_handle h = rt.handle();
  constexpr int kThreads = 4;
  constexpr int kPosts = 5000;
  std::vector<std::atomic<int>> runs(kThreads * kPosts);
  std::atomic<int> off_runtime{0};
  countdown all(kThreads * kPosts);
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < kPosts; ++i) {
        const bool ok = h.post([&, idx = t * kPosts + i] {
          if (!h.running_in_this_thread()) off_runtime.fetch_add(1, std::memory_order_relaxed);
          runs[idx].fetch_add(1, std::memory_order_relaxed);
          all.count_down();
        });
        if (!ok) off_runtime.fetch_add(1000000, std::memory_order_relaxed);
      }
    });
  }
  for (auto& t : ts) t.join();
  all.wait();
  CHECK(off_runtime.load() == 0);
  int wrong = 0;
  for (auto& r : runs) wrong += r.load() != 1;
  CHECK(wrong == 0);
  CHECK_FALSE(h.running_in_this_thread());  // the test thread is not one of rt's
}

TEST_CASE("a post always finds an M: ping-pong between a plain thread and posted functions") {
  // Each post finds the runtime idle (every M parked or about to park): a
  // lost wake-up hangs here.
  mpg::runtime rt({.procs = 2});
  mpg::runtime_handle h = rt.handle();
  const int rounds = mpg_test::kSanitized ? 500 : 3000;
  for (int i = 0; i < rounds; ++i) {
    countdown one(1);
    REQUIRE(h.post([&] { one.count_down(); }));
    one.wait();
  }
}

TEST_CASE("posted functions may spawn, try_send and post") {
  mpg::runtime rt({.procs = 2});
  mpg::runtime_handle h = rt.handle();
  mpg::chan<int> c(1);
  auto j = rt.spawn(recv_one(c));
  REQUIRE(h.post([&] {
    auto me = mpg::runtime_handle::current();
    CHECK(me == h);
    CHECK(me.post([c]() mutable { c.try_send(7); }));
  }));
  CHECK(rt.block_on(std::move(j)) == 7);
}

mpg::task<int> seven() { co_return 7; }

TEST_CASE("block_on in a posted function throws; in mpg::blocking it runs") {
  // A posted function holds its M's P: block_on there would stall the P,
  // for ever with one P (the task it waits for is queued on that P).
  mpg::runtime rt({.procs = 1});
  mpg::runtime_handle h = rt.handle();
  std::atomic<int> outcome{0};  // 1: threw runtime_misuse_error; 2: returned
  REQUIRE(h.post([&] {
    try {
      (void)rt.block_on(seven());
      outcome.store(2);
    } catch (const mpg::runtime_misuse_error&) {
      outcome.store(1);
    }
  }));
  const auto limit = std::chrono::steady_clock::now() + 10s;
  while (outcome.load() == 0 && std::chrono::steady_clock::now() < limit) std::this_thread::yield();
  REQUIRE(outcome.load() == 1);
  // In mpg::blocking the thread has given its P away: block_on may wait.
  int v = rt.block_on([](mpg::runtime* rt) -> mpg::task<int> {
    co_return co_await mpg::blocking([rt] { return rt->block_on(seven()); });
  }(&rt));
  CHECK(v == 7);
}

TEST_CASE("a handle outliving its runtime refuses work and destroys the function") {
  std::atomic<long> destroyed{0};
  mpg::runtime_handle h;
  CHECK_FALSE(h.post([] {}));  // empty handle
  {
    mpg::runtime rt({.procs = 1});
    h = rt.handle();
    CHECK(static_cast<bool>(h));
  }
  bool ran = false;
  CHECK_FALSE(h.post([&ran, p = probe(&destroyed)] { ran = true; }));
  CHECK_FALSE(ran);
  CHECK(destroyed.load() == 1);
  CHECK_FALSE(h.running_in_this_thread());
  bool threw = false;
  hop_expecting_refusal(h, &threw);
  CHECK(threw);
}

TEST_CASE("post racing with ~runtime: each function runs or is destroyed, exactly once") {
  const int iterations = mpg_test::kSanitized ? 20 : 100;
  for (int it = 0; it < iterations; ++it) {
    std::atomic<long> destroyed{0}, ran{0}, accepted{0}, attempts{0};
    std::atomic<bool> refused{false};
    auto rt = std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 2});
    mpg::runtime_handle h = rt->handle();
    std::atomic<int> started{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < 3; ++t) {
      ts.emplace_back([&] {
        started.fetch_add(1);
        // Post until the runtime refuses: some posts land before the close,
        // some race with it, the rest are refused.
        while (!refused.load(std::memory_order_relaxed)) {
          attempts.fetch_add(1);
          if (h.post([&ran, p = probe(&destroyed)] { ran.fetch_add(1); }))
            accepted.fetch_add(1);
          else
            refused.store(true, std::memory_order_relaxed);
        }
      });
    }
    while (started.load() < 3) std::this_thread::yield();
    while (accepted.load() < 50) std::this_thread::yield();
    rt.reset();  // races with the posters
    const long ran_at_destruction = ran.load();
    for (auto& t : ts) t.join();
    CHECK(ran.load() == ran_at_destruction);  // nothing runs after ~runtime
    CHECK(ran.load() <= accepted.load());
    CHECK(destroyed.load() == attempts.load());  // none leaked, none destroyed twice
    CHECK_FALSE(h.post([] {}));
  }
}

namespace {
// The poster that entered the control block waits there until a third
// thread has seen the runtime refuse posts (so ~runtime has begun closing).
std::atomic<bool> g_inside{false}, g_closing_seen{false};
thread_local bool t_is_racing_poster = false;
void hold_poster_inside() {
  if (!t_is_racing_poster) return;
  g_inside.store(true);
  while (!g_closing_seen.load()) std::this_thread::yield();
}
// A post that the only M's P1 misses while that M goes to sleep in its ring
// without spinning (its P has I/O in flight): the M must look for posts
// again after it raised npidle_, or the function waits for an I/O
// completion, here one that only the function itself would cause. The
// hook posts at the moment of the miss, from the M itself, under the
// scheduler lock (post() takes no lock: its wake_p() reads npidle_ == 0).
mpg::runtime_handle* g_post_target = nullptr;
int g_post_fd = -1;
std::atomic<bool> g_post_armed{false};

void post_at_give_up() {
  if (!g_post_armed.exchange(false, std::memory_order_relaxed)) return;
  g_post_target->post([] { (void)!::write(g_post_fd, "x", 1); });
}

TEST_CASE("a post missed by an M about to sleep in its ring runs") {
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog wd(std::chrono::seconds(20), "a post missed before a ring sleep", &rt);
  mpg::runtime_handle h = rt.handle();
  g_post_target = &h;
  mpg::detail::g_give_up_hook.store(&post_at_give_up, std::memory_order_relaxed);
  const std::size_t n = rt.block_on([]() -> mpg::task<std::size_t> {
    mpg_test::stream_pair sp = co_await mpg_test::connect_pair();
    g_post_fd = sp.client.native_handle();
    // From here the read is the only thing in flight: the next give-up is
    // the M's ring sleep with it pending.
    g_post_armed.store(true, std::memory_order_relaxed);
    char buf[8];
    absl::StatusOr<std::size_t> r = co_await sp.server.read(std::span<char>(buf));
    co_return r.ok() ? *r : 0;
  }());
  mpg::detail::g_give_up_hook.store(nullptr, std::memory_order_relaxed);
  CHECK(!g_post_armed.load());
  CHECK(n == 1);
}

}  // namespace

TEST_CASE("a post already inside when ~runtime begins is queued before the runtime goes away") {
  // ~runtime must wait for the post that entered before it closed: else the
  // post would queue onto a freed scheduler (ASan: heap-use-after-free).
  std::atomic<long> destroyed{0}, ran{0};
  auto rt = std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1});
  mpg::runtime_handle h = rt->handle();
  mpg::detail::test_post_entered_hook.store(&hold_poster_inside);
  bool accepted = false;
  std::thread poster([&] {
    t_is_racing_poster = true;
    accepted = h.post([&ran, p = probe(&destroyed)] { ran.fetch_add(1); });
  });
  std::thread watcher([&] {
    while (!g_inside.load()) std::this_thread::yield();
    while (h.post([] {})) std::this_thread::yield();  // until ~runtime has closed the handle
    g_closing_seen.store(true);
  });
  while (!g_inside.load()) std::this_thread::yield();
  rt.reset();  // closes, then must wait for the poster inside
  poster.join();
  watcher.join();
  mpg::detail::test_post_entered_hook.store(nullptr);
  CHECK(accepted);
  CHECK(destroyed.load() == 1);  // run, or destroyed unrun by the shutdown
  CHECK(ran.load() <= 1);
}

namespace {
// A post refused while ~runtime waits for a post inside: the refused caller
// (held in the refusal for up to 10 s) must not be one that ~runtime waits
// for. The first poster is held inside until the second has been refused.
std::atomic<bool> g_first_inside{false}, g_second_refused{false}, g_runtime_gone{false};
std::atomic<bool> g_refused_saw_gone{false};
thread_local int t_poster_role = 0;  // 1: held inside; 2: held in its refusal
void hold_first_inside() {
  if (t_poster_role != 1) return;
  g_first_inside.store(true);
  CHECK(mpg_test::wait_until([] { return g_second_refused.load(); }));
}
void hold_second_refused() {
  if (t_poster_role != 2) return;
  g_second_refused.store(true);
  g_refused_saw_gone.store(
      mpg_test::wait_until([] { return g_runtime_gone.load(); }, std::chrono::seconds(10)));
}
}  // namespace

TEST_CASE("a post refused during ~runtime does not hold the destructor up") {
  auto rt = std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1});
  mpg::runtime_handle h = rt->handle();
  mpg::detail::test_post_entered_hook.store(&hold_first_inside);
  mpg::detail::test_post_refused_hook.store(&hold_second_refused);
  std::thread first([&] {
    t_poster_role = 1;
    CHECK(h.post([] {}));
  });
  REQUIRE(mpg_test::wait_until([] { return g_first_inside.load(); }));
  std::thread destroyer([&] {
    rt.reset();  // closes the handle, then waits for the first poster
    g_runtime_gone.store(true);
  });
  std::thread second([&] {
    t_poster_role = 2;
    while (h.post([] {})) std::this_thread::yield();  // until ~runtime has closed the handle
  });
  second.join();
  first.join();
  destroyer.join();
  mpg::detail::test_post_refused_hook.store(nullptr);
  mpg::detail::test_post_entered_hook.store(nullptr);
  CHECK(g_refused_saw_gone.load());
}

TEST_CASE("schedule() moves a plain coroutine onto a P") {
  mpg::runtime rt({.procs = 2});
  bool before = true, after = false;
  std::thread::id where;
  countdown done(1);
  hop_onto(rt.handle(), &before, &after, &where, &done);
  done.wait();
  CHECK_FALSE(before);
  CHECK(after);
  CHECK(where != std::this_thread::get_id());
}

namespace {

// A coroutine that is not an mpg task hops onto the runtime with
// co_await h.schedule() (so it runs inside a posted function: an M with a
// P, no G) and then awaits, 10,000 times, something that is free or ready.
// Each await must either complete or throw runtime_misuse_error (outside a
// task only an await that would wait throws, docs/api.md); none may crash.
// The posted function inherits the budget the M's last G left, and every
// await that completes at once charges it: when it ran out,
// requeue_current() was called with no G.
struct outcome {
  std::atomic<int> done{0};  // 1: ok, 2: misuse error, 3: other exception
  std::atomic<int> completed{0};
};

// kind: sync primitives that are free, 0 semaphore, 1 mutex, 2 oneshot,
// 3 wait_group, 4 rwmutex (they complete); 5 a held mutex, 6 a semaphore
// without permits, 7 yield() (they throw); then 8 a buffered channel,
// 9 a select with a ready case, 10 a select with a default, 11 a fresh
// once (the first call runs f at once), 12 sleep(0), 13 a join of a task
// that finished before the hop (j), 14 a receive from a closed channel
// (they complete).
plain_coro hop_and_await(mpg::runtime* rt, outcome* out, int kind, mpg::join_handle<int> j) {
  co_await rt->handle().schedule();
  mpg::semaphore sem(1);
  mpg::mutex m;
  mpg::wait_group wg;
  mpg::rwmutex rw;
  mpg::chan<int> c(4);
  mpg::chan<int> unbuffered;
  mpg::once o;
  int ran = 0;
  try {
    for (int i = 0; i < 10000; ++i) {
      switch (kind) {
        case 0:
          co_await sem.acquire();
          sem.release();
          break;
        case 1:
          co_await m.lock();
          m.unlock();
          break;
        case 2: {
          auto [tx, rx] = mpg::oneshot<int>();
          tx.send(i);
          (void)co_await rx;
          break;
        }
        case 3:
          co_await wg.wait();
          break;
        case 4:
          co_await rw.lock_shared();
          rw.unlock_shared();
          break;
        case 5:  // held: it must park, which outside a task throws
          if (i == 0) (void)m.try_lock();
          co_await m.lock();
          break;
        case 6:  // no permit: as above
          if (i == 0) (void)sem.try_acquire();
          co_await sem.acquire();
          break;
        case 7:  // no task to requeue
          co_await mpg::yield();
          break;
        case 8:
          co_await c.send(i);
          (void)co_await c.recv();
          break;
        case 9: {
          (void)c.try_send(i);
          auto r = co_await mpg::select(c.recv(), unbuffered.recv());
          (void)r;
          break;
        }
        case 10: {
          auto r = co_await mpg::select(unbuffered.recv(), mpg::default_case);
          (void)r;
          break;
        }
        case 11:
          co_await o.call([&] { ++ran; });
          break;
        case 12:
          co_await mpg::sleep_for(std::chrono::nanoseconds(0));
          break;
        case 13:
          if (i == 0) {
            (void)co_await j;
          } else {
            co_await c.send(i);
            (void)co_await c.recv();
          }
          break;
        default: {
          mpg::chan<int> closed(1);
          closed.close();
          (void)co_await closed.recv();
          break;
        }
      }
      out->completed.fetch_add(1);
    }
    out->done.store(1);
  } catch (const mpg::runtime_misuse_error&) {
    out->done.store(2);
  } catch (...) {
    out->done.store(3);
  }
}

// run_hop(): hop_and_await(kind) on a fresh 1-P runtime, one of whose
// tasks has finished; its outcome, after it ended (bounded).
std::pair<int, int> run_hop(int kind) {
  mpg::runtime rt({.procs = 1});
  outcome out;
  auto j = rt.spawn([]() -> mpg::task<int> { co_return 7; }());
  REQUIRE(mpg_test::wait_until([&] { return j.done(); }, std::chrono::seconds(20)));
  hop_and_await(&rt, &out, kind, std::move(j));
  CHECK(mpg_test::wait_until([&] { return out.done.load() != 0; }, std::chrono::seconds(20)));
  return {out.done.load(), out.completed.load()};
}

}  // namespace

TEST_CASE("schedule(): a plain coroutine on a P awaiting sync primitives completes or throws") {
  for (int kind = 0; kind < 8; ++kind) {
    CAPTURE(kind);
    CHECK(run_hop(kind).first == (kind >= 5 ? 2 : 1));
  }
}

TEST_CASE("a plain thread's coroutine awaiting yield() gets runtime_misuse_error") {
  bool threw = false;
  [](bool& threw) -> plain_coro {
    try {
      co_await mpg::yield();
    } catch (const mpg::runtime_misuse_error&) {
      threw = true;
    }
  }(threw);
  CHECK(threw);
}

TEST_CASE("runtime_handle::current() outside a task throws a logic_error") {
  CHECK_THROWS_AS(mpg::runtime_handle::current(), mpg::runtime_misuse_error);
  CHECK_THROWS_AS(mpg::runtime_handle::current(), std::logic_error);
  mpg::runtime rt({.procs = 1});
  mpg::runtime_handle h = rt.handle();
  auto inside = [](mpg::runtime_handle expected) -> mpg::task<bool> {
    mpg::runtime_handle me = mpg::runtime_handle::current();
    co_await me.schedule();  // already there: continues inline
    co_return me == expected && me.running_in_this_thread();
  };
  CHECK(rt.block_on(inside(h)));
}

TEST_CASE("external_work: a task waiting 300 ms for a plain thread is not a deadlock") {
  mpg::runtime rt({.procs = 2});
  mpg::chan<int> c(1);
  std::thread sender;
  {
    auto guard = std::make_unique<mpg::external_work>(rt.handle());
    sender = std::thread([c, g = std::move(guard)]() mutable {
      std::this_thread::sleep_for(300ms);  // the slow outside world under test, not synchronisation
      CHECK(c.try_send(42));
      g.reset();
    });
  }
  CHECK(rt.block_on(recv_one(c)) == 42);
  sender.join();
}

TEST_CASE("external_work: the deadlock check fires again once no guard lives") {
  mpg::runtime rt({.procs = 2});
  { mpg::external_work g(rt.handle()); }
  CHECK_THROWS_AS(rt.block_on(recv_one(mpg::chan<int>())), mpg::deadlock_error);
}

TEST_CASE("external_work: a guard outliving its runtime touches nothing") {
  std::unique_ptr<mpg::external_work> g;
  {
    mpg::runtime rt({.procs = 1});
    g = std::make_unique<mpg::external_work>(rt.handle());
  }
  g.reset();  // ASan: no use of the freed scheduler
  mpg::runtime_handle empty;
  mpg::external_work nothing(empty);
}

// The global queue is polled right after posted functions run (find_runnable
// step 4), and the functions may have filled the P's local queue by then:
// the batch taken from the global queue must fit the room left, or its
// overflow takes the scheduler lock that the poll holds (a self-deadlock).
TEST_CASE("a posted function that fills the local queue before the global queue is polled") {
  mpg::runtime rt({.procs = 1, .local_queue_capacity = 4});
  rt.block_on([]() -> mpg::task<> { co_return; }());  // the P's tick is no longer a multiple of 61
  constexpr int kSpawns = 8;  // overflows the ring of 4 (+ runnext) once, then fills it again
  countdown ran(kSpawns);
  mpg_test::watchdog dog(std::chrono::seconds(30), "posted spawns: the scheduler deadlocked", &rt);
  mpg::runtime_handle h = rt.handle();
  REQUIRE(h.post([&] {
    for (int i = 0; i < kSpawns; ++i)
      (void)rt.spawn([](countdown* c) -> mpg::task<> {
        c->count_down();
        co_return;
      }(&ran));
  }));
  ran.wait();
}

TEST_CASE("schedule(): a plain coroutine on a P: channels, select, join, sleep(0)") {
  for (int kind : {8, 9, 10, 12, 13, 14}) {
    CAPTURE(kind);
    const auto [done, completed] = run_hop(kind);
    CHECK(done == 1);
    CHECK(completed == 10000);
  }
}

// docs/api.md: outside a task, an awaitable that completes at once
// completes. once::call on a fresh once runs f at once (nothing to wait for),
// yet parking_queue::park() throws before it asks may_park().
TEST_CASE("schedule(): a plain coroutine on a P: the first once::call completes") {
  CHECK(run_hop(11).first == 1);  // 2: runtime_misuse_error
}
