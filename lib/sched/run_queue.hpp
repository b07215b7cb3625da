// lib/sched/run_queue.hpp: a P's local run queue and runnext slot (Go's runq),
// and its deque of spawned Gs (work_deque.hpp).
//
// Three places, popped by the owner in this order:
//   runnext  a G readied by the running G (inherits the time slice);
//   spawns   spawned Gs that have never run, newest first (work-first
//            fork-join: work_deque.hpp);
//   queue    the FIFO ring below: yields, Gs readied by I/O, timers and
//            wake-all paths, overflow from spawns, batches from the global
//            queue and from thieves.
// A task that keeps spawning could keep the FIFO ring, and the oldest
// spawned Gs, waiting behind the newest spawns; on every 61st tick the
// scheduler pops the ring's head first (find_runnable.cpp), as Go does for
// the global queue, and, failing that, the oldest spawned G once it has
// waited at the deque's old end for kOldestSpawnWait (sysmon.cpp).
//
// The FIFO ring:
// A fixed ring of `capacity` slots (a power of two; 256 by default, tests
// shrink it) with a single producer, the M that holds the P, and many
// consumers: the owner pops from the head, and thieves steal half of the
// queue from the head as well. Roles are split in the interface: the
// owner_* functions may only be called by the M holding the P; steal_into()
// and the size/empty probes may be called from any thread.
//
// Invariants:
//   - head and tail are free-running uint32 counters; tail - head is the
//     number of queued Gs and never exceeds capacity.
//   - Only the owner writes tail (store-release, so a consumer that loads
//     tail with acquire sees the slot contents written before it).
//   - head only moves forward by CAS. A consumer reads the slots first and
//     then CASes head: if the CAS succeeds, nobody can have overwritten the
//     slots meanwhile, because the owner writes slot i only when
//     i - head < capacity, i.e. after head moved past its previous use.
//   - runnext holds at most one G, readied by the running G; the owner pops
//     it before the queue. Thieves take it only when the owner is not
//     running a G that is about to pop it (see steal_into()).
//
// Taking runnext. Only the owner puts a G in the slot; the owner and
// thieves take it out. A thief takes runnext rarely (only when sysmon
// finds the P stuck behind one G, or left unheld: find_runnable.cpp),
// while the owner takes it at every hand-off (a ping-pong pair takes it
// twice per round trip). So the owner takes it with plain loads and
// stores, and the two sides settle their one race as in Dekker's
// algorithm with an asymmetric barrier (process_barrier.hpp), as the
// spawn deque's forced publication does (work_deque.hpp):
//   R1. taking_ = true; owner_barrier();
//   R2. if stealers_ == 0 (acquire): load the slot, store null, and
//       R3. taking_ = false (release): the G is the owner's. Otherwise
//       taking_ = false (release) and the owner takes the slot by CAS, as
//       a thief.
//   T1. stealers_ += 1; process_barrier();
//   T2. if !taking_ (acquire): load the slot and CAS it from that G to
//       null; T3. stealers_ -= 1 (release).
// Either R2 sees T1 (or a later count) or T2 sees R1 (or a later value),
// because process_barrier() puts a full barrier on the owner's thread
// between T1 and T2. If R2 reads 0 it read T1's count before it or, after
// T3, a count whose release makes the thief's CAS visible to the load
// that follows (the slot is then empty, or holds a G put since); T2 then
// reads true, or a false that the owner stored with release after its
// last plain take's null store (R3, or the start of a CAS take), so the
// thief sees that store. So a thief never CASes a slot that the
// owner empties with its plain store, and where both may take, both use
// CAS. stealers_ counts, so that one thief's T3 does not hide another
// still between T1 and T3. Where process_barrier() is unavailable (Linux
// before 4.14, or a seccomp filter), the count never drops to 0, and the
// owner always takes by CAS.
// The owner's put needs no barrier: a thief's CAS expects a G it saw, so
// it fails on a slot the owner refilled, and succeeds only on a G that
// is in the slot, which a thief may take.
//
// Memory ordering: slots are relaxed atomics (their ordering comes from
// head/tail as argued above). runnext is filled by its owner alone, with
// a release store into an empty slot or an acq_rel exchange over a G
// (owner::put_runnext), and emptied by the owner's plain store (its own
// G: no order needed) or by an acquire CAS (a thief's, or the owner's
// contended take), which pairs with the put's release.
#pragma once

#include <atomic>
#include <cassert>
#include <cstdint>
#include <memory>

#include "mpg/detail/sched/g.hpp"
#include "sched/process_barrier.hpp"
#include "sched/work_deque.hpp"

namespace mpg::detail {

class machine;

// Where make_runnable()/local_put() put a G: at the tail of the queue, or,
// for a freshly spawned G that has never run, at the bottom of the spawn
// deque. (ready() puts a G in the runnext slot itself: scheduler.cpp.)
enum class queue_slot : std::uint8_t { tail, spawn };
// Whether owner::pop() may take the runnext G (skip: a runnext chain has
// kept the slot long enough; the queue's head goes first).
enum class runnext_policy : std::uint8_t { take, skip };

class run_queue {
 public:
  class owner;

  explicit run_queue(std::uint32_t capacity)
      : cap_(capacity),
        mask_(capacity - 1),
        slots_(new std::atomic<g*>[capacity]),
        spawns_(capacity) {
    for (std::uint32_t i = 0; i < capacity; ++i)
      slots_[i].store(nullptr, std::memory_order_relaxed);
  }

  std::uint32_t capacity() const noexcept { return cap_; }

  // steal_into(): a thief moves half of this queue into its own queue
  // (through its owner side, so only the M holding the thief's P can steal
  // into it; that queue must have room for capacity/2). Returns
  // one stolen G to run at once (not placed in dst), or nullptr.
  // With the FIFO ring empty it takes the oldest spawned G instead (one:
  // in a fork-join tree that is the biggest piece of work left).
  // runnext == take: also take the runnext G when both are empty (a
  // process_barrier(), microseconds: for the rare callers that sysmon
  // lets take it).
  g* steal_into(owner thief, runnext_policy runnext, std::uint32_t* count) noexcept;


  // size(): a snapshot from any thread (queue, spawns and runnext).
  std::uint32_t size() const noexcept {
    const std::uint32_t h = head_.load(std::memory_order_acquire);
    const std::uint32_t t = tail_.load(std::memory_order_acquire);
    std::uint32_t n = t - h;
    if (n > cap_) n = 0;  // torn snapshot
    return n + spawns_.size() + (runnext_.load(std::memory_order_relaxed) != nullptr ? 1 : 0);
  }
  // empty_seq_cst(): the recheck of the parking protocol (seq_cst loads).
  bool empty_seq_cst() const noexcept {
    return head_.load(std::memory_order_seq_cst) == tail_.load(std::memory_order_seq_cst) &&
           spawns_.empty_seq_cst() && runnext_.load(std::memory_order_seq_cst) == nullptr;
  }
  // surplus_seq_cst(): two or more Gs queued (ring, spawns and runnext;
  // seq_cst loads), i.e. work beyond the one G the P's holder takes next:
  // the spinner's recheck (P3, scheduler.cpp).
  bool surplus_seq_cst() const noexcept {
    const std::uint32_t h = head_.load(std::memory_order_seq_cst);
    const std::uint32_t t = tail_.load(std::memory_order_seq_cst);
    const std::uint32_t n = t - h;
    if (n > cap_) return true;  // torn snapshot: count it as work
    return n + spawns_.size_seq_cst() +
               (runnext_.load(std::memory_order_seq_cst) != nullptr ? 1 : 0) >=
           2;
  }
  bool has_runnext() const noexcept { return runnext_.load(std::memory_order_relaxed) != nullptr; }
  // taken_mark(): from any thread, a value that changes whenever a G
  // leaves the ring's head or the spawn deque's old end (a steal, or a pop
  // other than the owner's from the deque's new end). A P that nobody
  // holds has no owner, so nothing arrives and every G leaves that way or
  // from runnext (has_runnext()): equal marks and runnext on two samples
  // mean no G left in between (thread_limit.cpp). Relaxed: counters
  // sampled, ordering nothing.
  std::uint64_t taken_mark() const noexcept {
    const std::uint64_t head = head_.load(std::memory_order_relaxed);
    return head << 32 | static_cast<std::uint32_t>(spawns_.oldest_position());
  }
  // force_publish_spawns(): sysmon's forced publication of this P's
  // private spawns (work_deque.hpp); true when it published some.
  bool force_publish_spawns() noexcept { return spawns_.force_publish(); }
  // spawns(): the deque of spawned Gs, for the probes any thread may make
  // (size(), oldest_position(), unpublished()).
  const work_deque& spawns() const noexcept { return spawns_; }

 private:
  g* steal_runnext() noexcept;
  // cas_runnext(): the slot's G taken by CAS (a thief's, or the owner's
  // contended take), or nullptr if it is empty or another took it first.
  // Acquire on success: pairs with the put's release (a release store or
  // exchange, which a failed CAS does not break).
  g* cas_runnext() noexcept {
    g* next = runnext_.load(std::memory_order_relaxed);
    if (next != nullptr &&
        runnext_.compare_exchange_strong(next, nullptr, std::memory_order_acquire,
                                         std::memory_order_relaxed))
      return next;
    return nullptr;
  }

  alignas(64) std::atomic<std::uint32_t> head_{0};
  alignas(64) std::atomic<std::uint32_t> tail_{0};
  std::atomic<g*> runnext_{nullptr};
  // "Taking runnext": whether process_barrier() works here, the owner's
  // flag (R1-R3) and the thieves' count (T1-T3). Where process_barrier()
  // is unavailable the count starts at 1, a thief that never leaves, so
  // that the owner always takes by CAS. Beside runnext_: the owner
  // touches them together.
  const bool asymmetric_ = process_barrier_available();
  std::atomic<bool> taking_{false};
  std::atomic<std::uint32_t> stealers_{asymmetric_ ? 0u : 1u};
  const std::uint32_t cap_;
  const std::uint32_t mask_;
  std::unique_ptr<std::atomic<g*>[]> slots_;
  work_deque spawns_;
};


// run_queue::owner: the producer side of a P's queue. Only the M that holds
// the P makes one (machine::local_runq()); it is a view, cheap to copy
// within that M's stack, and must not outlive the M's hold on the P.
class run_queue::owner {
 public:
  run_queue& queue() const noexcept { return *q_; }

  // push_tail(): append gp. Returns false when the ring is full; the
  // caller then moves half of it to the global queue (take_half()).
  bool push_tail(g* gp) noexcept {
    // Acquire: we must see consumers' head advances before reusing slots.
    const std::uint32_t h = q_->head_.load(std::memory_order_acquire);
    const std::uint32_t t = q_->tail_.load(std::memory_order_relaxed);  // only we write it
    if (t - h >= q_->cap_) return false;
    q_->slots_[t & q_->mask_].store(gp, std::memory_order_relaxed);
    // Release: publishes the slot to consumers that acquire tail.
    q_->tail_.store(t + 1, std::memory_order_release);
    return true;
  }

  // push_tail_chain(): append the n Gs linked from first through g::link,
  // in that order, publishing them with one tail store. The caller has
  // made sure they fit (n <= free_slots()). Returns the G after the last
  // one appended (first's chain continues there).
  g* push_tail_chain(g* first, std::uint32_t n) noexcept {
    const std::uint32_t t = q_->tail_.load(std::memory_order_relaxed);  // only we write it
    // Acquire, as in push_tail(): the caller's free_slots() saw consumers'
    // head advances before these slots are reused; this load orders them
    // here too.
    [[maybe_unused]] const std::uint32_t h = q_->head_.load(std::memory_order_acquire);
    assert(t - h + n <= q_->cap_);
    g* gp = first;
    for (std::uint32_t i = 0; i < n; ++i) {
      q_->slots_[(t + i) & q_->mask_].store(gp, std::memory_order_relaxed);
      gp = gp->link;
    }
    // Release: publishes the slots to consumers that acquire tail.
    q_->tail_.store(t + n, std::memory_order_release);
    return gp;
  }

  // free_slots(): how many push_tail() calls succeed from now on, at least
  // (only we push; consumers only ever make room).
  std::uint32_t free_slots() const noexcept {
    // Acquire, as in push_tail(): a head value no older than the one
    // push_tail() would see.
    const std::uint32_t h = q_->head_.load(std::memory_order_acquire);
    const std::uint32_t t = q_->tail_.load(std::memory_order_relaxed);  // only we write it
    return q_->cap_ - (t - h);
  }

  // put_runnext(): make gp the next G to run; returns the G it
  // displaced (to be pushed at the tail), or nullptr.
  //
  // An empty slot takes gp with a plain store: only the owner (we) puts a
  // G there, and thieves only take one out (a CAS from the G they saw to
  // null), so a slot we see empty stays empty until we fill it. The load
  // may be stale only towards a G a thief has taken since: then the
  // exchange below runs and returns null. Release (both paths): gp's
  // fields written before (its resume point and status) reach a thief
  // whose CAS acquires it. Neither path is a StoreLoad barrier of the
  // parking protocol, and neither needs one: a G alone in runnext is its
  // holder's next and needs no wake, and a displaced G takes an own-P push
  // onto the ring, whose S2 has no fence (scheduler.cpp, "Runnext
  // hand-offs" and "Own-P pushes"). The common case, a G readied into an
  // empty slot (every hand-off of a ping-pong pair), so costs no locked
  // instruction.
  g* put_runnext(g* gp) noexcept {
    if (q_->runnext_.load(std::memory_order_relaxed) == nullptr) [[likely]] {
      q_->runnext_.store(gp, std::memory_order_release);
      return nullptr;
    }
    return q_->runnext_.exchange(gp, std::memory_order_acq_rel);
  }

  // push_spawn(): a freshly spawned G at the bottom of the spawn deque.
  // False when the deque is full (the caller pushes it at the tail).
  // *index, when given, gets its position modulo 2^16, before the push
  // publishes the G (take_private_spawn_if's hint).
  bool push_spawn(g* gp, std::uint16_t* index = nullptr) noexcept {
    return q_->spawns_.push(gp, index);
  }

  // take_newest_spawn_if(): pop the newest spawned G if match(it) holds
  // (a join running its child inline); nullptr otherwise. A thief may race
  // us for it; one side gets it (work_deque.hpp, pop_newest_if).
  template <class Match>
  g* take_newest_spawn_if(Match match) noexcept { return q_->spawns_.pop_newest_if(match); }
  // spawns_private(), take_newest_private_spawn_if(): the same in two
  // steps (work_deque.hpp, has_private): whether the newest spawned G is in
  // the deque's private part, and, if so, take_newest_spawn_if() without
  // the call that taking entries back from the public part makes. Here
  // match runs once the entry is claimed (the G is ours then), and a
  // mismatch puts it back (work_deque.hpp, try_pop_private).
  bool spawns_private() const noexcept { return q_->spawns_.has_private(); }
  template <class Match>
  g* take_newest_private_spawn_if(Match match) noexcept {
    return q_->spawns_.pop_newest_private_if(match);
  }
  // take_private_spawn_if(): a private spawned G among the newest max_scan
  // (work_deque.hpp, take_private_if): a child under younger siblings,
  // looked for first at hint, the position push_spawn() gave it.
  template <class Find, class Match>
  g* take_private_spawn_if(Find find, Match match, std::uint32_t max_scan,
                           std::uint16_t hint) noexcept {
    return q_->spawns_.take_private_if(find, match, max_scan, hint);
  }

  // pop_oldest_spawn(): the oldest spawned G (the thieves' end), for the
  // fairness turn: with a task that keeps spawning, the newest-first order
  // alone would keep the oldest entries waiting for ever.
  g* pop_oldest_spawn() noexcept { return q_->spawns_.pop_oldest(); }

  // pop(): runnext first (unless skip), then the newest spawned G, then the
  // head of the ring, then (under skip) runnext. *from_runnext tells
  // whether it was runnext.
  // Forced inline with clang only: clang 16 left it out of line in the
  // M's loop (yield_ping 135 -> 170 instructions per switch), while g++ 12
  // inlines it where it pays and forcing it everywhere cost g++ 8 on
  // yield_ping and 11 on pingpong (callgrind, perf/callgrind.py).
#if defined(__clang__)
  [[gnu::always_inline]]
#endif
  g* pop(runnext_policy policy, bool* from_runnext) noexcept {
    return pop_in_order<false>(policy, from_runnext);
  }
  // pop_switch(): pop() for the switches at finish and at park
  // (scheduler.cpp), inlined into hot paths that should make no call: also
  // nullptr when the newest spawned Gs are public, since taking them back
  // is a call (work_deque.hpp); the M's loop then pops them.
  [[gnu::always_inline]] g* pop_switch(runnext_policy policy, bool* from_runnext) noexcept {
    return pop_in_order<true>(policy, from_runnext);
  }

 private:
  template <bool kSwitch>
  [[gnu::always_inline]] g* pop_in_order(runnext_policy policy, bool* from_runnext) noexcept {
    *from_runnext = false;
    if (policy == runnext_policy::take) {
      if (g* next = take_runnext()) {
        *from_runnext = true;
        return next;
      }
    }
    if constexpr (kSwitch) {
      if (q_->spawns_.has_private()) return q_->spawns_.pop_newest_private();
      if (!q_->spawns_.public_empty()) return nullptr;
    } else {
      if (g* gp = q_->spawns_.pop()) return gp;
    }
    if (g* gp = pop_fifo()) return gp;
    if (policy == runnext_policy::skip) {
      if (g* next = take_runnext_last()) {
        *from_runnext = true;
        return next;
      }
    }
    return nullptr;
  }

 public:
  // pop_fifo(): the head of the ring only (the fairness turn).
  g* pop_fifo() noexcept {
    for (;;) {
      std::uint32_t h = q_->head_.load(std::memory_order_acquire);
      const std::uint32_t t = q_->tail_.load(std::memory_order_relaxed);
      if (t == h) return nullptr;
      g* gp = q_->slots_[h & q_->mask_].load(std::memory_order_relaxed);
      // Release: our read of the slot happens before the owner (us) or a
      // later push reuses it; acquire: see other consumers' reads likewise.
      if (q_->head_.compare_exchange_weak(h, h + 1, std::memory_order_acq_rel,
                                      std::memory_order_relaxed))
        return gp;
    }
  }

  // take_half(): remove half of the queued Gs (for overflow to the
  // global queue). Writes them into out[] and returns how many (0 if a
  // consumer raced us; the caller retries the push).
  std::uint32_t take_half(g** out) noexcept {
    std::uint32_t h = q_->head_.load(std::memory_order_acquire);
    const std::uint32_t t = q_->tail_.load(std::memory_order_relaxed);
    const std::uint32_t n = (t - h) / 2;
    if (n == 0) return 0;
    for (std::uint32_t i = 0; i < n; ++i)
      out[i] = q_->slots_[(h + i) & q_->mask_].load(std::memory_order_relaxed);
    if (!q_->head_.compare_exchange_strong(h, h + n, std::memory_order_acq_rel,
                                           std::memory_order_relaxed))
      return 0;
    return n;
  }

  // take_runnext(): empty the runnext slot; its G or nullptr. The owner's
  // side of "Taking runnext" (the top of the file): R1-R3, or the CAS
  // where a thief may be between T1 and T3 or process_barrier() is
  // unavailable. Forced inline: the switches at park and at finish take
  // runnext on every hand-off.
  [[gnu::always_inline]] g* take_runnext() noexcept {
    if (q_->runnext_.load(std::memory_order_relaxed) == nullptr) return nullptr;
    q_->taking_.store(true, std::memory_order_relaxed);  // R1
    owner_barrier();
    // R2. Acquire: pairs with T3, so that the slot load below sees a steal
    // that ended before (the slot is then empty). Never 0 where
    // process_barrier() is unavailable (stealers_'s initial count).
    if (q_->stealers_.load(std::memory_order_acquire) == 0) [[likely]] {
      // Reloaded: the G seen above may have been stolen before R1.
      g* next = q_->runnext_.load(std::memory_order_relaxed);
      q_->runnext_.store(nullptr, std::memory_order_relaxed);
      // R3. Release: a thief whose T2 reads this false sees the slot
      // emptied.
      q_->taking_.store(false, std::memory_order_release);
      return next;
    }
    return take_runnext_contended();
  }
  // take_runnext_last(): take_runnext() out of line, for pop_in_order's
  // rare last step (a runnext streak's skip), so that the paths that
  // inline pop_in_order carry one copy of it.
  [[gnu::noinline]] g* take_runnext_last() noexcept { return take_runnext(); }
  // take_runnext_contended(): R2's other way, a take by CAS (a thief
  // may be taking too, by CAS: one wins), and the take where
  // process_barrier() is unavailable. Out of line: rare.
  [[gnu::noinline]] g* take_runnext_contended() noexcept {
    // Release, as R3: a thief whose T2 reads this false must also see the
    // null store of our last plain take (a plain x86 store either way).
    q_->taking_.store(false, std::memory_order_release);
    return q_->cas_runnext();
  }

 private:
  friend class machine;
  friend class run_queue;
  friend struct run_queue_test_access;  // test/run_queue_tests.cpp
  explicit owner(run_queue& q) noexcept : q_(&q) {}
  run_queue* q_;
};

// steal_runnext(): the thief's side of "Taking runnext" (the top of the
// file): T1-T3, after a cheap look. The runnext G, or nullptr.
inline g* run_queue::steal_runnext() noexcept {
  if (runnext_.load(std::memory_order_relaxed) == nullptr) return nullptr;
  // T1. Relaxed: process_barrier() orders it before T2 for every thread,
  // the owner's included. (Where it is unavailable the owner takes by CAS,
  // and the count only sends it there.)
  stealers_.fetch_add(1, std::memory_order_relaxed);
  if (asymmetric_) process_barrier();
  // T2. Acquire: pairs with R3, so a false from the owner's last take
  // comes with its emptied slot.
  g* const next = taking_.load(std::memory_order_acquire) ? nullptr : cas_runnext();
  // T3. Release: an owner's R2 that reads the count it leaves sees our CAS.
  stealers_.fetch_sub(1, std::memory_order_release);
  return next;
}

inline g* run_queue::steal_into(owner thief, runnext_policy runnext,
                                std::uint32_t* count) noexcept {
  *count = 0;
  run_queue& dst = *thief.q_;
  const std::uint32_t dt = dst.tail_.load(std::memory_order_relaxed);  // dst's owner is us
  for (;;) {
    std::uint32_t h = head_.load(std::memory_order_acquire);
    const std::uint32_t t = tail_.load(std::memory_order_acquire);  // pairs with owner's release
    std::uint32_t n = t - h;
    n = n - n / 2;
    if (n == 0) {
      if (g* gp = spawns_.steal()) {
        *count = 1;
        return gp;
      }
      if (runnext == runnext_policy::skip) return nullptr;
      g* next = steal_runnext();
      if (next != nullptr) *count = 1;
      return next;
    }
    if (n > cap_ / 2) continue;  // inconsistent snapshot; retry
    if (n > dst.cap_ / 2) n = dst.cap_ / 2;  // a smaller thief queue takes less
    for (std::uint32_t i = 0; i < n; ++i) {
      g* gp = slots_[(h + i) & mask_].load(std::memory_order_relaxed);
      dst.slots_[(dt + i) & dst.mask_].store(gp, std::memory_order_relaxed);
    }
    // acq_rel: the slot reads above happen before the victim's owner may
    // overwrite them (it acquires head before reusing a slot).
    if (head_.compare_exchange_weak(h, h + n, std::memory_order_acq_rel,
                                    std::memory_order_relaxed)) {
      *count = n;
      // Keep the last one to run now; publish the others.
      g* run = dst.slots_[(dt + n - 1) & dst.mask_].load(std::memory_order_relaxed);
      if (n > 1) dst.tail_.store(dt + n - 1, std::memory_order_release);
      return run;
    }
  }
}
}  // namespace mpg::detail
