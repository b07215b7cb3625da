// lib/sched/debug_env.cpp: MPG_DEBUG and MPG_TRACE (debug_env.hpp), and the
// debugging aids' lifetime within a runtime:
//   - start_debug(), at the end of the scheduler's constructor, before any M
//     starts: registers runtime_options.dump_signal (dump_signal.cpp), starts
//     the schedtrace thread (schedtrace.cpp) and creates the trace recorder
//     (trace.cpp) that every M attaches its buffer to as it starts;
//   - stop_debug(), first thing in ~runtime: no signal dump and no SCHED
//     line of this runtime starts after it returns, and none is running;
//   - finish_trace(), in ~runtime after stop() joined every M: writes the
//     trace file.
#include "sched/debug_env.hpp"

#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/escaping.h"
#include "sched/dump_signal.hpp"
#include "sched/schedtrace.hpp"
#include "sched/scheduler.hpp"
#include "sched/trace.hpp"

namespace mpg::detail {

debug_settings parse_mpg_debug(std::string_view value, std::string* errors) {
  debug_settings out;
  while (!value.empty()) {
    const std::size_t comma = value.find(',');
    const std::string_view item = value.substr(0, comma);
    value = comma == std::string_view::npos ? std::string_view{} : value.substr(comma + 1);
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos) continue;  // Go ignores items without '='
    const std::string_view key = item.substr(0, eq);
    const std::string_view val = item.substr(eq + 1);
    if (key == "schedtrace") {
      std::uint32_t ms = 0;
      const auto [end, ec] = std::from_chars(val.data(), val.data() + val.size(), ms);
      if (val.empty() || ec != std::errc{} || end != val.data() + val.size()) {
        errors->append("mpg: MPG_DEBUG: ignoring schedtrace=");
        errors->append(absl::CHexEscape(absl::string_view(val.data(), val.size())));
        errors->append(" (want a whole number of milliseconds)\n");
        continue;
      }
      out.schedtrace_ms = ms;
    }
    // Unknown keys are ignored, as Go ignores unknown GODEBUG settings.
  }
  return out;
}

std::string trace_path_from_env() {
  const char* env = std::getenv("MPG_TRACE");
  if (env == nullptr || *env == '\0') return {};
  // Relaxed: only distinct numbers matter.
  static std::atomic<std::uint32_t> runtimes_traced{0};
  const std::uint32_t k = runtimes_traced.fetch_add(1, std::memory_order_relaxed) + 1;
  std::string path = env;
  if (k > 1) {
    path.push_back('.');
    path.append(std::to_string(k));
  }
  return path;
}

struct debug_state {
  scheduler* owner = nullptr;
  int dump_signal = 0;  // registered for owner while non-zero
  std::unique_ptr<schedtrace_thread> schedtrace;
  std::unique_ptr<trace_recorder> recorder;
  // Also reached when the scheduler's constructor throws after
  // start_debug(): no registration may outlive the scheduler.
  ~debug_state() {
    if (dump_signal != 0) dump_signal_unregister(dump_signal, owner);
  }
};

void debug_state_deleter::operator()(debug_state* d) const noexcept { delete d; }

void scheduler::start_debug() {
  std::unique_ptr<debug_state, debug_state_deleter> d(new debug_state);
  d->owner = this;
  std::string path = opts_.trace_file.empty() ? trace_path_from_env() : opts_.trace_file;
  if (!path.empty()) {
    d->recorder = std::make_unique<trace_recorder>(std::move(path));
    tracer_ = d->recorder.get();
  }
  if (const char* env = std::getenv("MPG_DEBUG")) {
    std::string errors;
    const debug_settings set = parse_mpg_debug(env, &errors);
    if (!errors.empty()) std::fputs(errors.c_str(), stderr);
    if (set.schedtrace_ms != 0)
      d->schedtrace = std::make_unique<schedtrace_thread>(this, set.schedtrace_ms);
  }
  if (opts_.dump_signal != 0) {
    // Set first: if registering throws halfway, ~debug_state undoes it
    // (unregistering a runtime that is not registered changes nothing).
    d->dump_signal = opts_.dump_signal;
    dump_signal_register(opts_.dump_signal, this);
  }
  debug_ = std::move(d);
}

void scheduler::stop_debug() noexcept {
  if (!debug_) return;
  if (debug_->dump_signal != 0) {
    dump_signal_unregister(debug_->dump_signal, this);
    debug_->dump_signal = 0;
  }
  debug_->schedtrace.reset();
}

void scheduler::finish_trace() {
  if (debug_ && debug_->recorder) debug_->recorder->write();
}

}  // namespace mpg::detail
