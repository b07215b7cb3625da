// mpg/context.hpp: cancellation and deadlines that flow down a tree of
// contexts (Go's context package, without values).
//
//   auto [ctx, cancel] = mpg::with_cancel(mpg::background());
//   auto [tctx, tcancel] = mpg::with_timeout(ctx, 2s);
//   co_await mpg::select(work.recv(), tctx.done().recv());   // done() closes on cancel
//   absl::Status why = tctx.err();   // OK while live; kCancelled or kDeadlineExceeded
//   cancel();                        // cancels ctx and every descendant
//
// A context is a cheap handle (a shared pointer) to a node. Cancelling a
// node cancels its whole subtree: children, grandchildren, ... each with the
// cause of the cancellation (kCancelled for a cancel_func, kDeadlineExceeded
// for a deadline), and closes each node's done() channel, which wakes every
// task waiting on it, in a select or not. A child of an already cancelled
// parent is born cancelled. Cancelling is idempotent and may come from any
// thread, including threads outside the runtime and timer callbacks.
//
// Deadlines: with_deadline(parent, tp) cancels with kDeadlineExceeded at tp,
// through a runtime timer (so it must be called inside a task: outside one it
// throws runtime_misuse_error, a std::logic_error). A child's deadline is the
// earlier of its own and its parent's; if the parent's is earlier already, no
// timer is armed (the parent's will cancel the child). A deadline in the past
// cancels at once.
//
// Design. Each node holds a strong reference to its parent and is linked,
// by raw pointers, into its parent's list of children (guarded by the
// parent's spinlock). Parents do not keep children alive: dropping the last
// handle of an uncancelled child destroys it, and its destructor unlinks it
// (and stops its timer). Cancellation, under the node's lock, marks it
// cancelled and unlinks all its children at once while promoting each to a
// strong reference (a child whose last handle is going away fails the
// promotion and is skipped: nobody can observe it any more); then, with no
// lock held, it closes done() and stops its timer, the promoted children
// are cancelled in turn, and only then does it unlink itself from its parent
// (Go's removeChild, after the subtree: see Finishing). Neither the
// cancel of a subtree nor the freeing of a chain (a node drops its parent
// last) recurses per level: both loop, so a chain of any depth is safe.
//
// Finishing. The cancellation that sets a node's cancelled_ (its winner)
// stores finished_ (release) on every node it won once it has walked the
// whole subtree. Any other cancel that meets a cancelled node waits for its
// finished_ (acquire) before it returns or goes on, so every cancel returns
// with the subtree cancelled, as Go's, whose CancelFunc holds the lock
// throughout. A node stays in its parent's list until its winner has
// finished, so an ancestor's cancel that starts meanwhile still meets it
// and waits. Waits only go down the tree, to the winner of a descendant,
// whose walk runs no task code and waits only further down, so they cannot
// form a cycle. A timer's fire() that loses does not wait: the winner may be
// waiting in cancel_timer() for that fire() to return. A cancel_func call
// holds a reference to its node for its length: a task woken by done() may
// drop every other handle meanwhile.
//
// Rejected: Go's design, where the parent's map keeps each child alive until
// the child is cancelled: in C++ that leaks every child whose cancel_func is
// never called (Go's vet warns about exactly that leak). A goroutine per
// context watching the parent (Go's fallback for foreign contexts): a task
// per node, for nothing.
//
// Invariants:
//   - A node's children list holds only nodes whose destructor has not yet
//     unlinked them and that are uncancelled or whose cancel is still
//     walking their subtree; it is empty once the node is cancelled.
//   - err_ is written once, before cancelled_ is set, and never again.
//   - done_ is closed exactly once, by the cancellation that set cancelled_.
//   - The timer (if any) holds no reference: the destructor cancels it
//     (cancel_timer waits for a running fire()). fire() holds a reference
//     while it cancels (promoted from weak_from_this(); none to take means
//     the destructor has begun, and fire() does nothing), so the node is
//     destroyed inside its own fire() only when that reference goes, after
//     fire() marked the timer fired.
//
// Watchers (internal: I/O bound to a context, mpg/detail/io/io_context.hpp).
// A context_watcher is a function that a node calls once, on the cancelling
// thread, when it is cancelled. It lives in its owner's memory (a coroutine
// frame), which must not go away while the node may still call it; so the
// owner unwatches before it does, and unwatch() returns only when the
// function is not running and never will. The protocol, on the node's lock_
// and the watcher's state (linked, firing, fired):
//   W1. watch(w), under lock_: if the node is cancelled, return false (w is
//       not linked and its function never runs); else link w, state linked.
//   W2. cancel(), in the critical section that sets cancelled_: take the
//       whole list and mark each watcher firing. Then, holding no lock, for
//       each: read its next link, call fn(w), store state fired (release);
//       that store is the canceller's last access to w.
//   W3. unwatch(w), under lock_: a linked watcher is unlinked and done with
//       (fn never runs: the cancel that takes lock_ later finds it gone).
//       Otherwise W2 claimed it under lock_ already; unwatch leaves the lock
//       and waits until state is fired (acquire, pairing with W2's release),
//       so everything fn did happens-before unwatch returns.
// The linked -> firing step happens only under lock_, in the same section
// that sets cancelled_, so W1 and W3 decide on a state that cannot change
// under them. The wait of W3 is short: fn must be brief and non-blocking
// (it may take other spin locks, never this node's). A watcher's owner holds
// a handle to the node, so the node outlives every linked watcher.
//
// A context may outlive the runtime its deadline timer was armed on:
// ~runtime detaches pending timers, and a fired timer is not touched again.
// Tasks wait on a context through done(), a channel: a waiter killed by
// ~runtime unlinks itself from it (chan.hpp), so a later cancel() closes it
// safely. I/O bound to a context watches it (io_context_binding, the
// receive's wait in recv_queue.cpp): each watcher leaves the node in its
// destructor, so a frame killed by ~runtime leaves nothing linked. The
// children list links heap nodes only, each unlinked by its own destructor:
// no coroutine frame is ever on it.
//
// Memory ordering: cancelled_ is stored with release after err_ is written
// and loaded with acquire by err(), so a reader that sees it cancelled sees
// the cause. The children list and linked_ flags are guarded by the parent's
// lock. Waking waiters goes through the done channel's lock and ready().
#pragma once

#include <absl/base/thread_annotations.h>
#include <absl/status/status.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <variant>
#include <vector>

#include "mpg/chan.hpp"
#include "mpg/detail/sched/clock.hpp"
#include "mpg/detail/sched/timer.hpp"
#include "mpg/detail/sync/spinlock.hpp"

namespace mpg {

namespace detail {

// context_watcher: see "Watchers" above. fn must not throw, block, or call
// into the node it watches.
struct context_watcher {
  enum : std::uint8_t { kIdle, kLinked, kFiring, kFired };
  void (*fn)(context_watcher*) noexcept = nullptr;
  context_watcher* prev = nullptr;  // links guarded by the node's lock
  context_watcher* next = nullptr;
  // kLinked/kFiring written under the node's lock; kFired by the canceller
  // after fn returns (release; unwatch() waits for it with acquire).
  std::atomic<std::uint8_t> state{kIdle};
};

class context_node : public std::enable_shared_from_this<context_node> {
 public:
  // The root (background): never cancelled, no deadline.
  context_node() = default;
  explicit context_node(std::shared_ptr<context_node> parent);
  ~context_node();
  context_node(const context_node&) = delete;
  context_node& operator=(const context_node&) = delete;

  // cancel(): cancel this node and its subtree with `why` (not OK).
  // from_timer: called by this node's own timer (do not cancel that timer).
  void cancel(const absl::Status& why, bool from_timer = false) noexcept;
  // arm_deadline(): cancel with kDeadlineExceeded at tp (called once, right
  // after construction, before the node is shared).
  void arm_deadline(std::chrono::steady_clock::time_point tp);
  // attach(): link into the parent's children, or cancel at once if the
  // parent is already cancelled. Called once, after construction.
  void attach();

  // watch(): W1 above. False if the node is already cancelled (w is not
  // linked; its function never runs). Any thread.
  bool watch(context_watcher* w) noexcept;
  // unwatch(): W3 above. After it returns, w's function is not running and
  // never will; w may be reused or freed. Any thread but w's function's.
  void unwatch(context_watcher* w) noexcept;

  bool cancelled() const noexcept { return cancelled_.load(std::memory_order_acquire); }
  // never_cancelled(): the root (background), which nothing cancels.
  bool never_cancelled() const noexcept { return parent_ == nullptr; }
  absl::Status err() const;
  const chan<std::monostate>& done() const noexcept { return done_; }
  const std::optional<std::chrono::steady_clock::time_point>& deadline() const noexcept {
    return deadline_;
  }

 private:
  static void fire(timer* t) noexcept;
  // cancel_one(): false if the node was cancelled already (by another call).
  bool cancel_one(const absl::Status& why, bool from_timer,
                  std::vector<std::shared_ptr<context_node>>& kids) noexcept;
  // wait_finished(): until the call that cancelled us has cancelled our subtree.
  void wait_finished() const noexcept;
  void unlink_from_parent() noexcept;
  static void release_parent(std::shared_ptr<context_node> p) noexcept;

  // Set at construction; moved out only by the destructor.
  std::shared_ptr<context_node> parent_;
  chan<std::monostate> done_;
  std::optional<std::chrono::steady_clock::time_point> deadline_;

  mutable spinlock lock_;
  absl::Status err_ ABSL_GUARDED_BY(lock_);
  std::atomic<bool> cancelled_{false};
  // Set (release) by the cancel() call that cancelled this node once it
  // has cancelled the whole subtree; later calls wait for it.
  std::atomic<bool> finished_{false};
  // This node's children (intrusive, through their sibling links).
  context_node* first_child_ ABSL_GUARDED_BY(lock_) = nullptr;
  // Watchers to call on cancellation (W1-W3); empty once cancelled.
  context_watcher* first_watcher_ ABSL_GUARDED_BY(lock_) = nullptr;
  // Links in the parent's list, guarded by the parent's lock_.
  context_node* prev_sibling_ = nullptr;
  context_node* next_sibling_ = nullptr;
  bool linked_ = false;

  timer timer_;
  bool timer_armed_ = false;
  // Set (release) at the end of fire(): a fired timer is never cancelled
  // (cancel_timer would touch the runtime, which may be gone by then).
  std::atomic<bool> timer_fired_{false};
};

}  // namespace detail

// context
//
// A handle to a node of the context tree. Copies share the node. A
// default-constructed context is background().
class context {
 public:
  context();
  explicit context(std::shared_ptr<detail::context_node> n) noexcept : node_(std::move(n)) {}
  // Copies only: a move copies too, so a moved-from context still names
  // its node (every call dereferences node_, which must never be null).
  context(const context&) noexcept = default;
  context& operator=(const context&) noexcept = default;

  // context::done()
  //
  // A channel that is closed when the context is cancelled (never, for
  // background()). Use `ctx.done().recv()` as a select case, or await it.
  chan<std::monostate> done() const noexcept { return node_->done(); }

  // context::err(): OK while live; kCancelled or kDeadlineExceeded after.
  absl::Status err() const { return node_->err(); }

  // context::cancelled(): !err().ok(), without building a Status.
  bool cancelled() const noexcept { return node_->cancelled(); }

  // context::deadline(): when the context will be cancelled by a deadline
  // (its own or an ancestor's), if ever.
  std::optional<std::chrono::steady_clock::time_point> deadline() const noexcept {
    return node_->deadline();
  }

  const std::shared_ptr<detail::context_node>& node_for_internal_use() const noexcept {
    return node_;
  }

 private:
  std::shared_ptr<detail::context_node> node_;
};

// cancel_func
//
// Cancels its context (and every descendant) with kCancelled. Callable any
// number of times, from any thread; a call after the first changes
// nothing, but, as Go's, returns only once the whole subtree is cancelled
// (it waits for the call that is cancelling it). Keeps the context's node
// alive. A task waiting on done() may destroy the context and this
// cancel_func as soon as it is woken: the call keeps what it still needs.
class cancel_func {
 public:
  cancel_func() noexcept = default;
  explicit cancel_func(std::shared_ptr<detail::context_node> n) noexcept : node_(std::move(n)) {}
  void operator()() const noexcept;

 private:
  std::shared_ptr<detail::context_node> node_;
};

// background(): the root context: never cancelled, no deadline.
context background();

// with_cancel(): a child of parent, and the function that cancels it.
std::pair<context, cancel_func> with_cancel(const context& parent);

// with_deadline(): with_cancel, plus cancellation with kDeadlineExceeded at
// tp. Throws runtime_misuse_error outside a task when a timer is needed.
std::pair<context, cancel_func> with_deadline(const context& parent,
                                              std::chrono::steady_clock::time_point tp);

// with_timeout(): with_deadline(parent, now + d).
template <class Rep, class Period>
std::pair<context, cancel_func> with_timeout(const context& parent,
                                             std::chrono::duration<Rep, Period> d) {
  return with_deadline(parent, detail::deadline_after(d));  // saturating
}

}  // namespace mpg
