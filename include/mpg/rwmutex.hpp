// mpg/rwmutex.hpp: rwmutex, a readers-writer lock for tasks (Go's
// sync.RWMutex).
//
//   co_await rw.lock();         ... rw.unlock();          // one writer
//   co_await rw.lock_shared();  ... rw.unlock_shared();   // many readers
//
// Waiting tasks park; no OS thread blocks. Unlocking what is not locked
// throws mpg::sync_misuse_error, and so does a lock_shared() that would
// make a reader beyond kMaxReaders (try_lock_shared() then returns false).
//
// Fairness (Go's rule, made phase-fair): once a writer waits, new readers
// wait too, so a stream of readers cannot starve a writer: the writer gets
// the lock as soon as the readers already inside leave. When a writer
// unlocks, every reader that queued behind it is admitted before the next
// writer, so a stream of writers cannot starve readers either. Phases of
// readers and writers alternate while both wait.
//
// Design. One atomic word carries the fast paths, and a detail::
// parking_queue with two FIFOs (readers, writers) holds the parked waiters
// (and the protocol, and the rule that lets the rwmutex be destroyed right
// after its last unlock):
//   bits 0..28  readers holding the lock
//   kWriter     a writer holds the lock
//   kWriterWait a writer is queued (new readers must queue)
//   kReaderWait a reader is queued (the writer's unlock must admit it)
// Fast paths are single CAS operations: lock_shared() adds a reader when
// neither kWriter nor kWriterWait is set; unlock_shared() drops one (unless
// it is the last reader and a writer waits); lock() turns 0 into kWriter;
// unlock() turns kWriter into 0. Each fast path's CAS is its last touch.
// Everything else goes through the queue lock, where one store or CAS both
// releases and hands the lock over: the last reader out passes it to the
// first queued writer; a writer's unlock passes it to all queued readers
// (or, if none, to the next writer). A woken waiter therefore owns
// the lock when it resumes and never retries, so each park/resume is one
// await (no slow-path coroutine, unlike mutex, whose normal mode lets
// arrivals barge for throughput; here fairness is the point).
//
// Shutdown: a waiter killed while parked (~runtime destroys its frame)
// unlinks itself in its awaiter's destructor (parking_queue.hpp, P3),
// clearing kReaderWait or kWriterWait with the last of its kind. The last
// queued writer to go also admits the readers queued behind it unless a
// writer holds the lock (whose unlock admits them), as its own unlock would
// have: they waited only for it. So a later unlock neither touches freed
// memory nor leaves readers waiting for nobody. An rwmutex destroyed with
// waiters still queued detaches them. A waiter handed the lock and killed
// before it ran unlocks it from its awaiter's destructor (the hand-off is
// recorded in the awaiter, parking_queue.hpp P4), unless the rwmutex was
// destroyed earlier in the same kill. A lock that a killed task had taken
// (and run with) stays held, as any lock never released.
//
// Invariants (with the queue lock held):
//   - kWriter implies reader count 0.
//   - kWriterWait iff the writers queue is non-empty.
//   - kReaderWait iff the readers queue is non-empty; it implies kWriter or
//     kWriterWait (readers queue only behind a writer).
//
// Memory ordering: acquiring (shared or exclusive) is an acquire CAS, and
// releasing a release CAS on state_ (a release store in unlock()'s slow
// path, where kWriter and the queue lock leave no concurrent RMW): writers'
// sections happen-before later readers' and writers' sections, and readers'
// before the next writer's (the last reader's acq_rel CAS, made under the
// queue lock, heads the hand-off, which reaches the new owner through the
// lock and ready(), both release/acquire). Queue and waiter fields are
// guarded by the queue lock. A waiter's given_ (its record of the hand-off,
// parking_queue.hpp P4) is written under the queue lock before ready() and
// read after its resume (ordered by ready()) or by its destructor on the
// killing thread (waitq.hpp, kQueued: the same argument); a killed waiter
// gives back with unlock() or unlock_shared(), with their usual orders.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <source_location>

#include "mpg/detail/sched/g.hpp"
#include "mpg/detail/sync/parking_queue.hpp"
#include "mpg/detail/sync/waitq.hpp"

namespace mpg {

namespace detail {
struct rwmutex_probe;
}  // namespace detail

class rwmutex {
 public:
  template <bool Exclusive>
  class acquire_awaiter;
  using lock_awaiter = acquire_awaiter<true>;
  using shared_awaiter = acquire_awaiter<false>;

  // The most readers that may hold the lock at once: 2^29 - 1.
  static constexpr std::uint32_t kMaxReaders = (1u << 29) - 1;

  rwmutex() noexcept = default;
  ~rwmutex();
  rwmutex(const rwmutex&) = delete;
  rwmutex& operator=(const rwmutex&) = delete;

  // rwmutex::lock()
  //
  // `co_await rw.lock()`: exclusive access. Waits for the readers inside
  // and for writers queued earlier; resumes on the P of whoever handed it
  // the lock.
  lock_awaiter lock(std::source_location where = std::source_location::current()) noexcept;
  // rwmutex::try_lock(): exclusive access if free now; never parks.
  bool try_lock() noexcept {
    std::uint32_t s = 0;
    return state_.compare_exchange_strong(s, kWriter, std::memory_order_acquire,
                                          std::memory_order_relaxed);
  }
  // rwmutex::unlock(): releases exclusive access.
  void unlock();

  // rwmutex::lock_shared()
  //
  // `co_await rw.lock_shared()`: shared access. Waits while a writer holds
  // or awaits the lock.
  shared_awaiter lock_shared(std::source_location where = std::source_location::current()) noexcept;
  // rwmutex::try_lock_shared(): shared access if available now. False, too,
  // when kMaxReaders readers hold it (lock_shared() then throws).
  bool try_lock_shared() noexcept {
    std::uint32_t s = state_.load(std::memory_order_relaxed);
    while (!(s & (kWriter | kWriterWait)) && (s & kReaders) != kReaders) {
      // Acquire: pairs with the release CAS of the last writer's unlock().
      if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acquire,
                                       std::memory_order_relaxed))
        return true;
    }
    return false;
  }
  // rwmutex::unlock_shared(): releases shared access.
  void unlock_shared();

 private:
  bool lock_slow(detail::waiter* w, bool writer, std::coroutine_handle<> h,
                 const std::source_location& where);
  void unlock_shared_slow();
  void unqueue(detail::waiter* w, bool writer) noexcept;
  void give_back(bool writer) noexcept;
  static std::uint32_t hand_over(detail::waiter* chain, bool writers) noexcept;

  static constexpr std::uint32_t kWriter = 1u << 31;
  static constexpr std::uint32_t kWriterWait = 1u << 30;
  static constexpr std::uint32_t kReaderWait = 1u << 29;
  static constexpr std::uint32_t kReaders = kReaderWait - 1;  // mask of the count
  static_assert(kReaders == kMaxReaders);
  friend struct detail::rwmutex_probe;  // the tests' access to state_

  static constexpr unsigned kReaderQ = 0;  // queue indices in q_
  static constexpr unsigned kWriterQ = 1;

  std::atomic<std::uint32_t> state_{0};
  detail::parking_queue<2> q_;
};

// rwmutex::lock_awaiter / shared_awaiter: fast path in await_ready (then
// the cooperative budget), slow path parks under the queue lock and resumes owning
// the lock. One template: they differ only in which side they take.
template <bool Exclusive>
class [[nodiscard]] rwmutex::acquire_awaiter : private detail::waiter {
 public:
  using mpg_awaiter = detail::runtime_awaiter_tag;  // g.hpp
  acquire_awaiter(rwmutex* m, std::source_location where) noexcept : m_(m), where_(where) {}
  acquire_awaiter(const acquire_awaiter&) = delete;
  acquire_awaiter& operator=(const acquire_awaiter&) = delete;
  // Destroyed while still queued, or handed the lock and not yet run: only
  // when its task is killed at runtime shutdown (detail/sync/waitq.hpp,
  // kQueued; the plain read of the bit is argued there, and holds for
  // given_, written before ready()). Unlink, or unlock, so that a later
  // unlock finds the queues and the state word sound and the lock is not
  // held for ever.
  ~acquire_awaiter() {
    if (this->queued()) [[unlikely]]
      m_->unqueue(this, Exclusive);
    else if (given_) [[unlikely]]
      m_->give_back(Exclusive);
  }
  // acquired_ is set afresh by each await: an awaiter awaited again
  // acquires again.
  bool await_ready() noexcept {
    acquired_ = Exclusive ? m_->try_lock() : m_->try_lock_shared();
    if (!acquired_) return false;
    return !detail::consume_budget_now();
  }
  bool await_suspend(std::coroutine_handle<> h) {
    // Acquired, but the budget ran out: yield holding the lock (rare, and
    // the yield only goes to the back of this P's queue).
    if (acquired_) {
      detail::requeue_current(h);
      return true;
    }
    return m_->lock_slow(this, Exclusive, h, where_);
  }
  // Takes up a handed lock (parking_queue.hpp, P4): a plain write.
  void await_resume() noexcept { given_ = false; }

 private:
  friend class rwmutex;
  rwmutex* m_;
  std::source_location where_;
  bool acquired_ = false;
  bool given_ = false;  // a waker handed us the lock (before ready())
};

inline rwmutex::lock_awaiter rwmutex::lock(std::source_location where) noexcept {
  return lock_awaiter(this, where);
}
inline rwmutex::shared_awaiter rwmutex::lock_shared(std::source_location where) noexcept {
  return shared_awaiter(this, where);
}

}  // namespace mpg
