// lib/sync/wait_group.cpp: counter updates and the parking path of
// mpg::wait_group (design, invariants and ordering in wait_group.hpp).
#include "mpg/wait_group.hpp"

#include <cstdint>
#include <limits>

#include "mpg/errors.hpp"

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
// only under this lock.
void wait_group::reach_zero(std::int64_t delta) {
  std::int64_t bad = 0;
  q_.wake([&](detail::waitq* queues) -> detail::waiter* {
    std::uint64_t s = state_.load(std::memory_order_relaxed);
    for (;;) {
      const std::int64_t v = counter(s) + delta;
      if (!counter_ok(v)) {
        bad = v;
        return nullptr;
      }
      const bool wake_all = v == 0;  // waiters(s) != 0 here iff the queue is non-empty
      const std::uint64_t ns = wake_all ? 0 : pack(v, waiters(s));
      // acq_rel: as in add(); the waiters are released by this CAS and
      // ready(), both before the lock that ends our touches of the group.
      if (state_.compare_exchange_weak(s, ns, std::memory_order_acq_rel,
                                       std::memory_order_relaxed))
        // dequeue_all: a queued select case that lost elsewhere is dropped
        // (its clean-up then finds it unqueued and leaves the count alone).
        return wake_all ? queues[0].dequeue_all() : nullptr;
    }
  });
  if (bad != 0) throw_bad_counter(bad);
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
