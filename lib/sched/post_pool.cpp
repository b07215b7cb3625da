// lib/sched/post_pool.cpp: the node caches of posted functions
// (mpg/detail/sched/post_node.hpp).
//
// A posted function is allocated by the posting thread and ends on an M.
// With malloc, every post pays a malloc on one thread and a free on another,
// and glibc's per-thread caches cannot serve that pattern (the freeing
// thread's cache fills with the other thread's chunks, then both sides take
// arena locks). Instead each posting thread has a cache of blocks that the
// Ms give back to it.
//
// The protocol. A post_cache belongs to one thread at a time, its owner,
// which finds it through tls_post_cache. It holds
//   free_[c]    free blocks of size class c: the owner's alone, no atomics;
//   returned_   a lock-free stack (Treiber) of blocks given back by others;
//   nreturned_  about how many blocks returned_ holds (bounds its memory).
// post_alloc (owner): pop free_[c]. When it is empty, take the whole of
//   returned_ with one exchange and sort it into free_; when that is empty
//   too, operator new.
// post_free / post_free_batch::flush (any thread): the owner itself puts
//   blocks straight on free_. Any other thread links its chain of blocks
//   and pushes it onto returned_ with one CAS, or, when nreturned_ is over
//   kReturnedCap (an owner that stopped posting), deletes them.
//   Only pushes race with each other, and the owner removes everything at
//   once: a CAS push compares only the head it linked to, so there is no
//   ABA problem.
//   Ordering: the push is a release and the owner's exchange an acquire, so
//   everything the freeing thread did to a block (destroying the function,
//   linking it) happens before the owner reuses it.
// Owner exit: the thread's cache_holder frees free_ and what returned_
//   holds, and parks the cache on the orphan list (under orphans_mu). A
//   thread that needs a cache adopts an orphan before it makes one. A cache
//   is never freed: blocks still queued in some runtime when their poster
//   exits can always go home (the next owner takes them). There are at most
//   as many caches as threads that ever posted at the same time.
// Fork. orphans_mu is a leaf lock (sched/leaf_locks.hpp): the handlers of
//   leaf_locks.cpp hold it across fork(), so that a child never starts with
//   it held, and the child keeps the orphans for its threads to adopt. The
//   forking thread keeps its cache; nreturned_ may count a push that another
//   thread had begun and the fork cut off, an estimate off by that much.
#include <atomic>
#include <cstdint>
#include <mutex>
#include <new>
#include <vector>

#include "mpg/detail/sched/post_node.hpp"
#include "sched/leaf_locks.hpp"

namespace mpg::detail {

namespace {
constexpr std::uint32_t kFreeCap = 1u << 15;    // per class, on free_
constexpr std::uint32_t kReturnedCap = 1u << 15;  // on returned_, all classes
}  // namespace

struct post_cache {
  // Owner only.
  post_block* free_[kPostClasses] = {};
  std::uint32_t nfree_[kPostClasses] = {};

  // Any thread. On a line of its own: the Ms write it, the owner reads it
  // rarely (when free_ runs dry).
  alignas(64) std::atomic<post_block*> returned_{nullptr};
  // Relaxed everywhere: an estimate that only bounds memory.
  std::atomic<std::uint32_t> nreturned_{0};

  void put_local(post_block* b) noexcept {
    const std::uint32_t c = b->size_class;
    if (nfree_[c] >= kFreeCap) {
      ::operator delete(b);
      return;
    }
    b->next = free_[c];
    free_[c] = b;
    ++nfree_[c];
  }

  // take_returned(): moves returned_ onto free_ (owner).
  void take_returned() noexcept {
    // acquire: pairs with push()'s release (see the top).
    post_block* b = returned_.exchange(nullptr, std::memory_order_acquire);
    std::uint32_t n = 0;
    while (b != nullptr) {
      post_block* next = b->next;
      put_local(b);
      b = next;
      ++n;
    }
    if (n != 0) nreturned_.fetch_sub(n, std::memory_order_relaxed);
  }

  // push(): a chain first..last of n blocks, from a thread that is not the owner.
  void push(post_block* first, post_block* last, std::uint32_t n) noexcept {
    if (nreturned_.load(std::memory_order_relaxed) >= kReturnedCap) {
      while (first != nullptr) {
        post_block* next = first->next;
        ::operator delete(first);
        first = next;
      }
      return;
    }
    nreturned_.fetch_add(n, std::memory_order_relaxed);
    post_block* head = returned_.load(std::memory_order_relaxed);
    do {
      last->next = head;
      // release on success: see the top. Relaxed on failure: retry.
    } while (!returned_.compare_exchange_weak(head, first, std::memory_order_release,
                                              std::memory_order_relaxed));
  }

  void release_all() noexcept {
    take_returned();
    for (std::uint32_t c = 0; c < kPostClasses; ++c) {
      while (free_[c] != nullptr) {
        post_block* next = free_[c]->next;
        ::operator delete(free_[c]);
        free_[c] = next;
      }
      nfree_[c] = 0;
    }
  }
};

namespace {

std::mutex orphans_mu;
std::vector<post_cache*>& orphans() {
  static auto* v = new std::vector<post_cache*>();  // never destroyed: threads exit after main
  return *v;
}

// constinit: as frame_allocator.cpp's tls_cache (this file has tls_cache_holder).
constinit __attribute__((tls_model("initial-exec"))) thread_local post_cache* tls_post_cache =
    nullptr;

// Set once the thread's cache_holder is destroyed: a post from a later
// thread-exit destructor must not adopt a cache into the dead holder.
constinit thread_local bool tls_cache_given_up = false;

// Gives the thread's cache up when the thread exits.
struct cache_holder {
  post_cache* cache = nullptr;
  ~cache_holder() {
    tls_cache_given_up = true;
    if (cache == nullptr) return;
    tls_post_cache = nullptr;
    cache->release_all();
    std::lock_guard<std::mutex> l(orphans_mu);
    orphans().push_back(cache);
  }
};
thread_local cache_holder tls_cache_holder;

[[gnu::noinline]] post_cache* adopt_cache() {
  register_leaf_fork_handlers();  // before the first lock, and never under it (leaf_locks.cpp)
  post_cache* c = nullptr;
  {
    std::lock_guard<std::mutex> l(orphans_mu);
    if (!orphans().empty()) {
      c = orphans().back();
      orphans().pop_back();
    }
  }
  if (c == nullptr) c = new post_cache();
  if (tls_cache_given_up) [[unlikely]] {
    // Exiting, past the holder: the cache stays an orphan (its blocks go
    // home to it, and its next owner takes them).
    std::lock_guard<std::mutex> l(orphans_mu);
    orphans().push_back(c);
    return c;
  }
  tls_cache_holder.cache = c;  // registers the holder's destructor for this thread
  tls_post_cache = c;
  return c;
}

}  // namespace

void post_orphans_lock() noexcept { orphans_mu.lock(); }
void post_orphans_unlock() noexcept { orphans_mu.unlock(); }

post_memory post_alloc(std::uint32_t c) {
  post_cache* cache = tls_post_cache;
  if (cache == nullptr) [[unlikely]] {
    cache = adopt_cache();
    // A thread past its holder owns no cache: fresh memory, homed at an orphan.
    if (tls_post_cache != cache) return {::operator new(kPostClassBytes[c]), cache};
  }
  post_block* b = cache->free_[c];
  if (b == nullptr) [[unlikely]] {
    cache->take_returned();
    b = cache->free_[c];
    if (b == nullptr) return {::operator new(kPostClassBytes[c]), cache};
  }
  cache->free_[c] = b->next;
  --cache->nfree_[c];
  return {b, cache};
}

void post_free(post_cache* home, std::uint32_t c, void* mem) noexcept {
  auto* b = new (mem) post_block{nullptr, c};
  if (home == tls_post_cache) {
    home->put_local(b);
    return;
  }
  home->push(b, b, 1);
}

void post_free_batch::flush() noexcept {
  if (head_ == nullptr) return;
  if (home_ == tls_post_cache) {
    while (head_ != nullptr) {
      post_block* next = head_->next;
      home_->put_local(head_);
      head_ = next;
    }
  } else {
    home_->push(head_, tail_, count_);
  }
  head_ = tail_ = nullptr;
  count_ = 0;
}

}  // namespace mpg::detail
