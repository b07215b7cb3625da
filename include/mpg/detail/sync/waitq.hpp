// mpg/detail/sync/waitq.hpp: the waiter node shared by channels, select and the
// sync primitives, and the intrusive FIFO of waiters (Go's sudog and waitq).
//
// A waiter lives inside the awaiter of the suspended operation, which lives
// in the waiting task's coroutine frame: waiting never allocates. A blocked
// channel operation, a select case, a parked mutex locker are all a `waiter`
// linked into the queue of the object they wait on, under that object's lock.
//
// Select. One select enqueues one waiter per case, all pointing at a
// select_state in the select's awaiter. A waker that takes a waiter whose
// sel() is not null must first win the select: select_state::claim(), one
// CAS of the state word from "open" (or "arming") to the waiter's address
// (Go's selectDone, with the winner in the same word). The winner completes
// the operation; a waker that loses drops the node and looks at the next
// one, taking nothing from it. So exactly one case of a select completes,
// whoever races for it (the select protocol is written in select.hpp).
//
// Invariants:
//   - A waiter is in at most one queue, and then its queue's lock is what
//     guards its links and its payload (the value it sends or receives).
//   - next/prev are null when the waiter is in no queue, except while a
//     waker uses `next` to chain the waiters it took off (close, wake-all).
//   - owner's kQueued bit is set iff the waiter is linked in a queue.
//   - owner names the G to ready: directly, or through the select_state
//     that all of a select's waiters share.
//   - Once a waker has taken a waiter off its queue (and, for a select, won
//     it), that waker is the only party that may ready gp (g.hpp, step 3).
#pragma once

#include <absl/base/attributes.h>

#include <atomic>
#include <bit>
#include <cassert>
#include <coroutine>
#include <cstdint>
#include <source_location>
#include <type_traits>

#include "mpg/detail/sched/g.hpp"

namespace mpg::detail {

struct select_state;

struct waiter {
  waiter* next = nullptr;
  waiter* prev = nullptr;
  // Who waits: the G to ready (a plain operation), or, tagged with bit 0,
  // the select_state of the select this waiter is a case of. One word, so a
  // waiter is three: parked tasks stay small. What the waker did (a value
  // handed over, or a close) is told by the payload of the operation, not
  // by the waiter.
  std::uintptr_t owner = 0;

  // Before the waiter is queued, owner holds the call site of its operation
  // (a std::source_location is one pointer), read back when parking. So the
  // awaiter of a parked channel operation holds four words in all (links,
  // owner, channel) plus its value: every word counts for idle tasks.
  void stash_where(std::source_location where) noexcept {
    owner = std::bit_cast<std::uintptr_t>(where);
  }
  std::source_location stashed_where() const noexcept {
    return std::bit_cast<std::source_location>(owner);
  }

  // Bit 1 of owner: the waiter is in a waitq (set by push_*, cleared by
  // every unlink, all under the queue's lock). An awaiter destroyed while
  // still queued (its task killed at runtime shutdown) unlinks itself, so a
  // later close() or send on that channel, or unlock()/release()/done() on
  // that sync primitive, does not touch freed memory. Every awaiter that
  // queues a waiter (channel and select cases, and the sync primitives
  // through parking_queue) does so in its destructor: one read of this bit,
  // without the lock, and only when it is set, the lock and remove() (which
  // re-reads it under the lock: a waker may have taken the waiter off in
  // between), plus whatever the primitive's state word needs when its queue
  // empties. Conversely, a primitive or channel destroyed with waiters still
  // queued (its frame killed before theirs) detaches them (detach_all()), so
  // their awaiters then find the bit clear and never touch the freed queue.
  // Read without the lock only by that destructor: after a normal wake the
  // waker's clear happens before ready(), hence before it; a waiter never
  // queued (fast path) never had it set; a killed task's destructor runs
  // after its runtime's Ms have stopped (runtime.cpp, step 6), on the thread
  // that also runs the destructors of the other killed frames, so a detach
  // by a primitive that lived in one of them is sequenced before it; only a
  // waker from outside that runtime could race it, and that waker would be
  // readying a G of a runtime being destroyed, which is unsound whatever
  // this bit says. (A plain word, not an atomic: every other access is
  // under the lock, or by the waiting task itself before it publishes the
  // waiter.)
  static constexpr std::uintptr_t kQueued = 2;
  static constexpr std::uintptr_t kTagMask = 3;
  bool queued() const noexcept { return (owner & kQueued) != 0; }

  void set_g(g* gp) noexcept { owner = reinterpret_cast<std::uintptr_t>(gp); }
  void set_select(select_state* s) noexcept { owner = reinterpret_cast<std::uintptr_t>(s) | 1u; }
  select_state* sel() const noexcept {
    return (owner & 1u) ? reinterpret_cast<select_state*>(owner & ~kTagMask) : nullptr;
  }
  // gp(): the G to ready (for a select case, the select's G).
  inline g* gp() const noexcept;
};

struct select_state {
  // The state word: kOpen, kArming, or the address of the waiter that won.
  //   kArming  the select is still queueing its cases (select.hpp, step 3).
  //            Only a waker that holds no lock of the select's lock set
  //            can see it (a lock-free case: a join). It may claim, but
  //            must not ready the G: the select finds the claim when it
  //            ends arming, and completes without parking.
  //   kOpen    queued everywhere and parked: a claim wins the select and
  //            its waker must ready gp.
  //   winner   claimed; never changes again.
  // Claims are CASes on this one word, so RMWs in one total order decide at
  // most one winner even between wakers on different locks. acq_rel: the
  // release of the select's kArming -> kOpen publishes gp and the queued
  // cases to a lock-free waker that acquires it in its claim; the winner's
  // release orders its writes before the select's acquire when the select
  // finds it (after ready() that is ordered anyway; the arming path needs
  // it).
  static constexpr std::uintptr_t kOpen = 0;
  static constexpr std::uintptr_t kArming = 1;
  std::atomic<std::uintptr_t> state{kOpen};
  // The select's G (written before any case is published).
  g* gp = nullptr;

  enum class claim_result : std::uint8_t { lost, won, won_arming };
  // claim(): try to make w the winner. won: the caller readies gp.
  // won_arming: the caller must not ready it. lost: take nothing.
  claim_result claim(waiter* w) noexcept {
    std::uintptr_t v = state.load(std::memory_order_relaxed);
    while (v == kOpen || v == kArming) {
      if (state.compare_exchange_weak(v, reinterpret_cast<std::uintptr_t>(w),
                                      std::memory_order_acq_rel, std::memory_order_relaxed))
        return v == kOpen ? claim_result::won : claim_result::won_arming;
    }
    return claim_result::lost;
  }
  // winner(): the waiter that won, or nullptr while none has.
  waiter* winner() const noexcept {
    const std::uintptr_t v = state.load(std::memory_order_acquire);
    return v == kOpen || v == kArming ? nullptr : reinterpret_cast<waiter*>(v);
  }
};

static_assert(sizeof(std::source_location) == sizeof(std::uintptr_t) &&
                  std::is_trivially_copyable_v<std::source_location>,
              "waiter::stash_where needs a one-pointer std::source_location");
static_assert(sizeof(waiter) == 3 * sizeof(void*));

inline g* waiter::gp() const noexcept {
  if (select_state* s = sel()) return s->gp;
  return reinterpret_cast<g*>(owner & ~waiter::kTagMask);
}

// waitq: doubly linked FIFO of waiters. Not thread-safe: its owner's lock
// guards it.
class waitq {
 public:
  bool empty() const noexcept { return first_ == nullptr; }
  waiter* front() const noexcept { return first_; }

  void push_back(waiter* w) noexcept {
    w->owner |= waiter::kQueued;
    w->next = nullptr;
    w->prev = last_;
    if (last_)
      last_->next = w;
    else
      first_ = w;
    last_ = w;
  }

  void push_front(waiter* w) noexcept {
    w->owner |= waiter::kQueued;
    w->prev = nullptr;
    w->next = first_;
    if (first_)
      first_->prev = w;
    else
      last_ = w;
    first_ = w;
  }

  // pop_front(): the first waiter, unlinked; nullptr when empty. No select
  // claim: for queues that hold no select waiters (sync primitives).
  // Forced inline, as dequeue(): they are the hot part of every hand-off.
  ABSL_ATTRIBUTE_ALWAYS_INLINE waiter* pop_front() noexcept {
    waiter* w = first_;
    if (!w) return nullptr;
    first_ = w->next;
    if (first_)
      first_->prev = nullptr;
    else
      last_ = nullptr;
    w->next = w->prev = nullptr;
    w->owner &= ~waiter::kQueued;
    return w;
  }

  // dequeue(): the first waiter that may be completed now, unlinked (Go's
  // waitq.dequeue). Select waiters whose select already fired elsewhere are
  // dropped from the queue on the way. Records the winner of a select.
  // The queue's owner holds its lock, which is in the select's lock set, so
  // the select is past arming: a claim is won or lost, never won_arming.
  ABSL_ATTRIBUTE_ALWAYS_INLINE waiter* dequeue() noexcept {
    waiter* w = pop_front();
    if (w == nullptr || w->sel() == nullptr) [[likely]]
      return w;
    return dequeue_select(w);
  }

  // dequeue_all(): every waiter dequeue() would give, in order, as a chain
  // through `next` (for wake-all paths that ready after unlocking); select
  // waiters that lost are unlinked and left out of the chain.
  waiter* dequeue_all() noexcept {
    waiter* chain = nullptr;
    waiter** tail = &chain;
    while (waiter* w = dequeue()) {
      *tail = w;
      tail = &w->next;
    }
    *tail = nullptr;
    return chain;
  }

  // remove(): unlink w if it is still queued and return true; return false,
  // doing nothing, if a waker already took it off (Go's dequeueSudoG). w
  // must have been pushed on this queue. The kQueued bit decides, not the
  // links: a waiter taken by take_all() or by a close keeps a `next` link
  // into its waker's chain, which must not be mistaken for this queue.
  bool remove(waiter* w) noexcept {
    if (!w->queued()) return false;
    waiter* x = w->prev;
    waiter* y = w->next;
    if (x)
      x->next = y;
    else
      first_ = y;
    if (y)
      y->prev = x;
    else
      last_ = x;
    w->next = w->prev = nullptr;
    w->owner &= ~waiter::kQueued;
    return true;
  }

  // detach_all(): forget every waiter without waking it: each is unlinked
  // and its kQueued bit cleared, so its awaiter's destructor (a task killed
  // at shutdown) does not come back to this queue. For the destructors of
  // the objects that own a queue; anywhere else a detached waiter would be
  // lost.
  void detach_all() noexcept {
    for (waiter* w = first_; w;) {
      waiter* next = w->next;
      w->next = w->prev = nullptr;
      w->owner &= ~waiter::kQueued;
      w = next;
    }
    first_ = last_ = nullptr;
  }

  // take_all(): the whole queue as a chain through `next` (prev cleared),
  // leaving the queue empty. For wake-all paths that ready after unlocking.
  waiter* take_all() noexcept {
    waiter* w = first_;
    for (waiter* p = w; p; p = p->next) {
      p->prev = nullptr;
      p->owner &= ~waiter::kQueued;
    }
    first_ = last_ = nullptr;
    return w;
  }

 private:
  // dequeue_select(): the rest of dequeue() once the waiter popped, w, is a
  // select case: claim its select; on a loss drop it and go on with the
  // next waiter. Out of line: plain operations never come here.
  ABSL_ATTRIBUTE_NOINLINE waiter* dequeue_select(waiter* w) noexcept {
    for (;;) {
      if (select_state* s = w->sel()) {
        const select_state::claim_result r = s->claim(w);
        if (r != select_state::claim_result::lost) {
          assert(r == select_state::claim_result::won);
          return w;
        }
      } else {
        return w;
      }
      w = pop_front();
      if (w == nullptr) return nullptr;
    }
  }

  waiter* first_ = nullptr;
  waiter* last_ = nullptr;
};

// ready_chain(): ready every G of a chain built by take_all() or by hand
// through `next`. Reads each link before readying its waiter: once readied,
// a waiter's frame may be resumed and freed on another thread. On an M, the
// first G goes to runnext, the rest to the tail of the local queue, so a
// wake-all neither takes the caller's slot many times over nor reorders the
// woken; from any other thread, all of them go to the global queue.
inline void ready_chain(waiter* w) noexcept {
  bool first = true;
  while (w) {
    waiter* next = w->next;
    g* gp = w->gp();
    if (first)
      ready(gp);
    else
      ready_tail(gp);
    first = false;
    w = next;
  }
}

// yield_if_over_budget(): the tail of every runtime await that completed
// without suspending. Charges the G's cooperative budget (g.hpp); when the
// slice is spent, requeues the G at h and returns true (await_suspend then
// returns true: the G resumes later, its operation already complete).
// Otherwise returns false: await_suspend returns false and the G goes on.
inline bool yield_if_over_budget(std::coroutine_handle<> h) noexcept {
  if (!consume_budget_now()) return false;
  requeue_current(h);
  return true;
}

}  // namespace mpg::detail
