// mpg/io_error.hpp: what an I/O failure was, beyond its absl::StatusCode.
//
//   absl::Status w = co_await conn->write(data);
//   if (mpg::errno_of(w) == EPIPE) { /* the peer closed its end */ }
//   if (mpg::net::is_closed(w)) { /* we closed this stream ourselves */ }
//
// Every failure of an mpg I/O operation (TCP, Unix sockets, UDP, fs) that
// comes from the kernel keeps its errno as a payload of the
// Status (type URL kErrnoPayload, the number in decimal), besides the
// absl::StatusCode that absl::ErrnoToStatus gives it. Two codes are mpg's
// own and still carry an errno: a missed deadline (kDeadlineExceeded,
// ETIMEDOUT) and a cancelled operation (kCancelled, ECANCELED).
//
// "Use of a closed stream/listener/socket/file" (an operation started after
// close(), Go's net.ErrClosed) is kFailedPrecondition with its own mark
// (kClosedPayload) and no errno: net::is_closed() is true for it and only
// for it. So an EPIPE (kFailedPrecondition too) or an ECONNRESET
// (kUnavailable) from the peer is never mistaken for our own close. An
// operation already in flight when another task calls close() completes
// with kCancelled (ECANCELED).
//
// Threads: pure functions of the Status; any thread.
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace mpg {

// The payload type URLs.
inline constexpr std::string_view kErrnoPayload = "mpg.errno";
inline constexpr std::string_view kClosedPayload = "mpg.closed";

// errno_of(): the errno kept in s; 0 if s is OK or carries none (a closed
// stream, a bad address, a failed name lookup).
int errno_of(const absl::Status& s) noexcept;

namespace net {
// is_closed(): s reports use of a stream, listener or socket after close()
// (Go's errors.Is(err, net.ErrClosed)).
bool is_closed(const absl::Status& s) noexcept;
}  // namespace net

}  // namespace mpg
