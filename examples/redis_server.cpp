// examples/redis_server.cpp: a Redis-protocol key-value server.
//
// Shows: one task per connection; pipelining (every complete request in
// the input buffer is answered before one flush of a buffered_writer, with
// a write per 64 KiB of replies in between, so a client that does not read
// is held back by the write rather than growing the server's memory);
// a store shared by all connections, split into shards each guarded by an
// mpg::mutex (tasks park on a busy shard, threads never block); key expiry,
// lazily on access and by a background task that samples keys, as Redis
// does; graceful shutdown on SIGINT/SIGTERM through mpg::signal::notify.
//
// Files, one concept each:
//   redis_store.hpp     the sharded store and key expiry
//   redis_commands.hpp  the commands and their replies
//   resp.hpp            the request parser (RESP2), a pure function over bytes
//   redis_conn.hpp      one connection: read, parse, run, reply
//   redis_smoke.hpp     the self-test that --smoke runs
//   redis_server.cpp    the listener, shutdown, main()
//
// Run:  ./build/examples/redis_server [--port 6380] [--procs N]
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

// The server: an accept loop, the expiry task, and shutdown on a signal or
// when `stop` fires (--smoke).
struct server {
  store db;
  mpg::net::listener ln;
  mpg::context ctx = mpg::background();
  mpg::cancel_func cancel;
  mpg::wait_group conns;
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
  co_await redis::serve(conn, &srv->db, &srv->diag);
  {
    auto g = co_await srv->conns_mu.scoped_lock();
    srv->live.erase(id);
  }
  srv->conns.done();
}

mpg::task<> accept_loop(server* srv) {
  for (std::uint64_t id = 0;; ++id) {
    absl::StatusOr<mpg::net::tcp_stream> c = co_await srv->ln.accept();
    if (!c.ok()) co_return;  // closed at shutdown
    srv->conns.add(1);
    mpg::go(serve_tracked(srv, id, std::move(*c)), "redis conn");
  }
}

mpg::task<> shutdown(server* srv) {
  srv->ln.close();  // accept() returns; no new connections
  srv->cancel();    // the expiry task stops
  {
    auto g = co_await srv->conns_mu.scoped_lock();
    for (auto& [id, c] : srv->live) c->close();  // blocked reads return
  }
  co_await srv->conns.wait();
}

// run(): serves until a signal (or, with smoke, until the client is done).
mpg::task<int> run(std::string address, bool smoke) {
  auto srv = std::make_unique<server>();
  absl::StatusOr<mpg::net::listener> ln = mpg::net::listen(address);
  if (!ln.ok()) {
    std::fprintf(stderr, "listen %s: %s\n", address.c_str(), ln.status().ToString().c_str());
    co_return 1;
  }
  srv->ln = std::move(*ln);
  auto [ctx, cancel] = mpg::with_cancel(mpg::background());
  srv->ctx = ctx;
  srv->cancel = cancel;
  mpg::wait_group background;
  background.add(2);
  mpg::go([](server* s, mpg::wait_group* wg) -> mpg::task<> {
    co_await accept_loop(s);
    wg->done();
  }(srv.get(), &background));
  mpg::go([](server* s, mpg::wait_group* wg) -> mpg::task<> {
    co_await redis::expire_keys(&s->db, s->ctx);
    wg->done();
  }(srv.get(), &background));

  int status = 0;
  if (smoke) {
    const bool edge_cases_ok = co_await redis::smoke_edge_cases(srv->ln.port(), &srv->diag);
    status = co_await redis::smoke_client(srv->ln.port()) && edge_cases_ok ? 0 : 1;
    std::printf("smoke test %s\n", status == 0 ? "passed" : "FAILED");
  } else {
    mpg::chan<int> sigs = mpg::signal::notify({SIGINT, SIGTERM});
    std::printf("listening on %s (port %u)\n", address.c_str(), srv->ln.port());
    std::fflush(stdout);
    std::optional<int> sig = co_await sigs.recv();
    mpg::signal::stop(sigs);
    std::printf("signal %d: shutting down\n", sig.value_or(0));
  }
  co_await shutdown(srv.get());
  co_await background.wait();
  co_return status;
}

}  // namespace

int main(int argc, char** argv) {
  const std::optional<example::server_args> args = example::parse_server_args(argc, argv, 6380);
  if (!args) return 2;
  mpg::runtime rt({.procs = static_cast<unsigned>(args->procs)});
  return rt.block_on(run(args->address(), args->smoke));
}
