// lib/rwmutex.cpp: the slow paths of mpg::rwmutex (see rwmutex.hpp for the
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
    detail::waiter* w = writers_.pop_front();  // kWriterWait: non-empty
    // Stable: readers queue on kWriterWait, writers' fast path needs 0.
    const std::uint32_t cur = state_.load(std::memory_order_relaxed);
    const std::uint32_t ns =
        kWriter | (cur & kReaderWait) | (writers_.empty() ? 0 : kWriterWait);
    state_.store(ns, std::memory_order_release);
    gp = w->gp();
  }
  detail::ready(gp);
}

}  // namespace mpg
