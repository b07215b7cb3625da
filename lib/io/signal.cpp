// lib/io/signal.cpp: mpg::signal (mpg/signal.hpp): a sink of the shared handler, a
// self-pipe and a relay thread that try_sends to the registered channels.
//
// Protocol.
//   H1. The handler (any thread, any time; lib/sched/signal_handler.cpp,
//       shared with the task dump on a signal) calls notify_sink, which
//       sets the signal's bit in pending_bits with fetch_or, then writes
//       one byte to the pipe's non-blocking write end. Both are
//       async-signal-safe: the atomics are lock-free (static_assert below),
//       write(2) is on POSIX's list, and the handler saves and restores
//       errno. A full pipe drops the byte: the relay then already has an
//       unread byte, hence a pass still to make.
//   R1. The relay waits on the pipe (poll(2), then read(2)). Its thread
//       blocks every signal but those some channel wants (relay_unblocked,
//       applied before each wait), so a wanted signal has a thread to go to
//       even when the program blocks it in all of its own threads (Go's
//       sigM); a handler run there only makes the wait return EINTR.
//   R2. After every read, under the registry lock, it takes each word of
//       pending_bits with exchange(0) and offers each signal found to every
//       channel that wants it (try_send, never waits), in registration order.
// No delivery is lost: a bit set by H1 is followed by a byte; the read that
// returns that byte (or a later one) is followed by R2's exchange, which
// sees the bit (or an earlier exchange already took it). The pipe is the
// synchronisation: the handler's write(2) and the relay's read(2) of that
// byte are ordered by the pipe's own lock in the kernel.
//
// Registry (under registry::mu): the channels in registration order, each
// with its set of signals, and per signal how many channels want it. The
// first channel that asks for a signal claims it from the shared handler
// (signal_handler.hpp), and the last one to stop releases it; the handler
// puts the signal's old disposition back once no runtime's dump_signal
// holds it either. R2 runs under the same lock, so once stop() returns the
// channel is offered nothing more. stop() runs R2 itself, under the lock,
// after the releases that put old dispositions back: a signal the handler
// caught before its release reaches the channels that wanted it then, the
// stopping one included (the old disposition never sees it). A handler
// still running on another thread as the release returns may set its bit
// after that pass; the relay offers it to the channels that still want it.
//
// Guards. notify() from a task keeps that task's runtime from reporting a
// deadlock until stop() (signal.hpp): a registration holds one
// external_work guard per runtime whose task called notify() for it.
//
// Runtimes. R2's try_send takes a waiting task off the channel under the
// channel's lock and readies it after unlocking, still under the registry
// lock. ~runtime takes and drops that lock after destroying its tasks
// (wait_for_signal_deliveries, signal_relay.hpp), so a delivery that found
// one of its tasks has readied it before the scheduler goes.
//
// Fork (the shared handler's protocol, signal_handler.cpp, F1-F3). The
// registry lock is taken before fork() and released after it in both
// processes, so the child never starts with it held. In the child, where
// the relay thread does not exist and the registered channels belong to
// the parent's runtimes, the registry is left as if notify() had never
// been called: no relay (the next notify() starts one, on a pipe of the
// child's own; the child closes its copies of the parent's pipe, and its
// sink writes nowhere until then), no pending bits, no signal wanted (F3
// restored their dispositions). The parent's registrations stay in the
// vector, never destroyed and never matched (regs[0, inherited)):
// destroying one would run external_work's destructor and drop channel
// references against runtimes whose threads, and whose lock holders, are
// gone.
//
// Rejected: signalfd (it needs the signal blocked in every thread, those the
// program made before and after, so it depends on when threads were created
// and what they did with their masks); running the channel sends in the
// handler (a channel's lock is a spinlock the interrupted thread may hold:
// self-deadlock, and ready() is not async-signal-safe).
#include "mpg/signal.hpp"

#include <absl/base/thread_annotations.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "io/signal_relay.hpp"
#include "mpg/runtime_handle.hpp"
#include "sched/signal_handler.hpp"
#include "sched/thread_mutex.hpp"

namespace mpg::signal {

namespace {

constexpr int kMaxSignal = 64;  // signals 1..64 (Linux: _NSIG - 1)
static_assert(NSIG <= kMaxSignal + 1);

// Bit (sig - 1) of the mask: signal sig.
using sig_mask = std::uint64_t;
constexpr sig_mask bit(int sig) { return sig_mask{1} << (sig - 1); }

// Written by the handler (H1), taken by the relay (R2). Relaxed fetch_or and
// acq_rel exchange: the bits carry no other data, so all that matters is that
// R2 sees the bit, which the pipe's ordering gives (see the file comment);
// the RMWs never lose a bit to each other.
std::atomic<sig_mask> pending_bits{0};
// The pipe's write end for the sink; set when the relay starts, before any
// signal is claimed, and never changed afterwards but in a forked child,
// which sets it back to -1 (relaxed: the claim is the publication point,
// and the store happens-before it in the claiming thread; in the child no
// handler runs while the fork hook stores, see fork_child()).
std::atomic<int> wake_fd{-1};
static_assert(std::atomic<sig_mask>::is_always_lock_free);
static_assert(std::atomic<int>::is_always_lock_free);
// The signals some channel wants, which the relay keeps unblocked
// (signal_handler.hpp); published under the registry lock.
mpg::detail::relay_mask relay_unblocked;

void notify_sink(int sig) noexcept {
  if (sig >= 1 && sig <= kMaxSignal) pending_bits.fetch_or(bit(sig), std::memory_order_relaxed);
  const int fd = wake_fd.load(std::memory_order_relaxed);
  if (fd >= 0) {
    const char b = 0;
    [[maybe_unused]] ssize_t n = ::write(fd, &b, 1);
  }
}

// A guard of one runtime whose task called notify() for the channel.
struct runtime_guard {
  runtime_handle rt;
  std::unique_ptr<external_work> guard;
};

struct registration {
  chan<int> ch;
  sig_mask signals = 0;
  std::vector<runtime_guard> guards;  // one per runtime that notified in a task
};

struct registry {
  mpg::detail::thread_mutex mu;
  // regs[0, inherited): a parent process's registrations, in a forked
  // child (see Fork); regs[inherited, end): this process's.
  std::vector<registration> regs ABSL_GUARDED_BY(mu);
  std::size_t inherited ABSL_GUARDED_BY(mu) = 0;
  std::array<int, kMaxSignal + 1> wanted ABSL_GUARDED_BY(mu){};
  bool relay_started ABSL_GUARDED_BY(mu) = false;
  int read_fd ABSL_GUARDED_BY(mu) = -1;   // the relay's pipe, once started
  int write_fd ABSL_GUARDED_BY(mu) = -1;
};

registry& reg();

// This process's registrations.
std::span<registration> own_regs(registry& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r.mu) {
  return std::span<registration>(r.regs).subspan(r.inherited);
}

// The fork hooks (signal_handler.hpp). The registry lock is held from
// fork_prepare() to fork_parent() or fork_child(), across fork(), which the
// lock analysis cannot follow.
void fork_prepare() noexcept ABSL_NO_THREAD_SAFETY_ANALYSIS {
  if (auto hook = mpg::detail::g_signal_fork_hook.load(std::memory_order_relaxed)) hook();
  reg().mu.lock();
}

void fork_parent() noexcept ABSL_NO_THREAD_SAFETY_ANALYSIS { reg().mu.unlock(); }

void fork_child() noexcept ABSL_NO_THREAD_SAFETY_ANALYSIS {
  registry& r = reg();
  // Relaxed: the child has one thread, this one, and all signals are
  // blocked in it until the fork handlers are done (F3), so no handler
  // reads these meanwhile.
  wake_fd.store(-1, std::memory_order_relaxed);
  pending_bits.store(0, std::memory_order_relaxed);
  relay_unblocked.reset();
  if (r.relay_started) {
    ::close(r.read_fd);
    ::close(r.write_fd);
  }
  r.read_fd = r.write_fd = -1;
  r.relay_started = false;
  r.wanted.fill(0);
  r.inherited = r.regs.size();
  r.mu.unlock();
}

constexpr mpg::detail::fork_hooks kForkHooks{fork_prepare, fork_parent, fork_child};

// The registry lives for the whole process (the relay thread uses it until
// exit), so it is never destroyed. Its fork hooks are set last, once it
// exists (signal_handler.hpp).
registry& reg() {
  static registry* const r = [] {
    auto* n = new registry;
    mpg::detail::set_fork_hooks(mpg::detail::signal_client::notify, &kForkHooks);
    return n;
  }();
  return *r;
}

// R2: offer each pending signal to the channels that want it.
void deliver_locked(registry& r, sig_mask pending) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r.mu) {
  for (int sig = 1; sig <= kMaxSignal; ++sig) {
    if ((pending & bit(sig)) == 0) continue;
    for (registration& g : own_regs(r)) {
      if ((g.signals & bit(sig)) == 0) continue;
      int v = sig;
      // Full or closed: the delivery is dropped for this channel.
      g.ch.state_for_internal_use()->try_send_nothrow(v);
    }
  }
}

// deliver_pending(): R2. The bits are taken under the registry lock, as
// stop() takes them: a signal is offered by whichever takes its bit, to the
// channels registered then (taken outside the lock, the bits of a stopping
// channel's signal could wait for the lock while stop() found none and
// removed the channel).
void deliver_pending() {
  registry& r = reg();
  mpg::detail::thread_mutex_lock lk(r.mu);
  const sig_mask pending = pending_bits.exchange(0, std::memory_order_acq_rel);
  if (pending == 0) return;
  if (auto hook = mpg::detail::g_signal_deliver_hook.load(std::memory_order_relaxed)) hook();
  deliver_locked(r, pending);
}

void relay_loop(int read_fd) {
  sig_mask unblocked = mpg::detail::relay_mask::kNoneApplied;
  for (;;) {
    char buf[64];
    relay_unblocked.apply(&unblocked);
    mpg::detail::wait_readable(read_fd);
    ssize_t n = ::read(read_fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // cannot happen: the write end is never closed
    deliver_pending();
  }
}

// Creates the pipe and the relay thread, once. All signals are blocked in
// the relay when it starts (a thread inherits its creator's mask); R1 then
// unblocks the wanted ones.
void start_relay_locked(registry& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r.mu) {
  if (r.relay_started) return;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    throw std::runtime_error("mpg::signal: pipe2 failed: " + std::to_string(errno));
  }
  ::fcntl(fds[1], F_SETFL, ::fcntl(fds[1], F_GETFL) | O_NONBLOCK);
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  try {
    std::thread(relay_loop, fds[0]).detach();
  } catch (...) {  // no thread (EAGAIN): the caller's mask back, nothing kept
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    ::close(fds[0]);
    ::close(fds[1]);
    throw;
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  wake_fd.store(fds[1], std::memory_order_relaxed);
  r.read_fd = fds[0];
  r.write_fd = fds[1];
  r.relay_started = true;
}

sig_mask mask_of(std::initializer_list<int> signals) {
  if (signals.size() == 0) throw std::invalid_argument("mpg::signal::notify: no signals");
  sig_mask m = 0;
  for (int sig : signals) {
    mpg::detail::check_claimable(sig, "mpg::signal::notify");
    m |= bit(sig);
  }
  return m;
}

// Tells the relay which signals to keep unblocked (relay_unblocked).
void publish_wanted_locked(registry& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r.mu) {
  sig_mask m = 0;
  for (int sig = 1; sig <= kMaxSignal; ++sig)
    if (r.wanted[sig] > 0) m |= bit(sig);
  if (!relay_unblocked.publish(m) || r.write_fd < 0) return;
  const char b = 0;
  [[maybe_unused]] ssize_t n = ::write(r.write_fd, &b, 1);
}

void unwant_locked(registry& r, sig_mask removed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r.mu) {
  for (int sig = 1; sig <= kMaxSignal; ++sig) {
    if ((removed & bit(sig)) == 0) continue;
    if (--r.wanted[sig] == 0)
      mpg::detail::release_signal(mpg::detail::signal_client::notify, sig);
  }
}

// Counts the signals of `added` as wanted by one more channel, claiming
// those nobody wanted yet. A refused claim (mask_of's checks leave that
// only to sigaction) undoes the signals counted before it and rethrows.
void want_locked(registry& r, sig_mask added) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r.mu) {
  sig_mask done = 0;
  try {
    for (int sig = 1; sig <= kMaxSignal; ++sig) {
      if ((added & bit(sig)) == 0) continue;
      if (r.wanted[sig] == 0) {
        mpg::detail::claim_signal(mpg::detail::signal_client::notify, sig, notify_sink,
                                  "mpg::signal::notify");
      }
      ++r.wanted[sig];
      done |= bit(sig);
    }
  } catch (...) {
    unwant_locked(r, done);
    throw;
  }
}

}  // namespace

void notify(const chan<int>& ch, std::initializer_list<int> signals) {
  // A moved-from handle is a closed channel that every delivery would miss.
  if (ch.state_for_internal_use()->moved_from_)
    throw runtime_misuse_error("mpg::signal::notify: a moved-from chan");
  const sig_mask m = mask_of(signals);
  runtime_guard guard;
  if (detail::in_mpg_task()) {
    guard.rt = runtime_handle::current();
    guard.guard = std::make_unique<external_work>(guard.rt);
  }
  registry& r = reg();
  mpg::detail::thread_mutex_lock lk(r.mu);
  start_relay_locked(r);
  for (registration& g : own_regs(r)) {
    if (g.ch == ch) {
      want_locked(r, m & ~g.signals);
      g.signals |= m;
      // Each runtime whose task notified keeps its own guard.
      bool have = !guard.guard;
      for (const runtime_guard& k : g.guards) have = have || k.rt == guard.rt;
      if (!have) g.guards.push_back(std::move(guard));
      publish_wanted_locked(r);
      return;  // `guard`, if not taken, is released after the lock
    }
  }
  want_locked(r, m);
  std::vector<runtime_guard> guards;
  if (guard.guard) guards.push_back(std::move(guard));
  r.regs.push_back(registration{ch, m, std::move(guards)});
  publish_wanted_locked(r);
}

chan<int> notify(std::initializer_list<int> signals, std::size_t capacity) {
  chan<int> ch(capacity < 1 ? 1 : capacity);
  notify(ch, signals);
  return ch;
}

void stop(const chan<int>& ch) {
  std::optional<registration> gone;
  {
    registry& r = reg();
    mpg::detail::thread_mutex_lock lk(r.mu);
    const auto first = r.regs.begin() + static_cast<std::ptrdiff_t>(r.inherited);
    for (auto it = first; it != r.regs.end(); ++it) {
      if (it->ch == ch) {
        unwant_locked(r, it->signals);
        // A signal caught before its disposition was restored, still
        // pending for the relay, goes to the channels now, this one
        // included: once restored, the old disposition does not see it.
        if (const sig_mask p = pending_bits.exchange(0, std::memory_order_acq_rel); p != 0)
          deliver_locked(r, p);
        publish_wanted_locked(r);
        gone.emplace(std::move(*it));
        r.regs.erase(it);
        break;
      }
    }
  }
  // `gone` (its channel reference and guard) is released outside the lock.
}

}  // namespace mpg::signal

namespace mpg::detail {

void wait_for_signal_deliveries() noexcept {
  if (auto hook = g_signal_wait_hook.load(std::memory_order_relaxed)) hook();
  // A delivery runs under the registry lock from start to end (R2).
  thread_mutex_lock lk(mpg::signal::reg().mu);
}

}  // namespace mpg::detail
