// lib/sched/g_free_list.hpp: a pool of dead Gs (Go's gList): a LIFO stack
// threaded through g::link.
//
// A dead G is in no run queue, so its link is free to chain it here (the
// global run queue, the other user of link, only holds runnable Gs). Push
// and pop therefore allocate nothing and cannot fail: they run in the
// noexcept paths that retire a G at the end of every task, where a growing
// std::vector could throw std::bad_alloc and terminate the process, and
// where its amortised copying showed up as a per-task cost when Gs flow
// from Ps to the global pool.
//
// Not synchronised: a P's list belongs to the P's owner, the scheduler's
// global list is guarded by its allg_mu_ (the owner of the list says which).
#pragma once

#include <cstddef>

#include "mpg/detail/sched/g.hpp"

namespace mpg::detail {

class g_free_list {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  std::size_t size() const noexcept { return size_; }

  void push(g* gp) noexcept {
    gp->link = head_;
    head_ = gp;
    ++size_;
  }
  // pop(): the most recently pushed G (the warmest in cache); the list must
  // not be empty.
  g* pop() noexcept {
    g* gp = head_;
    head_ = gp->link;
    gp->link = nullptr;
    --size_;
    return gp;
  }
  // move_to(): up to n Gs from this list onto `to`.
  void move_to(g_free_list& to, std::size_t n) noexcept {
    for (; n != 0 && head_ != nullptr; --n) to.push(pop());
  }

 private:
  g* head_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace mpg::detail
