// mpg/oneshot.hpp: oneshot<T>, one value from anywhere to one task (Tokio's
// oneshot channel; Go would use a channel of capacity 1).
//
//   auto [tx, rx] = mpg::oneshot<int>();   // oneshot_sender<int>, oneshot_receiver<int>
//   bool delivered = tx.send(42);          // any thread, at most once, never waits
//   absl::StatusOr<int> v = co_await rx;   // in a task: the value, or kAborted
//   auto r = co_await mpg::select(rx, ch.recv());   // a select case too
//   auto [dtx, drx] = mpg::oneshot<void>();  // dtx.send(); absl::Status s = co_await drx;
//
// Which thread may call what:
//   - oneshot_sender: every operation (send, the destructor, moves) from any
//     thread, inside a runtime or not. send() never waits (it takes the
//     state's spinlock for a few stores) and never runs user code other than
//     T's move constructor.
//   - oneshot_receiver: the destructor and moves from any thread, also
//     while tasks wait on it (through a reference, or as a select case):
//     their waits end at once with kAborted (with the value if it was sent).
//     It must be alive when an await of it begins (the awaiter reads its
//     state then, and from there holds a reference or has its result, R6).
//     `co_await rx`, `co_await rx.recv()` and select cases only inside a task;
//     each throws runtime_misuse_error (errors.hpp) on a moved-from receiver.
//   - Result of the await: the value; absl::StatusCode::kAborted when the
//     sender was destroyed without sending, or when the receiver was
//     destroyed while the await waited (before anything was sent);
//     kFailedPrecondition when the value was already received by an
//     earlier await.
//   - send() returns false, dropping the value, when the receiver is gone
//     (destroyed) or the sender is empty (moved from, or already sent).
//
// Where the awaiting task resumes: if it waits, on a P of its own runtime,
// readied by the thread that sent or destroyed the sender, or destroyed the
// receiver (g.hpp, ready(): that thread's P when it runs one of the
// runtime's Ps, else the global queue).
//
// Protocol. The shared state holds one spinlock, a status word and the value,
// a waitq of waiters (one: the receiving awaiter or one select case; more
// only when tasks await one receiver at once, R4), and a reference count
// (one reference per live end, and one per awaiter that queued or took
// its result after its unlock, R5, R6).
//   R1. The receiver's await takes the lock. A status other than kEmpty
//       completes it now (R6). Otherwise it parks (g.hpp, step 1), counts
//       itself as waiting on an external waker of its runtime
//       (external_waker_add, remembering the scheduler in the awaiter),
//       takes a reference on the state (R5), queues its waiter, and unlocks:
//       the unlock publishes the waiter (step 2).
//   S1. send() takes the lock. kReceiverGone: unlock, return false (R3 has
//       woken every waiter). Else it stores the value, sets kFull, dequeues
//       the waiter (for a select case: waitq::dequeue claims the select, or
//       drops a waiter whose select already fired elsewhere), unlocks,
//       readies the dequeued G (step 3), and drops its reference.
//   S2. The sender's destructor, unsent: as S1 with kAborted and no value
//       (after R3: nothing).
//   R2. The awaiter's await_resume, or a select's clean-up (sel_dequeue, the
//       winner's sel_result), or the awaiter's destructor (a task killed at
//       shutdown; it also unlinks a still-queued waiter, waitq.hpp kQueued),
//       whichever comes first, calls external_waker_remove on the remembered
//       scheduler, exactly once per add. All of these run on the receiving
//       task's runtime while it is alive, so the count is balanced and a
//       sender on a plain thread never touches the runtime's counters: a
//       sender destroyed after its runtime is gone touches only the state.
//   R3. The receiver's destructor takes the lock, sets kReceiverGone if
//       the status is still kEmpty, dequeues every waiter (dequeue_all:
//       select cases are claimed), unlocks, readies them (each then takes
//       its result: kAborted, or what the sender left), and drops its
//       reference.
//   R4. Tasks that await one receiver at once (through a reference) all
//       queue; S1 wakes the first. Each awaiter, under the lock, dequeues
//       the next waiter before it takes its result (T's move may throw),
//       and readies it after unlocking whether or not the move threw; an
//       awaiter woken but destroyed before it ran (its task killed at its
//       runtime's shutdown) passes the wake on from its destructor. So all
//       of them end: the first with the value (or the exception of its
//       move, the value staying for the next; the value moves once, from
//       the state straight into the await's or the select's result:
//       take_with), the others with
//       kFailedPrecondition (already received), or all with kAborted.
//   R5. An awaiter that queued holds a reference on the state, taken under
//       the lock as it queues, so whoever wakes it may drop the last end
//       (the sender after S1, the receiver after R3) and the state still
//       outlives the awaiter's use of it. The awaiter drops it last: in
//       await_resume after unlocking (and after readying the next waiter,
//       R4), or in its destructor (a select case that did not win, whose
//       sel_dequeue runs under the select's locks and so cannot free the
//       state; a task killed at shutdown). A waiter is queued only while its
//       awaiter holds the reference, so the state is never freed with a
//       waiter queued.
//   R6. An await that completes at once (R1 finding the status set) takes
//       its result there, under that lock, into the awaiter (with R4's
//       pass-on of the next waiter), and never reads the state again: the
//       receiver may be destroyed right after the unlock, by another thread,
//       or by another task while a spent budget requeues this one. That
//       costs no RMW. Where T's move may throw, the result is taken in
//       await_resume instead, where a move that throws leaves the value for
//       the next await (a second move, out of the awaiter, could not): the
//       await then takes a reference (R5) under that lock.
//       So does a select case found ready (its sel_poll runs under the
//       select's locks, where a throw cannot be taken back), until its
//       sel_result has taken the result.
// Why the waker count is removed by the receiver and not by the sender: a
// sender that removed it before ready() would leave a window in which the
// runtime looks quiescent though a G is about to become runnable; removing
// it after ready() would touch a runtime that the resumed task may already
// have let finish. The receiver holds the count from before it publishes the
// waiter until after it runs again, so the count covers every instant.
//
// Destruction. The state is freed by whichever holder drops the last
// reference: an end or an awaiter (R5). A waker (S1, S2, R3) never
// touches the state after its unlock except to drop its own reference, and
// that reference keeps the state alive until it is dropped: the resumed
// receiver may destroy its end (and the whole state, if every other
// reference is already gone) at once, and the receiver may be destroyed by
// another thread or task while tasks wait on it.
//
// Invariants (under lock_):
//   - status_ moves only kEmpty -> kFull -> kTaken, kEmpty -> kAborted, or
//     kEmpty -> kReceiverGone.
//   - The waitq holds waiters only while status_ is kEmpty, or, after it,
//     until each woken awaiter has passed the wake on (R4).
//   - value_ is engaged iff status_ is kFull.
//
// Rejected: a lock-free state word with the waiter's address in it: shorter
// sections, but a select case must be polled and queued under the same lock
// set as the select's channel cases (select.hpp, steps 2 and 3), so the
// oneshot takes part in select's lock order like a channel. A reference
// count in each awaiter's G instead of a shared count: the ends live on
// different threads, one RMW per end is the least that frees the state
// exactly once. A receiver destroyed under its waiters that only marked the
// state (the waiters woken by the sender): a send would then wake nobody,
// and a drop would free the state under the waiter it readied.
//
// Memory ordering: everything but refs_ is read and written under lock_
// (acquire/release), including the value; the resumed task reads it after
// ready(), which orders the sender's writes before it (g.hpp). refs_ is
// argued at release().
#pragma once

#include <absl/base/attributes.h>
#include <absl/base/thread_annotations.h>
#include <absl/status/status.h>
#include <absl/status/statusor.h>

#include <atomic>
#include <cassert>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <source_location>
#include <type_traits>
#include <utility>
#include <variant>

#include "mpg/detail/sched/g.hpp"
#include "mpg/detail/sync/spinlock.hpp"
#include "mpg/detail/sync/waitq.hpp"

namespace mpg {

template <class T>
class oneshot_sender;
template <class T>
class oneshot_receiver;
template <class T>
class oneshot_recv_op;

namespace detail {

template <class... Cases>
class select_awaiter;

absl::Status oneshot_aborted_status();
absl::Status oneshot_taken_status();
absl::Status oneshot_receiver_gone_status();
// throw_empty_oneshot_receiver(): throws runtime_misuse_error (an await of a
// moved-from receiver).
[[noreturn]] void throw_empty_oneshot_receiver();

// kReceiverGone: the receiver was destroyed before the sender completed.
enum class oneshot_status : std::uint8_t { kEmpty, kFull, kTaken, kAborted, kReceiverGone };

template <class T>
class oneshot_state {
 public:
  using stored_type = std::conditional_t<std::is_void_v<T>, std::monostate, T>;
  using result_type = std::conditional_t<std::is_void_v<T>, absl::Status, absl::StatusOr<T>>;

  oneshot_state() = default;
  // Never freed with a waiter queued: a queued awaiter holds a reference.
  ~oneshot_state() { assert(q_.empty()); }
  oneshot_state(const oneshot_state&) = delete;
  oneshot_state& operator=(const oneshot_state&) = delete;

  // add_ref_locked(): the reference of an awaiter (R1, R5, R6).
  // Relaxed, as a shared_ptr copy: the caller already holds a reference
  // (the receiver it awaits through is alive as the await begins), so the
  // count cannot reach zero meanwhile; the awaiter publishes itself, and
  // the reference with it, by the unlock that follows.
  void add_ref_locked() noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    refs_.fetch_add(1, std::memory_order_relaxed);
  }

  void release() noexcept {
    // acq_rel: every other holder's last use of the state (release)
    // happens before the delete that the last release runs (acquire).
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // S1 / S2: the sender's one completion. v == nullptr: destroyed unsent.
  bool complete(stored_type* v) {
    g* wake = nullptr;
    {
      spin_guard lk(lock_);
      if (status_ == oneshot_status::kReceiverGone) return false;  // R3 woke everyone
      if (v) {
        value_.emplace(std::move(*v));
        status_ = oneshot_status::kFull;
      } else {
        status_ = oneshot_status::kAborted;
      }
      if (waiter* w = q_.dequeue()) wake = w->gp();
    }  // S1's unlock: from here only our reference keeps the state alive
    if (wake) ready(wake);
    return true;
  }

  // R3: the receiver's destructor.
  void receiver_gone() noexcept {
    waiter* chain;
    {
      spin_guard lk(lock_);
      if (status_ == oneshot_status::kEmpty) status_ = oneshot_status::kReceiverGone;
      chain = q_.dequeue_all();
    }  // each woken awaiter holds its own reference: the state outlives it
    ready_chain(chain);
  }

  // take_into(): the await's result into out (R6), built in place.
  void take_into(std::optional<result_type>& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    take_with([&out](auto&&... a) { out.emplace(std::forward<decltype(a)>(a)...); });
  }

  // take_with(): the await's result (status_ is not kEmpty), built by make
  // from the value (T&&, so that T moves once, straight into make's result)
  // or from a status; the
  // result is returned as a prvalue all the way, so it is not moved again
  // (absl::StatusOr's move constructor is noexcept whatever T's is: a
  // second move of a T that throws would terminate). The value is taken
  // (kTaken) only once make returned: if T's move throws, it stays for the
  // next await. (Only a T whose move may throw pays for the check.)
  template <class F>
  decltype(auto) take_with(F&& make) ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    constexpr bool kMoveMayThrow = !std::is_void_v<T> && !std::is_nothrow_move_constructible_v<T>;
    struct commit {
      oneshot_state* s;
      int pending = kMoveMayThrow ? std::uncaught_exceptions() : 0;
      ~commit() {
        if constexpr (kMoveMayThrow) {
          if (std::uncaught_exceptions() != pending) return;  // make threw
        }
        s->status_ = oneshot_status::kTaken;
        s->value_.reset();
      }
    };
    switch (status_) {
      case oneshot_status::kFull: {
        commit c{this};
        if constexpr (std::is_void_v<T>) {
          return make(absl::OkStatus());
        } else {
          return make(std::move(*value_));
        }
      }
      case oneshot_status::kAborted:
        return make(oneshot_aborted_status());
      case oneshot_status::kReceiverGone:
        return make(oneshot_receiver_gone_status());
      default:
        return make(oneshot_taken_status());
    }
  }

  spinlock lock_;
  oneshot_status status_ ABSL_GUARDED_BY(lock_) = oneshot_status::kEmpty;
  waitq q_ ABSL_GUARDED_BY(lock_);
  std::optional<stored_type> value_ ABSL_GUARDED_BY(lock_);
  std::atomic<std::uint32_t> refs_{2};  // one per live end, one per awaiter (R5)
};

}  // namespace detail

// oneshot_sender<T>
//
// The sending end. Move-only. Destroying it unsent wakes the receiver with
// kAborted. Every operation may be called from any thread.
template <class T>
class oneshot_sender {
 public:
  oneshot_sender(oneshot_sender&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  oneshot_sender& operator=(oneshot_sender&& o) noexcept {
    if (this != &o) {
      reset();
      s_ = std::exchange(o.s_, nullptr);
    }
    return *this;
  }
  ~oneshot_sender() { reset(); }

  // oneshot_sender::send()
  //
  // Hands v to the receiver and wakes it if it waits; never waits itself.
  // Returns false, dropping v, when the receiver is gone or this sender is
  // empty (moved from or already sent). Any thread.
  template <class U = T>
    requires(!std::is_void_v<U>)
  bool send(std::type_identity_t<U> v) {
    return send_stored(&v);
  }
  bool send()
    requires std::is_void_v<T>
  {
    std::monostate m;
    return send_stored(&m);
  }

  // True while this sender can still send (not moved from, not sent).
  explicit operator bool() const noexcept { return s_ != nullptr; }

 private:
  template <class U>
  friend std::pair<oneshot_sender<U>, oneshot_receiver<U>> oneshot();
  explicit oneshot_sender(detail::oneshot_state<T>* s) noexcept : s_(s) {}

  bool send_stored(typename detail::oneshot_state<T>::stored_type* v) {
    if (!s_) return false;
    detail::oneshot_state<T>* s = std::exchange(s_, nullptr);
    bool ok;
    try {
      ok = s->complete(v);
    } catch (...) {  // T's move threw: nothing was stored; abort the receiver
      s->complete(nullptr);
      s->release();
      throw;
    }
    s->release();
    return ok;
  }
  void reset() noexcept {
    if (detail::oneshot_state<T>* s = std::exchange(s_, nullptr)) {
      s->complete(nullptr);  // S2: cannot throw (no value is moved)
      s->release();
    }
  }

  detail::oneshot_state<T>* s_;
};

// oneshot_recv_op<T>
//
// The awaiter of `co_await rx` and of rx.recv(), and a select case. Gives
// absl::StatusOr<T> (absl::Status for void). If it waits, the task resumes
// on a P of its runtime, readied by the thread that sent or dropped the
// sender, or destroyed the receiver. Its receiver must be alive when the
// await begins; destroyed while the await waits, it ends the await with
// kAborted (R3). Only inside a task.
template <class T>
class [[nodiscard]] oneshot_recv_op : private detail::waiter {
  using state = detail::oneshot_state<T>;

 public:
  using result_type = typename state::result_type;
  // Parks through the runtime: a task's await_transform passes it through
  // (detail/sched/g.hpp, runtime_awaiter_tag).
  using mpg_awaiter = detail::runtime_awaiter_tag;

  oneshot_recv_op(oneshot_recv_op&& o) noexcept
      : detail::waiter(o),
        s_(o.s_),
        counted_(std::exchange(o.counted_, nullptr)),
        holds_ref_(std::exchange(o.holds_ref_, false)) {}
  oneshot_recv_op& operator=(oneshot_recv_op&&) = delete;
  // R2 for a task killed at shutdown, and R5 for a select case that did not
  // win: unlink a still-queued waiter, give back the waker count and the
  // state reference. The runtime is alive: killed frames are destroyed
  // before the scheduler is deleted.
  ~oneshot_recv_op() {
    if (holds_ref_) [[unlikely]]
      leave();
  }

  bool await_ready() const noexcept { return false; }

  bool await_suspend(std::coroutine_handle<> h) {
    {
      // R4's pass-on (R6), after the unlock below, also if the take throws.
      // A local: the park below hands `this` off at the unlock.
      struct ready_next {
        detail::g* g = nullptr;
        ~ready_next() {
          if (g) detail::ready(g);
        }
      } next;
      detail::spin_guard lk(s_->lock_);
      if (s_->status_ == detail::oneshot_status::kEmpty) {
        // R1.
        const std::source_location where = this->stashed_where();
        detail::g* gp = detail::current_g();
        detail::park(h, "oneshot receive", where);  // throws outside a task
        count(gp);
        hold_ref();
        this->set_g(gp);
        s_->q_.push_back(this);
        return true;  // the guard's unlock publishes the waiter: hands off `this`
      }
      if constexpr (kTakeAtOnce) {  // R6
        if (detail::waiter* w = s_->q_.dequeue()) next.g = w->gp();
        s_->take_into(taken_);
      } else {
        hold_ref();  // R6: await_resume takes the result after this unlock
      }
    }
    return detail::yield_if_over_budget(h);
  }

  result_type await_resume() {
    if constexpr (kTakeAtOnce) {
      if (taken_) {  // R6
        result_type r = std::move(*taken_);
        taken_.reset();  // g++ 12 may destroy a co_await's temporary twice
        return r;
      }
    }
    return take_after([](auto&&... a) { return result_type(std::forward<decltype(a)>(a)...); });
  }

 private:
  friend class oneshot_receiver<T>;
  template <class... Cases>
  friend class detail::select_awaiter;

  oneshot_recv_op(state* s, std::source_location where) noexcept : s_(s) {
    this->stash_where(where);
  }

  // R6: whether an await that completes at once takes its result in
  // await_suspend (T moves without throwing).
  // Keyed on T, not on result_type: absl::StatusOr's move constructor is
  // noexcept whatever T's is.
  static constexpr bool kTakeAtOnce = std::is_void_v<T> || std::is_nothrow_move_constructible_v<T>;

  // pass_on: after the state's lock is released, also when T's move throws:
  // ready the next waiter (R4), then drop the state reference, after every
  // use (R5). Declared before the lock's guard, so that it runs after it.
  struct pass_on {
    oneshot_recv_op* op;
    detail::g* next = nullptr;
    ~pass_on() {
      if (next) detail::ready(next);
      op->drop_ref();
    }
  };

  // take_after(): the result, built by make (take_with), of an await that
  // took no result at once: the next waiter is taken first (R4: the move
  // may throw), and readied and the reference dropped after the unlock.
  template <class F>
  decltype(auto) take_after(F&& make) {
    uncount();
    pass_on after{this};
    detail::spin_guard lk(s_->lock_);
    if (detail::waiter* w = s_->q_.dequeue()) after.next = w->gp();
    return s_->take_with(std::forward<F>(make));
  }

  void count(detail::g* gp) noexcept {
    counted_ = gp->sched;
    detail::external_waker_add(counted_);
  }
  void uncount() noexcept {
    if (counted_) detail::external_waker_remove(std::exchange(counted_, nullptr));
  }
  // hold_ref(): R5, with the state's lock held (R1, sel_enqueue; R6).
  void hold_ref() noexcept {
    s_->lock_.assert_held();
    s_->add_ref_locked();
    holds_ref_ = true;
  }
  // drop_ref(): R5. Never under the state's lock: it may free the state.
  void drop_ref() noexcept {
    if (std::exchange(holds_ref_, false)) s_->release();
  }
  // leave(): the destructor of an awaiter that queued and never resumed
  // (a task killed at shutdown, or a select case that did not win). Still
  // counted and no longer queued means a waker took it and it never ran
  // (R4): it passes the wake on, as await_resume would have. A select case
  // that lost in a parked select killed at shutdown looks the same when a
  // oneshot waker dropped it (waitq::dequeue, claim lost); its pass-on is
  // then one wake more, harmless: waiters are dequeued only once the status
  // has left kEmpty, so the woken one ends with a result, and it is
  // dequeued, hence readied, once. Reads kQueued without the lock, as waitq.hpp argues for
  // destructors. The ready() may be of a G of this runtime, killed at its
  // shutdown too: it is only queued (shutdown.cpp, step 6), and its own
  // awaiter's destructor passes the wake on in turn.
  ABSL_ATTRIBUTE_NOINLINE void leave() noexcept {
    detail::g* next = nullptr;
    if (this->queued() || counted_) {
      detail::spin_guard lk(s_->lock_);
      // remove() re-reads kQueued under the lock: a waker may have taken it.
      if (!s_->q_.remove(this) && counted_) {
        if (detail::waiter* w = s_->q_.dequeue()) next = w->gp();
      }
    }
    if (next) detail::ready(next);
    uncount();
    drop_ref();
  }

  // Select hooks (select.hpp): sel_lock, sel_poll, sel_enqueue and
  // sel_dequeue run with the state's lock held by select.
  detail::spinlock* sel_lock() const noexcept { return &s_->lock_; }
  detail::waiter* sel_node() noexcept { return this; }
  std::source_location sel_where() const noexcept { return this->stashed_where(); }
  // A ready case is the select's choice (select.hpp, step 2); its
  // sel_result takes the result after the select unlocks, holding a
  // reference until then (R6).
  bool sel_poll(detail::g*&) noexcept {
    s_->lock_.assert_held();
    if (s_->status_ == detail::oneshot_status::kEmpty) return false;
    if (!holds_ref_) hold_ref();
    return true;
  }
  void sel_enqueue(detail::select_state* st) noexcept {
    s_->lock_.assert_held();
    count(st->gp);
    hold_ref();
    this->set_select(st);
    s_->q_.push_back(this);
  }
  // The state reference stays until the destructor (R5): the select holds
  // the state's lock here, so the reference cannot be dropped.
  void sel_dequeue() noexcept {
    s_->lock_.assert_held();
    s_->q_.remove(this);
    uncount();
  }
  result_type sel_result() { return await_resume(); }
  // sel_result_as(): the select's result (V, case I) built in place from
  // the value, so that T moves once (see take_with): the select's variant
  // would otherwise move the StatusOr again, under its noexcept move.
  template <class V, std::size_t I>
  V sel_result_as() {
    return take_after(
        [](auto&&... a) { return V(std::in_place_index<I>, std::forward<decltype(a)>(a)...); });
  }

  state* s_;
  // The runtime whose external-waker count this awaiter holds (R1, R2);
  // null when it holds none. Touched only by the receiving task.
  detail::scheduler* counted_ = nullptr;
  // Whether this awaiter holds a reference on the state (R1, R5). Touched
  // only by the receiving task.
  bool holds_ref_ = false;
  // R6: the result of an await that completed at once.
  std::optional<result_type> taken_;
};

// oneshot_receiver<T>
//
// The receiving end. Move-only. `co_await rx` (or rx.recv(), which also
// records the call site for the task dump) inside a task; the destructor
// and moves from any thread. Once it is destroyed, send() returns false; a
// task that was waiting on it resumes with kAborted (R3).
template <class T>
class oneshot_receiver {
 public:
  using result_type = typename detail::oneshot_state<T>::result_type;

  oneshot_receiver(oneshot_receiver&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  oneshot_receiver& operator=(oneshot_receiver&& o) noexcept {
    if (this != &o) {
      reset();
      s_ = std::exchange(o.s_, nullptr);
    }
    return *this;
  }
  ~oneshot_receiver() { reset(); }

  // oneshot_receiver::recv()
  //
  // `co_await rx.recv()`: waits for the value (or for the sender's
  // destruction). Also a select case. Throws runtime_misuse_error on a
  // moved-from receiver (so does `co_await rx`, and naming it in a select).
  oneshot_recv_op<T> recv(std::source_location where = std::source_location::current()) {
    if (!s_) [[unlikely]]
      detail::throw_empty_oneshot_receiver();
    return oneshot_recv_op<T>(s_, where);
  }
  oneshot_recv_op<T> operator co_await() { return recv(); }

 private:
  template <class U>
  friend std::pair<oneshot_sender<U>, oneshot_receiver<U>> oneshot();
  explicit oneshot_receiver(detail::oneshot_state<T>* s) noexcept : s_(s) {}

  void reset() noexcept {
    if (detail::oneshot_state<T>* s = std::exchange(s_, nullptr)) {
      s->receiver_gone();  // R3
      s->release();
    }
  }

  detail::oneshot_state<T>* s_;
};

// oneshot()
//
// A fresh pair: `auto [tx, rx] = mpg::oneshot<T>();` (T may be void or
// move-only). Any thread.
template <class T>
std::pair<oneshot_sender<T>, oneshot_receiver<T>> oneshot() {
  auto* s = new detail::oneshot_state<T>();
  return {oneshot_sender<T>(s), oneshot_receiver<T>(s)};
}

}  // namespace mpg
