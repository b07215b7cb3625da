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
// push or a pop (thieves took everything it had published), except the
// pop of an inline join (pop_newest_private_if), whose path stays short:
// the next spawn publishes, or the scheduler's next pop. Publication
// costs the owner a load per operation and a CAS when it happens, i.e.
// per steal, not per task. A spawn that finds no public entry is
// published at once.
//
// Forced publication. A task that spawns and then computes for a long time
// without spawning, joining or suspending does not come back to its deque
// to publish; its later spawns would wait for it while another P idles.
// So sysmon publishes for it (force_publish(), sysmon.cpp): when a P's
// public part has stayed empty with private entries for a sample period
// while another P idles or spins, it moves split itself, over the older
// half of the private part. Its one race is with an owner's pop (or
// claim: take_private_if) lowering bottom into that half, settled as in
// Dekker's algorithm with an
// asymmetric barrier (process_barrier.hpp):
//   F1. forcing_ = true; process_barrier(); F2. load bottom; choose the
//       new split at most bottom; F3. CAS the word from {s, s} (the
//       public part still empty, split unmoved) to {s, new split};
//       F4. forcing_ = false (release).
//   O1. the owner's pop stores bottom - 1 (a claim: the index of the
//       oldest entry it claims); owner_barrier(); O2. loads forcing_
//       (acquire) and the word: if forcing_ is set, or split is not the
//       owner's copy, it undoes the store and does not take the entry (it
//       waits for forcing_ to clear, or gives up where a caller has a
//       fallback, and takes split from the word).
// Either F2 sees O1's bottom (and leaves the entries from it up private),
// or O2 sees
// F1 (and the owner takes nothing sysmon may publish), or F4's release;
// then the owner sees F3's split. The owner's other changes to the word
// are CASes, so F3 fails after any of them (and sysmon publishes nothing).
// The owner's pop pays a compiler barrier and two loads (forcing_ and the
// word, which it loaded anyway); sysmon a membarrier, once per stuck P and
// sample period at most.
//
// Taking back. When the private part is empty the owner takes the public
// part back: the newer half, by a CAS on the word that leaves the oldest
// entry public, or, with one entry left, that entry itself by the thieves'
// own CAS on top. A locked instruction, paid only when thieves left
// published work untaken.
//
// Roles are split by type as in run_queue.hpp: push, pop, pop_newest_if,
// pop_if, take_private_if and pop_oldest belong to the M holding the P
// (through run_queue::owner); steal(), size(), oldest_position() and the
// seq_cst probes may be called from any thread, force_publish() by one
// thread at a time (sysmon).
//
// Invariants (counters are uint32 and wrap; every comparison is of
// differences):
//   - top <= split <= bottom, bottom - top <= capacity. (A thief that
//     stalls between its load and its CAS while top moves on by exactly
//     2^32 could win with a stale slot read; Go's run queue takes the same
//     risk with its uint32 head.)
//   - top only moves forward, by CAS on shared_: thieves, and the owner
//     when it takes the last public entry or the oldest entry for a
//     fairness turn. Only the owner moves bottom. The owner moves split
//     both ways, sysmon only up (forced publication); split_ below is the
//     owner's copy, behind the word only after a forced publication, until
//     the owner reads the word again (O2 with forcing_ clear, push,
//     publish, pop_after_loss). The real split is never above bottom when
//     the owner looks, so with no private entries by split_ (bottom ==
//     split_), split_ is current.
//   - A pop lowers bottom before it knows it may (O1); until it undoes
//     that, bottom may be below split. A claim lowers it by up to its
//     max_scan entries, for a few instructions. Readers of bottom other
//     than the owner (size(), unpublished(), F2) tolerate it: a size()
//     snapshot may miss the entries hidden, and a spinning M's recheck
//     then miss work that the P's owner runs itself (parallelism lost for
//     a while, not progress, as for a wake missed after an own-P push:
//     scheduler.cpp).
//   - A slot is written only by the owner: at bottom, and only when
//     bottom - top < capacity for a top loaded after the last steal it can
//     have raced with; or between a claim's lowered bottom and its old one
//     (take_private_if), slots at or above split that no other thread reads
//     until the claim's release store of bottom. The owner never takes
//     the entry at top back into the private part (taking back leaves it
//     public), so the slot at top keeps its value until top moves past
//     it: a thief that read slot t and then wins its CAS with top still t
//     read the value published for t, however often split moved
//     meanwhile.
//
// Memory ordering, argued per operation:
//   publish  (owner) slot stores relaxed, then a CAS on shared_ acq_rel
//            (the taking back's too): a thief that acquires shared_ sees
//            every slot up to split and the spawn's set-up of its G.
//            Thieves' CASes are read-modify-writes, so they continue the
//            owner's release sequence.
//   forced   the owner stores bottom with release after a push's slot
//            store (and after a claim's slot stores); sysmon acquires
//            bottom (F2) and publishes with a CAS
//            acq_rel, so a thief that acquires the word sees those slots
//            too. forcing_: as in the protocol above.
//   steal    shared_ load acquire (pairs with publish), slot load relaxed,
//            CAS acq_rel: its release orders the slot read before the
//            owner's reuse of the slot, which acquires shared_ in push().
//   private  pops and claims at or above split: relaxed; no other thread reads those
//            slots, and bottom is read by others only for size() and F2.
// No seq_cst: the word decides every race but forced publication's, which
// process_barrier() decides. The seq_cst probes serve the parking protocol
// (scheduler.cpp), whose own-P pushes need no fence.
#pragma once

#include <sched.h>

#include <atomic>
#include <cassert>
#include <cstdint>
#include <memory>

#include "mpg/detail/sched/g.hpp"
#include "sched/process_barrier.hpp"

namespace mpg::detail {

class work_deque {
 public:
  explicit work_deque(std::uint32_t capacity)
      : mask_(capacity - 1), cap_(capacity), slots_(new std::atomic<g*>[capacity]) {
    for (std::uint32_t i = 0; i < capacity; ++i)
      slots_[i].store(nullptr, std::memory_order_relaxed);
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

  // unpublished(): from any thread, whether thieves have nothing to take
  // while private entries wait; *word gets the word, for sysmon's two
  // samples (equal words: no steal and no publication in between).
  bool unpublished(std::uint64_t* word) const noexcept {
    const std::uint64_t w = shared_.load(std::memory_order_acquire);
    *word = w;
    const std::uint32_t n = bottom_.load(std::memory_order_relaxed) - split_of(w);
    return top_of(w) == split_of(w) && n != 0 && n <= cap_;
  }

  // force_publish(): forced publication (the top of the file), by sysmon
  // only. True when it published entries. Does nothing where
  // process_barrier() is unavailable.
  bool force_publish() noexcept {
    const std::uint64_t w = shared_.load(std::memory_order_acquire);
    const std::uint32_t s = split_of(w);
    if (top_of(w) != s || !process_barrier_available()) return false;
    forcing_.store(true, std::memory_order_relaxed);  // F1; process_barrier() orders it
    process_barrier();
    // F2. Acquire: pairs with push's release store, so the slots below b
    // (and their Gs' set-up) are visible to us and, through F3's release,
    // to thieves.
    const std::uint32_t b = bottom_.load(std::memory_order_acquire);
    bool published = false;
    if (b != s && b - s <= cap_) {
      std::uint64_t expected = w;
      published = shared_.compare_exchange_strong(expected, pack(s, s + (b - s + 1) / 2),
                                                  std::memory_order_acq_rel,
                                                  std::memory_order_relaxed);  // F3
    }
    forcing_.store(false, std::memory_order_release);  // F4
    return published;
  }

  // Owner side (only through run_queue::owner).

  // push(): false when full (the caller queues the G elsewhere). *index,
  // when given, gets the entry's position modulo 2^16 (take_private_if's
  // hint), before the entry is published; also when the push fails.
  bool push(g* gp, std::uint16_t* index = nullptr) noexcept {
    const std::uint32_t b = bottom_.load(std::memory_order_relaxed);  // only we write it
    if (index != nullptr) *index = static_cast<std::uint16_t>(b);
    // Acquire: see thieves' top advances, and so their slot reads, before
    // reusing a slot (steal()).
    const std::uint64_t w = shared_.load(std::memory_order_acquire);
    if (b - top_of(w) >= cap_) return false;
    slots_[b & mask_].store(gp, std::memory_order_relaxed);
    // Release: for forced publication's F2.
    bottom_.store(b + 1, std::memory_order_release);
    split_ = split_of(w);  // behind only after a forced publication
    if (top_of(w) == split_) publish(w, b + 1);
    return true;
  }

  // pop(): take the newest entry; nullptr when empty or when a thief took
  // the last one.
  g* pop() noexcept { return pop_newest_if([](g*) { return true; }); }

  // pop_newest_if(): pop the newest entry if match(entry) holds; returns
  // it, or nullptr when the deque is empty, match fails, or a thief took
  // the entry first. A public entry is matched before the claim, while a
  // thief may be taking it (and its G may be reused under match), so match
  // must read only the G's atomic fields; only the claim decides who gets
  // it (a private entry is matched after its claim). Only the owner writes
  // slots, so the slot read is stable.
  template <class Match>
  g* pop_newest_if(Match match) noexcept {
    if (has_private()) [[likely]] {
      bool lost = false;
      if (g* gp = try_pop_private(match, &lost); !lost) [[likely]] return gp;
      return pop_after_loss(match);
    }
    if (public_empty()) return nullptr;  // the common empty case: no call
    return take_back(match);
  }

  // pop_if(): pop the newest entry if it is gp. False when the bottom entry
  // is another G, or a thief took gp.
  bool pop_if(g* gp) noexcept {
    return pop_newest_if([gp](g* e) { return e == gp; }) != nullptr;
  }

  // has_private(), public_empty(), pop_newest_private(),
  // pop_newest_private_if(): pop() and pop_newest_if() in steps, for a
  // caller that puts whatever makes a call on a path of its own: with
  // has_private() they are pop() and pop_newest_if(), except that they
  // also return nullptr where those would make a call: when the public
  // part must be taken back, or the pop lost its entry to a forced
  // publication (O2). The entry then stays in the deque, for pop().
  // pop_newest_private_if() does not publish (the inline join's pop: the
  // top of the file); pop_newest_private() does.
  bool has_private() const noexcept { return bottom_.load(std::memory_order_relaxed) != split_; }
  // Called with bottom == split_ (then split_ is current: the
  // invariants), or, in lower_bottom(), with split_ just checked against
  // the word. Relaxed: top == split_ is stable once seen (top never passes
  // split, and only we move split down); a stale top < split_ is decided
  // by take_back(), or, in lower_bottom(), puts a publication off to the
  // next push or pop.
  bool public_empty() const noexcept {
    return top_of(shared_.load(std::memory_order_relaxed)) == split_;
  }
  g* pop_newest_private() noexcept {
    bool lost = false;
    return try_pop_private([](g*) { return true; }, &lost);
  }
  template <class Match>
  g* pop_newest_private_if(Match match) noexcept {
    bool lost = false;
    return try_pop_private</*kPublish=*/false>(match, &lost);
  }

  // take_private_if(): a join's child that is private but not the newest
  // entry: the first join of a task that joins its children in the order
  // it spawned them. Among the newest max_scan private entries, find the
  // newest for which find(entry) holds; find may read only the G's atomic
  // fields, since before the claim an entry may have gone public by a
  // forced publication (split_ behind) and been stolen. The entry at the
  // position hint, modulo 2^16 (where push() put the child, if it did), is
  // looked at first: find is true of one entry at most (a join's find
  // matches a G id), so when it holds there, the scan would stop there
  // too; when the entry has moved (a reversal below) or gone, or the hint
  // is not a position at all, the scan runs. Then claim that
  // entry and every newer one at once, as a pop claims the newest
  // (lower_to(): O1 and O2 with bottom lowered to the entry's index), check
  // match on the entry (ours then), reverse the claimed entries in place
  // and pop the bottom one, which is the entry found. nullptr when nothing
  // is found, the claim loses to a forced publication, or match fails: the
  // deque is then as it was.
  // The reversal leaves the entry spawned right after the one taken at the
  // bottom, so that joins in spawn order find each next child there and
  // take it with the newest-first pop; spawned Gs have no order among them
  // that the owner's end must keep. Sound for the same reason as a pop:
  // during the claim bottom is at the entry's index, so a forced
  // publication stops below it (or O2 sees it and the claim backs off),
  // and thieves take only below split. The slots rewritten are all in the
  // claimed part, and the release store of bottom that ends the claim
  // carries them to F2.
  template <class Find, class Match>
  g* take_private_if(Find find, Match match, std::uint32_t max_scan,
                     std::uint16_t hint) noexcept {
    const std::uint32_t b = bottom_.load(std::memory_order_relaxed);  // only we write it
    const std::uint32_t n = b - split_ < max_scan ? b - split_ : max_scan;
    std::uint32_t i = b;
    // The hint's distance below the newest entry, modulo 2^16: among the
    // newest n when below n (n <= max_scan, far below 2^16, so the
    // position is b - 1 - d itself).
    const std::uint32_t d = static_cast<std::uint16_t>(b - 1u - hint);
    if (d < n && find(slots_[(b - 1 - d) & mask_].load(std::memory_order_relaxed))) {
      i = b - 1 - d;
    } else {
      for (std::uint32_t k = 1; k <= n; ++k) {
        if (find(slots_[(b - k) & mask_].load(std::memory_order_relaxed))) {
          i = b - k;
          break;
        }
      }
    }
    std::uint64_t w = 0;
    if (i == b || !lower_to(i, b, &w)) return nullptr;
    g* gp = slots_[i & mask_].load(std::memory_order_relaxed);
    // i == top: the entry is the oldest of all, with nothing public. The
    // reversal would put another entry in its slot with top unmoved, which
    // oldest_position() promises not to do; leave it.
    if (i == top_of(w) || !match(gp)) {
      bottom_.store(b, std::memory_order_release);  // release: as push's
      return nullptr;
    }
    // The array and mask in locals: the compiler reloads members after
    // each atomic store otherwise.
    std::atomic<g*>* const slots = slots_.get();
    const std::uint32_t mask = mask_;
    for (std::uint32_t lo = i, hi = b - 1; lo < hi; ++lo, --hi) {
      g* x = slots[lo & mask].load(std::memory_order_relaxed);
      slots[lo & mask].store(slots[hi & mask].load(std::memory_order_relaxed),
                             std::memory_order_relaxed);
      slots[hi & mask].store(x, std::memory_order_relaxed);
    }
    // Release: F2 may read this bottom; the rewritten slots must be seen
    // with it.
    bottom_.store(b - 1, std::memory_order_release);
    return gp;
  }

  // pop_oldest(): the oldest entry, public or not (the fairness turn: with
  // a task that keeps spawning, newest-first alone would keep the oldest
  // entries waiting for ever). nullptr when empty.
  g* pop_oldest() noexcept {
    std::uint64_t w = shared_.load(std::memory_order_acquire);
    for (;;) {
      const std::uint32_t t = top_of(w);
      const std::uint32_t s = split_of(w);
      if (t == s && bottom_.load(std::memory_order_relaxed) == t) return nullptr;
      // The oldest entry: public (top moves past it), or, with the public
      // part empty, the first private one (top and split step over it).
      g* gp = slots_[t & mask_].load(std::memory_order_relaxed);
      const std::uint64_t next = t != s ? pack(t + 1, s) : pack(t + 1, t + 1);
      if (shared_.compare_exchange_weak(w, next, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
        split_ = split_of(next);
        return gp;
      }
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

  // publish(): with the public part empty (w = {split_, split_}, seen by
  // the caller), make the older half of the private part [split_, b)
  // public, rounded up. A CAS: no thief's can succeed on such a word (each
  // expects top < split), but a forced publication may come first; then
  // ours fails, and split_ follows the word.
  void publish(std::uint64_t w, std::uint32_t b) noexcept {
    const std::uint32_t s = split_ + (b - split_ + 1) / 2;
    if (shared_.compare_exchange_strong(w, pack(split_, s), std::memory_order_acq_rel,
                                        std::memory_order_acquire))
      split_ = s;
    else
      split_ = split_of(w);
  }

  // lower_bottom(): bottom from b + 1 to b (>= split_), the caller having
  // read the entry at b: O1 and O2 of forced publication (lower_to()), then
  // a publication when thieves have emptied the public part and private
  // entries remain. False, with bottom back at b + 1, when a forced
  // publication is under way or has moved split (then split_ follows it).
  template <bool kPublish = true>
  [[gnu::always_inline]] bool lower_bottom(std::uint32_t b) noexcept {
    std::uint64_t w = 0;
    if (!lower_to(b, b + 1, &w)) return false;
    if constexpr (kPublish) {
      if (b != split_ && top_of(w) == split_) publish(w, b);
    }
    return true;
  }

  // lower_to(): O1 and O2 of forced publication for a claim of the entries
  // [i, b): bottom from b to i (>= split_), or back to b, false, when a
  // forced publication is under way or has moved split (then split_
  // follows it). *w: the word as the claim found it. A pop claims one
  // entry (lower_bottom()); take_private_if() claims several at once.
  [[gnu::always_inline]] bool lower_to(std::uint32_t i, std::uint32_t b,
                                       std::uint64_t* w) noexcept {
    // O1. Release, as every store of bottom: F2 may read this one, and a
    // later relaxed store would not carry a push's release on to F2
    // (release sequences are made of read-modify-writes only).
    bottom_.store(i, std::memory_order_release);
    owner_barrier();
    // O2. Acquire on forcing_: pairs with F4, so that a clear flag written
    // by F4 shows F3's word.
    if (forcing_.load(std::memory_order_acquire)) [[unlikely]] {
      bottom_.store(b, std::memory_order_release);
      return false;
    }
    *w = shared_.load(std::memory_order_relaxed);
    if (split_of(*w) != split_) [[unlikely]] {
      bottom_.store(b, std::memory_order_release);
      split_ = split_of(*w);
      return false;
    }
    return true;
  }

  // try_pop_private(): the newest entry when it is private, no forced
  // publication takes it (*lost then) and match(it) holds. match runs
  // after the claim, on an entry that is ours (after a forced publication
  // split_ may be behind, and the entry stolen and its G reused, until the
  // claim says otherwise); on a mismatch the entry goes back, private
  // still (a publication in lower_bottom() stops below it).
  template <bool kPublish = true, class Match>
  g* try_pop_private(Match match, bool* lost) noexcept {
    const std::uint32_t b = bottom_.load(std::memory_order_relaxed) - 1;
    g* gp = slots_[b & mask_].load(std::memory_order_relaxed);
    if (!lower_bottom<kPublish>(b)) [[unlikely]] {
      *lost = true;
      return nullptr;
    }
    if (!match(gp)) {
      bottom_.store(b + 1, std::memory_order_release);  // release: as push's
      return nullptr;
    }
    return gp;
  }

  // pop_after_loss(): pop_newest_if() after a pop lost to a forced
  // publication: wait for it to end, take split from the word, and start
  // over.
  template <class Match>
  [[gnu::noinline, gnu::cold]] g* pop_after_loss(Match match) noexcept {
    // A membarrier's time, unless sysmon is preempted mid-way: then give
    // the CPU to it.
    for (int spins = 0; forcing_.load(std::memory_order_acquire); ++spins) {
      if (spins >= 64) {
        sched_yield();
      } else {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
      }
    }
    split_ = split_of(shared_.load(std::memory_order_acquire));
    // pop_newest_if()'s steps, written out: a call of it here changed g++'s
    // inlining of the pops (fib 542 -> 554 instructions per task).
    if (!has_private()) return public_empty() ? nullptr : take_back(match);
    bool lost = false;
    g* gp = try_pop_private(match, &lost);
    return lost ? pop_after_loss(match) : gp;
  }

  // take_back(): the private part is empty (bottom == split_); take the
  // newest public entry if match(it) holds. nullptr when the public part
  // is empty too, match fails, or thieves took the entries first. Out of
  // line: a call keeps the inline paths' register use down.
  template <class Match>
  [[gnu::noinline, gnu::cold]] g* take_back(Match match) noexcept {
    const std::uint32_t b = split_;  // == bottom
    std::uint64_t w = shared_.load(std::memory_order_acquire);
    // Sysmon publishes only below bottom, and only private entries: with
    // none, split is ours.
    assert(split_of(w) == b);
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
        // The public part is not empty (top's entry), so no forced
        // publication can start (force_publish() wants it empty) until a
        // thief empties it; lower_bottom() settles that race.
        if (lower_bottom(b - 1)) return gp;
        return pop_after_loss(match);
      }
    }
  }

  // shared_: {top, split}; forcing_ beside it (both read by every pop);
  // the owner's line below holds what only the owner writes.
  alignas(64) std::atomic<std::uint64_t> shared_{0};
  std::atomic<bool> forcing_{false};
  alignas(64) std::atomic<std::uint32_t> bottom_{0};
  std::uint32_t split_ = 0;  // the owner's copy of split
  const std::uint32_t mask_;
  const std::uint32_t cap_;
  std::unique_ptr<std::atomic<g*>[]> slots_;
};

}  // namespace mpg::detail
