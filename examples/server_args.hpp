// examples/server_args.hpp: the command line the example servers share:
//
//   [--port N] [--procs N] [--smoke]
//   [--idle-timeout D] [--read-timeout D] [--write-timeout D] [--max-conns N]
//   [--max-query-buffer BYTES]
//
// D is a duration: a whole number with a unit, "500ms" or "30s" (at most
// 24h), or "0" for none. --max-query-buffer is offered only by a server
// whose defaults give it (server_limits::max_query_buffer > 0); the four
// connection flags only by one with connections (server_limits::connections:
// udp_echo refuses them). Every value
// is checked in full: a bad one is named on stderr with what is wanted, the
// usage line follows, and main() exits with status 2.
#pragma once

#include <charconv>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace example {

// to_int(): a whole decimal integer, nothing else.
inline bool to_int(std::string_view s, long long* v) {
  if (s.empty() || s.size() > 20) return false;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, *v);
  return ec == std::errc() && p == end;
}

// int_arg(): argv value s as a whole integer in [lo, hi] into *out; false
// (after naming the value and the range on stderr) when it is not one. For
// the small examples' positional arguments.
inline bool int_arg(const char* prog, const char* what, const char* s, long long lo,
                    long long hi, long long* out) {
  if (to_int(s, out) && *out >= lo && *out <= hi) return true;
  std::fprintf(stderr, "%s: bad value for %s: '%s' (want %lld to %lld)\n", prog, what, s, lo, hi);
  return false;
}

inline constexpr std::chrono::milliseconds kMaxDuration = std::chrono::hours(24);

// to_duration(): "0", or digits followed by "ms" or "s", at most kMaxDuration.
inline bool to_duration(std::string_view s, std::chrono::milliseconds* d) {
  long long n = 0;
  long long scale = 0;
  if (s == "0") {
    *d = std::chrono::milliseconds(0);
    return true;
  }
  if (s.size() > 2 && s.substr(s.size() - 2) == "ms") {
    scale = 1;
    s.remove_suffix(2);
  } else if (s.size() > 1 && s.back() == 's') {
    scale = 1000;
    s.remove_suffix(1);
  } else {
    return false;
  }
  if (s.empty() || s[0] == '-' || s[0] == '+' || !to_int(s, &n)) return false;
  if (n > kMaxDuration.count() / scale) return false;
  *d = std::chrono::milliseconds(n * scale);
  return true;
}

// server_limits: what a server bounds per connection and in all. A server
// passes its defaults to parse_server_args(); the flags override them.
struct server_limits {
  // How long a connection may wait for the first byte of a request
  // (keep-alive, or a fresh connection); 0: no limit.
  std::chrono::milliseconds idle_timeout{0};
  // How long one request may take to arrive, from its first byte to its
  // last; 0: no limit. A connection past either deadline is closed.
  std::chrono::milliseconds read_timeout{0};
  // How long the client may take to read each 64 KiB of the replies
  // (write_timeout.hpp); 0: no limit. A connection past it is closed.
  std::chrono::milliseconds write_timeout{0};
  // Connections served at once.
  long long max_conns = 10000;
  // The most bytes of a request the server holds (0: the server has no such flag).
  long long max_query_buffer = 0;
  // The server has connections: the four flags above apply. A datagram
  // server (udp_echo) has none, and refuses them.
  bool connections = true;
};

inline constexpr long long kMaxConnsLimit = 1000000;
inline constexpr long long kMinQueryBuffer = 1024;
inline constexpr long long kMaxQueryBuffer = 1LL << 40;

struct server_args {
  long long port;
  long long procs = 0;  // 0: the runtime's default
  bool smoke = false;   // a free port, and the server's self-test
  server_limits limits;
  // address(): where to listen.
  std::string address() const {
    return smoke ? "127.0.0.1:0" : "127.0.0.1:" + std::to_string(port);
  }
};

namespace detail {

inline void usage(const char* prog, const server_limits& defaults) {
  if (!defaults.connections) {
    std::fprintf(stderr, "usage: %s [--port N] [--procs N] [--smoke]\n", prog);
    return;
  }
  std::fprintf(stderr,
               "usage: %s [--port N] [--procs N] [--smoke] [--idle-timeout D] "
               "[--read-timeout D] [--write-timeout D] [--max-conns N]%s\n"
               "  D: a duration such as 500ms or 30s (at most 24h), 0 for no limit\n",
               prog, defaults.max_query_buffer > 0 ? " [--max-query-buffer BYTES]" : "");
}

inline void bad_value(const char* prog, std::string_view flag, const char* value,
                      const char* want) {
  std::fprintf(stderr, "%s: bad value for %.*s: '%s' (want %s)\n", prog,
               static_cast<int>(flag.size()), flag.data(), value, want);
}

}  // namespace detail

// parse_server_args(): the arguments, or nullopt (after the reason and a
// usage line on stderr) when they do not parse.
inline std::optional<server_args> parse_server_args(int argc, char** argv, long long default_port,
                                                    server_limits defaults = {}) {
  server_args a{.port = default_port, .limits = defaults};
  server_limits& l = a.limits;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--smoke") {
      a.smoke = true;
      continue;
    }
    const bool connection_flag = arg == "--idle-timeout" || arg == "--read-timeout" ||
                                 arg == "--write-timeout" || arg == "--max-conns";
    const bool known = arg == "--port" || arg == "--procs" ||
                       (connection_flag && defaults.connections) ||
                       (arg == "--max-query-buffer" && defaults.max_query_buffer > 0);
    if (!known) {
      std::fprintf(stderr, "%s: unknown argument '%s'\n", argv[0], argv[i]);
      detail::usage(argv[0], defaults);
      return std::nullopt;
    }
    if (i + 1 == argc) {
      std::fprintf(stderr, "%s: %s needs a value\n", argv[0], argv[i]);
      detail::usage(argv[0], defaults);
      return std::nullopt;
    }
    const char* v = argv[++i];
    const char* want = nullptr;
    if (arg == "--port") {
      if (!to_int(v, &a.port) || a.port < 0 || a.port > 65535) want = "a port, 0 to 65535";
    } else if (arg == "--procs") {
      if (!to_int(v, &a.procs) || a.procs < 0 || a.procs > 1023) want = "0 to 1023";
    } else if (arg == "--idle-timeout") {
      if (!to_duration(v, &l.idle_timeout)) want = "a duration such as 500ms or 30s, or 0";
    } else if (arg == "--read-timeout") {
      if (!to_duration(v, &l.read_timeout)) want = "a duration such as 500ms or 30s, or 0";
    } else if (arg == "--write-timeout") {
      if (!to_duration(v, &l.write_timeout)) want = "a duration such as 500ms or 30s, or 0";
    } else if (arg == "--max-conns") {
      if (!to_int(v, &l.max_conns) || l.max_conns < 1 || l.max_conns > kMaxConnsLimit)
        want = "1 to 1000000";
    } else {  // --max-query-buffer
      if (!to_int(v, &l.max_query_buffer) || l.max_query_buffer < kMinQueryBuffer ||
          l.max_query_buffer > kMaxQueryBuffer)
        want = "bytes, 1024 to 2^40";
    }
    if (want != nullptr) {
      detail::bad_value(argv[0], arg, v, want);
      detail::usage(argv[0], defaults);
      return std::nullopt;
    }
  }
  return a;
}

}  // namespace example
