// examples/http_smoke.hpp: http_server.cpp's self-test (--smoke): the
// checks a client makes over TCP against a running server, given its
// address. (The checks that start servers of their own, and shut them
// down, are in http_server.cpp.)
#pragma once

#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

// Strings are built with absl::StrCat: g++ 12 warns falsely (-Wrestrict)
// on "literal" + std::string inside a coroutine.
#include "absl/strings/str_cat.h"
#include "mpg/buffered.hpp"
#include "mpg/mpg.hpp"
#include "server_args.hpp"
#include "smoke_client.hpp"

namespace http {

using namespace std::chrono_literals;

using example::client_reader;
using example::expect_closed;

// The smoke client's connections: a read that waits longer than this fails
// the check instead of hanging it.
inline constexpr auto kSmokeReadTimeout = 5s;

inline mpg::task<absl::StatusOr<mpg::net::tcp_stream>> smoke_dial(const std::string& addr) {
  return example::smoke_dial(addr, kSmokeReadTimeout);
}

// expect_head(): reads a response's status line and headers; the
// Content-Length, or nullopt when the status is not `status`.
inline mpg::task<std::optional<std::size_t>> expect_head(client_reader& in, int status) {
  absl::StatusOr<std::string_view> line = co_await in.read_line();
  const std::string want = absl::StrCat("HTTP/1.1 ", status);
  if (!line.ok() || line->substr(0, want.size()) != want) {
    std::fprintf(stderr, "smoke: wanted %s, got %s\n", want.c_str(),
                 line.ok() ? std::string(*line).c_str() : line.status().ToString().c_str());
    co_return std::nullopt;
  }
  std::size_t length = 0;
  for (;;) {
    absl::StatusOr<std::string_view> h = co_await in.read_line();
    if (!h.ok()) co_return std::nullopt;
    if (h->empty()) break;
    constexpr std::string_view kLen = "Content-Length: ";
    if (h->substr(0, kLen.size()) == kLen) {
      const std::string_view v = h->substr(kLen.size());
      std::from_chars(v.data(), v.data() + v.size(), length);
    }
  }
  co_return length;
}

inline mpg::task<bool> expect_response(client_reader& in, int status, std::string_view body) {
  const std::optional<std::size_t> length = co_await expect_head(in, status);
  if (!length) co_return false;
  absl::StatusOr<std::string> b = co_await in.read_exact(*length);
  if (!b.ok() || (!body.empty() && *b != body)) {
    std::fprintf(stderr, "smoke: wrong body for %d\n", status);
    co_return false;
  }
  co_return true;
}

// smoke_send(): a connection of its own for one check, with `request`
// sent.
inline mpg::task<absl::StatusOr<mpg::net::tcp_stream>> smoke_send(const std::string& addr,
                                                                  std::string request) {
  absl::StatusOr<mpg::net::tcp_stream> c = co_await smoke_dial(addr);
  if (!c.ok()) co_return c;
  if (absl::Status s = co_await c->write(request); !s.ok()) co_return s;
  co_return c;
}

inline mpg::task<bool> check_trailing_crlf(const std::string& addr) {
  absl::StatusOr<mpg::net::tcp_stream> c = co_await smoke_send(addr, "GET / HTTP/1.1\r\n\r\n\r\n");
  if (!c.ok()) co_return false;
  client_reader in(*c);
  co_return co_await expect_response(in, 200, "Hello, world!\n");
}

inline mpg::task<bool> check_body_then_crlf(const std::string& addr) {
  absl::StatusOr<mpg::net::tcp_stream> c =
      co_await smoke_send(addr, "POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi\r\n");
  if (!c.ok()) co_return false;
  client_reader in(*c);
  co_return co_await expect_response(in, 200, "hi");
}

inline mpg::task<bool> check_next_request_partial(const std::string& addr) {
  absl::StatusOr<mpg::net::tcp_stream> c =
      co_await smoke_send(addr, "GET /healthz HTTP/1.1\r\n\r\nG");
  if (!c.ok()) co_return false;
  client_reader in(*c);
  if (!co_await expect_response(in, 200, "ok\n")) co_return false;
  if (!(co_await c->write("ET / HTTP/1.1\r\n\r\n")).ok()) co_return false;
  co_return co_await expect_response(in, 200, "Hello, world!\n");
}

inline mpg::task<bool> check_head(const std::string& addr) {
  absl::StatusOr<mpg::net::tcp_stream> c =
      co_await smoke_send(addr, "HEAD / HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n");
  if (!c.ok()) co_return false;
  client_reader in(*c);
  const std::optional<std::size_t> length = co_await expect_head(in, 200);
  if (length != std::string_view("Hello, world!\n").size()) co_return false;
  co_return co_await expect_response(in, 200, "ok\n");  // not the HEAD's body
}

inline mpg::task<bool> check_long_request_line(const std::string& addr) {
  absl::StatusOr<mpg::net::tcp_stream> c =
      co_await smoke_send(addr, absl::StrCat("GET /", std::string(9000, 'a'), " HTTP/1.1\r\n\r\n"));
  if (!c.ok()) co_return false;
  client_reader in(*c);
  co_return co_await expect_response(in, 414, "") && co_await expect_closed(in, "after 414");
}

inline bool report(bool ok, const char* check) {
  if (!ok) std::fprintf(stderr, "smoke: check failed: %s\n", check);
  return ok;
}

// Each response goes out before the server waits for more input: after a
// request followed by a stray CRLF, after a body followed by CRLF, and
// with the start of the next request already received. HEAD gets the
// headers of GET and no body. A request line over the reader's capacity
// gets 414, then the connection closes.
inline mpg::task<bool> smoke_edge_cases(const std::string& addr) {
  bool ok = report(co_await check_trailing_crlf(addr), "a request followed by CRLF");
  ok &= report(co_await check_body_then_crlf(addr), "a body followed by CRLF");
  ok &= report(co_await check_next_request_partial(addr), "the next request partly received");
  ok &= report(co_await check_head(addr), "HEAD: GET's headers, no body");
  ok &= report(co_await check_long_request_line(addr), "a request line over 8 KiB: 414");
  co_return ok;
}

// The limits of the second server that smoke_limits() talks to: small
// enough to reach in a test.
inline constexpr example::server_limits kSmokeLimits = {
    .idle_timeout = 200ms,
    .read_timeout = 200ms,
    .write_timeout = 200ms,
};

// A connection that sends nothing, fresh or after a response, is closed
// after the idle timeout.
inline mpg::task<bool> check_idle_closed(const std::string& addr) {
  absl::StatusOr<mpg::net::tcp_stream> fresh = co_await smoke_dial(addr);
  if (!fresh.ok()) co_return false;
  client_reader fresh_in(*fresh);
  if (!co_await expect_closed(fresh_in, "after an idle new connection")) co_return false;
  absl::StatusOr<mpg::net::tcp_stream> c = co_await smoke_send(addr, "GET / HTTP/1.1\r\n\r\n");
  if (!c.ok()) co_return false;
  client_reader in(*c);
  co_return co_await expect_response(in, 200, "Hello, world!\n") &&
      co_await expect_closed(in, "after an idle keep-alive connection");
}

// A request whose head, or body, does not arrive within the read timeout:
// 408, then the connection closes.
inline mpg::task<bool> check_slow_request(const std::string& addr, std::string request) {
  absl::StatusOr<mpg::net::tcp_stream> c = co_await smoke_send(addr, std::move(request));
  if (!c.ok()) co_return false;
  client_reader in(*c);
  co_return co_await expect_response(in, 408, "") && co_await expect_closed(in, "after 408");
}

// A client that sends 128 echo requests of 256 KiB (32 MiB) and reads none
// of the responses: once the sockets' buffers are full, the server's write
// waits for the client, for the write timeout at most, and the server
// stops reading. Then the server closes the connection, and the client's
// write, which waits for the server to read, fails (the server's socket
// closed with input unread resets the connection) before its own deadline.
inline mpg::task<bool> check_unread_responses_closed(const std::string& addr) {
  absl::StatusOr<mpg::net::tcp_stream> c = co_await smoke_dial(addr);
  if (!c.ok()) co_return false;
  constexpr std::size_t kBody = 256 * 1024;  // within http::kMaxBody
  constexpr int kEchoes = 128;
  const std::string echo = absl::StrCat("POST /echo HTTP/1.1\r\nContent-Length: ", kBody,
                                        "\r\n\r\n", std::string(kBody, 'e'));
  const auto deadline = mpg::net::clock::now() + 10s;
  absl::Status w;
  for (int i = 0; i < kEchoes && w.ok(); ++i) w = co_await c->write(echo, deadline);
  if (!w.ok() && w.code() != absl::StatusCode::kDeadlineExceeded) co_return true;
  std::fprintf(stderr, "smoke: wanted the server to close, the client's write got %s\n",
               w.ToString().c_str());
  co_return false;
}

}  // namespace http
