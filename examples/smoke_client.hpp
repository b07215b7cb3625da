// examples/smoke_client.hpp: the client side that both example servers'
// self-tests (--smoke) share: a connection whose reads cannot hang a
// check, the check that the server ended a connection, and the check that
// a shutdown returned in time and left no connection task behind.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/status/statusor.h"
#include "mpg/buffered.hpp"
#include "mpg/mpg.hpp"
#include "mpg/net.hpp"

namespace example {

using client_reader = mpg::net::buffered_reader<mpg::net::tcp_stream>;

// smoke_dial(): a connection for one check; a read that waits longer than
// read_timeout fails the check instead of hanging it.
inline mpg::task<absl::StatusOr<mpg::net::tcp_stream>> smoke_dial(
    std::string addr, std::chrono::seconds read_timeout) {
  absl::StatusOr<mpg::net::tcp_stream> c = co_await mpg::net::dial(addr);
  if (c.ok()) c->set_read_deadline(mpg::net::clock::now() + read_timeout);
  co_return c;
}

// expect_closed(): the server ends the connection; `what` completes the
// failure's message ("wanted the end of the stream <what>").
inline mpg::task<bool> expect_closed(client_reader& in, const char* what) {
  absl::StatusOr<std::string_view> line = co_await in.read_line();
  if (mpg::net::is_eof(line.status())) co_return true;
  std::fprintf(stderr, "smoke: wanted the end of the stream %s, got %s\n", what,
               line.ok() ? std::string(*line).c_str() : line.status().ToString().c_str());
  co_return false;
}

// shutdown_within(): the shutdown `stopped` returns within `bound`, and no
// task of `conns` (the server's connection tasks) is left running. Past
// the bound, c (the connection the shutdown may wait for) is closed so that
// the shutdown ends, and it is awaited all the same.
inline mpg::task<bool> shutdown_within(mpg::join_handle<void>& stopped,
                                       std::chrono::seconds bound,
                                       absl::StatusOr<mpg::net::tcp_stream>& c,
                                       mpg::wait_group& conns) {
  bool ok = true;
  auto r = co_await mpg::select(stopped.join(), mpg::after(bound).recv());
  if (r.index() == 1) {
    std::fprintf(stderr, "smoke: shutdown has not returned\n");
    ok = false;
    if (c.ok()) c->close();  // the connection it waits for ends
    co_await std::move(stopped);
  }
  const std::int64_t running = conns.count();
  if (running != 0) {
    std::fprintf(stderr, "smoke: shutdown returned with %lld connection tasks running\n",
                 static_cast<long long>(running));
    ok = false;
  }
  co_return ok;
}

}  // namespace example
