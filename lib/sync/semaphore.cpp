// lib/sync/semaphore.cpp: the slow paths of mpg::semaphore (design, invariants
// and ordering in semaphore.hpp).
#include "mpg/semaphore.hpp"

#include "mpg/errors.hpp"

namespace mpg {

namespace {
[[noreturn]] void throw_over_release() {
  throw sync_misuse_error("mpg::semaphore: released more than acquired");
}
}  // namespace

// checked_permits(): permits, if the state word (permits * 2 | kWaiters)
// can hold it; checked before the multiplication, which could overflow.
std::int64_t semaphore::checked_permits(std::int64_t permits) {
  if (permits < 0) throw sync_misuse_error("mpg::semaphore: negative permit count");
  if (permits > kMaxPermits)
    throw sync_misuse_error("mpg::semaphore: more than 2^62 - 1 permits");
  return permits;
}

semaphore::semaphore(std::int64_t permits)
    : state_(checked_permits(permits) * 2), max_(permits) {}

semaphore::~semaphore() { detail::note_destroyed_in_kill(this); }

// give_back(): from ~acquire_awaiter of an acquirer handed a permit and
// killed before it ran (parking_queue.hpp, P4 and "Shutdown"): release the
// permit, unless the semaphore was destroyed earlier in this kill. The
// permit handed over is not counted as free, so release() throws only on
// another party's misuse (more releases than acquires): caught, as this
// runs in a destructor.
void semaphore::give_back() noexcept {
  if (detail::destroyed_in_kill(this)) return;
  try {
    release();
  } catch (const sync_misuse_error&) {
  }
}

bool semaphore::acquire_slow(detail::waiter* w, std::coroutine_handle<> h,
                             const std::source_location& where) {
  return q_.park(w, h, "semaphore acquire", where, [&] {
    std::int64_t s = state_.load(std::memory_order_relaxed);
    for (;;) {
      if (s >= 2) {
        // Acquire: pairs with the release CAS of release().
        if (state_.compare_exchange_weak(s, s - 2, std::memory_order_acquire,
                                         std::memory_order_relaxed))
          return false;
        continue;
      }
      // Relaxed: announces the queue; releasers re-read it under the lock.
      if (state_.compare_exchange_weak(s, s | kWaiters, std::memory_order_relaxed,
                                       std::memory_order_relaxed))
        return true;
    }
  });
}

void semaphore::unqueue(detail::waiter* w) noexcept {
  q_.unlink(w, 0, [&](detail::waitq* queues) -> detail::waiter* {
    // The last waiter: keep "kWaiters iff the queue is non-empty". Relaxed:
    // no permit changes hands (permits stay 0); releasers re-read the flag
    // under the queue lock, and one that read it before this finds the
    // queue empty there and adds its permit (release_slow()).
    if (queues[0].empty()) state_.fetch_and(~kWaiters, std::memory_order_relaxed);
    return nullptr;
  });
}

void semaphore::release() {
  // With no permits at all, nobody holds one: this release is one too many
  // even while acquirers wait (a waiter would otherwise take it).
  if (max_ == 0) throw_over_release();
  std::int64_t s = state_.load(std::memory_order_relaxed);
  while (!(s & kWaiters)) {
    if ((s >> 1) >= max_) throw_over_release();
    // Release: publishes the releaser's work to the next acquirer. The
    // last touch of the semaphore.
    if (state_.compare_exchange_weak(s, s + 2, std::memory_order_release,
                                     std::memory_order_relaxed))
      return;
  }
  release_slow();
}

// release_slow(): kWaiters was set: under the queue lock (parking_queue.hpp,
// P2), hand the permit to the first waiter, or, if the killed waiters
// emptied the queue since, add it to the count there.
void semaphore::release_slow() {
  bool over = false;
  q_.wake([&](detail::waitq* queues) -> detail::waiter* {
    detail::waitq& q = queues[0];
    if (detail::waiter* w = q.pop_front()) {
      // Relaxed: permits stay 0 (handed off), only the flag goes.
      if (q.empty()) state_.fetch_and(~kWaiters, std::memory_order_relaxed);
      // P4: recorded before ready(). The queue holds only acquire_awaiters.
      static_cast<acquire_awaiter*>(w)->given_ = true;
      return w;  // the permit is handed over: count unchanged
    }
    std::int64_t s = state_.load(std::memory_order_relaxed);
    for (;;) {
      if ((s >> 1) >= max_) {
        over = true;
        return nullptr;
      }
      // Release: as in release().
      if (state_.compare_exchange_weak(s, s + 2, std::memory_order_release,
                                       std::memory_order_relaxed))
        return nullptr;
    }
  });
  if (over) throw_over_release();
}

}  // namespace mpg
