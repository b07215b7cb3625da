// perf/servers/http_server.cpp: the mpg server of the http_hello workload:
// HTTP/1.1 keep-alive "Hello, World!", a task per connection.
//
//   http_server --port 8080 [--procs 2] [--host 127.0.0.1] [--stats 1]
//
// --stats N: the runtime's counters every N seconds (stats_sampler.hpp).
//
// A port or a procs count that is not a number in range gets the usage line
// and exit status 2.
//
// Minimal but correct request handling: requests are parsed from each
// received buffer, which may hold several (pipelining); each gets its
// response in order, and the responses to everything that arrived in one
// receive go out in one write. Lines end in CRLF or a bare LF; empty lines
// before a request line are skipped.
// Bodies with Content-Length are skipped (also when bigger than the buffer);
// chunked request bodies get 501 and the connection closes; a malformed
// request gets 400, an oversized header block 431, both closing. HTTP/1.0
// closes after the response unless it asked for keep-alive (then the
// response says "Connection: keep-alive", without which an HTTP/1.0 client
// waits for the close); "Connection: close" is honoured. The response
// matches Go's net/http for the same handler: Date, Content-Length and
// Content-Type headers.
#include <strings.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>

#include <mpg/mpg.hpp>
#include <mpg/net.hpp>

#include "http_response.hpp"
#include "server_args.hpp"
#include "stats_sampler.hpp"

namespace {

constexpr std::size_t kBuf = 8192;
using http_response::append_ok;
using http_response::append_response;
using http_response::kBody;

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && ::strncasecmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool has_token(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    std::size_t comma = list.find(',');
    if (iequals(trim(list.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

enum class parse { need_more, ok, bad, chunked };

struct request {
  std::size_t header_len = 0;  // through the blank line
  std::size_t content_length = 0;
  bool close = false;
  bool http10_keep_alive = false;  // an HTTP/1.0 request that asked for it
};

// empty_lines(): the bytes of the empty lines at the start of `in`, which
// a server ignores before a request line (RFC 9112, 2.2).
std::size_t empty_lines(std::string_view in) {
  std::size_t n = 0;
  for (;;) {
    if (n < in.size() && in[n] == '\n') {
      n += 1;
    } else if (n + 1 < in.size() && in[n] == '\r' && in[n + 1] == '\n') {
      n += 2;
    } else {
      return n;
    }
  }
}

// request_line(): METHOD SP TARGET SP HTTP/1.x; sets http10. The version
// is what follows the last space, so the line must end in " HTTP/1.1" or
// " HTTP/1.0"; checked from the end rather than found with rfind (a byte
// loop over the whole line).
parse request_line(std::string_view line, bool& http10) {
  constexpr std::string_view kVersion = " HTTP/1.";
  constexpr std::size_t kTail = kVersion.size() + 1;  // " HTTP/1.x"
  if (line.size() < kTail) return parse::bad;
  const std::string_view tail = line.substr(line.size() - kTail);
  if (tail.substr(0, kVersion.size()) != kVersion || (tail.back() != '1' && tail.back() != '0'))
    return parse::bad;
  // The first space: not the line's first byte, and not the version's.
  const std::size_t sp1 = line.find(' ');
  if (sp1 == 0 || sp1 == line.size() - kTail) return parse::bad;
  http10 = tail.back() == '0';
  return parse::ok;
}

// header_line(): one "Name: value" line of the head.
parse header_line(std::string_view line, request& rq, bool& keep_alive_asked) {
  std::size_t colon = line.find(':');
  if (colon == std::string_view::npos || colon == 0) return parse::bad;
  std::string_view name = line.substr(0, colon);
  std::string_view value = trim(line.substr(colon + 1));
  if (iequals(name, "Content-Length")) {
    std::size_t v = 0;
    if (value.empty() || value.size() > 18) return parse::bad;
    for (char c : value) {
      if (c < '0' || c > '9') return parse::bad;
      v = v * 10 + static_cast<std::size_t>(c - '0');
    }
    rq.content_length = v;
  } else if (iequals(name, "Transfer-Encoding")) {
    if (!iequals(value, "identity")) return parse::chunked;
  } else if (iequals(name, "Connection")) {
    if (has_token(value, "close")) rq.close = true;
    if (has_token(value, "keep-alive")) keep_alive_asked = true;
  }
  return parse::ok;
}

// parse_head(): one request head at the start of `in` (its first line not
// empty), in one pass over its lines: need_more until the empty line that
// ends it has arrived, then the verdict of its first bad line, if any.
// Lines end in CRLF or a bare LF (as most servers accept).
parse parse_head(std::string_view in, request& rq) {
  rq = request{};
  parse verdict = parse::ok;
  bool http10 = false;
  bool keep_alive_asked = false;
  for (std::size_t at = 0;;) {
    const std::size_t lf = in.find('\n', at);
    if (lf == std::string_view::npos) return parse::need_more;
    std::string_view line = in.substr(at, lf - at);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const bool first = at == 0;
    at = lf + 1;
    if (first) {
      verdict = request_line(line, http10);
    } else if (line.empty()) {
      rq.header_len = at;
      break;
    } else if (verdict == parse::ok) {
      verdict = header_line(line, rq, keep_alive_asked);
    }
  }
  if (verdict != parse::ok) return verdict;
  if (http10 && !keep_alive_asked) rq.close = true;
  rq.http10_keep_alive = http10 && keep_alive_asked;
  return parse::ok;
}

// parse_all(): answers every complete request in data (appending the
// responses to out); returns how many bytes it used. skip: body bytes
// still to discard; close: the connection must close after out is sent.
std::size_t parse_all(std::string_view data, std::size_t& skip, std::string& out, bool& close) {
  std::size_t pos = 0;
  for (;;) {
    if (skip > 0) {
      std::size_t k = std::min(skip, data.size() - pos);
      skip -= k;
      pos += k;
      if (skip > 0) return pos;
    }
    pos += empty_lines(data.substr(pos));
    request rq;
    parse r = parse_head(data.substr(pos), rq);
    if (r == parse::need_more) {
      if (pos == 0 && data.size() >= kBuf) {
        append_response(out, 431, "Request Header Fields Too Large", "", "close");
        close = true;
      }
      return pos;
    }
    if (r == parse::bad || r == parse::chunked) {
      if (r == parse::bad) {
        append_response(out, 400, "Bad Request", "", "close");
      } else {
        append_response(out, 501, "Not Implemented", "", "close");
      }
      close = true;
      return pos;
    }
    pos += rq.header_len;
    skip = rq.content_length;
    if (rq.close) {
      append_response(out, 200, "OK", kBody, "close");
    } else if (rq.http10_keep_alive) {  // as Go's net/http answers it
      append_response(out, 200, "OK", kBody, "keep-alive");
    } else {
      append_ok(out);
    }
    if (rq.close) {
      close = true;
      return pos;
    }
  }
}

// Requests are parsed straight from the buffers the stream receives into
// (tcp_stream::receive, a multishot recv into the P's provided buffers);
// only the start of a request that straddles two receives is copied, into a
// buffer the connection allocates then. Against reading into a buffer of
// the connection's own (run_servers.py, 2 Ps, two rounds of 3): 45 to 49%
// more requests per second and 3 to 9% less CPU per request.
mpg::task<void> handle(mpg::net::tcp_stream s) {
  std::unique_ptr<char[]> buf;  // a straddling request's start
  std::size_t have = 0;         // bytes in buf
  std::size_t skip = 0;         // body bytes still to discard
  std::string out;
  for (;;) {
    auto b = co_await s.receive();
    if (!b.ok() || b->empty()) co_return;
    std::string_view in = b->view();
    bool close = false;
    while (!in.empty() && !close) {
      std::string_view data;
      const bool direct = have == 0;
      if (direct) {
        data = in;
        in = {};
      } else {
        std::size_t k = std::min(in.size(), kBuf - have);
        std::memcpy(buf.get() + have, in.data(), k);
        have += k;
        in.remove_prefix(k);
        data = std::string_view(buf.get(), have);
      }
      std::size_t pos = parse_all(data, skip, out, close);
      std::string_view rest = data.substr(pos);
      if (rest.size() > kBuf) {  // larger than any head we take
        append_response(out, 431, "Request Header Fields Too Large", "", "close");
        close = true;
      } else if (direct) {
        if (!rest.empty()) {
          if (!buf) buf.reset(new char[kBuf]);
          std::memcpy(buf.get(), rest.data(), rest.size());
        }
        have = rest.size();
      } else {
        std::memmove(buf.get(), rest.data(), rest.size());
        have = rest.size();
      }
    }
    if (!out.empty()) {
      if (!(co_await s.write(out)).ok()) co_return;
      out.clear();
    }
    if (close) co_return;
  }
}

mpg::task<int> serve(std::string addr) {
  auto ln = mpg::net::listen(addr, {.reuse_port = false, .backlog = 4096});
  if (!ln.ok()) {
    std::fprintf(stderr, "http_server: %s\n", std::string(ln.status().message()).c_str());
    co_return 1;
  }
  std::printf("listening on %s\n", ln->address().c_str());
  std::fflush(stdout);
  // A failed accept (out of file descriptors, say) is logged and retried
  // after a pause that doubles while the failures go on, up to a second
  // (as Go's net/http does).
  constexpr std::chrono::milliseconds kFirstPause{5};
  constexpr std::chrono::milliseconds kLongestPause{1000};
  std::chrono::milliseconds pause{0};
  for (;;) {
    auto c = co_await ln->accept();
    if (c.ok()) {
      pause = {};
      mpg::go(handle(std::move(*c)), "http.conn");
      continue;
    }
    if (mpg::net::is_closed(c.status())) co_return 1;
    pause = pause.count() == 0 ? kFirstPause : std::min(2 * pause, kLongestPause);
    std::fprintf(stderr, "http_server: accept: %s; retrying in %lld ms\n",
                 std::string(c.status().message()).c_str(), static_cast<long long>(pause.count()));
    co_await mpg::sleep_for(pause);
  }
}

}  // namespace

int main(int argc, char** argv) {
  perf::args a(argc, argv);
  long procs = 0;
  long port = 8080;
  long stats = 0;
  if (!a.int_in("procs", 0, 1024, &procs) || !a.int_in("port", 0, 65535, &port) ||
      !a.int_in("stats", 0, 3600, &stats)) {
    std::fprintf(stderr, "usage: %s [--port N (0-65535)] [--procs N (0-1024; 0: the default)] "
                 "[--host ADDR] [--stats SECONDS (0-3600; 0: none)]\n", argv[0]);
    return 2;
  }
  mpg::runtime rt({.procs = static_cast<unsigned>(procs)});
  const perf::stats_sampler sampler(rt, stats);
  return rt.block_on(serve(a.str("host", "127.0.0.1") + ":" + std::to_string(port)));
}
