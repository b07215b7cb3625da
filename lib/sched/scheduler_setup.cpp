// lib/sched/scheduler_setup.cpp: the scheduler's construction. The options
// are checked against their bounds (runtime_options.hpp) before anything
// starts; then the Ps with their rings, the steal strides, the handles and
// debug threads, and sysmon. procs = 0 takes MPG_PROCS, else the CPUs this
// process may run on (its affinity mask), as Go's GOMAXPROCS default does.
// MPG_PROCS empty counts as unset; any other value that parse_procs refuses
// is named on stderr and ignored.
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"

#include "io/reactor.hpp"
#include "sched/scheduler.hpp"

namespace mpg::detail {

// The bounds of runtime_options (runtime_options.hpp): MPG_PROCS's, and a
// receive buffer a ring of them can still afford.
constexpr unsigned kMaxProcs = 4096;
constexpr unsigned kMaxRecvBufferSize = 1u << 20;
// A P's ring, spawn deque and overflow batch take 20 bytes a slot: 1.25 MiB
// a P at this bound (5 GiB for 4096 Ps), where 1u << 31 asked for 40 GiB a P.
constexpr unsigned kMaxLocalQueueCapacity = 1u << 16;

std::optional<unsigned> parse_procs(std::string_view text) noexcept {
  unsigned v = 0;
  const char* const end = text.data() + text.size();
  const auto [stop, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc{} || stop != end || v < 1 || v > kMaxProcs) {
    return std::nullopt;
  }
  return v;
}

namespace {
unsigned default_procs() {
  const char* env = std::getenv("MPG_PROCS");
  if (env != nullptr && *env != '\0') {
    if (const std::optional<unsigned> v = parse_procs(env)) return *v;
    // Escaped: the complaint stays one line whatever the variable holds.
    const std::string shown = absl::CHexEscape(env);
    std::fprintf(stderr, "mpg: ignoring MPG_PROCS=%s (want an integer 1..%u)\n", shown.c_str(),
                 kMaxProcs);
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return static_cast<unsigned>(n);
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<unsigned>(n) : 1u;
}
}  // namespace

scheduler::scheduler(const runtime_options& opts) : opts_(opts) {
  if (opts_.procs == 0) opts_.procs = default_procs();
  if (opts_.local_queue_capacity < 2 ||
      (opts_.local_queue_capacity & (opts_.local_queue_capacity - 1)) != 0 ||
      opts_.local_queue_capacity > kMaxLocalQueueCapacity)
    throw std::invalid_argument(
        "mpg: runtime_options.local_queue_capacity must be a power of two from 2 to 65536");
  if (opts_.procs > kMaxProcs)
    throw std::invalid_argument("mpg: runtime_options.procs must be at most 4096");
  if (opts_.recv_buffers != 0 &&
      ((opts_.recv_buffers & (opts_.recv_buffers - 1)) != 0 || opts_.recv_buffers > 32768))
    throw std::invalid_argument(
        "mpg: runtime_options.recv_buffers must be 0 or a power of two up to 32768");
  if (opts_.recv_buffer_size > kMaxRecvBufferSize)
    throw std::invalid_argument("mpg: runtime_options.recv_buffer_size must be at most 1 MiB");
  if (opts_.long_task_threshold.count() < 0)
    throw std::invalid_argument("mpg: runtime_options.long_task_threshold must not be negative");
  if (opts_.thread_starvation_threshold.count() < 0)
    throw std::invalid_argument(
        "mpg: runtime_options.thread_starvation_threshold must not be negative");
  if (opts_.max_threads < opts_.procs) opts_.max_threads = opts_.procs;
  // Abseil builds its table of errno texts at the first ErrnoToStatus, in
  // a function-local static that it then reads with no lock. Built here,
  // before any M starts, under one process-wide std::call_once: every M's
  // first errno Status reads a table that its thread's creation orders
  // after the build, and a runtime constructed on another thread, then or
  // later, passes the same call_once, which orders the build before it (an
  // order ThreadSanitizer sees). Otherwise two Ms' first errors race in
  // ThreadSanitizer's eyes: Abseil's guard check is code it does not see
  // (CI's TSan stage reported soak_tests so).
  static std::once_flag errno_texts_built;
  std::call_once(errno_texts_built, [] { (void)absl::ErrnoToStatus(EIO, ""); });
  for (std::uint32_t i = 0; i < opts_.procs; ++i)
    ps_.push_back(std::make_unique<processor>(i, opts_.local_queue_capacity));
  const fault_config faults = faults_from_options(opts_.io_faults);  // tests only
  for (auto& p : ps_) {
    absl::StatusOr<std::unique_ptr<reactor>> r = reactor::create(
        opts_.ring_entries, &faults, opts_.recv_buffers, opts_.recv_buffer_size);
    if (!r.ok()) {
      throw std::runtime_error("mpg: cannot start the runtime: io_uring is unavailable: " +
                               std::string(r.status().message()));
    }
    p->io = std::move(*r);
  }
  for (std::uint32_t i = 1; i <= procs(); ++i)
    if (std::gcd(i, procs()) == 1) steal_strides_.push_back(i);
  open_handles();
  start_debug();
  thread_mutex_lock l(mu_);
  for (auto it = ps_.rbegin(); it != ps_.rend(); ++it) pidle_put(it->get());
  sysmon_ = std::thread([this] { sysmon_main(); });
}

scheduler::~scheduler() = default;  // Gs live in g_blocks_

}  // namespace mpg::detail
