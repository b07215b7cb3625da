// lib/sync/mutex.cpp: the slow paths of mpg::mutex (see mutex.hpp for the
// design, the state word and its invariants).
#include "mpg/mutex.hpp"

#include <chrono>

#include "mpg/errors.hpp"

namespace mpg {

namespace {

constexpr std::int64_t kStarvationNs = 1'000'000;  // 1 ms, as Go
// Go spins 4 times for 30 PAUSEs before parking (active_spin, active_spin_cnt).
constexpr int kSpinRounds = 4;
constexpr int kSpinPauses = 30;

std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

// wait_awaiter: one attempt to take the mutex under qlock_, parking at the
// tail (or, for a waiter that was woken and lost, at the front) when it is
// held. Lives in lock_slow's frame; reused across retries.
struct mutex::wait_awaiter : detail::waiter {
  wait_awaiter(mutex* mu, std::source_location w) noexcept : m(mu), where(w) {}

  mutex* m;
  std::source_location where;
  std::int64_t start_ns = 0;  // when this locker first parked
  bool woken = false;         // readied by wake_one(): kWoken is ours to clear
  bool acquired = false;      // took the mutex in await_suspend
  bool handoff = false;       // unlock handed us the mutex (starvation mode)

  // Destroyed while still queued: only when its task is killed at runtime
  // shutdown (detail/waitq.hpp, kQueued; the plain read of the bit is
  // argued there). Unlink, so that a later unlock() finds the queue and the
  // state word sound.
  ~wait_awaiter() {
    if (queued()) [[unlikely]]
      unqueue();
  }

  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h);
  void await_resume() const noexcept {}

 private:
  void unqueue() noexcept;
};

void mutex::wait_awaiter::unqueue() noexcept {
  detail::spin_guard lk(m->qlock_);
  if (!m->waiters_.remove(this)) return;  // a waker took us off meanwhile
  if (!m->waiters_.empty()) return;
  // We were the last waiter: keep "kWaiters iff the queue is non-empty" and
  // "kStarving implies kWaiters" (else the next unlock() would hand the
  // mutex to nobody). kLocked stays as it is: no ownership changes hands, so
  // relaxed; the bits are re-read under qlock_ (wake_one, unlock_starving,
  // lockers), and being an RMW, this keeps the release sequence of the last
  // unlock intact for the next acquire CAS. An unlock() that read kStarving
  // before this finds the queue empty in unlock_starving().
  m->state_.fetch_and(~(kWaiters | kStarving), std::memory_order_relaxed);
}

bool mutex::wait_awaiter::await_suspend(std::coroutine_handle<> h) {
  detail::g* self = detail::current_g();
  if (self == nullptr) detail::park(h, "mutex lock", where);  // throws: not in a task
  const bool starving_now = woken && start_ns != 0 && now_ns() - start_ns > kStarvationNs;
  const std::uint32_t clear = woken ? kWoken : 0;

  detail::spin_guard lk(m->qlock_);
  std::uint32_t s = m->state_.load(std::memory_order_relaxed);
  for (;;) {
    if (!(s & (kLocked | kStarving))) {
      // Acquire: pairs with the release CAS of the previous unlock().
      if (m->state_.compare_exchange_weak(s, (s | kLocked) & ~clear, std::memory_order_acquire,
                                          std::memory_order_relaxed)) {
        acquired = true;
        return false;
      }
      continue;
    }
    std::uint32_t ns = (s | kWaiters) & ~clear;
    // Starve only while the mutex is held (Go: an unlocked mutex cannot
    // starve anyone, and kStarving implies kLocked).
    if (starving_now && (s & kLocked)) ns |= kStarving;
    // Relaxed: no ownership changes; the bits are re-read under qlock_ by
    // wake_one() / unlock_starving(), which we hold off until we are queued.
    if (m->state_.compare_exchange_weak(s, ns, std::memory_order_relaxed,
                                        std::memory_order_relaxed))
      break;
  }
  if (start_ns == 0) start_ns = now_ns();
  set_g(self);
  handoff = false;
  detail::park(h, "mutex lock", where);
  if (woken)
    m->waiters_.push_front(this);
  else
    m->waiters_.push_back(this);
  return true;  // unlocking qlock_ publishes `this`
}

task<void> mutex::lock_slow(bool yield_first, std::source_location where) {
  if (yield_first) {
    co_await yield_awaiter{};
    if (try_acquire_fast()) co_return;
  }
  // Spin: the holder most likely runs on another P and is about to unlock.
  for (int i = 0; i < kSpinRounds; ++i) {
    for (int j = 0; j < kSpinPauses; ++j) detail::cpu_relax();
    if (try_acquire_fast()) co_return;
    if (state_.load(std::memory_order_relaxed) & kStarving) break;
  }
  wait_awaiter w(this, where);
  for (;;) {
    co_await w;
    if (w.acquired || w.handoff) co_return;
    w.woken = true;
  }
}

void mutex::unlock() {
  std::uint32_t s = kLocked;
  // Release: publishes the critical section to the next acquire CAS.
  if (state_.compare_exchange_strong(s, 0, std::memory_order_release, std::memory_order_relaxed))
    return;
  for (;;) {
    if (!(s & kLocked)) throw sync_misuse_error("mpg::mutex: unlock of unlocked mutex");
    if (s & kStarving) {
      unlock_starving();
      return;
    }
    if (state_.compare_exchange_weak(s, s & ~kLocked, std::memory_order_release,
                                     std::memory_order_relaxed))
      break;
  }
  // Wake a waiter unless one is already on its way.
  if ((s & kWaiters) && !(s & kWoken)) wake_one();
}

void mutex::wake_one() {
  detail::g* gp;
  {
    detail::spin_guard lk(qlock_);
    std::uint32_t s = state_.load(std::memory_order_relaxed);
    for (;;) {
      // Nobody to wake, a waiter already on its way, or the mutex was taken
      // meanwhile (its next unlock will wake). kStarving implies kLocked.
      if (!(s & kWaiters) || (s & (kLocked | kWoken | kStarving))) return;
      std::uint32_t ns = s | kWoken;
      if (waiters_.front()->next == nullptr) ns &= ~kWaiters;  // taking the last one
      // Relaxed: kWoken and kWaiters are hints; the woken waiter acquires
      // with its own acquire CAS.
      if (state_.compare_exchange_weak(s, ns, std::memory_order_relaxed,
                                       std::memory_order_relaxed))
        break;
    }
    gp = waiters_.pop_front()->gp();
  }
  detail::ready(gp);
}

void mutex::unlock_starving() {
  detail::g* gp;
  {
    detail::spin_guard lk(qlock_);
    auto* w = static_cast<wait_awaiter*>(waiters_.pop_front());
    if (w == nullptr) {
      // kStarving implies waiters, but a killed waiter (the last one) may
      // have unlinked itself since unlock() read kStarving, clearing it and
      // kWaiters (wait_awaiter::unqueue): nobody to hand to, so unlock as
      // in normal mode with nobody waiting. Release: as in unlock().
      state_.fetch_and(~kLocked, std::memory_order_release);
      return;
    }
    const bool last = waiters_.empty();
    const bool short_wait = now_ns() - w->start_ns < kStarvationNs;
    std::uint32_t s = state_.load(std::memory_order_relaxed);
    for (;;) {
      std::uint32_t ns = s;  // kLocked stays set: ownership passes to w
      if (last || short_wait) ns &= ~kStarving;
      if (last) ns &= ~kWaiters;
      // Release: with ready() below, orders our critical section before w's.
      if (state_.compare_exchange_weak(s, ns, std::memory_order_release,
                                       std::memory_order_relaxed))
        break;
    }
    w->handoff = true;
    gp = w->gp();
  }
  detail::ready(gp);
}

}  // namespace mpg
