// test/fuzz_support.hpp: the seed, random stream and mutator of the seeded,
// bounded fuzz cases (input_fuzz_tests.cpp, buffered_fuzz_tests.cpp). No
// fuzzing engine: a case mutates a few seed inputs with a splitmix64 stream
// drawn from one seed, MPG_FUZZ_SEED (decimal; a fixed one by default, so a
// run is repeatable and a failure names the seed that replays it), a
// bounded number of times, and checks invariants on every result.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace mpg_test {

// Debian's abseil has its own string_view type (not std::string_view's alias).
inline std::string_view sv(absl::string_view s) { return {s.data(), s.size()}; }

// fuzz_seed(): MPG_FUZZ_SEED, else a fixed seed.
inline std::uint64_t fuzz_seed() {
  static const std::uint64_t seed = [] {
    std::uint64_t s = 20240611;
    const char* env = std::getenv("MPG_FUZZ_SEED");
    if (env != nullptr && *env != '\0' && !absl::SimpleAtoi(env, &s)) {
      FAIL("MPG_FUZZ_SEED=" << env << " is not an unsigned integer");
    }
    return s;
  }();
  return seed;
}

// rng: splitmix64, one stream per test case (so that cases do not shift
// each other's inputs).
struct rng {
  std::uint64_t s;
  explicit rng(std::uint64_t stream) : s(fuzz_seed() ^ (stream * 0x9e3779b97f4a7c15ull)) {}
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  std::size_t below(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(next() % n); }
  bool one_in(std::size_t n) { return below(n) == 0; }
};

// MPG_FUZZ_SEED_INFO: names the seed in a failing case's report.
#define MPG_FUZZ_SEED_INFO INFO("MPG_FUZZ_SEED=" << ::mpg_test::fuzz_seed())

// mutate(): one to four edits of s (insert, erase, replace, duplicate a
// range, truncate, splice another seed's tail, a run of one byte, up to
// 70000 long, or a number of any size), bytes drawn mostly from `alphabet`.
inline std::string mutate(rng& r, std::string s, std::span<const std::string_view> seeds,
                          std::string_view alphabet) {
  const std::size_t edits = 1 + r.below(4);
  for (std::size_t e = 0; e < edits; ++e) {
    auto byte = [&] {
      return r.one_in(4) ? static_cast<char>(r.next()) : alphabet[r.below(alphabet.size())];
    };
    const std::size_t at = r.below(s.size() + 1);
    switch (r.below(8)) {
      case 0:
        s.insert(at, 1, byte());
        break;
      case 1:
        if (at < s.size()) s.erase(at, 1 + r.below(4));
        break;
      case 2:
        if (at < s.size()) s[at] = byte();
        break;
      case 3:
        if (at < s.size()) s.insert(at, s.substr(at, 1 + r.below(s.size() - at)));
        break;
      case 4:
        s.resize(r.below(s.size() + 1));
        break;
      case 5: {
        const std::string_view other = seeds[r.below(seeds.size())];
        s.resize(at);
        s.append(other.substr(r.below(other.size() + 1)));
        break;
      }
      case 6:
        s.insert(at, r.one_in(64) ? 70000 : 1 + r.below(300), byte());
        break;
      default:
        s.insert(at, absl::StrCat(r.next() >> r.below(64)));
        break;
    }
  }
  return s;
}

// one_clear_line(): an error text a person can read whole: no NUL (which
// cuts a C string short) and no line break.
inline bool one_clear_line(std::string_view s) {
  return s.find('\0') == std::string_view::npos && s.find('\n') == std::string_view::npos &&
         s.find('\r') == std::string_view::npos;
}

}  // namespace mpg_test
