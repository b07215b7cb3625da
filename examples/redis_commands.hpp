// examples/redis_commands.hpp: the commands of redis_server.cpp, run on
// the store (redis_store.hpp), and the RESP replies they append.
// Commands: PING [msg], ECHO msg, GET key, SET key value [EX s | PX ms]
// [NX | XX], INCR key, DEL key..., EXISTS key..., DBSIZE, QUIT, and CONFIG
// GET (answered with an empty list, so redis-benchmark starts quietly).
#pragma once

#include <climits>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mpg/mpg.hpp"
#include "redis_store.hpp"
#include "server_args.hpp"

namespace redis {

using example::to_int;

// --- Replies ----------------------------------------------------------------

inline void reply_line(std::string& out, char kind, std::string_view s) {
  out += kind;
  out += s;
  out += "\r\n";
}
inline void reply_simple(std::string& out, std::string_view s) { reply_line(out, '+', s); }
inline void reply_error(std::string& out, std::string_view s) { reply_line(out, '-', s); }
inline void reply_int(std::string& out, long long v) { reply_line(out, ':', std::to_string(v)); }
inline void reply_bulk(std::string& out, std::string_view s) {
  reply_line(out, '$', std::to_string(s.size()));
  out += s;
  out += "\r\n";
}
inline void reply_nil(std::string& out) { out += "$-1\r\n"; }

inline char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

inline bool equals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

// printable(): s with its control bytes (CR and LF among them) as spaces,
// to quote a client's bytes in a one-line reply.
inline std::string printable(std::string_view s) {
  std::string p(s);
  for (char& c : p)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  return p;
}

inline std::string wrong_args(std::string_view cmd) {
  std::string s = "ERR wrong number of arguments for '";
  for (char c : cmd.substr(0, 64)) s += lower(c);
  return s + "' command";
}


// --- Commands ---------------------------------------------------------------

// execute(): runs one request, appending its reply to out. Returns false
// when the connection should close after the reply (QUIT).
inline mpg::task<bool> execute(store& db, const std::vector<std::string_view>& args,
                               std::string& out) {
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
}  // namespace redis
