// test/stream_pair.hpp: a pair of connected TCP streams on 127.0.0.1, for
// the I/O tests.
#pragma once

#include <doctest/doctest.h>

#include <string>
#include <utility>

#include "mpg/mpg.hpp"
#include "mpg/net.hpp"

namespace mpg_test {

struct stream_pair {
  mpg::net::tcp_stream client, server;
};

// connect_pair(): listens on an ephemeral port, dials it and accepts.
inline mpg::task<stream_pair> connect_pair() {
  auto ln = mpg::net::listen("127.0.0.1:0");
  REQUIRE(ln.ok());
  auto accepting = mpg::spawn(ln->accept());
  // Named: a temporary in the co_await's full-expression may be destroyed
  // twice by g++ 12.
  const std::string target = "127.0.0.1:" + std::to_string(ln->port());
  auto c = co_await mpg::net::dial(target);
  REQUIRE(c.ok());
  auto s = co_await accepting;
  REQUIRE(s.ok());
  co_return stream_pair{std::move(*c), std::move(*s)};
}

}  // namespace mpg_test
