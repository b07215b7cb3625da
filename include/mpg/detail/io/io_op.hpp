// mpg/detail/io/io_op.hpp: the intrusive operation record and the awaiter that
// every io_uring operation of mpg goes through (io::submit, net, fs).
//
// Design. An operation lives in the frame of the task that awaits it, as in
// liburing's examples: the SQE's user_data points at an io_op inside the
// suspended awaiter, so starting an operation allocates nothing. The awaiter
// follows the park/ready protocol of g.hpp:
//   1. await_suspend parks the G (park()), then
//   2. io_start() prepares the SQE(s) on the current P's reactor under its
//      lock (publishing the op: from then on the reactor may complete it on
//      any thread), and await_suspend returns without touching the frame.
//   3. The reactor that reaps the op's final CQE stores res/flags in the op
//      and calls ready(waiter), exactly once.
// SQEs are not submitted by io_start: the scheduler flushes each P's reactor
// in its loop, so the operations of many tasks go to the kernel in one
// io_uring_enter. (Cancels and file operations are submitted at once; see
// io_slot below and lib/io/reactor_cancel.cpp: a cancel that finds no SQE
// is owed by the reactor and issued at its next flush, never dropped.)
//
// Cancellation from another task (possibly on another P) goes through an
// io_slot: the object an operation belongs to (a stream direction, a
// listener) publishes its op in flight there, together with the reactor that
// owns it. A canceller locks the slot, and the owning reactor then checks
// under its own lock that the op is still in flight before it submits
// IORING_OP_ASYNC_CANCEL keyed by user_data; the reactor clears the slot under
// that same lock when it dispatches the op's final completion. The awaiter's
// buffers and record stay alive until the final completion, because its task
// stays parked until then.
//
// Cancelling by address. user_data is the io_op's address, and the next
// operation of the same frame reuses that address (and the slot). A cancel
// still reaches only the op it was issued for:
//   1. It is issued for an op in flight. The canceller holds the slot lock
//      from reading slot->op until the cancel SQE is prepared, so no new op
//      can be published in the slot meanwhile (io_start takes that lock),
//      and the reactor prepares the SQE only if slot->op still holds the op
//      under its own lock (else a NOP): the named op's final CQE has not been
//      dispatched, so its task is parked and its address is not reused yet.
//   2. The kernel resolves an ASYNC_CANCEL once, when it issues it: it finds
//      the request with that user_data and marks that request (0: cancelled,
//      -EALREADY: running in io-wq and signalled, -ENOENT: already
//      completed); nothing keyed by user_data outlives the issue. SQEs are
//      issued in SQ order, so a cancel SQE that stays queued (submit refused
//      with -EBUSY) is issued before every SQE prepared after it, in
//      particular before a new op at the same address on that ring; a new
//      op on another P's ring is never in its reach (a cancel searches only
//      its own ring).
//   3. stop (io_stop), the one mark a cancel leaves in the record, is
//      written under the reactor lock only while the op is in flight (1),
//      and io_start clears it before the next op is published.
// Hence a unique token in user_data would buy nothing. Tested in
// test/io_cancel_tests.cpp (a cancel's CQE that arrives late, -ENOENT,
// -EALREADY, a link timeout, each followed by an op at the same address).
//
// Why an op was stopped. Three kinds of request end an op in flight through
// its slot, and the op records the strongest (io_stop, under the reactor
// lock), which outcome() turns into the op's result:
//   cancel   cancel() or close() of the object, or shutdown: -ECANCELED.
//   context  the context the op is bound to ended (detail/io/io_context.hpp):
//            -ECANCELED, which the binding reads as the context's err().
//   kick     the object's deadline (an io_deadline) moved earlier than the
//            one the op was armed with: the op ends with -EINTR, and the
//            caller's loop, which retries -EINTR, issues it again armed with
//            the deadline as it is now (or finds it passed: -ETIME). The
//            reactor kicks an op the kernel took without its link timeout
//            too (lib/io/reactor.cpp, "An op split from its link timeout").
// A cancel is not sticky (a later op of the object is not affected); the
// other two are sticky in the state they come from (a context stays cancelled; the deadline stays
// set), and io_start() reads that state under the slot lock, so a request
// made between two issues of one logical operation is not lost:
//   - context: the binding's watcher sets nothing in the op; it takes the
//     slot lock, then cancels slot->op if it is bound to that context. The
//     context's cancelled_ is set before the watcher runs, and io_start()
//     checks it under the slot lock: an op started after the watcher's
//     section sees it and is refused; one started before is in the slot.
//   - deadline: io_deadline::set() stores the new deadline, then takes the
//     slot lock and kicks slot->op if its armed deadline is later; io_start()
//     loads the deadline under the slot lock to arm the op with it. Either
//     the start's section comes first (the op is in the slot, armed with the
//     old deadline: kicked) or the setter's (the start loads the new one).
// The reactor checks the op's binding and armed deadline under its own lock,
// after it confirmed the op is in flight (a canceller never dereferences an
// op outside that lock: the op may complete and its frame go at any moment).
//
// Invariants:
//   - An io_op is in at most one reactor at a time, and is readied exactly
//     once per io_start that returned true.
//   - slot->op != nullptr  <=>  that op is in flight (prepared or submitted,
//     final CQE not yet dispatched). Written under slot->lock when set, under
//     the owner reactor's lock when cleared.
//   - Lock order: slot lock, then reactor lock. The reactor never takes a
//     slot lock.
#pragma once

#include <absl/base/thread_annotations.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <source_location>

#include "mpg/detail/sched/g.hpp"
#include "mpg/detail/sync/spinlock.hpp"

struct io_uring_sqe;  // liburing's; public headers do not include liburing.h

namespace mpg::detail {

class reactor;
class context_node;
struct io_op;

// io_spin_lock: the lock of a reactor and of an io_slot: mpg's one spinlock
// (detail/sync/spinlock.hpp) with the backoff for sections that may make a
// system call (long_section_backoff). No blocking call is ever made while a
// task holds it.
using io_spin_lock = basic_spinlock<long_section_backoff>;

// io_slot: where an object publishes its operation in flight so another task
// can cancel it (see the essay above). One op at a time per slot.
struct io_slot {
  io_slot() noexcept = default;
  // claiming: the slot of an object whose operations hold it from first
  // issue to end (see `holder`).
  explicit io_slot(bool claiming) noexcept : claims(claiming) {}
  io_slot(const io_slot&) = delete;
  io_slot& operator=(const io_slot&) = delete;

  io_spin_lock lock;
  // Set (under `lock`) once the object is closed: no new op may start.
  // Acquire/release so a fast-path reader outside the lock sees a close that
  // happened-before it; the authoritative check is made under the lock.
  std::atomic<bool> closed{false};
  // The slot's ops are logical operations that may take several issues (a
  // stream's read or write: re-issued after a short send, -EINTR, -EAGAIN
  // or a kick), and the slot is claimed for a whole one (`holder`).
  const bool claims = false;
  // The op in flight, or null. Set under `lock` (relaxed: the reactor reads
  // it under its own lock, which io_start took after this store, so the
  // reactor lock's release/acquire orders it); cleared by the owner reactor
  // under its lock, read by cancellers under `lock` then re-checked under the
  // reactor's lock.
  std::atomic<io_op*> op{nullptr};
  reactor* owner ABSL_GUARDED_BY(lock) = nullptr;  // valid while op != nullptr
  // The next slot in the owner reactor's list of owed cancels (a cancel of
  // this slot's op that found no SQE: reactor_cancel.cpp, "A cancel that
  // finds no SQE"). Used only by that reactor, under its lock, while the
  // slot is on its list, which it leaves when its op's final CQE is
  // dispatched.
  io_slot* owed_next = nullptr;
  // Of a claiming slot: the G whose logical operation holds it, from the
  // issue that found it free to the end of that operation, or null. Between
  // two issues of one operation slot->op is null, but the slot stays the
  // holder's: io_start() refuses another G's op (-EALREADY) as long as
  // `holder` names a G other than the op's waiter, so a second writer's
  // bytes never land between a first one's short send and its remainder,
  // and the refusal goes to the second op, never to the first one's
  // re-issue. Set by io_start() under `lock`; cleared by the holder itself
  // when its operation ends (io_release_claim), outside `lock`.
  // Relaxed throughout: nothing is published through it. A G that starts
  // an op after the holder's operation ended (ordered after it by a join, a
  // channel, ...) reads null by coherence; one that races with the
  // operation is breaking the one-at-a-time rule and is refused whichever
  // value it reads. The holder reads its own claim back after its op's
  // completion readied it, which orders io_start's store before that read.
  std::atomic<g*> holder{nullptr};
};

// io_release_claim(): the end of g's logical operation on a claiming slot:
// the slot is free again if g holds it (a refused op's G does not). A null
// g (an awaiter that never issued its op) holds nothing: its load and store
// would race with another G's io_start claiming the slot in between.
inline void io_release_claim(io_slot* slot, g* gp) noexcept {
  // Relaxed: see io_slot::holder. Only the holder writes a non-null value
  // back to null, and no other G writes while it holds the slot.
  if (gp != nullptr && slot->holder.load(std::memory_order_relaxed) == gp)
    slot->holder.store(nullptr, std::memory_order_relaxed);
}

// io_claim: a logical operation's coroutine (tcp_stream::do_read, ...)
// keeps one for its slot: however the coroutine ends, its destructor ends
// the claim its issues took. Except when ~runtime kills the task (the
// shutdown marks its G dead, then destroys its frames; shutdown.cpp): the
// frames of live tasks go newest first, so the stream or listener may be
// gone already, in a younger task's frame, and the claim is left as it is.
// (A stream that outlives its runtime then refuses later reads or writes
// in that direction with EALREADY.)
class io_claim {
 public:
  explicit io_claim(io_slot* slot) noexcept : slot_(slot), g_(current_g()) {}
  io_claim(const io_claim&) = delete;
  io_claim& operator=(const io_claim&) = delete;
  ~io_claim() {
    // Relaxed: read by the thread that wrote it last, the M running the
    // task, or the thread destroying the runtime, which marked it dead.
    if (g_ != nullptr && g_->status.load(std::memory_order_relaxed) == g_status::dead) return;
    io_release_claim(slot_, g_);
  }

 private:
  io_slot* slot_;
  g* g_;
};

// io_stop: why an op in flight was stopped (see the essay); ordered by
// precedence, the strongest request wins. `move` ends a multishot so that
// its owner re-arms it on another P (recv_queue.hpp, R6).
enum class io_stop : std::uint8_t { none, move, kick, context, cancel };

// io_stop_request: what a canceller asks of the reactor (reactor::cancel).
struct io_stop_request {
  io_stop why = io_stop::cancel;
  const context_node* ctx = nullptr;  // context: only an op bound to it
  std::int64_t deadline_ns = 0;       // kick: only an op armed later than this
};

// io_fault_plan: the fault injection planned for one issue of an op
// (lib/io/fault_injector.hpp; tests only). The values after `none` follow
// io_fault's order, one higher.
enum class io_fault_plan : std::uint8_t {
  none, eintr, eagain, short_io, reset, overflow, no_multishot, no_sqe, no_pause,
  miss_pause, no_cancel, reposted
};

// io_prep_fn: prepares `sqe` for the operation described by ctx. Called under
// the reactor lock; must set neither user_data nor link flags.
using io_prep_fn = void (*)(io_uring_sqe* sqe, const void* ctx);

// layout of struct __kernel_timespec (checked in reactor.cpp)
struct io_timespec {
  std::int64_t tv_sec = 0;
  std::int64_t tv_nsec = 0;
};

struct io_op {
  using clock = std::chrono::steady_clock;

  // User-provided, so that the Itanium C++ ABI lets a derived class place
  // members in the op's tail padding (it does not for a class that is POD
  // for the purpose of layout).
  io_op() noexcept {}

  // Called under the reactor lock after res/cqe_flags are stored. Null means
  // ready(waiter). Must not call back into the same reactor.
  void (*complete)(io_op*) noexcept = nullptr;
  g* waiter = nullptr;
  io_slot* slot = nullptr;
  int res = 0;
  std::uint32_t cqe_flags = 0;
  // The deadline the op is armed with: set by the awaiter, then lowered by
  // io_start() to *live_deadline if that is earlier.
  clock::time_point deadline{};
  // Optional, with a slot: a deadline other tasks may change while the op
  // is in flight (io_deadline::ns_), read by io_start() under the slot lock.
  const std::atomic<std::int64_t>* live_deadline = nullptr;
  // Optional, with a slot: the context the op is bound to; io_start()
  // refuses the op (-ECANCELED, io_stop::context) once it is cancelled.
  const context_node* ctx = nullptr;
  bool got_first = false;         // first CQE of a multi-CQE op seen (reactor)
  io_stop stop = io_stop::none;   // written and read under the reactor lock
  // Written and read under the reactor lock, only while faults are injected.
  io_fault_plan fault = io_fault_plan::none;
  bool has_deadline = false;      // deadline is set
  bool submit_now = false;        // submit at once instead of at the next flush
  // A multishot op (recv_queue.hpp): the reactor calls `complete` for every
  // CQE, with IORING_CQE_F_MORE in cqe_flags on all but the final one, and
  // the op stays in its slot until the final one. Set by the owner.
  bool multishot = false;
  // Set by a multishot op's `complete` on a CQE with F_MORE: the reactor
  // then cancels the op (backpressure), and clears it once it has an SQE
  // for the cancel; the owner clears it when it arms the op again.
  bool stop_more = false;
  // No field for the completion's own state: `complete` finds it from the
  // op, which is a base or a member of its owner (net::read_op derives from
  // io_op). The byte after stop_more is tail padding, which a derived class
  // may use (read_op keeps its state there).

  // outcome(): res, except that an op ended by a cancel (io_stop::cancel or
  // context) reads -ECANCELED, one ended by its deadline reads -ETIME, one
  // ended by a kick or a move reads -EINTR (the kernel reports all of these as
  // -ECANCELED, or for work it had handed to io-wq as -EINTR or as one of
  // its internal restart codes, -ERESTARTSYS and kin), and any other restart
  // code reads -EINTR, which callers retry.
  int outcome() const noexcept;

  // cancel_requested(): stopped by a cancel, or a context (see io_stop).
  bool cancel_requested() const noexcept { return stop >= io_stop::context; }
};

// io_start(): step 2 above, on the current P's reactor. With a slot, the op is
// published there (and refused if the slot is closed or its context
// cancelled; its deadline is lowered to *live_deadline, under the slot
// lock). Returns false if the op was not started: then op->res holds why
// (-ECANCELED closed slot or cancelled context, with op->stop saying which,
// -EALREADY another op in flight in the slot, or the slot held by another
// G's logical operation (io_slot::holder), -ENXIO no reactor, -ETIME
// deadline already past) and the caller must undo its park.
bool io_start(io_op* op, io_prep_fn prep, const void* ctx, io_slot* slot);

// io_cancel(): cancel the op in flight in `slot`, if any; with close == true
// also mark the slot closed so no op starts on it again. Any thread. Returns
// once the cancel is submitted to the owning ring (not completed), or, if
// that ring has no SQE to spare, owed by it: issued at its next flush.
void io_cancel(io_slot* slot, bool close) noexcept;

// io_stop_in_flight(): the op in flight in `slot`, if any and if it matches
// `rq` (see io_stop_request), is stopped for rq.why. Any thread; returns
// once the cancel is submitted to the owning ring, or owed as io_cancel's.
void io_stop_in_flight(io_slot* slot, const io_stop_request& rq) noexcept;
// io_try_stop_in_flight(): the same for a stop that is only worth making
// when it is cheap (io_stop::move): false, with nothing asked, if the owning
// ring's lock is held (its M may be in a submit that runs for microseconds)
// or its SQ stays full.
bool io_try_stop_in_flight(io_slot* slot, const io_stop_request& rq) noexcept;

// user_sqe: what end_user_sqe() made of an io::submit SQE.
//   plain    it goes to the kernel, and its result is a number;
//   new_fd   it goes to the kernel, and a result >= 0 is a new file
//            descriptor that the awaiting task owns: an ACCEPT (not
//            multishot: refused), OPENAT, OPENAT2 or SOCKET whose file_index
//            is 0 (one that asks for a direct descriptor makes no fd: it
//            completes with a slot of the ring's file table, or with an
//            error, as the rings have no table);
//   refused  it was turned into a NOP: the op reads -EINVAL.
enum class user_sqe : std::uint8_t { plain, new_fd, refused };

// The SQE of an io::submit callback (mpg/io.hpp), which the thunk of its
// awaiter brackets, under the reactor lock: begin_user_sqe() blanks the SQE
// before the callback runs (io_uring_get_sqe leaves the slot's last SQE
// there); end_user_sqe() returns `refused` after turning it into a NOP if it
// selects a provided buffer, is a multishot op, or reaches the ring's other
// requests (a MSG_RING, an update of a poll or timeout, a cancel of any
// request or of an opcode's: the list is in mpg/io.hpp and io_op.cpp), else
// `new_fd` or `plain`; refuse_user_sqe() turns it into a NOP (the callback
// threw). The runtime's own prep functions are not bracketed: they write
// every field the kernel reads for their opcode.
void begin_user_sqe(io_uring_sqe* sqe) noexcept;
user_sqe end_user_sqe(io_uring_sqe* sqe) noexcept;
void refuse_user_sqe(io_uring_sqe* sqe) noexcept;

// close_unread_fd(): the destructor of an awaiter whose op makes a file
// descriptor (lib/io/fd_awaiter.hpp; io::submit's with a `new_fd` SQE) and
// whose task never read the result: closes op.res if the op completed (its
// final CQE was dispatched: got_first) with a new fd (res >= 0). An op
// never started, or refused by io_start, has got_first false or a negative
// res. It closes only in ~runtime (lib/sched/shutdown.cpp, step 6, which
// destroys the frame of a task whose op completed but that never ran
// again), on ~runtime's thread with every M joined, so a plain close(2)
// blocks no P: anywhere else an awaiter that owns a result was never
// awaited, and its op never started.
void close_unread_fd(const io_op& op) noexcept;

// io_deadline: a deadline of an object's operations that any task may set,
// and that applies to the operation in flight (Go's SetReadDeadline): the
// ops of that direction point live_deadline at ns_, and set() kicks the op
// in flight when the new deadline is earlier than the one it is armed with
// (see the essay: the op's loop re-issues it with the new deadline, or
// reports -ETIME once it passed). A later deadline, or none, needs no kick:
// the op's link timeout fires at the old one, and the loop, seeing that the
// deadline it reads now has not passed, re-issues the op.
class io_deadline {
 public:
  static constexpr std::int64_t kNone = INT64_MAX;

  io_deadline() noexcept = default;
  io_deadline(const io_deadline& o) noexcept : ns_(o.ns_.load(std::memory_order_relaxed)) {}
  io_deadline& operator=(const io_deadline& o) noexcept {
    ns_.store(o.ns_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    return *this;
  }

  // set(): the new deadline (kNone: none), for the op in flight in `slot`
  // too. Any task, any thread.
  void set(std::int64_t ns, io_slot* slot) noexcept;
  // ns(): the deadline now (kNone: none). Relaxed: a hint for the caller's
  // own loop; io_start() reads it again under the slot lock.
  std::int64_t ns() const noexcept { return ns_.load(std::memory_order_relaxed); }
  const std::atomic<std::int64_t>* live() const noexcept { return &ns_; }

 private:
  // Relaxed everywhere: set() orders its store before its slot section by
  // the slot lock's release, and io_start() reads it under that lock.
  std::atomic<std::int64_t> ns_{kNone};
};

// io_park_start(): the await_suspend of an awaiter of one op: the awaiting
// G parks at h (for `reason`, at `where`) as the op's waiter, then the op
// starts. True: the op is published, and the awaiter (in the parked frame)
// is the reactor's until the op's completion readies the G: touch nothing
// after. False: io_start() refused it (op->res says why) and the park is
// undone: the task goes on at once.
inline bool io_park_start(io_op* op, io_prep_fn prep, const void* ctx, io_slot* slot,
                          std::coroutine_handle<> h, const char* reason,
                          std::source_location where) {
  op->waiter = current_g();
  park(h, reason, where);
  if (io_start(op, prep, ctx, slot)) return true;
  cancel_park();
  return false;
}

// io_awaiter: the awaitable of one operation. Resumes on whichever M runs
// the G after the reactor readied it (the M that reaped the CQE, usually the
// owning P's).
struct io_awaiter {
  using mpg_awaiter = detail::runtime_awaiter_tag;  // g.hpp
  io_op op;
  io_prep_fn prep;
  const void* ctx;
  io_slot* slot;
  const char* reason;
  // The site of the awaiting task's co_await, set by its await_transform
  // (link_parent, mpg/task.hpp): where the task shows as parked.
  std::source_location where{};

  io_awaiter(io_prep_fn p, const void* c, io_slot* s, const char* why) noexcept
      : prep(p), ctx(c), slot(s), reason(why) {}
  io_awaiter(io_prep_fn p, const void* c, io_slot* s, const char* why,
             io_op::clock::time_point deadline) noexcept
      : prep(p), ctx(c), slot(s), reason(why) {
    op.has_deadline = true;
    op.deadline = deadline;
  }

  void link_parent(std::source_location w) noexcept { where = w; }

  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) {
    return io_park_start(&op, prep, ctx, slot, h, reason, where);
  }
  int await_resume() const noexcept { return op.outcome(); }
};

}  // namespace mpg::detail
