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

namespace {

using redis::store;

// The server: an accept loop, the expiry task, the live connections (to
// close them at shutdown) and the limits they are served under.
struct server {
  explicit server(const example::server_limits& l) : limits(l), slots(l.max_conns) {}
  const example::server_limits limits;
  mpg::semaphore slots;  // one per connection served, limits.max_conns in all
  store db;
  mpg::net::listener ln;
  mpg::context ctx = mpg::background();
  mpg::cancel_func cancel;
  mpg::wait_group conns;
  mpg::wait_group background;  // the accept loop and the expiry task
  // Live connections, to close them at shutdown (their reads return).
  mpg::mutex conns_mu;
  std::unordered_map<std::uint64_t, mpg::net::tcp_stream*> live;
  redis::diagnostics diag;  // what --smoke checks
};

// serve_tracked(): serve(), with conn listed in srv->live meanwhile (the
// stream lives in this frame).
mpg::task<> serve_tracked(server* srv, std::uint64_t id, mpg::net::tcp_stream conn) {
  {
    auto g = co_await srv->conns_mu.scoped_lock();
    srv->live[id] = &conn;
  }
  srv->diag.live.fetch_add(1, std::memory_order_relaxed);
  co_await redis::serve(conn, &srv->db, srv->limits, &srv->diag);
  {
    auto g = co_await srv->conns_mu.scoped_lock();
    srv->live.erase(id);
  }
  srv->slots.release();
  srv->diag.live.fetch_sub(1, std::memory_order_relaxed);
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

// accept_loop(): a connection past limits.max_conns is accepted, refused
// with an error and closed, as Redis does at maxclients: the client learns
// why at once instead of waiting in the kernel's accept queue, and the
// refusal costs no task.
mpg::task<> accept_loop(server* srv) {
  for (std::uint64_t id = 0;; ++id) {
    absl::StatusOr<mpg::net::tcp_stream> c = co_await srv->ln.accept();
    if (!c.ok()) co_return;  // closed at shutdown
    if (!srv->slots.try_acquire()) {
      co_await refuse(std::move(*c));
      continue;
    }
    srv->conns.add(1);
    mpg::go(serve_tracked(srv, id, std::move(*c)), "redis conn");
  }
}

// start(): a server listening on address, its accept loop and expiry task
// running.
absl::StatusOr<std::unique_ptr<server>> start(const std::string& address,
                                              const example::server_limits& limits) {
  auto srv = std::make_unique<server>(limits);
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
mpg::task<> shutdown(server* srv) {
  srv->ln.close();  // accept() returns; no new connections
  srv->cancel();    // the expiry task stops
  {
    auto g = co_await srv->conns_mu.scoped_lock();
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

// smoke(): the self-test, against srv (the command line's limits), a
// second server with tight_limits() and a third that serves one connection.
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
  co_return edge_cases_ok && client_ok && limits_ok && max_conns_ok;
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
