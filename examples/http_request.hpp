// examples/http_request.hpp: the HTTP/1.1 request-head parser of
// http_server.cpp. Pure functions over one line at a time, so that
// fuzz/fuzz_http.cpp can drive them without a socket.
//
// A request head is a request line ("GET /path HTTP/1.1") and header lines
// ("Name: value"), each ended by CRLF (a bare LF is accepted, as most
// servers do), then an empty line. The caller reads the lines (the server
// with buffered_reader::read_line, which strips the line end) and feeds
// them in order; after the empty line, request::content_length says how
// many body bytes follow. Anything that cannot be a valid request gives an
// error with the status code to answer (400, 413, 431, 501, 505).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace http {

inline constexpr std::size_t kMaxHeaders = 100;
inline constexpr std::uint64_t kMaxBody = 1 << 20;

struct request {
  std::string method;
  std::string target;
  int minor_version = 1;  // HTTP/1.<minor>
  std::vector<std::pair<std::string, std::string>> headers;
  std::uint64_t content_length = 0;
  // HTTP/1.1 default; "Connection: close" or 1.0 without keep-alive clears it
  bool keep_alive = true;
};

struct error {
  int status;  // the response status to send
  std::string_view why;
};

namespace detail {

inline bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-':
    case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

inline bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!is_tchar(c)) return false;
  return true;
}

inline char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// has_token(): a comma-separated header value contains `token` (any case).
inline bool has_token(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const std::size_t comma = value.find(',');
    if (iequals(trim(value.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace detail

// parse_request_line(): "METHOD SP target SP HTTP/1.x".
inline std::optional<error> parse_request_line(std::string_view line, request& r) {
  const std::size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return error{400, "malformed request line"};
  const std::size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return error{400, "malformed request line"};
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!detail::is_token(method)) return error{400, "bad method"};
  if (target.empty()) return error{400, "empty target"};
  for (char c : target)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return error{400, "bad target"};
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/") return error{400, "bad version"};
  if (version[5] != '1' || version[6] != '.') return error{505, "HTTP version not supported"};
  if (version[7] != '0' && version[7] != '1') return error{505, "HTTP version not supported"};
  r.method.assign(method);
  r.target.assign(target);
  r.minor_version = version[7] - '0';
  r.keep_alive = r.minor_version == 1;
  return std::nullopt;
}

// parse_header_line(): "Name: value". Content-Length, Connection and
// Transfer-Encoding are interpreted; every header is kept.
inline std::optional<error> parse_header_line(std::string_view line, request& r) {
  if (r.headers.size() >= kMaxHeaders) return error{431, "too many headers"};
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos) return error{400, "header without ':'"};
  const std::string_view name = line.substr(0, colon);
  if (!detail::is_token(name)) return error{400, "bad header name"};
  const std::string_view value = detail::trim(line.substr(colon + 1));
  for (char c : value)
    if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f)
      return error{400, "bad header value"};
  if (detail::iequals(name, "Content-Length")) {
    if (value.empty() || value.size() > 19) return error{400, "bad Content-Length"};
    std::uint64_t n = 0;
    for (char c : value) {
      if (c < '0' || c > '9') return error{400, "bad Content-Length"};
      n = n * 10 + static_cast<std::uint64_t>(c - '0');
    }
    for (const auto& [k, v] : r.headers)
      if (detail::iequals(k, "Content-Length") && n != r.content_length)
        return error{400, "conflicting Content-Length"};
    if (n > kMaxBody) return error{413, "body too large"};
    r.content_length = n;
  } else if (detail::iequals(name, "Transfer-Encoding")) {
    return error{501, "Transfer-Encoding not supported"};
  } else if (detail::iequals(name, "Connection")) {
    if (detail::has_token(value, "close")) r.keep_alive = false;
    if (detail::has_token(value, "keep-alive")) r.keep_alive = true;
  }
  r.headers.emplace_back(std::string(name), std::string(value));
  return std::nullopt;
}

}  // namespace http
