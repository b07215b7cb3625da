// lib/sched/signal_handler.cpp: the shared sigaction handler (see
// signal_handler.hpp).
//
// Protocol.
//   C1. claim_signal(c, sig) stores c's sink, sets sig's bit in held[c]
//       (release), and, if no client held sig before, installs on_signal
//       for it, saving the disposition it replaces.
//   H1. on_signal(sig), on any thread: for each client, if its held mask
//       has sig's bit (acquire), call its sink. errno is saved around it.
//   C2. release_signal(c, sig): if no other client holds sig, it first
//       restores the saved disposition, unless the handler is no longer
//       on_signal (the program installed its own after the claim: that one
//       stays). Then it clears the bit.
// Claims and releases are serialised by a mutex that the handler never
// takes; the handler reads only lock-free atomics. A handler that started
// before a release may still call the released client's sink, which is why
// sinks stay callable for ever (both write to a pipe that is never closed).
// C2's order loses no delivery: until the disposition is restored the bit
// is still set, so on_signal passes the signal to c's sink; after, the old
// disposition gets it. (Clearing first would leave a moment in which
// on_signal finds no holder and drops the signal: a SIGTERM whose old
// disposition was SIG_DFL would not terminate.) sigaction has no
// compare-and-swap: a handler the program installs during C2 itself,
// between C2's check and its restore, is still replaced.
// Each client calls its own sink whatever the other one does: a signal
// that both hold reaches both (a dump and a channel send), and neither can
// take the other's handler away or put back a disposition under it.
//
// Fork. fork() copies only the calling thread: in the child, a lock that
// another thread held stays held for ever, and each client's state names
// the parent's threads, pipes and runtimes. One set of pthread_atfork
// handlers (registered by the first set_fork_hooks) runs, on the forking
// thread:
//   F1. prepare: each client's prepare, dump's then notify's, then this
//       file's mutex, then all signals blocked (the thread's mask saved).
//       A lock comes before those its holders may wait for, so that F1,
//       holding one, never waits for a thread that waits for it. A client
//       holds its own locks when it claims or releases: the clients' come
//       before this file's mutex. The dumper holds its registry lock while
//       it stops the world (inspect.cpp), which waits for every P of a
//       runtime, so for a task that waits in notify() for the relay's lock
//       (until the stop's timeout), while a holder of the relay's lock
//       waits for nothing: dump's come before notify's.
//       The leaf locks (the frame depot's, the post caches' orphan list's)
//       are taken after all of these, by handlers registered before this
//       file's (sched/leaf_locks.cpp, "Order").
//   F2. parent: this file's mutex and the clients' locks released (the
//       clients in the reverse order), the mask back.
//   F3. child: every signal a client held gets back the disposition it
//       had before mpg's claim, unless the program replaced mpg's handler
//       since (as C2 does for a last holder), and no client holds any
//       signal; the mutex released; each client's child hook (no thread,
//       no pipe, no registration: signal_handler.hpp); the mask back.
// Restoring in the child rather than keeping mpg's handler: a held signal
// stands for a registration (a channel, a runtime's dump signal), and the
// child has none, since the parent's runtimes and the tasks that receive
// from its channels do not exist there. A handler kept with no
// registration would drop the signal: a child that the parent's SIGTERM
// channel made unstoppable by SIGTERM. Restored, the child has what a
// process that never called notify() has; a notify() or a runtime's
// dump_signal in the child claims the signal afresh and starts its relay
// or dumper then. This is C2's rule for a signal nobody wants, in a
// process where nobody does.
// Signals stay blocked from F1 to the end of F3 so that one sent to the
// child meanwhile is neither caught by on_signal (whose sinks still write
// to the parent's pipes until the clients' child hooks run) nor lost: it
// stays pending and meets the restored disposition when the mask comes
// back (the child starts with no pending signal of its own).
// F2 and F3 act on the hooks F1 ran, which the thread records: a client
// whose hooks are set while a fork is under way is left out of it whole.
#include "sched/signal_handler.hpp"

#include <poll.h>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "sched/leaf_locks.hpp"
#include "sched/thread_mutex.hpp"

namespace mpg::detail {

namespace {

constexpr int kMaxSignal = 64;  // Linux: signals 1..64 (_NSIG - 1)
constexpr unsigned kClients = 2;
static_assert(NSIG <= kMaxSignal + 1);

constexpr std::uint64_t bit(int sig) { return std::uint64_t{1} << (sig - 1); }

// held[c]: the signals client c holds. Written under the mutex; read by the
// handler. The release in C1 publishes the client's sink (stored before it)
// to the handler's acquire load in H1; clearing a bit needs no order (a
// handler that still sees it calls a sink that stays callable).
std::atomic<std::uint64_t> held[kClients] = {};
// sinks[c]: client c's sink, stored before c's first bit is set (C1).
// Relaxed: ordered by held's release/acquire.
std::atomic<signal_sink> sinks[kClients] = {};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<signal_sink>::is_always_lock_free);

struct dispositions {
  thread_mutex mu;
  // The disposition each held signal had before mpg's handler replaced it.
  struct sigaction saved[kMaxSignal + 1] ABSL_GUARDED_BY(mu);
};

dispositions& the_dispositions() {
  static dispositions* d = new dispositions{};  // never destroyed: handlers may outlive statics
  return *d;
}

// client_hooks[c]: client c's fork hooks, set once (set_fork_hooks). The
// release store and F1's acquire load publish the hooks' struct; what the
// hooks touch is the client's own, ordered by its own initialisation.
std::atomic<const fork_hooks*> client_hooks[kClients] = {};
// F1's record for F2 and F3, on the forking thread: the hooks it ran and
// the mask it replaced. Per thread, since all three run on the thread that
// forks, whichever it is, and two threads may fork at once.
constinit thread_local const fork_hooks* tls_prepared[kClients] = {};
constinit thread_local sigset_t tls_fork_mask{};

extern "C" void on_signal(int sig) {
  if (sig < 1 || sig > kMaxSignal) return;
  const int saved = errno;
  for (unsigned c = 0; c < kClients; ++c) {
    if ((held[c].load(std::memory_order_acquire) & bit(sig)) != 0)
      sinks[c].load(std::memory_order_relaxed)(sig);
  }
  errno = saved;
}

std::uint64_t held_by_anyone() noexcept {
  std::uint64_t all = 0;
  for (const auto& h : held) all |= h.load(std::memory_order_relaxed);  // under the mutex
  return all;
}

std::uint64_t held_by_others(unsigned ci) noexcept {
  std::uint64_t all = 0;
  for (unsigned c = 0; c < kClients; ++c) {
    if (c != ci) all |= held[c].load(std::memory_order_relaxed);  // under the mutex
  }
  return all;
}

// restore_locked(): C2's restore (and F3's): sig's saved disposition back,
// unless the program installed a handler of its own after the claim.
// sigaction is async-signal-safe, as F3 needs.
void restore_locked(dispositions& d, int sig) ABSL_EXCLUSIVE_LOCKS_REQUIRED(d.mu) {
  struct sigaction cur;
  if (::sigaction(sig, nullptr, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) == 0 &&
      cur.sa_handler == on_signal)
    ::sigaction(sig, &d.saved[sig], nullptr);
}

// The fork handlers (F1-F3). The mutex is held from F1 to F2 or F3, across
// fork() and between functions, which the lock analysis cannot follow.
void fork_prepare() noexcept ABSL_NO_THREAD_SAFETY_ANALYSIS {
  for (unsigned c = 0; c < kClients; ++c) {
    const fork_hooks* h = client_hooks[c].load(std::memory_order_acquire);
    tls_prepared[c] = h;
    if (h != nullptr) h->prepare();
  }
  the_dispositions().mu.lock();
  sigset_t all;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &tls_fork_mask);
}

void fork_parent() noexcept ABSL_NO_THREAD_SAFETY_ANALYSIS {
  the_dispositions().mu.unlock();
  for (unsigned c = kClients; c-- > 0;) {
    if (const fork_hooks* h = std::exchange(tls_prepared[c], nullptr)) h->parent();
  }
  ::pthread_sigmask(SIG_SETMASK, &tls_fork_mask, nullptr);
}

void fork_child() noexcept ABSL_NO_THREAD_SAFETY_ANALYSIS {
  dispositions& d = the_dispositions();
  const std::uint64_t all = held_by_anyone();
  for (int sig = 1; sig <= kMaxSignal; ++sig) {
    if ((all & bit(sig)) != 0) restore_locked(d, sig);
  }
  // Relaxed: the child has one thread, this one, and every signal is
  // blocked in it, so no handler reads held until the mask comes back,
  // and that system call comes after these stores in this thread.
  for (auto& h : held) h.store(0, std::memory_order_relaxed);
  d.mu.unlock();
  for (unsigned c = kClients; c-- > 0;) {
    if (const fork_hooks* h = std::exchange(tls_prepared[c], nullptr)) h->child();
  }
  ::pthread_sigmask(SIG_SETMASK, &tls_fork_mask, nullptr);
}

}  // namespace

void check_claimable(int sig, const char* who) {
  if (sig < 1 || sig > kMaxSignal || sig >= NSIG || sig == SIGKILL || sig == SIGSTOP)
    throw std::invalid_argument(std::string(who) + ": signal " + std::to_string(sig) +
                                " cannot be caught");
  switch (sig) {
    case SIGSEGV:
    case SIGBUS:
    case SIGFPE:
    case SIGILL:
    case SIGTRAP:
    case SIGSYS:
      throw std::invalid_argument(std::string(who) + ": signal " + std::to_string(sig) + " (" +
                                  ::strsignal(sig) +
                                  ") reports a fault of the running instruction: a handler "
                                  "that returns would run it again for ever");
    default:
      return;
  }
}

void claim_signal(signal_client c, int sig, signal_sink sink, const char* who) {
  check_claimable(sig, who);
  const auto ci = static_cast<unsigned>(c);
  dispositions& d = the_dispositions();
  thread_mutex_lock l(d.mu);
  if ((held[ci].load(std::memory_order_relaxed) & bit(sig)) != 0) return;
  const bool first = (held_by_anyone() & bit(sig)) == 0;
  sinks[ci].store(sink, std::memory_order_relaxed);
  // release: see held's comment. Set before the handler is installed, so
  // that the first delivery to it finds the client.
  held[ci].fetch_or(bit(sig), std::memory_order_release);
  if (!first) return;
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  // SA_RESTART: system calls the signal interrupts resume where the kernel
  // can; those it cannot (io_uring_enter, futex waits with a timeout)
  // return EINTR, which mpg's own waits retry. SA_ONSTACK: on the
  // thread's alternate signal stack when it has set one up.
  sa.sa_flags = SA_RESTART | SA_ONSTACK;
  if (::sigaction(sig, &sa, &d.saved[sig]) != 0) {
    const int err = errno;
    held[ci].fetch_and(~bit(sig), std::memory_order_relaxed);
    throw std::invalid_argument(std::string(who) + ": sigaction(" + std::to_string(sig) +
                                "): " + std::strerror(err));
  }
}

void release_signal(signal_client c, int sig) noexcept {
  if (sig < 1 || sig > kMaxSignal) return;
  const auto ci = static_cast<unsigned>(c);
  dispositions& d = the_dispositions();
  thread_mutex_lock l(d.mu);
  if ((held[ci].load(std::memory_order_relaxed) & bit(sig)) == 0) return;
  if ((held_by_others(ci) & bit(sig)) == 0) {  // c is the last holder
    restore_locked(d, sig);
    if (auto hook = g_signal_release_hook.load(std::memory_order_relaxed)) hook();
  }
  // Relaxed: see held's comment.
  held[ci].fetch_and(~bit(sig), std::memory_order_relaxed);
}

void set_fork_hooks(signal_client c, const fork_hooks* hooks) {
  register_leaf_fork_handlers();  // first: their prepare runs after F1
  (void)the_dispositions();  // exists before F1 locks it
  static const int registered = ::pthread_atfork(fork_prepare, fork_parent, fork_child);
  if (registered != 0)
    throw std::runtime_error(std::string("mpg: pthread_atfork: ") + std::strerror(registered));
  client_hooks[static_cast<unsigned>(c)].store(hooks, std::memory_order_release);
}

void relay_mask::apply(std::uint64_t* applied) const noexcept {
  const std::uint64_t unblocked = want_.load(std::memory_order_acquire);
  if (unblocked == *applied) return;
  sigset_t set;
  sigfillset(&set);
  for (int sig = 1; sig <= 64; ++sig)
    if ((unblocked & (std::uint64_t{1} << (sig - 1))) != 0) sigdelset(&set, sig);
  ::pthread_sigmask(SIG_SETMASK, &set, nullptr);
  *applied = unblocked;
}

void wait_readable(int fd) noexcept {
  pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
  while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
  }
}

}  // namespace mpg::detail
