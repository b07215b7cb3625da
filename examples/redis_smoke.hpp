// examples/redis_smoke.hpp: redis_server.cpp's self-test (--smoke): a
// client that talks to the server over TCP and checks its replies.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

// Strings are built with absl::StrCat: g++ 12 warns falsely (-Wrestrict)
// on "literal" + std::string inside a coroutine.
#include "absl/strings/str_cat.h"
#include "mpg/buffered.hpp"
#include "mpg/mpg.hpp"
#include "redis_conn.hpp"
#include "smoke_client.hpp"
#include "smoke_poll.hpp"

namespace redis {

using namespace std::chrono_literals;

// The limits of the second server that smoke_limits() talks to (its idle,
// read and write timeouts, and its query buffer).
inline constexpr std::chrono::milliseconds kSmokeTimeout(200);
inline constexpr long long kSmokeQueryBuffer = 64 * 1024;


using example::client_reader;
using example::expect_closed;

inline mpg::task<bool> expect(client_reader& in, std::string_view want) {
  std::string got;
  while (got.size() < want.size()) {
    absl::StatusOr<std::string_view> line = co_await in.read_until('\n');
    if (!line.ok()) co_return false;
    got.append(*line);
  }
  if (got != want) {
    std::fprintf(stderr, "smoke: expected %.*s got %s\n", static_cast<int>(want.size()),
                 want.data(), got.c_str());
  }
  co_return got == want;
}

inline mpg::task<bool> smoke_client(std::uint16_t port) {
  absl::StatusOr<mpg::net::tcp_stream> c =
      co_await mpg::net::dial(absl::StrCat("127.0.0.1:", port));
  if (!c.ok()) co_return false;
  client_reader in(*c);
  // Pipelined: multibulk and inline requests in one write, split mid-request.
  const std::string part1 = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhel";
  const std::string part2 =
      "lo\r\nGET k\r\nINCR n\r\nINCR n\r\n*2\r\n$6\r\nEXISTS\r\n$1\r\nk\r\nDEL k n\r\nGET k\r\n"
      "PING\r\n";
  if (!(co_await c->write(part1)).ok()) co_return false;
  if (!(co_await c->write(part2)).ok()) co_return false;
  bool ok = co_await expect(in, "+OK\r\n");
  ok = ok && co_await expect(in, "$5\r\nhello\r\n");
  ok = ok && co_await expect(in, ":1\r\n");
  ok = ok && co_await expect(in, ":2\r\n");
  ok = ok && co_await expect(in, ":1\r\n");
  ok = ok && co_await expect(in, ":2\r\n");
  ok = ok && co_await expect(in, "$-1\r\n");
  ok = ok && co_await expect(in, "+PONG\r\n");
  // Expiry: PX 20 is gone after 50 ms.
  if (!(co_await c->write("SET t v PX 20\r\n")).ok()) co_return false;
  ok = ok && co_await expect(in, "+OK\r\n");
  co_await mpg::sleep_for(50ms);
  if (!(co_await c->write("GET t\r\nEXISTS t\r\n")).ok()) co_return false;
  ok = ok && co_await expect(in, "$-1\r\n");
  ok = ok && co_await expect(in, ":0\r\n");
  // A protocol error: -ERR, then the server closes.
  if (!(co_await c->write("*1\r\n+PING\r\n")).ok()) co_return false;
  ok = ok && co_await expect(in, "-ERR Protocol error: expected '$'\r\n");
  absl::StatusOr<std::string_view> after = co_await in.read_line();
  ok = ok && mpg::net::is_eof(after.status());
  co_return ok;
}

// smoke_dial(): a connection for one check; a missing reply fails the
// check instead of hanging it.
inline mpg::task<absl::StatusOr<mpg::net::tcp_stream>> smoke_dial(std::uint16_t port) {
  return example::smoke_dial(absl::StrCat("127.0.0.1:", port), 10s);
}

// Expiries that do not fit the clock are refused, and the key is not set.
inline mpg::task<bool> check_expiry_overflow(std::uint16_t port) {
  absl::StatusOr<mpg::net::tcp_stream> c = co_await smoke_dial(port);
  if (!c.ok()) co_return false;
  client_reader in(*c);
  if (!(co_await c->write("SET e v EX 9223372036854775807\r\nSET e v PX 9223372036854775807\r\n"
                          "SET e v EX 100000000000\r\nSET e v PX -5\r\nGET e\r\n"))
           .ok())
    co_return false;
  for (int i = 0; i < 4; ++i)
    if (!co_await expect(in, "-ERR invalid expire time in 'set' command\r\n")) co_return false;
  co_return co_await expect(in, "$-1\r\n");
}

// An unknown command's name comes back with its control bytes as spaces: a
// name holding CRLF cannot inject a reply.
inline mpg::task<bool> check_unknown_command_quoted(std::uint16_t port) {
  absl::StatusOr<mpg::net::tcp_stream> c = co_await smoke_dial(port);
  if (!c.ok()) co_return false;
  client_reader in(*c);
  if (!(co_await c->write("*1\r\n$10\r\nA\r\n+OK\r\nB\x01\r\nPING\r\n")).ok()) co_return false;
  co_return co_await expect(in, "-ERR unknown command 'A  +OK  B '\r\n") &&
      co_await expect(in, "+PONG\r\n");
}

// Pipelined GETs of a large value, not read until all are sent: the replies
// pending in the server stay bounded (it writes them as they grow, and the
// write waits for the client).
inline mpg::task<bool> check_pipelined_replies_bounded(std::uint16_t port,
                                                             const diagnostics* diag) {
  absl::StatusOr<mpg::net::tcp_stream> c = co_await smoke_dial(port);
  if (!c.ok()) co_return false;
  client_reader in(*c);
  constexpr std::size_t kValue = 64 * 1024;
  constexpr int kGets = 256;
  std::string burst = absl::StrCat("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$", kValue, "\r\n",
                                   std::string(kValue, 'x'), "\r\n");
  for (int i = 0; i < kGets; ++i) burst += "GET big\r\n";
  if (!(co_await c->write(burst)).ok() || !co_await expect(in, "+OK\r\n")) co_return false;
  for (int i = 0; i < kGets; ++i) {
    if (!co_await expect(in, absl::StrCat("$", kValue, "\r\n"))) co_return false;
    absl::StatusOr<std::string> v = co_await in.read_exact(kValue + 2);
    if (!v.ok()) co_return false;
  }
  const std::size_t peak = diag->peak_pending_replies.load();
  if (peak > kMaxPendingReplies + kValue + 64) {
    std::fprintf(stderr, "smoke: %zu bytes of replies were pending at once\n", peak);
    co_return false;
  }
  co_return true;
}

inline bool report(bool ok, const char* check) {
  if (!ok) std::fprintf(stderr, "smoke: check failed: %s\n", check);
  return ok;
}

// A connection that sends nothing is closed after the idle timeout.
inline mpg::task<bool> check_idle_closed(std::uint16_t port) {
  absl::StatusOr<mpg::net::tcp_stream> c = co_await smoke_dial(port);
  if (!c.ok()) co_return false;
  client_reader in(*c);
  co_return co_await expect_closed(in, "of an idle connection");
}

// A request that does not arrive in full within the read timeout ends the
// connection; the requests before it are answered.
inline mpg::task<bool> check_partial_request_closed(std::uint16_t port) {
  absl::StatusOr<mpg::net::tcp_stream> c = co_await smoke_dial(port);
  if (!c.ok()) co_return false;
  client_reader in(*c);
  if (!(co_await c->write("PING\r\n*2\r\n$4\r\nECHO\r\n$5\r\nhel")).ok()) co_return false;
  co_return co_await expect(in, "+PONG\r\n") &&
      co_await expect_closed(in, "after a request that stopped half way");
}

// With one connection allowed and served, the next is refused with
// Redis' error and closed; once the first leaves, a new one is served.
inline mpg::task<bool> check_max_conns(std::uint16_t port, const diagnostics* diag) {
  absl::StatusOr<mpg::net::tcp_stream> first = co_await smoke_dial(port);
  if (!first.ok()) co_return false;
  client_reader first_in(*first);
  if (!(co_await first->write("PING\r\n")).ok() || !co_await expect(first_in, "+PONG\r\n"))
    co_return false;
  absl::StatusOr<mpg::net::tcp_stream> second = co_await smoke_dial(port);
  if (!second.ok()) co_return false;
  client_reader second_in(*second);
  if (!co_await expect(second_in, "-ERR max number of clients reached\r\n") ||
      !co_await expect_closed(second_in, "after the refusal")) {
    co_return false;
  }
  first->close();
  if (!co_await example::poll_until([diag] { return diag->live.load() == 0; })) co_return false;
  absl::StatusOr<mpg::net::tcp_stream> third = co_await smoke_dial(port);
  if (!third.ok()) co_return false;
  client_reader third_in(*third);
  co_return (co_await third->write("PING\r\n")).ok() && co_await expect(third_in, "+PONG\r\n");
}

// A request of many arguments sent in 64 pieces, each read by the server
// before the next is sent: the parser resumes where it stopped, so it goes
// through about the request's bytes once, not once per piece.
inline mpg::task<bool> check_request_in_pieces(std::uint16_t port, const diagnostics* diag) {
  constexpr int kKeys = 10000;
  constexpr std::size_t kPieces = 64;
  std::string req = absl::StrCat("*", kKeys + 1, "\r\n$6\r\nEXISTS\r\n");
  for (int i = 0; i < kKeys; ++i) req += "$1\r\nz\r\n";
  absl::StatusOr<mpg::net::tcp_stream> c = co_await smoke_dial(port);
  if (!c.ok()) co_return false;
  client_reader in(*c);
  const std::uint64_t scanned_before = diag->parse_scanned.load();
  const std::size_t piece = req.size() / kPieces + 1;
  for (std::size_t at = 0; at < req.size(); at += piece) {
    const std::uint64_t received = diag->bytes_received.load();
    const std::string_view part = std::string_view(req).substr(at, piece);
    if (!(co_await c->write(part)).ok()) co_return false;
    const auto arrived = [&] { return diag->bytes_received.load() >= received + part.size(); };
    if (!co_await example::poll_until(arrived))
      co_return false;
  }
  if (!co_await expect(in, ":0\r\n")) co_return false;
  const std::uint64_t scanned = diag->parse_scanned.load() - scanned_before;
  if (scanned > 2 * req.size()) {
    std::fprintf(stderr, "smoke: the parser went through %llu bytes for a request of %zu\n",
                 static_cast<unsigned long long>(scanned), req.size());
    co_return false;
  }
  co_return true;
}

// smoke_edge_cases(): the checks against the server with the command line's limits.
inline mpg::task<bool> smoke_edge_cases(std::uint16_t port, const diagnostics* diag) {
  bool ok = report(co_await check_expiry_overflow(port), "SET with an expiry that does not fit");
  ok &= report(co_await check_unknown_command_quoted(port),
               "an unknown command whose name holds CR, LF, \\x01");
  ok &= report(co_await check_pipelined_replies_bounded(port, diag),
               "the replies to pipelined GETs of a 64 KiB value: bounded");
  ok &= report(co_await check_request_in_pieces(port, diag),
               "a request in 64 pieces: parsed in one pass");
  co_return ok;
}

// A request larger than the query buffer limit: a protocol error, then the
// end of the connection. The value's length is within resp::kMaxBulk: the
// query buffer is what stops it.
inline mpg::task<bool> check_query_buffer_limit(std::uint16_t port) {
  absl::StatusOr<mpg::net::tcp_stream> c = co_await smoke_dial(port);
  if (!c.ok()) co_return false;
  client_reader in(*c);
  const std::size_t value = 2 * static_cast<std::size_t>(kSmokeQueryBuffer);
  const std::string req = absl::StrCat("*3\r\n$3\r\nSET\r\n$1\r\nq\r\n$", value, "\r\n",
                                       std::string(value, 'v'), "\r\n");
  if (!(co_await c->write(req)).ok()) co_return false;
  co_return co_await expect(in,
                            "-ERR Protocol error: request exceeds the query buffer limit\r\n") &&
      co_await expect_closed(in, "after a request over the query buffer limit");
}

// A client that pipelines 1024 ECHOs of 32 KiB (32 MiB) and reads none of
// the replies: once the sockets' buffers are full, the server's write
// waits for the client, for the write timeout at most, and the server
// stops reading. Then the server closes the connection, and the client's
// write, which waits for the server to read, fails (the server's socket
// closed with input unread resets the connection) before its own deadline.
inline mpg::task<bool> check_unread_replies_closed(std::uint16_t port) {
  absl::StatusOr<mpg::net::tcp_stream> c = co_await smoke_dial(port);
  if (!c.ok()) co_return false;
  constexpr std::size_t kValue = 32 * 1024;  // within kSmokeQueryBuffer
  constexpr int kEchoes = 1024;
  const std::string echo = absl::StrCat("*2\r\n$4\r\nECHO\r\n$", kValue, "\r\n",
                                        std::string(kValue, 'e'), "\r\n");
  const auto deadline = mpg::net::clock::now() + 10s;
  absl::Status w;
  for (int i = 0; i < kEchoes && w.ok(); ++i) w = co_await c->write(echo, deadline);
  if (!w.ok() && w.code() != absl::StatusCode::kDeadlineExceeded) co_return true;
  std::fprintf(stderr, "smoke: wanted the server to close, the client's write got %s\n",
               w.ToString().c_str());
  co_return false;
}

// smoke_limits(): the checks against the server with the limits above.
inline mpg::task<bool> smoke_limits(std::uint16_t port, const diagnostics* diag) {
  (void)diag;
  bool ok = report(co_await check_idle_closed(port), "an idle connection: closed");
  ok &= report(co_await check_partial_request_closed(port), "a partial request: closed");
  ok &= report(co_await check_query_buffer_limit(port),
               "a request over the query buffer limit: an error, then closed");
  ok &= report(co_await check_unread_replies_closed(port),
               "a client that reads no replies: closed after the write timeout");
  co_return ok;
}

}  // namespace redis
