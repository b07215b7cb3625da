// examples/server_args.hpp: the command line the example servers share:
// `[--port N] [--procs N] [--smoke]`.
#pragma once

#include <charconv>
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

struct server_args {
  long long port;
  long long procs = 0;  // 0: the runtime's default
  bool smoke = false;   // a free port, and the server's self-test
  // address(): where to listen.
  std::string address() const { return smoke ? "127.0.0.1:0" : "127.0.0.1:" + std::to_string(port); }
};

// parse_server_args(): the arguments, or nullopt (after a usage line on
// stderr) when they do not parse.
inline std::optional<server_args> parse_server_args(int argc, char** argv, long long default_port) {
  server_args a{.port = default_port};
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--smoke") {
      a.smoke = true;
    } else if (arg == "--port" && i + 1 < argc && to_int(argv[i + 1], &a.port) && a.port >= 0 && a.port < 65536) {
      ++i;
    } else if (arg == "--procs" && i + 1 < argc && to_int(argv[i + 1], &a.procs) && a.procs >= 0 &&
               a.procs < 1024) {
      ++i;
    } else {
      std::fprintf(stderr, "usage: %s [--port N] [--procs N] [--smoke]\n", argv[0]);
      return std::nullopt;
    }
  }
  return a;
}

}  // namespace example
