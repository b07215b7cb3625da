// lib/sched/work_deque.hpp: a P's deque of spawned, never-started Gs (a
// bounded Chase-Lev deque, as in Lê, Pop, Cohen and Zappa Nardelli,
// "Correct and Efficient Work-Stealing for Weak Memory Models", PPoPP 2013).
//
// Work-first fork-join. spawn() pushes the child at the bottom, the owner's
// end; the owner pops the newest child first (LIFO), and thieves take the
// oldest from the top (FIFO), which in a fork-join tree is the biggest
// piece of work left. A join whose child is still the bottom entry pops it
// and runs it inline (spawn.hpp's join): with strictly nested spawns and
// joins the child always is the bottom entry, so the tree runs depth-first
// on one P and keeps a live set proportional to its depth, not its breadth.
//
// Roles are split by type as in run_queue.hpp: push, pop, pop_newest_if and
// pop_if belong to the M holding the P (through run_queue::owner); steal(),
// size() and empty_seq_cst() may be called from any thread.
//
// Invariants:
//   - top and bottom are signed 64-bit counters that only grow, except that
//     pop() lowers bottom by one for the duration of a pop; bottom - top is
//     the number of entries and never exceeds capacity.
//   - Only the owner writes bottom and the slots. It writes slot i only when
//     i - top < capacity for a top it loaded after the last steal it can
//     have raced with, so a thief that read slot t and then wins its CAS on
//     top read the value the owner published for t.
//   - top only moves forward, by CAS: thieves, and the owner when it pops
//     the last entry (then it races the thieves for it, and one CAS wins).
//
// Memory ordering, argued per operation:
//   push   slot store relaxed, then bottom store release: a thief that
//          acquires the new bottom sees the slot and the G's fields written
//          before the push (the spawn's set-up of the G).
//   pop    bottom store, then a seq_cst fence, then the top load: the fence
//          orders the owner's claim (the lowered bottom) against a thief's
//          top load / bottom load pair, which is separated by its own
//          seq_cst fence, so the owner and a thief cannot both take the one
//          remaining entry without one of them seeing the other; for that
//          entry the decision is the seq_cst CAS on top.
//   steal  top load acquire, seq_cst fence, bottom load acquire (pairs with
//          push's release), slot load, CAS on top (seq_cst; acquire on
//          success is what orders the slot read before a reuse of the slot:
//          the owner's push acquires top before writing a slot).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "absl/base/config.h"
#include "mpg/detail/sched/g.hpp"

namespace mpg::detail {

// seq_cst_fence(): std::atomic_thread_fence(std::memory_order_seq_cst),
// and in the C++ memory model nothing else. On x86-64 any locked
// instruction is a full fence for ordinary (write-back) memory, which is
// all this deque touches: g++ emits `lock or` of zero to the top of the
// stack, clang 16 `mfence`, which also orders non-temporal and
// write-combining accesses and ran fib 1.4x slower on this machine class
// (a third of the samples of a run on the load after the fence in
// join_suspend's pop). So on x86-64 it is the locked or, written out,
// except under ThreadSanitizer, which must see the fence as one.
inline void seq_cst_fence() noexcept {
#if defined(__x86_64__) && !defined(ABSL_HAVE_THREAD_SANITIZER)
  // The CPU completes every earlier load and store before any later one;
  // the "memory" clobber keeps the compiler from moving one across.
  asm volatile("lock orq $0, (%%rsp)" ::: "memory", "cc");
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

class work_deque {
 public:
  explicit work_deque(std::uint32_t capacity)
      : mask_(static_cast<std::int64_t>(capacity) - 1),
        cap_(capacity),
        slots_(new std::atomic<g*>[capacity]) {
    for (std::uint32_t i = 0; i < capacity; ++i) slots_[i].store(nullptr, std::memory_order_relaxed);
  }

  std::int64_t capacity() const noexcept { return cap_; }

  // steal(): take the oldest entry, from any thread. nullptr when empty or
  // when another thief (or the owner, for the last entry) won the race.
  g* steal() noexcept {
    std::int64_t t = top_.load(std::memory_order_acquire);
    seq_cst_fence();
    const std::int64_t b = bottom_.load(std::memory_order_acquire);
    if (t >= b) return nullptr;
    g* gp = slots_[t & mask_].load(std::memory_order_relaxed);
    if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst,
                                      std::memory_order_relaxed))
      return nullptr;
    return gp;
  }

  // size(): a snapshot from any thread.
  std::uint32_t size() const noexcept {
    const std::int64_t t = top_.load(std::memory_order_acquire);
    const std::int64_t b = bottom_.load(std::memory_order_acquire);
    return b > t ? static_cast<std::uint32_t>(b - t) : 0;
  }
  // oldest_position(): the top counter, from any thread. It moves exactly
  // when the oldest entry leaves (stolen, taken by a fairness turn, or
  // popped by the owner as the last one), so equal readings with entries
  // present at both mean the same G waited at the old end all along
  // (sysmon's oldest-spawn rule). Relaxed: a monotonic counter sampled.
  std::int64_t oldest_position() const noexcept { return top_.load(std::memory_order_relaxed); }
  // size_seq_cst(): size() with the recheck's seq_cst loads.
  std::uint32_t size_seq_cst() const noexcept {
    const std::int64_t t = top_.load(std::memory_order_seq_cst);
    const std::int64_t b = bottom_.load(std::memory_order_seq_cst);
    return b > t ? static_cast<std::uint32_t>(b - t) : 0;
  }
  // empty_seq_cst(): the recheck of the parking protocol (seq_cst loads).
  bool empty_seq_cst() const noexcept {
    return top_.load(std::memory_order_seq_cst) >= bottom_.load(std::memory_order_seq_cst);
  }

  // Owner side (only through run_queue::owner).

  // push(): false when full (the caller queues the G elsewhere).
  bool push(g* gp) noexcept {
    const std::int64_t b = bottom_.load(std::memory_order_relaxed);  // only we write it
    // Acquire: see thieves' top advances (and their slot reads) before
    // reusing a slot.
    const std::int64_t t = top_.load(std::memory_order_acquire);
    if (b - t >= cap_) return false;
    slots_[b & mask_].store(gp, std::memory_order_relaxed);
    // Release: publishes the slot (and the G) to thieves that acquire bottom.
    bottom_.store(b + 1, std::memory_order_release);
    return true;
  }

  // pop(): take the newest entry; nullptr when empty or when a thief took
  // the last one.
  g* pop() noexcept {
    // Empty without the fence: top only grows and only we raise bottom.
    if (top_.load(std::memory_order_relaxed) >= bottom_.load(std::memory_order_relaxed))
      return nullptr;
    const std::int64_t b = bottom_.load(std::memory_order_relaxed) - 1;
    bottom_.store(b, std::memory_order_relaxed);
    seq_cst_fence();  // see the top of the file
    std::int64_t t = top_.load(std::memory_order_relaxed);
    if (t > b) {
      bottom_.store(b + 1, std::memory_order_relaxed);  // was empty
      return nullptr;
    }
    g* gp = slots_[b & mask_].load(std::memory_order_relaxed);
    if (t == b) {
      // The last entry: race the thieves for it.
      if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst,
                                        std::memory_order_relaxed))
        gp = nullptr;
      bottom_.store(b + 1, std::memory_order_relaxed);
    }
    return gp;
  }

  // pop_newest_if(): pop the newest entry if match(entry) holds; returns
  // it, or nullptr when the deque is empty, match fails, or a thief took
  // the entry first. match runs before the claim, so it may see an entry
  // that a thief is taking (and that G's fields change under it); only
  // the claim below decides who gets it. Only the owner writes slots, so
  // the slot read is stable.
  template <class Match>
  g* pop_newest_if(Match match) noexcept {
    const std::int64_t b = bottom_.load(std::memory_order_relaxed) - 1;  // only we write it
    if (top_.load(std::memory_order_relaxed) > b) return nullptr;  // empty (a hint)
    g* gp = slots_[b & mask_].load(std::memory_order_relaxed);
    if (!match(gp)) return nullptr;
    // Pop it as pop() does; we get gp, or nothing when a thief took it.
    bottom_.store(b, std::memory_order_relaxed);
    seq_cst_fence();  // see the top of the file
    std::int64_t t = top_.load(std::memory_order_relaxed);
    if (t < b) return gp;
    bool won = false;
    if (t == b)
      won = top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst,
                                         std::memory_order_relaxed);
    bottom_.store(b + 1, std::memory_order_relaxed);
    return won ? gp : nullptr;
  }

  // pop_if(): pop the newest entry if it is gp. False when the bottom entry
  // is another G, or a thief took gp.
  bool pop_if(g* gp) noexcept {
    return pop_newest_if([gp](g* e) { return e == gp; }) != nullptr;
  }

 private:
  alignas(64) std::atomic<std::int64_t> top_{0};
  alignas(64) std::atomic<std::int64_t> bottom_{0};
  const std::int64_t mask_;
  const std::int64_t cap_;
  std::unique_ptr<std::atomic<g*>[]> slots_;
};

}  // namespace mpg::detail
