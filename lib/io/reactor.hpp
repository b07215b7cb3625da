// lib/io/reactor.hpp: the per-P io_uring reactor (private interface).
//
// One reactor per P; it moves between threads with its P. The scheduler uses
// four calls (Seastar's shape): flush() submits and never blocks, reap()
// dispatches completions and never blocks, wait() blocks in io_uring_enter
// and is used only when the M has nothing to run, wake() makes a waiting M
// return. busy() is the cheap per-tick check ("is any I/O outstanding?").
//
// Everything here is thread-safe: an internal spin lock serialises the SQ and
// CQ, uncontended in the common case (the M holding the P); sysmon or another
// M may reap a busy P's reactor (try_reap never waits for the lock). wait()
// does not hold the lock while it sleeps, so others may submit and reap.
//
// Completion dispatch (see mpg/detail/io/io_op.hpp): user_data points at an
// io_op in the suspended awaiter; on its final CQE the reactor stores
// res/flags, clears its io_slot, and calls op->complete or ready_tail(waiter)
// (the run queue's tail, never runnext: reactor.cpp says why),
// under the reactor lock. Those callbacks must never call back into the same
// reactor (wake() excepted: it takes no lock); the lock is not recursive, so
// a start, flush, reap, cancel or cancel_all from one of them would spin
// forever. ready() and ready_tail() keep to that: they put the G on the
// current P's run queue or on the global queue (under the scheduler's
// mutex), and may start or wake an M, which ends in a futex wake or in
// wake() on some P's reactor; they never resume the G, so no task code runs
// under the lock. The lock order is reactor lock, then scheduler mutex: the
// scheduler looks at a reactor under its mutex only through busy(), which
// takes no lock. The io_ops that set `complete` are tcp_stream's read_op
// and write_op (net.cpp), whose callback may create the frame of the
// operation's task form (the frame allocator, never this reactor) before it
// calls ready_tail(), and a stream's multishot receive (recv_queue.cpp),
// whose callback takes the queue's leaf lock, gives buffers back to a ring
// (lock-free), and may likewise create a frame and ready its reader; tests
// set callbacks that only count.
//
// Only lib/io/reactor.cpp (submitting and reaping), reactor_setup.cpp (the
// ring's set-up), reactor_wake.cpp (an M's sleep and its wake-up),
// reactor_cancel.cpp (stopping ops in flight), io_op.cpp (io_start and
// prep_request), buffer_ring.cpp (the provided-buffer ring) and
// fault_injector.cpp (which edits SQEs for tests) include liburing.h.
// net.cpp, listen_dial.cpp, udp.cpp and fs.cpp describe their operations as
// io_request values, which io_op.cpp turns into SQEs.
#pragma once

#include <absl/base/thread_annotations.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "io/fault_injector.hpp"
#include "mpg/detail/io/io_op.hpp"

struct io_uring;

namespace mpg::detail {

// Test hook: flush_locked() calls it before it submits; when it returns
// true the flush is refused as the kernel refuses one (-EBUSY), and the
// SQEs stay in the SQ. Null outside tests; relaxed: a test sets it before
// the runtime submits and it only selects a path.
inline std::atomic<bool (*)()> g_flush_refuse_hook{nullptr};
// Test hook: flush_locked() calls it before a submit whose SQEs include one
// that carries IOSQE_IO_LINK (an op with a deadline: reactor.cpp, "An op
// split from its link timeout"); when it returns true the kernel is asked
// to take the SQEs only up to that one, as a kernel that cannot allocate
// the request of the next SQE takes them, and the rest stay in the SQ.
// Null outside tests; relaxed, as g_flush_refuse_hook.
inline std::atomic<bool (*)()> g_flush_split_hook{nullptr};

class buffer_ring;

// current_tid(): the calling thread's kernel id, cached per thread: the
// submitter of a wake-up read (reactor_wake.cpp, "Waking a waiting M").
int current_tid() noexcept;

class reactor {
 public:
  using clock = std::chrono::steady_clock;

  // create(): sets up a ring of `entries` SQEs (CQ 4x), probes the ops mpg
  // uses, and arms the wake-up eventfd read. A failure (io_uring disabled by
  // sysctl or seccomp, old kernel, RLIMIT_MEMLOCK, ...) is a Status whose
  // message says why and what to do; it is also remembered for
  // unavailable_reason().
  // `faults` (tests; fault_injector.hpp): inject I/O faults when on().
  // `recv_buffers` x `recv_buffer_size`: the provided-buffer ring of
  // multishot receives (buffer_ring.hpp), made on first use.
  static absl::StatusOr<std::unique_ptr<reactor>> create(unsigned entries,
                                                         const fault_config* faults = nullptr,
                                                         unsigned recv_buffers = 0,
                                                         unsigned recv_buffer_size = 0);
  ~reactor();
  reactor(const reactor&) = delete;
  reactor& operator=(const reactor&) = delete;

  // busy(): lock-free; true while an op is in flight or an SQE is not yet
  // submitted (the internal wake-up read does not count). Relaxed: a hint
  // for a per-tick check; a stale answer only delays a flush or reap.
  bool busy() const noexcept { return pending_.load(std::memory_order_relaxed) != 0; }
  // has_unsubmitted(): lock-free hint that flush() has work: SQEs, or
  // cancels owed (cancel()).
  bool has_unsubmitted() const noexcept {
    return unsubmitted_.load(std::memory_order_relaxed) != 0 ||
           owed_count_.load(std::memory_order_relaxed) != 0;
  }

  // flush(): issue the cancels owed, and submit pending SQEs. Never blocks.
  void flush() noexcept;
  // reap(): dispatch every completion that is ready. Never blocks. Returns
  // the number of CQEs delivered to ops: final completions, and the CQEs of
  // multishot ops that carry more to come. Whenever a delivery may have
  // readied a task it is not zero (wait() relies on that).
  unsigned reap() noexcept;
  // try_reap(): like reap() but returns false at once if another thread
  // holds the lock; true if it reaped (even nothing).
  bool try_reap() noexcept;
  // wait(): reap and flush; return at once if the reap delivered anything
  // (the tasks it readied are to be run); else block in io_uring_enter
  // until a completion, wake(), or the deadline (none: indefinitely), then
  // reap. Returns as reap().
  unsigned wait(std::optional<clock::time_point> deadline) noexcept;
  // wake(): from any thread, lock-free: makes a current wait() return
  // promptly, or if none is in progress, the next one. No lost wake-ups.
  void wake() noexcept;
  // has_own_wake_read(): whether a wake-up read that the thread `tid`
  // submitted is armed (tests: "Waking a waiting M" in reactor_wake.cpp).
  bool has_own_wake_read(int tid) noexcept;
  // cancel_all(): shutdown. Cancels everything in flight and reaps until all
  // final completions have arrived (ops that complete call their callbacks,
  // i.e. ready(), as usual). Ops started afterwards fail with -ECANCELED.
  void cancel_all() noexcept;

  // --- used by io_start / io_cancel (lib/io/io_op.cpp) ---
  // start(): prepare op's SQE (and its link timeout) under the lock.
  void start(io_op* op, io_prep_fn prep, const void* ctx) noexcept;
  // cancel(): if `slot` still holds `op` and op matches rq (io_op.hpp,
  // io_stop_request), record rq.why in op->stop and submit an ASYNC_CANCEL
  // for it (and any SQEs before it) at once; if no SQE is to be had, owe
  // the cancel: the next flush() or wait() that gets an SQE issues it
  // (reactor_cancel.cpp, "A cancel that finds no SQE"). Never dropped.
  void cancel(io_slot* slot, io_op* op, const io_stop_request& rq) noexcept;
  // try_cancel(): cancel() if the lock is free at once and an SQE is to be
  // had; false (nothing asked, nothing owed) if another thread holds the
  // lock or the SQ stays full.
  bool try_cancel(io_slot* slot, io_op* op, const io_stop_request& rq) noexcept;

  // buffers(): this P's provided-buffer ring, registered on first use;
  // nullptr if the kernel has none (before 5.19). Any thread; the ring
  // lives as long as the reactor (and any buffer of it is held).
  buffer_ring* buffers() noexcept;

  // unavailable_reason(): why the last create() failed (empty if none).
  static const char* unavailable_reason() noexcept;

  // Statistics for tests.
  std::uint64_t submit_calls() const noexcept {
    return submit_calls_.load(std::memory_order_relaxed);
  }
  // Backpressure cancels (recv_queue.hpp, R3) prepared so far.
  std::uint64_t pause_cancels() const noexcept {
    return pause_cancels_.load(std::memory_order_relaxed);
  }
  // Faults injected so far (all zero when not injecting).
  fault_counts injected_faults() const noexcept {
    return faults_ != nullptr ? faults_->counts() : fault_counts{};
  }

 private:
  // user_data values that are not io_op pointers (ops are at least 8-aligned).
  static constexpr std::uint64_t kIgnoreTag = 1;  // link timeouts, cancels: count only
  static constexpr std::uint64_t kWakeTag = 2;    // 2 and 3: wake_reads_[0], [1]

  reactor();

  void flush_locked() noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  unsigned reap_locked() noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // cancel_locked(): false when no SQE could be had: then the cancel is
  // owed if `owe` (and the op still in flight and matching), else dropped.
  bool cancel_locked(io_slot* slot, io_op* op, const io_stop_request& rq, bool owe) noexcept
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // forget_fd_if_closing_locked(): for a slot being closed, SQEs of op the
  // kernel has not taken lose their fd (reactor_cancel.cpp).
  void forget_fd_if_closing_locked(const io_slot* slot, const io_op* op) noexcept
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // issue_owed_locked(): prepares an ASYNC_CANCEL for each owed slot's op,
  // while SQEs are to be had without a reap; true when none is left owed.
  bool issue_owed_locked() noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // settle_owed_locked(): the final CQE of slot's op is being dispatched:
  // a cancel owed for it goes (its address may soon name another op).
  void settle_owed_locked(io_slot* slot) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // dispatch(): one CQE. reaped: from the CQ (the waiter goes to the run
  // queue's tail); else an op that start() failed inline (its own task,
  // which parked a moment ago, runs next). Inlined into the reap loop
  // (defined in reactor.cpp, its only user).
  [[gnu::always_inline]] inline unsigned dispatch(std::uint64_t user_data, int res,
                                                  std::uint32_t flags, bool reaped) noexcept
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  unsigned dispatch_multishot(io_op* op, int res, std::uint32_t flags) noexcept
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  io_uring_sqe* get_sqes_locked(unsigned n) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // mend_split_locked(): right after a submit that the kernel took SQEs of:
  // if it took an op but not its link timeout, the timeout's SQE becomes a
  // cancel of the op (reactor.cpp, "An op split from its link timeout");
  // true if it did.
  bool mend_split_locked() noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  // submit_now_locked(): flush for an op that must be in the kernel when
  // start() returns; false when the kernel would not take its n SQEs, which
  // are then taken back out of the SQ (reactor.cpp, "Submitting now").
  bool submit_now_locked(unsigned n) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  void arm_wake_locked(int index) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  bool ensure_wake_armed_locked() noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  void cancel_foreign_wake_locked() noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_);
  void enter_wait(std::optional<clock::time_point> deadline) noexcept;

  io_spin_lock lock_;
  std::unique_ptr<io_uring> ring_;
  // The time of the link timeout prepared in each SQE slot (indexed like
  // the ring's SQE array): the kernel copies it when it consumes the slot
  // at submission, and a slot is not prepared again before that, so the
  // ops need no copy of their own. Written under lock_.
  std::unique_ptr<io_timespec[]> link_ts_ ABSL_GUARDED_BY(lock_);
  // The provided-buffer ring (null until buffers() made it, or if it
  // failed). Set under lock_; read lock-free by buffers() once set
  // (acquire: the ring is initialised before the release store).
  std::atomic<buffer_ring*> bufs_{nullptr};
  bool bufs_failed_ ABSL_GUARDED_BY(lock_) = false;
  unsigned buf_count_ = 512;
  unsigned buf_size_ = 2048;
  int ring_fd_ = -1;
  int event_fd_ = -1;
  bool shutting_down_ ABSL_GUARDED_BY(lock_) = false;
  // Null unless injecting faults; set by create(), then used under lock_.
  std::unique_ptr<fault_injector> faults_;

  // Wake-up reads on event_fd_ (see reactor_wake.cpp, "Waking a waiting M").
  struct wake_read {
    std::uint64_t value = 0;
    bool armed = false;
    bool cancelled = false;  // a cancel was asked for it (cancel_foreign_wake_locked)
    int armer = 0;  // tid of the thread that submitted it
  };
  wake_read wake_reads_[2] ABSL_GUARDED_BY(lock_);

  // Ops (and SQEs that produce a CQE) outstanding. Modified under lock_
  // only, so with a plain load and store (add_pending_locked), not a
  // read-modify-write; read lock-free by busy(); relaxed (see busy()).
  std::atomic<std::uint32_t> pending_{0};
  void add_pending_locked(std::int64_t n) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(lock_) {
    pending_.store(static_cast<std::uint32_t>(pending_.load(std::memory_order_relaxed) + n),
                   std::memory_order_relaxed);
  }
  std::atomic<std::uint32_t> unsubmitted_{0};
  // Cancels owed (reactor_cancel.cpp, "A cancel that finds no SQE"): slots whose op
  // a cancel found in flight, linked through io_slot::owed_next, and their
  // count, written under lock_ (a load and a store, as pending_) and read
  // lock-free by has_unsubmitted() (relaxed: a hint; a stale answer delays
  // the flush to the next tick, and wait() itself issues them).
  io_slot* owed_ ABSL_GUARDED_BY(lock_) = nullptr;
  std::atomic<std::uint32_t> owed_count_{0};
  std::atomic<std::uint64_t> submit_calls_{0};
  std::atomic<std::uint64_t> pause_cancels_{0};  // written under lock_, as submit_calls_

  // wake_state_: bit 0 = notified (wake() called, not yet consumed by a
  // wait); bits 1.. = number of threads inside wait()'s sleeping section.
  // seq_cst on both sides: a Dekker handshake (the waiter announces itself
  // then looks for a notification; wake() posts the notification then looks
  // for a waiter), so at least one side sees the other.
  std::atomic<std::uint32_t> wake_state_{0};
};

// current_reactor(): the ring of the P running the calling task (nullptr
// outside a task); defined with the scheduler (lib/sched/scheduler.cpp).
reactor* current_reactor() noexcept;

// --- operations described without liburing (net.cpp, fs.cpp) ---

enum class io_opcode : std::uint8_t {
  nop, recv, send, accept, connect, read, write, fsync, openat, statx, timeout, poll,
  sendmsg,  // addr: const msghdr*; flags: msg flags
  recvmsg,  // addr: msghdr*; flags: msg flags
};

// io_request: the fields of one operation; see prep_request in io_op.cpp
// for which fields each opcode uses.
struct io_request {
  io_opcode op = io_opcode::nop;
  int fd = -1;
  void* addr = nullptr;       // buffer, sockaddr, path, timespec, msghdr (sendmsg, recvmsg)
  void* addr2 = nullptr;      // socklen_t* (accept), statx* (statx)
  std::uint32_t len = 0;      // buffer length, socklen (connect), statx mask, poll mask
  std::uint64_t off = 0;      // file offset
  int flags = 0;              // msg flags, accept4 flags, open flags, fsync flags, at-flags
  std::uint32_t mode = 0;     // open mode
  bool poll_first = false;    // recv/send: wait for readiness before trying (5.19)
};

// CQE flag of a recv: the socket still had data after it (5.19).
inline constexpr std::uint32_t kCqeSockNonempty = 1u << 2;
// CQE flags of a multishot op and of a provided buffer (IORING_CQE_F_MORE,
// IORING_CQE_F_BUFFER, IORING_CQE_BUFFER_SHIFT).
inline constexpr std::uint32_t kCqeMore = 1u << 1;
inline constexpr std::uint32_t kCqeBuffer = 1u << 0;
inline constexpr unsigned kCqeBufferShift = 16;

// prep_request(): an io_prep_fn whose ctx is a `const io_request*`.
void prep_request(io_uring_sqe* sqe, const void* ctx);
// prep_recv_multishot(): an io_prep_fn whose ctx is a `const int*` (the
// socket): a multishot recv into the P's buffer ring (buffer_ring.hpp).
// The fault injector leaves it alone (it plans only prep_request's ops).
void prep_recv_multishot(io_uring_sqe* sqe, const void* ctx);

}  // namespace mpg::detail
