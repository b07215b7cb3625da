// mpg/detail/sched/clock.hpp: the one clock of the runtime.
//
// Every deadline mpg keeps (timer heaps, ring timeouts, mutex starvation,
// sysmon's sampling) is a steady_clock time, stored as nanoseconds since the
// clock's epoch in an int64 so that it fits one atomic word; INT64_MAX means
// "none". These helpers are the only conversions between the two forms.
#pragma once

#include <chrono>
#include <cstdint>

namespace mpg::detail {

using steady_time = std::chrono::steady_clock::time_point;

// mono_now(): now, as a deadline is written (steady_clock).
inline steady_time mono_now() noexcept { return std::chrono::steady_clock::now(); }

// mono_now_ns(): now, in nanoseconds since the steady clock's epoch.
inline std::int64_t mono_now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(mono_now().time_since_epoch()).count();
}

// to_ns() / from_ns(): a steady_clock time point and its nanosecond form.
inline std::int64_t to_ns(steady_time t) noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
inline steady_time from_ns(std::int64_t ns) noexcept {
  return steady_time(std::chrono::duration_cast<steady_time::duration>(std::chrono::nanoseconds(ns)));
}

}  // namespace mpg::detail
