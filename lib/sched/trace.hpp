// lib/sched/trace.hpp: the execution trace (runtime_options.trace_file or
// MPG_TRACE): events recorded per M, written as Chrome trace-event JSON by
// ~runtime (trace.cpp has the format and the protocol).
//
// Cost when off. The hooks in the scheduler are one predictable branch
// each: the run loop tests its M's own buffer pointer (m->trace, null when
// the runtime records nothing); hooks reached without an M at hand (park,
// timer firings) test trace_on(), a process-wide count of tracing runtimes,
// and only then look up the M.
#pragma once

#include <absl/base/thread_annotations.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <source_location>
#include <string>
#include <vector>

#include "sched/thread_mutex.hpp"

namespace mpg::detail {

class g;
class machine;

enum class trace_kind : std::uint8_t { run, park, steal, blocking, wait_ring, wait_futex, timer };

struct trace_event {
  std::int64_t ts_ns;
  std::int64_t dur_ns;      // spans (run, blocking, wait_*)
  std::uint64_t gid;        // run, park, blocking: the task
  const char* name;         // run, park: the task's name (static storage) or null
  const char* reason;       // park: why it waits
  std::source_location where;  // park: where it waits
  std::uint32_t arg;        // steal: the victim P; timer: the P
  std::uint32_t count;      // steal: tasks taken
  trace_kind kind;
};

// trace_buffer: one M's events. Only the owning M appends (no lock); the
// recorder reads it after that M's thread was joined.
class trace_buffer {
 public:
  explicit trace_buffer(std::uint32_t m_id) : m_id_(m_id) { events_.reserve(4096); }
  // add(): called from noexcept scheduler paths; an event that finds no
  // memory is counted as dropped, like one past kMaxEvents. Out of line
  // (trace.cpp): the untraced scheduler loop then carries no copy of the
  // vector's growth and its exception handling.
  void add(const trace_event& e) noexcept;
  std::uint32_t m_id() const noexcept { return m_id_; }
  const std::vector<trace_event>& events() const noexcept { return events_; }
  std::uint64_t dropped() const noexcept { return dropped_; }
  std::int64_t blocking_since = 0;  // the M's mpg::blocking call in progress

  // About 64 MB per M at most; later events are counted, not kept.
  static constexpr std::size_t kMaxEvents = std::size_t{1} << 20;

 private:
  const std::uint32_t m_id_;
  std::vector<trace_event> events_;
  std::uint64_t dropped_ = 0;
};

// trace_recorder: the buffers of one runtime and the file they go to.
class trace_recorder {
 public:
  explicit trace_recorder(std::string path);
  ~trace_recorder();
  // attach(): a buffer for M m_id; called once by each M as it starts.
  trace_buffer* attach(std::uint32_t m_id);
  // write(): the JSON file; every M has stopped (their threads joined).
  void write();

 private:
  const std::string path_;
  const std::int64_t start_ns_;
  thread_mutex mu_;
  std::vector<std::unique_ptr<trace_buffer>> buffers_ ABSL_GUARDED_BY(mu_);
  bool written_ ABSL_GUARDED_BY(mu_) = false;
};

// Number of live runtimes that record a trace. Relaxed: a hint for the
// hooks below; a hook that sees it set still checks the M's own buffer.
extern std::atomic<std::uint32_t> tracing_runtimes;
inline bool trace_on() noexcept { return tracing_runtimes.load(std::memory_order_relaxed) != 0; }

// The hooks (trace.cpp). traced_resume(): m->trace is set; resume gp and
// record the run as a span. The others record on the calling thread's M if
// it traces, else do nothing. trace_park() is kept out of line: inlined
// (link-time optimisation does it), its frame and saved registers would be
// paid by every park, traced or not.
void traced_resume(machine* m, g* gp);
[[gnu::noinline]] void trace_park(g* gp, const char* reason, std::source_location where) noexcept;
void trace_steal(machine* m, std::uint32_t victim, std::uint32_t count) noexcept;
void trace_timer_fired(std::uint32_t p_id) noexcept;
void trace_blocking_enter(machine* m) noexcept;
void trace_blocking_exit(machine* m, g* gp) noexcept;
void trace_sleep(machine* m, bool in_ring, std::int64_t since_ns) noexcept;

}  // namespace mpg::detail
