// lib/sched/work_deque.hpp: a P's deque of spawned, never-started Gs: a
// split deque, with a private part only the owner touches and a public part
// thieves take from (the design of Lace: van Dijk and van de Pol, "Lace:
// non-blocking split deque for work-stealing", 2014; the owner-answered
// sharing of Acar, Charguéraud and Rainey, PPoPP 2013).
//
// Work-first fork-join. spawn() pushes the child at the bottom, the owner's
// end; the owner pops the newest child first (LIFO), and thieves take the
// oldest from the top (FIFO), which in a fork-join tree is the biggest
// piece of work left. A join whose child is still the bottom entry pops it
// and runs it inline (spawn.hpp's join): with strictly nested spawns and
// joins the child always is the bottom entry, so the tree runs depth-first
// on one P and keeps a live set proportional to its depth, not its breadth.
//
// Why split. In a Chase-Lev deque every pop by the owner stores bottom and
// then loads top with a full fence between (a store-load pair against the
// thieves), so every inline join paid a locked instruction: 10-16% of
// fib's and skynet's time on this machine class. Here the entries are
//
//     top ........ split ........ bottom
//     | public: thieves | private: owner |
//
// and the owner pushes and pops the private part with plain (relaxed)
// loads and stores. Thieves see only top and split, packed in one 64-bit
// word (`shared_`) that every change of either goes through, so the split
// between the parts and a thief's claim are decided by one word, with no
// store-load pair anywhere.
//
// Sharing. The owner moves split towards bottom, publishing the older half
// of its private entries, whenever it finds the public part empty at a
// push or a pop (thieves took everything it had published): publication
// costs the owner a load per operation and a store when it happens, i.e.
// per steal, not per task. With the public part empty no thief can claim
// anything, so that store needs no read-modify-write. The first spawn of
// an idle P is public at once. A task that spawns and then computes for a
// long time without spawning, joining or suspending keeps its later spawns
// private until it does; the spinning M that came for them keeps looking
// (they count in size()), and takes them once they are published.
//
// Taking back. When the private part is empty the owner takes the public
// part back: the newer half, by a CAS on the word that leaves the oldest
// entry public, or, with one entry left, that entry itself by the thieves'
// own CAS on top. A locked instruction, paid only when thieves left
// published work untaken.
//
// Roles are split by type as in run_queue.hpp: push, pop, pop_newest_if,
// pop_if and pop_oldest belong to the M holding the P (through
// run_queue::owner); steal(), size(), oldest_position() and the seq_cst
// probes may be called from any thread.
//
// Invariants (counters are uint32 and wrap; every comparison is of
// differences):
//   - top <= split <= bottom, bottom - top <= capacity. (A thief that
//     stalls between its load and its CAS while top moves on by exactly
//     2^32 could win with a stale slot read; Go's run queue takes the same
//     risk with its uint32 head.)
//   - top only moves forward, by CAS on shared_: thieves, and the owner
//     when it takes the last public entry or the oldest entry for a
//     fairness turn. Only the owner moves split and bottom, and split_
//     below is its exact copy of split.
//   - A slot is written only by the owner, at bottom, and only when
//     bottom - top < capacity for a top loaded after the last steal it can
//     have raced with. The owner never takes the entry at top back into
//     the private part (taking back leaves it public), so the slot at top
//     keeps its value until top moves past it: a thief that read slot t
//     and then wins its CAS with top still t read the value published for
//     t, however often split moved meanwhile.
//
// Memory ordering, argued per operation:
//   publish  (owner) slot stores relaxed, then shared_ store release (or
//            the taking back's CAS acq_rel): a thief that acquires shared_
//            sees every slot up to split and the spawn's set-up of its G.
//            Thieves' CASes are read-modify-writes, so they continue the
//            owner's release sequence.
//   steal    shared_ load acquire (pairs with publish), slot load relaxed,
//            CAS acq_rel: its release orders the slot read before the
//            owner's reuse of the slot, which acquires shared_ in push().
//   private  pushes and pops below split: relaxed; no other thread reads
//            those slots, and bottom is read by others only for size().
// No seq_cst: the word decides every race. The seq_cst probes serve the
// parking protocol (scheduler.cpp), whose own-P pushes need no fence.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "mpg/detail/sched/g.hpp"

namespace mpg::detail {

class work_deque {
 public:
  explicit work_deque(std::uint32_t capacity)
      : mask_(capacity - 1), cap_(capacity), slots_(new std::atomic<g*>[capacity]) {
    for (std::uint32_t i = 0; i < capacity; ++i) slots_[i].store(nullptr, std::memory_order_relaxed);
  }

  std::uint32_t capacity() const noexcept { return cap_; }

  // steal(): take the oldest public entry, from any thread. nullptr when
  // the public part is empty or another thief (or the owner) won the race.
  g* steal() noexcept {
    std::uint64_t w = shared_.load(std::memory_order_acquire);
    const std::uint32_t t = top_of(w);
    if (split_of(w) == t) return nullptr;
    g* gp = slots_[t & mask_].load(std::memory_order_relaxed);
    if (!shared_.compare_exchange_strong(w, pack(t + 1, split_of(w)), std::memory_order_acq_rel,
                                         std::memory_order_relaxed))
      return nullptr;
    return gp;
  }

  // size(): a snapshot from any thread, private entries included.
  std::uint32_t size() const noexcept {
    const std::uint32_t t = top_of(shared_.load(std::memory_order_acquire));
    const std::uint32_t n = bottom_.load(std::memory_order_relaxed) - t;
    return n <= cap_ ? n : 0;  // a torn snapshot
  }
  // oldest_position(): the top counter, from any thread. It moves exactly
  // when the oldest entry leaves (stolen, taken by a fairness turn, or
  // popped by the owner as the last one), so equal readings with entries
  // present at both mean the same G waited at the old end all along
  // (sysmon's oldest-spawn rule). Relaxed: a monotonic counter sampled.
  std::int64_t oldest_position() const noexcept {
    return top_of(shared_.load(std::memory_order_relaxed));
  }
  // size_seq_cst(), empty_seq_cst(): size() with the parking protocol's
  // seq_cst loads (its recheck).
  std::uint32_t size_seq_cst() const noexcept {
    const std::uint32_t t = top_of(shared_.load(std::memory_order_seq_cst));
    const std::uint32_t n = bottom_.load(std::memory_order_seq_cst) - t;
    return n <= cap_ ? n : 0;
  }
  bool empty_seq_cst() const noexcept { return size_seq_cst() == 0; }

  // Owner side (only through run_queue::owner).

  // push(): false when full (the caller queues the G elsewhere).
  bool push(g* gp) noexcept {
    const std::uint32_t b = bottom_.load(std::memory_order_relaxed);  // only we write it
    // Acquire: see thieves' top advances, and so their slot reads, before
    // reusing a slot (steal()).
    const std::uint64_t w = shared_.load(std::memory_order_acquire);
    if (b - top_of(w) >= cap_) return false;
    slots_[b & mask_].store(gp, std::memory_order_relaxed);
    bottom_.store(b + 1, std::memory_order_relaxed);
    if (top_of(w) == split_) publish(b + 1);
    return true;
  }

  // pop(): take the newest entry; nullptr when empty or when a thief took
  // the last one.
  g* pop() noexcept {
    if (has_private()) [[likely]] return pop_newest_private();
    if (public_empty()) return nullptr;  // the common empty case: no call
    return take_back([](g*) { return true; });
  }

  // pop_newest_if(): pop the newest entry if match(entry) holds; returns
  // it, or nullptr when the deque is empty, match fails, or a thief took
  // the entry first. A public entry may be matched while a thief takes it
  // (and its G's fields change under match); only the claim decides who
  // gets it. Only the owner writes slots, so the slot read is stable.
  template <class Match>
  g* pop_newest_if(Match match) noexcept {
    if (has_private()) [[likely]] return pop_newest_private_if(match);
    if (public_empty()) return nullptr;
    return take_back(match);
  }

  // has_private(), public_empty(), pop_newest_private(),
  // pop_newest_private_if(): pop() and pop_newest_if() in steps, for a
  // caller that puts the taking back (a call) on a path of its own: the
  // pops are pop() and pop_newest_if() when has_private() holds.
  bool has_private() const noexcept { return bottom_.load(std::memory_order_relaxed) != split_; }
  // Relaxed: top == split_ is stable once seen (top never passes split,
  // and only we move split; our own stores to the word are the oldest
  // values a load may return); a stale top < split_ is decided by
  // take_back(), or, in pop_private(), puts a publication off to the next
  // push or pop.
  bool public_empty() const noexcept {
    return top_of(shared_.load(std::memory_order_relaxed)) == split_;
  }
  g* pop_newest_private() noexcept {
    const std::uint32_t b = bottom_.load(std::memory_order_relaxed);
    g* gp = slots_[(b - 1) & mask_].load(std::memory_order_relaxed);
    pop_private(b - 1);
    return gp;
  }
  template <class Match>
  g* pop_newest_private_if(Match match) noexcept {
    const std::uint32_t b = bottom_.load(std::memory_order_relaxed);
    g* gp = slots_[(b - 1) & mask_].load(std::memory_order_relaxed);
    if (!match(gp)) return nullptr;
    pop_private(b - 1);
    return gp;
  }

  // pop_if(): pop the newest entry if it is gp. False when the bottom entry
  // is another G, or a thief took gp.
  bool pop_if(g* gp) noexcept {
    return pop_newest_if([gp](g* e) { return e == gp; }) != nullptr;
  }

  // pop_oldest(): the oldest entry, public or not (the fairness turn: with
  // a task that keeps spawning, newest-first alone would keep the oldest
  // entries waiting for ever). nullptr when empty.
  g* pop_oldest() noexcept {
    for (;;) {
      std::uint64_t w = shared_.load(std::memory_order_acquire);
      const std::uint32_t t = top_of(w);
      if (t != split_of(w)) {
        g* gp = slots_[t & mask_].load(std::memory_order_relaxed);
        if (shared_.compare_exchange_strong(w, pack(t + 1, split_of(w)), std::memory_order_acq_rel,
                                            std::memory_order_relaxed))
          return gp;
        continue;  // a thief moved top
      }
      if (bottom_.load(std::memory_order_relaxed) == t) return nullptr;
      // The public part is empty: the oldest entry is the first private
      // one; top and split step over it together. No thief can claim
      // anything meanwhile (the top of the file), so a store does.
      g* gp = slots_[t & mask_].load(std::memory_order_relaxed);
      split_ = t + 1;
      shared_.store(pack(t + 1, t + 1), std::memory_order_release);
      return gp;
    }
  }

 private:
  static constexpr std::uint64_t pack(std::uint32_t top, std::uint32_t split) noexcept {
    return static_cast<std::uint64_t>(split) << 32 | top;
  }
  static constexpr std::uint32_t top_of(std::uint64_t w) noexcept {
    return static_cast<std::uint32_t>(w);
  }
  static constexpr std::uint32_t split_of(std::uint64_t w) noexcept {
    return static_cast<std::uint32_t>(w >> 32);
  }

  // publish(): with the public part empty (top == split_, seen by the
  // caller), make the older half of the private part [split_, b) public,
  // rounded up. The word is {split_, split_}: no thief's CAS can succeed
  // on it (each expects top < split), so a release store replaces it.
  void publish(std::uint32_t b) noexcept {
    const std::uint32_t s = split_ + (b - split_ + 1) / 2;
    shared_.store(pack(split_, s), std::memory_order_release);
    split_ = s;
  }

  // pop_private(): lower bottom to b (>= split_), the caller having read
  // the entry at b, and publish when thieves have emptied the public part
  // and private entries remain.
  void pop_private(std::uint32_t b) noexcept {
    bottom_.store(b, std::memory_order_relaxed);
    if (b != split_ && public_empty()) publish(b);
  }

  // take_back(): the private part is empty (bottom == split_); take the
  // newest public entry if match(it) holds. nullptr when the public part
  // is empty too, match fails, or thieves took the entries first. Out of
  // line: a call keeps the inline paths' register use down.
  template <class Match>
  [[gnu::noinline, gnu::cold]] g* take_back(Match match) noexcept {
    const std::uint32_t b = split_;  // == bottom
    std::uint64_t w = shared_.load(std::memory_order_acquire);
    for (;;) {
      const std::uint32_t t = top_of(w);
      if (t == b) return nullptr;  // empty
      g* gp = slots_[(b - 1) & mask_].load(std::memory_order_relaxed);
      if (!match(gp)) return nullptr;
      if (b - t == 1) {
        // The last entry: race the thieves for it on top itself. Then top,
        // split and bottom are all b.
        if (shared_.compare_exchange_weak(w, pack(t + 1, b), std::memory_order_acq_rel,
                                          std::memory_order_acquire))
          return gp;
        continue;  // w reloaded: a thief moved top
      }
      // Take the newer half back, leaving top's entry (at least) public.
      const std::uint32_t s = b - (b - t) / 2;
      if (shared_.compare_exchange_weak(w, pack(t, s), std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
        split_ = s;
        pop_private(b - 1);  // gp, now private
        return gp;
      }
    }
  }

  // shared_: {top, split}; the owner's line below it holds what only the
  // owner writes.
  alignas(64) std::atomic<std::uint64_t> shared_{0};
  alignas(64) std::atomic<std::uint32_t> bottom_{0};
  std::uint32_t split_ = 0;  // the owner's copy of split (exact)
  const std::uint32_t mask_;
  const std::uint32_t cap_;
  std::unique_ptr<std::atomic<g*>[]> slots_;
};

}  // namespace mpg::detail
