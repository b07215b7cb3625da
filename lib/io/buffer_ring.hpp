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
// The return stack (Treiber, push-only). give_back() links the bid above
// the current top in next_ and CASes the top to it; refill() takes the whole
// stack at once with an exchange. With single pops excluded, ABA cannot
// hurt: a push whose CAS succeeds found the top it linked to. Memory order:
// the push is a release, the exchange an acquire, so everything the reader
// did with the buffer (reading its bytes) and the next_ link happen before
// refill() reads the link and publishes the buffer to the kernel with the
// tail's store-release (io_uring_buf_ring_advance), which the kernel reads
// with an acquire before it writes the buffer again.
//
// Lifetime. The ring memory and the buffers outlive the reactor while any
// buffer is held: refs_ counts the reactor (1) and every held buffer.
// dispatch takes a buffer's ref (hold(), under the reactor lock, which
// already holds one: relaxed), give_back() drops it after its push
// (acq_rel: the last drop sees every push and use before it frees). The
// reactor drops its ref after io_uring_queue_exit, so the kernel no longer
// reads the ring when the memory goes.
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

  // hold(): a CQE handed out buffer `bid` (the reactor lock is held).
  void hold() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  // give_back(): the holder is done with `bid`. Any thread; lock-free. May
  // free the ring (the last reference): touch nothing of it afterwards.
  void give_back(std::uint16_t bid) noexcept;
  // refill(): the owning reactor, under its lock: returned buffers go back
  // to the kernel. Returns how many.
  unsigned refill() noexcept;
  // has_returned(): a relaxed hint that refill() has work.
  bool has_returned() const noexcept {
    return returned_.load(std::memory_order_relaxed) != 0;
  }
  // release(): the reactor's reference, after its io_uring is gone.
  void release() noexcept { unref(); }

  // For tests: buffers given back so far, and buffers in the kernel ring
  // after the last refill (both relaxed counters).
  std::uint64_t given_back() const noexcept { return given_back_.load(std::memory_order_relaxed); }
  unsigned in_kernel() const noexcept { return in_kernel_.load(std::memory_order_relaxed); }
  // taken(): the reactor saw a CQE consume one (under its lock).
  void taken() noexcept { in_kernel_.fetch_sub(1, std::memory_order_relaxed); }

 private:
  buffer_ring() = default;
  ~buffer_ring();
  void unref() noexcept;

  io_uring_buf_ring* br_ = nullptr;
  std::size_t br_bytes_ = 0;
  char* bufs_ = nullptr;
  unsigned count_ = 0;
  unsigned size_ = 0;
  // next_[bid]: the bid below it on the return stack, plus one (0: bottom).
  // Written by the pusher that owns bid, read by refill() after its
  // acquire exchange (see the file comment).
  std::unique_ptr<std::uint16_t[]> next_;
  // The top of the return stack: bid + 1, 0 when empty.
  std::atomic<std::uint32_t> returned_{0};
  std::atomic<std::int64_t> refs_{1};
  std::atomic<std::uint64_t> given_back_{0};
  std::atomic<unsigned> in_kernel_{0};
};

}  // namespace mpg::detail
