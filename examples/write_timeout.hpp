// examples/write_timeout.hpp: the example servers' bound on writes
// (--write-timeout): a client that sends requests and never reads the
// replies cannot hold a connection, its task and its buffers, for ever.
//
// write_timeout_stream is the stream a connection's buffered_writer sends
// through. It sends in pieces of at most kWritePiece bytes, each under the
// stream's write deadline (net.hpp, set_write_deadline) set to the timeout
// from when the piece is begun. A piece the client does not take in time
// fails the write with kDeadlineExceeded, and the server closes the
// connection. The bound is on the client's progress, not on a reply's
// size, as nginx's send_timeout (60 s between two writes) is: a client that
// takes kWritePiece bytes per timeout is served however large its replies,
// and one that stops reading is closed one timeout after the sockets'
// buffers fill. (Redis can bound the replies a client leaves unread by
// their size, client-output-buffer-limit; redis_server holds at most one
// batch of them, redis_conn.hpp, so what is left to bound is the time.)
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "mpg/mpg.hpp"
#include "mpg/net.hpp"

namespace example {

inline constexpr std::size_t kWritePiece = 64 * 1024;

// write_timeout_stream: writes to conn (which must outlive it), each piece
// within timeout; timeout 0: no limit (the stream's write deadline is
// cleared before each piece).
class write_timeout_stream {
 public:
  write_timeout_stream(mpg::net::tcp_stream& conn, std::chrono::milliseconds timeout)
      : conn_(&conn), timeout_(timeout) {}

  mpg::task<absl::Status> write(std::string_view data) {
    const std::string_view one[1] = {data};
    co_return co_await write_vectored(std::span<const std::string_view>(one));
  }

  // write_vectored(): all of bufs, in order; at most kWritePiece bytes per
  // sendmsg, each under its own deadline.
  mpg::task<absl::Status> write_vectored(std::span<const std::string_view> bufs) {
    std::size_t total = 0;
    for (std::string_view b : bufs) total += b.size();
    if (total <= kWritePiece) {
      arm();
      co_return co_await conn_->write_vectored(bufs);
    }
    std::vector<std::string_view> piece;
    std::size_t size = 0;  // bytes in piece
    for (std::string_view b : bufs) {
      while (!b.empty()) {
        const std::size_t n = std::min(b.size(), kWritePiece - size);
        piece.push_back(b.substr(0, n));
        b.remove_prefix(n);
        size += n;
        if (size < kWritePiece) continue;
        arm();
        if (absl::Status s = co_await conn_->write_vectored(piece); !s.ok()) co_return s;
        piece.clear();
        size = 0;
      }
    }
    if (piece.empty()) co_return absl::OkStatus();
    arm();
    co_return co_await conn_->write_vectored(piece);
  }

 private:
  // arm(): the stream's write deadline, for a piece begun now.
  void arm() {
    std::optional<mpg::net::clock::time_point> deadline;
    if (timeout_.count() > 0) deadline = mpg::net::clock::now() + timeout_;
    conn_->set_write_deadline(deadline);
  }

  mpg::net::tcp_stream* conn_;
  std::chrono::milliseconds timeout_;
};

}  // namespace example
