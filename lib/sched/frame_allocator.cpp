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
// Thread lists are plain thread-local data; the depot is under a mutex.
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

struct thread_cache {
  free_node* heads[kClasses] = {};
  std::uint32_t counts[kClasses] = {};
  frame_cache_stats stats;

  ~thread_cache() {
    for (std::size_t c = 0; c < kClasses; ++c) {
      while (free_node* n = heads[c]) {
        heads[c] = n->next;
        std::free(n);
      }
    }
  }
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

inline std::size_t class_of(std::size_t total) noexcept { return (total - 1) / kGranule; }

std::size_t cap_for(std::size_t cls) noexcept {
  std::size_t by_bytes = kMaxCachedBytes / ((cls + 1) * kGranule);
  return by_bytes < kMaxCached ? by_bytes : kMaxCached;
}

}  // namespace

void* allocate_frame(std::size_t size) {
  const std::size_t total = size + sizeof(frame_header);
  void* mem = nullptr;
  const std::size_t cls = class_of(total);
  if (cls < kClasses && g_cache_enabled.load(std::memory_order_relaxed)) {
    thread_cache& tc = tls_cache;
    if (tc.heads[cls] == nullptr) {
      if (free_node* chain = the_depot().take(cls)) {
        tc.heads[cls] = chain;
        tc.counts[cls] = kBatch;
      }
    }
    if (free_node* n = tc.heads[cls]) {
      tc.heads[cls] = n->next;
      --tc.counts[cls];
      ++tc.stats.hits;
      mem = n;
    } else {
      ++tc.stats.misses;
      mem = std::malloc((cls + 1) * kGranule);
    }
  } else {
    mem = std::malloc(total);
  }
  if (mem == nullptr) throw std::bad_alloc();
  auto* h = new (mem) frame_header;
  h->size = static_cast<std::uint32_t>(size);
  return static_cast<char*>(mem) + sizeof(frame_header);
}

namespace {
void recycle(frame_header* h, std::size_t size) noexcept {
  const std::size_t total = size + sizeof(frame_header);
  const std::size_t cls = class_of(total);
  h->~frame_header();
  void* mem = h;
  if (cls < kClasses && g_cache_enabled.load(std::memory_order_relaxed)) {
    thread_cache& tc = tls_cache;
    auto* n = static_cast<free_node*>(mem);
    n->next = tc.heads[cls];
    tc.heads[cls] = n;
    ++tc.counts[cls];
    if (tc.counts[cls] > cap_for(cls)) {
      // Over the bound: hand the first kBatch frames to the depot.
      free_node* chain = tc.heads[cls];
      free_node* last = chain;
      for (std::uint32_t i = 1; i < kBatch; ++i) last = last->next;
      tc.heads[cls] = last->next;
      last->next = nullptr;
      tc.counts[cls] -= kBatch;
      if (!the_depot().put(cls, chain)) {
        while (chain != nullptr) {
          free_node* next = chain->next;
          std::free(chain);
          chain = next;
        }
      }
    }
    return;
  }
  std::free(mem);
}
}  // namespace

void free_frame(void* frame, std::size_t size) noexcept {
  frame_header* h = header_of(frame);
  // Relaxed: the only writer of kJoinKilled is the shutdown path, which
  // runs on this same thread right before destroying the frame.
  if (h->join.load(std::memory_order_relaxed) == kJoinKilled) return;
  recycle(h, size);
}

void release_frame_memory(frame_header* h) noexcept { recycle(h, h->size); }

frame_cache_stats thread_frame_cache_stats() noexcept { return tls_cache.stats; }

bool frame_cache_enabled() noexcept { return g_cache_enabled.load(std::memory_order_relaxed); }

void set_frame_cache_enabled(bool enabled) noexcept {
  g_cache_enabled.store(enabled, std::memory_order_relaxed);
}

}  // namespace mpg::detail
