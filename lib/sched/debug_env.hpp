// lib/sched/debug_env.hpp: the debugging aids of a runtime (docs/diagnostics.md,
// "Debugging") and the MPG_DEBUG / MPG_TRACE environment variables that
// turn them on.
//
// MPG_DEBUG is parsed as Go parses GODEBUG: comma-separated key=value
// pairs; unknown keys are ignored (so newer keys can follow); a key given
// twice takes its last value; a bad value is reported on stderr and ignored.
// Keys:
//   schedtrace=N  every N ms, one "SCHED" line per runtime on stderr
//                 (schedtrace.cpp); 0 or absent: off.
// MPG_TRACE=path records a Chrome trace of the run (trace.cpp) unless
// runtime_options.trace_file names one. Both are read when a runtime is
// constructed (scheduler::start_debug).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mpg::detail {

struct debug_settings {
  std::uint32_t schedtrace_ms = 0;
};

// parse_mpg_debug(): the settings in `value` (MPG_DEBUG's text); every bad
// value adds one line to *errors ("mpg: MPG_DEBUG: ...\n", the value
// escaped as a C string literal's body, so that it cannot break the line).
debug_settings parse_mpg_debug(std::string_view value, std::string* errors);

// trace_path_from_env(): MPG_TRACE for the runtime constructed now, or "".
// The first runtime of the process gets the path itself, the k-th (k > 1)
// "path.k", so that several runtimes do not overwrite one file.
std::string trace_path_from_env();

}  // namespace mpg::detail
