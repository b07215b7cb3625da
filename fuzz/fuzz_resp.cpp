// fuzz/fuzz_resp.cpp: libFuzzer target for the RESP request parser of
// examples/resp.hpp (resp::parse_command).
//
// Checks, besides the sanitizers' memory and UB checks: a complete request
// uses at most the bytes given and its arguments lie inside them; parsing
// is deterministic; a complete request stays complete, with the same size
// and arguments, when more bytes follow it (pipelining); every strict
// prefix of a complete multibulk request is incomplete, never an error; and
// a request_parser fed the same bytes in pieces (its split points taken
// from the input) ends with the same result as parse_command.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "resp.hpp"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view buf(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> args, again;
  std::size_t at = 0;
  while (at < buf.size()) {
    const std::string_view rest = buf.substr(at);
    const resp::parse_result r = resp::parse_command(rest, args);
    const resp::parse_result r2 = resp::parse_command(rest, again);
    check(r.status == r2.status && r.used == r2.used && args == again);
    if (r.status != resp::parse_status::complete) break;
    check(r.used > 0 && r.used <= rest.size());
    for (std::string_view a : args)
      check(a.data() >= rest.data() && a.data() + a.size() <= rest.data() + r.used);
    // The same request alone: identical.
    const resp::parse_result alone = resp::parse_command(rest.substr(0, r.used), again);
    check(alone.status == resp::parse_status::complete && alone.used == r.used && again == args);
    // Every strict prefix of a multibulk request needs more bytes.
    if (rest[0] == '*' && r.used <= 4096) {
      for (std::size_t k = 0; k < r.used; ++k) {
        const resp::parse_result p = resp::parse_command(rest.substr(0, k), again);
        check(p.status == resp::parse_status::incomplete);
      }
    }
    at += r.used;
  }
  // Incremental: grow the buffer by pieces of 1 to 16 bytes (sizes taken
  // from the bytes themselves) until the parser stops needing more.
  if (!buf.empty()) {
    const resp::parse_result whole = resp::parse_command(buf, args);
    resp::request_parser p;
    resp::parse_result r{resp::parse_status::incomplete};
    std::size_t have = 0;
    while (r.status == resp::parse_status::incomplete && have < buf.size()) {
      have += 1 + static_cast<std::uint8_t>(buf[have]) % 16;
      if (have > buf.size()) have = buf.size();
      r = p.parse(buf.substr(0, have), again);
    }
    check(r.status == whole.status);
    if (r.status == resp::parse_status::complete) check(r.used == whole.used && again == args);
  }
  return 0;
}
