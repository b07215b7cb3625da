// lib/sync/context.cpp: the context tree (design, invariants and ordering in
// context.hpp).
#include "mpg/context.hpp"

#include "mpg/detail/sched/clock.hpp"

#include <vector>

namespace mpg {

namespace detail {

namespace {
absl::Status canceled_status() { return absl::CancelledError("context canceled"); }
absl::Status deadline_status() { return absl::DeadlineExceededError("context deadline exceeded"); }
}  // namespace

context_node::context_node(std::shared_ptr<context_node> parent) : parent_(std::move(parent)) {
  if (parent_) deadline_ = parent_->deadline_;
}

context_node::~context_node() {
  // First, so that a fire() in progress (which uses this node) completes
  // before any member goes. Reached from our own fire() only when it drops
  // its reference, after it stored timer_fired_ (fire(), below).
  if (timer_armed_ && !timer_fired_.load(std::memory_order_acquire)) cancel_timer(&timer_);
  unlink_from_parent();
  // Unlinked: no cancel reaches us through the parent any more. Our
  // reference to it goes last, and not by recursion: dropping the leaf of
  // a long chain would otherwise run one destructor per level on the stack.
  release_parent(std::move(parent_));
}

namespace {
// The slot of the outermost release_parent() on this thread (see there).
thread_local std::shared_ptr<context_node>* t_parent_slot = nullptr;
}  // namespace

void context_node::release_parent(std::shared_ptr<context_node> p) noexcept {
  if (t_parent_slot != nullptr) {
    // Inside the loop below (our destructor runs from its reset()): hand
    // the parent to it. The slot is empty but in odd nestings; then p
    // drops here, one level deeper.
    if (!*t_parent_slot) *t_parent_slot = std::move(p);
    return;
  }
  std::shared_ptr<context_node> slot = std::move(p);
  t_parent_slot = &slot;
  while (slot) {
    std::shared_ptr<context_node> cur = std::move(slot);
    cur.reset();  // may destroy it, and its destructor fills the slot
  }
  t_parent_slot = nullptr;
}

void context_node::attach() {
  context_node* p = parent_.get();
  // The root (background) is never cancelled: nothing to propagate.
  if (p == nullptr || p->parent_ == nullptr) return;
  absl::Status why;
  {
    spin_guard lk(p->lock_);
    if (!p->cancelled_.load(std::memory_order_relaxed)) {
      // Our own deadline may have cancelled us already (arm_deadline ran
      // first); a cancelled node stays out of the list.
      if (cancelled_.load(std::memory_order_acquire)) return;
      prev_sibling_ = nullptr;
      next_sibling_ = p->first_child_;
      if (next_sibling_) next_sibling_->prev_sibling_ = this;
      p->first_child_ = this;
      linked_ = true;
      return;
    }
    why = p->err_;
  }
  cancel(why);
}

void context_node::arm_deadline(std::chrono::steady_clock::time_point tp) {
  if (deadline_ && *deadline_ <= tp) return;  // an ancestor cancels us first
  deadline_ = tp;
  if (tp == std::chrono::steady_clock::time_point::max()) return;
  if (tp <= detail::mono_now()) {
    cancel(deadline_status());
    return;
  }
  timer_.when = tp;
  timer_.fire = &context_node::fire;
  timer_.arg = this;
  add_timer(&timer_, nullptr);  // throws outside a runtime: nothing armed
  // The armed timer may fire on another M or sysmon already: fire() comes
  // with from_timer and never reads timer_armed_, which only this node's
  // cancel paths do, and no other thread can reach those yet.
  timer_armed_ = true;
}

void context_node::fire(timer* t) noexcept {
  auto* self = static_cast<context_node*>(t->arg);
  // The timer holds no reference, so fire() takes one for the cancel: the
  // cancel may free the last other owner of this node (a child it holds
  // while it cancels it, whose parent_ was the last handle). None to take:
  // the destructor has begun and waits in cancel_timer() for this call to
  // return, and the node is cancelled no more.
  const std::shared_ptr<context_node> keep = self->weak_from_this().lock();
  if (!keep) return;
  self->cancel(deadline_status(), /*from_timer=*/true);
  // Release: pairs with the acquire loads before cancel_timer(). The last
  // touch but keep's release, which may run the destructor here: it finds
  // the timer fired and does not wait for this fire().
  self->timer_fired_.store(true, std::memory_order_release);
}

void context_node::cancel(const absl::Status& why, bool from_timer) noexcept {
  // The subtree, by a work list rather than recursion: a deep chain of
  // contexts must not take one stack frame per level.
  std::vector<std::shared_ptr<context_node>> pending;
  if (!cancel_one(why, from_timer, pending)) {
    // Another call got here first. As Go's CancelFunc (which holds the
    // context's lock throughout), return only once it has cancelled the
    // whole subtree. A timer's fire() does not wait: the winner may be
    // waiting for that very fire() in cancel_timer(). Waits only go down
    // the tree (to the winner of a descendant), so they cannot form a cycle.
    if (!from_timer) wait_finished();
    return;
  }
  std::vector<std::shared_ptr<context_node>> won;
  while (!pending.empty()) {
    std::shared_ptr<context_node> k = std::move(pending.back());
    pending.pop_back();
    if (k->cancel_one(why, false, pending))
      won.push_back(std::move(k));
    else
      k->wait_finished();
  }
  // Release: the whole subtree's cancellation happens-before a waiter's
  // return (wait_finished's acquire).
  for (auto& k : won) k->finished_.store(true, std::memory_order_release);
  finished_.store(true, std::memory_order_release);
  // Only now leave the parent's list (as Go's removeChild, after the
  // subtree): an ancestor's cancel that starts while we walk must still
  // meet this node and wait for it. The nodes won below were unlinked by
  // their parents' cancel_one().
  unlink_from_parent();
}

void context_node::wait_finished() const noexcept {
  short_section_backoff backoff;
  while (!finished_.load(std::memory_order_acquire)) backoff.pause();
}

bool context_node::cancel_one(const absl::Status& why, bool from_timer,
                              std::vector<std::shared_ptr<context_node>>& kids) noexcept {
  context_watcher* watchers;
  {
    spin_guard lk(lock_);
    if (cancelled_.load(std::memory_order_relaxed)) return false;
    err_ = why;
    // Release: err_ is visible to whoever sees cancelled_ (err()).
    cancelled_.store(true, std::memory_order_release);
    // W2: claim every watcher in this section (relaxed: under lock_, which
    // unwatch() takes before it reads the state).
    watchers = first_watcher_;
    first_watcher_ = nullptr;
    for (context_watcher* w = watchers; w != nullptr; w = w->next)
      w->state.store(context_watcher::kFiring, std::memory_order_relaxed);
    for (context_node* c = first_child_; c != nullptr;) {
      context_node* next = c->next_sibling_;
      c->prev_sibling_ = c->next_sibling_ = nullptr;
      c->linked_ = false;
      // A child whose last handle is going away fails to promote: its
      // destructor is blocked on our lock_ and will find it unlinked.
      if (std::shared_ptr<context_node> sp = c->weak_from_this().lock())
        kids.push_back(std::move(sp));
      c = next;
    }
    first_child_ = nullptr;
  }
  done_.state_for_internal_use()->close_if_open();
  for (context_watcher* w = watchers; w != nullptr;) {
    context_watcher* next = w->next;  // before fn: w may be freed once fired
    w->fn(w);
    // Release: fn's writes happen-before unwatch() returns (W3). Last touch.
    w->state.store(context_watcher::kFired, std::memory_order_release);
    w = next;
  }
  // Not from our own fire(): cancel_timer() would wait for it forever.
  if (!from_timer && timer_armed_ && !timer_fired_.load(std::memory_order_acquire))
    cancel_timer(&timer_);
  // The children promoted above are cancelled by cancel()'s loop; the
  // node leaves its parent's list at the end of cancel().
  return true;
}

bool context_node::watch(context_watcher* w) noexcept {
  // The root is never cancelled: nothing to link (w stays idle).
  if (parent_ == nullptr) return true;
  spin_guard lk(lock_);
  if (cancelled_.load(std::memory_order_relaxed)) return false;  // W1
  w->prev = nullptr;
  w->next = first_watcher_;
  if (w->next != nullptr) w->next->prev = w;
  first_watcher_ = w;
  w->state.store(context_watcher::kLinked, std::memory_order_relaxed);  // under lock_
  return true;
}

void context_node::unwatch(context_watcher* w) noexcept {
  {
    spin_guard lk(lock_);
    // Relaxed: kLinked and kFiring are written under lock_ (W1, W2).
    const std::uint8_t s = w->state.load(std::memory_order_relaxed);
    if (s == context_watcher::kIdle) return;  // never linked (watch() said false)
    if (s == context_watcher::kLinked) {      // W3: unlink; fn never runs
      if (w->prev != nullptr)
        w->prev->next = w->next;
      else
        first_watcher_ = w->next;
      if (w->next != nullptr) w->next->prev = w->prev;
      w->prev = w->next = nullptr;
      w->state.store(context_watcher::kIdle, std::memory_order_relaxed);
      return;
    }
  }
  // W3: claimed by a cancel; wait for fn to return. Acquire pairs with the
  // release store of kFired in cancel().
  short_section_backoff backoff;
  while (w->state.load(std::memory_order_acquire) != context_watcher::kFired) backoff.pause();
  w->state.store(context_watcher::kIdle, std::memory_order_relaxed);
}

absl::Status context_node::err() const {
  // Acquire: pairs with the release store in cancel().
  if (!cancelled_.load(std::memory_order_acquire)) return absl::OkStatus();
  spin_guard lk(lock_);
  return err_;
}

void context_node::unlink_from_parent() noexcept {
  context_node* p = parent_.get();
  if (p == nullptr) return;
  spin_guard lk(p->lock_);
  if (!linked_) return;
  if (prev_sibling_)
    prev_sibling_->next_sibling_ = next_sibling_;
  else
    p->first_child_ = next_sibling_;
  if (next_sibling_) next_sibling_->prev_sibling_ = prev_sibling_;
  prev_sibling_ = next_sibling_ = nullptr;
  linked_ = false;
}

}  // namespace detail

context::context() : context(background()) {}

void cancel_func::operator()() const noexcept {
  // A reference of the call's own: once done() closes, a waiter may return
  // and drop the last other handles, this cancel_func among them (it may
  // live in the waiter's frame, as a wait_group does); the cancel goes on
  // touching the node (watchers, its timer, the parent's list) after that.
  if (std::shared_ptr<detail::context_node> keep = node_) keep->cancel(detail::canceled_status());
}

context background() {
  static const std::shared_ptr<detail::context_node> root =
      std::make_shared<detail::context_node>();
  return context(root);
}

std::pair<context, cancel_func> with_cancel(const context& parent) {
  auto n = std::make_shared<detail::context_node>(parent.node_for_internal_use());
  n->attach();
  return {context(n), cancel_func(n)};
}

std::pair<context, cancel_func> with_deadline(const context& parent,
                                              std::chrono::steady_clock::time_point tp) {
  auto n = std::make_shared<detail::context_node>(parent.node_for_internal_use());
  // A parent cancelled already gives its error and needs no timer (Go:
  // propagateCancel comes before the deadline's own cancel).
  if (!parent.cancelled()) n->arm_deadline(tp);  // before attach: nobody else sees n yet
  n->attach();
  return {context(n), cancel_func(n)};
}

}  // namespace mpg
