// lib/io/io_status.hpp: the one place where an errno becomes an
// absl::Status for mpg's I/O (private; mpg/io_error.hpp is the public side).
//
// Every I/O error path of lib/io builds its Status here, so each carries its
// errno payload (kErrnoPayload) or the closed mark (kClosedPayload).
#pragma once

#include <string>
#include <string_view>

#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "mpg/io_error.hpp"

namespace mpg::detail {

// errno_status(): absl::ErrnoToStatus(err, what) with err as the payload.
absl::Status errno_status(int err, absl::string_view what);

// io_result_status(): an io_uring result (negative errno) as a Status:
// -ETIME is a missed deadline (kDeadlineExceeded, errno ETIMEDOUT),
// -ECANCELED kCancelled, -ENXIO with no reactor on this thread says why
// (kFailedPrecondition); anything else as errno_status.
absl::Status io_result_status(int res, absl::string_view what);

// quoted(): untrusted text (a path, an address) as an error message names
// it: between double quotes, escaped as a C string literal's body
// (absl::CHexEscape: \n, \0, \", \xff), so that the message is one line that
// a C string holds whole and shows all of the text, NULs and all.
std::string quoted(absl::string_view text);

// closed_status(): "<what>: use of closed <object>", kFailedPrecondition
// with the closed mark.
absl::Status closed_status(absl::string_view what, absl::string_view object);
// closed_cancelled_status(): the same message and mark, kCancelled (an
// operation that a close() ended, as accept() on a closed listener).
absl::Status closed_cancelled_status(absl::string_view what, absl::string_view object);

}  // namespace mpg::detail
