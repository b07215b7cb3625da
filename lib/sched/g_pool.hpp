// lib/sched/g_pool.hpp: a P's pool of dead Gs (Go's p.gFree): a stack of
// pointers of fixed capacity, allocated once with the P.
//
// Spawning takes the most recently retired G (the warmest), and every task's
// end gives one back from a noexcept path, so push and pop are a store or a
// load and an index, and never allocate. The pool holds pointers, not a
// list threaded through the Gs: moving a batch to or from the scheduler's
// global pool then copies pointers under the lock instead of chasing links
// through Gs whose cache lines sit on the other P (measured: a pool linked
// through g::link ran spawn_join 1.5x slower on 2 Ps).
//
// Owner-only (the M holding the P), like the rest of the P's owner fields.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstddef>
#include <memory>

#include "mpg/detail/sched/g.hpp"

namespace mpg::detail {

class g_pool {
 public:
  explicit g_pool(std::size_t capacity) : slots_(new g*[capacity]), capacity_(capacity) {}

  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }

  // push(): the pool must not be full (its owner keeps it within capacity).
  void push(g* gp) noexcept {
    assert(size_ < capacity_);
    slots_[size_++] = gp;
  }
  // pop(): the most recently pushed G; the pool must not be empty.
  g* pop() noexcept {
    assert(size_ != 0);
    return slots_[--size_];
  }

  // Batches, for the moves to and from the scheduler's global pool: a copy
  // of pointers instead of a push or a pop per G (spawn_join, whose tasks
  // all live at once, spilled each G through its own pop and push_back).
  // push_n(): the n Gs at first, the last of them on top; there must be
  // room for them.
  void push_n(g* const* first, std::size_t n) noexcept {
    assert(n <= capacity_ - size_);
    std::copy_n(first, n, slots_.get() + size_);
    size_ += n;
  }
  // pop_n(): removes the n Gs on top and returns where they lie, oldest
  // first; they stay readable until the next push.
  g* const* pop_n(std::size_t n) noexcept {
    assert(n <= size_);
    size_ -= n;
    return slots_.get() + size_;
  }

 private:
  std::unique_ptr<g*[]> slots_;
  std::size_t capacity_;
  std::size_t size_ = 0;
};

}  // namespace mpg::detail
