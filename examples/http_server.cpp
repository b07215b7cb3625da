// examples/http_server.cpp: an HTTP/1.1 server with graceful shutdown.
//
// Shows: a task per connection reading requests with a buffered_reader
// (read_line for the head, read_exact for the body) and answering through a
// buffered_writer; keep-alive; clear 4xx/5xx answers to bad requests
// (examples/http_request.hpp); and Go's http.Server.Shutdown on SIGTERM or
// SIGINT: stop accepting, close the connections that wait idle for their
// next request, let the ones in the middle of a request finish it (their
// answer says "Connection: close"), and give up on stragglers after a
// grace period by closing them.
// Routes: GET / (hello), GET /healthz, POST /echo (the body back).
//
// Run:  ./build/examples/http_server [--port 8080] [--procs N]
//       curl -i localhost:8080/ ; curl -d hi localhost:8080/echo
//       wrk -c64 -d5s http://127.0.0.1:8080/
//       ./build/examples/http_server --smoke   (starts on a free port, talks
//       to itself, sends itself SIGTERM, checks the shutdown, exits 0 when
//       all is well)
#include <signal.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "http_request.hpp"
#include "mpg/buffered.hpp"
#include "mpg/mpg.hpp"
#include "mpg/signal.hpp"
#include "server_args.hpp"

using namespace std::chrono_literals;

namespace {

using reader = mpg::net::buffered_reader<mpg::net::tcp_stream>;
using writer = mpg::net::buffered_writer<mpg::net::tcp_stream>;

constexpr auto kGrace = 5s;  // how long shutdown waits for busy connections

const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
  }
}

// respond(): the status line, the headers and the body, buffered.
mpg::task<absl::Status> respond(writer& out, int status, std::string_view body, bool keep_alive) {
  std::string head = "HTTP/1.1 " + std::to_string(status) + " " + reason(status) +
                     "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
                     (keep_alive ? "\r\n\r\n" : "\r\nConnection: close\r\n\r\n");
  absl::Status s = co_await out.write(head);
  if (s.ok()) s = co_await out.write(body);
  co_return s;
}

// The server's shared state: the listener, the shutdown flag and the live
// connections (to close the idle ones at shutdown).
struct server {
  mpg::net::listener ln;
  mpg::wait_group conns;
  mpg::mutex mu;
  bool shutting_down = false;  // under mu
  struct conn_state {
    mpg::net::tcp_stream* stream;
    bool idle;  // waiting for the first line of a request
  };
  std::unordered_map<std::uint64_t, conn_state> live;  // under mu
};

// set_idle(): marks the connection idle or busy. Returns false when the
// server is shutting down and the connection should stop (idle: at once).
mpg::task<bool> set_idle(server* srv, std::uint64_t id, bool idle) {
  auto g = co_await srv->mu.scoped_lock();
  srv->live[id].idle = idle;
  co_return !srv->shutting_down;
}

// handle(): one request, whose request line has been read.
mpg::task<bool> handle(server* srv, reader& in, writer& out, std::string_view request_line) {
  http::request req;
  std::optional<http::error> err = http::parse_request_line(request_line, req);
  while (!err) {
    absl::StatusOr<std::string_view> line = co_await in.read_line();
    if (!line.ok()) {
      if (line.status().code() == absl::StatusCode::kResourceExhausted) {
        err = http::error{431, "header line too long"};
        break;
      }
      co_return false;  // the client went away mid-head
    }
    if (line->empty()) break;
    err = http::parse_header_line(*line, req);
  }
  if (err) {
    (void)co_await respond(out, err->status, std::string(err->why) + "\n", false);
    (void)co_await out.flush();
    co_return false;
  }
  std::string body;
  if (req.content_length > 0) {
    absl::StatusOr<std::string> b = co_await in.read_exact(static_cast<std::size_t>(req.content_length));
    if (!b.ok()) co_return false;
    body = std::move(*b);
  }
  bool keep = req.keep_alive;
  {
    auto g = co_await srv->mu.scoped_lock();
    if (srv->shutting_down) keep = false;  // finish this one, then close
  }
  absl::Status s;
  if (req.target == "/" || req.target == "/healthz") {
    if (req.method == "GET" || req.method == "HEAD")
      s = co_await respond(out, 200, req.target == "/" ? "Hello, world!\n" : "ok\n", keep);
    else
      s = co_await respond(out, 405, "use GET\n", keep);
  } else if (req.target == "/echo") {
    if (req.method == "POST")
      s = co_await respond(out, 200, body, keep);
    else
      s = co_await respond(out, 405, "use POST\n", keep);
  } else {
    s = co_await respond(out, 404, "not found\n", keep);
  }
  // Pipelined requests already buffered are answered before one flush.
  if (s.ok() && in.buffered() == 0) s = co_await out.flush();
  if (s.ok() && !keep) s = co_await out.flush();
  co_return s.ok() && keep;
}

mpg::task<> serve(server* srv, std::uint64_t id, mpg::net::tcp_stream conn) {
  {
    auto g = co_await srv->mu.scoped_lock();
    srv->live[id] = {&conn, true};
  }
  {
    reader in(conn, 8 * 1024);  // a header line longer than 8 KiB: 431
    writer out(conn);
    for (;;) {
      if (!co_await set_idle(srv, id, true)) break;
      absl::StatusOr<std::string_view> line = co_await in.read_line();  // closed at shutdown: an error
      if (!line.ok()) break;
      if (line->empty()) continue;  // a stray CRLF between requests
      (void)co_await set_idle(srv, id, false);  // busy: shutdown lets this request finish
      if (!co_await handle(srv, in, out, *line)) break;
    }
  }
  {
    auto g = co_await srv->mu.scoped_lock();
    srv->live.erase(id);
  }
  conn.close();
  srv->conns.done();
}

mpg::task<> accept_loop(server* srv) {
  for (std::uint64_t id = 0;; ++id) {
    absl::StatusOr<mpg::net::tcp_stream> c = co_await srv->ln.accept();
    if (!c.ok()) co_return;  // closed at shutdown
    srv->conns.add(1);
    mpg::go(serve(srv, id, std::move(*c)), "http conn");
  }
}

// shutdown(): Go's Server.Shutdown, then a forced close after kGrace.
mpg::task<> shutdown(server* srv) {
  srv->ln.close();
  {
    auto g = co_await srv->mu.scoped_lock();
    srv->shutting_down = true;
    for (auto& [id, c] : srv->live)
      if (c.idle) c.stream->close();
  }
  auto r = co_await mpg::select(srv->conns.wait(), mpg::after(kGrace).recv());
  if (r.index() == 1) {
    auto g = co_await srv->mu.scoped_lock();
    for (auto& [id, c] : srv->live) c.stream->close();
  }
  co_await srv->conns.wait();
}

// --- The smoke test ---------------------------------------------------------

mpg::task<bool> expect_response(reader& in, int status, std::string_view body) {
  absl::StatusOr<std::string_view> line = co_await in.read_line();
  const std::string want = "HTTP/1.1 " + std::to_string(status);
  if (!line.ok() || line->substr(0, want.size()) != want) {
    std::fprintf(stderr, "smoke: wanted %s, got %s\n", want.c_str(),
                 line.ok() ? std::string(*line).c_str() : line.status().ToString().c_str());
    co_return false;
  }
  std::size_t length = 0;
  for (;;) {
    absl::StatusOr<std::string_view> h = co_await in.read_line();
    if (!h.ok()) co_return false;
    if (h->empty()) break;
    constexpr std::string_view kLen = "Content-Length: ";
    if (h->substr(0, kLen.size()) == kLen) {
      const std::string_view v = h->substr(kLen.size());
      std::from_chars(v.data(), v.data() + v.size(), length);
    }
  }
  absl::StatusOr<std::string> b = co_await in.read_exact(length);
  if (!b.ok() || (!body.empty() && *b != body)) {
    std::fprintf(stderr, "smoke: wrong body for %d\n", status);
    co_return false;
  }
  co_return true;
}

mpg::task<bool> smoke_client(server* srv) {
  const std::string addr = "127.0.0.1:" + std::to_string(srv->ln.port());
  absl::StatusOr<mpg::net::tcp_stream> c = co_await mpg::net::dial(addr);
  if (!c.ok()) co_return false;
  reader in(*c);
  // Two keep-alive requests pipelined in one write, then an echo.
  if (!(co_await c->write("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")).ok())
    co_return false;
  bool ok = co_await expect_response(in, 200, "Hello, world!\n");
  ok = ok && co_await expect_response(in, 200, "ok\n");
  if (!(co_await c->write("POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")).ok()) co_return false;
  ok = ok && co_await expect_response(in, 200, "hello");
  if (!(co_await c->write("GET /nope HTTP/1.1\r\n\r\n")).ok()) co_return false;
  ok = ok && co_await expect_response(in, 404, "");
  // A malformed request on a second connection: 400 and close.
  absl::StatusOr<mpg::net::tcp_stream> bad = co_await mpg::net::dial(addr);
  if (!bad.ok()) co_return false;
  reader bad_in(*bad);
  if (!(co_await bad->write("GARBAGE\r\n\r\n")).ok()) co_return false;
  ok = ok && co_await expect_response(bad_in, 400, "");
  absl::StatusOr<std::string_view> eof = co_await bad_in.read_line();
  ok = ok && mpg::net::is_eof(eof.status());
  // Graceful shutdown: SIGTERM to ourselves; the first connection is idle
  // (keep-alive), so the server closes it: we read the end of the stream.
  ::kill(::getpid(), SIGTERM);
  absl::StatusOr<std::string_view> end = co_await in.read_line();
  ok = ok && mpg::net::is_eof(end.status());
  co_return ok;
}

mpg::task<int> run(std::string address, bool smoke) {
  auto srv = std::make_unique<server>();
  absl::StatusOr<mpg::net::listener> ln = mpg::net::listen(address);
  if (!ln.ok()) {
    std::fprintf(stderr, "listen %s: %s\n", address.c_str(), ln.status().ToString().c_str());
    co_return 1;
  }
  srv->ln = std::move(*ln);
  mpg::chan<int> sigs = mpg::signal::notify({SIGINT, SIGTERM});
  mpg::wait_group accepting;
  accepting.add(1);
  mpg::go([](server* s, mpg::wait_group* wg) -> mpg::task<> {
    co_await accept_loop(s);
    wg->done();
  }(srv.get(), &accepting));
  std::optional<mpg::join_handle<bool>> client;
  if (smoke) {
    client.emplace(mpg::spawn(smoke_client(srv.get())));
  } else {
    std::printf("listening on %s (port %u)\n", address.c_str(), srv->ln.port());
    std::fflush(stdout);
  }
  std::optional<int> sig = co_await sigs.recv();
  mpg::signal::stop(sigs);
  std::fprintf(stderr, "signal %d: shutting down\n", sig.value_or(0));
  co_await shutdown(srv.get());
  co_await accepting.wait();
  if (!client) co_return 0;
  const bool ok = co_await std::move(*client);
  std::printf("smoke test %s\n", ok ? "passed" : "FAILED");
  co_return ok ? 0 : 1;
}


}  // namespace

int main(int argc, char** argv) {
  const std::optional<example::server_args> args = example::parse_server_args(argc, argv, 8080);
  if (!args) return 2;
  mpg::runtime rt({.procs = static_cast<unsigned>(args->procs)});
  return rt.block_on(run(args->address(), args->smoke));
}
