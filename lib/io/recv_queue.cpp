// lib/io/recv_queue.cpp: a stream's multishot receive (the protocol is in
// recv_queue.hpp), and tcp_stream's receive(), in its frame-less form
// (receive_op) and its task form (do_receive), and read(buf) served from
// the held buffers (do_read_held).
#include "io/recv_queue.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <new>
#include <optional>
#include <source_location>
#include <utility>

#include "io/io_status.hpp"
#include "io/reactor.hpp"
#include "mpg/detail/sched/clock.hpp"
#include "mpg/detail/sched/timer.hpp"

namespace mpg::detail {

namespace {
constexpr unsigned kFallbackSize = 2048;  // a plain recv's heap buffer without a ring
constexpr unsigned kMaxLimit = 8;         // R3's limit_, at most
constexpr unsigned kMoveAfter = 2;        // R6: takes on another P before a move
constexpr unsigned kAskAgainAfter = 8;    // R3: buffers over the limit between asks
// R3's cap on the copies a stream holds: 256 KiB (a socket's receive
// buffer, in size), and at least kMinCopies buffers, so that the burst a
// multishot posts before its pause takes hold fits with large buffers.
constexpr std::size_t kMaxCopiedBytes = 256 * 1024;
constexpr std::uint32_t kMinCopies = 16;
std::uint32_t max_copies(const buffer_ring* ring) noexcept {
  return std::max(static_cast<std::uint32_t>(kMaxCopiedBytes / ring->buffer_size()), kMinCopies);
}
// Statistics for tests (relaxed: independent counts).
std::atomic<std::uint64_t> g_nobufs{0};
std::atomic<std::uint64_t> g_over_limit_copies{0};
std::atomic<std::uint64_t> g_held_over_cap{0};
}  // namespace

recv_stats recv_queue::stats() noexcept {
  return {g_nobufs.load(std::memory_order_relaxed),
          g_over_limit_copies.load(std::memory_order_relaxed),
          g_held_over_cap.load(std::memory_order_relaxed)};
}

recv_queue::~recv_queue() {
  while (count_ != 0) {
    give_back(front_locked());
    pop_locked();
  }
  if (items_ != inline_) delete[] items_;
  delete[] single_buf_;  // an arm whose final CQE never came (shutdown's quiet drain)
}

void recv_queue::unref() noexcept {
  // acq_rel: the last reference sees every other party's writes (as
  // shared_ptr's count).
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

void recv_queue::give_back(const held_buf& b) noexcept {
  if (b.ring != nullptr) {
    b.ring->give_back(b.bid);
  } else {
    delete[] b.base;
  }
}

void recv_queue::grow_locked() noexcept {
  // Rare: more than kInline held means a slow reader.
  auto* bigger = new (std::nothrow) held_buf[cap_ * 2u];
  if (bigger == nullptr) std::abort();  // out of memory while holding received bytes
  for (std::uint32_t i = 0; i < count_; ++i) bigger[i] = items_[(head_ + i) & (cap_ - 1u)];
  if (items_ != inline_) delete[] items_;
  items_ = bigger;
  head_ = 0;
  cap_ *= 2u;
}

void recv_queue::pop_locked() noexcept {
  if (items_[head_].ring != nullptr) --ring_held_;
  head_ = (head_ + 1) & (cap_ - 1u);
  --count_;
  held_hint_.store(count_, std::memory_order_relaxed);
  if (pausing_ && count_ == 0) [[unlikely]] {
    pausing_ = false;  // R3: the reader caught up with an arm whose pause missed
    over_since_ask_ = 0;
  }
}

[[gnu::always_inline]] inline void recv_queue::take_front_locked(net::recv_buffer* out) noexcept {
  const held_buf& b = front_locked();
  out->reset();
  out->data_ = b.data;
  out->size_ = b.len;
  out->bid_ = b.bid;
  out->ring_ = b.ring;
  out->base_ = b.base;
  pop_locked();
}

void recv_queue::put_back(net::recv_buffer&& b, std::size_t consumed) noexcept {
  held_buf h{b.data_ + consumed, static_cast<std::uint32_t>(b.size_ - consumed), b.bid_, b.ring_,
             b.base_};
  b.data_ = nullptr;  // ownership moves to the queue
  b.size_ = 0;
  b.ring_ = nullptr;
  b.base_ = nullptr;
  lock_.lock();
  if (closed_) {
    lock_.unlock();
    give_back(h);
    return;
  }
  // To the front: push (which makes room), then move the head back one
  // slot and put h there; the copy pushed at the back falls out of range.
  push_locked(h);
  head_ = (head_ + cap_ - 1) & (cap_ - 1u);
  items_[head_] = h;
  lock_.unlock();
}

std::size_t recv_queue::held(bool ring_only) const noexcept {
  auto* self = const_cast<recv_queue*>(this);
  self->lock_.lock();
  std::size_t n = ring_only ? ring_held_ : count_;
  self->lock_.unlock();
  return n;
}

int recv_queue::arm(int fd) noexcept {
  // R1: armed_ is ours (claimed under lock_); nothing else touches op_.
  reactor* r = current_reactor();
  if (r == nullptr) return -ENXIO;
  buffer_ring* ring = nullptr;
  if (!single_) ring = r->buffers();
  fd_ = fd;
  op_.complete = &recv_queue::on_cqe;
  op_.queue = this;
  op_.stop_more = false;
  ref();  // the armed op's reference, dropped by its final CQE
  bool started;
  if (ring != nullptr) {
    lock_.lock();
    ring_ = ring;
    arm_p_ = r;
    away_ = 0;
    limit_ = static_cast<std::uint8_t>(std::clamp(ring->count() / 16u, 1u, kMaxLimit));
    lock_.unlock();
    op_.multishot = true;
    started = io_start(&op_, prep_recv_multishot, &fd_, &slot_);
  } else {
    char* buf = new (std::nothrow) char[kFallbackSize];
    if (buf == nullptr) {
      unref();
      return -ENOMEM;
    }
    lock_.lock();
    single_ = true;
    single_buf_ = buf;
    lock_.unlock();
    op_.multishot = false;
    // Read only by prep_request inside io_start.
    const io_request rq{.op = io_opcode::recv, .fd = fd, .addr = buf, .len = kFallbackSize,
                        .poll_first = true};
    started = io_start(&op_, prep_request, &rq, &slot_);
  }
  if (started) return 0;
  const int why = op_.res;
  lock_.lock();
  armed_ = false;
  if (single_) {
    delete[] std::exchange(single_buf_, nullptr);
  }
  lock_.unlock();
  unref();  // the stream's reference remains
  return why < 0 ? why : -ECANCELED;
}

recv_queue::take_result recv_queue::step(int fd, recv_waiter* w,
                                         net::recv_buffer* out, std::span<char>* copy,
                                         const std::atomic<std::int64_t>* live,
                                         std::int64_t armed_deadline) noexcept {
  for (;;) {
    lock_.lock();
    if (count_ != 0 && out == nullptr && copy == nullptr) {  // the caller only arms
      lock_.unlock();
      return {took::data};
    }
    if (count_ != 0) {
      held_buf& b = front_locked();
      held_buf used_up{};  // a buffer copied out to its end: given back after unlock
      bool copied_all = false;
      if (copy != nullptr) {
        const std::size_t n = std::min<std::size_t>(copy->size(), b.len);
        std::memcpy(copy->data(), b.data, n);
        *copy = copy->first(n);
        b.data += n;
        b.len -= static_cast<std::uint32_t>(n);
        if (b.len == 0) {
          used_up = b;
          copied_all = true;
          pop_locked();
        }
      } else {
        take_front_locked(out);
      }
      const bool move = took_data_locked();
      lock_.unlock();
      if (copied_all) give_back(used_up);
      if (move) move_or_defer();
      return {took::data};
    }
    if (has_final_) {
      const int f = final_;
      lock_.unlock();
      return {took::final, f};
    }
    if (closed_) {
      lock_.unlock();
      return {took::failed, -ECANCELED};
    }
    if (w != nullptr && w->wake != kNone) {  // W2: recorded before we could publish
      lock_.unlock();
      return {took::woken};
    }
    if (!armed_) {
      armed_ = true;  // R1: the claim
      single_ = nobufs_ || no_multishot_;
      nobufs_ = false;
      lock_.unlock();
      if (int err = arm(fd); err != 0) return {took::failed, err};
      lock_.lock();
      // Ended already, by a cancel or for want of an SQE (shutdown ends
      // every start so): report it rather than arm again forever.
      if (!armed_ && count_ == 0 && !has_final_ && last_stop_ != 0) {
        const int err = last_stop_;
        lock_.unlock();
        return {took::failed, err};
      }
      lock_.unlock();
      continue;  // it may have completed already
    }
    if (w == nullptr) {  // the caller only wanted what is there
      lock_.unlock();
      return {took::waiting};
    }
    // W3: relaxed: set_read_deadline's store precedes its kick's lock_.
    if (live != nullptr && live->load(std::memory_order_relaxed) != armed_deadline) {
      w->wake = kKick;
      lock_.unlock();
      return {took::woken};
    }
    if (waiter_ != nullptr) {  // another reader waits: the one-reader rule broken
      lock_.unlock();
      return {took::failed, -EALREADY};
    }
    waiter_ = w;
    lock_.unlock();
    return {took::waiting};
  }
}

void recv_queue::move_or_defer() noexcept {
  if (io_try_stop_in_flight(&slot_, {.why = io_stop::move})) return;
  // R6: the arm's ring is busy; move at a later take rather than wait out
  // its M's submit.
  lock_.lock();
  moving_ = false;
  away_ = 0;
  lock_.unlock();
}

void recv_queue::took_handed() noexcept {
  // The common case: on the arm's P, as the take before (took_data_locked
  // would change nothing). arm_p_ and away_ are ours (the file comment).
  if (arm_p_ == current_reactor() && away_ == 0) return;
  lock_.lock();
  const bool move = took_data_locked();
  lock_.unlock();
  if (move) move_or_defer();
}

bool recv_queue::took_data_locked() noexcept {
  if (!armed_ || single_ || moving_ || pausing_ || closed_) return false;
  if (arm_p_ == current_reactor()) {
    away_ = 0;
    return false;
  }
  if (++away_ < kMoveAfter) return false;
  moving_ = true;  // once per arm: the final CQE clears it
  return true;
}

void recv_queue::wake(recv_waiter* w, wake_reason why) noexcept {
  lock_.lock();
  if (w->wake == kNone) w->wake = why;
  const bool published = waiter_ == w;
  if (published) waiter_ = nullptr;
  lock_.unlock();
  if (published) ready(w->gp);
}

void recv_queue::kick() noexcept {
  lock_.lock();
  recv_waiter* w = std::exchange(waiter_, nullptr);
  if (w != nullptr && w->wake == kNone) w->wake = kKick;
  lock_.unlock();
  if (w == nullptr) return;
  if (w->convert != nullptr) w->convert(w);
  ready(w->gp);
}

g* recv_queue::close() noexcept {
  lock_.lock();
  closed_ = true;
  while (count_ != 0) {
    give_back(front_locked());  // lock-free: fine under lock_
    pop_locked();
  }
  recv_waiter* w = std::exchange(waiter_, nullptr);
  if (w != nullptr && w->wake == kNone) w->wake = kCancel;
  lock_.unlock();
  // The armed op is cancelled, and its SQE in the kernel, before the
  // stream releases the fd number (io_op.hpp); no op starts here again.
  io_cancel(&slot_, /*close=*/true);
  return w != nullptr ? w->gp : nullptr;
}

void recv_queue::cancel() noexcept {
  // The receive in flight is the published reader, not the multishot: a
  // cancel of the multishot would end it for whichever receive waits when
  // its final CQE is reaped, which may be one that started after cancel()
  // returned (net.hpp: later operations are not affected). The multishot
  // goes on receiving for the next receive.
  lock_.lock();
  recv_waiter* w = std::exchange(waiter_, nullptr);
  if (w != nullptr && w->wake == kNone) w->wake = kCancel;
  lock_.unlock();
  if (w != nullptr) ready(w->gp);
}

void recv_queue::on_cqe(io_op* op) noexcept {
  auto* q = static_cast<queue_op*>(op)->queue;
  const int res = op->res;
  const std::uint32_t flags = op->cqe_flags;
  const bool more = op->multishot && (flags & kCqeMore) != 0;
  q->lock_.lock();
  if (res <= 0 && (flags & kCqeBuffer) != 0 && !q->single_) {
    // A buffer with no bytes in it (kernels may attach one to an EOF):
    // straight back to the ring.
    q->ring_->give_back(static_cast<std::uint16_t>(flags >> kCqeBufferShift));
  }
  if (res > 0) {
    held_buf b{};
    bool over = false;  // R3: this buffer came over the limit
    if (q->single_) {
      b = {q->single_buf_, static_cast<std::uint32_t>(res), 0, nullptr, q->single_buf_};
      q->single_buf_ = nullptr;
    } else {
      const auto bid = static_cast<std::uint16_t>(flags >> kCqeBufferShift);
      b = {q->ring_->addr(bid), static_cast<std::uint32_t>(res), bid, q->ring_, nullptr};
      q->got_any_ = true;
      if (q->ring_held_ >= q->limit_ && !q->closed_) {
        over = true;
        // R3: over the limit (a burst the kernel posted before the cancel
        // took effect): copy out and give the ring buffer back at once,
        // while the copies held are under their cap; past it, the ring
        // buffer stays held.
        if (q->count_ - q->ring_held_ >= max_copies(q->ring_)) {
          g_held_over_cap.fetch_add(1, std::memory_order_relaxed);
        } else if (char* copy = new (std::nothrow) char[static_cast<std::size_t>(res)]) {
          std::memcpy(copy, b.data, static_cast<std::size_t>(res));
          q->ring_->give_back(bid);
          b = {copy, static_cast<std::uint32_t>(res), 0, nullptr, copy};
          g_over_limit_copies.fetch_add(1, std::memory_order_relaxed);
        }
      }
    }
    if (q->closed_) {
      give_back(b);
    } else {
      q->push_locked(b);
    }
    // R3: the pause is asked when the queue reaches its limit, and again
    // after every kAskAgainAfter buffers that still come over it.
    if (more && q->ring_held_ >= q->limit_ &&
        (!q->pausing_ || (over && ++q->over_since_ask_ >= kAskAgainAfter))) {
      q->pausing_ = true;
      q->over_since_ask_ = 0;
      op->stop_more = true;
    }
  }
  std::uint8_t why = kNone;
  if (!more) {
    q->armed_ = false;  // R2: op_ may be started again
    q->pausing_ = false;
    q->over_since_ask_ = 0;
    q->moving_ = false;
    if (q->single_) {
      delete[] std::exchange(q->single_buf_, nullptr);
      q->single_ = false;
    }
    q->last_stop_ = 0;
    if (res == 0) {
      q->has_final_ = true;  // R5: EOF
      q->final_ = 0;
    } else if (res < 0) {
      const int out = op->outcome();
      if (op->cancel_requested()) {
        why = kCancel;
        q->last_stop_ = -ECANCELED;
      } else if (res == -EBUSY) {
        q->last_stop_ = -EBUSY;  // start() found no SQE
      } else if (res == -ENOBUFS) {
        q->nobufs_ = true;  // R4
        g_nobufs.fetch_add(1, std::memory_order_relaxed);
      } else if (res == -EINVAL && op->multishot && !q->got_any_) {
        q->no_multishot_ = true;  // R4: no multishot recv in this kernel
      } else if (out == -EINTR || out == -EAGAIN || out == -EBUSY || out == -ECANCELED) {
        // R2: the kernel or a pause ended it; the reader re-arms
      } else {
        q->has_final_ = true;  // R5
        q->final_ = out;
      }
    }
  }
  recv_waiter* w = nullptr;
  if (q->waiter_ != nullptr && (why != kNone || q->count_ != 0 || q->has_final_ || !more)) {
    w = std::exchange(q->waiter_, nullptr);  // W1
    if (why == kNone) why = (q->count_ != 0 || q->has_final_) ? kData : kRetry;
    if (w->wake == kNone) {
      w->wake = why;
      if (why == kData && q->count_ != 0 && w->out != nullptr) {
        q->take_front_locked(w->out);  // W1's hand-off
        w->handed = true;
      }
    }
  }
  const std::uint8_t woke = w != nullptr ? w->wake : std::uint8_t{kNone};
  q->lock_.unlock();
  if (w != nullptr) {
    if ((woke == kRetry || woke == kKick) && w->convert != nullptr) w->convert(w);
    ready_tail(w->gp);  // stealable, as the reactor's own completions
  }
  if (!more) q->unref();  // the op's reference, last thing
}

}  // namespace mpg::detail

// --- tcp_stream's receive ----------------------------------------------------

namespace mpg::net {

namespace {

using detail::recv_queue;
using detail::recv_waiter;

absl::Status closed_error(absl::string_view what) {
  return detail::closed_status(what, "network connection");
}

// timer_box, watch_box: a deadline timer and a context watcher that wake
// one recv_waiter (W2).
struct timer_box {
  detail::timer t;
  recv_queue* q = nullptr;
  recv_waiter* w = nullptr;
  static void fire(detail::timer* t) {
    auto* b = reinterpret_cast<timer_box*>(t);  // t is the first member
    b->q->wake(b->w, recv_queue::kTimer);
  }
};
struct watch_box {
  detail::context_watcher cw;
  recv_queue* q = nullptr;
  recv_waiter* w = nullptr;
  static void fire(detail::context_watcher* cw) noexcept {
    auto* b = reinterpret_cast<watch_box*>(cw);  // cw is the first member
    b->q->wake(b->w, recv_queue::kContext);
  }
};

// context_ended(): the read's context (null: none) has ended: its code as
// a read's result (a context is sticky: net.hpp, "Contexts").
std::optional<absl::Status> context_ended(const detail::context_node* node) {
  if (node == nullptr || !node->cancelled()) return std::nullopt;
  const bool late = node->err().code() == absl::StatusCode::kDeadlineExceeded;
  return detail::io_result_status(late ? -ETIME : -ECANCELED, "read");
}

// passed(): a read deadline (kNone: none) has passed.
bool passed(std::int64_t deadline_ns) noexcept {
  return deadline_ns != detail::io_deadline::kNone && detail::mono_now_ns() >= deadline_ns;
}

// recv_wait: one wait of the task form: parks, starts the deadline timer
// and the context watcher, then takes a step (recv_queue.hpp, W1-W3).
struct recv_wait {
  using mpg_awaiter = detail::runtime_awaiter_tag;
  recv_queue* q;
  int fd;
  std::int64_t deadline_ns;                         // kNone: none
  const std::atomic<std::int64_t>* live;            // the stream's, when followed
  detail::context_node* node;                       // null: none
  recv_buffer* out;  // the buffer taken (step) or handed over (W1)
  recv_waiter w{};
  timer_box tb{};
  watch_box wb{};
  bool timer_on = false;
  bool watching = false;
  recv_queue::take_result r{recv_queue::took::waiting};
  std::source_location where{};  // the awaiting task's co_await (link_parent)

  void link_parent(std::source_location site) noexcept { where = site; }
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) {
    w.gp = detail::current_g();
    w.out = out;  // W1's hand-off
    detail::park(h, "net.receive", where);
    if (node != nullptr) {
      wb.q = q;
      wb.w = &w;
      wb.cw.fn = &watch_box::fire;
      watching = node->watch(&wb.cw);
      if (!watching) {  // cancelled already; nothing else can write w yet
        w.wake = recv_queue::kContext;
        r = {recv_queue::took::woken};
        detail::cancel_park();
        return false;
      }
    }
    if (deadline_ns != detail::io_deadline::kNone) {
      tb.q = q;
      tb.w = &w;
      tb.t.when = detail::from_ns(deadline_ns);
      tb.t.fire = &timer_box::fire;
      detail::add_timer(&tb.t);
      timer_on = true;
    }
    // Into a local first: once step() has published w, a waker may ready
    // the G and another M resume the task and move on (this frame may even
    // be freed and reused), so nothing here touches the frame after that;
    // r then keeps the `waiting` it was made with.
    const recv_queue::take_result res = q->step(fd, &w, out, nullptr, live, deadline_ns);
    if (res.s == recv_queue::took::waiting) return true;  // published: the frame is the wakers'
    r = res;
    detail::cancel_park();
    return false;
  }
  void await_resume() noexcept {
    // After these, neither callback runs or will: w is ours again.
    if (timer_on) detail::cancel_timer(&tb.t);
    if (watching) node->unwatch(&wb.cw);
    watching = false;
  }
  // A task killed by ~runtime while parked here never resumes: the watcher
  // leaves the context with the frame, since the context may outlive the
  // runtime and be cancelled later (context.hpp). The timer needs nothing:
  // ~runtime detaches pending timers.
  ~recv_wait() {
    if (watching) node->unwatch(&wb.cw);
  }
};

}  // namespace

void recv_buffer::give_back() noexcept {
  if (ring_ != nullptr) {
    ring_->give_back(bid_);  // B2: to the ring it came from, from any P
  } else {
    delete[] base_;
  }
  data_ = nullptr;
  size_ = 0;
  ring_ = nullptr;
  base_ = nullptr;
}

detail::recv_queue* tcp_stream::recv_queue_for_reader() {
  // Acquire: a queue another reader made is seen whole.
  recv_queue* q = recv_.load(std::memory_order_acquire);
  if (q == nullptr) {
    // Two first readers at once (the one-reader rule broken) must meet in
    // one queue, where the second is refused (EALREADY); a queue of its own
    // would be one that close() never reaches. Release on success: close(),
    // set_read_deadline() and other readers see it whole; acquire on
    // failure: the winner's. seq_cst besides, with do_receive's first load
    // of fd_: against close() (net.cpp, tcp_stream::close).
    auto* made = new recv_queue();
    if (recv_.compare_exchange_strong(q, made, std::memory_order_seq_cst,
                                      std::memory_order_acquire)) {
      q = made;
    } else {
      made->unref();  // its only reference: never armed or seen by anyone
    }
  }
  return q;
}

std::size_t tcp_stream::held_buffers() const noexcept {
  recv_queue* q = recv_.load(std::memory_order_acquire);
  return q != nullptr ? q->held(/*ring_only=*/true) : 0;
}

task<absl::StatusOr<recv_buffer>> tcp_stream::do_receive(
    std::optional<clock::time_point> deadline, std::shared_ptr<detail::context_node> ctx) {
  if (plain_read_under_way()) co_return detail::io_result_status(-EALREADY, "read");
  recv_queue* q = recv_queue_for_reader();
  detail::context_node* node = ctx != nullptr && !ctx->never_cancelled() ? ctx.get() : nullptr;
  for (;;) {
    // seq_cst: the other half of recv_queue_for_reader()'s pair against
    // close() (a plain load on x86, as relaxed).
    const int fd = fd_.load(std::memory_order_seq_cst);
    if (fd < 0) co_return closed_error("read");
    // An ended context ends the read whether or not bytes are held.
    if (auto ended = context_ended(node)) co_return *std::move(ended);
    const std::int64_t dl =
        deadline ? detail::to_ns(*deadline) : read_deadline_.ns();
    if (passed(dl)) {
      // The deadline comes first, as for a plain read (and Go's Read): held
      // bytes stay held. The step arms the multishot if it is not.
      q->step(fd, nullptr, nullptr, nullptr, nullptr, 0);
      co_return detail::io_result_status(-ETIME, "read");
    }
    recv_buffer b;
    recv_wait wt{.q = q, .fd = fd, .deadline_ns = dl,
                 .live = deadline ? nullptr : read_deadline_.live(), .node = node, .out = &b};
    co_await wt;
    if (wt.w.handed) {  // W1: on_cqe put the head buffer in b
      q->took_handed();
      co_return b;
    }
    switch (wt.r.s) {
      case recv_queue::took::data:
        co_return b;
      case recv_queue::took::final:
        if (wt.r.err == 0) co_return recv_buffer();  // EOF
        co_return detail::io_result_status(wt.r.err, "read");
      case recv_queue::took::failed:
        if (fd_.load(std::memory_order_relaxed) < 0) co_return closed_error("read");
        co_return detail::io_result_status(wt.r.err, "read");
      case recv_queue::took::woken:
      case recv_queue::took::waiting:
        break;
    }
    switch (wt.w.wake) {
      case recv_queue::kCancel:
        co_return detail::io_result_status(-ECANCELED, "read");
      case recv_queue::kContext: {
        const bool late = node->err().code() == absl::StatusCode::kDeadlineExceeded;
        co_return detail::io_result_status(late ? -ETIME : -ECANCELED, "read");
      }
      default:
        break;  // data, retry, kick, timer: the loop looks again
    }
  }
}

task<absl::StatusOr<recv_buffer>> tcp_stream::receive(clock::time_point deadline) {
  return do_receive(deadline, nullptr);
}
task<absl::StatusOr<recv_buffer>> tcp_stream::receive(const context& ctx) {
  return do_receive(std::nullopt, ctx.node_for_internal_use());
}

task<absl::StatusOr<std::size_t>> tcp_stream::do_read_held(
    std::span<char> buf, std::optional<clock::time_point> deadline,
    std::shared_ptr<detail::context_node> ctx) {
  if (buf.empty()) co_return std::size_t{0};
  if (plain_read_under_way()) co_return detail::io_result_status(-EALREADY, "read");
  recv_queue* q = recv_queue_for_reader();
  // seq_cst: the reader's half of the pair against close(), as in do_receive.
  const int fd = fd_.load(std::memory_order_seq_cst);
  if (fd < 0) co_return closed_error("read");
  // An ended context ends the read whether or not bytes are held, as a
  // plain read's (refused by io_start) and receive(ctx).
  if (ctx != nullptr && !ctx->never_cancelled()) {
    if (auto ended = context_ended(ctx.get())) co_return *std::move(ended);
  }
  // A deadline that passed comes first, as in do_receive.
  if (passed(deadline ? detail::to_ns(*deadline) : read_deadline_.ns())) {
    co_return detail::io_result_status(-ETIME, "read");
  }
  std::span<char> copy = buf;
  recv_queue::take_result r = q->step(fd, nullptr, nullptr, &copy, nullptr, 0);
  if (r.s == recv_queue::took::data) co_return copy.size();
  absl::StatusOr<recv_buffer> b = co_await do_receive(deadline, std::move(ctx));
  if (!b.ok()) co_return b.status();
  if (b->empty()) co_return std::size_t{0};  // EOF
  const std::size_t n = std::min(buf.size(), b->size());
  std::memcpy(buf.data(), b->data(), n);
  if (n < b->size()) q->put_back(std::move(*b), n);
  co_return n;
}

// --- receive_op --------------------------------------------------------------
//
// await_ready takes what is held (or a final result) when held_hint_ says
// something is; await_suspend parks, takes a step under lock_, and
// publishes the waiter; a wake for data usually hands the buffer over
// (W1); a wake that needs another wait calls convert(), which makes
// do_receive the G's resume point with the awaiting task as its
// continuation (as read_op::on_complete does).

namespace {
// receive_op::res_ for "the stream is closed" (net::is_closed): no errno, so
// that a kernel's -EBADF (an adopted descriptor that is not open) keeps its
// errno and is never read as our own close.
constexpr int kStreamClosed = std::numeric_limits<int>::min();
}  // namespace

bool receive_op::await_ready() {
  if (handed_over()) [[unlikely]] return false;  // a second await: await_suspend refuses it
  const int fd = s_->fd_.load(std::memory_order_relaxed);
  if (fd < 0) {
    res_ = kStreamClosed;
    return true;
  }
  if (s_->plain_read_under_way()) {
    res_ = -EALREADY;
    return true;
  }
  recv_queue* q = s_->recv_queue_for_reader();
  // Nothing held (as far as the hint knows): the step under the park looks.
  if (!q->maybe_held()) return false;
  // A read deadline that passed comes first, as in do_receive.
  if (passed(s_->read_deadline_.ns())) {
    res_ = -ETIME;
    return true;
  }
  recv_queue::take_result r = q->step(fd, nullptr, &buf_, nullptr, nullptr, 0);
  return take(static_cast<int>(r.s), r.err);
}

bool receive_op::take(int st, int err) noexcept {
  const recv_queue::take_result r{static_cast<recv_queue::took>(st), err};
  switch (r.s) {
    case recv_queue::took::data:
      return true;
    case recv_queue::took::final:
      res_ = r.err;  // 0: EOF (buf_ empty)
      return true;
    case recv_queue::took::failed:
      res_ = s_->fd_.load(std::memory_order_relaxed) < 0 ? kStreamClosed : r.err;
      return true;
    default:
      return false;
  }
}

std::coroutine_handle<> receive_op::await_suspend(std::coroutine_handle<> h) {
  refuse_second_await();
  // seq_cst: after await_ready's recv_queue_for_reader(), the reader's half
  // of the pair against close(), as in do_receive.
  const int fd = s_->fd_.load(std::memory_order_seq_cst);
  recv_queue* q = s_->recv_.load(std::memory_order_relaxed);  // made by await_ready
  // A read deadline set: the task form, which looks at it before any bytes
  // that arrived since await_ready (the step below would take them first;
  // with a deadline it only ever reports a kick or data).
  if (s_->read_deadline_.ns() != detail::io_deadline::kNone) {
    return run_now(s_->do_receive(std::nullopt, nullptr), h);
  }
  w_.gp = detail::current_g();
  w_.convert = &receive_op::convert;
  w_.user = this;
  w_.out = &buf_;  // W1's hand-off
  detail::park(h, "net.receive", detail::noted_wait_site());
  // The stream's read deadline: none expected (kNone); one set now or
  // meanwhile sends us to the task form (step reports a kick).
  recv_queue::take_result r = q->step(fd, &w_, &buf_, nullptr,
                                      s_->read_deadline_.live(), detail::io_deadline::kNone);
  if (r.s == recv_queue::took::waiting) return detail::switch_after_park();  // published (K3)
  detail::cancel_park();
  if (take(static_cast<int>(r.s), r.err)) return h;
  // Woken before publishing (a read deadline is set): the task form waits.
  return run_now(s_->do_receive(std::nullopt, nullptr), h);
}

void receive_op::convert(recv_waiter* w) noexcept {
  auto* self = static_cast<receive_op*>(w->user);
  // The G is parked at the awaiting task, and the waker readies it next: it
  // resumes in do_receive, which returns to the awaiting task.
  self->hand_over(self->s_->do_receive(std::nullopt, nullptr), w->gp);
}

receive_op::result_type receive_op::await_resume() {
  if (handed_over()) return task_result();
  if (w_.handed) {  // W1: on_cqe put the head buffer in buf_
    s_->recv_.load(std::memory_order_relaxed)->took_handed();
    return std::move(buf_);
  }
  if (res_ == kStreamClosed) return closed_error("read");
  if (res_ < 0) return detail::io_result_status(res_, "read");
  if (res_ == 0 || !buf_.empty()) return std::move(buf_);
  // Resumed by a waker (W1) that did not convert: data, a final result, or
  // a cancel.
  if (w_.wake == recv_queue::kCancel) return detail::io_result_status(-ECANCELED, "read");
  const int fd = s_->fd_.load(std::memory_order_relaxed);
  if (fd < 0) return closed_error("read");
  recv_queue* q = s_->recv_.load(std::memory_order_relaxed);
  recv_queue::take_result r = q->step(fd, nullptr, &buf_, nullptr, nullptr, 0);
  if (r.s == recv_queue::took::data) return std::move(buf_);
  if (r.s == recv_queue::took::final && r.err == 0) return recv_buffer();
  if (r.s == recv_queue::took::failed && s_->fd_.load(std::memory_order_relaxed) < 0)
    return closed_error("read");
  return detail::io_result_status(r.err != 0 ? r.err : -EIO, "read");
}

receive_op::operator task<result_type>() && { return s_->do_receive(std::nullopt, nullptr); }

}  // namespace mpg::net
