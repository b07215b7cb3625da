// lib/sched/reactor_hook.hpp: how the scheduler drives a P's io_uring reactor.
//
// The scheduler sees the reactor (lib/io/reactor.hpp) only through these calls,
// so the scheduler files never include liburing.h. Every call accepts
// nullptr (a P without a ring) and then does nothing.
#pragma once

#include <chrono>
#include <memory>
#include <optional>

#include "mpg/runtime.hpp"
#include "sched/processor.hpp"

namespace mpg::detail {

// make_reactor(): a ring for one P; throws std::runtime_error saying why and
// what to do when io_uring cannot be set up.
std::unique_ptr<reactor, reactor_deleter> make_reactor(const runtime_options& opts);
// reactor_busy(): operations in flight or SQEs unsubmitted (lock-free).
bool reactor_busy(reactor* r) noexcept;
// reactor_poll(): dispatch ready completions, and submit pending SQEs if
// `flush` (callers batch submissions across several Gs); never blocks.
void reactor_poll(reactor* r, bool flush) noexcept;
// reactor_try_poll(): for sysmon: submit what is pending, then reap unless
// another thread is reaping.
void reactor_try_poll(reactor* r) noexcept;
// reactor_wait(): sleep in the ring until a completion, a wake, or the deadline.
void reactor_wait(reactor* r, std::optional<std::chrono::steady_clock::time_point> deadline) noexcept;
// wake_reactor(): make a current or the next reactor_wait() return.
void wake_reactor(reactor* r) noexcept;
// reactor_shutdown(): cancel everything in flight and reap the final completions.
void reactor_shutdown(reactor* r) noexcept;

}  // namespace mpg::detail
