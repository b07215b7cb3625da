// lib/sync/rwmutex.cpp: the slow paths of mpg::rwmutex (see rwmutex.hpp for the
// state word, the hand-off rules and the invariants).
#include "mpg/rwmutex.hpp"

#include "mpg/errors.hpp"

namespace mpg {

bool rwmutex::lock_slow(detail::waiter* w, bool writer, std::coroutine_handle<> h,
                        const std::source_location& where) {
  detail::g* self = detail::current_g();
  const char* reason = writer ? "rwmutex lock" : "rwmutex lock_shared";
  if (self == nullptr) detail::park(h, reason, where);  // throws: not in a task

  detail::spin_guard lk(qlock_);
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
        if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acquire,
                                         std::memory_order_relaxed))
          return false;
        continue;
      }
      ns = s | kReaderWait;
    }
    // Relaxed: only announces a queued waiter; whoever hands us the lock
    // reads it under qlock_, which we hold until we are queued.
    if (state_.compare_exchange_weak(s, ns, std::memory_order_relaxed, std::memory_order_relaxed))
      break;
  }
  w->set_g(self);
  detail::park(h, reason, where);
  (writer ? writers_ : readers_).push_back(w);
  return true;  // unlocking qlock_ publishes w
}

void rwmutex::unqueue(detail::waiter* w, bool writer) noexcept {
  detail::waiter* chain = nullptr;
  {
    detail::spin_guard lk(qlock_);
    detail::waitq& q = writer ? writers_ : readers_;
    if (!q.remove(w)) return;  // a waker took it off meanwhile
    if (!q.empty()) return;
    if (!writer) {
      // Relaxed: only announces the queue (kReaderWait is read under qlock_,
      // and unlock()'s fast path merely fails on it); an RMW, so the release
      // sequence the next owner acquires from stays intact.
      state_.fetch_and(~kReaderWait, std::memory_order_relaxed);
      return;
    }
    // The last queued writer is gone. kWriter is stable here: with
    // kWriterWait set, the fast paths cannot take or drop it and the slow
    // paths need qlock_. Only unlock_shared() may change the reader count.
    std::uint32_t s = state_.load(std::memory_order_relaxed);
    if (s & kWriter) {
      // The holder's unlock() admits the queued readers. Relaxed: as above.
      state_.fetch_and(~kWriterWait, std::memory_order_relaxed);
      return;
    }
    // Readers hold the lock (or the last one is on its way out): admit the
    // readers queued behind the dead writer alongside them.
    std::uint32_t n = 0;
    chain = readers_.take_all();
    for (detail::waiter* r = chain; r; r = r->next) ++n;
    // Acquire: the admitted readers must see the last writer's section; its
    // release (store or CAS) heads the release sequence we read from, and
    // ready() passes it on to them. Retried only for concurrent
    // unlock_shared() decrements.
    while (!state_.compare_exchange_weak(s, (s & kReaders) + n, std::memory_order_acquire,
                                         std::memory_order_relaxed)) {
    }
  }
  detail::ready_chain(chain);
}

void rwmutex::unlock() {
  std::uint32_t s = kWriter;
  // Release: publishes the writer's section to the next owner.
  if (state_.compare_exchange_strong(s, 0, std::memory_order_release, std::memory_order_relaxed))
    return;
  if (!(s & kWriter)) throw sync_misuse_error("mpg::rwmutex: unlock of unlocked rwmutex");
  detail::waiter* chain = nullptr;
  {
    detail::spin_guard lk(qlock_);
    // While we hold kWriter and qlock_, nobody else can change state_: the
    // fast paths all fail on kWriter and the slow paths need qlock_.
    std::uint32_t ns = 0;
    if (!readers_.empty()) {
      // Phase change: admit every queued reader, ahead of queued writers.
      std::uint32_t n = 0;
      chain = readers_.take_all();
      for (detail::waiter* r = chain; r; r = r->next) ++n;
      ns = n | (writers_.empty() ? 0 : kWriterWait);
    } else if (detail::waiter* w = writers_.pop_front()) {
      chain = w;
      ns = kWriter | (writers_.empty() ? 0 : kWriterWait);
    }
    // Release: the new owners (ordered also by ready()) see our section.
    state_.store(ns, std::memory_order_release);
  }
  detail::ready_chain(chain);
}

void rwmutex::unlock_shared() {
  std::uint32_t s = state_.load(std::memory_order_relaxed);
  for (;;) {
    if ((s & kReaders) == 0)
      throw sync_misuse_error("mpg::rwmutex: unlock_shared of rwmutex not locked shared");
    // acq_rel: release our read section; acquire the other readers' releases
    // (a release sequence on state_), so the last reader out can pass the
    // lock to a writer with every reader's section ordered before it.
    if (state_.compare_exchange_weak(s, s - 1, std::memory_order_acq_rel,
                                     std::memory_order_relaxed))
      break;
  }
  if ((s & kReaders) != 1 || !(s & kWriterWait)) return;
  // Last reader out with a writer waiting: hand it the lock.
  detail::g* gp;
  {
    detail::spin_guard lk(qlock_);
    const std::uint32_t cur = state_.load(std::memory_order_relaxed);
    // Always "no reader, no writer, a writer queued", unless the queued
    // writers were killed (unqueue) since our CAS: the last of them
    // admitted the queued readers or left the lock free, and someone may
    // have taken it since. Then the lock is no longer ours to hand over.
    if ((cur & (kReaders | kWriter)) != 0 || writers_.empty()) return;
    // Stable from here: readers queue on kWriterWait, writers' fast path
    // needs 0, and unqueue() needs qlock_.
    detail::waiter* w = writers_.pop_front();
    const std::uint32_t ns =
        kWriter | (cur & kReaderWait) | (writers_.empty() ? 0 : kWriterWait);
    state_.store(ns, std::memory_order_release);
    gp = w->gp();
  }
  detail::ready(gp);
}

}  // namespace mpg
