// mpg/runtime_options.hpp: the knobs of a runtime (mpg::runtime's
// constructor argument): how many Ps, queue and ring sizes, the thread
// limit, the long-task report and the debugging aids (docs/diagnostics.md,
// "Debugging"). A value out of its range makes the runtime's constructor
// throw std::invalid_argument.
#pragma once

#include <chrono>
#include <string>

namespace mpg {

struct runtime_options {
  // Number of Ps, at most 4096. 0: the MPG_PROCS environment variable, else
  // the number of CPUs this process may run on (its affinity mask).
  unsigned procs = 0;
  // Capacity of each P's local run queue; a power of two from 2 to 65536
  // (each slot costs 20 bytes a P, in the ring and the spawn deque). Tests shrink
  // it to reach overflow and stealing edge cases.
  unsigned local_queue_capacity = 256;
  // Upper bound on OS threads (Ms), counting those blocked in mpg::blocking;
  // at least procs (a smaller value counts as procs). At the limit, a P that
  // mpg::blocking hands away may find no M to run its tasks: they wait for
  // the first M to come back from mpg::blocking, while the monitor runs the
  // P's due timers and I/O completions. A blocking call that waits for one
  // of those tasks waits for ever (Go aborts: "program exceeds 10000-thread
  // limit"). When such tasks have waited thread_starvation_threshold
  // without one of them being taken, the monitor says so on stderr, with a
  // task dump (counted in runtime_stats::thread_limit_reports), and the
  // program goes on; it says so again only once tasks are taken and others
  // wait as long (docs/diagnostics.md, "Starving at the thread limit").
  // A thread the OS refuses counts as the limit reached.
  unsigned max_threads = 10000;
  // See max_threads. Not negative; milliseconds::max() never reports.
  std::chrono::milliseconds thread_starvation_threshold{1000};
  // A P running one G for longer than this is reported by the monitor (in
  // builds with debug checks, or when report_long_tasks is set). Not
  // negative; milliseconds::max() never reports.
  std::chrono::milliseconds long_task_threshold{10};
  bool report_long_tasks = false;
  // Entries of each P's io_uring submission queue (completion queue: 4x).
  // 0: 256; above 4096: 4096; the kernel rounds it up to a power of two.
  unsigned ring_entries = 256;
  // Each P's ring of provided receive buffers (tcp_stream::receive): how
  // many (a power of two, at most 32768) and how large (at most 1 MiB). 0:
  // 512 and 2048 bytes. Allocated on the first receive on that P.
  unsigned recv_buffers = 0;
  unsigned recv_buffer_size = 0;
  // On this signal, dump every task of the runtime to stderr and go on
  // (lib/sched/dump_signal.cpp); signals that come during a dump make one
  // dump more. 0: no handler is installed. The previous
  // disposition is restored when the last runtime using the signal goes,
  // unless an mpg::signal channel still wants it (a signal used by both
  // reaches both). The runtime's constructor throws std::invalid_argument
  // for a signal that cannot be caught (SIGKILL, SIGSTOP, out of range) and
  // for a fault signal (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS),
  // which a handler that returns would make loop for ever. In a child of
  // fork() the signal has its old disposition back until a runtime of the
  // child asks for it (mpg/signal.hpp, "fork() without exec").
  int dump_signal = 0;
  // Record the run as Chrome trace-event JSON in this file, written by
  // ~runtime (lib/sched/trace.cpp). Empty: the MPG_TRACE environment
  // variable, else no trace.
  std::string trace_file{};
  // For tests only: make a fraction of the I/O operations of net and fs
  // fail or come back short the ways the kernel may (-EINTR, -EAGAIN, short
  // counts, -ECONNRESET, CQ overflow), to show code survives them. Syntax as
  // Go's GODEBUG, e.g. "rate=0.05,kinds=eintr+eagain+short+reset+overflow,seed=42"
  // (docs/diagnostics.md, "Fault injection (tests)"). Null: the MPG_FAULTS
  // environment variable; "" (or no rate): none. Bad pairs are reported on
  // stderr and ignored.
  const char* io_faults = nullptr;
};

}  // namespace mpg
