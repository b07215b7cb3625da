// test/input_fuzz_tests.cpp: seeded, bounded fuzzing (fuzz_support.hpp) of
// the parsers that take untrusted strings, checking mpg's rule that bad
// input gets a clear error, never a crash, a hang or silent loss of data.
// Under ASan+UBSan it also checks that nothing reads out of bounds or
// overflows.
//   - addresses (lib/io/address.hpp): a result or kInvalidArgument (or the
//     refusal to look a name up); what parses prints back to itself; no NUL
//     gets past the parser into a C string; the error is one clear line.
//   - MPG_DEBUG, MPG_FAULTS, MPG_PROCS: a bad value is named once, on one
//     line; a good one is taken as a model of the grammar says.
//   - durations (saturating_add, behind every sleep, timeout and deadline):
//     the exact deadline rounded up, or "never", for any duration type.
// buffered_fuzz_tests.cpp does the same for the buffered reader and writer.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <ratio>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "fuzz_support.hpp"
#include "io/address.hpp"
#include "io/fault_injector.hpp"
#include "mpg/detail/sched/clock.hpp"
#include "sched/debug_env.hpp"
#include "sched/scheduler.hpp"

namespace {

using mpg::detail::name_lookup;
using mpg::detail::sock_addr;
using mpg_test::mutate;
using mpg_test::one_clear_line;
using mpg_test::rng;
using mpg_test::sv;

// ---------------------------------------------------------------------------
// Addresses

constexpr std::string_view kAddressSeeds[] = {
    "127.0.0.1:80",        "[::1]:8080",     ":0",          "localhost:65535", "example.com:443",
    "[fe80::1%lo]:80",     "[fe80::1%1]:80", "unix:/tmp/s", "unix:@abstract",  "unix:rel.sock",
    "[::ffff:1.2.3.4]:1",  "1.2.3.4:00001",  "[]:1",        "[::]:0",          "0.0.0.0:9",
    "[2001:db8::1]:65535", "host:99999",     "[::1]80",     "::1:80",          "unix:",
};
constexpr std::string_view kAddressAlphabet{":[]%@./0123456789abcdefx \0+-lo", 30};

bool same_addr(const sock_addr& a, const sock_addr& b) {
  return a.len == b.len && std::memcmp(&a.ss, &b.ss, a.len) == 0;
}

// port_text(): the digits after the last ':' (the port of an IP address).
std::uint16_t port_text(std::string_view a) {
  std::uint32_t v = 0;
  for (char c : a.substr(a.rfind(':') + 1)) v = v * 10 + static_cast<std::uint32_t>(c - '0');
  return static_cast<std::uint16_t>(v);
}

// check_resolved(): "" if resolve(a)'s answer keeps the rules, else what
// is wrong.
std::string check_resolved(const std::string& a, bool passive,
                           const absl::StatusOr<std::vector<sock_addr>>& res) {
  const bool is_unix = a.starts_with("unix:");
  if (!res.ok()) {
    const absl::Status& st = res.status();
    if (mpg::detail::lookup_needed(st)) {
      if (is_unix || a.find('\0') != std::string::npos) return "lookup asked for a non-name";
      return "";
    }
    if (st.code() != absl::StatusCode::kInvalidArgument)
      return "not kInvalidArgument: " + st.ToString();
    const std::string_view msg = sv(st.message());
    if (!msg.starts_with("address \"")) return "the error does not name the address";
    if (!one_clear_line(msg)) return "the error is not one clear line";
    return "";
  }
  if (res->empty() || res->size() > 2) return "no addresses, or too many";
  // A NUL is refused everywhere but in an abstract Unix name.
  if (a.find('\0') != std::string::npos && !a.starts_with("unix:@")) return "a NUL got through";
  for (const sock_addr& s : *res) {
    const int family = s.ss.ss_family;
    if (is_unix != (family == AF_UNIX)) return "the wrong family";
    if (family == AF_INET && s.len != sizeof(sockaddr_in)) return "a bad IPv4 length";
    if (family == AF_INET6 && s.len != sizeof(sockaddr_in6)) return "a bad IPv6 length";
    if (family == AF_UNIX &&
        (s.len <= offsetof(sockaddr_un, sun_path) || s.len > sizeof(sockaddr_un))) {
      return "a bad Unix length";
    }
    if (family != AF_UNIX && mpg::detail::port_of(s.ss) != port_text(a)) return "the wrong port";
    // What parses prints back to itself.
    const std::string printed = mpg::detail::format_addr(s.ss, s.len);
    auto again = mpg::detail::resolve(printed, passive, name_lookup::refused);
    if (!again.ok())
      return "its print \"" + printed + "\" does not parse: " + again.status().ToString();
    if (std::none_of(again->begin(), again->end(),
                     [&](const sock_addr& b) { return same_addr(s, b); })) {
      return "its print \"" + printed + "\" parses to another address";
    }
  }
  return "";
}

TEST_CASE("addresses: mutated ones parse and print back to themselves, or are kInvalidArgument") {
  MPG_FUZZ_SEED_INFO;
  rng r(1);
  const int rounds = 80000;
  int ok = 0, bad = 0, lookups = 0;
  for (int i = 0; i < rounds; ++i) {
    const std::string seed(kAddressSeeds[r.below(std::size(kAddressSeeds))]);
    const std::string a = mutate(r, seed, kAddressSeeds, kAddressAlphabet);
    const bool passive = r.one_in(2);
    auto res = mpg::detail::resolve(a, passive, name_lookup::refused);
    const std::string why = check_resolved(a, passive, res);
    if (!why.empty()) {
      INFO("round " << i << ", address (escaped) \"" << absl::CHexEscape(a) << "\"");
      FAIL_CHECK(why);
      return;
    }
    if (res.ok()) {
      ++ok;
    } else if (mpg::detail::lookup_needed(res.status())) {
      ++lookups;
    } else {
      ++bad;
    }
  }
  // The mutations reach every outcome.
  CHECK(ok > rounds / 20);
  CHECK(bad > rounds / 4);
  CHECK(lookups > rounds / 50);
}

TEST_CASE("addresses at their edges: ports, NULs, brackets, zones and lengths") {
  auto code = [](std::string_view a) {
    return mpg::detail::resolve(a, false, name_lookup::refused).status().code();
  };
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  CHECK(code("1.2.3.4:65535") == absl::StatusCode::kOk);
  CHECK(code("1.2.3.4:65536") == kInvalid);
  CHECK(code("1.2.3.4:4294967376") == kInvalid);  // 2^32 + 80: no wrap to 80
  CHECK(code("1.2.3.4:") == kInvalid);
  CHECK(code("[::1]:") == kInvalid);
  CHECK(code("[::1]") == kInvalid);
  CHECK(code("[::1") == kInvalid);
  CHECK(code("[") == kInvalid);
  CHECK(code("]:80") != absl::StatusCode::kOk);
  CHECK(code("") == kInvalid);
  // The error for a NUL names the address, escaped: printed as a C string
  // it would otherwise end at the NUL, before the reason.
  const std::string nul("1.2.3.4\0evil:80", 15);
  auto st = mpg::detail::resolve(nul, false, name_lookup::refused).status();
  CHECK(st.code() == kInvalid);
  INFO(st.ToString());
  CHECK(one_clear_line(sv(st.message())));
  CHECK(std::string(st.message().data()).find("NUL in host") != std::string::npos);
  // Unix paths: 107 bytes and a NUL fit sun_path, 108 do not; likewise an
  // abstract name after its leading NUL.
  CHECK(code("unix:" + std::string(107, 'p')) == absl::StatusCode::kOk);
  CHECK(code("unix:" + std::string(108, 'p')) == kInvalid);
  CHECK(code("unix:@" + std::string(107, 'p')) == absl::StatusCode::kOk);
  CHECK(code("unix:@" + std::string(108, 'p')) == kInvalid);
  CHECK(code(std::string("unix:/a\0b", 9)) == kInvalid);
  // Overlong hosts: a clear error or the refused lookup, never a crash, even
  // in the zone's numeric parse (getaddrinfo) or the interface name.
  const std::string huge(1 << 20, 'a');
  CHECK(code("[fe80::1%" + huge + "]:80") == kInvalid);
  CHECK(code("[" + huge + "%lo]:80") == kInvalid);
  CHECK(code("[" + huge + "]:80") == absl::StatusCode::kUnavailable);  // a name: lookup refused
  CHECK(code(huge + ":80") == absl::StatusCode::kUnavailable);
  CHECK(code(huge) == kInvalid);
}

// ---------------------------------------------------------------------------
// Environment variables

// lines(): text split after each '\n' (every line must end with one).
std::vector<std::string_view> lines(std::string_view text, bool* ends_in_newline) {
  *ends_in_newline = text.empty() || text.back() == '\n';
  std::vector<std::string_view> out;
  for (absl::string_view l :
       absl::StrSplit(absl::string_view(text.data(), text.size()), '\n', absl::SkipEmpty())) {
    out.emplace_back(l.data(), l.size());
  }
  return out;
}

// whole_number(): ASCII digits only, at most max.
std::optional<std::uint64_t> whole_number(std::string_view s, std::uint64_t max) {
  if (s.empty()) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    if (v > (max - static_cast<std::uint64_t>(c - '0')) / 10) return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

TEST_CASE("MPG_DEBUG: the last good schedtrace wins; each bad one is named on one line") {
  MPG_FUZZ_SEED_INFO;
  constexpr std::string_view seeds[] = {"schedtrace=250",        "gctrace=1,schedtrace=10,future=x",
                                        "schedtrace=4294967295", "schedtrace=4294967296",
                                        ",,=,noequals",          "schedtrace=-1,schedtrace=",
                                        "schedtrace=007"};
  constexpr std::string_view alphabet{"schedtrace=,0123456789-+ x\n\t\0", 29};
  rng r(2);
  int bad_seen = 0;
  for (int i = 0; i < 60000; ++i) {
    const std::string text =
        mutate(r, std::string(seeds[r.below(std::size(seeds))]), seeds, alphabet);
    // The model: Go's GODEBUG grammar with one key.
    std::uint32_t want = 0;
    int bad = 0;
    for (absl::string_view piece : absl::StrSplit(text, ',')) {
      const std::string_view item = sv(piece);
      const std::size_t eq = item.find('=');
      if (eq == std::string_view::npos || item.substr(0, eq) != "schedtrace") continue;
      if (auto v = whole_number(item.substr(eq + 1), UINT32_MAX)) {
        want = static_cast<std::uint32_t>(*v);
      } else {
        ++bad;
      }
    }
    std::string errors;
    const mpg::detail::debug_settings got = mpg::detail::parse_mpg_debug(text, &errors);
    bool ends = false;
    const std::vector<std::string_view> ls = lines(errors, &ends);
    bool lines_ok = ends && static_cast<int>(ls.size()) == bad;
    for (std::string_view l : ls) {
      lines_ok = lines_ok && l.starts_with("mpg: MPG_DEBUG: ignoring schedtrace=") &&
                 l.ends_with(" (want a whole number of milliseconds)") && one_clear_line(l);
    }
    if (got.schedtrace_ms != want || !lines_ok) {
      INFO("round " << i << ", MPG_DEBUG (escaped) \"" << absl::CHexEscape(text) << "\"");
      INFO("errors: " << errors);
      CHECK(got.schedtrace_ms == want);
      FAIL_CHECK("want " << bad << " complaints, one line each");
      return;
    }
    bad_seen += bad;
  }
  CHECK(bad_seen > 1000);
}

// fault_rate(): the model of MPG_FAULTS's rate: a plain decimal number
// (ASCII digits with at most one '.', at least one digit, then optionally
// 'e' or 'E', an optional sign and digits), either 0 (no digit other than
// '0' before the exponent) or in [1e-9, 1]; nothing else.
std::optional<double> fault_rate(std::string_view v) {
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  std::size_t i = 0;
  int digits = 0;
  bool dot = false, nonzero = false;
  for (; i < v.size() && (digit(v[i]) || (v[i] == '.' && !dot)); ++i) {
    if (v[i] == '.') {
      dot = true;
    } else {
      ++digits;
      nonzero = nonzero || v[i] != '0';
    }
  }
  if (digits == 0) return std::nullopt;
  if (i < v.size()) {
    if (v[i] != 'e' && v[i] != 'E') return std::nullopt;
    ++i;
    if (i < v.size() && (v[i] == '+' || v[i] == '-')) ++i;
    if (i == v.size()) return std::nullopt;
    for (; i < v.size(); ++i) {
      if (!digit(v[i])) return std::nullopt;
    }
  }
  if (!nonzero) return 0.0;
  const double r = std::strtod(std::string(v).c_str(), nullptr);
  if (r >= 1e-9 && r <= 1) return r;
  return std::nullopt;
}

TEST_CASE("MPG_FAULTS: pairs parse one by one, the last good one of a key wins, bad ones named") {
  MPG_FUZZ_SEED_INFO;
  using mpg::detail::fault_config;
  constexpr std::string_view seeds[] = {
      "rate=0.05,kinds=eintr+eagain+short+reset+overflow,seed=42",
      "rate=1,kinds=nomultishot",
      "rate=2,kinds=eintr+bogus,seed=-1,color=red,rate=0.5",
      "rate=nan,rate=inf,rate=1e-300",
      "kinds=all+nosqe+nopause+misspause+nocancel,seed=18446744073709551615",
      "seed=18446744073709551616,rate=0x1p-3, , rate = 0.5",
      "rate= 0.5,rate=+0.5,rate=0.5 ,rate=-0,rate=1e-9,rate=9e-10,rate=.5E+0,rate=5.e-1",
      "rate=0.000000001,rate=0e999,rate=1e-400,rate=4.9e-324,rate=1.,rate=infinity",
      "seed= 42,seed=+42,seed=42 ,seed=-0,seed=007,seed=0x10,seed=\t1\n"};
  constexpr std::string_view alphabet{"rate=kinds+seed,0123456789.eE-xp \n\0", 36};
  const unsigned all_bits = (1u << mpg::detail::kFaultKinds) - 1;
  std::string none;
  const unsigned default_kinds = mpg::detail::parse_faults("", &none).kinds;
  rng r(3);
  int bad_seen = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::string spec =
        mutate(r, std::string(seeds[r.below(std::size(seeds))]), seeds, alphabet);
    std::string errors;
    const fault_config got = mpg::detail::parse_faults(spec, &errors);
    // The model: each pair alone, in order.
    fault_config want;
    want.kinds = default_kinds;
    std::string want_errors;
    int bad = 0;
    for (absl::string_view pair : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
      std::string one;
      const fault_config c =
          mpg::detail::parse_faults(std::string_view(pair.data(), pair.size()), &one);
      want_errors += one;
      const absl::string_view key = pair.substr(0, pair.find('='));
      if (key == "rate" && pair.find('=') != absl::string_view::npos) {
        // The grammar: taken exactly when the model takes it, as its value.
        const std::optional<double> model = fault_rate(sv(pair.substr(key.size() + 1)));
        if (model.has_value() != one.empty() || (model && c.rate != *model)) {
          INFO("round " << i << ", rate pair (escaped) \"" << absl::CHexEscape(pair) << "\"");
          INFO("errors: " << one);
          CHECK(model.has_value() == one.empty());
          if (model) CHECK(c.rate == *model);
          return;
        }
      }
      if (key == "seed" && pair.find('=') != absl::string_view::npos) {
        const std::optional<std::uint64_t> model =
            whole_number(sv(pair.substr(key.size() + 1)), UINT64_MAX);
        if (model.has_value() != one.empty() || (model && c.seed != *model)) {
          INFO("round " << i << ", seed pair (escaped) \"" << absl::CHexEscape(pair) << "\"");
          INFO("errors: " << one);
          CHECK(model.has_value() == one.empty());
          if (model) CHECK(c.seed == *model);
          return;
        }
      }
      if (!one.empty()) {
        ++bad;
        continue;
      }
      if (key == "rate") want.rate = c.rate;
      if (key == "kinds") want.kinds = c.kinds;
      if (key == "seed") {
        want.seed = c.seed;
        want.seeded = true;
      }
    }
    bool ends = false;
    const std::vector<std::string_view> ls = lines(errors, &ends);
    bool lines_ok = ends && static_cast<int>(ls.size()) == bad && errors == want_errors;
    for (std::string_view l : ls)
      lines_ok = lines_ok && l.starts_with("ignoring \"") && one_clear_line(l);
    const bool same = got.rate == want.rate && got.kinds == want.kinds && got.seed == want.seed &&
                      got.seeded == want.seeded;
    const bool in_range = got.rate >= 0 && got.rate <= 1 && (got.kinds & ~all_bits) == 0;
    if (!same || !lines_ok || !in_range) {
      INFO("round " << i << ", MPG_FAULTS (escaped) \"" << absl::CHexEscape(spec) << "\"");
      INFO("errors: " << errors);
      CHECK(same);
      CHECK(in_range);
      FAIL_CHECK("want " << bad << " complaints, one line each, as the pairs alone give");
      return;
    }
    // The injector's threshold is computed from the rate (no overflow).
    const mpg::detail::fault_injector inj(got, 1, false);
    (void)inj;
    bad_seen += bad;
  }
  CHECK(bad_seen > 1000);
}

TEST_CASE("MPG_FAULTS: a rate is a plain decimal number, 0 or in [1e-9, 1], nothing else") {
  using mpg::detail::parse_faults;
  const std::pair<absl::string_view, double> good[] = {
      {"0", 0},         {"000", 0},      {"0.0", 0},        {"0e0", 0},
      {"0.0e-999", 0},  {"1", 1},        {"1.0", 1},        {"1e0", 1},
      {"1E+0", 1},      {"100e-2", 1},   {"0.5", 0.5},      {".5", 0.5},
      {"5.e-1", 0.5},   {"5E-1", 0.5},   {"0.05", 0.05},    {"1e-9", 1e-9},
      {"1.0e-9", 1e-9}, {"0.000000001", 1e-9}};
  for (const auto& [text, want] : good) {
    INFO("rate=" << text);
    std::string errors;
    const mpg::detail::fault_config c = parse_faults(absl::StrCat("rate=", text), &errors);
    CHECK(errors.empty());
    CHECK(c.rate == want);
  }
  // Spaces, signs, hex, words, a value too small to mean anything (below
  // 1e-9, denormal, or one that rounds to 0), above 1, malformed numbers.
  const absl::string_view bad[] = {
      "", " 0.5", "0.5 ", "\t0.5", "0.5\n", "+0.5", "-0", "-0.5", "0x1p-3", "0x0", "inf", "nan",
      "infinity", "1e-300", "1e-10", "9.99e-10", "1e-400", "4.9e-324", "1.5", "1e1", "1e999", ".",
      "e5", "1e", "1e+", "1..2", "1.2.3", "1_0", "0;5", "0.5e-1x", "\xef\xbc\x91",
      absl::string_view("0.5\0", 4)};
  for (absl::string_view text : bad) {
    const std::string pair = absl::StrCat("rate=", text);
    INFO("rate= (escaped) \"" << absl::CHexEscape(text) << "\"");
    std::string errors;
    const mpg::detail::fault_config c = parse_faults(absl::StrCat("rate=0.25,", pair), &errors);
    CHECK(c.rate == 0.25);  // the bad pair is ignored; the good one before it stays
    CHECK(errors == absl::StrCat("ignoring \"", absl::CHexEscape(pair),
                                 "\" (want rate=0 or a plain decimal number in [1e-9, 1])\n"));
  }
}

TEST_CASE("MPG_FAULTS: a seed is ASCII digits, at most 2^64 - 1, nothing else") {
  using mpg::detail::parse_faults;
  const std::pair<absl::string_view, std::uint64_t> good[] = {
      {"0", 0}, {"42", 42}, {"007", 7}, {"18446744073709551615", UINT64_MAX}};
  for (const auto& [text, want] : good) {
    INFO("seed=" << text);
    std::string errors;
    const mpg::detail::fault_config c = parse_faults(absl::StrCat("seed=", text), &errors);
    CHECK(errors.empty());
    CHECK(c.seeded);
    CHECK(c.seed == want);
  }
  const absl::string_view bad[] = {"",    " 42",  "42 ",  "\t42\n", "+42", "-0",
                                   "-1",  "0x10", "4 2",  "4.0",    "1e3", "18446744073709551616",
                                   absl::string_view("42\0", 3)};
  for (absl::string_view text : bad) {
    const std::string pair = absl::StrCat("seed=", text);
    INFO("seed= (escaped) \"" << absl::CHexEscape(text) << "\"");
    std::string errors;
    const mpg::detail::fault_config c = parse_faults(absl::StrCat("seed=9,", pair), &errors);
    CHECK(c.seed == 9);  // the bad pair is ignored; the good one before it stays
    CHECK(errors == absl::StrCat("ignoring \"", absl::CHexEscape(pair),
                                 "\" (want seed=an unsigned integer)\n"));
  }
}

TEST_CASE("MPG_PROCS: ASCII digits from 1 to 4096, nothing else") {
  MPG_FUZZ_SEED_INFO;
  constexpr std::string_view seeds[] = {
      "1",  "4096", "4097", "0", "+4", " 4", "4 ", "0004", "99999999999999999999999",
      "-1", "0x10", "3.0"};
  constexpr std::string_view alphabet{"0123456789+- x\n.", 16};
  rng r(4);
  int good = 0;
  for (int i = 0; i < 40000; ++i) {
    const std::string text =
        mutate(r, std::string(seeds[r.below(std::size(seeds))]), seeds, alphabet);
    const std::optional<std::uint64_t> v = whole_number(text, 1u << 20);
    const std::optional<unsigned> want = v && *v >= 1 && *v <= 4096
                                             ? std::optional<unsigned>(static_cast<unsigned>(*v))
                                             : std::nullopt;
    const std::optional<unsigned> got = mpg::detail::parse_procs(text);
    if (got != want) {
      INFO("round " << i << ", MPG_PROCS (escaped) \"" << absl::CHexEscape(text) << "\"");
      CHECK(got == want);
      return;
    }
    good += got.has_value();
  }
  CHECK(good > 1000);
}

// ---------------------------------------------------------------------------
// Durations

__extension__ typedef __int128 i128;

// check_saturating_add(): saturating_add(t, d) against the exact sum,
// rounded up to the nanosecond, in 128 bits. "" or what is wrong.
template <class Rep, class Period>
std::string check_saturating_add(mpg::detail::steady_time t, std::chrono::duration<Rep, Period> d) {
  using steady = mpg::detail::steady_time;
  static_assert(std::is_same_v<steady::duration, std::chrono::nanoseconds>);
  const steady got = mpg::detail::saturating_add(t, d);
  const i128 room = static_cast<i128>((steady::max() - t).count());
  steady want;
  if constexpr (std::is_floating_point_v<Rep>) {
    // A float's own rounding leaves a nanosecond of slack either way.
    using ld_ns = std::chrono::duration<long double, std::nano>;
    const long double ns = std::chrono::duration_cast<ld_ns>(d).count();
    if (!(ns > 0)) {
      want = t;
    } else if (ns >= static_cast<long double>(room) - 1) {
      if (got != steady::max() && (got - t).count() < room - 2) return "not saturated";
      return "";
    } else {
      const long double took = static_cast<long double>((got - t).count());
      if (got < t || took < ns - 1 || took > ns + 1) {
        return absl::StrCat("took ", static_cast<double>(took), " ns for ",
                            static_cast<double>(ns));
      }
      return "";
    }
  } else {
    // Checked by the property the sum must have, not by the division the
    // implementation makes: d is exactly num / den ns; the sum is t plus
    // the least whole ns >= that, or max() when that reaches room.
    using to_ns = std::ratio_divide<Period, std::nano>;
    if (d.count() <= 0) {
      want = t;
    } else {
      const i128 num = static_cast<i128>(d.count()) * to_ns::num;
      const i128 den = to_ns::den;
      if (num > static_cast<i128>(room - 1) * den) {  // the rounded-up d >= room
        want = steady::max();
      } else {
        const i128 took = (got - t).count();
        if (got == steady::max() || took * den < num || (took - 1) * den >= num) {
          return absl::StrCat("took +", (got - t).count(), " ns for ", d.count(), " of ",
                              Period::num, "/", Period::den, " s");
        }
        return "";
      }
    }
  }
  if (got != want) {
    return absl::StrCat("got +", (got - t).count(), " ns, want +", (want - t).count(), " ns");
  }
  return "";
}

// any_count(): a count of Rep from the edges (0, +-1, the extremes) or at
// random, of every magnitude.
template <class Rep>
Rep any_count(rng& r) {
  using lim = std::numeric_limits<Rep>;
  switch (r.below(6)) {
    case 0:
      return Rep(0);
    case 1:
      return Rep(1);
    case 2:
      return r.one_in(2) ? lim::max() : lim::lowest();
    default:
      if constexpr (std::is_floating_point_v<Rep>) {
        if (r.one_in(16)) return r.one_in(2) ? lim::infinity() : lim::quiet_NaN();
        const Rep mag = static_cast<Rep>(std::ldexp(1.0L, static_cast<int>(r.below(80))));
        return static_cast<Rep>(static_cast<long double>(r.next()) / 18446744073709551616.0L * mag *
                                (r.one_in(4) ? -1 : 1));
      } else {
        const unsigned long long v = r.next() >> r.below(64);
        // Negated as unsigned (no overflow at the lowest value); C++20 converts modulo.
        return static_cast<Rep>(lim::is_signed && r.one_in(4) ? 0ull - v : v);
      }
  }
}

template <class Duration>
void fuzz_saturating_add(rng& r, int rounds, const char* name) {
  using steady = mpg::detail::steady_time;
  for (int i = 0; i < rounds; ++i) {
    // t: a clock reading (or the zero the option checks use), or near the end.
    const std::int64_t t_ns = r.one_in(4) ? 0
                              : r.one_in(3)
                                  ? INT64_MAX - static_cast<std::int64_t>(r.below(1u << 30))
                                  : static_cast<std::int64_t>(r.next() >> (1 + r.below(63)));
    const steady t{std::chrono::nanoseconds(t_ns)};
    const Duration d(any_count<typename Duration::rep>(r));
    const std::string why = check_saturating_add(t, d);
    if (!why.empty()) {
      INFO(name << "(" << static_cast<long double>(d.count()) << ") after " << t_ns << " ns");
      FAIL_CHECK(why);
      return;
    }
  }
}

TEST_CASE("durations: a deadline is the exact sum rounded up, or never, for any duration type") {
  MPG_FUZZ_SEED_INFO;
  rng r(5);
  constexpr int n = 40000;
  fuzz_saturating_add<std::chrono::nanoseconds>(r, n, "nanoseconds");
  fuzz_saturating_add<std::chrono::milliseconds>(r, n, "milliseconds");
  fuzz_saturating_add<std::chrono::hours>(r, n, "hours");
  fuzz_saturating_add<std::chrono::duration<int, std::milli>>(r, n, "int milliseconds");
  fuzz_saturating_add<std::chrono::duration<unsigned long long, std::micro>>(r, n, "unsigned us");
  fuzz_saturating_add<std::chrono::duration<long long, std::pico>>(r, n, "picoseconds");
  fuzz_saturating_add<std::chrono::duration<long long, std::ratio<1, 60>>>(r, n, "frames");
  fuzz_saturating_add<std::chrono::duration<int, std::ratio<1, 3>>>(r, n, "thirds");
  fuzz_saturating_add<std::chrono::duration<long long, std::ratio<7, 3>>>(r, n, "7/3 s");
  fuzz_saturating_add<std::chrono::duration<double>>(r, n, "double seconds");
  fuzz_saturating_add<std::chrono::duration<float, std::milli>>(r, n, "float milliseconds");
}

}  // namespace
