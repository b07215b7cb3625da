// lib/sync/rwmutex.cpp: the slow paths of mpg::rwmutex (see rwmutex.hpp for the
// state word, the hand-off rules and the invariants).
#include "mpg/rwmutex.hpp"

#include "mpg/errors.hpp"

namespace mpg {

rwmutex::~rwmutex() { detail::note_destroyed_in_kill(this); }

// hand_over(): under the queue lock, before the waiters of `chain` (taken
// from the writers queue if `writers`, else from the readers queue) are
// readied: records in each that it was handed the lock (parking_queue.hpp,
// P4). Returns their number.
std::uint32_t rwmutex::hand_over(detail::waiter* chain, bool writers) noexcept {
  std::uint32_t n = 0;
  for (detail::waiter* w = chain; w; w = w->next, ++n) {
    if (writers)
      static_cast<lock_awaiter*>(w)->given_ = true;
    else
      static_cast<shared_awaiter*>(w)->given_ = true;
  }
  return n;
}

// give_back(): from ~acquire_awaiter of a waiter handed the lock and killed
// before it ran (parking_queue.hpp, P4 and "Shutdown"): unlock as it would
// have, unless the rwmutex was destroyed earlier in this kill. Throws only
// if someone released the lock handed to a task that never ran (a misuse;
// nothing to do then).
void rwmutex::give_back(bool writer) noexcept {
  if (detail::destroyed_in_kill(this)) return;
  try {
    if (writer)
      unlock();
    else
      unlock_shared();
  } catch (const sync_misuse_error&) {
  }
}

bool rwmutex::lock_slow(detail::waiter* w, bool writer, std::coroutine_handle<> h,
                        const std::source_location& where) {
  const char* reason = writer ? "rwmutex lock" : "rwmutex lock_shared";
  bool full = false;
  const bool parked = q_.park(
      w, h, reason, where,
      [&] {
        std::uint32_t s = state_.load(std::memory_order_relaxed);
        for (;;) {
          std::uint32_t ns;
          if (writer) {
            if (s == 0) {
              // Acquire: pairs with the release of the previous owner(s).
              if (state_.compare_exchange_weak(s, kWriter, std::memory_order_acquire,
                                               std::memory_order_relaxed))
                return false;
              continue;
            }
            ns = s | kWriterWait;
          } else {
            if (!(s & (kWriter | kWriterWait))) {
              // The count would carry into kReaderWait: refuse.
              if ((s & kReaders) == kReaders) {
                full = true;
                return false;
              }
              if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acquire,
                                               std::memory_order_relaxed))
                return false;
              continue;
            }
            ns = s | kReaderWait;
          }
          // Relaxed: only announces a queued waiter; whoever hands us the
          // lock reads it under the queue lock, which we hold until we are
          // queued.
          if (state_.compare_exchange_weak(s, ns, std::memory_order_relaxed,
                                           std::memory_order_relaxed))
            return true;
        }
      },
      writer ? kWriterQ : kReaderQ);
  if (full) throw sync_misuse_error("mpg::rwmutex: lock_shared with 2^29 - 1 readers inside");
  return parked;
}

void rwmutex::unqueue(detail::waiter* w, bool writer) noexcept {
  q_.unlink(w, writer ? kWriterQ : kReaderQ, [&](detail::waitq* queues) -> detail::waiter* {
    detail::waitq& readers = queues[kReaderQ];
    if (!queues[writer ? kWriterQ : kReaderQ].empty()) return nullptr;
    if (!writer) {
      // Relaxed: only announces the queue (kReaderWait is read under the
      // queue lock, and unlock()'s fast path merely fails on it); an RMW, so
      // the release sequence the next owner acquires from stays intact.
      state_.fetch_and(~kReaderWait, std::memory_order_relaxed);
      return nullptr;
    }
    // The last queued writer is gone. kWriter is stable here: with
    // kWriterWait set, the fast paths cannot take or drop it and the slow
    // paths need the queue lock. Only unlock_shared()'s fast path may
    // change the reader count.
    std::uint32_t s = state_.load(std::memory_order_relaxed);
    if (s & kWriter) {
      // The holder's unlock() admits the queued readers. Relaxed: as above.
      state_.fetch_and(~kWriterWait, std::memory_order_relaxed);
      return nullptr;
    }
    // Readers hold the lock (or the last one is on its way out): admit the
    // readers queued behind the dead writer alongside them.
    detail::waiter* chain = readers.take_all();
    const std::uint32_t n = hand_over(chain, false);
    // Acquire: the admitted readers must see the last writer's section; its
    // release (store or CAS) heads the release sequence we read from, and
    // ready() passes it on to them. Retried only for concurrent
    // unlock_shared() decrements.
    while (!state_.compare_exchange_weak(s, (s & kReaders) + n, std::memory_order_acquire,
                                         std::memory_order_relaxed)) {
    }
    return chain;
  });
}

void rwmutex::unlock() {
  std::uint32_t s = kWriter;
  // Release: publishes the writer's section to the next owner. The last
  // touch of the rwmutex.
  if (state_.compare_exchange_strong(s, 0, std::memory_order_release, std::memory_order_relaxed))
    return;
  if (!(s & kWriter)) throw sync_misuse_error("mpg::rwmutex: unlock of unlocked rwmutex");
  q_.wake([&](detail::waitq* queues) -> detail::waiter* {
    detail::waitq& readers = queues[kReaderQ];
    detail::waitq& writers = queues[kWriterQ];
    // While we hold kWriter and the queue lock, nobody else can change
    // state_: the fast paths all fail on kWriter and the slow paths need
    // the queue lock.
    detail::waiter* chain = nullptr;
    std::uint32_t ns = 0;
    if (!readers.empty()) {
      // Phase change: admit every queued reader, ahead of queued writers.
      chain = readers.take_all();
      ns = hand_over(chain, false) | (writers.empty() ? 0 : kWriterWait);
    } else if (detail::waiter* w = writers.pop_front()) {
      chain = w;
      hand_over(w, true);
      ns = kWriter | (writers.empty() ? 0 : kWriterWait);
    }
    // Release: the new owners (ordered also by ready()) see our section.
    state_.store(ns, std::memory_order_release);
    return chain;
  });
}

void rwmutex::unlock_shared() {
  std::uint32_t s = state_.load(std::memory_order_relaxed);
  for (;;) {
    if ((s & kReaders) == 0)
      throw sync_misuse_error("mpg::rwmutex: unlock_shared of rwmutex not locked shared");
    // The last reader out with a writer waiting hands it the lock, under
    // the queue lock.
    if ((s & kReaders) == 1 && (s & kWriterWait)) {
      unlock_shared_slow();
      return;
    }
    // acq_rel: release our read section; acquire the other readers'
    // releases (a release sequence on state_), so that the last reader out
    // can pass the lock to a writer with every reader's section ordered
    // before it. The last touch of the rwmutex.
    if (state_.compare_exchange_weak(s, s - 1, std::memory_order_acq_rel,
                                     std::memory_order_relaxed))
      return;
  }
}

// unlock_shared_slow(): the drop of a reader that was the last one with a
// writer queued when it looked, made under the queue lock (parking_queue.hpp,
// P2) so that the drop and the hand-off are one step. Other readers may
// still drop concurrently (their fast path), so the CAS is retried with
// what it finds.
void rwmutex::unlock_shared_slow() {
  bool misuse = false;
  q_.wake([&](detail::waitq* queues) -> detail::waiter* {
    detail::waitq& writers = queues[kWriterQ];
    std::uint32_t s = state_.load(std::memory_order_relaxed);
    for (;;) {
      if ((s & kReaders) == 0) {
        misuse = true;
        return nullptr;
      }
      // kWriterWait iff a writer is queued (invariant, under our lock);
      // kWriter is clear while readers hold the lock.
      const bool hand = (s & kReaders) == 1 && !writers.empty();
      const std::uint32_t ns =
          hand ? kWriter | (s & kReaderWait) | (writers.front()->next ? kWriterWait : 0) : s - 1;
      // acq_rel: as in unlock_shared(); for a hand-off, the release also
      // orders the readers' sections before the writer's (with ready()).
      if (state_.compare_exchange_weak(s, ns, std::memory_order_acq_rel,
                                       std::memory_order_relaxed)) {
        if (!hand) return nullptr;
        detail::waiter* w = writers.pop_front();
        hand_over(w, true);
        return w;
      }
    }
  });
  if (misuse) throw sync_misuse_error("mpg::rwmutex: unlock_shared of rwmutex not locked shared");
}

}  // namespace mpg
