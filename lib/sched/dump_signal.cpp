// lib/sched/dump_signal.cpp: dump every task of a runtime on a signal
// (runtime_options.dump_signal), like the JVM's SIGQUIT thread dump.
//
// Protocol. A signal handler may only do async-signal-safe work, and a dump
// takes locks and allocates; so the work is split:
//   1. The handler (signal_handler.cpp, shared with mpg::signal) calls
//      dump_sink, which writes one byte, the signal number, to a
//      process-wide self-pipe (write(2) is async-signal-safe; the write end
//      is non-blocking, so a full pipe drops the byte: dumps are already
//      pending). It reads the pipe's fd from an always-lock-free atomic.
//   2. A process-wide dumper thread waits on the pipe (poll(2), then
//      read(2)) and takes every byte there. It keeps every signal blocked
//      but the registered ones (dumper_signals, applied before each wait; a
//      registration writes byte 0 to make the dumper apply it), so that a
//      registered signal has a thread to go to even when the program blocks
//      it in all of its own threads, the Ms included (Go's sigM does the
//      same for os/signal); a handler run there only makes a wait or a
//      write return EINTR. For each signal number among the bytes (once: a burst
//      of signals during a dump makes one dump more, not one per signal) it
//      takes the registry lock, builds the text of the dump of every
//      runtime registered for that signal, releases the lock and writes the
//      text to stderr; the program goes on. Writing outside the lock matters:
//      stderr may block (a pipe nobody reads), and a ~runtime unregistering
//      meanwhile must not wait for it.
//   3. The last unregistration stops the dumper: it adds one to
//      registry.stops and writes byte 0 (never a signal number) to wake it.
//      A dumper that wakes (and has dumped, for the signal bytes it read)
//      and finds stops above 0 takes one and exits. The dumper is detached, not
//      joined: it may be blocked writing to stderr, and the last ~runtime
//      must not wait for that either. A registration that comes before it
//      exits starts another dumper; both then read the pipe, and the first
//      to wake exits. One dumper is started each time the registry stops
//      being empty and one stop is added each time it becomes empty again,
//      so while runtimes are registered at least one dumper runs, and once
//      none are, every dumper exits after its current write. A full pipe
//      drops byte 0, but then a dumper has bytes to read and takes the stop
//      after the first of them.
// The registry (signal -> runtimes) is process-wide so that several
// runtimes may share one signal. The first registration of a signal claims
// it from the shared handler (signal_handler.hpp); the last one releases
// it, and the handler puts back the signal's old disposition once
// mpg::signal does not hold it either.
//
// Two locks. registry.mu guards the map and is what the dumper holds while
// it reads the runtimes: unregister takes it to remove a runtime, so once
// unregister returns no dump of that runtime is reading it or will start
// (~runtime calls it first, before anything is torn down); a text already
// built may still be being written. lifecycle_mu serialises
// register/unregister as a whole, including starting and stopping the
// dumper; the dumper never takes it.
// The pipe is created once per process and never closed (a forked child
// closes only its copies of the parent's, see Fork): a handler still
// running on another thread after the signal was released writes into a
// live pipe, never into a reused fd. A byte left in
// it when the dumper exits is read by the next dumper, which at worst
// dumps once more.
//
// Fork (the shared handler's protocol, signal_handler.cpp, F1-F3). Both
// locks are taken before fork(), lifecycle_mu first as everywhere, and
// released after it in both processes, so the child never starts with
// either held. In the child no dumper runs and the registered runtimes are
// the parent's, whose threads are gone; so the child forgets them all: no
// dumper, no stop pending, no registration (F3 restored the signals'
// dispositions) and no pipe. Its copies of the parent's pipe are closed: a
// byte the child wrote there would wake the parent's dumper, which would
// dump the parent's runtimes for the child's signal. Its sink writes
// nowhere until its next registration makes a pipe of its own. The map
// itself is emptied by the child's first registration or unregistration
// (forget_inherited_locked), not by the fork hook, which makes no call
// that may free memory.
#include "sched/dump_signal.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "sched/scheduler.hpp"
#include "sched/signal_handler.hpp"
#include "sched/thread_mutex.hpp"

namespace mpg::detail {

namespace {

// The pipe's write end for the sink; -1 until the first registration, and
// again in a forked child until its first. Relaxed: it is set once, before
// the signal is first claimed (the claim's sigaction, or its release store
// of the held mask, orders the store before any call of the sink); the
// child's store runs while no handler can (fork_child()).
std::atomic<int> wake_fd{-1};
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs a lock-free fd");
// The registered signals, which the dumper keeps unblocked
// (signal_handler.hpp); published under registry::mu.
relay_mask dumper_signals;

void dump_sink(int sig) noexcept {
  const int fd = wake_fd.load(std::memory_order_relaxed);
  if (fd >= 0) {
    const unsigned char b = static_cast<unsigned char>(sig);
    [[maybe_unused]] ssize_t r = ::write(fd, &b, 1);
  }
}

struct registry {
  std::mutex lifecycle_mu;
  thread_mutex mu;
  std::map<int, std::vector<scheduler*>> by_signal ABSL_GUARDED_BY(mu);
  // A forked child's: by_signal holds the parent's runtimes (see Fork).
  bool inherited ABSL_GUARDED_BY(mu) = false;
  int read_fd = -1;   // under lifecycle_mu (the dumper reads it after start)
  int write_fd = -1;  // under lifecycle_mu
  // Under lifecycle_mu: a dumper runs that step 3 has not told to exit.
  bool dumper_running = false;
  // Step 3: dumpers asked to exit and not yet gone. Relaxed: it only
  // decides which dumper exits; what a dumper reads under mu is ordered by
  // mu, and the pipe wakes it.
  std::atomic<int> stops{0};
};

registry& the_registry();

// The fork hooks (signal_handler.hpp). Both locks are held from
// fork_prepare() to fork_parent() or fork_child(), across fork(), which the
// lock analysis cannot follow.
void fork_prepare() noexcept ABSL_NO_THREAD_SAFETY_ANALYSIS {
  registry& r = the_registry();
  r.lifecycle_mu.lock();
  r.mu.lock();
}

void fork_parent() noexcept ABSL_NO_THREAD_SAFETY_ANALYSIS {
  registry& r = the_registry();
  r.mu.unlock();
  r.lifecycle_mu.unlock();
}

void fork_child() noexcept ABSL_NO_THREAD_SAFETY_ANALYSIS {
  registry& r = the_registry();
  // Relaxed: the child has one thread, this one, and all signals are
  // blocked in it until the fork handlers are done (F3), so no handler
  // and no dumper reads these meanwhile.
  wake_fd.store(-1, std::memory_order_relaxed);
  dumper_signals.reset();
  r.stops.store(0, std::memory_order_relaxed);
  if (r.read_fd >= 0) {
    ::close(r.read_fd);
    ::close(r.write_fd);
  }
  r.read_fd = r.write_fd = -1;
  r.dumper_running = false;
  r.inherited = !r.by_signal.empty();
  r.mu.unlock();
  r.lifecycle_mu.unlock();
}

constexpr fork_hooks kForkHooks{fork_prepare, fork_parent, fork_child};

// Never destroyed: handlers may outlive statics. Its fork hooks are set
// last, once it exists (signal_handler.hpp).
registry& the_registry() {
  static registry* const r = [] {
    auto* n = new registry;
    set_fork_hooks(signal_client::dump, &kForkHooks);
    return n;
  }();
  return *r;
}

// forget_inherited_locked(): in a forked child, drops the parent's
// runtimes from the map (their claims went at the fork).
void forget_inherited_locked(registry& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r.mu) {
  if (!r.inherited) return;
  r.by_signal.clear();
  r.inherited = false;
}

void write_all(int fd, const std::string& s) noexcept {
  std::size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    off += static_cast<std::size_t>(n);
  }
}

// dump(): step 2 for one byte, signal sig.
void dump(registry* r, int sig) {
  std::string text;
  {
    thread_mutex_lock l(r->mu);
    auto it = r->by_signal.find(sig);
    if (it == r->by_signal.end()) return;
    for (scheduler* s : it->second) {
      std::ostringstream os;
      os << "mpg: signal " << sig << " (" << ::strsignal(sig) << "): task dump\n";
      s->dump(os);
      text += os.str();
    }
  }
  if (auto hook = g_dump_write_hook.load(std::memory_order_relaxed)) hook();
  write_all(STDERR_FILENO, text);
}

// take_stop(): step 3; true when this dumper is to exit.
bool take_stop(registry* r) {
  int pending = r->stops.load(std::memory_order_relaxed);
  while (pending > 0) {
    if (r->stops.compare_exchange_weak(pending, pending - 1, std::memory_order_relaxed))
      return true;
  }
  return false;
}

// publish_signals_locked(): the registered signals, for the dumper; true
// when they changed.
bool publish_signals_locked(registry& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r.mu) {
  std::uint64_t m = 0;
  for (const auto& [sig, runtimes] : r.by_signal)
    if (sig >= 1 && sig <= 64) m |= std::uint64_t{1} << (sig - 1);
  return dumper_signals.publish(m);
}

void dumper_main(registry* r, int fd) {
  pthread_setname_np(pthread_self(), "mpg-dump");
  std::uint64_t unblocked = relay_mask::kNoneApplied;
  for (;;) {
    dumper_signals.apply(&unblocked);
    // What the pipe holds, up to a page: the signals that came while the
    // last dump was built and written, one dump per signal number.
    unsigned char bytes[256];
    wait_readable(fd);  // signal_handler.hpp: why poll before the read
    const ssize_t n = ::read(fd, bytes, sizeof bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // cannot happen: the write end is never closed
    std::uint64_t dumped = 0;  // bit sig - 1 (the sink writes 1..64)
    for (ssize_t i = 0; i < n; ++i) {
      const int sig = bytes[i];
      if (sig == 0 || sig > 64) continue;  // 0: a stop's or a registration's wake
      const std::uint64_t bit = std::uint64_t{1} << (sig - 1);
      if ((dumped & bit) != 0) continue;
      dumped |= bit;
      dump(r, sig);
    }
    if (take_stop(r)) return;
  }
}

}  // namespace

void dump_signal_register(int sig, scheduler* s) {
  constexpr const char* kWho = "mpg: runtime_options.dump_signal";
  check_claimable(sig, kWho);  // before the pipe and the dumper exist
  registry& r = the_registry();
  std::lock_guard<std::mutex> life(r.lifecycle_mu);
  if (r.read_fd < 0) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      throw std::runtime_error(std::string("mpg: dump_signal: pipe2: ") + std::strerror(errno));
    ::fcntl(fds[1], F_SETFL, ::fcntl(fds[1], F_GETFL) | O_NONBLOCK);
    r.read_fd = fds[0];
    r.write_fd = fds[1];
    wake_fd.store(fds[1], std::memory_order_relaxed);
  }
  thread_mutex_lock l(r.mu);
  forget_inherited_locked(r);
  auto it = r.by_signal.find(sig);
  if (it == r.by_signal.end()) {
    claim_signal(signal_client::dump, sig, dump_sink, kWho);  // throws: nothing registered
    it = r.by_signal.emplace(sig, std::vector<scheduler*>{}).first;
  }
  it->second.push_back(s);
  const bool changed = publish_signals_locked(r);
  // After a successful claim, so that a refused signal leaves no idle
  // dumper behind. Bytes written before it starts wait in the pipe.
  if (!r.dumper_running) {
    std::thread(dumper_main, &r, r.read_fd).detach();
    r.dumper_running = true;
  } else if (changed) {
    // A running dumper applies the new mask after its next read. EAGAIN (a
    // full pipe) is fine: it has bytes to read.
    const unsigned char wake = 0;
    while (::write(r.write_fd, &wake, 1) < 0 && errno == EINTR) {
    }
  }
}

void dump_signal_unregister(int sig, scheduler* s) noexcept {
  registry& r = the_registry();
  std::lock_guard<std::mutex> life(r.lifecycle_mu);
  bool none_left = false;
  {
    thread_mutex_lock l(r.mu);
    forget_inherited_locked(r);
    auto it = r.by_signal.find(sig);
    if (it == r.by_signal.end()) return;
    std::vector<scheduler*>& v = it->second;
    for (auto i = v.begin(); i != v.end(); ++i) {
      if (*i == s) {
        v.erase(i);
        break;
      }
    }
    if (v.empty()) {
      release_signal(signal_client::dump, sig);
      r.by_signal.erase(it);
      (void)publish_signals_locked(r);  // applied at the dumper's next read
    }
    none_left = r.by_signal.empty();
  }
  if (none_left && r.dumper_running) {
    // Step 3. EAGAIN (a full pipe) is fine: the dumper has bytes to read.
    r.stops.fetch_add(1, std::memory_order_relaxed);
    const unsigned char stop = 0;
    while (::write(r.write_fd, &stop, 1) < 0 && errno == EINTR) {
    }
    r.dumper_running = false;
  }
}

}  // namespace mpg::detail
