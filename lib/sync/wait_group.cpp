// lib/sync/wait_group.cpp: counter updates and the parking path of
// mpg::wait_group (design, invariants and ordering in wait_group.hpp).
#include "mpg/wait_group.hpp"

#include <cstdint>
#include <limits>

#include "mpg/errors.hpp"
#include "mpg/detail/sync/spinlock.hpp"

namespace mpg {

namespace {

[[noreturn]] void throw_bad_counter(std::int64_t v) {
  if (v < 0) throw sync_misuse_error("mpg::wait_group: negative counter");
  throw sync_misuse_error("mpg::wait_group: counter overflow");
}

bool counter_ok(std::int64_t v) noexcept {
  return v >= 0 && v <= std::numeric_limits<std::int32_t>::max();
}

}  // namespace

void wait_group::add(std::int64_t delta) {
  // The counter is within [0, 2^31): a delta outside (-2^31, 2^31) is
  // wrong whatever it is, and inside it the sums below cannot overflow.
  constexpr std::int64_t kMax = std::numeric_limits<std::int32_t>::max();
  if (delta > kMax || delta < -kMax) throw_bad_counter(delta);
  std::uint64_t s = state_.load(std::memory_order_relaxed);
  for (;;) {
    const std::int64_t v = counter(s) + delta;
    if (!counter_ok(v)) throw_bad_counter(v);
    if (v == 0 && delta != 0 && waiters(s) != 0) {
      reach_zero(delta);
      return;
    }
    // acq_rel: see "Memory ordering" in wait_group.hpp. Nobody is queued
    // (or the counter stays above zero): this CAS is the whole release and
    // the last touch of the group.
    if (state_.compare_exchange_weak(s, pack(v, waiters(s)), std::memory_order_acq_rel,
                                     std::memory_order_relaxed))
      return;
  }
}

// reach_zero(): the crossing to zero with waiters queued, under the queue
// lock (parking_queue.hpp, P2). Re-decided there: another add() may have
// moved the counter since the caller looked, and the waiter count changes
// only under this lock. Select waiters are held first (W2), and a select's
// clean-up found on its way to the lock is let through before the counter
// may reach zero.
void wait_group::reach_zero(std::int64_t delta) {
  detail::short_section_backoff backoff;
  for (;;) {
    std::int64_t bad = 0;
    bool cleaning = false;
    q_.wake([&](detail::waitq* queues) -> detail::waiter* {
      std::uint64_t s = state_.load(std::memory_order_relaxed);
      for (;;) {
        const std::int64_t v = counter(s) + delta;
        if (!counter_ok(v)) {
          bad = v;
          return nullptr;
        }
        const bool wake_all = v == 0;  // waiters(s) != 0 here iff the queue is non-empty
        if (wake_all && !hold_selects(queues[0])) {  // W2
          cleaning = true;
          return nullptr;
        }
        const std::uint64_t ns = wake_all ? 0 : pack(v, waiters(s));
        // acq_rel: as in add(); the waiters are released by this CAS, under
        // the lock whose unlock ends our touches of the group, and by
        // ready() after that unlock.
        if (state_.compare_exchange_weak(s, ns, std::memory_order_acq_rel,
                                         std::memory_order_relaxed))
          return wake_all ? take_round(queues[0]) : nullptr;  // W3
        if (wake_all) give_back_holds(queues[0], nullptr);
      }
    });
    if (bad != 0) throw_bad_counter(bad);
    if (!cleaning) return;
    // W2: a clean-up holds the way. Let it take the lock (waiting as a
    // waiter for the lock would), then decide afresh. Nothing of its
    // awaiter is read out here: once it has taken its waiter off, its
    // select may return and free it at once. The group lives: the counter
    // has not reached zero, so no wait has returned.
    backoff.pause();
  }
}

// hold_selects(): W2, under the queue lock: CAS every queued select
// waiter's word kArmed -> kHeld. Returns true when all are held; false,
// after giving back the holds taken, on finding one in kCleaning.
// Relaxed: a held clean-up only waits; what it reads once it goes on is
// ordered by W3's release, or by this lock.
bool wait_group::hold_selects(detail::waitq& q) noexcept {
  for (detail::waiter* w = q.front(); w != nullptr; w = w->next) {
    if (w->sel() == nullptr) continue;
    auto* a = static_cast<wait_awaiter*>(w);
    std::uint8_t armed = wait_awaiter::kArmed;
    if (!a->sel_cleanup_.compare_exchange_strong(armed, wait_awaiter::kHeld,
                                                 std::memory_order_relaxed,
                                                 std::memory_order_relaxed)) {
      // A queued waiter is kArmed, kHeld only by us, or kCleaning.
      give_back_holds(q, w);
      return false;
    }
  }
  return true;
}

// give_back_holds(): under the queue lock, kHeld -> kArmed for the select
// waiters before `upto` (all of them for nullptr). Relaxed, as the holds.
void wait_group::give_back_holds(detail::waitq& q, const detail::waiter* upto) noexcept {
  for (detail::waiter* w = q.front(); w != upto; w = w->next)
    if (w->sel() != nullptr)
      static_cast<wait_awaiter*>(w)->sel_cleanup_.store(wait_awaiter::kArmed,
                                                        std::memory_order_relaxed);
}

// take_round(): W3, under the queue lock, once the CAS took the counter to
// zero: every waiter off the queue, as a chain through `next` of those to
// ready (plain waiters, and selects whose claim this round won).
detail::waiter* wait_group::take_round(detail::waitq& q) noexcept {
  detail::waiter* chain = nullptr;
  detail::waiter** tail = &chain;
  while (detail::waiter* w = q.pop_front()) {
    if (detail::select_state* st = w->sel()) {
      auto* a = static_cast<wait_awaiter*>(w);
      // The queue lock is in the select's lock set: the select is past
      // arming, so the claim is won or lost (waitq.hpp, dequeue).
      if (st->claim(w) != detail::select_state::claim_result::won) {
        // Release: our claim and unlinking happen before the clean-up that
        // acquires kDropped (W4); the last touch of the waiter.
        a->sel_cleanup_.store(wait_awaiter::kDropped, std::memory_order_release);
        continue;
      }
      // Relaxed: the select skips its winner's clean-up; ready() orders
      // the rest.
      a->sel_cleanup_.store(wait_awaiter::kDropped, std::memory_order_relaxed);
    }
    *tail = w;
    tail = &w->next;
  }
  *tail = nullptr;
  return chain;
}

void wait_group::wait_awaiter::sel_dequeue_woken() noexcept {
  // W4. Acquire (loads and failed CAS): pairs with W3's release of
  // kDropped. The successful CAS needs no more (the lock orders the
  // clean-up); acquire keeps g++ 12 from warning at -O0, as in wait_slow.
  std::uint8_t v = sel_cleanup_.load(std::memory_order_acquire);
  detail::short_section_backoff backoff;  // the crossing holds the queue lock meanwhile
  for (;;) {
    if (v == kDropped) return;
    if (v == kArmed) {
      if (sel_cleanup_.compare_exchange_weak(v, kCleaning, std::memory_order_acquire,
                                             std::memory_order_acquire))
        break;
      continue;
    }
    // kHeld: a crossing is deciding, under the lock: wait as for that lock.
    backoff.pause();
    v = sel_cleanup_.load(std::memory_order_acquire);
  }
  // The unlock is the clean-up's last touch of the group; a crossing held
  // up in W2 takes the lock after it and finds the waiter gone.
  detail::spin_guard lk(*wg_->q_.select_lock());
  sel_dequeue();
}

bool wait_group::wait_slow(detail::waiter* w, std::coroutine_handle<> h,
                           const std::source_location& where) {
  return q_.park(w, h, "wait_group wait", where, [&] {
    // Acquire (load and failed CAS): pairs with the releases of the add()s
    // that reached zero, when we find zero and do not park.
    std::uint64_t s = state_.load(std::memory_order_acquire);
    for (;;) {
      if (counter(s) == 0) return false;
      // Success needs no more than relaxed: it only announces a waiter to
      // the add() that will reach zero, which reads it under the queue lock
      // we hold. It is acquire anyway, as the failure order: g++ 12 warns
      // (-Winvalid-memory-model) at -O0 when the failure order is the
      // stronger, and on x86 the locked CAS orders both alike.
      if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acquire,
                                       std::memory_order_acquire))
        return true;
    }
  });
}

void wait_group::unqueue(detail::waiter* w) noexcept {
  q_.unlink(w, 0, [&](detail::waitq*) -> detail::waiter* {
    // One waiter fewer. Relaxed: the counter is untouched; the count is
    // read under the queue lock we hold. An RMW, so the release sequence
    // of the add()s stays intact.
    state_.fetch_sub(1, std::memory_order_relaxed);
    return nullptr;
  });
}

}  // namespace mpg
