// lib/sched/frame_allocator.cpp: the per-thread recycling allocator for coroutine
// frames (see mpg/detail/sched/frame.hpp for the header and join-state layout).
//
// Size classes of 16 bytes up to 2 KiB. Each thread keeps a free list per
// class, bounded (kMaxCached frames or kMaxCachedBytes per class, whichever
// is smaller). Frames freed on another thread join that thread's lists, so
// with a producer on one P and consumers on others the lists drift apart:
// a thread whose list is over its bound hands a batch of kBatch frames to a
// central depot (one lock per batch), and a thread whose list is empty takes
// a batch from it before falling back to malloc (tcmalloc's central free
// lists, in small). spawn_join measured 31% of its time in malloc/free
// without the depot. Rejected: a global lock-free stack (ABA, and a
// contended CAS on every spawn), and per-P caches (a frame can be freed on a
// thread with no P: block_on, shutdown).
//
// Thread lists are plain thread-local data; the depot is under a mutex. The
// fast paths (a list pop, a list push under the class's bound) are inline
// and touch only the thread's lists; set-up, the depot and malloc are out
// of line.
#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "mpg/detail/sched/frame.hpp"
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

struct free_node {
  free_node* next;
};

// The central depot: chains of kBatch frames per class.
struct depot {
  thread_mutex mu;
  std::vector<free_node*> batches[kClasses] ABSL_GUARDED_BY(mu);

  // put(): false when the depot is full (the caller frees the chain).
  bool put(std::size_t cls, free_node* chain) {
    thread_mutex_lock l(mu);
    if (batches[cls].size() >= kMaxDepotBatches) return false;
    batches[cls].push_back(chain);
    return true;
  }
  free_node* take(std::size_t cls) {
    thread_mutex_lock l(mu);
    if (batches[cls].empty()) return nullptr;
    free_node* chain = batches[cls].back();
    batches[cls].pop_back();
    return chain;
  }
};

depot& the_depot() {
  static depot* d = new depot;  // never destroyed: threads may free frames at exit
  return *d;
}

// A thread's lists. Trivially destructible, so that its accesses need no
// TLS initialisation guard: the fast paths are a few instructions. limits
// start at 0, which sends a thread's first free of each class to the slow
// path; there the thread is set up (limits from kCap when the cache is on,
// and the releaser registered that empties the lists at thread exit).
struct thread_cache {
  free_node* heads[kClasses];
  std::uint32_t counts[kClasses];
  std::uint32_t limits[kClasses];
  // frame_cache_stats without its member initialisers, which would make
  // this a dynamically initialised thread_local behind a guard.
  std::uint64_t hits;
  std::uint64_t misses;
  bool set_up;
};

// initial-exec: libmpg is loaded with the program, and the default model
// for a shared library costs a __tls_get_addr call on every access.
__attribute__((tls_model("initial-exec"))) thread_local thread_cache tls_cache;
// Process-wide switch for perf comparisons; relaxed: it is set once before
// any task runs and only selects a policy. Off under AddressSanitizer, which
// must see every frame freed to catch a use after free.
#ifndef __has_feature
#define __has_feature(x) 0
#endif
#if defined(__SANITIZE_ADDRESS__) || __has_feature(address_sanitizer)
std::atomic<bool> g_cache_enabled{false};
#else
std::atomic<bool> g_cache_enabled{true};
#endif

constexpr std::size_t class_of(std::size_t total) noexcept { return (total - 1) / kGranule; }

constexpr std::uint32_t cap_for(std::size_t cls) noexcept {
  const std::size_t by_bytes = kMaxCachedBytes / ((cls + 1) * kGranule);
  return static_cast<std::uint32_t>(by_bytes < kMaxCached ? by_bytes : kMaxCached);
}

// Empties the thread's lists at its exit; from then on the thread's frees go
// to free() (limits 0).
struct cache_releaser {
  ~cache_releaser() {
    thread_cache& tc = tls_cache;
    for (std::size_t c = 0; c < kClasses; ++c) {
      tc.limits[c] = 0;
      while (free_node* n = tc.heads[c]) {
        tc.heads[c] = n->next;
        std::free(n);
      }
      tc.counts[c] = 0;
    }
  }
};
thread_local cache_releaser tls_releaser;

void set_up_thread(thread_cache& tc) noexcept {
  tc.set_up = true;
  if (!g_cache_enabled.load(std::memory_order_relaxed)) return;
  (void)&tls_releaser;  // odr-use: constructs it, registering its destructor
  for (std::size_t c = 0; c < kClasses; ++c) tc.limits[c] = cap_for(c);
}

void* init_frame(void* mem, std::size_t size) noexcept {
  auto* h = new (mem) frame_header;
  h->size = static_cast<std::uint32_t>(size);
  return static_cast<char*>(mem) + sizeof(frame_header);
}

// Every frame of a cached class is malloc'd at its class's full size, cache
// on or off, so that any thread's lists may take it.
[[gnu::noinline]] void* allocate_slow(std::size_t size, std::size_t cls) {
  void* mem = nullptr;
  if (cls < kClasses) {
    thread_cache& tc = tls_cache;
    if (!tc.set_up) set_up_thread(tc);
    if (tc.limits[cls] != 0) {
      if (free_node* chain = the_depot().take(cls)) {
        tc.heads[cls] = chain->next;
        tc.counts[cls] = kBatch - 1;
        ++tc.hits;
        return init_frame(chain, size);
      }
    }
    ++tc.misses;
    mem = std::malloc((cls + 1) * kGranule);
  } else {
    mem = std::malloc(size + sizeof(frame_header));
  }
  if (mem == nullptr) throw std::bad_alloc();
  return init_frame(mem, size);
}

// try_push(): list a freed frame under its class's bound.
inline bool try_push(thread_cache& tc, std::size_t cls, void* mem) noexcept {
  if (tc.counts[cls] >= tc.limits[cls]) return false;
  auto* n = static_cast<free_node*>(mem);
  n->next = tc.heads[cls];
  tc.heads[cls] = n;
  ++tc.counts[cls];
  return true;
}

[[gnu::noinline]] void recycle_slow(frame_header* h, std::size_t cls) noexcept {
  void* mem = h;
  if (cls < kClasses) {
    thread_cache& tc = tls_cache;
    if (!tc.set_up) set_up_thread(tc);
    if (try_push(tc, cls, mem)) return;
    if (tc.limits[cls] != 0) {
      // Full: the new frame and the first kBatch - 1 listed ones go to the
      // depot as one batch.
      auto* chain = static_cast<free_node*>(mem);
      chain->next = tc.heads[cls];
      free_node* last = chain;
      for (std::uint32_t i = 1; i < kBatch; ++i) last = last->next;
      tc.heads[cls] = last->next;
      last->next = nullptr;
      tc.counts[cls] -= kBatch - 1;
      if (!the_depot().put(cls, chain)) {
        while (chain != nullptr) {
          free_node* next = chain->next;
          std::free(chain);
          chain = next;
        }
      }
      return;
    }
  }
  std::free(mem);
}

inline void recycle(frame_header* h, std::size_t size) noexcept {
  const std::size_t cls = class_of(size + sizeof(frame_header));
  h->~frame_header();
  if (cls < kClasses) [[likely]] {
    thread_cache& tc = tls_cache;
    if (try_push(tc, cls, h)) [[likely]] return;
  }
  recycle_slow(h, cls);
}

}  // namespace

void* allocate_frame(std::size_t size) {
  const std::size_t cls = class_of(size + sizeof(frame_header));
  if (cls < kClasses) [[likely]] {
    thread_cache& tc = tls_cache;
    if (free_node* n = tc.heads[cls]) [[likely]] {
      tc.heads[cls] = n->next;
      --tc.counts[cls];
      ++tc.hits;
      return init_frame(n, size);
    }
  }
  return allocate_slow(size, cls);
}

void free_frame(void* frame, std::size_t size) noexcept {
  frame_header* h = header_of(frame);
  // Relaxed: the only writer of kJoinKilled is the shutdown path, which
  // runs on this same thread right before destroying the frame.
  if (h->join.load(std::memory_order_relaxed) == kJoinKilled) [[unlikely]] return;
  recycle(h, size);
}

void release_frame_memory(frame_header* h) noexcept { recycle(h, h->size); }

frame_cache_stats thread_frame_cache_stats() noexcept {
  frame_cache_stats st;
  st.hits = tls_cache.hits;
  st.misses = tls_cache.misses;
  return st;
}

bool frame_cache_enabled() noexcept { return g_cache_enabled.load(std::memory_order_relaxed); }

void set_frame_cache_enabled(bool enabled) noexcept {
  g_cache_enabled.store(enabled, std::memory_order_relaxed);
  // The calling thread's limits follow at once; other threads set theirs
  // up when they first allocate or free (hence: set before any task runs).
  thread_cache& tc = tls_cache;
  if (tc.set_up) {
    tc.set_up = false;
    if (!enabled)
      for (std::size_t c = 0; c < kClasses; ++c) tc.limits[c] = 0;
  }
}

}  // namespace mpg::detail
