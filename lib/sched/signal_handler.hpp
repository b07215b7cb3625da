// lib/sched/signal_handler.hpp: the one sigaction handler mpg installs, shared
// by its two users of signals: the task dump on a signal (dump_signal.cpp)
// and mpg::signal's channels (lib/io/signal.cpp). Both may want the same
// signal, in either order; each is called for every delivery while it holds
// the signal, and the disposition the signal had before mpg's first claim
// comes back only when the last holder releases it (signal_handler.cpp).
#pragma once

#include <atomic>

namespace mpg::detail {

enum class signal_client : unsigned {
  dump = 0,    // runtime_options.dump_signal
  notify = 1,  // mpg::signal::notify
};

// A client's sink: called in the handler, on whatever thread the kernel
// picked, with errno already saved. It must be async-signal-safe.
using signal_sink = void (*)(int sig) noexcept;

// check_claimable(): throws std::invalid_argument (naming `who`) for a
// signal no client may claim: out of 1..64 (or NSIG), SIGKILL and SIGSTOP
// (they cannot be caught), and the signals the kernel raises for the
// instruction a thread is executing (SIGSEGV, SIGBUS, SIGFPE, SIGILL,
// SIGTRAP, SIGSYS). The shared handler returns, and returning from a fault
// runs the faulting instruction again: the thread would loop for ever
// instead of dying with a core dump.
void check_claimable(int sig, const char* who);

// claim_signal(): client c holds sig from now on, and `sink` (the same for
// every claim of c) is called for each delivery. A signal that no client
// held gets the shared handler, its previous disposition saved. A claim of
// a signal c already holds changes nothing. Throws std::invalid_argument
// (naming `who`) for a signal check_claimable() refuses, or that sigaction
// refuses.
void claim_signal(signal_client c, int sig, signal_sink sink, const char* who);

// release_signal(): c no longer holds sig; once no client does, the saved
// disposition is restored, unless the program replaced mpg's handler after
// the claim (its handler stays). Each delivery reaches either c's sink or
// the restored disposition. A handler already running on another thread
// may still call c's sink for a moment: sinks must stay callable for ever.
void release_signal(signal_client c, int sig) noexcept;

// The clients' relay threads (mpg::signal's relay, dump_signal's dumper).
// relay_mask: the signals (bit sig - 1) a client's relay keeps unblocked,
// every other one blocked, so that a signal the client holds has a thread
// to go to even when the program blocks it in all of its own threads (Go's
// sigM does the same). publish(), under the client's lock, sets them and
// says whether they changed: the client then writes a byte to the relay's
// pipe. The relay calls apply() before each wait, with the set it applied
// last (kNoneApplied at first). Release/acquire: a publish() before the
// byte is seen by the apply() after the read that returns it (the pipe
// orders the two).
class relay_mask {
 public:
  static constexpr std::uint64_t kNoneApplied = ~std::uint64_t{0};  // never a set
  bool publish(std::uint64_t unblocked) noexcept {
    return want_.exchange(unblocked, std::memory_order_release) != unblocked;
  }
  void apply(std::uint64_t* applied) const noexcept;
  // A forked child's: no signal held (relaxed: the child has one thread).
  void reset() noexcept { want_.store(0, std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> want_{0};
};
// wait_readable(): waits in poll(2) until fd has bytes (EINTR retried). A
// handler that runs on the relay runs during the wait, also under
// ThreadSanitizer, which runs a handler at once only inside a call it knows
// may block and defers it otherwise to the thread's next intercepted call
// (after a read that the handler's own byte was to end).
void wait_readable(int fd) noexcept;

// fork_hooks: a client's part of the fork protocol (signal_handler.cpp,
// "Fork"). prepare() takes every lock of the client, so that fork() copies
// none held; parent() releases them; child() releases them too and leaves
// the client as if the process had never used it: no thread, no pipe, no
// registration (its threads are not copied into the child, nor are the
// runtimes its registrations name). child() runs before any other code of
// the child and may only make async-signal-safe calls (closing fds, plain
// and atomic stores) besides releasing the locks that prepare() took.
struct fork_hooks {
  void (*prepare)() noexcept;
  void (*parent)() noexcept;
  void (*child)() noexcept;
};

// set_fork_hooks(): from now on, every fork() runs c's hooks. A client
// calls it once, as the last step of creating its process-wide state
// (before its first claim), with hooks of static storage. The first call
// in the process registers the shared handler's pthread_atfork handlers;
// throws std::runtime_error if that fails (out of memory).
void set_fork_hooks(signal_client c, const fork_hooks* hooks);

// Test hook, null outside tests: called by release_signal() when the last
// holder releases a signal, after the disposition is restored and before
// the holder's bit is cleared (C2 of signal_handler.cpp). Relaxed: a test
// sets it before the moment it stages and clears it after; no data is
// published through it.
inline std::atomic<void (*)()> g_signal_release_hook{nullptr};

}  // namespace mpg::detail
