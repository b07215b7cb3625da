// examples/redis_server.cpp: a Redis-protocol key-value server.
//
// Shows: one task per connection; pipelining (every complete request in
// the input buffer is answered before one flush of a buffered_writer, with
// a write per 64 KiB of replies in between, so a client that does not read
// is held back by the write rather than growing the server's memory);
// a store shared by all connections, split into shards each guarded by an
// mpg::mutex (tasks park on a busy shard, threads never block); key expiry,
// lazily on access and by a background task that samples keys, as Redis
// does; graceful shutdown on SIGINT/SIGTERM through mpg::signal::notify;
// deadlines through the stream's read deadline: an idle connection is
// closed after --idle-timeout (none by default, as Redis), and a request
// must arrive in full within --read-timeout of its first bytes (slowloris);
// a bound on writes: a client must take each 64 KiB of its replies within
// --write-timeout (60 s by default), or it is closed, so one that pipelines
// requests and never reads cannot hold its connection for ever
// (write_timeout.hpp); at most --max-conns connections, the next ones
// refused (accept_loop); a request that does not fit in --max-query-buffer
// bytes is a protocol error (-ERR, then the connection closes), as are a
// bulk argument over 64 MiB and an inline request over 64 KiB (resp.hpp).
//
// Files, one concept each:
//   redis_store.hpp     the sharded store and key expiry
//   redis_commands.hpp  the commands and their replies
//   resp.hpp            the request parser (RESP2), a pure function over bytes
//   redis_conn.hpp      one connection: read, parse, run, reply
//   redis_smoke.hpp     the self-test that --smoke runs
//   redis_server.cpp    the listener, shutdown, main()
//
// Run:  ./build/examples/redis_server [--port 6380] [--procs N] [--idle-timeout D]
//         [--read-timeout D] [--write-timeout D] [--max-conns N]
//         [--max-query-buffer BYTES]
//       (server_args.hpp; the defaults are redis::kDefaultLimits, redis_conn.hpp;
//       past --max-conns a client gets "-ERR max number of clients reached")
//       redis-cli -p 6380 set greeting hello ; redis-cli -p 6380 get greeting
//       redis-benchmark -p 6380 -t get,set -P 16 -c 50 -n 1000000
//       ./build/examples/redis_server --smoke   (starts on a free port, talks
//       to itself over TCP, checks the replies, exits 0 when all is well)
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "mpg/mpg.hpp"
#include "mpg/signal.hpp"
#include "redis_conn.hpp"
#include "redis_smoke.hpp"
#include "redis_store.hpp"
#include "server_args.hpp"
#include "smoke_client.hpp"
#include "smoke_gate.hpp"
#include "smoke_poll.hpp"

namespace {

using redis::store;

// The server: an accept loop, the expiry task, the live connections (to
// close them at shutdown) and the limits they are served under.
struct server {
  server(const example::server_limits& l, example::smoke_gates g)
      : limits(l), slots(l.max_conns), gates(g) {}
  const example::server_limits limits;
  mpg::semaphore slots;  // one per connection served, limits.max_conns in all
  store db;
  mpg::net::listener ln;
  mpg::context ctx = mpg::background();
  mpg::cancel_func cancel;
  mpg::wait_group conns;
  mpg::wait_group background;  // the accept loop and the expiry task
  // Live connections, to close them at shutdown (their reads return), and
  // whether shutdown has begun. stopping is set under conns_mu in the
  // section that closes the listed connections, and admit() and
  // serve_tracked() check it under conns_mu: a connection listed before
  // that section is closed by it, and one that reaches either check after
  // it is closed unserved. Atomic only so that --smoke can poll it.
  mpg::mutex conns_mu;
  std::unordered_map<std::uint64_t, mpg::net::tcp_stream*> live;
  std::atomic<bool> stopping{false};
  redis::diagnostics diag;  // what --smoke checks
  const example::smoke_gates gates;  // --smoke's (smoke_gate.hpp)
};

// serve_tracked(): serve(), with conn listed in srv->live meanwhile (the
// stream lives in this frame); closed unserved if shutdown has begun since
// admit().
mpg::task<> serve_tracked(server* srv, std::uint64_t id, mpg::net::tcp_stream conn) {
  if (srv->gates.conn_start != nullptr) co_await srv->gates.conn_start->pass();
  bool listed = false;
  {
    auto g = co_await srv->conns_mu.scoped_lock();
    if (!srv->stopping.load(std::memory_order_relaxed)) {
      srv->live[id] = &conn;
      listed = true;
    }
  }
  if (listed) {
    srv->diag.live.fetch_add(1, std::memory_order_relaxed);
    co_await redis::serve(conn, &srv->db, srv->limits, &srv->diag);
    auto g = co_await srv->conns_mu.scoped_lock();
    srv->live.erase(id);
  }
  srv->slots.release();
  if (listed) srv->diag.live.fetch_sub(1, std::memory_order_relaxed);
  conn.close();
  srv->conns.done();
}

// refuse(): Redis' answer to a client past maxclients, then the end of the
// connection. A fresh socket's send buffer takes the line at once; the
// deadline only bounds a peer that is already gone.
mpg::task<> refuse(mpg::net::tcp_stream c) {
  (void)co_await c.write("-ERR max number of clients reached\r\n",
                         mpg::net::clock::now() + std::chrono::seconds(1));
  c.close();
}

// admit(): counts a connection just accepted in srv->conns, unless
// shutdown has begun (then false: it is not to be served). Under conns_mu,
// as shutdown sets stopping: a connection is counted before shutdown waits
// for conns, or not at all.
mpg::task<bool> admit(server* srv) {
  auto g = co_await srv->conns_mu.scoped_lock();
  if (srv->stopping.load(std::memory_order_relaxed)) co_return false;
  srv->conns.add(1);
  co_return true;
}

// accept_loop(): a connection past limits.max_conns is accepted, refused
// with an error and closed, as Redis does at maxclients: the client learns
// why at once instead of waiting in the kernel's accept queue, and the
// refusal costs no task. One that accept() returned just before the
// listener closed at shutdown is closed unserved (admit()).
mpg::task<> accept_loop(server* srv) {
  for (std::uint64_t id = 0;; ++id) {
    absl::StatusOr<mpg::net::tcp_stream> c = co_await srv->ln.accept();
    if (!c.ok()) co_return;  // closed at shutdown
    if (srv->gates.accepted != nullptr) co_await srv->gates.accepted->pass();
    if (!srv->slots.try_acquire()) {
      co_await refuse(std::move(*c));
      continue;
    }
    if (!co_await admit(srv)) {  // shutdown has begun; c closes
      srv->slots.release();
      co_return;
    }
    mpg::go(serve_tracked(srv, id, std::move(*c)), "redis conn");
  }
}

// start(): a server listening on address, its accept loop and expiry task
// running; gates: --smoke's (smoke_gate.hpp).
absl::StatusOr<std::unique_ptr<server>> start(const std::string& address,
                                              const example::server_limits& limits,
                                              example::smoke_gates gates = {}) {
  auto srv = std::make_unique<server>(limits, gates);
  absl::StatusOr<mpg::net::listener> ln = mpg::net::listen(address);
  if (!ln.ok()) return ln.status();
  srv->ln = std::move(*ln);
  auto [ctx, cancel] = mpg::with_cancel(mpg::background());
  srv->ctx = ctx;
  srv->cancel = cancel;
  srv->background.add(2);
  mpg::go([](server* s) -> mpg::task<> {
    co_await accept_loop(s);
    s->background.done();
  }(srv.get()));
  mpg::go([](server* s) -> mpg::task<> {
    co_await redis::expire_keys(&s->db, s->ctx);
    s->background.done();
  }(srv.get()));
  return srv;
}

// shutdown(): stop accepting, close every connection, wait for all tasks.
// A connection accept() returned just before the listener closed, and one
// whose task has not listed it yet, find stopping set and close (admit(),
// serve_tracked()).
mpg::task<> shutdown(server* srv) {
  srv->ln.close();  // accept() returns; no new connections
  srv->cancel();    // the expiry task stops
  {
    auto g = co_await srv->conns_mu.scoped_lock();
    srv->stopping.store(true, std::memory_order_relaxed);
    for (auto& [id, c] : srv->live) c->close();  // blocked reads return
  }
  co_await srv->conns.wait();
  co_await srv->background.wait();
}

// The limits of the server the smoke test's limit checks talk to: small
// enough to reach in a test.
example::server_limits tight_limits() {
  return {.idle_timeout = redis::kSmokeTimeout,
          .read_timeout = redis::kSmokeTimeout,
          .write_timeout = redis::kSmokeTimeout,
          .max_query_buffer = redis::kSmokeQueryBuffer};
}

example::server_limits one_conn_limits() {
  example::server_limits l = redis::kDefaultLimits;
  l.max_conns = 1;
  return l;
}

// How long check_accept_during_shutdown() lets shutdown take.
constexpr auto kShutdownBound = std::chrono::seconds(10);

// A connection accepted as shutdown begins, held until shutdown has closed
// every listed connection: at the accept loop's gate, just accepted, or
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
  absl::StatusOr<std::unique_ptr<server>> srv = start(
      "127.0.0.1:0", redis::kDefaultLimits, {.accepted = &accepted, .conn_start = &conn_start});
  if (!srv.ok()) co_return false;
  server* s = srv->get();
  absl::StatusOr<mpg::net::tcp_stream> c = co_await redis::smoke_dial(s->ln.port());
  bool ok = c.ok() && co_await example::poll_until([held] { return held->reached() == 1; });
  mpg::join_handle<void> stopped = mpg::spawn(shutdown(s));
  ok = ok && co_await example::poll_until([s] { return s->stopping.load(); });
  held->open();
  const bool stopped_in_time =
      co_await example::shutdown_within(stopped, kShutdownBound, c, s->conns);
  ok = ok && stopped_in_time;
  conn_start.open();
  if (ok) {
    redis::client_reader in(*c);
    ok = co_await redis::expect_closed(in, "of a connection accepted during shutdown");
  }
  if (c.ok()) c->close();
  co_await s->conns.wait();  // a task shutdown did not wait for
  co_return ok;
}

// smoke(): the self-test, against srv (the command line's limits), a
// second server with tight_limits(), a third that serves one connection
// and two more that are shut down as they accept one.
mpg::task<bool> smoke(server* srv) {
  const bool edge_cases_ok = co_await redis::smoke_edge_cases(srv->ln.port(), &srv->diag);
  const bool client_ok = co_await redis::smoke_client(srv->ln.port());
  absl::StatusOr<std::unique_ptr<server>> tight = start("127.0.0.1:0", tight_limits());
  if (!tight.ok()) co_return false;
  const bool limits_ok = co_await redis::smoke_limits((*tight)->ln.port(), &(*tight)->diag);
  co_await shutdown(tight->get());
  absl::StatusOr<std::unique_ptr<server>> one = start("127.0.0.1:0", one_conn_limits());
  if (!one.ok()) co_return false;
  const bool max_conns_ok = redis::report(
      co_await redis::check_max_conns((*one)->ln.port(), &(*one)->diag),
      "a connection past --max-conns: refused");
  co_await shutdown(one->get());
  bool shutdown_ok = redis::report(co_await check_accept_during_shutdown(false),
                                   "a connection accepted during shutdown: closed");
  shutdown_ok &= redis::report(co_await check_accept_during_shutdown(true),
                               "a connection not yet listed at shutdown: closed");
  co_return edge_cases_ok && client_ok && limits_ok && max_conns_ok && shutdown_ok;
}

// run(): serves until a signal (or, with smoke, until the self-test is done).
mpg::task<int> run(example::server_args args) {
  const std::string address = args.address();
  absl::StatusOr<std::unique_ptr<server>> srv = start(address, args.limits);
  if (!srv.ok()) {
    std::fprintf(stderr, "listen %s: %s\n", address.c_str(), srv.status().ToString().c_str());
    co_return 1;
  }
  int status = 0;
  if (args.smoke) {
    status = co_await smoke(srv->get()) ? 0 : 1;
    std::printf("smoke test %s\n", status == 0 ? "passed" : "FAILED");
  } else {
    mpg::chan<int> sigs = mpg::signal::notify({SIGINT, SIGTERM});
    std::printf("listening on %s (port %u)\n", address.c_str(), (*srv)->ln.port());
    std::fflush(stdout);
    std::optional<int> sig = co_await sigs.recv();
    mpg::signal::stop(sigs);
    std::printf("signal %d: shutting down\n", sig.value_or(0));
  }
  co_await shutdown(srv->get());
  co_return status;
}

}  // namespace

int main(int argc, char** argv) {
  const std::optional<example::server_args> args =
      example::parse_server_args(argc, argv, 6380, redis::kDefaultLimits);
  if (!args) return 2;
  mpg::runtime rt({.procs = static_cast<unsigned>(args->procs)});
  return rt.block_on(run(*args));
}
