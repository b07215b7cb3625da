// test/stream_pair.hpp: a pair of connected TCP streams on 127.0.0.1, for
// the I/O tests, and a message echoed through one with receive().
#pragma once

#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

// echo_through(): msg written at p's server end and received at its client
// end, buffer by buffer; returns what arrived. The buffers go to `keep`
// when it is given, else back to the ring as each is read.
inline mpg::task<std::string> echo_through(stream_pair& p, std::string_view msg,
                                           std::vector<mpg::net::recv_buffer>* keep = nullptr) {
  REQUIRE((co_await p.server.write(msg)).ok());
  std::string got;
  while (got.size() < msg.size()) {
    auto b = co_await p.client.receive();
    REQUIRE(b.ok());
    REQUIRE(!b->empty());
    got.append(b->view());
    if (keep != nullptr) keep->push_back(std::move(*b));
  }
  co_return got;
}

}  // namespace mpg_test
