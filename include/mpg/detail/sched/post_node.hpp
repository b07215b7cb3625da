// mpg/detail/sched/post_node.hpp: the node of one posted function
// (runtime_handle::post) and where its memory comes from.
//
// A posted function is allocated on the posting thread and freed on the M
// that ran it (or dropped it at shutdown). Its memory comes from the posting
// thread's node cache (lib/sched/post_pool.cpp): a per-thread free list that
// the Ms hand nodes back to in batches, so that a post costs no malloc/free
// pair split across two threads. Functions too large or too aligned for the
// cache's size classes use operator new (home == nullptr).
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>

namespace mpg::detail {

struct post_cache;  // lib/sched/post_pool.cpp

// One posted function: an intrusive node of the runtime's posted queue
// (lib/sched/post.cpp). Whoever takes a node off the queue ends it with
// release_post(): it runs the function when `run`, destroys it and frees
// the node (a node from operator new deletes itself; a cached node's memory
// goes back to its home cache, through `batch` when one is given).
class post_free_batch;
struct post_node {
  post_node* next = nullptr;
  void (*end)(post_node*, bool run, post_free_batch* batch) noexcept = nullptr;
  post_cache* home = nullptr;
};

// The cache's size classes (node and function together).
inline constexpr std::size_t kPostClassBytes[] = {64, 96, 128};
inline constexpr std::uint32_t kPostClasses = 3;

// A free block of a cache: what a cached node's memory holds once its
// function is destroyed.
struct post_block {
  post_block* next;
  std::uint32_t size_class;
};

// post_alloc(): memory for a node of size class c from the calling thread's
// cache (its home). Throws std::bad_alloc.
struct post_memory {
  void* p;
  post_cache* home;
};
post_memory post_alloc(std::uint32_t c);

// post_free(): gives one block back to its home cache; any thread.
void post_free(post_cache* home, std::uint32_t c, void* mem) noexcept;

// post_free_batch: gives back many blocks, one atomic push per run of blocks
// with the same home (an M gives a batch of one poster's functions back with
// one operation). Not thread-safe: one per M and batch.
class post_free_batch {
 public:
  post_free_batch() noexcept = default;
  post_free_batch(const post_free_batch&) = delete;
  post_free_batch& operator=(const post_free_batch&) = delete;
  ~post_free_batch() { flush(); }

  void add(post_cache* home, std::uint32_t c, void* mem) noexcept {
    if (home != home_) {
      flush();
      home_ = home;
    }
    auto* b = new (mem) post_block{head_, c};
    if (head_ == nullptr) tail_ = b;
    head_ = b;
    ++count_;
  }
  void flush() noexcept;

 private:
  post_cache* home_ = nullptr;
  post_block* head_ = nullptr;
  post_block* tail_ = nullptr;
  std::uint32_t count_ = 0;
};

// release_post(): ends a node taken off the queue (see post_node).
inline void release_post(post_node* n, bool run, post_free_batch* batch = nullptr) noexcept {
  n->end(n, run, batch);
}

// post_fn: a posted function. Made only by make(), which sets how the node
// ends (a node made otherwise would have none).
template <class F>
class post_fn final : public post_node {
 public:
  // make(): a node holding a copy of f, from the calling thread's cache when
  // it fits a size class.
  template <class A>
  static post_node* make(A&& f) {
    constexpr std::uint32_t kClass = size_class_of();
    post_fn* n;
    if constexpr (kClass < kPostClasses) {
      post_memory m = post_alloc(kClass);
      try {
        n = new (m.p) post_fn(std::forward<A>(f));
      } catch (...) {
        post_free(m.home, kClass, m.p);
        throw;
      }
      n->home = m.home;
      n->end = &end_cached;
    } else {
      n = new post_fn(std::forward<A>(f));
      n->end = &end_heap;
    }
    return n;
  }

 private:
  template <class A>
  explicit post_fn(A&& f) : fn(std::forward<A>(f)) {}

  F fn;

  static void end_cached(post_node* n, bool run, post_free_batch* batch) noexcept {
    auto* self = static_cast<post_fn*>(n);
    if (run) self->fn();  // noexcept context: a throwing function terminates
    post_cache* const home = self->home;
    self->~post_fn();
    if (batch != nullptr)
      batch->add(home, size_class_of(), self);
    else
      post_free(home, size_class_of(), self);
  }
  static void end_heap(post_node* n, bool run, post_free_batch*) noexcept {
    auto* self = static_cast<post_fn*>(n);
    if (run) self->fn();
    delete self;
  }
  static constexpr std::uint32_t size_class_of() {
    if (alignof(post_fn) > alignof(std::max_align_t)) return kPostClasses;
    for (std::uint32_t c = 0; c < kPostClasses; ++c)
      if (sizeof(post_fn) <= kPostClassBytes[c]) return c;
    return kPostClasses;
  }
};

}  // namespace mpg::detail
