// lib/sched/timers.cpp: per-P timer heaps (Go's runtime timers, simplified).
//
// Each P keeps its timers in a 4-ary min-heap ordered by deadline (a 4-ary
// heap is shallower than a binary one and its four children share a cache
// line). A timer is added to the caller's P, so most timers are added,
// fired and cancelled by one thread; the heap is still under a lock of its
// own so that any thread can run a P's due timers: the M that holds the P
// (every scheduling tick), a spinning M stealing from it, or sysmon when the
// P is stuck in a long-running G. Adding and cancelling cost O(log n).
//
// Invariants:
//   - t->heap_index >= 0 iff t is in its owner's heap (under the heap lock).
//   - timers.earliest_ns is the deadline of heap[0], or INT64_MAX.
//   - At most one thread runs a P's due timers at a time (firing_ flag); the
//     timer it is firing, if any, is published in firing_now so that
//     cancel_timer() can wait for fire() to return.
// A timer added to a P that sleeps (idle, or parked until its old earliest
// deadline) wakes that P so that it recomputes its deadline.
//
// Shutdown. ~runtime kills the tasks still live by destroying their frames,
// and timers live wherever their owner put them: in a frame (a sleep's
// awaiter; a bare timer in a test), or on the heap (an after() channel's
// state, a context node), which may outlive the runtime. So the kill path
// detaches every timer first (detach_timers(), called by kill_remaining()
// before it destroys any frame): the heaps are emptied and each timer's
// owner is cleared, so a pending timer never fires and cancel_timer() on it
// returns false without touching a P. Then no heap points into a frame when
// the frame is freed, whoever owns the timer and whichever destructor runs
// next: a heap owner destroyed by the kill (the last handle to an after()
// channel was in a killed frame) or long after it finds its timer detached.
// Rejected: cancelling from the owners' destructors, as channel waiters
// unlink themselves from their wait queues (waitq.hpp). Wait queues live in
// user objects that the runtime cannot enumerate, so there each waiter must
// clean up after itself; the timer heaps belong to the runtime, and one
// pass over them covers every owner, including bare timers with no
// destructor and owners yet to be written. Destructor cancellation would
// also cost every sleep a flag (the destructor cannot otherwise tell a
// fired timer from a pending one without the heap lock) and still need the
// detach for heap owners that outlive the runtime.
#include <thread>

#include "mpg/errors.hpp"
#include "mpg/detail/sched/timer.hpp"
#include "sched/scheduler.hpp"
#include "sched/trace.hpp"

namespace mpg::detail {

namespace {
constexpr std::size_t kArity = 4;

std::int64_t ns_of(const timer* t) { return to_ns(t->when); }

void place(std::vector<timer*>& h, std::size_t i, timer* t) {
  h[i] = t;
  t->heap_index = static_cast<std::int32_t>(i);
}

void sift_up(std::vector<timer*>& h, std::size_t i) {
  timer* t = h[i];
  while (i > 0) {
    std::size_t parent = (i - 1) / kArity;
    if (h[parent]->when <= t->when) break;
    place(h, i, h[parent]);
    i = parent;
  }
  place(h, i, t);
}

void sift_down(std::vector<timer*>& h, std::size_t i) {
  timer* t = h[i];
  const std::size_t n = h.size();
  for (;;) {
    std::size_t first = i * kArity + 1;
    if (first >= n) break;
    std::size_t best = first;
    for (std::size_t c = first + 1; c < first + kArity && c < n; ++c)
      if (h[c]->when < h[best]->when) best = c;
    if (t->when <= h[best]->when) break;
    place(h, i, h[best]);
    i = best;
  }
  place(h, i, t);
}

void remove_at(std::vector<timer*>& h, std::size_t i) {
  timer* t = h[i];
  timer* last = h.back();
  h.pop_back();
  t->heap_index = -1;
  if (i < h.size()) {
    place(h, i, last);
    sift_down(h, i);
    sift_up(h, static_cast<std::size_t>(last->heap_index));
  }
}

void publish_earliest(timer_heap& th) ABSL_EXCLUSIVE_LOCKS_REQUIRED(th.mu) {
  // Relaxed: a hint; see processor.hpp.
  th.earliest_ns.store(th.heap.empty() ? INT64_MAX : ns_of(th.heap.front()),
                       std::memory_order_relaxed);
}
}  // namespace

void add_timer(timer* t, scheduler* s) {
  if (s == nullptr) s = current_scheduler();
  if (s == nullptr) throw runtime_misuse_error("mpg: a timer was used outside any runtime");
  processor* p = current_p_of(s);
  s->add_timer(p != nullptr ? p : s->p_at(0), t);
}

void scheduler::add_timer(processor* p, timer* t) {
  t->owner = p;
  bool earliest = false;
  {
    thread_mutex_lock l(p->timers.mu);
    auto& h = p->timers.heap;
    h.push_back(t);
    sift_up(h, h.size() - 1);
    earliest = h.front() == t;
    if (earliest) publish_earliest(p->timers);
  }
  if (!earliest || current_p_of(this) == p) return;
  // The P may sleep past the new deadline: make its holder look again, or,
  // if nobody holds it, start an M for it (p_ownership.cpp). Its status is
  // read under mu_ after the new deadline was published under the heap
  // lock: an M deciding under mu_ to park the P or release it reads the
  // deadline after us, or we see the P parked or idle.
  m_wakeup wake;
  bool start = false;
  {
    thread_mutex_lock l(mu_);
    if (p->status == p_status::parked) {
      // Its holder re-reads the deadline when it wakes with nothing handed
      // over (wait_for_p).
      wake = m_wakeup{p->parked_m, p, p->parked_m->sleeps_in};
    } else if (p->status == p_status::idle) {
      start = pidle_remove(p);
    }
  }
  if (wake) send_wakeup(wake);
  if (start) start_m(p, spin_state::idle);
}

bool cancel_timer(timer* t) noexcept {
  processor* p = t->owner;
  if (p == nullptr) return false;
  {
    thread_mutex_lock l(p->timers.mu);
    if (t->heap_index >= 0) {
      remove_at(p->timers.heap, static_cast<std::size_t>(t->heap_index));
      publish_earliest(p->timers);
      // A later cancel_timer() (an owner's destructor, maybe after the
      // runtime is gone) returns false without touching the P.
      t->owner = nullptr;
      return true;
    }
  }
  // Fired or firing: wait until fire() has returned. Acquire pairs with the
  // runner's release store of nullptr after fire().
  while (p->timers.firing_now.load(std::memory_order_acquire) == t) std::this_thread::yield();
  return false;
}

std::int64_t scheduler::run_timers(processor* p, std::int64_t now) noexcept {
  timer_heap& th = p->timers;
  // One runner at a time per P; acquire/release order the runners' heap use
  // (they also take the lock) and publish firing_now transitions.
  if (th.firing.exchange(true, std::memory_order_acquire))
    return th.earliest_ns.load(std::memory_order_relaxed);
  std::int64_t next = INT64_MAX;
  for (;;) {
    timer* t = nullptr;
    {
      thread_mutex_lock l(th.mu);
      if (th.heap.empty() || ns_of(th.heap.front()) > now) {
        next = th.heap.empty() ? INT64_MAX : ns_of(th.heap.front());
        publish_earliest(th);
        break;
      }
      t = th.heap.front();
      remove_at(th.heap, 0);
      publish_earliest(th);
      // Release: a canceller of the previous timer that reads this value
      // instead of the nullptr stored after its fire() (cancel_timer's
      // wait) must still see that fire() complete; in C++20 a plain store
      // does not continue the earlier store's release sequence.
      th.firing_now.store(t, std::memory_order_release);
    }
    t->fire(t);  // t may be freed by its owner from here on
    if (trace_on()) [[unlikely]] trace_timer_fired(p->id);
    th.firing_now.store(nullptr, std::memory_order_release);
  }
  th.firing.store(false, std::memory_order_release);
  return next;
}

void scheduler::detach_timers() noexcept {
  // Shutdown (see the top of the file), before any frame is destroyed.
  // Memory ordering: stop() has joined every M and sysmon, so every
  // run_timers(), add_timer() and cancel_timer() they made happens-before
  // this (thread join); no runner is active, and firing_now is null. The
  // lock is still taken because it guards the heap (and costs nothing
  // here). The plain stores to owner and heap_index are read afterwards
  // only by this thread (destructors run by kill_remaining, sequenced
  // after) or by threads that drop a heap owner after ~runtime returned,
  // which must be ordered after it by the program anyway: a cancel_timer()
  // racing with ~runtime could lock a P being freed (timer.hpp forbids it).
  for (auto& p : ps_) {
    thread_mutex_lock l(p->timers.mu);
    for (timer* t : p->timers.heap) {
      t->heap_index = -1;
      t->owner = nullptr;  // cancel_timer() on it now returns false at once
    }
    p->timers.heap.clear();
    publish_earliest(p->timers);
  }
}


}  // namespace mpg::detail
