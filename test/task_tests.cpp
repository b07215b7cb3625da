// test/task_tests.cpp: task<T> on its own: values, void, move-only results,
// exceptions through co_await, the awaited-once rule, symmetric transfer on
// deep chains, and the frame allocator behind every task frame.
//
// Tasks run on a runtime (a task's final awaiter needs a G); assertions run
// on the main thread on values the tasks hand back.
#include <doctest/doctest.h>

#include <mpg/mpg.hpp>

#include <cstdint>
#include <cstring>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <string>
#include <vector>

namespace {

mpg::task<int> add(int a, int b) { co_return a + b; }
// add() behind a call that is not inlined: the frame escapes it, so its
// caller cannot elide the frame's allocation (clang put the frame of a
// task whose whole life it saw on the stack).
[[gnu::noinline]] mpg::task<int> escaped_add(int a, int b) { return add(a, b); }

mpg::task<int> add_nested(int a, int b, int c) {
  int ab = co_await add(a, b);
  int abc = co_await add(ab, c);
  co_return abc;
}

mpg::task<std::string> greet(std::string who) { co_return "hello " + who; }

mpg::task<void> set_to(int* out, int v) {
  *out = v;
  co_return;
}

mpg::task<int> void_then_value() {
  int x = 0;
  co_await set_to(&x, 41);
  co_return x + 1;
}

mpg::task<std::unique_ptr<int>> make_box(int v) { co_return std::make_unique<int>(v); }

mpg::task<int> unbox() {
  std::unique_ptr<int> p = co_await make_box(7);
  mpg::task<std::unique_ptr<int>> t = make_box(8);
  std::unique_ptr<int> q = co_await std::move(t);
  co_return *p * 10 + *q;
}

mpg::task<int> thrower(int depth) {
  if (depth == 0) throw std::runtime_error("deep failure");
  co_return co_await thrower(depth - 1);
}

mpg::task<std::string> catch_through_chain() {
  try {
    (void)co_await thrower(5);
  } catch (const std::runtime_error& e) {
    co_return std::string("caught: ") + e.what();
  }
  co_return "not caught";
}

mpg::task<void> void_thrower() {
  throw std::invalid_argument("void failure");
  co_return;
}

// Awaits `t` twice (as an lvalue, then as an rvalue); returns what happened.
mpg::task<std::string> await_twice() {
  mpg::task<int> t = add(1, 2);
  int first = co_await t;
  std::string second = "no throw";
  try {
    (void)co_await std::move(t);
  } catch (const std::logic_error&) {
    second = "logic_error";
  }
  co_return std::to_string(first) + " " + second;
}

mpg::task<std::string> await_empty() {
  mpg::task<int> t;  // default-constructed: no frame
  try {
    (void)co_await t;
  } catch (const std::logic_error&) {
    co_return "logic_error";
  }
  co_return "no throw";
}

// A chain of `n` inline awaits, each frame awaiting the next.
mpg::task<std::int64_t> depth(std::int64_t n) {
  if (n == 0) co_return 0;
  std::int64_t below = co_await depth(n - 1);
  co_return below + 1;
}

// A million levels, in every build: where the compiler makes symmetric
// transfer a call (g++ without -O2, or with a sanitizer), the transfer
// guard unwinds the chain before it fills half of the M's stack
// (mpg/detail/sched/stack_guard.hpp).
constexpr std::int64_t kDeepChain = 1'000'000;

mpg::task<int> leaf() { co_return 1; }

// `n` inline awaits in a row from one frame: each returns to the loop.
mpg::task<std::int64_t> await_in_a_loop(std::int64_t n) {
  std::int64_t sum = 0;
  for (std::int64_t i = 0; i < n; ++i) sum += co_await leaf();
  co_return sum;
}

struct cache_delta {
  std::uint64_t misses = 0;
};

// Warms this thread's cache with leaf frames, then awaits n more of them
// without suspending the G (inline awaits stay on one thread).
mpg::task<cache_delta> cache_after_warmup(int n) {
  for (int i = 0; i < 16; ++i) (void)co_await leaf();
  const auto before = mpg::detail::thread_frame_cache_stats();
  int sum = 0;
  for (int i = 0; i < n; ++i) sum += co_await leaf();
  const auto after = mpg::detail::thread_frame_cache_stats();
  if (sum != n) co_return cache_delta{999999};
  co_return cache_delta{after.misses - before.misses};
}

}  // namespace

TEST_CASE("task returns values through nested co_await") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(add(2, 3)) == 5);
  CHECK(rt.block_on(add_nested(1, 2, 3)) == 6);
  CHECK(rt.block_on(greet("mpg")) == "hello mpg");
}

TEST_CASE("task<void> runs its body and co_await of it completes") {
  mpg::runtime rt({.procs = 1});
  int x = 0;
  rt.block_on(set_to(&x, 9));
  CHECK(x == 9);
  CHECK(rt.block_on(void_then_value()) == 42);
}

TEST_CASE("task carries move-only results") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(unbox()) == 78);
  std::unique_ptr<int> p = rt.block_on(make_box(5));
  REQUIRE(p != nullptr);
  CHECK(*p == 5);
}

TEST_CASE("an exception propagates through a chain of co_awaits") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(catch_through_chain()) == "caught: deep failure");
  CHECK_THROWS_AS(rt.block_on(thrower(3)), std::runtime_error);
  CHECK_THROWS_AS(rt.block_on(void_thrower()), std::invalid_argument);
}

TEST_CASE("awaiting a task twice or an empty task throws std::logic_error") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(await_twice()) == "3 logic_error");
  CHECK(rt.block_on(await_empty()) == "logic_error");
}

TEST_CASE("a never-awaited task destroys its frame without running the body") {
  int x = 0;
  {
    mpg::task<void> t = set_to(&x, 1);
    CHECK(t.valid());
  }
  CHECK(x == 0);
}

TEST_CASE("a deep chain of inline co_awaits completes without stack overflow") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(depth(kDeepChain)) == kDeepChain);
}

// Without the transfer guard, g++'s unoptimised build overflowed the stack
// (SIGSEGV) after about 60,000 iterations: each await of leaf() and each
// return from it nested one more call.
TEST_CASE("a million inline co_awaits in a loop complete without stack overflow") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(await_in_a_loop(1'000'000)) == 1'000'000);
}

TEST_CASE("task frames start 16 bytes after their frame_header") {
  using mpg::detail::frame_header;
  using mpg::detail::header_of;
  SUBCASE("allocate_frame") {
    for (std::size_t size : {1u, 48u, 100u, 2000u, 5000u}) {
      void* f = mpg::detail::allocate_frame(size);
      frame_header* h = header_of(f);
      CHECK(reinterpret_cast<char*>(f) - reinterpret_cast<char*>(h) == 16);
      CHECK(reinterpret_cast<std::uintptr_t>(f) % 16 == 0);
      CHECK(h->size == size);
      CHECK(h->join.load() == mpg::detail::kJoinRunning);
      // Cached classes (up to 2 KiB with the header) are carved from slabs
      // when the cache is on; a bigger frame is an allocation of its own.
      if (size > 2000 || !mpg::detail::frame_cache_enabled()) CHECK(h->slab_offset == 0);
      else CHECK(h->slab_offset >= 16);
      mpg::detail::free_frame(f, size);
    }
  }
  SUBCASE("a coroutine handle's address is the pointer allocate_frame returned") {
    mpg::task<int> t = escaped_add(1, 2);
    auto h = t.release();
    void* frame = h.address();
    frame_header* hdr = header_of(frame);
    CHECK(hdr->join.load() == mpg::detail::kJoinRunning);
    // The promise lives in the frame, past its start.
    auto* promise = reinterpret_cast<char*>(&h.promise());
    CHECK(promise >= static_cast<char*>(frame));
    CHECK(promise + sizeof(mpg::detail::promise<int>) <= static_cast<char*>(frame) + 4096);
    h.destroy();
    // The freed frame is at the head of this thread's free list for its
    // class: the next frame of the same coroutine gets the same memory.
    // (Not under ASan, where the cache is off so that ASan sees every free.)
    if (!mpg::detail::frame_cache_enabled()) return;
    mpg::task<int> again = escaped_add(3, 4);
    auto h2 = again.release();
    CHECK(h2.address() == frame);
    h2.destroy();
  }
  SUBCASE("a killed root's free keeps its memory for the handle, or frees it without one") {
    // The shutdown marks a killed task's root, then destroys it; the free
    // at the end settles the join word (frame.hpp): Running becomes Killed
    // and the memory stays until the handle releases it.
    constexpr std::size_t kSize = 200;
    const bool cached = mpg::detail::frame_cache_enabled();
    void* f = mpg::detail::allocate_frame(kSize);
    frame_header* h = header_of(f);
    mpg::detail::mark_killed_root(h);
    mpg::detail::free_frame(f, kSize);
    CHECK(h->join.load() == mpg::detail::kJoinKilled);  // kept: not listed
    CHECK(mpg::detail::take_killed_word() == mpg::detail::kJoinRunning);
    CHECK(mpg::detail::take_killed_word() == mpg::detail::kJoinRunning);  // reset by the take
    mpg::detail::release_frame_memory(h);
    if (cached) {
      // Recycled by its size, the mark aside: the next frame of the size
      // gets the memory back, unmarked.
      void* again = mpg::detail::allocate_frame(kSize);
      CHECK(again == f);
      CHECK(header_of(again)->size == kSize);
      mpg::detail::free_frame(again, kSize);
    }
    // The handle was dropped during the destroy (Detached): the free frees.
    void* g = mpg::detail::allocate_frame(kSize);
    frame_header* gh = header_of(g);
    mpg::detail::mark_killed_root(gh);
    gh->join.store(mpg::detail::kJoinDetached);
    mpg::detail::free_frame(g, kSize);
    CHECK(mpg::detail::take_killed_word() == mpg::detail::kJoinDetached);
    if (cached) {
      void* again = mpg::detail::allocate_frame(kSize);
      CHECK(again == g);
      mpg::detail::free_frame(again, kSize);
    }
  }
}

TEST_CASE("the frame cache serves every allocation after warm-up"
          * doctest::skip(!mpg::detail::frame_cache_enabled())) {
  SUBCASE("on a plain thread") {
    for (int i = 0; i < 4; ++i) mpg::detail::free_frame(mpg::detail::allocate_frame(200), 200);
    const auto before = mpg::detail::thread_frame_cache_stats();
    // Served from the list: each allocation gets the frame the last free
    // listed (malloc could hand the same block back too, but it would
    // count as a miss).
    void* first = mpg::detail::allocate_frame(200);
    mpg::detail::free_frame(first, 200);
    int same = 0;
    for (int i = 0; i < 1000; ++i) {
      void* f = mpg::detail::allocate_frame(200);
      same += f == first ? 1 : 0;
      mpg::detail::free_frame(f, 200);
    }
    const auto after = mpg::detail::thread_frame_cache_stats();
    CHECK(same == 1000);
    CHECK(after.misses == before.misses);
  }
  SUBCASE("inside a task") {
    mpg::runtime rt({.procs = 1});
    cache_delta d = rt.block_on(cache_after_warmup(1000));
    CHECK(d.misses == 0);
  }
}

namespace {
struct alignas(64) cache_line_value {
  int v = 0;
};
// The value is made in the co_return, not kept in a local: a local of the
// frame is aligned to at most 16 bytes (README, "Over-aligned locals").
mpg::task<cache_line_value> make_aligned(int v) { co_return cache_line_value{v}; }
mpg::task<int> parked_with_aligned_result(mpg::chan<int> c) {
  auto v = co_await c.recv();
  co_return v.value_or(-1);
}
mpg::task<cache_line_value> aligned_after_wait(mpg::chan<int> c) {
  const int v = co_await parked_with_aligned_result(c);
  co_return cache_line_value{v};
}
}  // namespace

// Slabs (lib/sched/frame_allocator.cpp): on a thread of its own, with the
// cache on (also under ASan, where it is off by default, so that ASan and
// LSan check the slabs' memory: a slab freed early is a use after free, one
// never freed a leak), a burst of live frames costs one allocation per slab,
// not one per frame; then half are freed on another thread, and both
// threads' exits release every listed frame, which frees every slab.
TEST_CASE("a burst of frames is carved from slabs, and every slab is freed at the end") {
  const bool was_enabled = mpg::detail::frame_cache_enabled();
  mpg::detail::set_frame_cache_enabled(true);
  constexpr int kFrames = 320;
  constexpr std::size_t kSize = 200;  // a 224-byte class: 32 frames a slab
  std::vector<void*> frames(kFrames);
  std::uint64_t misses = 0;
  std::thread([&] {
    const auto before = mpg::detail::thread_frame_cache_stats();
    for (void*& f : frames) {
      f = mpg::detail::allocate_frame(kSize);
      std::memset(f, 0xab, kSize);
    }
    misses = mpg::detail::thread_frame_cache_stats().misses - before.misses;
    for (int i = 0; i < kFrames; i += 2) mpg::detail::free_frame(frames[i], kSize);
  }).join();
  std::thread([&] {
    for (int i = 1; i < kFrames; i += 2) mpg::detail::free_frame(frames[i], kSize);
  }).join();
  mpg::detail::set_frame_cache_enabled(was_enabled);
  CHECK(misses == kFrames / 32);
}

// The depot (lib/sched/frame_allocator.cpp): frames freed on a thread
// beyond its list's bound go to the depot in batches, and a thread whose
// list is empty takes them from there before it carves new slabs. A
// producer thread makes more frames than one list keeps (4,096 of this
// class), a second thread frees them all, and a third, allocating as many,
// needs fewer new slabs than the first did.
TEST_CASE("frames freed beyond a thread's bound reach another thread through the depot") {
  const bool was_enabled = mpg::detail::frame_cache_enabled();
  mpg::detail::set_frame_cache_enabled(true);
  constexpr int kFrames = 6000;
  constexpr std::size_t kSize = 200;  // the 224-byte class
  std::vector<void*> frames(kFrames);
  auto allocate_all = [&] {
    const auto before = mpg::detail::thread_frame_cache_stats();
    for (void*& f : frames) f = mpg::detail::allocate_frame(kSize);
    return mpg::detail::thread_frame_cache_stats().misses - before.misses;
  };
  auto free_all = [&] {
    for (void* f : frames) mpg::detail::free_frame(f, kSize);
  };
  std::uint64_t first_misses = 0, third_misses = 0;
  std::thread([&] { first_misses = allocate_all(); }).join();
  std::thread(free_all).join();
  std::thread([&] {
    third_misses = allocate_all();
    free_all();
  }).join();
  mpg::detail::set_frame_cache_enabled(was_enabled);
  CHECK(first_misses >= kFrames / 32);
  // All but the bound (and the part of a batch) came back through the
  // depot: each 32 of them is a slab the third thread did not carve.
  constexpr std::uint64_t kBound = 4096, kBatch = 64;
  CHECK(third_misses + (kFrames - kBound - kBatch) / 32 <= first_misses);
}

TEST_CASE("a task may return an over-aligned type, and the dump reads its chain") {
  mpg::runtime rt({.procs = 1});
  cache_line_value r = rt.block_on(make_aligned(7));
  CHECK(r.v == 7);
  CHECK(reinterpret_cast<std::uintptr_t>(&r) % 64 == 0);
  mpg::chan<int> c;
  auto h = rt.spawn(aligned_after_wait(c), "aligned");
  // The task parks in recv, two frames deep under a promise of an
  // over-aligned result: the dump must walk that chain.
  std::string dump;
  for (int i = 0; i < 2000 && dump.find("parked_with_aligned_result") == std::string::npos; ++i) {
    std::ostringstream os;
    rt.dump(os);
    dump = os.str();
    if (dump.find("parked_with_aligned_result") == std::string::npos) std::this_thread::yield();
  }
  CHECK(dump.find("aligned_after_wait") != std::string::npos);
  CHECK(c.try_send(5));
  CHECK(rt.block_on(std::move(h)).v == 5);
}
