// lib/io/reactor_setup.cpp: a P's io_uring made and torn down (reactor.hpp;
// submitting and reaping are in reactor.cpp, waiting and waking in
// reactor_wake.cpp). One of the seven source files of libmpg that include
// liburing.h (reactor.hpp says which).
//
// Ring set-up. The ring moves between threads with its P, so the flags that
// bind a ring to one task are out: IORING_SETUP_SINGLE_ISSUER and
// DEFER_TASKRUN (6.0/6.1) would make every submit from a second M fail or
// strand completions; a registered ring fd (io_uring_register_ring_fd, 5.18)
// is an index into the registering thread's table, useless on another M;
// SQPOLL would burn a core per P. We use:
//   - CQSIZE (5.5) with a CQ four times the SQ, plus FEAT_NODROP (5.5): a CQ
//     that fills anyway parks overflow in the kernel, and submit returns
//     -EBUSY until it is flushed; reap() flushes it (reap_locked() enters
//     the kernel when IORING_SQ_CQ_OVERFLOW is set) and start() reaps
//     when it cannot get an SQE. Tests drive completions down that path on
//     purpose (fault_injector.hpp, the `overflow` kind).
//   - COOP_TASKRUN + TASKRUN_FLAG (5.19): completions that need task_work
//     (every socket op woken by poll) do not IPI the submitting thread while
//     it runs tasks; the kernel sets IORING_SQ_TASKRUN and the next reap() or
//     submit enters the kernel to run them. Fewer interrupts under load.
//   - SUBMIT_ALL (5.18): one bad SQE does not stop the rest of a batch.
// Older kernels get the flags dropped one set at a time. FEAT_EXT_ARG (5.11,
// the timeout argument of io_uring_enter) is required, so Linux 5.11 is the
// floor; create() probes every opcode mpg uses and names the one missing.
#include "io/reactor.hpp"

#include "io/buffer_ring.hpp"

#include <errno.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "mpg/detail/sched/clock.hpp"
#include "sched/thread_mutex.hpp"

namespace mpg::detail {

namespace {

// What create() last failed with, for ops started where no reactor exists.
thread_mutex g_reason_mutex;
std::string g_reason ABSL_GUARDED_BY(g_reason_mutex);

std::string kernel_release() {
  utsname u{};
  if (::uname(&u) != 0) return "unknown";
  return u.release;
}

absl::Status setup_error(int err, unsigned entries) {
  std::string kernel = kernel_release();
  switch (err) {
    case EPERM:
    case EACCES:
      return absl::ErrnoToStatus(
          err, absl::StrCat(
                   "mpg: io_uring_setup refused: io_uring is disabled here, by the sysctl "
                   "kernel.io_uring_disabled (1: only members of kernel.io_uring_group, 2: "
                   "nobody) or by a seccomp filter (Docker's and containerd's default profiles "
                   "block io_uring). Set `sysctl -w kernel.io_uring_disabled=0`, join the "
                   "io_uring group, or run with a seccomp profile that allows io_uring_setup, "
                   "io_uring_enter and io_uring_register"));
    case ENOSYS:
      return absl::ErrnoToStatus(
          err, absl::StrCat("mpg: no io_uring in this kernel (", kernel,
                            "): it is older than 5.1, built without CONFIG_IO_URING, or a "
                            "sandbox (gVisor, a seccomp filter) hides the syscalls. mpg needs "
                            "Linux >= 5.11 with io_uring enabled"));
    case ENOMEM: {
      rlimit rl{};
      ::getrlimit(RLIMIT_MEMLOCK, &rl);
      return absl::ErrnoToStatus(
          err, absl::StrCat("mpg: cannot allocate an io_uring of ", entries,
                            " entries: before Linux 5.12 rings count against RLIMIT_MEMLOCK "
                            "(now ", rl.rlim_cur, " bytes; raise `ulimit -l`) or lower "
                            "runtime_options::ring_entries; otherwise memory is exhausted"));
    }
    case EMFILE:
    case ENFILE:
      return absl::ErrnoToStatus(
          err, "mpg: out of file descriptors creating an io_uring (raise RLIMIT_NOFILE)");
    case EINVAL:
      return absl::ErrnoToStatus(
          err, absl::StrCat("mpg: the kernel (", kernel,
                            ") rejected the io_uring parameters; mpg needs Linux >= 5.11"));
    default:
      return absl::ErrnoToStatus(err, "mpg: io_uring_setup failed");
  }
}

absl::Status remember(absl::Status s) {
  thread_mutex_lock g(g_reason_mutex);
  g_reason = std::string(s.message());
  return s;
}

struct required_op {
  int op;
  const char* name;
  const char* since;
};
constexpr required_op kRequiredOps[] = {
    {IORING_OP_NOP, "NOP", "5.1"},
    {IORING_OP_FSYNC, "FSYNC", "5.1"},
    {IORING_OP_POLL_ADD, "POLL_ADD", "5.1"},
    {IORING_OP_SENDMSG, "SENDMSG", "5.3"},
    {IORING_OP_RECVMSG, "RECVMSG", "5.3"},
    {IORING_OP_TIMEOUT, "TIMEOUT", "5.4"},
    {IORING_OP_ACCEPT, "ACCEPT", "5.5"},
    {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL", "5.5"},
    {IORING_OP_LINK_TIMEOUT, "LINK_TIMEOUT", "5.5"},
    {IORING_OP_CONNECT, "CONNECT", "5.5"},
    {IORING_OP_OPENAT, "OPENAT", "5.6"},
    {IORING_OP_STATX, "STATX", "5.6"},
    {IORING_OP_READ, "READ", "5.6"},
    {IORING_OP_WRITE, "WRITE", "5.6"},
    {IORING_OP_SEND, "SEND", "5.6"},
    {IORING_OP_RECV, "RECV", "5.6"},
};

}  // namespace

const char* reactor::unavailable_reason() noexcept {
  thread_mutex_lock g(g_reason_mutex);
  return g_reason.c_str();  // stable until the next create() failure
}

reactor::reactor() : ring_(std::make_unique<io_uring>()) {}

absl::StatusOr<std::unique_ptr<reactor>> reactor::create(unsigned entries,
                                                         const fault_config* faults,
                                                         unsigned recv_buffers,
                                                         unsigned recv_buffer_size) {
  if (entries == 0) entries = 256;
  if (entries > 4096) entries = 4096;  // the CQ (4x) stays well under the kernel's caps
  std::unique_ptr<reactor> r(new reactor());
  if (recv_buffers != 0) r->buf_count_ = recv_buffers;
  if (recv_buffer_size != 0) r->buf_size_ = recv_buffer_size;
  constexpr unsigned kFlagSets[] = {
      IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
          IORING_SETUP_SUBMIT_ALL,
      IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL,
      IORING_SETUP_CQSIZE,
  };
  int ret = -EINVAL;
  io_uring_params params{};
  for (unsigned flags : kFlagSets) {
    std::memset(&params, 0, sizeof params);
    params.flags = flags;
    params.cq_entries = entries * 4;
    ret = io_uring_queue_init_params(entries, r->ring_.get(), &params);
    if (ret != -EINVAL) break;
  }
  if (ret < 0) return remember(setup_error(-ret, entries));
  r->ring_fd_ = r->ring_->ring_fd;
  // From here ~reactor() tears the ring down.
  r->lock_.lock();
  r->link_ts_.reset(new io_timespec[*r->ring_->sq.kring_entries]);
  r->lock_.unlock();

  if (!(params.features & IORING_FEAT_NODROP) || !(params.features & IORING_FEAT_EXT_ARG)) {
    return remember(absl::UnimplementedError(
        absl::StrCat("mpg: this kernel (", kernel_release(),
                     ") lacks io_uring FEAT_NODROP (5.5) or FEAT_EXT_ARG (5.11); mpg needs "
                     "Linux >= 5.11")));
  }
  io_uring_probe* probe = io_uring_get_probe_ring(r->ring_.get());
  if (probe == nullptr) {
    return remember(absl::UnimplementedError("mpg: cannot probe io_uring opcodes (Linux < 5.6)"));
  }
  for (const required_op& op : kRequiredOps) {
    if (!io_uring_opcode_supported(probe, op.op)) {
      io_uring_free_probe(probe);
      return remember(absl::UnimplementedError(
          absl::StrCat("mpg: this kernel (", kernel_release(), ") lacks IORING_OP_", op.name,
                       " (Linux ", op.since, "); mpg needs Linux >= 5.11")));
    }
  }
  if (faults != nullptr && faults->on()) {
    // Relaxed: a counter that only keeps the rings' random streams apart.
    static std::atomic<std::uint64_t> streams{0};
    r->faults_ = std::make_unique<fault_injector>(
        *faults, streams.fetch_add(1, std::memory_order_relaxed),
        io_uring_opcode_supported(probe, IORING_OP_MSG_RING) != 0);
  }
  io_uring_free_probe(probe);

  r->event_fd_ = ::eventfd(0, EFD_CLOEXEC);
  if (r->event_fd_ < 0) {
    return remember(absl::ErrnoToStatus(errno, "mpg: eventfd for the reactor's wake-ups"));
  }
  r->lock_.lock();
  r->arm_wake_locked(0);
  r->flush_locked();
  r->lock_.unlock();
  return r;
}

reactor::~reactor() {
  if (ring_fd_ >= 0) {
    // Ops still in flight reference memory of frames that may be gone: cancel
    // them and drain their CQEs without touching the ops (quiet drain).
    lock_.lock();
    shutting_down_ = true;
    if (pending_.load(std::memory_order_relaxed) != 0) {
      io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
      if (sqe == nullptr) {
        io_uring_submit(ring_.get());
        sqe = io_uring_get_sqe(ring_.get());
      }
      if (sqe != nullptr) {
        io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, kIgnoreTag);
        add_pending_locked(1);
        io_uring_submit(ring_.get());
      }
      auto give_up = clock::now() + std::chrono::seconds(5);
      while (pending_.load(std::memory_order_relaxed) != 0 && clock::now() < give_up) {
        unsigned head, seen = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(ring_.get(), head, cqe) {
          ++seen;
          // A CQE's buffer here goes to nobody (the op is not dispatched):
          // it stays counted in the kernel (no taken()), so that release()
          // drops its reference with the reactor's.
          bool wake_read = cqe->user_data == kWakeTag || cqe->user_data == kWakeTag + 1;
          if (!wake_read && !(cqe->flags & IORING_CQE_F_MORE)) {
            add_pending_locked(-1);
          }
        }
        io_uring_cq_advance(ring_.get(), seen);
        if (seen == 0) {
          __kernel_timespec ts{0, 10'000'000};
          io_uring_cqe* c = nullptr;
          io_uring_wait_cqe_timeout(ring_.get(), &c, &ts);
        }
      }
    }
    lock_.unlock();
    io_uring_queue_exit(ring_.get());
    // The kernel no longer reads the buffer ring; held buffers keep it.
    if (buffer_ring* b = bufs_.load(std::memory_order_relaxed)) b->release();
  }
  if (event_fd_ >= 0) ::close(event_fd_);
}

}  // namespace mpg::detail
