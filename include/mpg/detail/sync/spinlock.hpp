// mpg/detail/sync/spinlock.hpp: the one spinlock of mpg, basic_spinlock<Backoff>,
// whose waiting is a policy, and the two policies in use:
//   spinlock      = basic_spinlock<short_section_backoff>: guards a channel,
//                   the parking queue of a sync primitive, a context node.
//   io_spin_lock  = basic_spinlock<long_section_backoff> (io_op.hpp): guards
//                   a reactor's ring and an io_slot.
//
// Why a spinlock and not absl::Mutex or std::mutex. Every critical section
// it guards is a handful of pointer and index updates plus at most one move
// of a channel element (or, for a reactor, the preparation and submission of
// SQEs); none of them parks, allocates, or calls out to user code other
// than T's (noexcept) move constructor. Held that briefly, a lock that only
// ever spins is cheaper than one that can sleep: acquiring it is one
// exchange, releasing it one plain store, and it is one byte, so it shares
// the cache line of the data it guards (a channel's indices and queues),
// which the holder touches anyway. absl::Mutex costs a CAS to release and a
// pointer-sized word; its sleeping slow path would block an OS thread that
// runs a P, which is exactly what this runtime promises never to do for long.
//
// The risk of any spinlock is a holder that the OS deschedules mid-section:
// the others would spin for a whole time slice. Both policies therefore end
// in sched_yield() between probes, so a descheduled holder can run.
//
// short_section_backoff. The backoff starts long (32 PAUSEs, growing to 128
// per probe), not at one, and yields after about 2^14 PAUSEs. The lock
// shares its line with the data it guards, so every probe of a waiter pulls
// that line away from the holder in the middle of its section; probing at
// the pace of a section (tens of ns) makes every operation a cross-core
// miss. Waiting longer lets the holder run a batch of sections from its own
// cache, which is the throughput a contended lock can have (Go's runtime
// lock waits procyield(30) between probes for the same reason). Measured on
// chan_mpmc (2 Ps, 8 tasks on one channel, an AMD EPYC whose PAUSE takes
// 25 ns): 55 to 77 ns/item probing after 1, 2, 4... PAUSEs; 25 ns/item
// starting at 32, against Go's 28 and mpg's 20 on one P. Starting at 8 or
// 16 gave 35 to 48. The cost is latency for a waiter whose holder was about
// to release: at most one probe interval, about a microsecond.
//
// long_section_backoff. A reactor's sections may include an io_uring_enter
// (a system call, microseconds), and its lock is not on the line of hot
// data: probe after every PAUSE for 100 probes, then yield between probes.
//
// Rejected: a ticket or MCS lock. Both are fair, but fairness here is worth
// less than throughput: a P that just released a channel's lock and takes it
// again keeps the line in its cache (TTAS lets it), and the channel and
// select protocols never hold one of these for long enough to starve anyone.
// Two lock types with their own loops (one per subsystem): one mechanism per
// concept; only the waiting differs, so only the waiting is a parameter.
//
// Memory ordering: lock() is an acquire exchange, unlock() a release store,
// so everything the previous holder wrote inside the section is visible to
// the next holder. The spinning loads are relaxed: they only decide when to
// retry the exchange, which itself provides the ordering.
#pragma once

#include <absl/base/attributes.h>
#include <absl/base/thread_annotations.h>

#include <atomic>
#include <cassert>
#include <mutex>
#include <thread>

#include "mpg/detail/sync/cpu_relax.hpp"

namespace mpg::detail {

// short_section_backoff: see the file comment. One object per lock_slow()
// call; pause() waits once between two probes of the lock word.
class short_section_backoff {
 public:
  void pause() noexcept {
    if (round_ < kSpinRounds) {
      const unsigned n = 1u << (round_ < kMaxShift ? round_ : kMaxShift);
      for (unsigned i = 0; i < n; ++i) cpu_relax();
      ++round_;
    } else {
      std::this_thread::yield();
    }
  }

 private:
  static constexpr unsigned kFirstShift = 5;    // the first probe waits 32 PAUSEs
  static constexpr unsigned kMaxShift = 7;      // at most 128 PAUSEs per probe
  static constexpr unsigned kSpinRounds = 136;  // ~2^14 PAUSEs in all, then yield
  unsigned round_ = kFirstShift;
};

// long_section_backoff: see the file comment.
class long_section_backoff {
 public:
  void pause() noexcept {
    if (spins_ < kSpins) {
      ++spins_;
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }

 private:
  static constexpr unsigned kSpins = 100;  // probes one PAUSE apart, then yield
  unsigned spins_ = 0;
};

template <class Backoff>
class ABSL_LOCKABLE basic_spinlock {
 public:
  basic_spinlock() noexcept = default;
  basic_spinlock(const basic_spinlock&) = delete;
  basic_spinlock& operator=(const basic_spinlock&) = delete;

  // basic_spinlock::lock()
  //
  // Takes the lock: one exchange when it is free (acquire, pairs with the
  // release store in unlock()); otherwise waits as Backoff says. Forced
  // inline, as unlock(): g++ 12 otherwise leaves both as calls in large
  // task bodies.
  ABSL_ATTRIBUTE_ALWAYS_INLINE void lock() noexcept ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    if (!locked_.exchange(true, std::memory_order_acquire)) [[likely]]
      return;
    lock_slow();
  }

  // basic_spinlock::try_lock()
  //
  // Takes the lock if it is free at this moment; never spins.
  bool try_lock() noexcept ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) {
    // Relaxed pre-check: a failed attempt then costs no write to the line.
    return !locked_.load(std::memory_order_relaxed) &&
           !locked_.exchange(true, std::memory_order_acquire);
  }

  // basic_spinlock::unlock()
  ABSL_ATTRIBUTE_ALWAYS_INLINE void unlock() noexcept ABSL_UNLOCK_FUNCTION() {
    // Release: publishes the section's writes to the next lock().
    locked_.store(false, std::memory_order_release);
  }

  // basic_spinlock::assert_held()
  //
  // Tells clang's thread-safety analysis that the caller holds the lock,
  // where the analysis cannot see it taken: select locks its channels as a
  // set of runtime size (select.hpp), and the select hooks of chan.hpp run
  // under those locks. With assertions on, checks that the lock is held (by
  // somebody: a spinlock records no owner).
  void assert_held() const noexcept ABSL_ASSERT_EXCLUSIVE_LOCK() {
    assert(locked_.load(std::memory_order_relaxed));
  }

 private:
  // Out of line: the waiting loop is cold, and inlined into every
  // channel operation it would cost each of them registers to save.
  ABSL_ATTRIBUTE_NOINLINE void lock_slow() noexcept {
    Backoff backoff;
    for (;;) {
      // Test before test-and-set: wait with loads only, so the holder keeps
      // the line exclusive until it releases it.
      while (locked_.load(std::memory_order_relaxed)) backoff.pause();
      if (!locked_.exchange(true, std::memory_order_acquire)) return;
    }
  }

  std::atomic<bool> locked_{false};
};

using spinlock = basic_spinlock<short_section_backoff>;

// spin_guard: scoped holder of a spinlock that may release it early, for the
// "unlock, then ready the G we took off the queue" pattern.
template <class Lock>
class ABSL_SCOPED_LOCKABLE spin_guard {
 public:
  explicit spin_guard(Lock& l) noexcept ABSL_EXCLUSIVE_LOCK_FUNCTION(l) : l_(&l) { l.lock(); }
  // Adopts a lock the caller already holds.
  spin_guard(Lock& l, std::adopt_lock_t) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(l) : l_(&l) {}
  ~spin_guard() ABSL_UNLOCK_FUNCTION() {
    if (l_) l_->unlock();
  }
  spin_guard(const spin_guard&) = delete;
  spin_guard& operator=(const spin_guard&) = delete;

  void unlock() noexcept ABSL_UNLOCK_FUNCTION() {
    l_->unlock();
    l_ = nullptr;
  }

 private:
  Lock* l_;
};

}  // namespace mpg::detail
