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
// Commands: PING [msg], ECHO msg, GET key, SET key value [EX s | PX ms]
// [NX | XX], INCR key, DEL key..., EXISTS key..., DBSIZE, QUIT, and CONFIG
// GET (answered with an empty list, so redis-benchmark starts quietly).
//
// Run:  ./build/examples/redis_server [--port 6380] [--procs N]
//       redis-cli -p 6380 set greeting hello ; redis-cli -p 6380 get greeting
//       redis-benchmark -p 6380 -t get,set -P 16 -c 50 -n 1000000
//       ./build/examples/redis_server --smoke   (starts on a free port, talks
//       to itself over TCP, checks the replies, exits 0 when all is well)
#include <signal.h>


#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mpg/mpg.hpp"
#include "mpg/buffered.hpp"
#include "mpg/signal.hpp"
#include "server_args.hpp"
#include "resp.hpp"

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

using example::to_int;

namespace {

// --- The store --------------------------------------------------------------

struct entry {
  std::string value;
  std::optional<clock_type::time_point> expires;
  bool expired(clock_type::time_point now) const { return expires && *expires <= now; }
};

// Heterogeneous lookup: find a std::string key by std::string_view.
struct key_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view k) const noexcept { return std::hash<std::string_view>{}(k); }
};
using key_map = std::unordered_map<std::string, entry, key_hash, std::equal_to<>>;

class store {
 public:
  static constexpr std::size_t kShards = 64;

  struct shard {
    mpg::mutex mu;
    key_map map;
  };

  shard& shard_of(std::string_view key) { return shards_[(key_hash{}(key) >> 7) % kShards]; }
  shard& shard_at(std::size_t i) { return shards_[i % kShards]; }

  // find(): the live entry of key in s (s.mu held), erasing it if expired.
  static entry* find(shard& s, std::string_view key, clock_type::time_point now) {
    auto it = s.map.find(key);
    if (it == s.map.end()) return nullptr;
    if (it->second.expired(now)) {
      s.map.erase(it);
      return nullptr;
    }
    return &it->second;
  }

 private:
  std::array<shard, kShards> shards_;
};

// Active expiry: every 100 ms, look at up to 20 keys with a deadline in each
// of a few shards and drop the expired ones (Redis samples likewise).
mpg::task<> expire_keys(store* db, mpg::context ctx) {
  std::size_t next = 0;
  for (;;) {
    auto r = co_await mpg::select(mpg::after(100ms).recv(), ctx.done().recv());
    if (r.index() == 1) co_return;
    const auto now = clock_type::now();
    for (int k = 0; k < 4; ++k, ++next) {
      store::shard& s = db->shard_at(next);
      auto guard = co_await s.mu.scoped_lock();
      int looked = 0;
      for (auto it = s.map.begin(); it != s.map.end() && looked < 20;) {
        if (!it->second.expires) {
          ++it;
          continue;
        }
        ++looked;
        if (it->second.expired(now))
          s.map.erase(it++);
        else
          ++it;
      }
    }
  }
}

// --- Replies ----------------------------------------------------------------

void reply_line(std::string& out, char kind, std::string_view s) {
  out += kind;
  out += s;
  out += "\r\n";
}
void reply_simple(std::string& out, std::string_view s) { reply_line(out, '+', s); }
void reply_error(std::string& out, std::string_view s) { reply_line(out, '-', s); }
void reply_int(std::string& out, long long v) { reply_line(out, ':', std::to_string(v)); }
void reply_bulk(std::string& out, std::string_view s) {
  reply_line(out, '$', std::to_string(s.size()));
  out += s;
  out += "\r\n";
}
void reply_nil(std::string& out) { out += "$-1\r\n"; }

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool equals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

// printable(): s with its control bytes (CR and LF among them) as spaces,
// to quote a client's bytes in a one-line reply.
std::string printable(std::string_view s) {
  std::string p(s);
  for (char& c : p)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  return p;
}

std::string wrong_args(std::string_view cmd) {
  std::string s = "ERR wrong number of arguments for '";
  for (char c : cmd.substr(0, 64)) s += lower(c);
  return s + "' command";
}


// --- Commands ---------------------------------------------------------------

// execute(): runs one request, appending its reply to out. Returns false
// when the connection should close after the reply (QUIT).
mpg::task<bool> execute(store& db, const std::vector<std::string_view>& args, std::string& out) {
  const std::string_view cmd = args[0];
  const std::size_t argc = args.size();
  const auto now = clock_type::now();

  if (equals(cmd, "GET")) {
    if (argc != 2) {
      reply_error(out, wrong_args(cmd));
      co_return true;
    }
    store::shard& s = db.shard_of(args[1]);
    auto guard = co_await s.mu.scoped_lock();
    if (entry* e = store::find(s, args[1], now))
      reply_bulk(out, e->value);
    else
      reply_nil(out);
    co_return true;
  }
  if (equals(cmd, "SET")) {
    if (argc < 3) {
      reply_error(out, wrong_args(cmd));
      co_return true;
    }
    std::optional<clock_type::time_point> expires;
    bool nx = false, xx = false;
    for (std::size_t i = 3; i < argc; ++i) {
      if ((equals(args[i], "EX") || equals(args[i], "PX")) && i + 1 < argc) {
        // An expiry must be positive and its deadline within the clock's
        // range (Redis likewise refuses one past its millisecond clock).
        const bool seconds = equals(args[i], "EX");
        using std::chrono::milliseconds;
        const long long room_ms =
            std::chrono::duration_cast<milliseconds>(clock_type::time_point::max() - now).count();
        long long v = 0;
        if (!to_int(args[i + 1], &v) || v <= 0 || v > (seconds ? room_ms / 1000 : room_ms)) {
          reply_error(out, "ERR invalid expire time in 'set' command");
          co_return true;
        }
        expires = now + milliseconds(seconds ? v * 1000 : v);
        ++i;
      } else if (equals(args[i], "NX")) {
        nx = true;
      } else if (equals(args[i], "XX")) {
        xx = true;
      } else {
        reply_error(out, "ERR syntax error");
        co_return true;
      }
    }
    if (nx && xx) {
      reply_error(out, "ERR syntax error");
      co_return true;
    }
    store::shard& s = db.shard_of(args[1]);
    auto guard = co_await s.mu.scoped_lock();
    entry* e = store::find(s, args[1], now);
    if ((nx && e != nullptr) || (xx && e == nullptr)) {
      reply_nil(out);
      co_return true;
    }
    if (e == nullptr) e = &s.map[std::string(args[1])];
    e->value.assign(args[2]);
    e->expires = expires;
    reply_simple(out, "OK");
    co_return true;
  }
  if (equals(cmd, "INCR")) {
    if (argc != 2) {
      reply_error(out, wrong_args(cmd));
      co_return true;
    }
    store::shard& s = db.shard_of(args[1]);
    auto guard = co_await s.mu.scoped_lock();
    entry* e = store::find(s, args[1], now);
    long long v = 0;
    if (e != nullptr && !to_int(e->value, &v)) {
      reply_error(out, "ERR value is not an integer or out of range");
      co_return true;
    }
    if (v == LLONG_MAX) {
      reply_error(out, "ERR increment or decrement would overflow");
      co_return true;
    }
    ++v;
    if (e == nullptr) e = &s.map[std::string(args[1])];
    e->value = std::to_string(v);
    reply_int(out, v);
    co_return true;
  }
  if (equals(cmd, "DEL") || equals(cmd, "EXISTS")) {
    if (argc < 2) {
      reply_error(out, wrong_args(cmd));
      co_return true;
    }
    const bool del = equals(cmd, "DEL");
    long long n = 0;
    for (std::size_t i = 1; i < argc; ++i) {
      store::shard& s = db.shard_of(args[i]);
      auto guard = co_await s.mu.scoped_lock();
      if (store::find(s, args[i], now) == nullptr) continue;
      ++n;
      if (del) s.map.erase(s.map.find(args[i]));
    }
    reply_int(out, n);
    co_return true;
  }
  if (equals(cmd, "PING")) {
    if (argc > 2) {
      reply_error(out, wrong_args(cmd));
    } else if (argc == 2) {
      reply_bulk(out, args[1]);
    } else {
      reply_simple(out, "PONG");
    }
    co_return true;
  }
  if (equals(cmd, "ECHO")) {
    if (argc != 2)
      reply_error(out, wrong_args(cmd));
    else
      reply_bulk(out, args[1]);
    co_return true;
  }
  if (equals(cmd, "DBSIZE")) {
    long long n = 0;
    for (std::size_t i = 0; i < store::kShards; ++i) {
      store::shard& s = db.shard_at(i);
      auto guard = co_await s.mu.scoped_lock();
      n += static_cast<long long>(s.map.size());
    }
    reply_int(out, n);
    co_return true;
  }
  if (equals(cmd, "CONFIG") && argc >= 2 && equals(args[1], "GET")) {
    out += "*0\r\n";
    co_return true;
  }
  if (equals(cmd, "QUIT")) {
    reply_simple(out, "OK");
    co_return false;
  }
  reply_error(out, "ERR unknown command '" + printable(cmd.substr(0, 64)) + "'");
  co_return true;
}

// --- Connections ------------------------------------------------------------

// Replies pending in a connection are written out once they reach this
// many bytes, even in the middle of a batch of pipelined requests.
constexpr std::size_t kMaxPendingReplies = 64 * 1024;

// note_pending(): keeps *peak the most reply bytes a connection has held.
void note_pending(std::atomic<std::size_t>* peak, std::size_t pending) {
  std::size_t seen = peak->load(std::memory_order_relaxed);
  while (pending > seen && !peak->compare_exchange_weak(seen, pending, std::memory_order_relaxed)) {
  }
}

// serve(): answers requests until the client leaves, sends a protocol error
// or QUIT, or the connection is closed by shutdown. Replies to a batch of
// pipelined requests go out in one write, or in a write per
// kMaxPendingReplies bytes of them: a client that pipelines requests and
// reads no replies then holds the connection in a write (backpressure), and
// the replies it has not read cost the server at most that much.
// peak_pending: diagnostics, the most reply bytes held at once (--smoke
// checks the bound).
mpg::task<> serve(mpg::net::tcp_stream& conn, store* db, std::atomic<std::size_t>* peak_pending) {
  std::vector<char> buf(16 * 1024);
  std::size_t begin = 0, end = 0;  // unparsed bytes: [begin, end)
  std::vector<std::string_view> args;
  std::string out;
  mpg::net::buffered_writer<mpg::net::tcp_stream> writer(conn);
  for (;;) {
    bool keep = true;
    while (keep) {
      const std::string_view pending(buf.data() + begin, end - begin);
      const resp::parse_result r = resp::parse_command(pending, args);
      if (r.status == resp::parse_status::incomplete) break;
      if (r.status == resp::parse_status::error) {
        reply_error(out, "ERR Protocol error: " + std::string(r.error));
        keep = false;
        break;
      }
      if (!args.empty()) keep = co_await execute(*db, args, out);
      begin += r.used;
      if (out.size() >= kMaxPendingReplies) {
        note_pending(peak_pending, out.size());
        if (!(co_await writer.write(out)).ok()) co_return;
        out.clear();
      }
    }
    note_pending(peak_pending, out.size());
    if (!out.empty()) {
      absl::Status w = co_await writer.write(out);
      if (w.ok()) w = co_await writer.flush();
      out.clear();
      if (!w.ok()) co_return;
    }
    if (!keep) co_return;
    // Room for more: move the partial request to the front, grow for a
    // large one.
    if (begin > 0) {
      std::memmove(buf.data(), buf.data() + begin, end - begin);
      end -= begin;
      begin = 0;
    }
    if (end == buf.size()) buf.resize(buf.size() * 2);
    absl::StatusOr<std::size_t> n = co_await conn.read(std::span<char>(buf.data() + end, buf.size() - end));
    if (!n.ok() || *n == 0) co_return;  // gone, or closed at shutdown
    end += *n;
  }
}

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
  std::atomic<std::size_t> peak_pending_replies{0};  // serve()'s diagnostics
};

// serve_tracked(): serve(), with conn listed in srv->live meanwhile (the
// stream lives in this frame).
mpg::task<> serve_tracked(server* srv, std::uint64_t id, mpg::net::tcp_stream conn) {
  {
    auto g = co_await srv->conns_mu.scoped_lock();
    srv->live[id] = &conn;
  }
  co_await serve(conn, &srv->db, &srv->peak_pending_replies);
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

// --- The smoke test ---------------------------------------------------------

mpg::task<bool> expect(mpg::net::buffered_reader<mpg::net::tcp_stream>& in, std::string_view want) {
  std::string got;
  while (got.size() < want.size()) {
    absl::StatusOr<std::string_view> line = co_await in.read_until('\n');
    if (!line.ok()) co_return false;
    got.append(*line);
  }
  if (got != want) std::fprintf(stderr, "smoke: expected %.*s got %s\n", static_cast<int>(want.size()), want.data(), got.c_str());
  co_return got == want;
}

mpg::task<bool> smoke_client(std::uint16_t port) {
  absl::StatusOr<mpg::net::tcp_stream> c = co_await mpg::net::dial("127.0.0.1:" + std::to_string(port));
  if (!c.ok()) co_return false;
  mpg::net::buffered_reader<mpg::net::tcp_stream> in(*c);
  // Pipelined: multibulk and inline requests in one write, split mid-request.
  const std::string part1 = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhel";
  const std::string part2 = "lo\r\nGET k\r\nINCR n\r\nINCR n\r\n*2\r\n$6\r\nEXISTS\r\n$1\r\nk\r\nDEL k n\r\nGET k\r\nPING\r\n";
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
mpg::task<absl::StatusOr<mpg::net::tcp_stream>> smoke_dial(std::uint16_t port) {
  absl::StatusOr<mpg::net::tcp_stream> c =
      co_await mpg::net::dial("127.0.0.1:" + std::to_string(port));
  if (c.ok()) c->set_read_deadline(mpg::net::clock::now() + 10s);
  co_return c;
}

// Expiries that do not fit the clock are refused, and the key is not set.
mpg::task<bool> check_expiry_overflow(std::uint16_t port) {
  absl::StatusOr<mpg::net::tcp_stream> c = co_await smoke_dial(port);
  if (!c.ok()) co_return false;
  mpg::net::buffered_reader<mpg::net::tcp_stream> in(*c);
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
mpg::task<bool> check_unknown_command_quoted(std::uint16_t port) {
  absl::StatusOr<mpg::net::tcp_stream> c = co_await smoke_dial(port);
  if (!c.ok()) co_return false;
  mpg::net::buffered_reader<mpg::net::tcp_stream> in(*c);
  if (!(co_await c->write("*1\r\n$10\r\nA\r\n+OK\r\nB\x01\r\nPING\r\n")).ok()) co_return false;
  co_return co_await expect(in, "-ERR unknown command 'A  +OK  B '\r\n") &&
      co_await expect(in, "+PONG\r\n");
}

// Pipelined GETs of a large value, not read until all are sent: the replies
// pending in the server stay bounded (it writes them as they grow, and the
// write waits for the client).
mpg::task<bool> check_pipelined_replies_bounded(std::uint16_t port, const server* srv) {
  absl::StatusOr<mpg::net::tcp_stream> c = co_await smoke_dial(port);
  if (!c.ok()) co_return false;
  mpg::net::buffered_reader<mpg::net::tcp_stream> in(*c);
  constexpr std::size_t kValue = 64 * 1024;
  constexpr int kGets = 256;
  std::string burst = "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$" + std::to_string(kValue) + "\r\n" +
                      std::string(kValue, 'x') + "\r\n";
  for (int i = 0; i < kGets; ++i) burst += "GET big\r\n";
  if (!(co_await c->write(burst)).ok() || !co_await expect(in, "+OK\r\n")) co_return false;
  for (int i = 0; i < kGets; ++i) {
    if (!co_await expect(in, "$" + std::to_string(kValue) + "\r\n")) co_return false;
    absl::StatusOr<std::string> v = co_await in.read_exact(kValue + 2);
    if (!v.ok()) co_return false;
  }
  const std::size_t peak = srv->peak_pending_replies.load();
  if (peak > kMaxPendingReplies + kValue + 64) {
    std::fprintf(stderr, "smoke: %zu bytes of replies were pending at once\n", peak);
    co_return false;
  }
  co_return true;
}

bool report(bool ok, const char* check) {
  if (!ok) std::fprintf(stderr, "smoke: check failed: %s\n", check);
  return ok;
}

mpg::task<bool> smoke_edge_cases(std::uint16_t port, const server* srv) {
  bool ok = report(co_await check_expiry_overflow(port), "SET with an expiry that does not fit");
  ok &= report(co_await check_unknown_command_quoted(port),
               "an unknown command whose name holds CR, LF, \\x01");
  ok &= report(co_await check_pipelined_replies_bounded(port, srv),
               "the replies to pipelined GETs of a 64 KiB value: bounded");
  co_return ok;
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
    co_await expire_keys(&s->db, s->ctx);
    wg->done();
  }(srv.get(), &background));

  int status = 0;
  if (smoke) {
    const bool edge_cases_ok = co_await smoke_edge_cases(srv->ln.port(), srv.get());
    status = co_await smoke_client(srv->ln.port()) && edge_cases_ok ? 0 : 1;
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
