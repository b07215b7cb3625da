// examples/resp.hpp: the request side of the Redis protocol (RESP2), as
// redis_server.cpp reads it. Pure code over bytes, so that
// fuzz/fuzz_resp.cpp can drive it without a socket.
//
// A request is either a multibulk array of bulk strings
//     *2\r\n$3\r\nGET\r\n$3\r\nkey\r\n
// or an inline command (what `redis-cli` and telnet users type)
//     GET key\r\n
// request_parser::parse() (resuming) and parse_command() (from the start)
// look at the front of a buffer and say whether a whole request is there
// (and how many bytes it takes), whether more bytes are needed, or whether
// the bytes can never form a request (a protocol error: the server answers
// -ERR and closes the connection, as Redis does).
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
  std::size_t scanned = 0;      // diagnostics: bytes this call went through
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

}  // namespace detail

// request_parser: parse_command() that resumes. A request that arrives in
// pieces is parsed as it comes: each call goes on from where the last one
// stopped, so the bytes of a request are gone through about once however
// many pieces it takes (parsing from the start each time would cost the
// request's size per piece: quadratic for a large request in small reads).
//
// The caller passes the buffer of unparsed bytes each time: the same bytes
// as in the last call (they may have moved in memory, so the parser keeps
// offsets, never pointers), possibly followed by more. After a complete
// request or an error the parser is ready for the next request; reset()
// forgets a request in progress.
//
// State between calls, all offsets from the start of the request:
//   at_       the bytes parsed: the count line and whole arguments, or for
//             an inline request the bytes known to hold no '\n'
//   left_     arguments still to parse; -1 before the count line
//   bulk_     the length of the argument whose "$len" line is parsed and
//             whose bytes have not all come; -1 when there is none
//   spans_    where the parsed arguments lie (turned into views at the end)
class request_parser {
 public:
  parse_result parse(std::string_view buf, std::vector<std::string_view>& args) {
    args.clear();
    if (buf.empty()) return {parse_status::incomplete};
    const std::size_t from = at_;
    parse_result r = buf[0] == '*' ? parse_multibulk(buf, args) : parse_inline(buf, args);
    // An error leaves at_ where the parser stopped (used is 0 then).
    r.scanned = (r.status == parse_status::complete ? r.used : at_) - from;
    if (r.status != parse_status::incomplete) reset();
    return r;
  }

  void reset() noexcept {
    at_ = 0;
    left_ = -1;
    bulk_ = -1;
    spans_.clear();
  }

 private:
  parse_result parse_inline(std::string_view buf, std::vector<std::string_view>& args) {
    const std::size_t nl = buf.find('\n', at_);
    if (nl == std::string_view::npos) {
      at_ = buf.size();
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

  parse_result parse_multibulk(std::string_view buf, std::vector<std::string_view>& args) {
    if (left_ < 0) {
      const std::size_t end = detail::line_end(buf, 1);
      if (end == std::string_view::npos) {
        if (buf.size() > 32) return {parse_status::error, 0, "invalid multibulk length"};
        return {parse_status::incomplete};
      }
      std::int64_t n = 0;
      if (!detail::parse_int(buf.substr(1, end - 1), &n) || n > kMaxArgs)
        return {parse_status::error, 0, "invalid multibulk length"};
      at_ = end + 2;
      if (n <= 0) return {parse_status::complete, at_};
      left_ = n;
      spans_.reserve(static_cast<std::size_t>(n) < 64 ? static_cast<std::size_t>(n) : 64);
    }
    while (left_ > 0) {
      if (bulk_ < 0) {
        if (at_ >= buf.size()) return {parse_status::incomplete};
        if (buf[at_] != '$') return {parse_status::error, 0, "expected '$'"};
        const std::size_t end = detail::line_end(buf, at_ + 1);
        if (end == std::string_view::npos) {
          if (buf.size() - at_ > 32) return {parse_status::error, 0, "invalid bulk length"};
          return {parse_status::incomplete};
        }
        std::int64_t len = 0;
        if (!detail::parse_int(buf.substr(at_ + 1, end - at_ - 1), &len) || len < 0 ||
            len > kMaxBulk)
          return {parse_status::error, 0, "invalid bulk length"};
        at_ = end + 2;
        bulk_ = len;
      }
      const auto ulen = static_cast<std::size_t>(bulk_);
      if (buf.size() - at_ < ulen + 2) return {parse_status::incomplete};
      if (buf[at_ + ulen] != '\r' || buf[at_ + ulen + 1] != '\n')
        return {parse_status::error, 0, "bulk string not followed by CRLF"};
      spans_.push_back({at_, ulen});
      at_ += ulen + 2;
      bulk_ = -1;
      --left_;
    }
    args.reserve(spans_.size());
    for (const auto& [off, len] : spans_) args.push_back(buf.substr(off, len));
    return {parse_status::complete, at_};
  }

  struct span {
    std::size_t off;
    std::size_t len;
  };
  std::size_t at_ = 0;
  std::int64_t left_ = -1;
  std::int64_t bulk_ = -1;
  std::vector<span> spans_;
};

// parse_command(): the request at the front of buf, parsed from its start.
// On complete, args holds views into buf (valid while buf is) and may be
// empty (an empty inline line, or "*0\r\n": the server ignores those, as
// Redis does). args is cleared first in every case.
inline parse_result parse_command(std::string_view buf, std::vector<std::string_view>& args) {
  return request_parser().parse(buf, args);
}

}  // namespace resp
