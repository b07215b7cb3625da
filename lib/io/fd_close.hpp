// lib/io/fd_close.hpp: the close protocol of the objects that own a socket
// (tcp_stream, listener, udp_socket) and whose close() wakes the tasks
// waiting on them.
//
// A task woken by close() may destroy the object as soon as it runs: it
// reads kCancelled from the op close() cancelled, returns, and its frame
// (or whatever owned the object) goes. That can happen on another M while
// close() still runs: the cancel of the first slot is submitted at once,
// and the op's CQE is reaped and its task resumed by the M of the ring it
// was on, while close() goes on to the next slot, the fd and the socket
// file. So close() must touch nothing of the object once a waiter can run,
// and the destructor must not free the object while a close() runs.
//
// The protocol, on the object's fd word (std::atomic<int>):
//   C1. claim_close(): the closer moves the fd from a number to kClosing
//       (a CAS, acq_rel as every change of the word but C3's: each passes
//       on what was done to the object before it); only the one that moves
//       it closes.
//       Every user of the fd reads a negative value as closed, so an op
//       that starts from here on fails as on a closed object.
//   C2. The closer cancels the ops in flight (the slots; that wakes their
//       tasks), closes the fd number and removes what else it owns (a Unix
//       socket file), touching the object only in this step.
//   C3. finish_close(): the closer stores -1 (release) as its last access to
//       the object. What it readies after that (a receiver's G it took out
//       under the queue's lock) it holds in locals.
//   C4. A close() that finds kClosing (a destructor run by a woken waiter,
//       or a second closer) waits until the word leaves kClosing (acquire,
//       pairing with C3's release: the closer's accesses happen before the
//       caller's next ones, its free included). The closer runs no task
//       code between C1 and C3 and takes only leaf locks (a slot's, a
//       reactor's, a receive queue's), so the wait is short: a spin, then
//       yields. No task waits in C4 on a close() run by its own thread:
//       close() does not suspend. A close() that finds -1 returns, and its
//       load is an acquire too: the closer may have finished (C3) before
//       the woken task ran, and its accesses must still happen before the
//       free that follows. Any other negative word (an adopted -1 or worse)
//       is closed as well.
//   C5. A move out of the object (take_fd(), the move constructor and
//       assignment) that finds kClosing waits as in C4, and then takes -1:
//       a woken task may move the object and destroy the source, and the
//       moved-to object is closed. Other members (a listener's socket path)
//       are moved after take_fd() returns.
//   C6. A plain system call on the fd (shutdown(2), getsockname(2), ...)
//       runs in with_open_fd(), under the lock of a slot that close()
//       closes in C2 before it closes the number. Under that lock it reads
//       the slot open and the word a number, or it refuses: the number
//       cannot be closed, and taken by a file opened meanwhile, while the
//       call uses it. The calls it guards do not block, so neither does the
//       closer, which waits for the lock.
#pragma once

#include <atomic>
#include <cstdint>

#include "mpg/detail/io/io_op.hpp"

namespace mpg::detail {

inline constexpr int kClosingFd = -2;

// claim_close(): C1, and C4 when another close() holds the claim. Returns
// the fd number to close, or -1 when the object is closed (by this call's
// wait or earlier).
int claim_close(std::atomic<int>& fd) noexcept;

// take_fd(): C5, for moves: the number (or -1 when closed), leaving -1.
int take_fd(std::atomic<int>& fd) noexcept;

// finish_close(): C3. The caller touches the object no more.
inline void finish_close(std::atomic<int>& fd) noexcept {
  fd.store(-1, std::memory_order_release);  // C3: pairs with C4's acquire
}

// Test hook: when set, with_open_fd() calls it once it has read the
// number, before the system call. Relaxed, as g_close_hook's.
using plain_call_hook_fn = void (*)();
inline std::atomic<plain_call_hook_fn> g_plain_call_hook{nullptr};
inline void run_plain_call_hook() noexcept {
  if (plain_call_hook_fn f = g_plain_call_hook.load(std::memory_order_relaxed)) [[unlikely]] f();
}

// with_open_fd(): C6. Returns call(fd) with `slot` locked, or closed()
// when the object is closed (or closing).
template <class Call, class Closed>
auto with_open_fd(const std::atomic<int>& fd, io_slot& slot, Call call, Closed closed) {
  slot.lock.lock();
  // Relaxed: under the lock, which close() takes (C2) after its claim (C1),
  // so a closer that closed the slot is seen by the first test, and one
  // that has not cannot close the number before the unlock below.
  const int n = fd.load(std::memory_order_relaxed);
  if (n < 0 || slot.closed.load(std::memory_order_relaxed)) {
    slot.lock.unlock();
    return closed();
  }
  run_plain_call_hook();
  auto result = call(n);
  slot.lock.unlock();
  return result;
}

// close_waits(): how many close() calls waited in C4 (tests).
std::uint64_t close_waits() noexcept;

// Test hook: when set, close() calls it with the object after it cancelled
// its first slot (C2), the point at which a woken waiter can first run.
// Relaxed: tests set it before they start the closer, whose start orders
// it; it only selects a path.
using close_hook_fn = void (*)(const void* object);
inline std::atomic<close_hook_fn> g_close_hook{nullptr};
inline void run_close_hook(const void* object) noexcept {
  if (close_hook_fn f = g_close_hook.load(std::memory_order_relaxed)) [[unlikely]] f(object);
}

}  // namespace mpg::detail
