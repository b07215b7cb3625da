// lib/sched/frame_allocator.cpp: the per-thread recycling allocator for coroutine
// frames (see mpg/detail/sched/frame.hpp for the header and join-state layout).
//
// Size classes of 16 bytes up to 2 KiB. Each thread keeps a free list per
// class, bounded (kMaxCached frames or kMaxCachedBytes per class, whichever
// is smaller). Frames freed on another thread join that thread's lists, so
// with a producer on one P and consumers on others the lists drift apart:
// a thread whose list is over its bound hands a batch of kBatch frames to a
// central depot (one lock per batch), and a thread whose list is empty takes
// a batch from it before it makes new frames (tcmalloc's central free
// lists, in small). spawn_join measured 31% of its time in malloc/free
// without the depot. Rejected: a global lock-free stack (ABA, and a
// contended CAS on every spawn), and per-P caches (a frame can be freed on a
// thread with no P: block_on, shutdown).
//
// Slabs. New frames of a cached class come a slab at a time: one malloc
// of up to kSlabFrames frames (at most kSlabBytes), the first handed out,
// the rest put on the thread's list, so a burst of spawns (every frame live
// at once, nothing to recycle) pays one malloc per slab rather than one per
// frame (spawn_join: about 300 instructions per task less, on 1 P under
// callgrind). A frame's header keeps its offset in its slab (frame.hpp),
// through the free lists too, and a slab
// counts its frames not yet released for good: a frame the caches cannot
// keep (over the bound, the depot full, the thread exiting) is released,
// and the release of the slab's last frame frees the slab. Memory order:
// the count is decremented acq_rel, so every use of the slab's frames
// happens before the free by the last release. The bound of kSlabFrames
// keeps what one long-lived frame can pin small.
//
// Thread lists are plain thread-local data; the depot is under a mutex,
// with a per-class count beside it that lets an empty class be seen without
// the lock. The fast paths (a list pop, a list push under the class's
// bound) touch only the thread's lists, in allocate_frame() and
// free_frame(), which stay in this file, one with no coroutines (frame.hpp
// says why); set-up, the depot, slabs and malloc are further out of line.
//
// Fork. The depot's mutex is a leaf lock (sched/leaf_locks.hpp): the
// handlers of leaf_locks.cpp hold it across fork(), so that a child never
// starts with it held, and the child keeps the depot's chains: free frames in
// memory that the child owns.
#include <algorithm>
#include <atomic>
#include <cassert>
#include <cstdlib>
#include <new>
#include <utility>
#include <vector>

#include "absl/base/config.h"
#include "mpg/detail/sched/frame.hpp"
#include "sched/leaf_locks.hpp"
#include "sched/thread_mutex.hpp"

namespace mpg::detail {
namespace {

// 16-byte classes: an idle task's frame (g++ makes a minimal one waiting on
// a channel 136 bytes) then costs 160 bytes with its header, not 192.
constexpr std::size_t kGranule = 16;
constexpr std::size_t kClasses = 128;  // up to 128 * 16 = 2048 bytes with header
constexpr std::size_t kMaxCachedBytes = 1u << 20;
constexpr std::size_t kMaxCached = 4096;
constexpr std::uint32_t kBatch = 64;
constexpr std::size_t kMaxDepotBatches = 1024;  // per class; beyond it, free()
constexpr std::size_t kSlabBytes = 8192;
constexpr std::size_t kSlabFrames = 32;

// A listed frame is its header, which stays alive (slab_offset kept) with
// the link to the next one in its join word. Relaxed: a list
// belongs to one thread, and a depot batch moves under the depot's mutex.
frame_header* next_of(const frame_header* h) noexcept {
  return reinterpret_cast<frame_header*>(h->join.load(std::memory_order_relaxed));
}
void set_next(frame_header* h, frame_header* next) noexcept {
  h->join.store(reinterpret_cast<std::uintptr_t>(next), std::memory_order_relaxed);
}

// The start of a slab (kGranule bytes, so that its frames stay 16-aligned).
struct alignas(16) slab {
  // Frames of the slab not yet released for good.
  std::atomic<std::uint32_t> live;
};
static_assert(sizeof(slab) == kGranule);

// release(): gives a frame's memory up for good (the slab's, once its last
// frame goes).
void release(frame_header* h) noexcept {
  const std::uint32_t slab_offset = h->slab_offset;
  h->~frame_header();
  if (slab_offset == 0) {
    std::free(h);
    return;
  }
  auto* s = reinterpret_cast<slab*>(reinterpret_cast<char*>(h) - slab_offset);
  // acq_rel: see "Slabs" at the top of the file.
  if (s->live.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    s->~slab();
    std::free(s);
  }
}
void release_chain(frame_header* chain) noexcept {
  while (chain != nullptr) {
    frame_header* next = next_of(chain);
    release(chain);
    chain = next;
  }
}

// The central depot: chains of kBatch frames per class.
struct depot {
  thread_mutex mu;
  std::vector<frame_header*> batches[kClasses] ABSL_GUARDED_BY(mu);
  // batches[cls].size(), written under mu. Relaxed: a hint that lets take()
  // skip the lock for an empty class; a stale zero costs a new slab, a
  // stale non-zero a look under the lock.
  std::atomic<std::uint32_t> sizes[kClasses] = {};

  // put(): false when the depot is full (the caller releases the chain).
  bool put(std::size_t cls, frame_header* chain) {
    thread_mutex_lock l(mu);
    if (batches[cls].size() >= kMaxDepotBatches) return false;
    batches[cls].push_back(chain);
    sizes[cls].store(static_cast<std::uint32_t>(batches[cls].size()), std::memory_order_relaxed);
    return true;
  }
  frame_header* take(std::size_t cls) {
    if (sizes[cls].load(std::memory_order_relaxed) == 0) return nullptr;
    thread_mutex_lock l(mu);
    if (batches[cls].empty()) return nullptr;
    frame_header* chain = batches[cls].back();
    batches[cls].pop_back();
    sizes[cls].store(static_cast<std::uint32_t>(batches[cls].size()), std::memory_order_relaxed);
    return chain;
  }
};

// Never destroyed: threads may free frames at exit. Its fork handlers are
// registered before anyone can lock it (leaf_locks.cpp).
depot& the_depot() {
  static depot* const d = [] {
    register_leaf_fork_handlers();
    return new depot;
  }();
  return *d;
}

// A thread's lists. Trivially destructible, so that its accesses need no
// TLS initialisation guard: the fast paths are a few instructions. room and
// limits start at 0, which sends a thread's first free of each class to
// the slow path; there the thread is set up (limits from cap_for() when the
// cache is on, and the releaser registered that empties the lists at
// thread exit).
struct thread_cache {
  frame_header* heads[kClasses];
  // How many more frames each list may take: its bound less its length
  // (one counter, so that a free tests one word).
  std::uint32_t room[kClasses];
  std::uint32_t limits[kClasses];  // the bounds; 0 with the cache off
  // frame_cache_stats without its member initialisers, which would make
  // this a dynamically initialised thread_local behind a guard.
  std::uint64_t misses;
  bool set_up;
};

// initial-exec: libmpg is loaded with the program, and the default model
// for a shared library costs a __tls_get_addr call on every access.
// constinit: this file has a thread_local with a destructor (tls_releaser,
// below), and clang 16 guards every access to a thread_local of such a
// file that is not declared constant-initialised with a call (inlined: a
// test of the file's TLS guard and a branch) to the code that registers
// that destructor, on every allocation and free.
constinit __attribute__((tls_model("initial-exec"))) thread_local thread_cache tls_cache{};
// Process-wide switch for perf comparisons; relaxed: it is set once before
// any task runs and only selects a policy. Off under AddressSanitizer, which
// must see every frame freed to catch a use after free.
#ifdef ABSL_HAVE_ADDRESS_SANITIZER
std::atomic<bool> g_cache_enabled{false};
#else
std::atomic<bool> g_cache_enabled{true};
#endif

constexpr std::size_t class_of(std::size_t total) noexcept { return (total - 1) / kGranule; }

constexpr std::uint32_t cap_for(std::size_t cls) noexcept {
  const std::size_t by_bytes = kMaxCachedBytes / ((cls + 1) * kGranule);
  return static_cast<std::uint32_t>(by_bytes < kMaxCached ? by_bytes : kMaxCached);
}

// empty_lists(): releases every listed frame and bounds every list at 0, so
// that the thread's frees go to free() until it is set up again.
void empty_lists(thread_cache& tc) noexcept {
  for (std::size_t c = 0; c < kClasses; ++c) {
    tc.limits[c] = 0;
    tc.room[c] = 0;
    release_chain(tc.heads[c]);
    tc.heads[c] = nullptr;
  }
}

// Empties the thread's lists at its exit.
struct cache_releaser {
  ~cache_releaser() { empty_lists(tls_cache); }
};
thread_local cache_releaser tls_releaser;

// The lists are empty when a thread is set up: at its first visit to a
// slow path, or after set_frame_cache_enabled() emptied them.
void set_up_thread(thread_cache& tc) noexcept {
  tc.set_up = true;
  if (!g_cache_enabled.load(std::memory_order_relaxed)) return;
  (void)&tls_releaser;  // odr-use: constructs it, registering its destructor
  for (std::size_t c = 0; c < kClasses; ++c) tc.limits[c] = tc.room[c] = cap_for(c);
}

// new_header(): the header of memory that was not a frame before.
// slab_offset is below kSlabBytes, which fits the header's 16 bits.
static_assert(kSlabBytes <= 0xffff);
frame_header* new_header(void* mem, std::uint32_t slab_offset) noexcept {
  auto* h = new (mem) frame_header;
  h->slab_offset = static_cast<std::uint16_t>(slab_offset);
  return h;
}

// init_frame(): a header, new or listed, made a frame of `size` (below
// 2 GiB: allocate_slow; so the kill mark is clear).
void* init_frame(frame_header* h, std::size_t size) noexcept {
  h->join.store(kJoinRunning, std::memory_order_relaxed);  // not shared yet
  h->size = static_cast<std::uint32_t>(size);
  return reinterpret_cast<char*>(h) + sizeof(frame_header);
}

// new_slab(): the thread's list of class cls is empty: carve a slab, hand
// out its first frame and list the rest.
void* new_slab(thread_cache& tc, std::size_t size, std::size_t cls) {
  const std::size_t bytes = (cls + 1) * kGranule;
  const std::size_t n = std::min<std::size_t>(
      {kSlabFrames, (kSlabBytes - sizeof(slab)) / bytes, std::size_t{tc.room[cls]} + 1});
  void* mem = std::malloc(sizeof(slab) + n * bytes);
  if (mem == nullptr) throw std::bad_alloc();
  new (mem) slab{static_cast<std::uint32_t>(n)};
  char* first = static_cast<char*>(mem) + sizeof(slab);
  // Listed from the last, so that the next allocations go up the slab.
  for (std::size_t i = n - 1; i >= 1; --i) {
    frame_header* h =
        new_header(first + i * bytes, static_cast<std::uint32_t>(sizeof(slab) + i * bytes));
    set_next(h, tc.heads[cls]);
    tc.heads[cls] = h;
  }
  tc.room[cls] -= static_cast<std::uint32_t>(n - 1);
  return init_frame(new_header(first, sizeof(slab)), size);
}

// The class's list is empty, so its room is its bound. A frame of a cached
// class takes its class's full size, cache on or off, so that any thread's
// lists may take it.
[[gnu::noinline]] void* allocate_slow(std::size_t size, std::size_t cls) {
  void* mem = nullptr;
  if (cls < kClasses) {
    thread_cache& tc = tls_cache;
    if (!tc.set_up) set_up_thread(tc);
    if (tc.limits[cls] != 0) {
      if (frame_header* chain = the_depot().take(cls)) {
        tc.heads[cls] = next_of(chain);
        tc.room[cls] = tc.limits[cls] - (kBatch - 1);
        return init_frame(chain, size);
      }
      ++tc.misses;
      return new_slab(tc, size, cls);
    }
    ++tc.misses;
    mem = std::malloc((cls + 1) * kGranule);
  } else {
    // The header keeps the size in 31 bits (frame_header::kKillMark).
    if (size >= frame_header::kKillMark) throw std::bad_alloc();
    mem = std::malloc(size + sizeof(frame_header));
  }
  if (mem == nullptr) throw std::bad_alloc();
  return init_frame(new_header(mem, 0), size);
}

// try_push(): list a freed frame under its class's bound.
inline bool try_push(thread_cache& tc, std::size_t cls, frame_header* h) noexcept {
  if (tc.room[cls] == 0) return false;
  set_next(h, tc.heads[cls]);
  tc.heads[cls] = h;
  --tc.room[cls];
  return true;
}

[[gnu::noinline]] void recycle_slow(frame_header* h, std::size_t cls) noexcept {
  if (cls < kClasses) {
    thread_cache& tc = tls_cache;
    if (!tc.set_up) set_up_thread(tc);
    if (try_push(tc, cls, h)) return;
    if (tc.limits[cls] != 0) {
      // Full: the new frame and the first kBatch - 1 listed ones go to the
      // depot as one batch.
      set_next(h, tc.heads[cls]);
      frame_header* last = h;
      for (std::uint32_t i = 1; i < kBatch; ++i) last = next_of(last);
      tc.heads[cls] = next_of(last);
      set_next(last, nullptr);
      tc.room[cls] += kBatch - 1;
      if (!the_depot().put(cls, h)) release_chain(h);
      return;
    }
  }
  release(h);
}

inline void recycle(frame_header* h, std::size_t size) noexcept {
  const std::size_t cls = class_of(size + sizeof(frame_header));
  if (cls < kClasses) [[likely]] {
    thread_cache& tc = tls_cache;
    if (try_push(tc, cls, h)) [[likely]] return;
  }
  recycle_slow(h, cls);
}

// What the last killed root's free on this thread found in the join word
// (take_killed_word()).
constinit thread_local std::uintptr_t tls_killed_word = kJoinRunning;

// settle_killed_frame(): the free of a killed task's root frame, at the end
// of its destroy (frame.hpp, the shutdown's transition). The handle, held
// anywhere, may be dropped, joined or selected on meanwhile: the word is
// Running, a parked joiner (of another runtime, or an older one of this
// runtime, killed in its turn), a select's waiter, or Detached. Detached:
// the handle is gone, and the memory with it. Else the word becomes Killed
// and the memory stays until the handle drops it; the old word goes to the
// shutdown (take_killed_word()), which wakes a joiner of another runtime or
// claims its select (wake_killed_joiner). The CAS is acq_rel: its release
// publishes the destroy (and the size word) to the handle's exchange, which
// frees the memory after seeing Killed; its acquire, and the load's, take a
// select waiter's publication (spawn.hpp, J2) before the shutdown's claim
// reads it, and a dropper's last use of the handle before the free.
[[gnu::noinline]] void settle_killed_frame(frame_header* h, std::size_t size) noexcept {
  std::uintptr_t old = h->join.load(std::memory_order_acquire);
  for (;;) {
    // An unfinished task's word: never Done, Killed or Inline (a task run
    // inline is no live G, and only this settles a kill).
    assert(old == kJoinRunning || old == kJoinDetached || old > kJoinInline);
    if (old == kJoinDetached) {
      tls_killed_word = kJoinDetached;
      recycle(h, size);
      return;
    }
    if (h->join.compare_exchange_weak(old, kJoinKilled, std::memory_order_acq_rel,
                                      std::memory_order_acquire))
      break;
  }
  tls_killed_word = old;
}

}  // namespace

// Always inline: every spawn and every awaited task allocates here, from
// the ramp of a coroutine in another file, where only link-time
// optimisation can inline it (into code that is no coroutine body any
// more: frame.hpp). g++ 12's link-time inliner otherwise keeps or drops it
// with the size of unrelated code (fib: 542 or 554 instructions per task,
// callgrind). g++ warns that such a function "might not be inlinable",
// which is the point here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wattributes"
[[gnu::always_inline]] void* allocate_frame(std::size_t size) {
  const std::size_t cls = class_of(size + sizeof(frame_header));
  if (cls < kClasses) [[likely]] {
    thread_cache& tc = tls_cache;
    if (frame_header* h = tc.heads[cls]) [[likely]] {
      tc.heads[cls] = next_of(h);
      ++tc.room[cls];
      return init_frame(h, size);
    }
  }
  return allocate_slow(size, cls);
}

// Always inline too, for the same reason: g++ 12 kept it a call from every
// frame's destroy.
[[gnu::always_inline]] void free_frame(void* frame, std::size_t size) noexcept {
  frame_header* h = header_of(frame);
  // The kill mark is written by the shutdown that destroys this frame, on
  // this thread or before it started the thread that destroys it.
  if (h->size & frame_header::kKillMark) [[unlikely]]
    return settle_killed_frame(h, size);
  recycle(h, size);
}
#pragma GCC diagnostic pop

void release_frame_memory(frame_header* h) noexcept {
  recycle(h, h->size & ~frame_header::kKillMark);
}

std::uintptr_t take_killed_word() noexcept { return std::exchange(tls_killed_word, kJoinRunning); }

// The lock is held from frame_depot_lock() to frame_depot_unlock(), across
// fork() (leaf_locks.cpp) or a test's staging, which the lock analysis
// cannot follow.
void frame_depot_lock() noexcept ABSL_NO_THREAD_SAFETY_ANALYSIS { the_depot().mu.lock(); }
void frame_depot_unlock() noexcept ABSL_NO_THREAD_SAFETY_ANALYSIS { the_depot().mu.unlock(); }

frame_cache_stats thread_frame_cache_stats() noexcept {
  frame_cache_stats st;
  st.misses = tls_cache.misses;
  return st;
}

bool frame_cache_enabled() noexcept { return g_cache_enabled.load(std::memory_order_relaxed); }

void set_frame_cache_enabled(bool enabled) noexcept {
  g_cache_enabled.store(enabled, std::memory_order_relaxed);
  // The calling thread's lists are emptied and it is set up again at its
  // next slow path; other threads set themselves up when they first
  // allocate or free (hence: set before any task runs).
  thread_cache& tc = tls_cache;
  if (tc.set_up) {
    tc.set_up = false;
    empty_lists(tc);
  }
}

}  // namespace mpg::detail
