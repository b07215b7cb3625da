// fuzz/fuzz_http.cpp: libFuzzer target for the HTTP/1.1 request-head parser
// of examples/http_request.hpp.
//
// The input is split into lines at '\n' (a trailing '\r' stripped), as the
// server's buffered_reader::read_line gives them: the first is the request
// line, the rest headers up to an empty line. Checks, besides the
// sanitizers: an error carries a 4xx/5xx status and a reason; a parsed
// request has a token method, a target without spaces or controls, version
// 1.0 or 1.1, a body length within the limit, at most kMaxHeaders headers;
// and parsing is deterministic.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string_view>
#include <vector>

#include "http_request.hpp"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

std::optional<http::error> parse(const std::vector<std::string_view>& lines, http::request& r) {
  if (lines.empty()) return http::error{400, "empty"};
  if (auto e = http::parse_request_line(lines[0], r)) return e;
  for (std::size_t i = 1; i < lines.size() && !lines[i].empty(); ++i)
    if (auto e = http::parse_header_line(lines[i], r)) return e;
  return std::nullopt;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> lines;
  while (!in.empty()) {
    const std::size_t nl = in.find('\n');
    std::string_view line = in.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    if (nl == std::string_view::npos) break;
    in.remove_prefix(nl + 1);
  }
  http::request a, b;
  const std::optional<http::error> ea = parse(lines, a);
  const std::optional<http::error> eb = parse(lines, b);
  check(ea.has_value() == eb.has_value());
  if (ea) {
    check(ea->status == eb->status && ea->status >= 400 && ea->status <= 599 && !ea->why.empty());
    return 0;
  }
  check(a.method == b.method && a.target == b.target && a.content_length == b.content_length);
  check(!a.method.empty() && !a.target.empty());
  for (char c : a.target) check(static_cast<unsigned char>(c) > 0x20 && c != 0x7f);
  check(a.minor_version == 0 || a.minor_version == 1);
  check(a.content_length <= http::kMaxBody);
  check(a.headers.size() <= http::kMaxHeaders);
  return 0;
}
