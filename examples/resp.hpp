// examples/resp.hpp: the request side of the Redis protocol (RESP2), as
// redis_server.cpp reads it. A pure function over bytes, so that
// fuzz/fuzz_resp.cpp can drive it without a socket.
//
// A request is either a multibulk array of bulk strings
//     *2\r\n$3\r\nGET\r\n$3\r\nkey\r\n
// or an inline command (what `redis-cli` and telnet users type)
//     GET key\r\n
// parse_command() looks at the front of a buffer and says whether a whole
// request is there (and how many bytes it takes), whether more bytes are
// needed, or whether the bytes can never form a request (a protocol error:
// the server answers -ERR and closes the connection, as Redis does).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace resp {

// Limits, as Redis' defaults (proto-max-bulk-len is 512 MB there; an example
// server keeps it smaller).
inline constexpr std::int64_t kMaxArgs = 1024 * 1024;
inline constexpr std::int64_t kMaxBulk = 64 * 1024 * 1024;
inline constexpr std::size_t kMaxInline = 64 * 1024;

enum class parse_status { complete, incomplete, error };

struct parse_result {
  parse_status status;
  std::size_t used = 0;         // complete: bytes the request takes
  std::string_view error = {};  // error: what was wrong
};

namespace detail {

// parse_int(): a decimal "-?[0-9]+" of at most 18 digits.
inline bool parse_int(std::string_view digits, std::int64_t* out) {
  bool neg = false;
  std::size_t i = 0;
  if (!digits.empty() && digits[0] == '-') {
    neg = true;
    i = 1;
  }
  if (digits.size() == i || digits.size() - i > 18) return false;
  std::int64_t v = 0;
  for (; i < digits.size(); ++i) {
    const char c = digits[i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');  // 18 digits at most: no overflow
  }
  *out = neg ? -v : v;
  return true;
}

// line_end(): where the next "\r\n" at or after `at` starts; npos when
// there is none yet.
inline std::size_t line_end(std::string_view buf, std::size_t at) { return buf.find("\r\n", at); }

inline parse_result parse_inline(std::string_view buf, std::vector<std::string_view>& args) {
  const std::size_t nl = buf.find('\n');
  if (nl == std::string_view::npos) {
    if (buf.size() > kMaxInline) return {parse_status::error, 0, "too big inline request"};
    return {parse_status::incomplete};
  }
  if (nl > kMaxInline) return {parse_status::error, 0, "too big inline request"};
  std::string_view line = buf.substr(0, nl);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    const std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) args.push_back(line.substr(start, i - start));
  }
  return {parse_status::complete, nl + 1};
}

}  // namespace detail

// parse_command(): the request at the front of buf. On complete, args holds
// views into buf (valid while buf is) and may be empty (an empty inline
// line, or "*0\r\n": the server ignores those, as Redis does). args is
// cleared first in every case.
inline parse_result parse_command(std::string_view buf, std::vector<std::string_view>& args) {
  args.clear();
  if (buf.empty()) return {parse_status::incomplete};
  if (buf[0] != '*') return detail::parse_inline(buf, args);

  std::size_t end = detail::line_end(buf, 1);
  if (end == std::string_view::npos) {
    if (buf.size() > 32) return {parse_status::error, 0, "invalid multibulk length"};
    return {parse_status::incomplete};
  }
  std::int64_t n = 0;
  if (!detail::parse_int(buf.substr(1, end - 1), &n) || n > kMaxArgs)
    return {parse_status::error, 0, "invalid multibulk length"};
  std::size_t at = end + 2;
  if (n <= 0) return {parse_status::complete, at};
  args.reserve(static_cast<std::size_t>(n) < 64 ? static_cast<std::size_t>(n) : 64);
  for (std::int64_t k = 0; k < n; ++k) {
    if (at >= buf.size()) return {parse_status::incomplete};
    if (buf[at] != '$') return {parse_status::error, 0, "expected '$'"};
    end = detail::line_end(buf, at + 1);
    if (end == std::string_view::npos) {
      if (buf.size() - at > 32) return {parse_status::error, 0, "invalid bulk length"};
      return {parse_status::incomplete};
    }
    std::int64_t len = 0;
    if (!detail::parse_int(buf.substr(at + 1, end - at - 1), &len) || len < 0 || len > kMaxBulk)
      return {parse_status::error, 0, "invalid bulk length"};
    at = end + 2;
    const auto ulen = static_cast<std::size_t>(len);
    if (buf.size() - at < ulen + 2) return {parse_status::incomplete};
    if (buf[at + ulen] != '\r' || buf[at + ulen + 1] != '\n')
      return {parse_status::error, 0, "bulk string not followed by CRLF"};
    args.push_back(buf.substr(at, ulen));
    at += ulen + 2;
  }
  return {parse_status::complete, at};
}

}  // namespace resp
