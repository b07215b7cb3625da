// The node caches of posted functions (lib/sched/post_pool.cpp): every size
// class and the operator-new path, functions whose poster thread exits while
// they are still queued, poster threads coming and going while Ms give
// nodes back, and a function whose copy throws.
#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <latch>
#include <stdexcept>
#include <thread>
#include <vector>

#include "mpg/mpg.hpp"
#include "test_support.hpp"
#include "watchdog.hpp"

namespace {

std::atomic<long> g_live{0};

// sized<N>: a function of about N bytes that counts its live copies and its
// runs.
template <std::size_t N, std::size_t Align = alignof(std::max_align_t)>
struct alignas(Align) sized {
  std::atomic<long>* runs;
  std::array<unsigned char, N> pad{};
  explicit sized(std::atomic<long>* r) : runs(r) { g_live.fetch_add(1, std::memory_order_relaxed); }
  sized(const sized& o) : runs(o.runs), pad(o.pad) {
    g_live.fetch_add(1, std::memory_order_relaxed);
  }
  ~sized() { g_live.fetch_sub(1, std::memory_order_relaxed); }
  void operator()() const {
    // A byte pattern that a reused-too-early block would have overwritten.
    for (unsigned char b : pad) REQUIRE(b == 0x5a);
    runs->fetch_add(1, std::memory_order_relaxed);
  }
  static sized make(std::atomic<long>* r) {
    sized s(r);
    s.pad.fill(0x5a);
    return s;
  }
};

template <class F>
void post_many(mpg::runtime_handle h, std::atomic<long>* runs, int n) {
  F f = F::make(runs);
  for (int i = 0; i < n; ++i) REQUIRE(h.post(f));
}

// Waits (bounded by the watchdog) until `runs` reaches n.
void wait_runs(const std::atomic<long>& runs, long n) {
  mpg_test::watchdog dog(std::chrono::seconds(60), "post_pool: functions did not all run");
  while (runs.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

struct throws_on_copy {
  bool armed = false;
  throws_on_copy() = default;
  throws_on_copy(const throws_on_copy& o) : armed(o.armed) {
    if (armed) throw std::runtime_error("copy");
  }
  void operator()() const {}
};

}  // namespace

TEST_CASE(
    "functions of every size class, larger and over-aligned ones: each runs once and is destroyed "
    "once") {
  std::atomic<long> runs{0};
  {
    mpg::runtime rt;
    mpg::runtime_handle h = rt.handle();
    constexpr int kEach = 2000;
    std::thread t([&] {
      post_many<sized<8>>(h, &runs, kEach);     // 64-byte class
      post_many<sized<56>>(h, &runs, kEach);    // 96-byte class
      post_many<sized<96>>(h, &runs, kEach);    // 128-byte class
      post_many<sized<400>>(h, &runs, kEach);   // operator new
      post_many<sized<8, 64>>(h, &runs, kEach);  // over-aligned: operator new
    });
    t.join();
    wait_runs(runs, 5L * kEach);
  }
  CHECK(runs.load() == 5L * 2000);
  CHECK(g_live.load() == 0);
}

TEST_CASE(
    "a poster thread that exits while its functions are queued: they run, and its cache serves the "
    "next thread") {
  std::atomic<long> runs{0};
  {
    mpg::runtime rt({.procs = 1});
    mpg::runtime_handle h = rt.handle();
    // Hold the only P in a task until the poster thread has exited, so that
    // its functions are freed after it is gone.
    std::atomic<bool> poster_gone{false};
    std::latch holding(1);
    auto holder = rt.spawn([](std::atomic<bool>* gone, std::latch* holding) -> mpg::task<> {
      holding->count_down();
      while (!gone->load(std::memory_order_acquire)) std::this_thread::yield();
      co_return;
    }(&poster_gone, &holding));
    holding.wait();
    std::thread poster([&] { post_many<sized<8>>(h, &runs, 3000); });
    poster.join();
    CHECK(runs.load() == 0);
    poster_gone.store(true, std::memory_order_release);
    wait_runs(runs, 3000);
    // A new thread adopts the orphaned cache, with the blocks given back to it.
    std::thread next([&] { post_many<sized<8>>(h, &runs, 3000); });
    next.join();
    wait_runs(runs, 6000);
  }
  CHECK(runs.load() == 6000);
  CHECK(g_live.load() == 0);
}

TEST_CASE("posters coming and going while Ms give nodes back (TSan)") {
  std::atomic<long> runs{0};
  constexpr int kRounds = 20, kThreads = 4, kPosts = 500;
  {
    mpg::runtime rt({.procs = 2});
    mpg::runtime_handle h = rt.handle();
    for (int r = 0; r < kRounds; ++r) {
      std::vector<std::thread> ts;
      for (int t = 0; t < kThreads; ++t)
        ts.emplace_back([&, t] {
          if (t % 2 == 0)
            post_many<sized<8>>(h, &runs, kPosts);
          else
            post_many<sized<56>>(h, &runs, kPosts);
        });
      for (auto& t : ts) t.join();
    }
    wait_runs(runs, long{kRounds} * kThreads * kPosts);
  }
  CHECK(runs.load() == long{kRounds} * kThreads * kPosts);
  CHECK(g_live.load() == 0);
}

TEST_CASE("a function whose copy throws: post throws and nothing is queued or leaked") {
  mpg::runtime rt;
  mpg::runtime_handle h = rt.handle();
  throws_on_copy f;
  f.armed = true;
  CHECK_THROWS_AS(h.post(f), std::runtime_error);
  // The block went back to the cache: the next post of that class reuses it.
  std::atomic<long> runs{0};
  CHECK(h.post([&runs] { runs.fetch_add(1); }));
  wait_runs(runs, 1);
}

// A thread_local made before the thread's first post, whose destructor
// posts: thread-exit destructors run in reverse order of construction, so
// the cache holder has given the thread's cache up by then. The post must
// not adopt a cache into the holder already destroyed, which would never
// give it back (LeakSanitizer reports such a cache at the test's exit).
namespace {
struct posts_at_exit {
  mpg::runtime_handle h;
  std::atomic<int>* ran = nullptr;
  ~posts_at_exit() {
    if (ran != nullptr) (void)h.post([r = ran] { r->fetch_add(1); });
  }
};
thread_local posts_at_exit tls_posts_at_exit;
}  // namespace

TEST_CASE("a thread whose thread_local destructor posts gives its cache back") {
  mpg::runtime rt({.procs = 1});
  std::atomic<int> ran{0};
  constexpr int kThreads = 8;
  for (int i = 0; i < kThreads; ++i) {
    std::thread t([&] {
      tls_posts_at_exit.h = rt.handle();  // constructed before the first post
      tls_posts_at_exit.ran = &ran;
      (void)rt.handle().post([] {});       // the thread's first post: its cache
    });
    t.join();
  }
  CHECK(mpg_test::wait_until([&] { return ran.load() == kThreads; }));
}
