// test/test_support.hpp: small helpers shared by the test suites.
#pragma once

#include "mpg/mpg.hpp"

namespace mpg_test {

#ifndef __has_feature
#define __has_feature(x) 0
#endif
// kSanitized: true in ASan/TSan builds, where stress loops run smaller.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || \
    __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

// yield_some(): yields up to n times so that other tasks get to run (never
// needed for correctness, only to give a wrong implementation the chance to
// show it).
inline mpg::task<void> yield_some(int n) {
  for (int i = 0; i < n; ++i) co_await mpg::yield();
}

}  // namespace mpg_test
