// test/example_parser_tests.cpp: the example servers' pure request parsers
// (examples/resp.hpp), beyond what fuzz/fuzz_resp.cpp checks.
#include <doctest/doctest.h>

#include <string_view>
#include <vector>

#include "resp.hpp"

TEST_CASE("resp: a protocol error after a request resumed reports the bytes it went through") {
  resp::request_parser p;
  std::vector<std::string_view> args;
  const std::string_view first = "*2\r\n$3\r\nGET\r\n";
  const resp::parse_result r1 = p.parse(first, args);
  REQUIRE(r1.status == resp::parse_status::incomplete);
  CHECK(r1.scanned == first.size());
  // The rest comes, and is not a bulk string: an error.
  const std::string_view whole = "*2\r\n$3\r\nGET\r\n+x\r\n";
  const resp::parse_result r2 = p.parse(whole, args);
  REQUIRE(r2.status == resp::parse_status::error);
  // scanned is "bytes this call went through": at most what the call was given.
  CHECK(r2.scanned <= whole.size());
}
