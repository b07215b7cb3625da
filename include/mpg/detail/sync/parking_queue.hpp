// mpg/detail/sync/parking_queue.hpp: parking_queue, the one place where the
// sync primitives (mutex, rwmutex, semaphore, wait_group, once) park and
// wake tasks (Go's sema.go, TooManyCooks' waiter_list). Each primitive keeps
// only its state word and the rules that read and write it; this type owns
// the spinlock, the FIFO(s) of waiters and the protocol around them.
//
// The protocol, for a primitive with state word S guarded by nothing but
// atomics on its fast paths:
//   P1. park(w, h, ..., may_park): takes the lock and calls may_park(),
//       which re-checks S and either completes the operation (a CAS on S;
//       returns false: no parking) or records in S that a waiter is coming
//       (returns true). Then the G is parked (g.hpp, step 1), w is pushed
//       and the lock is released: that release publishes w (step 2); the
//       caller must not touch w or the awaiter after park() returns true.
//   P2. wake(decide): takes the lock and calls decide(queues), which makes
//       the release's change to S (a CAS, or a release store where the lock
//       and S's state leave no concurrent RMW) and takes off the queue the
//       waiters that change lets go, returned as a chain through `next`;
//       the lock is released and only then are they readied (g.hpp, step
//       3). Deciding and changing S under the one lock is what keeps the
//       decision to wake and the state it is made on from drifting apart
//       (a done() that found zero cannot wake the next round's waiter).
//   P3. unlink(w, queue, after): a waiter destroyed while queued (its task
//       killed at shutdown) takes itself off, and after() repairs S when
//       that empties the queue (and may return waiters to ready).
//   P4. A waker that hands something over to a waiter it takes off (the
//       lock, a permit, a mutex's wake-up claim, the run of a once's f)
//       records it in the waiter's awaiter, a plain field written in
//       decide() under the lock, so before ready(); the waiter takes it up
//       when it resumes (a plain write to its own awaiter: nothing is added
//       to the paths' atomics). A waiter destroyed with its record still
//       set was readied and killed before it ran (see "Shutdown"): it gives
//       back what it was handed, as its own release would have. (A once's
//       runner keeps its record set while f runs, so a runner killed in
//       the middle of f gives the run back the same way: once.hpp.)
// Why no wake-up is lost: a releaser's CAS on S and a waiter's P1 CAS are
// RMWs on one word, so one sees the other. A releaser that takes the fast
// path (no lock) did so on a state that says nobody is queued, and P1 of any
// waiter that comes later re-checks S under the lock and sees the release.
//
// Destruction (the rule every primitive follows). A sync object may be
// destroyed by the task that has just returned from waiting on it, or that
// observed the release on a fast path: Go's `{ var wg WaitGroup; ...;
// wg.Wait() }`, and POSIX's "destroying a mutex right after the last unlock
// is safe". (So may it while a select whose case on it lost has not yet
// cleaned up: wait_group.hpp, "Select", W1-W4.) So a release path either
//   - ends with its publishing atomic on S and touches nothing after it
//     (the fast paths: one CAS), or
//   - publishes its change to S inside wake(), under the lock, and then
//     touches only the lock's release store (readying the waiters it took
//     touches their frames, never the object), or
//   - publishes with a CAS that also claims, in S, the duty to wake a
//     waiter that is still queued (mutex: kWoken), and then calls wake():
//     until that waiter is readied it has not returned from its operation,
//     so nobody may destroy the object, and no other party can ready it.
// ~parking_queue takes the lock once: a destroyer that saw the release in S
// before the releaser's unlock waits there for it (and, for TSan, acquires
// it). Nothing else in a release path comes back to the object.
//
// Shutdown. ~runtime kills the remaining tasks one after another (newest
// first, so a child that borrows from its parent's frame goes before the
// parent: runtime.cpp). Either frame may hold the primitive: a waiter whose
// task is killed first unlinks itself (P3); a primitive destroyed first
// detaches the waiters still queued in ~parking_queue (waitq::detach_all),
// whose awaiters then find their kQueued bit clear and leave the freed
// queue alone. Both are needed: descending ids order parents and children,
// but a task may as well wait on a primitive in a younger, unrelated frame.
// A waiter readied but killed before it ran (readied before ~runtime began,
// by a task of another runtime, a plain thread or a task of its own; or
// during the kill, by the destructor of a killed frame, a guard's unlock)
// gives back its record (P4), from its awaiter's destructor, on the thread
// that kills. Its primitive is no longer queued on, so a primitive
// destroyed first cannot detach it: instead every primitive that hands over
// (mutex, rwmutex, semaphore, once) reports its destruction to the kill in
// progress on its thread (note_destroyed_in_kill), and a killed waiter gives
// back only to a primitive not reported (destroyed_in_kill). That is exact:
// the waiter has not returned from its operation, so the only legitimate
// destruction of its primitive is one by a frame (or what a frame owns)
// killed earlier in this same kill, on the killing thread (or the thread
// that destroys a deep chain for it, which shares its list: shutdown.cpp).
// Freed anywhere else (another runtime's kill included) before this kill,
// the primitive was freed under a task that a live runtime was about to
// run into it: the misuse that the destruction rule already makes it.
//
// Invariants (under the lock):
//   - Each queued waiter has kQueued set and belongs to a parked G that
//     nobody has readied; once taken off (P2, P3, detach) it is never
//     touched by this queue again.
//   - What S says about the queues (waiter bits, counts) is changed only
//     under the lock, together with the queue change it describes.
//
// Memory ordering: the lock is acquire/release, so everything decide() and
// may_park() read and write is ordered between holders; the waiters' fields
// (set by P1 before the publishing unlock, written by P2 before ready()) are
// ordered by the lock and by ready() (release/acquire through the run
// queues, g.hpp). The orders on S are argued by each primitive.
#pragma once

#include <absl/base/thread_annotations.h>

#include <coroutine>
#include <source_location>

#include "mpg/detail/sched/g.hpp"
#include "mpg/detail/sync/spinlock.hpp"
#include "mpg/detail/sync/waitq.hpp"

namespace mpg::detail {

// note_destroyed_in_kill(): a primitive that hands over (P4) calls it from
// its destructor; if the calling thread is killing a runtime's tasks
// (shutdown.cpp, step 6), obj is added to that kill's list of destroyed
// objects. Otherwise it does nothing (one thread_local read).
void note_destroyed_in_kill(const void* obj) noexcept;
// destroyed_in_kill(): whether obj was reported by note_destroyed_in_kill
// during the kill the calling thread is running (false outside a kill).
bool destroyed_in_kill(const void* obj) noexcept;

template <unsigned Queues = 1>
class parking_queue {
  static_assert(Queues >= 1);

 public:
  parking_queue() noexcept = default;
  parking_queue(const parking_queue&) = delete;
  parking_queue& operator=(const parking_queue&) = delete;

  // ~parking_queue: waits for a releaser still inside wake() (see
  // "Destruction") and detaches the waiters of killed frames ("Shutdown").
  ~parking_queue() {
    spin_guard lk(lock_);
    for (waitq& q : queues_) q.detach_all();
  }

  // park(): P1. may_park() runs under the lock; true parks w on `queue`
  // (at its front if `front`). Returns whether the G parked; outside a task
  // throws std::logic_error (from detail::park), before touching anything.
  template <class MayPark>
  bool park(waiter* w, std::coroutine_handle<> h, const char* reason, std::source_location where,
            MayPark&& may_park, unsigned queue = 0, bool front = false) {
    g* self = current_g();
    if (self == nullptr) detail::park(h, reason, where);  // throws: not in a task
    spin_guard lk(lock_);
    if (!may_park()) return false;
    w->set_g(self);
    detail::park(h, reason, where);
    if (front)
      queues_[queue].push_front(w);
    else
      queues_[queue].push_back(w);
    return true;  // the guard's unlock publishes w
  }

  // decide(): may_park() under the lock, nothing parked (for a caller with
  // no G, whose may_park() changes nothing when it returns true).
  template <class MayPark>
  bool decide(MayPark&& may_park) {
    spin_guard lk(lock_);
    return may_park();
  }

  // wake(): P2. decide(waitq* queues) runs under the lock and returns the
  // waiters to ready (chained through `next`, as take_all() and
  // pop_front() leave them), or nullptr. The object may be gone once the
  // lock is released, so nothing after it touches `this`.
  template <class Decide>
  void wake(Decide&& decide) {
    waiter* chain;
    {
      spin_guard lk(lock_);
      chain = decide(queues_);
    }
    ready_chain(chain);
  }

  // Select support (select.hpp's case contract), for a primitive whose
  // wait is a select case (wait_group): the lock joins the select's lock
  // set, and the case's hooks, called with it held, queue and unqueue their
  // waiter here. A waker of such a primitive must claim the select of each
  // select waiter it takes (waitq::dequeue does; wait_group's crossing
  // claims in its own loop, wait_group.hpp, W3), never take_all.
  spinlock* select_lock() noexcept { return &lock_; }
  void select_push(waiter* w, unsigned queue = 0) noexcept {
    lock_.assert_held();
    queues_[queue].push_back(w);
  }
  bool select_remove(waiter* w, unsigned queue = 0) noexcept {
    lock_.assert_held();
    return queues_[queue].remove(w);
  }

  // unlink(): P3, for the destructor of an awaiter whose waiter is still
  // queued (the caller checked waiter::queued()). If w is still on `queue`
  // (a waker may have taken it meanwhile), removes it and calls
  // after(queues) under the lock, which returns waiters to ready or nullptr.
  template <class After>
  void unlink(waiter* w, unsigned queue, After&& after) noexcept {
    waiter* chain = nullptr;
    {
      spin_guard lk(lock_);
      if (queues_[queue].remove(w)) chain = after(queues_);
    }
    ready_chain(chain);
  }

 private:
  spinlock lock_;
  waitq queues_[Queues] ABSL_GUARDED_BY(lock_);
};

}  // namespace mpg::detail
