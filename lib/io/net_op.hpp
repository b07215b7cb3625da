// lib/io/net_op.hpp: one logical network operation's bounds and its
// issues on a slot, shared by the TCP (net.cpp, listen_dial.cpp) and UDP
// (udp.cpp) sockets.
//
// An operation loops: it issues an io_uring op in the object's slot, and
// issues it again after -EINTR, or after -ETIME while the deadline it
// follows has not passed (the deadline moved later meanwhile). What ends it
// besides its own completion is op_bounds: a fixed deadline (an argument),
// or the object's deadline for that direction, followed live (any task may
// move it: io_deadline in mpg/detail/io/io_op.hpp), and a context binding
// (mpg/detail/io/io_context.hpp) held for the whole loop, so that a cancel
// landing between two issues is seen by the next one.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

#include "io/reactor.hpp"
#include "mpg/detail/io/io_context.hpp"
#include "mpg/detail/io/io_op.hpp"
#include "mpg/detail/sched/clock.hpp"
#include "mpg/task.hpp"

namespace mpg::net::op {

using clock = std::chrono::steady_clock;
using detail::io_awaiter;
using detail::io_context_binding;
using detail::io_opcode;
using detail::io_request;
using detail::prep_request;

// op_bounds: what ends one logical operation besides its own completion: a
// fixed deadline, or the deadline of the object's direction (followed live),
// and a context binding.
struct op_bounds {
  std::optional<clock::time_point> deadline{};
  const detail::io_deadline* live = nullptr;  // used when deadline is empty
  const io_context_binding* bind = nullptr;

  // expired(): the deadline the operation follows has passed by now (an op
  // that read -ETIME was armed with an earlier one if not: issue it again).
  bool expired() const noexcept {
    if (bind != nullptr && bind->cancelled()) return true;  // -ETIME was the context's
    if (deadline) return clock::now() >= *deadline;
    if (live == nullptr) return true;
    const std::int64_t ns = live->ns();
    return ns != detail::io_deadline::kNone && detail::mono_now_ns() >= ns;
  }
};

// One issue of an operation in `slot`, bounded by `b`.
inline io_awaiter make_op(const io_request* rq, detail::io_slot* slot, const char* reason,
                   const op_bounds& b) {
  io_awaiter a = b.deadline ? io_awaiter(prep_request, rq, slot, reason, *b.deadline)
                            : io_awaiter(prep_request, rq, slot, reason);
  if (!b.deadline && b.live != nullptr) a.op.live_deadline = b.live->live();
  if (b.bind != nullptr) b.bind->attach(a.op);
  return a;
}

// The two coroutines below are defined once, in net_op.cpp: as inline
// functions of this header, used by several files, g++'s link-time
// optimisation found their frame types different from file to file
// (-Wodr).

// await_op(): issue it, and read the result as the operation reports it
// (an op ended by its context reads the context's code: io_context.hpp).
task<int> await_op(const io_request* rq, detail::io_slot* slot, const char* reason,
                   const op_bounds& b);

// wait_ready(): for a socket someone made non-blocking: wait for `events`.
task<int> wait_ready(int fd, unsigned events, detail::io_slot* slot, const op_bounds& b);

// deadline_ns(): a deadline as io_deadline stores it.
inline std::int64_t deadline_ns(std::optional<clock::time_point> t) noexcept {
  return t ? detail::to_ns(*t) : detail::io_deadline::kNone;
}

}  // namespace mpg::net::op
