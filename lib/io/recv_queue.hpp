// lib/io/recv_queue.hpp: a stream's multishot receive: one multishot recv
// in flight on some P's ring fills the P's provided buffers
// (buffer_ring.hpp), and the stream holds what it received until its
// reader takes it (tcp_stream::receive, and read(buf) once receive() was
// used).
//
// Parties. The reader (one at a time: the stream's read contract), the
// multishot op's completion callback (on_cqe: the reactor that reaps the
// op's CQEs, under that reactor's lock, on whatever thread), and wakers
// (the reader's deadline timer, its context watcher, set_read_deadline
// from any task). The queue's state is guarded by lock_, a leaf lock: it
// is taken under a reactor lock (on_cqe) and nothing is locked under it;
// readying, converting and arming happen after it is released.
//
// Buffer ownership (see buffer_ring.hpp for the ring's side):
//   B1. A CQE with F_BUFFER hands its buffer to the queue (held_), under
//       the reactor lock (the ring counts it out of the kernel: taken()).
//       A closed queue gives it back at once.
//   B2. The reader takes a held buffer out under lock_ into a recv_buffer
//       (receive), or copies from the head one and gives it back when
//       consumed (read(buf)). From then on the recv_buffer owns it, on
//       whatever P its task runs, and gives it back to the ring it came
//       from (recv_buffer::give_back: buffer_ring::give_back, lock-free).
//   B3. close() gives every held buffer back; the queue's destructor too.
//   Heap buffers (the fallback below) follow the same path and are freed.
//
// Arming (R1-R5). armed_ is true from the moment the reader claims the arm
// until the op's final CQE (no F_MORE) is dispatched; only then may the op
// record (op_) be started again.
//   R1. Only the reader arms, and only when it finds nothing held, no
//       final result, and armed_ false: it claims armed_ under lock_, then
//       starts the op on its own P (io_start, outside lock_: the lock order
//       is slot, reactor, queue), so the multishot follows its reader.
//   R2. A final CQE without an error that ends the stream (the kernel ended
//       the multishot: CQ overflow, -EINTR, -ECANCELED from backpressure or
//       shutdown) clears armed_; the reader re-arms at its next wait.
//   R3. Backpressure: when the queue holds limit_ ring buffers, on_cqe
//       asks the reactor to cancel the multishot (stop_more; pausing_
//       records it), and asks again after every kAskAgainAfter buffers
//       that still come over the limit. A reader that takes every held
//       buffer while the arm goes on (its pause missed) ends the request:
//       the queue asks at once when it next reaches the limit, and R6's
//       moves, which wait while a pause is asked, may go on. The reactor
//       keeps a request until it gets an SQE for the cancel (the SQ may be
//       full). And a cancel can miss: the kernel runs a multishot receive
//       that keeps finding data as task_work it requeues, where an
//       ASYNC_CANCEL does not look (-ENOENT: 247 of them in a row in one
//       run while the multishot drained about 1 MiB of backlog). So a pause takes hold only when a
//       cancel finds the multishot waiting for data: while the peer keeps
//       the socket supplied faster than the copies drain it, the copies go
//       on. Extra cancels are harmless: a cancel finds only its own ring's
//       ops, and one behind an op that ended, or ahead of its re-arm at the
//       same address in the same ring, finds nothing. The reader re-arms
//       only once it has taken every held buffer (R1), and unread bytes
//       stay in the socket (the peer is throttled by TCP). The kernel may
//       post a burst before the cancel takes effect (a multishot recv
//       loops while the socket has data): a buffer over the limit is copied
//       to the heap and given back at once, so nothing is lost and a slow
//       reader holds no more than limit_ of the ring's buffers while its
//       copies are under their cap: 256 KiB, and at least 16 buffers
//       (max_copies). Past the cap, the buffers a peer that outruns the
//       cancels sends stay held: the ring runs dry, the multishot ends with
//       -ENOBUFS (R4) and the peer is throttled by TCP. So a stream's
//       memory is bounded by the cap plus the ring, and the price of a
//       stream over its cap falls on the P's other streams, whose
//       multishots end with -ENOBUFS too until it reads.
//   R4. -ENOBUFS (the ring was empty when the kernel needed a buffer: the
//       bytes stay in the socket) clears armed_ and makes the next arm one
//       plain recv into a heap buffer of the ring's buffer size; the arm
//       after that is a multishot again. A kernel without multishot recv
//       (-EINVAL on the first arm) or without a buffer ring gets only
//       plain recvs.
//   R5. EOF (res 0) and errors other than those of R2 and R4 are final:
//       stored in final_, reported after every held buffer, and sticky.
//   R6. The multishot follows its reader. Its CQEs ready the reader on
//       the P whose ring it was armed on; a reader stolen by another P
//       answers one message there and comes back with the next CQE. Left
//       alone, a multishot would stay on the P that armed it for good, and
//       a P that armed more (the accepting P arms most of a burst of new
//       connections) would keep more of the load. So when the reader takes
//       data on another P kMoveAfter (2) times in a row, step() ends the
//       multishot (io_stop::move, which the final CQE reads as -EINTR:
//       R2); nothing is lost (unread bytes stay in the socket), and the
//       reader re-arms on the P it runs on at its next wait (R1). The
//       final CQE is reaped while the reader answers what it took, so it
//       usually finds armed_ clear by then; if not, the final CQE readies
//       it on the old P and it re-arms there. One take elsewhere is not
//       enough: a reader stolen once and moved at once is stolen back as
//       often, and each move costs a cancel and an arm (measured on
//       tcp_echo: 0.87x the floor's rate at 1, 0.94x at 2, 0.91x at 4).
//       Plain reads get this balance for nothing: each is submitted on
//       the P its task runs on. The move's cancel goes to the arm's ring
//       only if that ring's lock is free (io_try_stop_in_flight): its M
//       holds it through submits that run for microseconds, and a reader
//       waiting for it spins and then yields (on tcp_echo, moves that
//       waited made 93% of the server's sched_yield calls). Refused, the
//       move is asked again after kMoveAfter more takes elsewhere.
// close() ends the multishot (op_.stop says so: R2), and a waiting reader
// reads kCancelled. cancel() ends only the waiting reader (kCancelled): the
// multishot goes on for later receives, which cancel() must not affect.
//
// Waiting (W1-W3). The reader parks, then under lock_ checks for data, a
// final result, or a wake already recorded in its recv_waiter, and only
// then publishes itself in waiter_. Every waker takes waiter_ under
// lock_ (so exactly one readies the reader), records why in w->wake, and
// readies the G after releasing lock_.
//   W1. on_cqe wakes the reader on data, a final result, a user cancel, or
//       the end of the multishot (the reader must re-arm: kRetry). A wake
//       for data that on_cqe records itself (nothing was recorded before)
//       hands the head buffer to a reader that takes buffers (w->out):
//       popped under lock_ into *w->out, w->handed set, both before the G
//       is readied (whose release orders them for the reader). The reader
//       returns that buffer without taking lock_ again; a wake recorded
//       earlier (a timer, a context, a kick) gets no buffer, so a reader
//       that loops on such a wake drops nothing.
//   W2. The timer of the reader's deadline and its context watcher record
//       their wake in the waiter even when it is not published yet (they
//       are started before the reader takes lock_ to publish), so a wake
//       between park and publish is seen; the reader cancels both after it
//       resumes (cancel_timer and unwatch wait for a running callback), so
//       neither touches the waiter after its frame moved on.
//   W3. set_read_deadline stores the new deadline, then kicks the waiter
//       under lock_ (kKick); the reader loads the deadline under lock_ when
//       it publishes, so either it sees the new value or it is kicked.
// No linked timeout is involved: a deadline or a context ends the wait,
// not the multishot, which goes on receiving for the next read.
//
// A frame-less awaiter (receive_op) cannot wait twice: a waker that
// readies it for kRetry or kKick first calls its convert(), which makes
// the task form (do_receive) its resume point, as read_op's completion does.
//
// The reader's own fields: arm_p_ and away_ are written only by the
// reader (arm, step, took_handed), so it reads them without lock_.
//
// held_hint_ mirrors count_ (stored under lock_, loaded without it): the
// frame-less reader's await_ready skips its step when it reads 0, and its
// parked step, under lock_, is the authority (a stale 0 costs a park that
// is undone; a stale count a step that finds nothing).
//
// Lifetime: refs_ counts the stream and an armed op; the last unref frees
// the queue and gives back what it holds. on_cqe's final CQE drops the
// op's reference last thing.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>

#include "io/buffer_ring.hpp"
#include "mpg/detail/io/io_op.hpp"
#include "mpg/net.hpp"

namespace mpg::detail {

struct recv_stats {
  std::uint64_t nobufs = 0;             // R4: multishots ended by an empty ring
  std::uint64_t over_limit_copies = 0;  // R3: buffers copied out over the limit
  std::uint64_t held_over_cap = 0;      // R3: ring buffers held over the limit, the copies at
                                        // their cap
};

class recv_queue {
 public:
  enum wake_reason : std::uint8_t { kNone, kData, kRetry, kCancel, kKick, kTimer, kContext };

  // take_result: what the reader's step found.
  enum class took : std::uint8_t {
    data,     // a buffer (or bytes copied)
    final,    // EOF (err 0) or the stream's error
    woken,    // w->wake was recorded before it could publish
    failed,   // the arm failed: err (-ECANCELED closed, -ENXIO no ring...)
    waiting,  // published in waiter_: the caller's park stands
  };
  struct take_result {
    took s;
    int err = 0;
  };

  recv_queue() = default;
  recv_queue(const recv_queue&) = delete;
  recv_queue& operator=(const recv_queue&) = delete;

  // step(): the reader's one step (file comment, R1 and W2): data, a final
  // result, a recorded wake, or else arm if needed and publish w. out:
  // receive the head buffer; or copy into `copy` (its size is set to
  // what was copied). live: the stream's read deadline when the wait
  // follows it: loaded under lock_ right before publishing (W3), and if it
  // is no longer armed_deadline (the one the caller's timer has), step
  // does not publish and reports a kick. The caller has parked when
  // w != nullptr; with w == nullptr step arms if needed and reports
  // `waiting` without publishing anything. With neither out nor copy (and
  // no w) it takes nothing: held data reads `data` and stays held.
  take_result step(int fd, recv_waiter* w, net::recv_buffer* out,
                   std::span<char>* copy, const std::atomic<std::int64_t>* live,
                   std::int64_t armed_deadline) noexcept;
  // took_handed(): the reader returns a buffer on_cqe handed it (W1):
  // R6's count of that take, under lock_ only when it is off the arm's P
  // or was before.
  void took_handed() noexcept;
  // maybe_held(): held_hint_ is not 0 (a hint; see the file comment).
  bool maybe_held() const noexcept { return held_hint_.load(std::memory_order_relaxed) != 0; }
  // wake(): a waker of W2/W3 records `why` in w (if nothing was recorded
  // yet) and readies it if it was published. Any thread.
  void wake(recv_waiter* w, wake_reason why) noexcept;
  // kick(): W3, the published waiter, if any.
  void kick() noexcept;
  // close(): no more held buffers: give them back; later CQEs' buffers go
  // back at once; the armed op is cancelled and no op starts again. Before
  // the stream closes its fd. A waiting reader is unpublished and will read
  // kCancelled: its G is returned for the caller to ready once it touches
  // the stream no more (the reader may destroy the stream when it returns).
  [[nodiscard]] g* close() noexcept;
  // cancel(): the published reader, if any, is woken with kCancel
  // (tcp_stream::cancel()); the armed op goes on.
  void cancel() noexcept;
  // put_back(): the reader copied `consumed` bytes of b (read(buf)); the
  // rest goes back to the front of the queue.
  void put_back(net::recv_buffer&& b, std::size_t consumed) noexcept;
  // held(): buffers held (ring_only: those of a ring, not copies).
  std::size_t held(bool ring_only = false) const noexcept;
  // stats(): process-wide counts for tests.
  static recv_stats stats() noexcept;

  void ref() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void unref() noexcept;

 private:
  struct held_buf {
    char* data;
    std::uint32_t len;
    std::uint16_t bid;
    buffer_ring* ring;  // null: heap buffer at base
    char* base;
  };
  ~recv_queue();

  static void on_cqe(io_op* op) noexcept;
  // arm(): R1 after the claim; returns 0 or why io_start refused.
  int arm(int fd) noexcept;
  // took_data_locked(): R6's count, as the reader takes data; true when
  // the caller, after unlocking, is to end the multishot (io_stop::move).
  bool took_data_locked() noexcept;
  // move_or_defer(): after took_data_locked() said move (lock_ released):
  // ask the arm's ring to end the multishot, or ask again later (R6).
  void move_or_defer() noexcept;
  // take_front_locked(): the head buffer into *out.
  void take_front_locked(net::recv_buffer* out) noexcept;
  // push_locked(): b at the back; the queue doubles when full (grow_locked).
  void push_locked(const held_buf& b) noexcept {
    if (count_ == cap_) [[unlikely]] grow_locked();
    items_[(head_ + count_) & (cap_ - 1u)] = b;
    ++count_;
    held_hint_.store(count_, std::memory_order_relaxed);
    if (b.ring != nullptr) ++ring_held_;
  }
  void grow_locked() noexcept;
  held_buf& front_locked() noexcept { return items_[head_]; }
  void pop_locked() noexcept;
  static void give_back(const held_buf& b) noexcept;

  // Layout: what every message touches comes first, in 192 bytes but for
  // the second inline held buffer (held only when two are): the op
  // the reaper dispatches, then the lock and the state on_cqe and the
  // reader's step read, then the held buffers; what arms and ends an op
  // comes last. On tcp_echo each connection's lines are cold by its next
  // message. (Not aligned to a line: the aligned allocation cost 117 bytes
  // per idle connection, and no measurable rate.)
  //
  // The armed op, and the queue its completion (on_cqe) reports to.
  struct queue_op : io_op {
    recv_queue* queue = nullptr;
  };
  queue_op op_;
  io_spin_lock lock_;
  // Guarded by lock_ (the arm fields are written by the reader under lock_
  // before io_start, whose reactor lock orders them before on_cqe):
  bool armed_ = false;
  bool single_ = false;        // the armed op is one plain recv into single_buf_
  bool nobufs_ = false;        // R4: the next arm is a plain recv
  bool no_multishot_ = false;  // R4: never a multishot here
  bool closed_ = false;
  bool has_final_ = false;
  bool pausing_ = false;       // R3: stop_more was asked of this arm
  bool got_any_ = false;       // a multishot delivered something (R4's -EINVAL)
  bool moving_ = false;        // R6: io_stop::move was asked of this arm
  std::uint8_t limit_ = 8;
  // The reader's own (the file comment), also written under lock_:
  std::uint8_t away_ = 0;      // R6: data taken on a P other than the arm's, in a row
  std::uint8_t over_since_ask_ = 0;  // R3: buffers over the limit since the last ask
  // count_'s mirror. Relaxed both ways: a hint that only picks between two
  // paths that each look under lock_ (the file comment).
  std::atomic<std::uint32_t> held_hint_{0};
  // held_: a circular queue, inline for the first kInline buffers; cap_
  // is a power of two (it starts at kInline and doubles), so indices wrap
  // with a mask.
  // 32-bit: copies drained past a pause (R3) are not bounded by the ring,
  // and with small ring buffers may number more than 65,535.
  static constexpr std::uint32_t kInline = 2;
  std::uint32_t cap_ = kInline;
  std::uint32_t head_ = 0;
  std::uint32_t count_ = 0;
  std::uint32_t ring_held_ = 0;  // held buffers that belong to a ring
  const reactor* arm_p_ = nullptr;  // R6: the reactor the op was armed on (the reader's own)
  buffer_ring* ring_ = nullptr;  // the armed multishot's buffers
  recv_waiter* waiter_ = nullptr;
  held_buf* items_ = inline_;
  held_buf inline_[kInline];
  // The stream's and an armed op's references. Increment relaxed (the
  // caller holds one); decrement acq_rel (the last sees every use).
  std::atomic<std::int32_t> refs_{1};
  int fd_ = -1;  // the armed op's socket (read by its prep under io_start)
  // The armed op's slot: in the queue, not the stream, because the op may
  // outlive the stream (its final CQE clears the slot; the queue lives
  // until then). Cancels and close() reach the op through it.
  io_slot slot_;
  int final_ = 0;
  int last_stop_ = 0;  // the last final CQE: -ECANCELED (a user cancel), -EBUSY, else 0
  char* single_buf_ = nullptr;
};

}  // namespace mpg::detail
