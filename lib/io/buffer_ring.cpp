// lib/io/buffer_ring.cpp: a P's provided-buffer ring (buffer_ring.hpp has
// the protocol). One of the seven files that include liburing.h
// (reactor.hpp says which).
//
// Also here: reactor::buffers(), which makes a P's ring on first use, and
// the SQE of a multishot recv that selects its buffers from it.
//
// liburing 2.3 has no io_uring_setup_buf_ring: the ring memory is mapped
// here (page-aligned, as the kernel requires) and registered with
// io_uring_register_buf_ring.
#include "io/buffer_ring.hpp"

#include "io/reactor.hpp"

#include <liburing.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <new>

namespace mpg::detail {

buffer_ring* buffer_ring::create(io_uring* ring, unsigned count, unsigned size) noexcept {
  if (count == 0 || (count & (count - 1)) != 0 || count > 32768 || size == 0) return nullptr;
  auto* b = new (std::nothrow) buffer_ring();
  if (b == nullptr) return nullptr;
  b->count_ = count;
  b->size_ = size;
  b->br_bytes_ = count * sizeof(io_uring_buf);
  void* mem = ::mmap(nullptr, b->br_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE,
                     -1, 0);
  if (mem == MAP_FAILED) {
    delete b;
    return nullptr;
  }
  b->br_ = static_cast<io_uring_buf_ring*>(mem);
  b->bufs_ = static_cast<char*>(std::aligned_alloc(64, std::size_t{count} * size));
  b->next_.reset(new (std::nothrow) std::uint16_t[count]);
  if (b->bufs_ == nullptr || b->next_ == nullptr) {
    delete b;
    return nullptr;
  }
  io_uring_buf_ring_init(b->br_);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<std::uintptr_t>(b->br_);
  reg.ring_entries = count;
  reg.bgid = kGroup;
  if (io_uring_register_buf_ring(ring, &reg, 0) < 0) {
    delete b;
    return nullptr;
  }
  const int mask = io_uring_buf_ring_mask(count);
  for (unsigned i = 0; i < count; ++i) {
    io_uring_buf_ring_add(b->br_, b->addr(static_cast<std::uint16_t>(i)), size,
                          static_cast<unsigned short>(i), mask, static_cast<int>(i));
  }
  io_uring_buf_ring_advance(b->br_, static_cast<int>(count));
  b->in_kernel_.store(count, std::memory_order_relaxed);
  b->refs_.store(std::int64_t{count} + 1, std::memory_order_relaxed);  // published with b
  b->refill_batch_ = std::clamp(count / 16u, 1u, 16u);
  return b;
}

buffer_ring::~buffer_ring() {
  if (br_ != nullptr) ::munmap(br_, br_bytes_);
  std::free(bufs_);
}

void buffer_ring::give_back(std::uint16_t bid) noexcept {
  // Relaxed load: the CAS below validates it.
  std::uint64_t word = returned_.load(std::memory_order_relaxed);
  std::uint64_t pushed;
  do {
    if ((word & kClosed) != 0) {  // after release(): drop the buffer's reference
      unref();
      return;
    }
    next_[bid] = static_cast<std::uint16_t>(word & kTopMask);
    pushed = (word & ~kTopMask) + kOnePush + std::uint64_t{bid} + 1u;
    // Release: our use of the buffer and next_[bid] happen before
    // refill()'s acquire CAS (file comment, "The return stack").
  } while (!returned_.compare_exchange_weak(word, pushed, std::memory_order_release,
                                            std::memory_order_relaxed));
}

unsigned buffer_ring::refill() noexcept {
  std::uint64_t word = returned_.load(std::memory_order_relaxed);
  if ((word & kTopMask) == 0) return 0;
  // Acquire: pairs with the pushes' release (file comment).
  while (!returned_.compare_exchange_weak(word, word & ~kTopMask, std::memory_order_acquire,
                                          std::memory_order_relaxed)) {
  }
  refilled_pushes_ = word >> kCountShift;
  std::uint32_t top = static_cast<std::uint32_t>(word & kTopMask);
  const int mask = io_uring_buf_ring_mask(count_);
  unsigned n = 0;
  while (top != 0) {
    const auto bid = static_cast<std::uint16_t>(top - 1);
    top = next_[bid];
    io_uring_buf_ring_add(br_, addr(bid), size_, bid, mask, static_cast<int>(n));
    ++n;
  }
  // A store-release of the tail: the kernel sees the entries written above.
  io_uring_buf_ring_advance(br_, static_cast<int>(n));
  // The one writer (the reactor, under its lock): no read-modify-write.
  in_kernel_.store(in_kernel_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  return n;
}

void buffer_ring::release() noexcept {
  // acq_rel: acquires the pushes (their next_ links are read below); the
  // release half orders the reactor's uses before a giver's final drop.
  const std::uint64_t word = returned_.fetch_or(kClosed, std::memory_order_acq_rel);
  std::int64_t drop = 1 + std::int64_t{in_kernel_.load(std::memory_order_relaxed)};
  for (std::uint32_t top = static_cast<std::uint32_t>(word & kTopMask); top != 0;
       top = next_[top - 1]) {
    ++drop;
  }
  // acq_rel: as unref().
  if (refs_.fetch_sub(drop, std::memory_order_acq_rel) == drop) delete this;
}

void buffer_ring::unref() noexcept {
  // acq_rel: the last reference sees every other holder's uses of the
  // memory before it frees it (as shared_ptr's count).
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

// --- the reactor's side -------------------------------------------------------

buffer_ring* reactor::buffers() noexcept {
  // Acquire: pairs with the release store below (the ring is initialised).
  if (buffer_ring* b = bufs_.load(std::memory_order_acquire)) return b;
  lock_.lock();
  buffer_ring* b = bufs_.load(std::memory_order_relaxed);
  if (b == nullptr && !bufs_failed_) {
    b = buffer_ring::create(ring_.get(), buf_count_, buf_size_);
    if (b == nullptr) bufs_failed_ = true;
    bufs_.store(b, std::memory_order_release);
  }
  lock_.unlock();
  return b;
}

void prep_recv_multishot(io_uring_sqe* sqe, const void* ctx) {
  io_uring_prep_recv_multishot(sqe, *static_cast<const int*>(ctx), nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = buffer_ring::kGroup;
}

}  // namespace mpg::detail
