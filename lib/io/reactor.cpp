// lib/io/reactor.cpp: the io_uring backend of the per-P reactor: submitting
// operations and reaping their completions (reactor.hpp; the ring's set-up is
// reactor_setup.cpp, waiting and waking reactor_wake.cpp, stopping ops in
// flight reactor_cancel.cpp, and the awaiters' side, io_start and
// prep_request, io_op.cpp). One of the seven source files of libmpg that
// include liburing.h (reactor.hpp says which).
//
// Where a completed op's task goes. A task whose op completes in reap() is
// readied at the tail of the reaping P's run queue (ready_tail), never into
// its runnext slot, as Go's netpoller puts the goroutines it finds ready on
// run queues and never in runnext. The runnext slot cannot be stolen (only
// a slot that sysmon found stale), so a completion readied there is work
// that only this P can run, and the wake_p() that readying makes brings
// another P's M out of its sleep to spin and find nothing. Measured with
// perf/servers/echo_server and echo_load (1-byte ping-pong, 8 connections,
// server on 2 Ps, 2 cores): readied into runnext whenever a reap finds one
// CQE, reads without a deadline cost 1.0 to 2.6 fruitless spins per message
// and ran at about two thirds of the rate of reads with a deadline, whose
// recv CQE arrives with its link timeout's CQE and so always went to the
// tail (0.07 fruitless spins); at the tail both cost 0.06 and run alike.
//
// An op split from its link timeout. An op with a deadline goes in as two
// consecutive SQEs (start()): the op's, with IOSQE_IO_LINK, and an
// IORING_OP_LINK_TIMEOUT (kIgnoreTag) whose time is in link_ts_. The kernel
// may take only part of a submitted batch: it stops at the first SQE it
// cannot allocate a request for (io_submit_sqes), and issues a link whose
// head it took alone (io_submit_state_end). An op taken without its timeout
// would run with no deadline (a read of a quiet socket waits for ever), and
// the timeout, taken at a later submit with no link head before it, fails
// with -EINVAL. So right after every submit that took SQEs (flush_locked,
// through which start(), cancels and wait() submit; submit_now_locked too),
// mend_split_locked() looks where the kernel's SQ head stopped:
//   L1. The last SQE taken carries IOSQE_IO_LINK and the first one left is
//       a LINK_TIMEOUT: an op and its timeout, split. Both are as start()
//       wrote them: the kernel is done with the first and has not read the
//       second, and neither slot is prepared again before the SQ's tail
//       laps it, which takes a get_sqe under lock_ after this check.
//   L2. The timeout's SQE becomes an IORING_OP_ASYNC_CANCEL of the op's
//       user_data (still kIgnoreTag: one CQE, as the timeout's, so
//       pending_ is unchanged), and the op's stop is raised to kick: it
//       reads -EINTR, and its caller's loop issues it again armed with its
//       deadline, or finds the deadline passed (-ETIME), as for a deadline
//       moved earlier (io_op.hpp, "Why an op was stopped"). Every caller
//       retries -EINTR (io::submit's is told to). The flush then submits
//       again, the cancel first.
//   L3. The cancel reaches that op only (io_op.hpp, "Cancelling by
//       address"): the op's final CQE, dispatched under lock_, has not been
//       dispatched yet, so its address is not reused; a submit the kernel
//       refuses leaves the cancel first in the SQ, issued before any SQE
//       prepared later, a new op at that address among them. If the op
//       completes first, the cancel reads -ENOENT and the op keeps its
//       result: outcome() consults stop only for a cancelled or interrupted
//       result. stop is written under lock_ while the op is in flight, as a
//       cancel writes it (io_start clears it before the next issue).
// The op is issued again rather than given a standalone timeout: that
// timeout's CQE, which may come after the op's frame is gone, would need a
// token of the reactor's own to name the op, and its own cancel once the
// op completed first. The split is rare (the kernel short of memory).
// Tested through g_flush_split_hook (reactor.hpp).
//
// Invariants (under lock_): pending_ counts every SQE that will produce a CQE
// we have not yet seen, except the wake reads; an io_op's final CQE is seen
// exactly once and calls its completion exactly once; after shutting_down_ no
// op starts.
#include "io/reactor.hpp"

#include "io/buffer_ring.hpp"

#include <errno.h>
#include <liburing.h>
#include <sched.h>

#include <chrono>
#include <cstddef>

#include "mpg/detail/sched/clock.hpp"

namespace mpg::detail {

static_assert(sizeof(io_timespec) == sizeof(__kernel_timespec));
static_assert(kCqeSockNonempty == IORING_CQE_F_SOCK_NONEMPTY);
static_assert(kCqeMore == IORING_CQE_F_MORE && kCqeBuffer == IORING_CQE_F_BUFFER &&
              kCqeBufferShift == IORING_CQE_BUFFER_SHIFT);
static_assert(offsetof(io_timespec, tv_nsec) == offsetof(__kernel_timespec, tv_nsec));

// --- submission ------------------------------------------------------------

// get_sqes_locked(): the first of n SQEs that the caller then takes in a
// row (the rest with io_uring_get_sqe, under lock_), making room as needed;
// nullptr when the kernel keeps refusing. start() calls it for an op with
// a deadline, and for one without only when the SQ is full (it takes that
// one SQE inline otherwise); cancels (reactor_cancel.cpp) always.
io_uring_sqe* reactor::get_sqes_locked(unsigned n) noexcept {
  for (int attempt = 0; attempt < 16; ++attempt) {
    if (io_uring_sq_space_left(ring_.get()) >= n) return io_uring_get_sqe(ring_.get());
    flush_locked();
    if (io_uring_sq_space_left(ring_.get()) >= n) return io_uring_get_sqe(ring_.get());
    // The kernel refused (-EBUSY: completions it cannot post). Make room.
    reap_locked();
    if (attempt > 4) ::sched_yield();
  }
  return nullptr;
}

namespace {

// submit_sqes(): io_uring_submit, or under g_flush_split_hook (reactor.hpp) an
// io_uring_enter asked to take the SQEs only up to the first linked one.
int submit_sqes(io_uring* ring) noexcept {
  auto split = g_flush_split_hook.load(std::memory_order_relaxed);
  if (split == nullptr) [[likely]] return io_uring_submit(ring);
  io_uring_sq& sq = ring->sq;
  const unsigned head = *sq.khead;  // the kernel moves it only inside an enter: ours
  for (unsigned i = head; i != sq.sqe_tail; ++i) {
    if ((sq.sqes[sq.array[i & sq.ring_mask]].flags & IOSQE_IO_LINK) == 0) continue;
    if (!split()) break;
    // Publish every prepared SQE, as liburing's flush does (a release: the
    // kernel reads the SQEs once it sees the tail), and ask for a part.
    sq.sqe_head = sq.sqe_tail;
    __atomic_store_n(sq.ktail, sq.sqe_tail, __ATOMIC_RELEASE);
    return io_uring_enter(static_cast<unsigned>(ring->ring_fd), i + 1 - head, 0, 0, nullptr);
  }
  return io_uring_submit(ring);
}

}  // namespace

void reactor::flush_locked() noexcept {
  io_uring* ring = ring_.get();
  if (io_uring_sq_ready(ring) == 0) return;
  if (auto hook = g_flush_refuse_hook.load(std::memory_order_relaxed)) [[unlikely]] {
    if (hook()) {
      unsubmitted_.store(io_uring_sq_ready(ring), std::memory_order_relaxed);
      return;
    }
  }
  for (int attempt = 0; attempt < 4; ++attempt) {
    int ret = submit_sqes(ring);
    // Under lock_, the one writer: a load and a store, no read-modify-write.
    submit_calls_.store(submit_calls_.load(std::memory_order_relaxed) + 1,
                        std::memory_order_relaxed);
    if (ret >= 0) {
      // Whatever this thread submitted runs its completion task_work here.
      for (wake_read& w : wake_reads_) {
        if (w.armed && w.armer == 0) w.armer = current_tid();
      }
      // An op taken without its link timeout: its cancel goes in at once.
      if (ret > 0 && mend_split_locked()) [[unlikely]] continue;
      break;
    }
    if (ret != -EINTR) break;  // -EBUSY/-EAGAIN: leave the SQEs for the next flush
  }
  unsubmitted_.store(io_uring_sq_ready(ring), std::memory_order_relaxed);
}

bool reactor::mend_split_locked() noexcept {
  io_uring_sq& sq = ring_->sq;
  // Acquire, as liburing reads the kernel's head: the kernel is done with
  // the SQEs before it. (The enter that moved it has returned, under lock_.)
  const unsigned head = io_uring_smp_load_acquire(sq.khead);
  if (head == sq.sqe_tail) return false;  // it took every SQE
  // L1. The SQEs are ours: plain reads and writes under lock_. The kernel
  // reads the one at `head` in a later io_uring_enter, made under lock_,
  // and a system call orders these stores before its reads, as liburing
  // relies on when it publishes the tail of a ring without SQPOLL.
  const io_uring_sqe& last = sq.sqes[sq.array[(head - 1) & sq.ring_mask]];
  io_uring_sqe* next = &sq.sqes[sq.array[head & sq.ring_mask]];
  if ((last.flags & IOSQE_IO_LINK) == 0 || next->opcode != IORING_OP_LINK_TIMEOUT) return false;
  // L2. Only start() links an SQE, with user_data its op (io::submit's
  // link flags are cleared), which is in flight (L3).
  const std::uint64_t user_data = last.user_data;
  io_op* op = reinterpret_cast<io_op*>(static_cast<std::uintptr_t>(user_data));
  if (op->stop < io_stop::kick) op->stop = io_stop::kick;
  io_uring_prep_cancel64(next, user_data, 0);
  io_uring_sqe_set_data64(next, kIgnoreTag);
  return true;
}

// Submitting now. An op with submit_now (fs.cpp: a file's operation, whose
// fd number must be resolved by the kernel before close() may release it)
// is in the kernel when start() returns, or is not started at all. A flush
// can leave SQEs in the SQ: the kernel refuses a submission (-EBUSY while
// completions wait in its overflow list, -EAGAIN without memory for a
// request). Then the flush is tried again after a reap, a bounded number
// of times, and if the op's SQEs, the last n of the SQ, are still there,
// they are taken back out (the SQ's tail and, if it was published, the
// kernel's tail go back by n) and the op ends with -EBUSY, as one that
// found no SQE. Taking them back is safe under lock_: without SQPOLL the
// kernel reads SQEs only inside io_uring_enter, which runs under lock_,
// and consumes them in order. Whether the kernel took them is read from
// its head against their position, not from the count left: the reaps in
// between may prepare SQEs behind ours (a multishot op's backpressure
// cancel, a wake read re-armed). With such SQEs behind them, ours cannot
// be taken back: they become NOPs whose CQEs only count (kIgnoreTag).
bool reactor::submit_now_locked(unsigned n) noexcept {
  io_uring* ring = ring_.get();
  io_uring_sq& sq = ring->sq;
  const unsigned first = sq.sqe_tail - n;  // ours: the last n prepared
  auto taken = [&] {
    // Acquire, as liburing reads the kernel's head: the kernel is done with
    // the SQEs before it.
    return static_cast<int>(io_uring_smp_load_acquire(sq.khead) - first) > 0;
  };
  flush_locked();
  for (int attempt = 0; !taken() && attempt < 8; ++attempt) {
    reap_locked();  // the kernel's -EBUSY: completions it cannot post
    flush_locked();
  }
  if (taken()) [[likely]] return true;
  if (sq.sqe_tail != first + n) {
    // SQEs prepared after ours: ours become NOPs (the caller fails the op).
    for (unsigned i = first; i != first + n; ++i) {
      io_uring_sqe* sqe = &sq.sqes[i & sq.ring_mask];
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data64(sqe, kIgnoreTag);
    }
    add_pending_locked(n);
    return false;
  }
  const unsigned tail = first;
  sq.sqe_tail = tail;
  if (static_cast<int>(sq.sqe_head - tail) > 0) sq.sqe_head = tail;
  // Release, as liburing publishes the tail; the kernel reads it in
  // io_uring_enter, under lock_ after this.
  if (static_cast<int>(*sq.ktail - tail) > 0) __atomic_store_n(sq.ktail, tail, __ATOMIC_RELEASE);
  unsubmitted_.store(io_uring_sq_ready(ring), std::memory_order_relaxed);
  return false;
}

void reactor::flush() noexcept {
  lock_.lock();
  if (owed_ != nullptr) issue_owed_locked();  // reactor_cancel.cpp, O2
  flush_locked();
  lock_.unlock();
}

void reactor::start(io_op* op, io_prep_fn prep, const void* ctx) noexcept {
  lock_.lock();
  op->fault = io_fault_plan::none;  // plan() below may set it
  if (shutting_down_) {
    op->res = -ECANCELED;
    op->stop = io_stop::cancel;
    add_pending_locked(1);
    dispatch(reinterpret_cast<std::uintptr_t>(op), -ECANCELED, 0, /*reaped=*/false);
    lock_.unlock();
    return;
  }
  const unsigned need = op->has_deadline ? 2 : 1;
  const bool refused = faults_ != nullptr && op->multishot && faults_->refuse_sqe();
  // The common case inline (one SQE, the SQ not full); get_sqes_locked
  // makes room otherwise, and is the only path for an op and its timeout.
  io_uring_sqe* sqe = need == 1 && !refused ? io_uring_get_sqe(ring_.get()) : nullptr;
  if (sqe == nullptr && !refused) sqe = get_sqes_locked(need);
  add_pending_locked(need);
  if (sqe == nullptr) {
    if (need == 2) add_pending_locked(-1);
    dispatch(reinterpret_cast<std::uintptr_t>(op), -EBUSY, 0, /*reaped=*/false);
    lock_.unlock();
    return;
  }
  prep(sqe, ctx);
  if (op->multishot) {
    // Returned buffers go back to the kernel before the op can need them.
    if (buffer_ring* b = bufs_.load(std::memory_order_relaxed)) b->refill();
  }
  if (faults_ != nullptr) [[unlikely]] {
    if (prep == &prep_request) faults_->plan(op, sqe);
    else if (op->multishot) faults_->plan_multishot(op, sqe);
  }
  // io::submit owns user_data, the link flags (an op linked to whatever SQE
  // comes next would chain unrelated tasks' operations) and IOSQE_IO_DRAIN
  // (which would hold every later SQE of the ring, the wake reads included,
  // until every earlier op, an idle recv or accept too, completes).
  sqe->flags &= static_cast<__u8>(
      ~(IOSQE_IO_LINK | IOSQE_IO_HARDLINK | IOSQE_CQE_SKIP_SUCCESS | IOSQE_IO_DRAIN));
  io_uring_sqe_set_data(sqe, op);
  if (op->has_deadline) {
    sqe->flags |= IOSQE_IO_LINK;
    auto since_epoch = op->deadline.time_since_epoch();  // steady_clock is CLOCK_MONOTONIC
    auto secs = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
    io_uring_sqe* t = io_uring_get_sqe(ring_.get());  // reserved above: consecutive with sqe
    io_timespec& ts = link_ts_[static_cast<std::size_t>(t - ring_->sq.sqes)];
    ts.tv_sec = secs.count();
    ts.tv_nsec = std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch - secs).count();
    io_uring_prep_link_timeout(t, reinterpret_cast<__kernel_timespec*>(&ts), IORING_TIMEOUT_ABS);
    io_uring_sqe_set_data64(t, kIgnoreTag);
  }
  if (op->submit_now) {
    if (!submit_now_locked(need)) [[unlikely]] {
      if (need == 2) add_pending_locked(-1);
      dispatch(reinterpret_cast<std::uintptr_t>(op), -EBUSY, 0, /*reaped=*/false);
    }
  } else {
    unsubmitted_.store(io_uring_sq_ready(ring_.get()), std::memory_order_relaxed);
  }
  lock_.unlock();
}

namespace {

// clear_slot(): the op's final CQE is being dispatched: it leaves its slot.
// A plain load and store, not a compare-exchange: a slot holds one op at a
// time (io_op.hpp), and no op is published in it until this one is out, so
// nothing stores to slot->op between the two. The load keeps a slot that
// already moved on (a caller that broke the one-op rule) as it is. Relaxed:
// cancellers read slot->op under the slot lock and re-check it under lock_,
// which the caller holds.
void clear_slot(io_slot* s, const io_op* op) noexcept {
  if (s->op.load(std::memory_order_relaxed) == op) s->op.store(nullptr, std::memory_order_relaxed);
}

}  // namespace

// --- completion --------------------------------------------------------------

inline unsigned reactor::dispatch(std::uint64_t user_data, int res, std::uint32_t flags,
                           bool reaped) noexcept {
  if (faults_ != nullptr) [[unlikely]] {
    // Fault injection (fault_injector.hpp): res may be rewritten, or the
    // CQE held back and re-posted behind a real CQ overflow.
    switch (faults_->on_cqe(&user_data, &res, flags)) {
      case fault_injector::verdict::deliver:
        break;
      case fault_injector::verdict::hold: {
        flush_locked();  // the overflow's SQEs go in alone
        fault_injector::overflow_result o =
            faults_->overflow(ring_.get(), user_data, res, kIgnoreTag);
        add_pending_locked(o.added);
        unsubmitted_.store(io_uring_sq_ready(ring_.get()), std::memory_order_relaxed);
        if (o.held) return 0;  // the op stays pending until its CQE comes back
        break;
      }
      case fault_injector::verdict::carrier_done:
        add_pending_locked(-1);
        return 0;
      case fault_injector::verdict::carrier_failed:
        add_pending_locked(-1);
        flags = 0;
        break;
    }
  }
  if (user_data == kIgnoreTag) {
    add_pending_locked(-1);
    return 0;
  }
  if (user_data == kWakeTag || user_data == kWakeTag + 1) {
    int i = static_cast<int>(user_data - kWakeTag);
    wake_reads_[i].armed = false;
    if (!shutting_down_ && !wake_reads_[1 - i].armed) arm_wake_locked(i);
    return 0;
  }
  io_op* op = reinterpret_cast<io_op*>(static_cast<std::uintptr_t>(user_data));
  if (op->multishot) return dispatch_multishot(op, res, flags);
  // The first CQE carries the result (send_zc's second is a notification;
  // a multishot op's later ones are dropped: io::submit awaits one result).
  if (!op->got_first) {
    op->got_first = true;
    op->res = res;
    op->cqe_flags = flags;
  }
  if (flags & IORING_CQE_F_MORE) return 0;
  add_pending_locked(-1);
  if (io_slot* s = op->slot) {
    if (owed_ != nullptr) [[unlikely]] settle_owed_locked(s);
    clear_slot(s, op);
  }
  // From here the op (and its frame) may be resumed and freed on another
  // thread: read `complete` first and touch nothing after.
  if (op->complete != nullptr) {
    op->complete(op);
  } else if (reaped) {
    ready_tail(op->waiter);  // stealable: see "Where a completed op's task goes"
  } else {
    ready(op->waiter);
  }
  return 1;
}

// dispatch_multishot(): every CQE of a multishot op goes to its callback
// (recv_queue.cpp), the final one (no F_MORE) after the op left its slot,
// as for any op. Each counts as delivered (returns 1), the ones with F_MORE
// too: their callback may ready a task, and wait() must not sleep after a
// reap that readied one (reactor.hpp, reap()). A callback that asks for
// backpressure (stop_more) gets the op cancelled here, with the SQE we can
// get without reaping (a reap inside a reap would advance the CQ under the
// outer loop). If the SQ is full, stop_more stays set and the op's next CQE
// asks again: the queue asks again only after several buffers over its
// limit (recv_queue.hpp, R3), or, once its reader has taken every held
// buffer, when it next reaches the limit. An op that gets no further CQE
// takes no further buffer, and its next arm clears the request.
unsigned reactor::dispatch_multishot(io_op* op, int res, std::uint32_t flags) noexcept {
  op->res = res;
  op->cqe_flags = flags;
  if (flags & IORING_CQE_F_BUFFER) {
    if (buffer_ring* b = bufs_.load(std::memory_order_relaxed)) b->taken();
  }
  if (flags & IORING_CQE_F_MORE) {
    op->complete(op);  // the op stays in flight: it is ours to touch after
    if (op->stop_more && faults_ != nullptr && faults_->miss_pause()) {
      op->stop_more = false;  // the cancel went out and missed (misspause)
    }
    if (op->stop_more) {
      const bool refused = faults_ != nullptr && faults_->refuse_pause();
      if (io_uring_sqe* sqe = refused ? nullptr : io_uring_get_sqe(ring_.get())) {
        op->stop_more = false;
        io_uring_prep_cancel64(sqe, reinterpret_cast<std::uintptr_t>(op), 0);
        io_uring_sqe_set_data64(sqe, kIgnoreTag);
        add_pending_locked(1);
        unsubmitted_.store(io_uring_sq_ready(ring_.get()), std::memory_order_relaxed);
        // Under lock_, the one writer: a load and a store.
        pause_cancels_.store(pause_cancels_.load(std::memory_order_relaxed) + 1,
                             std::memory_order_relaxed);
      }
    }
    return 1;
  }
  add_pending_locked(-1);
  if (io_slot* s = op->slot) {
    if (owed_ != nullptr) settle_owed_locked(s);
    clear_slot(s, op);
  }
  op->complete(op);  // may free the op: touch nothing after
  return 1;
}

unsigned reactor::reap_locked() noexcept {
  io_uring* ring = ring_.get();
  if (buffer_ring* b = bufs_.load(std::memory_order_relaxed)) {
    if (b->refill_due()) b->refill();
  }
  unsigned completed = 0;
  bool entered = false;
  for (;;) {
    // The CQ is ours alone (lock_): its head moves only here. Acquire on
    // the tail: the kernel's CQE writes before it are visible.
    unsigned head = *ring->cq.khead;
    const unsigned tail = io_uring_smp_load_acquire(ring->cq.ktail);
    if (head == tail) {
      // Nothing posted. The kernel may still hold completions: task_work
      // to run (IORING_SQ_TASKRUN) or an overflowed CQ. Then, once per
      // reap, enter the kernel for them, as liburing's peek does.
      const unsigned kflags = IO_URING_READ_ONCE(*ring->sq.kflags);
      if (entered || (kflags & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) == 0) break;
      entered = true;
      io_uring_get_events(ring);
      continue;
    }
    const unsigned mask = *ring->cq.kring_mask;  // no CQE32: one slot per CQE
    const unsigned n = tail - head;
    // Each CQE's op (in its task's frame, or a stream's recv_queue) was last
    // touched a round of every connection ago and is rarely in cache: ask
    // for the whole batch's ops first, so that their misses overlap rather
    // than each stalling its own dispatch. A prefetch never faults: a tag
    // (no address) or a null pointer costs nothing but the instruction.
    for (unsigned h = head; h != tail; ++h)
      __builtin_prefetch(reinterpret_cast<const void*>(ring->cq.cqes[h & mask].user_data));
    // Then what dispatch touches through each op: its slot (in the stream)
    // and its task's G. Every op of the batch is alive here: none of its
    // CQEs has been dispatched yet. Only plain ops: the reactor's tags are
    // below 8, and the fault injector marks its carriers in the low bits
    // of an op's (8-aligned) address (fault_injector.hpp).
    for (unsigned h = head; h != tail; ++h) {
      const std::uint64_t ud = ring->cq.cqes[h & mask].user_data;
      if (ud < 8 || (ud & 7) != 0) continue;
      const io_op* op = reinterpret_cast<const io_op*>(static_cast<std::uintptr_t>(ud));
      __builtin_prefetch(op->slot);
      __builtin_prefetch(op->waiter);
    }
    for (; head != tail; ++head) {
      const io_uring_cqe& cqe = ring->cq.cqes[head & mask];
      completed += dispatch(cqe.user_data, cqe.res, cqe.flags, /*reaped=*/true);
    }
    // After the batch: a dispatch never reaps (dispatch_multishot), so the
    // head is still ours to move. A store-release: the kernel may reuse
    // the slots once it sees it.
    io_uring_cq_advance(ring, n);
  }
  return completed;
}

unsigned reactor::reap() noexcept {
  lock_.lock();
  unsigned n = reap_locked();
  lock_.unlock();
  return n;
}

bool reactor::try_reap() noexcept {
  if (!lock_.try_lock()) return false;
  reap_locked();
  lock_.unlock();
  return true;
}

}  // namespace mpg::detail
