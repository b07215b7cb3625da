// lib/io/fault_injector.hpp: I/O fault injection for tests (MPG_FAULTS,
// runtime_options::io_faults).
//
// A chosen fraction of the operations mpg's own I/O layer issues (net, fs:
// every op prepared from an io_request) completes with a fault the kernel
// may legally produce, so tests can show the layer above survives it:
//   eintr     -EINTR         the op did not run (retry it)
//   eagain    -EAGAIN        the op did not run (poll, or retry)
//   short     a smaller positive count for read, write, recv, send, readv,
//             writev (regular files, pipes and stream sockets only)
//   reset     -ECONNRESET    recv, send, recvmsg, sendmsg: the connection
//             reads as broken (the caller reports it and closes)
//   overflow  the op's CQE goes through the kernel's CQ overflow list
//   nomultishot  every multishot recv fails with -EINVAL, as on a kernel
//             without multishot receive (before 6.0): a stream's receive()
//             falls back to plain recvs. Not a fault of some ops but a
//             kernel that lacks a feature, so rate does not apply (any
//             rate above 0 turns it on) and "all" does not include it.
//   nosqe     a multishot recv's arm finds no SQE: reactor::start refuses it
//             with -EBUSY, as when the kernel keeps refusing submissions
//             (CQ overflow) through all of get_sqes_locked's attempts. At
//             `rate`; the reader sees the error (receive() reports it
//             rather than arming again forever), so "all" leaves it out.
//   nopause   a multishot recv's backpressure cancel (R3, recv_queue.hpp)
//             finds no SQE, as when the SQ is full: every other one, the
//             first included, so that the op's next CQE must ask again. Not
//             at `rate` (any rate above 0 turns it on: the alternation is
//             what makes a test of it deterministic), and "all" leaves it
//             out, as it does nomultishot.
//   nocancel  a cancel of an op in flight (reactor::cancel: close(),
//             cancel(), a context, an earlier deadline) finds no SQE, as
//             when the kernel keeps refusing submissions through all of
//             get_sqes_locked's attempts: the reactor owes the cancel and
//             issues it at its next flush (reactor_cancel.cpp), so the
//             caller sees nothing. At `rate`; "all" includes it.
//   misspause a multishot recv's backpressure cancel misses the op, as the
//             kernel's ASYNC_CANCEL misses a multishot recv that it keeps
//             requeuing as task_work while the peer keeps the socket
//             supplied (recv_queue.hpp, R3): the reactor drops the request
//             without taking an SQE. At `rate`; "all" leaves it out (a
//             stream over its copy cap drains the P's ring, R3).
// io::submit's operations are never faulted: their result is the kernel's
// cqe->res, which the caller interprets (mpg/io.hpp). Nor is a stream's
// multishot recv, except by nomultishot, nosqe, nopause and misspause (prep_recv_multishot, not
// prep_request: plan() never sees it, and on_cqe() delivers its CQEs as
// they are): a re-posted CQE would lose its buffer id. The plain recv a
// stream falls back to when its P's buffer ring is empty is faulted like
// any recv.
//
// Syntax, as Go's GODEBUG: comma-separated key=value pairs,
//   rate=0.05,kinds=eintr+eagain+short+reset+overflow,seed=42
//   rate=1,kinds=nomultishot
// rate: fraction of ops faulted, 0 or in [1e-9, 1] (required: 0 or absent
// is off), written as a plain decimal number: ASCII digits with at most one
// '.', then optionally an exponent ("1e-3", "5E-2"); no space, sign, hex,
// inf or nan; kinds: '+'-separated names, or "all" (the default); seed: an
// unsigned 64-bit integer in ASCII digits, nothing around them (default:
// from the clock; the summary names it). A bad pair is reported on stderr,
// escaped on one line, and ignored.
//
// Faults that pretend an op failed must not lose what the op did: a recv
// whose bytes were read cannot become -EINTR. So the fault is planned when
// the op's SQE is prepared and applied when its CQE is read (the one place
// a result reaches the op: reactor::dispatch):
//   eintr, eagain, reset  plan() turns the SQE into a NOP (nothing happens
//                         in the kernel); the NOP's CQE gets the errno.
//   short                 plan() lowers the SQE's length (or iovec count):
//                         the kernel itself transfers less.
//   overflow              on_cqe() holds the CQE back; overflow() fills the
//                         CQ with NOPs and re-posts the CQE to the same
//                         ring with IORING_OP_MSG_RING behind them, so it
//                         lands in the kernel's overflow list, with the
//                         CQEs of other ops that complete meanwhile. The
//                         reactor's real overflow handling (reap flushing
//                         IORING_SQ_CQ_OVERFLOW, submit refused with
//                         -EBUSY, wait entering the kernel) must bring them
//                         back. The MSG_RING's own CQE (the carrier, tagged
//                         op|4) is counted like any tagged CQE; if it failed,
//                         the held CQE is delivered from it.
// Cost when off: the reactor holds a null injector; two tests of it per op
// start (one before it takes an SQE, for nosqe), one per CQE, and one per
// backpressure cancel (nopause, misspause).
//
// Threading: an injector belongs to one reactor and is used only under that
// reactor's lock; its counters are read by stats() from any thread
// (relaxed atomics: independent counts, nothing is ordered by them).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "mpg/detail/io/io_op.hpp"

struct io_uring;

namespace mpg::detail {

enum class io_fault : std::uint8_t {
  eintr, eagain, short_io, reset, overflow, no_multishot, no_sqe, no_pause, miss_pause,
  no_cancel, kCount
};
inline constexpr unsigned kFaultKinds = static_cast<unsigned>(io_fault::kCount);
const char* fault_name(io_fault f) noexcept;

struct fault_config {
  double rate = 0;
  unsigned kinds = 0;       // bit (1 << io_fault)
  std::uint64_t seed = 0;
  bool seeded = false;      // seed was given (0 included)
  bool on() const noexcept { return rate > 0 && kinds != 0; }
};

// parse_faults(): the config `spec` describes; each bad pair appends a line
// to *errors (the pair escaped as a C string literal's body) and is ignored.
fault_config parse_faults(std::string_view spec, std::string* errors);

// faults_from_options(): `option` if not null, else the MPG_FAULTS
// environment variable, parsed; bad pairs are reported on stderr. A seed
// left out is drawn from the clock.
fault_config faults_from_options(const char* option);

struct fault_counts {
  std::uint64_t by_kind[kFaultKinds] = {};
  std::uint64_t total() const noexcept {
    std::uint64_t n = 0;
    for (std::uint64_t k : by_kind) n += k;
    return n;
  }
};

class fault_injector {
 public:
  // Tags of user_data the injector adds: op | kCarrierTag is the MSG_RING
  // that re-posts op's CQE (ops are 8-aligned; the reactor's own tags are
  // below 8).
  static constexpr std::uint64_t kCarrierTag = 4;

  // `stream` tells the rings of one runtime apart (seed + stream);
  // `msg_ring`: the kernel supports IORING_OP_MSG_RING.
  fault_injector(const fault_config& c, std::uint64_t stream, bool msg_ring) noexcept;

  // plan(): called by reactor::start right after the op's SQE is prepared
  // from an io_request; records the fault in op->fault.
  void plan(io_op* op, io_uring_sqe* sqe) noexcept;
  // plan_multishot(): likewise for a multishot recv (nomultishot only).
  void plan_multishot(io_op* op, io_uring_sqe* sqe) noexcept;
  // refuse_sqe(): called by reactor::start before it takes an SQE for a
  // multishot recv; true: start() refuses the op as with no SQE (nosqe).
  bool refuse_sqe() noexcept;
  // refuse_pause(): called by reactor::dispatch_multishot before it takes
  // an SQE for a backpressure cancel; true: it finds none (nopause).
  bool refuse_pause() noexcept;
  // refuse_cancel(): called by reactor::cancel before it takes an SQE for
  // the ASYNC_CANCEL; true: it finds none (nocancel).
  bool refuse_cancel() noexcept;
  // miss_pause(): called by reactor::dispatch_multishot for a backpressure
  // cancel it is about to prepare; true: the cancel misses (misspause), and
  // the reactor drops the request without taking an SQE.
  bool miss_pause() noexcept;

  enum class verdict { deliver, hold, carrier_done, carrier_failed };
  // on_cqe(): a CQE about to be dispatched. deliver: go on with *res
  // (possibly rewritten); hold: call overflow(); carrier_done: the CQE is a
  // carrier's, count it and drop it; carrier_failed: likewise, and then
  // deliver *user_data / *res (the held CQE) instead.
  verdict on_cqe(std::uint64_t* user_data, int* res, std::uint32_t flags) noexcept;

  struct overflow_result {
    unsigned added = 0;  // SQEs prepared that post a CQE tagged `ignore_tag` or a carrier
    bool held = false;   // the CQE will come back through the ring
  };
  // overflow(): fill `ring`'s CQ with NOPs (tagged ignore_tag), then
  // re-post (user_data, res) behind them. The SQ must be empty.
  overflow_result overflow(io_uring* ring, std::uint64_t user_data, int res,
                           std::uint64_t ignore_tag) noexcept;

  fault_counts counts() const noexcept;

 private:
  std::uint64_t next() noexcept;
  void count(io_fault f) noexcept {
    // Relaxed: an independent statistic (see the file comment).
    counts_[static_cast<unsigned>(f)].fetch_add(1, std::memory_order_relaxed);
  }

  std::uint64_t threshold_;  // a draw below it faults the op
  unsigned kinds_;
  bool msg_ring_;
  std::uint64_t state_;
  bool pause_refused_ = false;  // nopause: the last backpressure cancel was refused
  std::atomic<std::uint64_t> counts_[kFaultKinds] = {};
};

}  // namespace mpg::detail
