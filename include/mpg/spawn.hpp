// mpg/spawn.hpp: spawn, go, yield, consume_budget and join_handle<T>.
//
// spawn(t) turns task t into a new G, runnable at once on the caller's P,
// at the owner's end of the P's spawn deque (work-first fork-join: the P
// runs its newest spawned task first, and an idle P steals the oldest,
// lib/sched/work_deque.hpp). The returned join_handle<T> is awaited at most
// once for the task's result; its exception is rethrown there. Dropping the
// handle detaches the task; an exception escaping a detached task (or a
// `go` task) terminates the process with a report naming the task, and so
// does dropping, unjoined, the handle of a task that has ended by throwing:
// an exception is never lost unseen, as in Go a goroutine's panic is not.
//
// Where a join resumes: if the task had finished, co_await completes without
// suspending (unless the cooperative budget ran out, then it yields once).
// If the task is still the newest entry of the joiner's P's deque (no M has
// taken it: the usual case when spawns and joins nest), the joiner runs it
// inline, with no trip through the scheduler. So it does with a task that
// waits in the deque's private part under at most 15 newer entries (the
// first join of children joined in the order they were spawned): the join
// takes it from there and reverses the newer entries, so that the next
// join in spawn order finds its child the newest (lib/sched/work_deque.hpp,
// take_private_if). Otherwise the joiner is
// resumed by the M that finishes the task, on that M's P: that M switches
// to it directly when the task ends (lib/sched/scheduler.cpp, "Switching at
// finish").
//
// A join is also a select case: `co_await mpg::select(h, ch.recv())` (or
// h.join()) gives what `co_await h` gives, as its alternative (std::monostate
// for join_handle<void>). A join case that loses leaves the handle unjoined:
// it may be selected on or awaited again.
//
// Join as a select case (select.hpp's case contract, a lock-free case). The
// join word (frame.hpp) has no lock, so the case queues its waiter by CAS:
//   J1. sel_poll: the word is Done (or Killed): ready; nothing is taken
//       until sel_result.
//   J2. sel_enqueue: CAS Running -> the case's join_waiter tagged with
//       kJoinSelectTag. Failing on Done or Killed (the task finished since
//       the poll), the case is ready and not queued (select claims for it).
//       Failing on a tagged waiter, the word holds another case of the same
//       select on the same handle (select(h, h)): that case covers the
//       task's end, and this one reports queued without being queued (its
//       J4 has nothing to undo, and it never wins).
//   J3. The finisher (finish_root) exchanges the word to Done and, finding
//       a tagged waiter, calls wake_select_joiner(): reads the select's G,
//       claims the select (select_state::claim), stores waker_done = 1
//       (its last touch of the waiter) and readies the G only on `won`.
//   J4. sel_dequeue, in the select's clean-up (also for the winner, also
//       from the destructor of a case killed at shutdown): CAS tagged
//       waiter -> Running; success means no finisher saw the waiter. Failing,
//       the word is Done or Killed: the finisher, or the shutdown that
//       killed the task (which wakes a waiter as a finisher does, J3), saw
//       it, so wait (spin, then yield) until waker_done. (A waker_done
//       found set at once needs no CAS: J3 is over. So a case killed at
//       shutdown after its task was reads nothing through the handle.)
// Why J4 waits: after J3's exchange publishes Done, the select may already
// be finishing elsewhere (another case won) and free its frame, which holds
// the waiter the finisher is about to claim through. The finisher's section
// between its exchange and waker_done is a few instructions with no lock
// and no call out, so the wait is short unless the OS preempts it there.
// Memory ordering: J2's CAS is acq_rel (release: the waiter's owner and the
// select's gp reach the finisher, whose exchange acquires); J3's waker_done
// store is release and J4's load acquire, so the finisher's claim happens
// before the select frees the waiter. The result is published by the
// finisher's exchange (release) and read after an acquire of Done.
#pragma once

#include <atomic>
#include <cassert>
#include <coroutine>
#include <cstdint>
#include <source_location>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>

#include "absl/base/attributes.h"
#include "mpg/detail/sched/frame.hpp"
#include "mpg/detail/sched/g.hpp"
#include "mpg/detail/sync/cpu_relax.hpp"
#include "mpg/detail/sync/waitq.hpp"
#include "mpg/task.hpp"

namespace mpg {

template <class T>
class join_op;

namespace detail {

template <class... Cases>
class select_awaiter;

// A select case's waiter in a join word (J2): its address tagged with bit
// 0. The kJoin* constants are below 8 and real waiters are 8-aligned, so
// the tag tells it from a parked joiner's g* and from the constants.
inline constexpr std::uintptr_t kJoinSelectTag = 1;
inline bool is_select_joiner(std::uintptr_t v) noexcept {
  return v > kJoinInline && (v & kJoinSelectTag) != 0;
}
struct join_waiter : waiter {
  // Set (release) by the finisher when it is done with this waiter (J3).
  std::atomic<std::uint32_t> waker_done{0};
};
// wake_select_joiner(): J3, for finish_root and the shutdown's kill, with
// the word's old value.
inline void wake_select_joiner(std::uintptr_t old) noexcept {
  auto* w = reinterpret_cast<join_waiter*>(old & ~kJoinSelectTag);
  select_state* st = w->sel();
  g* gp = st->gp;
  const select_state::claim_result r = st->claim(w);
  // Release: pairs with the acquire in J4; the last touch of *w and *st.
  w->waker_done.store(1, std::memory_order_release);
  if (r == select_state::claim_result::won) ready(gp);
}

[[noreturn]] void throw_join_twice();
[[noreturn]] void throw_task_killed();
// drop_join(): the handle side of a spawned frame goes away without a join
// (frame.hpp: Running -> Detached; Done -> destroy; Killed -> free memory).
// Out of line, so that a handle's destructor after its join (the common
// end: the handle is empty) is a test that the compiler inlines.
template <class Promise>
[[gnu::noinline]] void drop_join(std::coroutine_handle<Promise> root) noexcept {
  frame_header* hdr = header_of(root.address());
  // acq_rel: acquire the finisher's result writes before destroying them;
  // release our handle's last use before the finisher destroys the frame.
  const std::uintptr_t old = hdr->join.exchange(kJoinDetached, std::memory_order_acq_rel);
  if (old == kJoinDone) {
    promise_base& p = root.promise();
    if (p.exception_) report_lost_exception(p.exception_, p.gid_, p.name_);
    root.destroy();
  } else if (old == kJoinKilled) {
    release_frame_memory(hdr);
  } else if (old == kJoinInline) {
    root.destroy();  // the joiner was destroyed while running it inline
  } else if (is_select_joiner(old)) {
    // A select's join case is queued on the word: the handle goes under it
    // (~runtime kills newest first, and the handle's owner may be younger
    // than the selecting task). Its J4 must not come back through the
    // handle: mark J3 over for it, as a finisher would. The select is not
    // woken (its task is killed in its turn, or waits as on a detached
    // task). Release: pairs with J4's acquire.
    reinterpret_cast<join_waiter*>(old & ~kJoinSelectTag)
        ->waker_done.store(1, std::memory_order_release);
  } else if (old > kJoinInline) {
    // A parked joiner's G, the same case for a plain join: the word it
    // parked in is no longer its (g::joined), so the kill of its task at
    // shutdown must not take it back out of a frame that may be freed by
    // then. Its G is parked, and the exchange took the word from it: no
    // one else writes the field now.
    reinterpret_cast<g*>(old)->joined = nullptr;
  }
}
// join_suspend(): the join's await_suspend. If the task is the newest entry
// of this P's spawn deque, pop it and return its frame to run it inline
// (work-first: no switch through the scheduler); else park the current G
// at h until the task finishes (noop returned), or return h when it
// finished already.
// The park site is promise->caller_where_ (link_parent).
std::coroutine_handle<> join_suspend(std::coroutine_handle<> root, promise_base* promise,
                                     std::coroutine_handle<> h);
}  // namespace detail

// join_handle<T>
//
// Move-only; awaited at most once (as an lvalue or rvalue).
template <class T>
class [[nodiscard]] join_handle {
 public:
  using handle_type = std::coroutine_handle<detail::promise<T>>;

  join_handle() noexcept = default;
  explicit join_handle(handle_type h) noexcept : h_(h) {}
  join_handle(join_handle&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  join_handle& operator=(join_handle&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  join_handle(const join_handle&) = delete;
  join_handle& operator=(const join_handle&) = delete;
  ~join_handle() { reset(); }

  bool valid() const noexcept { return static_cast<bool>(h_); }
  // done(): the task has finished (its result is ready).
  bool done() const noexcept {
    return h_ && detail::header_of(h_.address())->join.load(std::memory_order_acquire) ==
                     detail::kJoinDone;
  }
  // id(): the G id the task ran as (0 for an empty handle).
  std::uint64_t id() const noexcept { return h_ ? h_.promise().gid_ : 0; }

  // detach(): drop the handle; the task runs on.
  void detach() noexcept { reset(); }

  struct awaiter {
    using mpg_awaiter = detail::runtime_awaiter_tag;
    join_handle* self;
    bool await_ready() const noexcept {
      // Acquire: pairs with the finisher's acq_rel exchange so the result is visible.
      return detail::header_of(self->h_.address())->join.load(std::memory_order_acquire) ==
                 detail::kJoinDone &&
             !detail::consume_budget_now();
    }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) {
      return detail::join_suspend(self->h_, &self->h_.promise(), h);
    }
    // Forced inline: clang 16 kept it a call at every join (callgrind, 1 P:
    // fib 371 -> 353 and skynet 311 -> 300 instructions per task inlined).
    ABSL_ATTRIBUTE_ALWAYS_INLINE T await_resume() {
      handle_type h = std::exchange(self->h_, {});
      struct destroy_on_exit {
        handle_type h;
        ~destroy_on_exit() {
          if (h) h.destroy();
        }
      } guard{h};
      if (detail::header_of(h.address())->join.load(std::memory_order_acquire) ==
          detail::kJoinKilled) {
        guard.h = {};
        detail::drop_join(h);
        detail::throw_task_killed();
      }
      return h.promise().result();
    }
    // link_parent(): the site of the joining task's co_await, called by its
    // await_transform (task.hpp) once the handle is checked: where the join
    // parks, and the await-chain line of the joiner when the child runs
    // inline. It goes into the child's promise, a field the child itself
    // never touches.
    void link_parent(std::source_location where) noexcept {
      self->h_.promise().caller_where_ = where;
    }
  };
  awaiter operator co_await() & { return awaiter{checked()}; }
  awaiter operator co_await() && { return awaiter{checked()}; }

  // join_handle::join()
  //
  // `co_await h.join()` is `co_await h`; h.join() is also the select case
  // (naming h in a select does the same). Throws runtime_misuse_error on an
  // empty (already joined, moved-from or default) handle.
  join_op<T> join(std::source_location where = std::source_location::current()) {
    return join_op<T>(checked(), where);
  }

  handle_type release() noexcept { return std::exchange(h_, {}); }

 private:
  friend class join_op<T>;
  join_handle* checked() {
    if (!h_) detail::throw_join_twice();
    return this;
  }
  void reset() noexcept {
    if (h_) [[unlikely]] detail::drop_join(std::exchange(h_, {}));
  }
  handle_type h_{};
};

// join_op<T>
//
// The awaiter of h.join() and the join select case (J1-J4 above). Refers to
// its handle, which must outlive it. co_await gives T; as a select case
// result_type (T, or std::monostate for void).
template <class T>
class [[nodiscard]] join_op : private detail::join_waiter {
 public:
  using mpg_awaiter = detail::runtime_awaiter_tag;  // g.hpp
  using result_type = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

  join_op(join_op&& o) noexcept : h_(o.h_), where_(o.where_) {}
  join_op& operator=(join_op&&) = delete;
  // A select case killed at shutdown while queued: unlink (J4).
  ~join_op() { sel_dequeue(); }

  bool await_ready() const noexcept { return awaiter().await_ready(); }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) {
    return awaiter().await_suspend(h);
  }
  T await_resume() { return awaiter().await_resume(); }
  // A task's `co_await h.join()` links the child as `co_await h` does.
  void link_parent(std::source_location where) noexcept { awaiter().link_parent(where); }

 private:
  friend class join_handle<T>;
  template <class... Cases>
  friend class detail::select_awaiter;

  join_op(join_handle<T>* h, std::source_location where) noexcept : h_(h), where_(where) {}
  typename join_handle<T>::awaiter awaiter() const noexcept { return {h_}; }
  std::atomic<std::uintptr_t>& word() const noexcept {
    return detail::header_of(h_->h_.address())->join;
  }
  std::uintptr_t tagged() noexcept {
    return reinterpret_cast<std::uintptr_t>(static_cast<detail::join_waiter*>(this)) |
           detail::kJoinSelectTag;
  }

  // Select hooks (select.hpp): lock-free.
  std::nullptr_t sel_lock() const noexcept { return nullptr; }
  detail::waiter* sel_node() noexcept { return this; }
  std::source_location sel_where() const noexcept { return where_; }
  // J1. Acquire: pairs with the finisher's exchange (the result).
  bool sel_poll(detail::g*&) noexcept {
    const std::uintptr_t v = word().load(std::memory_order_acquire);
    return v == detail::kJoinDone || v == detail::kJoinKilled;
  }
  // J2.
  bool sel_enqueue(detail::select_state* st) noexcept {
    this->set_select(st);
    std::uintptr_t expected = detail::kJoinRunning;
    // acq_rel on success: see "Memory ordering" above; acquire on failure:
    // the result of the task that finished since the poll.
    if (!word().compare_exchange_strong(expected, tagged(), std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
      // J2'. Another case of this select on the same handle (select(h, h))
      // is queued there already: it covers the task's end, and this case
      // stays out (not queued, so it never wins). Only one task holds the
      // handle, so no other select's waiter can be there.
      if (detail::is_select_joiner(expected)) {
        assert(reinterpret_cast<detail::join_waiter*>(expected & ~detail::kJoinSelectTag)->sel() ==
               st);
        return true;
      }
      return false;  // Done or Killed: ready
    }
    queued_ = true;
    return true;
  }
  // J4.
  void sel_dequeue() noexcept {
    if (!queued_) return;
    queued_ = false;
    // J4'. waker_done set already: the finisher, or the shutdown's kill,
    // took the waiter off the word and is done with it (J3); the word is
    // Done or Killed and there is nothing to undo. Looked at first, so that
    // a case killed at shutdown reads neither its handle nor the task's
    // frame: kills go newest first, and the handle may be in a younger
    // task's frame, gone already with the joined task's frame that its
    // drop freed. Acquire: pairs with J3's release, as below.
    if (waker_done.load(std::memory_order_acquire) != 0) return;
    std::uintptr_t expected = tagged();
    // Relaxed: success only withdraws what nobody read; failure is
    // followed by the acquire on waker_done, or finds Killed.
    if (word().compare_exchange_strong(expected, detail::kJoinRunning, std::memory_order_relaxed,
                                       std::memory_order_relaxed))
      return;
    // Done or Killed: the finisher, or the shutdown that killed the task,
    // saw the waiter (J3): wait until it is done with it.
    if (expected != detail::kJoinDone && expected != detail::kJoinKilled) return;
    for (unsigned spins = 0; waker_done.load(std::memory_order_acquire) == 0; ++spins) {
      if (spins < 64)
        detail::cpu_relax();
      else
        std::this_thread::yield();
    }
  }
  result_type sel_result() {
    sel_dequeue();  // the winner too: its finisher may still be in J3
    if constexpr (std::is_void_v<T>) {
      await_resume();
      return {};
    } else {
      return await_resume();
    }
  }

  join_handle<T>* h_;
  std::source_location where_;
  bool queued_ = false;  // J2 succeeded and J4 has not run (the select's own)
};

namespace detail {
// op_with_task_form: an rvalue operation awaiter that converts to a task of
// its result (what spawn(op), runtime::spawn(op) and runtime::block_on(op)
// take). A named op (an lvalue) is not one: its task form would move it.
template <class Op>
concept op_with_task_form =
    !std::is_reference_v<Op> && requires { typename Op::result_type; } &&
    std::is_convertible_v<Op &&, task<typename Op::result_type>>;

template <class T>
typename task<T>::handle_type spawn_frame(task<T>&& t, const char* name, scheduler* s) {
  auto h = t.release();
  if (!h) throw_task_awaited_twice();
  h.promise().name_ = name;
  spawn_root(h, name, s, &h.promise());
  return h;
}
}  // namespace detail

// spawn(): start t as a new G of the current runtime. Throws std::logic_error
// outside a task. `name` (static storage) appears in dumps and reports.
template <class T>
join_handle<T> spawn(task<T> t, const char* name = nullptr) {
  return join_handle<T>(detail::spawn_frame(std::move(t), name, nullptr));
}

// spawn(op): an operation awaiter that has a task form, passed as an
// rvalue: the frame-less stream operations (net.hpp: tcp_stream's read,
// write, write_vectored and receive; buffered.hpp's reader and writer
// calls). Spawns that task form, as spawn(task<R>(std::move(op))) does:
//
//   auto sending = mpg::spawn(s.write(data));   // join_handle<absl::Status>
template <class Op>
  requires detail::op_with_task_form<Op>
join_handle<typename Op::result_type> spawn(Op&& op, const char* name = nullptr) {
  return spawn(task<typename Op::result_type>(std::move(op)), name);
}

// go(): start t as a detached G (Go's `go` statement). Throws
// std::logic_error outside a task (spawn_root, which destroys the frame
// then). Inline, so that link-time optimisation can take spawn_root into
// the task that calls go(), as it does for spawn().
inline void go(task<void> t, const char* name = nullptr) {
  auto h = t.release();
  if (!h) detail::throw_task_awaited_twice();
  h.promise().name_ = name;
  // Relaxed: the frame is not shared yet; spawn_root publishes it.
  detail::header_of(h.address())->join.store(detail::kJoinDetached, std::memory_order_relaxed);
  detail::spawn_root(h, name, nullptr, &h.promise());
}

// yield(): Go's Gosched. The G goes to the back of its P's local queue.
// Awaited where no task runs (a plain thread's coroutine, or one that
// runtime_handle::schedule() moved onto a P) it throws runtime_misuse_error.
struct yield_awaiter {
  using mpg_awaiter = detail::runtime_awaiter_tag;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) const { detail::yield_current(h); }
  void await_resume() const noexcept {}
};
yield_awaiter yield();

// consume_budget(): a cooperative scheduling point that costs nothing until
// the G's budget for this time slice is spent; then it yields. Loops that
// never otherwise suspend call it to stay fair (Tokio's consume_budget).
struct budget_awaiter {
  using mpg_awaiter = detail::runtime_awaiter_tag;
  bool await_ready() const noexcept { return !detail::consume_budget_now(); }
  void await_suspend(std::coroutine_handle<> h) const noexcept { detail::requeue_current(h); }
  void await_resume() const noexcept {}
};
budget_awaiter consume_budget();

}  // namespace mpg
