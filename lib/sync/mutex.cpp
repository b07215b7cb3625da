// lib/sync/mutex.cpp: the slow paths of mpg::mutex (see mutex.hpp for the
// design, the state word and its invariants).
#include "mpg/mutex.hpp"

#include <utility>

#include "mpg/detail/sched/clock.hpp"
#include "mpg/errors.hpp"

namespace mpg {

namespace {

constexpr std::int64_t kStarvationNs = 1'000'000;  // 1 ms, as Go
// Go spins 4 times for 30 PAUSEs before parking (active_spin, active_spin_cnt).
constexpr int kSpinRounds = 4;
constexpr int kSpinPauses = 30;

}  // namespace

// wait_awaiter: one attempt to take the mutex under the queue lock, parking
// at the tail (or, for a waiter that was woken and lost, at the front) when
// it is held. Lives in lock_slow's frame; reused across retries.
struct mutex::wait_awaiter : detail::waiter {
  using mpg_awaiter = detail::runtime_awaiter_tag;  // g.hpp
  enum given_t : std::uint8_t { given_none, given_woken, given_mutex };
  wait_awaiter(mutex* mu, std::source_location w) noexcept : m(mu), where(w) {}

  mutex* m;
  std::source_location where;
  std::int64_t start_ns = 0;  // when this locker first parked
  bool woken = false;         // was readied by an unlock at least once
  bool acquired = false;      // took the mutex in await_suspend
  // What the waker that readied us handed over and we have not yet taken
  // up (parking_queue.hpp, P4): written under the queue lock before
  // ready(); cleared by us (given_woken at our retry, given_mutex as soon
  // as we resume), or by give_back().
  given_t given = given_none;

  // Destroyed while still queued, or readied and not yet run: only when its
  // task is killed at runtime shutdown (detail/sync/waitq.hpp, kQueued; the
  // plain read of the bit is argued there, and holds for `given` too: it
  // was written before ready(), which came before the kill or from a
  // destructor of the same kill). Unlink, or give back what was handed to
  // us, so that a later unlock() finds the queue and the state word sound
  // and the other lockers are still served.
  ~wait_awaiter() {
    if (queued()) [[unlikely]]
      unqueue();
    else if (given != given_none) [[unlikely]]
      m->give_back(this);
  }

  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h);
  void await_resume() const noexcept {}

 private:
  void unqueue() noexcept;
};

void mutex::wait_awaiter::unqueue() noexcept {
  m->q_.unlink(this, 0, [&](detail::waitq* queues) -> detail::waiter* {
    if (!queues[0].empty()) return nullptr;
    // We were the last waiter: keep "kWaiters iff the queue is non-empty"
    // and "kStarving implies kWaiters" (else the next unlock() would hand
    // the mutex to nobody). kLocked stays as it is: no ownership changes
    // hands, so relaxed; the bits are re-read under the queue lock, and
    // being an RMW, this keeps the release sequence of the last unlock
    // intact for the next acquire CAS.
    m->state_.fetch_and(~(kWaiters | kStarving), std::memory_order_relaxed);
    return nullptr;
  });
}

bool mutex::wait_awaiter::await_suspend(std::coroutine_handle<> h) {
  const bool starving_now =
      woken && start_ns != 0 && detail::mono_now_ns() - start_ns > kStarvationNs;
  const std::uint32_t clear = woken ? kWoken : 0;
  return m->q_.park(
      this, h, "mutex lock", where,
      [&] {
        // Take up the wake-up claim that readied us: from here on kWoken is
        // ours to clear (below), no longer to give back.
        given = given_none;
        std::uint32_t s = m->state_.load(std::memory_order_relaxed);
        for (;;) {
          if (!(s & (kLocked | kStarving))) {
            // Acquire: pairs with the release CAS of the previous unlock().
            if (m->state_.compare_exchange_weak(s, (s | kLocked) & ~clear,
                                                std::memory_order_acquire,
                                                std::memory_order_relaxed)) {
              acquired = true;
              return false;
            }
            continue;
          }
          std::uint32_t ns = (s | kWaiters) & ~clear;
          // Starve only while the mutex is held (Go: an unlocked mutex
          // cannot starve anyone, and kStarving implies kLocked).
          if (starving_now && (s & kLocked)) ns |= kStarving;
          // Relaxed: no ownership changes; the bits are re-read under the
          // queue lock by wake_one() / unlock_starving(), which we hold off
          // until we are queued.
          if (m->state_.compare_exchange_weak(s, ns, std::memory_order_relaxed,
                                              std::memory_order_relaxed)) {
            if (start_ns == 0) start_ns = detail::mono_now_ns();
            return true;
          }
        }
      },
      0, /*front=*/woken);
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
    if (w.acquired) co_return;
    if (w.given == wait_awaiter::given_mutex) {
      w.given = wait_awaiter::given_none;  // handed the mutex (starvation mode): ours
      co_return;
    }
    w.woken = true;
  }
}

void mutex::unlock_slow(std::uint32_t s) {
  for (;;) {
    if (!(s & kLocked)) throw sync_misuse_error("mpg::mutex: unlock of unlocked mutex");
    if (s & kStarving) {
      unlock_starving();
      return;
    }
    // Normal mode. With waiters and none on its way, this CAS also claims
    // the wake-up (kWoken), so that no other unlocker can wake the first
    // waiter before we do: until we ready it, a waiter that has not returned
    // from lock() depends on this mutex, so nobody may destroy it, and our
    // touches of the queue that follow are safe. Without a wake-up to make,
    // the CAS is the last touch. Release: as in the fast path.
    const bool wake = (s & kWaiters) && !(s & kWoken);
    if (state_.compare_exchange_weak(s, (s & ~kLocked) | (wake ? kWoken : 0),
                                     std::memory_order_release, std::memory_order_relaxed)) {
      if (wake) wake_one();
      return;
    }
  }
}

// wake_one(): ready the first waiter, for an unlock that claimed the wake-up
// (kWoken) in its releasing CAS. Under the queue lock (parking_queue.hpp,
// P2); clears kWaiters with the last waiter.
void mutex::wake_one() {
  q_.wake([&](detail::waitq* queues) -> detail::waiter* { return pass_claim(queues[0]); });
}

// pass_claim(): under the queue lock, for a caller that holds the wake-up
// claim (kWoken): an unlock that set it, or a killed waiter giving back the
// claim it was readied with. Returns the waiter to ready, or nullptr.
detail::waiter* mutex::pass_claim(detail::waitq& q) noexcept {
  // A locker took the mutex since the release (Go's rule): its unlock will
  // wake, so give the claim back instead of waking a waiter that would
  // only find the mutex held. A CAS: if that unlock comes first, it saw
  // our kWoken and left the wake-up to us. Relaxed: only the claim changes
  // hands. Safe to touch: the waiters are still queued.
  std::uint32_t s = state_.load(std::memory_order_relaxed);
  while (s & kLocked) {
    if (state_.compare_exchange_weak(s, s & ~kWoken, std::memory_order_relaxed,
                                     std::memory_order_relaxed))
      return nullptr;
  }
  auto* w = static_cast<wait_awaiter*>(q.pop_front());
  // Relaxed: kWaiters and kWoken are hints re-read under this lock; the
  // woken waiter acquires with its own CAS. w is null when nobody is left
  // to wake: the killed waiter we pass on for was the last, or the waiters
  // were killed at shutdown since the unlock claimed (their unlink cleared
  // kWaiters). Then nobody would clear kWoken, so we do.
  if (w == nullptr) {
    state_.fetch_and(~kWoken, std::memory_order_relaxed);
    return nullptr;
  }
  if (q.empty()) state_.fetch_and(~kWaiters, std::memory_order_relaxed);
  w->given = wait_awaiter::given_woken;  // P4: before ready()
  return w;
}

// give_back(): from ~wait_awaiter of a waiter readied with w->given set and
// killed before it ran (parking_queue.hpp, P4 and "Shutdown"): do with it
// what the waiter would have, unless the mutex was destroyed earlier in
// this kill. No M of the waiter's runtime runs; tasks of other runtimes
// may use the mutex meanwhile, hence the usual protocol.
void mutex::give_back(wait_awaiter* w) noexcept {
  const auto given = std::exchange(w->given, wait_awaiter::given_none);
  if (detail::destroyed_in_kill(this)) return;
  if (given == wait_awaiter::given_mutex) {
    // It owned the mutex: unlock it, handing it on or waking the next
    // waiter, as its unlock would have. Throws only if someone unlocked
    // the mutex handed to a task that never ran (a misuse; nothing to do).
    try {
      unlock();
    } catch (const sync_misuse_error&) {
    }
    return;
  }
  // It held the wake-up claim (kWoken): pass it on as the unlock that made
  // it would have, or give it back (pass_claim).
  q_.wake([&](detail::waitq* queues) -> detail::waiter* { return pass_claim(queues[0]); });
}

mutex::~mutex() { detail::note_destroyed_in_kill(this); }

// unlock_starving(): under the queue lock (parking_queue.hpp, P2), keep
// kLocked and hand the mutex to the first waiter. The state is re-read
// there: lockers change it only under this lock while kLocked is set.
void mutex::unlock_starving() {
  q_.wake([&](detail::waitq* queues) -> detail::waiter* {
    detail::waitq& q = queues[0];
    std::uint32_t s = state_.load(std::memory_order_relaxed);
    for (;;) {
      auto* w = static_cast<wait_awaiter*>(q.front());
      if (w == nullptr || !(s & kStarving)) {
        // The starving waiters were killed (the last one's unlink cleared
        // kStarving and kWaiters) since unlock() read kStarving: unlock as
        // in normal mode, waking the first waiter if one is left (release,
        // as in unlock()).
        const bool wake = w != nullptr && (s & kWaiters) && !(s & kWoken);
        std::uint32_t ns = (s & ~kLocked) | (wake ? kWoken : 0);
        if (wake && w->next == nullptr) ns &= ~kWaiters;
        if (!state_.compare_exchange_weak(s, ns, std::memory_order_release,
                                          std::memory_order_relaxed))
          continue;
        if (!wake) return nullptr;
        auto* woken_w = static_cast<wait_awaiter*>(q.pop_front());
        woken_w->given = wait_awaiter::given_woken;  // P4: before ready()
        return woken_w;
      }
      const bool last = w->next == nullptr;
      const bool short_wait = detail::mono_now_ns() - w->start_ns < kStarvationNs;
      std::uint32_t ns = s;  // kLocked stays set: ownership passes to w
      if (last || short_wait) ns &= ~kStarving;
      if (last) ns &= ~kWaiters;
      // Release: with ready(), orders our critical section before w's.
      if (!state_.compare_exchange_weak(s, ns, std::memory_order_release,
                                        std::memory_order_relaxed))
        continue;
      q.pop_front();
      w->given = wait_awaiter::given_mutex;  // P4: before ready()
      return w;
    }
  });
}

}  // namespace mpg
