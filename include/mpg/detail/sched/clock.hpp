// mpg/detail/sched/clock.hpp: the one clock of the runtime.
//
// Every deadline mpg keeps (timer heaps, ring timeouts, mutex starvation,
// sysmon's sampling) is a steady_clock time, stored as nanoseconds since the
// clock's epoch in an int64 so that it fits one atomic word; INT64_MAX means
// "none". These helpers are the only conversions between the two forms.
#pragma once

#include <chrono>
#include <cstdint>
#include <type_traits>

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

// saturating_add(): t + d, rounded up to the clock's tick, or
// time_point::max() where that would overflow; t for a d that is not
// positive (NaN included). For any duration type: the comparison with the
// room left is made in long double nanoseconds, which neither overflows for
// a narrow or fine-grained Rep (duration<int, std::micro>,
// duration<long long, std::pico>) nor wraps, so a short duration never
// becomes "never"; past it, d in nanoseconds is below INT64_MAX, so its
// conversion cannot overflow either. A floating Rep is rounded up in long
// double too, and compared again: converted in its own type (a double's 53
// bits), a d just below the room left can round up past it.
template <class Rep, class Period>
constexpr steady_time saturating_add(steady_time t, std::chrono::duration<Rep, Period> d) noexcept {
  using ld_ns = std::chrono::duration<long double, std::nano>;
  if (!(d > d.zero())) return t;
  const steady_time::duration left = steady_time::max() - t;
  const long double want = std::chrono::duration_cast<ld_ns>(d).count();
  const long double room = std::chrono::duration_cast<ld_ns>(left).count();
  if (want >= room) return steady_time::max();
  if constexpr (std::is_floating_point_v<Rep>) {
    // want < room <= INT64_MAX, and room is whole: the rounded-up ns fits.
    auto ns = static_cast<std::int64_t>(want);
    if (static_cast<long double>(ns) < want) ++ns;
    return t + std::chrono::duration_cast<steady_time::duration>(std::chrono::nanoseconds(ns));
  } else {
    return t + std::chrono::ceil<steady_time::duration>(d);
  }
}

// deadline_after(): now + d, as saturating_add().
template <class Rep, class Period>
steady_time deadline_after(std::chrono::duration<Rep, Period> d) noexcept {
  return saturating_add(mono_now(), d);
}

}  // namespace mpg::detail
