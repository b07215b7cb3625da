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
  return std::chrono::duration_cast<std::chrono::nanoseconds>(mono_now().time_since_epoch())
      .count();
}

// to_ns() / from_ns(): a steady_clock time point and its nanosecond form.
inline std::int64_t to_ns(steady_time t) noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
inline steady_time from_ns(std::int64_t ns) noexcept {
  return steady_time(
      std::chrono::duration_cast<steady_time::duration>(std::chrono::nanoseconds(ns)));
}

// saturating_add(): t + d, rounded up to the clock's tick, or
// time_point::max() where that would overflow; t for a d that is not
// positive (NaN included). t is a clock reading or the zero the option
// checks use: never negative. For any duration type:
//   - an integral Rep: exact, in 128 bits: d's count (below 2^64) times
//     the numerator of Period in nanoseconds (below 2^63) fits, and is
//     divided by the denominator rounding up. std::chrono::ceil would
//     multiply in 64 bits, which overflows before the division for a
//     Period that is neither a whole number of nanoseconds nor a whole
//     fraction of one (1/60 s: 3e11 frames, 158 years, would wrap to a
//     deadline in the past);
//   - a floating Rep: the comparison with the room left is made in long
//     double nanoseconds, which does not overflow, and d is rounded up in
//     long double too and compared again: converted in its own type (a
//     double's 53 bits), a d just below the room left can round up past it.
template <class Rep, class Period>
constexpr steady_time saturating_add(steady_time t, std::chrono::duration<Rep, Period> d) noexcept {
  static_assert(std::is_same_v<steady_time::duration, std::chrono::nanoseconds>);
  if (!(d > d.zero())) return t;
  const std::int64_t room = (steady_time::max() - t).count();
  if constexpr (std::is_integral_v<Rep>) {
    __extension__ typedef __int128 wide;
    using in_ns = std::ratio_divide<Period, std::nano>;
    const wide scaled = static_cast<wide>(d.count()) * in_ns::num;
    wide ns = scaled / in_ns::den;
    if (ns * in_ns::den < scaled) ++ns;
    if (ns >= room) return steady_time::max();
    return t + std::chrono::nanoseconds(static_cast<std::int64_t>(ns));
  } else {
    using ld_ns = std::chrono::duration<long double, std::nano>;
    const long double want = std::chrono::duration_cast<ld_ns>(d).count();
    if (want >= static_cast<long double>(room)) return steady_time::max();
    // want < room <= INT64_MAX, and room is whole: the rounded-up ns fits.
    auto ns = static_cast<std::int64_t>(want);
    if (static_cast<long double>(ns) < want) ++ns;
    return t + std::chrono::nanoseconds(ns);
  }
}

// deadline_after(): now + d, as saturating_add().
template <class Rep, class Period>
steady_time deadline_after(std::chrono::duration<Rep, Period> d) noexcept {
  return saturating_add(mono_now(), d);
}

}  // namespace mpg::detail
