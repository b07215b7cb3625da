// examples/redis_conn.hpp: one connection of redis_server.cpp: read
// requests, parse them (resp.hpp), run them (redis_commands.hpp), write the
// replies.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mpg/buffered.hpp"
#include "mpg/mpg.hpp"
#include "redis_commands.hpp"
#include "redis_store.hpp"
#include "resp.hpp"
#include "server_args.hpp"
#include "write_timeout.hpp"

namespace redis {

// kDefaultLimits: the command line's defaults (server_args.hpp has the
// flags). As Redis' own: no idle timeout (its `timeout` 0) and 10000
// clients (`maxclients`). Not in Redis: a request begun must arrive within
// 60 s, and a client must take each 64 KiB of its replies within 60 s
// (write_timeout.hpp; nginx's send_timeout). The query buffer (Redis'
// client-query-buffer-limit, 1 GB there) holds 256 MiB here, room for the
// largest argument (resp::kMaxBulk).
inline constexpr example::server_limits kDefaultLimits = {
    .idle_timeout = std::chrono::milliseconds(0),
    .read_timeout = std::chrono::seconds(60),
    .write_timeout = std::chrono::seconds(60),
    .max_conns = 10000,
    .max_query_buffer = 256LL << 20,
};

// diagnostics: what a server's connections record, for --smoke to check.
struct diagnostics {
  std::atomic<std::size_t> peak_pending_replies{0};  // the most reply bytes held at once
  std::atomic<int> live{0};  // connections served; dropped once a connection's slot is free
  std::atomic<std::uint64_t> bytes_received{0};  // read from the connections
  std::atomic<std::uint64_t> parse_scanned{0};   // bytes the parser went through (resp.hpp)
};


// Replies pending in a connection are written out once they reach this
// many bytes, even in the middle of a batch of pipelined requests.
inline constexpr std::size_t kMaxPendingReplies = 64 * 1024;

// note_pending(): keeps *peak the most reply bytes a connection has held.
inline void note_pending(std::atomic<std::size_t>* peak, std::size_t pending) {
  std::size_t seen = peak->load(std::memory_order_relaxed);
  while (pending > seen && !peak->compare_exchange_weak(seen, pending, std::memory_order_relaxed)) {
  }
}

// The query buffer's size while no request is larger (it shrinks back to
// it once a large request is done), and how long a connection that ends
// with a protocol error waits for the client to stop sending.
inline constexpr std::size_t kQueryBufferStart = 16 * 1024;
inline constexpr auto kLinger = std::chrono::seconds(1);

// close_after_error(): the end of a connection whose error reply is sent.
// The client may still be sending (the rest of an oversized request), and
// closing a socket with unread input resets the connection, which can
// destroy the reply before the client reads it. So our half of the stream
// ends first, and the input is discarded until the client closes its half,
// or for kLinger at most.
inline mpg::task<> close_after_error(mpg::net::tcp_stream& conn) {
  if (!conn.shutdown().ok()) co_return;
  const auto deadline = mpg::net::clock::now() + kLinger;
  std::vector<char> discard(16 * 1024);
  for (;;) {
    absl::StatusOr<std::size_t> n = co_await conn.read(std::span<char>(discard), deadline);
    if (!n.ok() || *n == 0) co_return;
  }
}

// deadline_after(): now + d, or none for d == 0 (no limit).
inline std::optional<mpg::net::clock::time_point> deadline_after(std::chrono::milliseconds d) {
  if (d.count() == 0) return std::nullopt;
  return mpg::net::clock::now() + d;
}

// serve(): answers requests until the client leaves, sends a protocol error
// or QUIT, misses a deadline, or the connection is closed by shutdown.
//
// Deadlines, the stream's read deadline (net.hpp), set before each read:
// with no request begun, the idle timeout from now (none by default, as
// Redis' `timeout` 0); with part of a request received, the read timeout
// from when that part was first found incomplete, so a client that
// trickles a request a byte at a time cannot hold the connection past it. A missed
// deadline closes the connection without a reply, as Redis' idle timeout
// does: the client has not finished asking.
//
// The query buffer holds the request being received (and what follows it);
// a request that does not fit in limits.max_query_buffer bytes (Redis'
// client-query-buffer-limit) is a protocol error. It grows by doubling as
// a large request needs, and shrinks back once it is done. Replies to a batch of
// pipelined requests go out in one write, or in a write per
// kMaxPendingReplies bytes of them: a client that pipelines requests and
// reads no replies then holds the connection in a write (backpressure), and
// the replies it has not read cost the server at most that much. The
// writes go through a write_timeout_stream (write_timeout.hpp): a client
// that does not take a piece (64 KiB) of its replies within
// limits.write_timeout is closed, so that write does not wait for ever.
// diag: what --smoke checks, such as the most reply bytes held at once (it
// checks the bound).
inline mpg::task<> serve(mpg::net::tcp_stream& conn, store* db,
                         const example::server_limits& limits, diagnostics* diag) {
  const auto max_buf = static_cast<std::size_t>(limits.max_query_buffer);
  std::vector<char> buf(std::min(kQueryBufferStart, max_buf));
  std::size_t begin = 0, end = 0;  // unparsed bytes: [begin, end)
  // When the request in [begin, end) must be in; none while no request is
  // begun (or there is no read timeout).
  std::optional<mpg::net::clock::time_point> request_deadline;
  bool request_begun = false;
  resp::request_parser parser;  // resumes the request at begin as more of it comes
  std::vector<std::string_view> args;
  std::string out;
  example::write_timeout_stream sink(conn, limits.write_timeout);
  mpg::net::buffered_writer<example::write_timeout_stream> writer(sink);
  for (;;) {
    bool keep = true;
    bool protocol_error = false;
    while (keep) {
      const std::string_view pending(buf.data() + begin, end - begin);
      const resp::parse_result r = parser.parse(pending, args);
      diag->parse_scanned.fetch_add(r.scanned, std::memory_order_relaxed);
      if (r.status == resp::parse_status::incomplete) break;
      if (r.status == resp::parse_status::error) {
        reply_error(out, "ERR Protocol error: " + std::string(r.error));
        keep = false;
        protocol_error = true;
        break;
      }
      if (!args.empty()) keep = co_await execute(*db, args, out);
      begin += r.used;
      request_begun = false;
      if (out.size() >= kMaxPendingReplies) {
        note_pending(&diag->peak_pending_replies, out.size());
        if (!(co_await writer.write(out)).ok()) co_return;
        out.clear();
      }
    }
    note_pending(&diag->peak_pending_replies, out.size());
    if (!out.empty()) {
      absl::Status w = co_await writer.write(out);
      if (w.ok()) w = co_await writer.flush();
      out.clear();
      if (!w.ok()) co_return;
    }
    if (protocol_error) co_await close_after_error(conn);
    if (!keep) co_return;
    // Room for more: move the partial request to the front, grow for a
    // large one up to the limit, shrink back after one.
    if (begin == end) {
      begin = end = 0;
      if (buf.size() > kQueryBufferStart) {
        buf.resize(kQueryBufferStart);
        buf.shrink_to_fit();
      }
    }
    if (begin > 0) {
      std::memmove(buf.data(), buf.data() + begin, end - begin);
      end -= begin;
      begin = 0;
    }
    if (end == buf.size()) {
      if (buf.size() >= max_buf) {
        reply_error(out, "ERR Protocol error: request exceeds the query buffer limit");
        if ((co_await writer.write(out)).ok() && (co_await writer.flush()).ok())
          co_await close_after_error(conn);
        co_return;
      }
      buf.resize(std::min(buf.size() * 2, max_buf));
    }
    if (end > begin && !request_begun) {
      request_begun = true;
      request_deadline = deadline_after(limits.read_timeout);
    }
    conn.set_read_deadline(request_begun ? request_deadline : deadline_after(limits.idle_timeout));
    absl::StatusOr<std::size_t> n =
        co_await conn.read(std::span<char>(buf.data() + end, buf.size() - end));
    if (!n.ok() || *n == 0) co_return;  // gone, past a deadline, or closed at shutdown
    end += *n;
    diag->bytes_received.fetch_add(*n, std::memory_order_relaxed);
  }
}

}  // namespace redis
