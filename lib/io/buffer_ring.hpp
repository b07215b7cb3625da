// lib/io/buffer_ring.hpp: a P's ring of provided receive buffers (io_uring's
// buffer ring, Linux 5.19), which a multishot recv (recv_queue.hpp) fills.
//
// Ownership. Each buffer, named by its id (bid), is at any moment in exactly
// one of three places:
//   kernel    in the ring the kernel picks from (between head and tail);
//   held      named by a CQE the reactor has dispatched: owned by a stream's
//             recv_queue, then by the recv_buffer a reader borrowed it as;
//   returned  on the lock-free return stack, waiting for refill().
// A buffer moves kernel -> held when the kernel posts it in a CQE, held ->
// returned by give_back() (any thread: the reader may have migrated to
// another P, or the stream may be destroyed on any thread), and returned ->
// kernel by refill(), which only the owning reactor calls, under its lock
// (it is the ring's one producer: the kernel reads the tail it writes).
//
// The return stack (Treiber, push-only), in one 64-bit word, returned_:
// the top bid plus one in its low 16 bits (0: empty), a closed bit, and
// above it the count of pushes so far (the given_back() statistic, which
// so costs no read-modify-write of its own). give_back() links the bid
// above the current top in next_ and CASes the word to the new top and
// count; refill() takes the whole stack at once, clearing the top with a
// CAS that keeps the count. ABA cannot hurt: every push changes the count,
// so a CAS succeeds only on the very word its link was made from. Memory
// order: the push is a release, refill()'s CAS an acquire, so everything
// the reader did with the buffer (reading its bytes) and the next_ link
// happen before refill() reads the link and publishes the buffer to the
// kernel with the tail's store-release (io_uring_buf_ring_advance), which
// the kernel reads with an acquire before it writes the buffer again.
//
// Lifetime. The ring memory and the buffers outlive the reactor while any
// buffer is held. refs_ starts at count + 1: one reference for the reactor
// and one for every buffer, wherever it is, so the hot path (a CQE hands a
// buffer out, its holder gives it back) touches no count. release(), the
// reactor's last act (after io_uring_queue_exit: the kernel reads the ring
// no more), closes the stack (a fetch_or of the closed bit) and drops its
// own reference with those of every buffer in the kernel (in_kernel_,
// exact: only the reactor moves it; the buffers of the CQEs its quiet drain
// drops at its end stay counted there, as nobody holds them) and on the
// stack. Each buffer still
// held then is given back after the close: give_back() sees the bit, does
// not push, and drops that buffer's reference instead. Every buffer's
// reference is so dropped exactly once, and the last drop frees. Memory
// order: the drops are acq_rel (as shared_ptr's count) and the close is
// acq_rel (it acquires the pushes before it walks the stack), so the last
// drop sees every use of the memory before it frees it.
//
// Rejected: recycling into the ring directly from any thread (the tail has
// one writer: a second one would need the reactor lock on every consumed
// message, and a reader on another P would contend with that P's reaps);
// one shared pool of all Ps (a buffer group is per io_uring).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

struct io_uring;
struct io_uring_buf_ring;

namespace mpg::detail {

class buffer_ring {
 public:
  static constexpr int kGroup = 0;  // the buffer group id, in every P's ring

  // create(): registers `count` (a power of two, <= 32768) buffers of
  // `size` bytes with `ring` as group kGroup and fills the ring. nullptr if
  // the kernel refuses (before 5.19) or memory is short.
  static buffer_ring* create(io_uring* ring, unsigned count, unsigned size) noexcept;

  buffer_ring(const buffer_ring&) = delete;
  buffer_ring& operator=(const buffer_ring&) = delete;

  char* addr(std::uint16_t bid) const noexcept {
    return bufs_ + static_cast<std::size_t>(bid) * size_;
  }
  unsigned buffer_size() const noexcept { return size_; }
  unsigned count() const noexcept { return count_; }

  // give_back(): the holder is done with `bid`. Any thread; lock-free. May
  // free the ring (the last reference, after release()): touch nothing of
  // it afterwards.
  void give_back(std::uint16_t bid) noexcept;
  // refill(): the owning reactor, under its lock: returned buffers go back
  // to the kernel. Returns how many.
  unsigned refill() noexcept;
  // refill_due(): a relaxed hint that a batch has come back since the last
  // refill (the reactor's reaps refill by batches; before it sleeps, and
  // before it arms a receive, it refills whatever came back).
  bool refill_due() const noexcept {
    return (returned_.load(std::memory_order_relaxed) >> kCountShift) - refilled_pushes_ >=
           refill_batch_;
  }
  // release(): the reactor's last act, after its io_uring is gone (see the
  // file comment, "Lifetime").
  void release() noexcept;

  // For tests: buffers given back so far (pushes onto the return stack),
  // and buffers in the kernel ring after the last refill (relaxed reads).
  std::uint64_t given_back() const noexcept {
    return returned_.load(std::memory_order_relaxed) >> kCountShift;
  }
  unsigned in_kernel() const noexcept { return in_kernel_.load(std::memory_order_relaxed); }
  // taken(): the reactor saw a CQE consume one (under its lock, as every
  // write of in_kernel_: a plain load and store, no read-modify-write).
  void taken() noexcept {
    in_kernel_.store(in_kernel_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
  }

 private:
  buffer_ring() = default;
  ~buffer_ring();
  void unref() noexcept;

  static constexpr std::uint64_t kTopMask = 0xffff;  // the top bid + 1
  static constexpr std::uint64_t kClosed = 1u << 16;
  static constexpr int kCountShift = 17;
  static constexpr std::uint64_t kOnePush = std::uint64_t{1} << kCountShift;

  // The reactor's side (and addr(), which readers use).
  io_uring_buf_ring* br_ = nullptr;
  std::size_t br_bytes_ = 0;
  char* bufs_ = nullptr;
  unsigned count_ = 0;
  unsigned size_ = 0;
  // next_[bid]: the bid below it on the return stack, plus one (0: bottom).
  // Written by the pusher that owns bid, read by refill() after its
  // acquire CAS and by release() after its acquire close (file comment).
  std::unique_ptr<std::uint16_t[]> next_;
  std::atomic<unsigned> in_kernel_{0};
  // The push count at the last refill, and the batch refill_due() waits
  // for: count / 16, between 1 and 16 (a ring of 512 buffers has all but
  // at most 15 of those not held in the kernel). The reactor's (under its
  // lock).
  std::uint64_t refilled_pushes_ = 0;
  std::uint64_t refill_batch_ = 1;
  // The givers' side, on a line of its own: the return stack's word (top,
  // closed bit, push count) and the references (file comment).
  alignas(64) std::atomic<std::uint64_t> returned_{0};
  std::atomic<std::int64_t> refs_{0};
};

}  // namespace mpg::detail
