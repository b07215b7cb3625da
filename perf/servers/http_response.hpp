// perf/servers/http_response.hpp: the responses of perf/servers/http_server.cpp,
// with the per-thread cache of their Date header and of the common answer.
//
// Per thread. The keep-alive 200 is built whole once per second per thread
// (when its Date changes), as nginx and h2o cache their Date header, and
// each response copies it. With the one-pass parse_head() of the server,
// this took its user-space instructions per request from 2,549 to 1,669
// (callgrind, 1 P, wrk -c16), and its CPU per request from 1.09x the
// floor's to 1.07x (run_servers.py, 7 interleaved rounds).
//
// Reached through a call. The cache is a thread_local, and the server's
// tasks move between Ms. Inlined into a coroutine, clang 16 computes a
// thread_local's address once, ahead of a loop that awaits, and keeps it
// across the awaits (LLVM issue 63022, fixed in clang 17): once the task
// has moved to another M it uses the first M's cache while that M uses it
// too. The server's handler crashed so about once in forty 1-second runs
// of wrk -c64. thread_response_cache() is never inlined, so each call
// computes the address on the thread that makes it, wherever the callers
// below are inlined (mpg/detail/sched/fastrand.hpp does the same);
// test/http_response_tests.cpp resumes a coroutine on a new thread at
// every turn and checks that append_ok() filled that thread's own cache.
#pragma once

#include <ctime>
#include <string>
#include <string_view>

namespace http_response {

inline constexpr std::string_view kBody = "Hello, World!";

struct response_cache {
  std::time_t date_second = 0;  // the second `date` shows; 0: not yet made
  char date[64] = {};           // the Date header's value
  std::time_t ok_second = 0;    // the second `ok`'s Date shows; 0: not yet made
  std::string ok;               // the keep-alive 200 with kBody, whole
};

// The calling thread's cache (see "Reached through a call" above).
[[gnu::noinline]] inline response_cache& thread_response_cache() {
  thread_local response_cache cache;
  return cache;
}

// The Date header's value for the second `now`.
inline void format_date(std::time_t now, char (&text)[64]) {
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

// The Date header for the second `now`, formatted once per second per
// thread. The view lasts until this thread's next call.
inline std::string_view http_date(std::time_t now) {
  response_cache& c = thread_response_cache();
  if (now != c.date_second) {
    c.date_second = now;
    format_date(now, c.date);
  }
  return c.date;
}

// connection: the Connection header's value; empty: no such header.
inline void append_response(std::string& out, int status, std::string_view reason,
                            std::string_view body, std::string_view connection,
                            std::time_t now = std::time(nullptr)) {
  out += "HTTP/1.1 ";
  out += std::to_string(status);
  out += ' ';
  out += reason;
  out += "\r\nDate: ";
  out += http_date(now);
  out += "\r\nContent-Length: ";
  out += std::to_string(body.size());
  out += "\r\nContent-Type: text/plain; charset=utf-8\r\n";
  if (!connection.empty()) {
    out += "Connection: ";
    out += connection;
    out += "\r\n";
  }
  out += "\r\n";
  out += body;
}

// The answer to almost every request: a keep-alive 200 with kBody, from
// the thread's cache.
inline void append_ok(std::string& out) {
  response_cache& c = thread_response_cache();
  const std::time_t now = std::time(nullptr);
  if (now != c.ok_second) {
    c.ok_second = now;
    c.ok.clear();
    append_response(c.ok, 200, "OK", kBody, "", now);
  }
  out += c.ok;
}

}  // namespace http_response
