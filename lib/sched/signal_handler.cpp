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
#include "sched/signal_handler.hpp"

#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

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
    struct sigaction cur;
    if (::sigaction(sig, nullptr, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) == 0 &&
        cur.sa_handler == on_signal)
      ::sigaction(sig, &d.saved[sig], nullptr);
    if (auto hook = g_signal_release_hook.load(std::memory_order_relaxed)) hook();
  }
  // Relaxed: see held's comment.
  held[ci].fetch_and(~bit(sig), std::memory_order_relaxed);
}

}  // namespace mpg::detail
