// mpg/chan.hpp: chan<T>, Go's channel, for tasks.
//
// A chan<T> is a handle to a reference-counted channel: copies share one
// channel, and it is freed when the last handle goes. capacity 0 is an
// unbuffered rendezvous: a send completes only when a receiver takes the
// value. capacity n > 0 is a FIFO ring of n elements.
//
//   co_await ch.send(v);              // waits while full; throws closed_channel_error if closed
//   std::optional<T> v = co_await ch.recv();   // nullopt once closed and drained
//   ch.try_send(v) / ch.try_recv()    // never wait
//   ch.close();                       // receivers drain, then get nullopt; senders throw
//
// send() and recv() return awaiters (send_op, recv_op) that are also the
// cases of mpg::select (select.hpp). Each records where it was called, which
// the task dump shows for a parked task ("chan send" / "chan receive").
//
// Design (Go's chan.go, minus the GC). A channel is one lock, a ring buffer
// and two queues of waiting tasks, recvq and sendq. The waiters are nodes
// inside the suspended awaiters (detail/sync/waitq.hpp), so a blocked operation
// allocates nothing. All operations run under the channel's lock:
//   send: a waiting receiver -> hand the value straight into its awaiter
//         and ready it (it runs next on this P: a ping-pong pair stays on
//         one P and its cache). Closed -> throw (a closed channel has no
//         waiters, so the order of these two tests does not matter). Room in
//         the ring -> enqueue there. Otherwise park on sendq with the value
//         in the awaiter.
//   recv: a waiting sender -> unbuffered: take its value; buffered (then
//         the ring is full): take the head and move the sender's value to
//         the tail, so FIFO order holds. Items in the ring -> take the head.
//         Closed (and so drained) -> nullopt. Otherwise park on recvq.
//   close: mark closed, take every waiter off both queues (receivers get
//         nullopt, senders an exception), ready them after unlocking.
// A G is readied after the lock is dropped, so the woken task never finds the
// lock held by its waker.
//
// One lock round per operation, split across the awaiter's two calls:
//   await_ready()    locks and tries the operation. Done: unlocks, readies
//                    the G it took off a queue, charges the G's budget
//                    (g.hpp) and returns true: the task never suspends.
//                    Must wait: returns false with the lock still held.
//   await_suspend()  with that lock held: parks the G, queues the waiter,
//                    unlocks (which publishes the waiter), and hands the M
//                    to the next G of its P (switch_after_park, g.hpp;
//                    the awaiter is not touched after the unlock, since
//                    a waker may resume the task at once).
// Between the two only the compiler's bookkeeping of the suspend point runs,
// so the section stays a few stores long, and nothing is re-checked. An
// operation that completed but spent the G's slice returns false with the
// lock released and ch_ cleared; await_suspend() then only requeues the G.
// (Clang's thread-safety analysis cannot follow a lock from one call to the
// other: both are exempted, and argued here instead.)
//
// Inlining. await_ready(), send_locked() and recv_locked() are forced
// inline, with the spinlock's and waitq's fast paths they use, so that an
// operation that completes costs no call: both compilers otherwise left a
// call or two per operation, differently for each channel and site
// (callgrind on 1 P, g++ 12 / clang 16: chan_mpmc counts 117 / 110
// instructions per item inline and 137 / 151 with those calls, pingpong
// 489 / 399 per round trip and 527 / 491). The rotation of a full ring that
// a receive does when a sender waits (rotate_from_sender) stays out of line.
//
// Rejected approaches:
//   - A lock-free ring (Vyukov's MPMC queue) for buffered channels: fast
//     when neither end ever waits, but parking then needs a second protocol
//     (Dekker-style flags re-checked after enqueueing the waiter) whose races
//     with close() and with select are where channel bugs live, and the
//     direct hand-off to a waiting receiver (one move, no ring slot) is lost.
//   - Holding a reference to the channel in each awaiter: two more atomic
//     RMWs per operation on the hottest path. The handle the caller names in
//     `co_await ch.recv()` outlives the expression; an awaiter must not
//     outlive its channel handle (do not store one).
//   - Separate locks for the two ends: a send must see the receivers' queue
//     and the ring count at one instant, so one lock it is (as in Go).
//
// Invariants (under lock_):
//   - At least one of sendq and recvq is empty (a sender and a receiver
//     never both wait: whichever came second completed with the first).
//     Exception: a select with a send and a receive case on the same
//     channel may sit on both queues at once (Go has the same exception).
//   - capacity 0: count == 0, always.
//   - capacity > 0: recvq non-empty implies count == 0; sendq non-empty
//     implies count == capacity.
//   - closed implies sendq is empty and recvq is empty: close() wakes all,
//     and neither a sender nor a receiver parks on a closed channel.
//   - The ring holds `count` live elements from recvx (wrapping); every
//     other slot is raw storage.
//
// The lock is detail::spinlock (one byte in the channel's first cache line;
// spinlock.hpp argues for it against absl::Mutex): every section is a few
// pointer updates and at most one move of T.
//
// Destruction: the state goes with the last handle (refs_, acq_rel), so a
// send, receive or close never touches a freed channel: its caller holds a
// handle until it returns. At shutdown a killed frame may hold the last
// handle of a channel that another killed task waits on by reference:
// ~chan_base detaches such waiters (detail/sync/waitq.hpp, kQueued).
//
// Memory ordering: everything a channel operation reads or writes is under
// the channel's lock (acquire/release), including the value handed to a
// parked waiter; the woken task then reads it after ready(), which orders
// the waker's writes before the resumed task (g.hpp). count_ is an atomic
// only so that size() may read it without the lock (relaxed: a snapshot);
// refs_ is argued at retain()/release().
//
// Element type. T may be move-only. Moves of T happen under the channel lock
// and must not throw: once a waiter has been taken off a queue the transfer
// cannot be undone, so a throwing move inside a transfer terminates (the
// transfer functions are noexcept).
#pragma once

#include <absl/base/attributes.h>

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <source_location>
#include <type_traits>
#include <utility>
#include <variant>

#include "mpg/detail/sched/foreign_await.hpp"
#include "mpg/detail/sched/g.hpp"
#include "mpg/detail/sync/spinlock.hpp"
#include "mpg/detail/sync/waitq.hpp"
#include "mpg/errors.hpp"

namespace mpg {

template <class T>
class chan;
template <class T>
class send_op;
template <class T>
class recv_op;

namespace detail {

template <class... Cases>
class select_awaiter;

[[noreturn]] void throw_send_on_closed();
[[noreturn]] void throw_close_of_closed();
// what: "send", "try_send" or "close".
[[noreturn]] void throw_moved_from_chan(const char* what);

// The state a moved-from chan<T> points to (moved_from_state() below).
struct moved_from_t {
  explicit moved_from_t() = default;
};

// The payloads of a channel waiter. The waiter is the first (and only)
// base, so the channel code, which knows T, can go from the waiter it
// dequeued back to the awaiter that holds the value.
template <class T>
struct recv_node : waiter {
  std::optional<T> slot;  // where a sender (or the ring) puts the value; nullopt: closed
};

template <class T>
struct send_node : waiter {
  template <class U>
  send_node(std::in_place_t, U&& v) : value(std::in_place, std::forward<U>(v)) {}
  // Engaged until the value has been handed over (the waker resets it): so
  // it also tells a completed send from one failed by close(), and an
  // awaiter that never sent destroys its value exactly once.
  std::optional<T> value;
};

// chan_base: the part of a channel that does not depend on T; select locks
// channels through it.
class chan_base {
 public:
  explicit chan_base(std::size_t cap) noexcept : cap_(cap) {}
  // The moved-from state: closed from the start, and never freed. chan<T>
  // does not count references to it, but a shared object built with
  // hidden visibility has a moved-from state of its own and takes another
  // object's for a channel: its copies and destructions count, and
  // release() must not free it whatever the count.
  constexpr explicit chan_base(moved_from_t) noexcept
      : closed_(true), moved_from_(true), cap_(0) {}
  // Freed with waiters still queued: only at runtime shutdown, when the
  // frame that held the last handle was killed before the frames of tasks
  // that borrowed the channel by reference and wait on it. Detach them
  // (waitq::detach_all), so that their awaiters' destructors leave this
  // memory alone.
  virtual ~chan_base() {
    spin_guard lk(lock_);
    recvq_.detach_all();
    sendq_.detach_all();
  }
  chan_base(const chan_base&) = delete;
  chan_base& operator=(const chan_base&) = delete;

  void retain() noexcept {
    // Relaxed: a new handle is made from an existing one, which keeps the
    // channel alive meanwhile; no data is published by the count.
    refs_.fetch_add(1, std::memory_order_relaxed);
  }
  void release() noexcept {
    // acq_rel: every other handle's last use of the channel (release) must
    // happen before the destructor that the last release runs (acquire).
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1 && !moved_from_) delete this;
  }

  std::size_t capacity() const noexcept { return cap_; }
  std::size_t size() const noexcept {
    // Relaxed: a snapshot, as Go's len(ch); writers hold lock_.
    return count_.load(std::memory_order_relaxed);
  }

  spinlock lock_;
  bool closed_ ABSL_GUARDED_BY(lock_) = false;
  const bool moved_from_ = false;  // moved_from_state() below
  std::atomic<std::uint32_t> refs_{1};
  // Elements in the ring. Written only under lock_; atomic so that size()
  // can read it without the lock.
  std::atomic<std::size_t> count_{0};
  const std::size_t cap_;
  std::size_t sendx_ ABSL_GUARDED_BY(lock_) = 0;  // next slot to fill
  std::size_t recvx_ ABSL_GUARDED_BY(lock_) = 0;  // next slot to drain
  waitq recvq_ ABSL_GUARDED_BY(lock_);
  waitq sendq_ ABSL_GUARDED_BY(lock_);
};

enum class send_result : std::uint8_t { done, closed, would_block };

template <class T>
class chan_state : public chan_base {
 public:
  explicit chan_state(std::size_t cap) : chan_base(cap), buf_(cap ? new slot_t[cap] : nullptr) {}
  constexpr explicit chan_state(moved_from_t) noexcept : chan_base(moved_from_t{}) {}
  ~chan_state() override {
    std::size_t n = count_.load(std::memory_order_relaxed);
    for (std::size_t i = 0, x = recvx_; i < n; ++i) {
      at(x)->~T();
      if (++x == cap_) x = 0;
    }
  }

  // send_locked(): the non-parking part of Go's chansend. Moves from v only
  // when it returns done. *wake: a G to ready once the lock is dropped.
  // A waiting receiver is looked for first: that also covers a closed
  // channel, whose queues are empty (see the invariants).
  ABSL_ATTRIBUTE_ALWAYS_INLINE send_result send_locked(T& v, g*& wake) noexcept
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    if (waiter* w = recvq_.dequeue()) {
      auto* r = static_cast<recv_node<T>*>(w);
      r->slot.emplace(std::move(v));
      wake = r->gp();
      return send_result::done;
    }
    if (closed_) return send_result::closed;
    const std::size_t n = count_.load(std::memory_order_relaxed);
    if (n < cap_) {
      ::new (static_cast<void*>(at(sendx_))) T(std::move(v));
      sendx_ = next_slot(sendx_);
      count_.store(n + 1, std::memory_order_relaxed);
      return send_result::done;
    }
    return send_result::would_block;
  }

  // recv_locked(): the non-parking part of Go's chanrecv. true when the
  // receive completed: out holds the value, or is empty because the channel
  // is closed and drained. *wake: a G to ready once the lock is dropped.
  // Inlined into the awaiters, except the rotation of a full ring that a
  // waiting sender's value enters (rotate_from_sender).
  ABSL_ATTRIBUTE_ALWAYS_INLINE bool recv_locked(std::optional<T>& out, g*& wake) noexcept
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    if (waiter* w = sendq_.dequeue()) {  // empty when closed
      auto* s = static_cast<send_node<T>*>(w);
      if (cap_ == 0) {
        out.emplace(std::move(*s->value));
      } else {
        rotate_from_sender(s, out);
      }
      s->value.reset();  // disengaged: the send succeeded
      wake = s->gp();
      return true;
    }
    const std::size_t n = count_.load(std::memory_order_relaxed);
    if (n > 0) {
      T* head = at(recvx_);
      out.emplace(std::move(*head));
      head->~T();
      recvx_ = next_slot(recvx_);
      count_.store(n - 1, std::memory_order_relaxed);
      return true;
    }
    if (closed_) {  // and drained
      out.reset();
      return true;
    }
    return false;
  }

  // rotate_from_sender(): a buffered receive that finds a waiting sender
  // s: the ring is full, so the receiver gets the head and the sender's
  // value takes the freed slot, which is now the tail.
  ABSL_ATTRIBUTE_NOINLINE void rotate_from_sender(send_node<T>* s, std::optional<T>& out) noexcept
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    T* head = at(recvx_);
    out.emplace(std::move(*head));
    head->~T();
    ::new (static_cast<void*>(head)) T(std::move(*s->value));
    recvx_ = next_slot(recvx_);
    sendx_ = recvx_;
  }

  // close_locked(): marks the channel closed and takes every waiter off the
  // queues; returns them chained through `next`, to ready after unlocking.
  waiter* close_locked() noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    closed_ = true;
    waiter* chain = nullptr;
    waiter** tail = &chain;
    while (waiter* w = recvq_.dequeue()) {
      static_cast<recv_node<T>*>(w)->slot.reset();  // nullopt: closed
      *tail = w;
      tail = &w->next;
    }
    while (waiter* w = sendq_.dequeue()) {  // value stays engaged: it throws
      *tail = w;
      tail = &w->next;
    }
    *tail = nullptr;
    return chain;
  }

  void close() {
    waiter* chain;
    {
      spin_guard lk(lock_);
      if (closed_) {
        if (moved_from_) throw_moved_from_chan("close");
        throw_close_of_closed();
      }
      chain = close_locked();
    }
    ready_chain(chain);
  }

  // close_if_open(): close() for internal users that may race to close
  // (context cancellation); false if it was already closed.
  bool close_if_open() noexcept {
    waiter* chain;
    {
      spin_guard lk(lock_);
      if (closed_) return false;
      chain = close_locked();
    }
    ready_chain(chain);
    return true;
  }

  // try_send_nothrow(): try_send for internal users (timers): false when
  // full or closed.
  bool try_send_nothrow(T& v) noexcept {
    g* wake = nullptr;
    send_result r;
    {
      spin_guard lk(lock_);
      r = send_locked(v, wake);
    }
    if (wake) ready(wake);
    return r == send_result::done;
  }

 private:
  struct alignas(T) slot_t {
    std::byte raw[sizeof(T)];
  };
  T* at(std::size_t i) noexcept { return std::launder(reinterpret_cast<T*>(buf_[i].raw)); }
  // next_slot(): the ring index after i (wrapping).
  std::size_t next_slot(std::size_t i) const noexcept { return i + 1 == cap_ ? 0 : i + 1; }

  std::unique_ptr<slot_t[]> buf_;
};

// moved_from_state<T>(): where a moved-from chan<T> points, instead of
// nullptr, so that every operation on it is defined without a check on the
// paths of live channels: it is a closed, empty, unbuffered channel of its
// own, which no handle counts. A receive gives nullopt at once; a send,
// try_send or close finds it closed and, on that cold path, throws
// runtime_misuse_error rather than closed_channel_error. Constant-
// initialised (no guard, no order of initialisation to get wrong) and
// never destroyed (a union member), so a handle moved from in a static
// destructor still finds it.
template <class T>
struct moved_from_chan {
  constexpr moved_from_chan() noexcept : state(moved_from_t{}) {}
  ~moved_from_chan() {}
  union {
    chan_state<T> state;
  };
};
template <class T>
inline constinit moved_from_chan<T> moved_from_chan_v{};
template <class T>
constexpr chan_state<T>* moved_from_state() noexcept {
  return &moved_from_chan_v<T>.state;
}

// chan_completed(): the tail of a send or receive that completed in
// await_ready(): ready the G it took off a queue (after the unlock), and
// charge the cooperative budget (g.hpp). true: go on. false: the slice is
// spent; ch is cleared, and await_suspend then yields (chan_yield).
template <class State>
inline bool chan_completed(g* wake, State*& ch) noexcept {
  if (wake) ready(wake);
  if (!consume_budget_now()) [[likely]]
    return true;
  ch = nullptr;
  return false;
}

// chan_yield(): await_suspend of an operation that completed in
// await_ready() with the slice spent: requeue the G (it resumes later,
// from the M's loop).
inline std::coroutine_handle<> chan_yield(std::coroutine_handle<> h) noexcept {
  requeue_current(h);
  return std::noop_coroutine();
}

struct adopt_state_t {
  explicit adopt_state_t() = default;
};
inline constexpr adopt_state_t adopt_state{};

}  // namespace detail

// recv_op<T>
//
// The awaiter of chan<T>::recv(), and a select case. co_await gives
// std::optional<T>: the value, or nullopt when the channel is closed and
// drained. If it waits, the task is resumed by the sender that hands it a
// value (on that sender's P) or by close().
template <class T>
class [[nodiscard]] recv_op : private detail::recv_node<T> {
 public:
  using mpg_awaiter = detail::runtime_awaiter_tag;  // g.hpp
  using result_type = std::optional<T>;

  recv_op(recv_op&&) noexcept = default;
  recv_op& operator=(recv_op&&) = delete;
  // Destroyed while still queued: only when its task is killed at runtime
  // shutdown (detail/sync/waitq.hpp, kQueued). Unlink, so the channel stays sound.
  ~recv_op() {
    if (this->queued()) [[unlikely]]
      unlink();
  }

  // await_ready(): the whole receive when it need not wait (chan_ops
  // below). false: either the receive must wait, and the channel's lock is
  // held for await_suspend, or it completed but the G's slice is spent
  // (ch_ is then null), and await_suspend only yields.
  ABSL_ATTRIBUTE_ALWAYS_INLINE bool await_ready() noexcept ABSL_NO_THREAD_SAFETY_ANALYSIS {
    detail::g* wake = nullptr;
    ch_->lock_.lock();
    if (!ch_->recv_locked(this->slot, wake)) return false;  // the lock stays held
    ch_->lock_.unlock();
    return detail::chan_completed(wake, ch_);
  }

  // await_suspend(): with the lock held, park and queue the waiter; the
  // unlock publishes it (hands off `this`).
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (ch_ == nullptr) return detail::chan_yield(h);
    {
      detail::spin_guard lk(ch_->lock_, std::adopt_lock);
      const std::source_location where = this->stashed_where();
      this->set_g(detail::current_g());
      detail::park(h, "chan receive", where);
      ch_->recvq_.push_back(this);
    }
    // Published: `this` may be gone already (scheduler.cpp, "Switching at park").
    return detail::switch_after_park();
  }

  std::optional<T> await_resume() noexcept { return std::move(this->slot); }

 private:
  friend class chan<T>;
  template <class... Cases>
  friend class detail::select_awaiter;

  recv_op(detail::chan_state<T>* ch, std::source_location where) noexcept : ch_(ch) {
    this->stash_where(where);
  }

  // Out of line: only a killed task's awaiter comes here.
  ABSL_ATTRIBUTE_NOINLINE void unlink() noexcept {
    detail::spin_guard lk(ch_->lock_);
    ch_->recvq_.remove(this);
  }

  // Select hooks: sel_poll, sel_enqueue and sel_dequeue are called with the
  // channel's lock held, taken by select with the others of its set
  // (hence assert_held: see spinlock.hpp).
  detail::spinlock* sel_lock() const noexcept { return &ch_->lock_; }
  detail::waiter* sel_node() noexcept { return this; }
  std::source_location sel_where() const noexcept { return this->stashed_where(); }
  bool sel_poll(detail::g*& wake) noexcept {
    ch_->lock_.assert_held();
    return ch_->recv_locked(this->slot, wake);
  }
  void sel_enqueue(detail::select_state* st) noexcept {
    ch_->lock_.assert_held();
    this->set_select(st);
    ch_->recvq_.push_back(this);
  }
  void sel_dequeue() noexcept {
    ch_->lock_.assert_held();
    ch_->recvq_.remove(this);
  }
  std::optional<T> sel_result() noexcept { return await_resume(); }

  detail::chan_state<T>* ch_;
};

// send_op<T>
//
// The awaiter of chan<T>::send(v), and a select case. Holds the value until
// it is handed over. co_await throws mpg::closed_channel_error if the channel
// is closed, or is closed while the send waits. If it waits, the task is
// resumed by the receiver that takes its value, or by close().
template <class T>
class [[nodiscard]] send_op : private detail::send_node<T> {
 public:
  using mpg_awaiter = detail::runtime_awaiter_tag;  // g.hpp
  using result_type = std::monostate;

  send_op(send_op&&) noexcept(std::is_nothrow_move_constructible_v<T>) = default;
  send_op& operator=(send_op&&) = delete;
  // See ~recv_op().
  ~send_op() {
    if (this->queued()) [[unlikely]]
      unlink();
  }

  // await_ready() and await_suspend(): as recv_op's. (Written out in both:
  // a helper shared by the two await_suspends, even forced inline, cost
  // pingpong 2 instructions per round trip under callgrind.)
  ABSL_ATTRIBUTE_ALWAYS_INLINE bool await_ready() noexcept ABSL_NO_THREAD_SAFETY_ANALYSIS {
    detail::g* wake = nullptr;
    ch_->lock_.lock();
    switch (ch_->send_locked(*this->value, wake)) {
      case detail::send_result::done:
        break;
      case detail::send_result::closed:
        ch_->lock_.unlock();
        return true;  // await_resume throws: the value is still ours
      case detail::send_result::would_block:
        return false;  // the lock stays held
    }
    ch_->lock_.unlock();
    this->value.reset();
    return detail::chan_completed(wake, ch_);
  }

  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (ch_ == nullptr) return detail::chan_yield(h);
    {
      detail::spin_guard lk(ch_->lock_, std::adopt_lock);
      const std::source_location where = this->stashed_where();
      this->set_g(detail::current_g());
      detail::park(h, "chan send", where);
      ch_->sendq_.push_back(this);
    }
    // Published: `this` may be gone already (scheduler.cpp, "Switching at park").
    return detail::switch_after_park();
  }

  void await_resume() {
    // Still holding the value: the channel was closed (before or while we
    // waited). Otherwise a receiver or the ring took it.
    if (this->value.has_value()) {
      this->value.reset();
      if (ch_->moved_from_) detail::throw_moved_from_chan("send");
      detail::throw_send_on_closed();
    }
  }

 private:
  friend class chan<T>;
  template <class... Cases>
  friend class detail::select_awaiter;

  template <class U>
  send_op(detail::chan_state<T>* ch, U&& v, std::source_location where)
      : detail::send_node<T>(std::in_place, std::forward<U>(v)), ch_(ch) {
    this->stash_where(where);
  }

  // See recv_op::unlink().
  ABSL_ATTRIBUTE_NOINLINE void unlink() noexcept {
    detail::spin_guard lk(ch_->lock_);
    ch_->sendq_.remove(this);
  }

  // Select hooks: as recv_op's.
  detail::spinlock* sel_lock() const noexcept { return &ch_->lock_; }
  detail::waiter* sel_node() noexcept { return this; }
  std::source_location sel_where() const noexcept { return this->stashed_where(); }
  bool sel_poll(detail::g*& wake) noexcept {
    ch_->lock_.assert_held();
    switch (ch_->send_locked(*this->value, wake)) {
      case detail::send_result::done:
        this->value.reset();
        return true;
      case detail::send_result::closed:  // chosen, and throws (value kept): Go's
        return true;                      // "send on closed channel"
      case detail::send_result::would_block:
        break;
    }
    return false;
  }
  void sel_enqueue(detail::select_state* st) noexcept {
    ch_->lock_.assert_held();
    this->set_select(st);
    ch_->sendq_.push_back(this);
  }
  void sel_dequeue() noexcept {
    ch_->lock_.assert_held();
    ch_->sendq_.remove(this);
  }
  std::monostate sel_result() {
    await_resume();
    return {};
  }

  detail::chan_state<T>* ch_;
};

namespace detail {
struct chan_recv_op {};  // ch.recv()
}  // namespace detail

// chan<T>
//
// Handle to a channel. Copying shares the channel. A moved-from handle (and
// a copy of one) reads as a closed, empty channel of its own: recv gives
// nullopt; send, try_send and close throw runtime_misuse_error; size and
// capacity are 0. Assigning a channel to it makes it a handle again.
// ch.recv() returns the handle itself, as an empty base: a runtime request
// (foreign_await.hpp). In a task, await_transform makes the recv_op from it
// with the co_await's site; as a select case, select() makes it (the
// select's site comes from the task's co_await too); elsewhere operator
// co_await makes it without a site.
template <class T>
class chan : public detail::request_base<chan<T>, detail::chan_recv_op> {
  static_assert(!std::is_reference_v<T> && std::is_object_v<T>, "chan<T> needs an object type");
  static_assert(std::is_move_constructible_v<T>, "chan<T> needs a movable T");

 public:
  using value_type = T;

  // An unbuffered channel.
  chan() : chan(0) {}
  // A channel with room for `capacity` elements (0: unbuffered).
  explicit chan(std::size_t capacity) : s_(new detail::chan_state<T>(capacity)) {}
  // Internal: adopt a state whose reference the caller owns (after()).
  chan(detail::chan_state<T>* s, detail::adopt_state_t) noexcept : s_(s) {}

  chan(const chan& o) noexcept : s_(o.s_) {
    if (s_ != detail::moved_from_state<T>()) s_->retain();
  }
  chan(chan&& o) noexcept : s_(std::exchange(o.s_, detail::moved_from_state<T>())) {}
  chan& operator=(const chan& o) noexcept {
    if (o.s_ != detail::moved_from_state<T>()) o.s_->retain();
    reset();
    s_ = o.s_;
    return *this;
  }
  chan& operator=(chan&& o) noexcept {
    if (this != &o) {
      reset();
      s_ = std::exchange(o.s_, detail::moved_from_state<T>());
    }
    return *this;
  }
  ~chan() { reset(); }

  // chan::send()
  //
  // `co_await ch.send(v)`: waits until a receiver takes v or the ring has
  // room. Throws mpg::closed_channel_error if the channel is or gets closed
  // (mpg::runtime_misuse_error on a moved-from handle).
  send_op<T> send(T v, std::source_location where = std::source_location::current()) {
    return send_op<T>(s_, std::move(v), where);
  }

  // chan::recv()
  //
  // `co_await ch.recv()`: the next value, or nullopt once the channel is
  // closed and drained. The operand is the handle itself (a runtime
  // request): a task's co_await adds its site, and costs what awaiting
  // recv_op directly would. recv(where) gives the recv_op, with a site of
  // the caller's choosing.
  detail::request_base<chan, detail::chan_recv_op>& recv() noexcept { return *this; }
  recv_op<T> recv(std::source_location where) noexcept { return recv_op<T>(s_, where); }

  // chan::try_send()
  //
  // Sends v if that needs no waiting (a receiver waits, or the ring has
  // room); returns false otherwise, leaving v untouched. Throws
  // mpg::closed_channel_error on a closed channel (mpg::runtime_misuse_error
  // on a moved-from handle). Any thread may call it,
  // inside a runtime or not: a receiver it wakes runs on its runtime.
  bool try_send(T&& v) { return try_send_ref(v); }
  bool try_send(const T& v)
    requires std::is_copy_constructible_v<T>
  {
    // The copy is made before taking the lock (a copy may allocate) and
    // dropped if the send would have to wait.
    T copy(v);
    return try_send_ref(copy);
  }

  // chan::try_recv()
  //
  // A value if one is available without waiting; nullopt if none is (or the
  // channel is closed and drained). Any thread may call it.
  std::optional<T> try_recv() {
    std::optional<T> out;
    detail::g* wake = nullptr;
    {
      detail::spin_guard lk(s_->lock_);
      s_->recv_locked(out, wake);
    }
    if (wake) detail::ready(wake);
    return out;
  }

  // chan::close()
  //
  // Receivers drain the ring, then get nullopt; blocked senders (and later
  // ones) throw. Closing twice throws mpg::closed_channel_error; closing a
  // moved-from handle, mpg::runtime_misuse_error. Any thread may call it.
  void close() { s_->close(); }

  // size(): elements in the ring now (a snapshot). capacity(): as built.
  std::size_t size() const noexcept { return s_->size(); }
  std::size_t capacity() const noexcept { return s_->capacity(); }

  // Two handles are equal when they share a channel.
  friend bool operator==(const chan& a, const chan& b) noexcept { return a.s_ == b.s_; }

  detail::chan_state<T>* state_for_internal_use() const noexcept { return s_; }

 private:
  template <class, class>
  friend class detail::request_base;
  static recv_op<T> make_awaiter(chan& c, detail::chan_recv_op,
                                 std::source_location where) noexcept {
    return c.recv(where);
  }

  bool try_send_ref(T& v) {
    detail::g* wake = nullptr;
    detail::send_result r;
    {
      detail::spin_guard lk(s_->lock_);
      r = s_->send_locked(v, wake);
    }
    if (r == detail::send_result::closed) {
      if (s_->moved_from_) detail::throw_moved_from_chan("try_send");
      detail::throw_send_on_closed();
    }
    if (wake) detail::ready(wake);
    return r == detail::send_result::done;
  }
  void reset() noexcept {
    if (s_ != detail::moved_from_state<T>())
      std::exchange(s_, detail::moved_from_state<T>())->release();
  }

  detail::chan_state<T>* s_;
};

}  // namespace mpg
