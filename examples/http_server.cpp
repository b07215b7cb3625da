// examples/http_server.cpp: an HTTP/1.1 server with graceful shutdown.
//
// Shows: a task per connection reading requests with a buffered_reader
// (read_line for the head, read_exact for the body) and answering through a
// buffered_writer, whose responses go out before any read that may wait for
// the client (pipelined requests get theirs in one write); keep-alive; HEAD;
// clear 4xx/5xx answers to bad requests (examples/http_request.hpp); and
// Go's http.Server.Shutdown on SIGTERM or SIGINT: stop accepting, close the
// connections that wait idle for their next request, let the ones in the
// middle of a request finish it (their answer says "Connection: close"),
// and give up on stragglers after a grace period by closing them. Deadlines
// through the stream's read deadline: a connection waits for a request for
// --idle-timeout at most, and a request must arrive within --read-timeout
// of its first byte (408 otherwise), so slow clients (slowloris) cannot
// hold connections; a client must take each 64 KiB of its responses within
// --write-timeout (60 s by default, as nginx's send_timeout), or it is
// closed, so one that sends requests and never reads cannot hold its
// connection for ever (write_timeout.hpp); at most --max-conns
// connections, the next ones waiting in the kernel's accept queue
// (backpressure, see accept_loop).
// Routes: GET / (hello), GET /healthz, POST /echo (the body back).
// The self-test's client checks are in http_smoke.hpp.
//
// Run:  ./build/examples/http_server [--port 8080] [--procs N] [--idle-timeout D]
//         [--read-timeout D] [--write-timeout D] [--max-conns N]
//         (server_args.hpp; defaults: kDefaultLimits)
//       curl -i localhost:8080/ ; curl -d hi localhost:8080/echo
//       wrk -c64 -d5s http://127.0.0.1:8080/
//       ./build/examples/http_server --smoke   (starts on a free port, talks
//       to itself, sends itself SIGTERM, checks the shutdown, exits 0 when
//       all is well)
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <span>
#include <string_view>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "http_request.hpp"
#include "http_smoke.hpp"
#include "mpg/buffered.hpp"
#include "mpg/mpg.hpp"
#include "mpg/signal.hpp"
#include "server_args.hpp"
#include "smoke_client.hpp"
#include "smoke_gate.hpp"
#include "smoke_poll.hpp"
#include "write_timeout.hpp"

using namespace std::chrono_literals;

namespace {

// A connection's responses go out through a write_timeout_stream: a
// client that stops taking them is closed after --write-timeout.
using writer = mpg::net::buffered_writer<example::write_timeout_stream>;

// flush_then_read: the stream a connection's requests are read from. Each
// read of the socket first sends the responses buffered in the writer: the
// read may wait for the client, and the client may be waiting for them.
// Responses to pipelined requests that arrived together go out in one
// flush, when their requests are used up.
struct flush_then_read {
  mpg::net::tcp_stream* conn;
  writer* out;
  mpg::task<absl::StatusOr<std::size_t>> read(std::span<char> buf) {
    if (absl::Status s = co_await out->flush(); !s.ok()) co_return s;
    co_return co_await conn->read(buf);
  }
};
using reader = mpg::net::buffered_reader<flush_then_read>;

// kDefaultLimits: the command line's defaults (server_args.hpp has the
// flags): a connection may wait 60 s for a request (Go's IdleTimeout) and
// a request must arrive, head and body, within 30 s of its first byte (Go's
// ReadTimeout, counted from the first byte as its ReadHeaderTimeout is);
// the client must take each 64 KiB of the responses within 60 s (nginx's
// send_timeout); 10000 connections at once.
constexpr example::server_limits kDefaultLimits = {
    .idle_timeout = 60s,
    .read_timeout = 30s,
    .write_timeout = 60s,
    .max_conns = 10000,
};

constexpr auto kGrace = 5s;   // how long shutdown waits for busy connections
constexpr auto kLinger = 1s;  // how long an error response waits for the client
constexpr std::size_t kMaxLine = 8 * 1024;  // the reader's capacity: the longest line

const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
  }
}

// respond(): the status line, the headers and (unless head_only, the
// answer to HEAD) the body, buffered. Content-Length is the body's either way.
mpg::task<absl::Status> respond(writer& out, int status, std::string_view body, bool keep_alive,
                                bool head_only = false) {
  std::string head = "HTTP/1.1 " + std::to_string(status) + " " + reason(status) +
                     "\r\nContent-Type: text/plain\r\nContent-Length: " +
                     std::to_string(body.size()) +
                     (keep_alive ? "\r\n\r\n" : "\r\nConnection: close\r\n\r\n");
  absl::Status s = co_await out.write(head);
  if (s.ok() && !head_only) s = co_await out.write(body);
  co_return s;
}

// respond_and_close(): an error response, then the end of the connection.
// The client may still be sending (the rest of an overlong line, say), and
// closing a socket with unread input resets the connection, which can
// destroy the response before the client reads it. So the response is
// followed by the end of our half of the stream, and the input is discarded
// until the client closes its half, or for kLinger at most (Go's net/http
// does the same).
mpg::task<> respond_and_close(mpg::net::tcp_stream& conn, writer& out, int status,
                              std::string_view why, bool head_only) {
  absl::Status s = co_await respond(out, status, std::string(why) + "\n", false, head_only);
  if (s.ok()) s = co_await out.flush();
  if (!s.ok() || !conn.shutdown().ok()) co_return;
  const auto deadline = mpg::net::clock::now() + kLinger;
  std::array<char, 4096> discard;
  for (;;) {
    absl::StatusOr<std::size_t> n = co_await conn.read(discard, deadline);
    if (!n.ok() || *n == 0) co_return;
  }
}

// The server's shared state: the limits, the listener, the shutdown flag
// and the live connections (to close the idle ones at shutdown).
struct server {
  server(const example::server_limits& l, example::smoke_gates g)
      : limits(l), slots(l.max_conns), gates(g) {}
  const example::server_limits limits;
  mpg::semaphore slots;  // one per connection served, limits.max_conns in all
  mpg::net::listener ln;
  mpg::wait_group accepting;  // the accept loop
  mpg::wait_group conns;      // the connections' tasks (see admit())
  mpg::mutex mu;
  // Written under mu; atomic only so that --smoke can poll it.
  std::atomic<bool> shutting_down{false};
  struct conn_state {
    mpg::net::tcp_stream* stream;
    bool idle;  // waiting for the first line of a request
  };
  std::unordered_map<std::uint64_t, conn_state> live;  // under mu
  std::atomic<std::size_t> peak_live{0};  // the most connections served at once (--smoke)
  const example::smoke_gates gates;  // --smoke's (smoke_gate.hpp)
};

// deadline_after(): now + d, or none for d == 0 (no limit).
std::optional<mpg::net::clock::time_point> deadline_after(std::chrono::milliseconds d) {
  if (d.count() == 0) return std::nullopt;
  return mpg::net::clock::now() + d;
}

// set_idle(): marks the connection idle or busy. Returns false when the
// server is shutting down and the connection should stop (idle: at once).
mpg::task<bool> set_idle(server* srv, std::uint64_t id, bool idle) {
  auto g = co_await srv->mu.scoped_lock();
  srv->live[id].idle = idle;
  co_return !srv->shutting_down.load(std::memory_order_relaxed);
}

// handle(): one request, whose request line has been read. Its response
// is buffered in out (sent by the next read of in, or at once when the
// connection closes after it). Returns whether to read another request.
mpg::task<bool> handle(server* srv, mpg::net::tcp_stream& conn, reader& in, writer& out,
                       std::string_view request_line) {
  http::request req;
  std::optional<http::error> err = http::parse_request_line(request_line, req);
  while (!err) {
    absl::StatusOr<std::string_view> line = co_await in.read_line();
    if (!line.ok()) {
      if (line.status().code() == absl::StatusCode::kResourceExhausted) {
        err = http::error{431, "header line too long"};
        break;
      }
      if (line.status().code() == absl::StatusCode::kDeadlineExceeded) {
        err = http::error{408, "request head not received in time"};
        break;
      }
      co_return false;  // the client went away mid-head
    }
    if (line->empty()) break;
    err = http::parse_header_line(*line, req);
  }
  const bool head_only = req.method == "HEAD";  // empty when the request line is bad
  if (err) {
    co_await respond_and_close(conn, out, err->status, err->why, head_only);
    co_return false;
  }
  std::string body;
  if (req.content_length > 0) {
    absl::StatusOr<std::string> b =
        co_await in.read_exact(static_cast<std::size_t>(req.content_length));
    if (!b.ok()) {
      if (b.status().code() == absl::StatusCode::kDeadlineExceeded)
        co_await respond_and_close(conn, out, 408, "request body not received in time", false);
      co_return false;
    }
    body = std::move(*b);
  }
  bool keep = req.keep_alive;
  {
    auto g = co_await srv->mu.scoped_lock();
    // Finish this one, then close.
    if (srv->shutting_down.load(std::memory_order_relaxed)) keep = false;
  }
  absl::Status s;
  if (req.target == "/" || req.target == "/healthz") {
    if (req.method == "GET" || req.method == "HEAD")
      s = co_await respond(out, 200, req.target == "/" ? "Hello, world!\n" : "ok\n", keep,
                           head_only);
    else
      s = co_await respond(out, 405, "use GET\n", keep, head_only);
  } else if (req.target == "/echo") {
    if (req.method == "POST")
      s = co_await respond(out, 200, body, keep);
    else
      s = co_await respond(out, 405, "use POST\n", keep, head_only);
  } else {
    s = co_await respond(out, 404, "not found\n", keep, head_only);
  }
  if (s.ok() && !keep) s = co_await out.flush();
  co_return s.ok() && keep;
}

mpg::task<> serve(server* srv, std::uint64_t id, mpg::net::tcp_stream conn) {
  if (srv->gates.conn_start != nullptr) co_await srv->gates.conn_start->pass();
  {
    auto g = co_await srv->mu.scoped_lock();
    srv->live[id] = {&conn, true};
    if (srv->live.size() > srv->peak_live.load()) srv->peak_live.store(srv->live.size());
  }
  {
    example::write_timeout_stream sink(conn, srv->limits.write_timeout);
    writer out(sink);
    // A request line longer than kMaxLine: 414; a header line: 431.
    flush_then_read source{&conn, &out};
    reader in(source, kMaxLine);
    for (;;) {
      // Idle, which shutdown may end by closing the stream, is waiting for
      // a request with nothing received of it and no response owed; with a
      // next request received in part or whole, the connection is busy.
      const bool idle = in.buffered() == 0;
      if (idle && !(co_await out.flush()).ok()) break;
      if (!co_await set_idle(srv, id, idle)) break;
      // Deadlines (the stream's read deadline, which the reader's reads
      // follow): idle, the first byte of a request must come within
      // idle_timeout, or the connection closes without a word (Go's
      // IdleTimeout); from that byte, the whole request, head and body,
      // must come within read_timeout, or it is answered 408 and the
      // connection closes. A slow client holds a connection that long at
      // most, however it trickles its bytes.
      if (idle) {
        conn.set_read_deadline(deadline_after(srv->limits.idle_timeout));
        if (!(co_await in.peek(1)).ok()) break;  // gone, idle too long, or closed at shutdown
      }
      conn.set_read_deadline(deadline_after(srv->limits.read_timeout));
      // Closed at shutdown: an error.
      absl::StatusOr<std::string_view> line = co_await in.read_line();
      if (!line.ok()) {
        const absl::StatusCode code = line.status().code();
        if (code == absl::StatusCode::kResourceExhausted ||
            code == absl::StatusCode::kDeadlineExceeded) {
          (void)co_await set_idle(srv, id, false);
          const bool too_long = code == absl::StatusCode::kResourceExhausted;
          co_await respond_and_close(conn, out, too_long ? 414 : 408,
                                     too_long ? "request line too long"
                                              : "request line not received in time",
                                     false);
        }
        break;
      }
      if (line->empty()) continue;  // a stray CRLF between requests
      (void)co_await set_idle(srv, id, false);  // busy: shutdown lets this request finish
      if (!co_await handle(srv, conn, in, out, *line)) break;
    }
    (void)co_await out.flush();  // what is owed when shutdown ends a busy connection
  }
  {
    auto g = co_await srv->mu.scoped_lock();
    srv->live.erase(id);
  }
  srv->slots.release();
  conn.close();
  srv->conns.done();
}

// admit(): counts a connection just accepted in srv->conns, unless
// shutdown has begun (then false: the connection is not to be served).
// Under mu, as shutdown sets its flag: a connection is counted before
// shutdown waits for srv->conns, or not at all, so shutdown never returns
// while a connection's task runs. (Its task then finds the flag set in
// set_idle(), if shutdown began meanwhile, and stops.)
mpg::task<bool> admit(server* srv) {
  auto g = co_await srv->mu.scoped_lock();
  if (srv->shutting_down.load(std::memory_order_relaxed)) co_return false;
  srv->conns.add(1);
  co_return true;
}

// accept_loop(): takes a slot (of limits.max_conns) before each accept.
// At the limit it stops accepting: new connections wait in the kernel's
// accept queue, then its SYN backlog, until a connection ends (Go's
// netutil.LimitListener). Backpressure rather than a 503: the client is
// served late rather than refused, and a refusal would cost an accept, a
// response and a lingering close per connection just when the server is
// busiest. At shutdown the loop may be waiting for a slot: the connections
// that shutdown closes free theirs, and the loop then finds the listener
// closed. A connection accept() returned just before the listener closed
// is admitted, or closed unserved once shutdown has begun (admit()).
mpg::task<> accept_loop(server* srv) {
  for (std::uint64_t id = 0;; ++id) {
    co_await srv->slots.acquire();
    absl::StatusOr<mpg::net::tcp_stream> c = co_await srv->ln.accept();
    if (c.ok() && srv->gates.accepted != nullptr) co_await srv->gates.accepted->pass();
    if (!c.ok() || !co_await admit(srv)) {  // closed at shutdown, or shutdown has begun
      srv->slots.release();
      co_return;  // c, if any, closes unserved
    }
    mpg::go(serve(srv, id, std::move(*c)), "http conn");
  }
}

// start(): a server listening on address, its accept loop running; gates:
// --smoke's (smoke_gate.hpp).
absl::StatusOr<std::unique_ptr<server>> start(const std::string& address,
                                              const example::server_limits& limits,
                                              example::smoke_gates gates = {}) {
  auto srv = std::make_unique<server>(limits, gates);
  absl::StatusOr<mpg::net::listener> ln = mpg::net::listen(address);
  if (!ln.ok()) return ln.status();
  srv->ln = std::move(*ln);
  srv->accepting.add(1);
  mpg::go([](server* s) -> mpg::task<> {
    co_await accept_loop(s);
    s->accepting.done();
  }(srv.get()));
  return srv;
}

// shutdown(): Go's Server.Shutdown, then a forced close after kGrace.
mpg::task<> shutdown(server* srv) {
  srv->ln.close();
  {
    auto g = co_await srv->mu.scoped_lock();
    srv->shutting_down.store(true, std::memory_order_relaxed);
    for (auto& [id, c] : srv->live)
      if (c.idle) c.stream->close();
  }
  auto r = co_await mpg::select(srv->conns.wait(), mpg::after(kGrace).recv());
  if (r.index() == 1) {
    auto g = co_await srv->mu.scoped_lock();
    for (auto& [id, c] : srv->live) c.stream->close();
  }
  co_await srv->conns.wait();
  co_await srv->accepting.wait();
}

// --- The self-test's servers (http_smoke.hpp has the client's checks) -----

using http::check_idle_closed;
using http::check_slow_request;
using http::check_unread_responses_closed;
using http::client_reader;
using http::expect_closed;
using http::expect_response;
using http::kSmokeLimits;
using http::report;
using http::smoke_dial;
using http::smoke_edge_cases;
using http::smoke_send;

// accept_queue(): connections the kernel has accepted for ln and the
// server has not taken yet (TCP_INFO on a listening socket reports its
// accept queue in tcpi_unacked).
std::size_t accept_queue(const mpg::net::listener& ln) {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (::getsockopt(ln.native_handle(), IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return 0;
  return info.tcpi_unacked;
}

// With one connection allowed and served, the next waits in the kernel's
// accept queue, unserved, until the first leaves; then it is served.
mpg::task<bool> check_max_conns() {
  example::server_limits limits = kDefaultLimits;
  limits.max_conns = 1;
  absl::StatusOr<std::unique_ptr<server>> srv = start("127.0.0.1:0", limits);
  if (!srv.ok()) co_return false;
  server* s = srv->get();
  const std::string addr = "127.0.0.1:" + std::to_string(s->ln.port());
  absl::StatusOr<mpg::net::tcp_stream> first = co_await smoke_send(addr, "GET / HTTP/1.1\r\n\r\n");
  if (!first.ok()) co_return false;
  client_reader first_in(*first);
  bool ok = co_await expect_response(first_in, 200, "Hello, world!\n");
  absl::StatusOr<mpg::net::tcp_stream> second =
      co_await smoke_send(addr, "GET /healthz HTTP/1.1\r\n\r\n");
  if (!second.ok()) co_return false;
  client_reader second_in(*second);
  // Either the second waits in the accept queue (the limit holds) or the
  // server took it (it does not): whichever comes first.
  ok = ok && co_await example::poll_until(
                [s] { return accept_queue(s->ln) > 0 || s->peak_live.load() > 1; });
  ok = ok && s->peak_live.load() == 1;
  first->close();
  ok = ok && co_await expect_response(second_in, 200, "ok\n") && s->peak_live.load() == 1;
  if (!ok) std::fprintf(stderr, "smoke: %zu connections served at once\n", s->peak_live.load());
  second->close();
  co_await shutdown(s);
  co_return ok;
}

// How long check_accept_during_shutdown() lets shutdown take: its grace
// period, and more.
constexpr auto kShutdownBound = kGrace + 5s;

// A connection accepted as shutdown begins, held until shutdown has closed
// the idle connections: at the accept loop's gate, just accepted, or
// (hold_task) at its task's start, counted but not listed. It is closed,
// not served, and shutdown returns, within kShutdownBound, and not while a
// task for it runs (a task held at its start would still be running).
mpg::task<bool> check_accept_during_shutdown(bool hold_task) {
  example::smoke_gate accepted;
  example::smoke_gate conn_start;
  example::smoke_gate* held = &accepted;
  if (hold_task) {
    held = &conn_start;
    accepted.open();
  }
  absl::StatusOr<std::unique_ptr<server>> srv =
      start("127.0.0.1:0", kDefaultLimits, {.accepted = &accepted, .conn_start = &conn_start});
  if (!srv.ok()) co_return false;
  server* s = srv->get();
  absl::StatusOr<mpg::net::tcp_stream> c =
      co_await smoke_dial(absl::StrCat("127.0.0.1:", s->ln.port()));
  bool ok = c.ok() && co_await example::poll_until([held] { return held->reached() == 1; });
  mpg::join_handle<void> stopped = mpg::spawn(shutdown(s));
  ok = ok && co_await example::poll_until([s] { return s->shutting_down.load(); });
  held->open();
  const bool stopped_in_time =
      co_await example::shutdown_within(stopped, kShutdownBound, c, s->conns);
  ok = ok && stopped_in_time;
  conn_start.open();
  if (ok) {
    client_reader in(*c);
    ok = co_await expect_closed(in, "after being accepted during shutdown");
  }
  if (c.ok()) c->close();
  co_await s->conns.wait();  // a task shutdown did not wait for
  co_return ok;
}

// smoke_limits(): the checks against a server with kSmokeLimits.
mpg::task<bool> smoke_limits() {
  absl::StatusOr<std::unique_ptr<server>> srv = start("127.0.0.1:0", kSmokeLimits);
  if (!srv.ok()) co_return false;
  const std::string addr = "127.0.0.1:" + std::to_string((*srv)->ln.port());
  bool ok = report(co_await check_idle_closed(addr), "idle connections: closed");
  ok &= report(co_await check_slow_request(addr, "GET / HTTP/1.1\r\nHost: x\r\n"),
               "a head that stops half way: 408");
  ok &= report(co_await check_slow_request(
                   addr, "POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nhi"),
               "a body that stops half way: 408");
  ok &= report(co_await check_unread_responses_closed(addr),
               "a client that reads no responses: closed after the write timeout");
  co_await shutdown(srv->get());
  ok &= report(co_await check_max_conns(), "a connection past --max-conns: waits for a slot");
  ok &= report(co_await check_accept_during_shutdown(false),
               "a connection accepted during shutdown: closed");
  ok &= report(co_await check_accept_during_shutdown(true),
               "a connection not yet listed at shutdown: closed");
  co_return ok;
}

mpg::task<bool> smoke_client(server* srv) {
  const std::string addr = "127.0.0.1:" + std::to_string(srv->ln.port());
  const bool edge_cases_ok = co_await smoke_edge_cases(addr);
  const bool limits_ok = co_await smoke_limits();
  absl::StatusOr<mpg::net::tcp_stream> c = co_await smoke_dial(addr);
  if (!c.ok()) co_return false;
  client_reader in(*c);
  // Two keep-alive requests pipelined in one write, then an echo.
  if (!(co_await c->write(
           "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
           .ok())
    co_return false;
  bool ok = co_await expect_response(in, 200, "Hello, world!\n");
  ok = ok && co_await expect_response(in, 200, "ok\n");
  if (!(co_await c->write("POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")).ok())
    co_return false;
  ok = ok && co_await expect_response(in, 200, "hello");
  if (!(co_await c->write("GET /nope HTTP/1.1\r\n\r\n")).ok()) co_return false;
  ok = ok && co_await expect_response(in, 404, "");
  // A malformed request on a second connection: 400 and close.
  absl::StatusOr<mpg::net::tcp_stream> bad = co_await smoke_dial(addr);
  if (!bad.ok()) co_return false;
  client_reader bad_in(*bad);
  if (!(co_await bad->write("GARBAGE\r\n\r\n")).ok()) co_return false;
  ok = ok && co_await expect_response(bad_in, 400, "");
  absl::StatusOr<std::string_view> eof = co_await bad_in.read_line();
  ok = ok && mpg::net::is_eof(eof.status());
  // Graceful shutdown: SIGTERM to ourselves; the first connection is idle
  // (keep-alive), so the server closes it: we read the end of the stream.
  ::kill(::getpid(), SIGTERM);
  absl::StatusOr<std::string_view> end = co_await in.read_line();
  ok = ok && mpg::net::is_eof(end.status());
  co_return ok && edge_cases_ok && limits_ok;
}

mpg::task<int> run(example::server_args args) {
  const std::string address = args.address();
  absl::StatusOr<std::unique_ptr<server>> srv = start(address, args.limits);
  if (!srv.ok()) {
    std::fprintf(stderr, "listen %s: %s\n", address.c_str(), srv.status().ToString().c_str());
    co_return 1;
  }
  mpg::chan<int> sigs = mpg::signal::notify({SIGINT, SIGTERM});
  std::optional<mpg::join_handle<bool>> client;
  if (args.smoke) {
    client.emplace(mpg::spawn(smoke_client(srv->get())));
  } else {
    std::printf("listening on %s (port %u)\n", address.c_str(), (*srv)->ln.port());
    std::fflush(stdout);
  }
  std::optional<int> sig = co_await sigs.recv();
  mpg::signal::stop(sigs);
  std::fprintf(stderr, "signal %d: shutting down\n", sig.value_or(0));
  co_await shutdown(srv->get());
  if (!client) co_return 0;
  const bool ok = co_await std::move(*client);
  std::printf("smoke test %s\n", ok ? "passed" : "FAILED");
  co_return ok ? 0 : 1;
}


}  // namespace

int main(int argc, char** argv) {
  const std::optional<example::server_args> args =
      example::parse_server_args(argc, argv, 8080, kDefaultLimits);
  if (!args) return 2;
  mpg::runtime rt({.procs = static_cast<unsigned>(args->procs)});
  return rt.block_on(run(*args));
}
