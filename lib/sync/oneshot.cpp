// lib/sync/oneshot.cpp: the out-of-line statuses of oneshot<T>, and its misuse error
// (include/mpg/oneshot.hpp holds the protocol; the rest is templates).
#include "mpg/oneshot.hpp"

#include "mpg/errors.hpp"

namespace mpg::detail {

absl::Status oneshot_aborted_status() {
  return absl::AbortedError("mpg: oneshot sender destroyed without sending");
}

absl::Status oneshot_receiver_gone_status() {
  return absl::AbortedError("mpg: oneshot receiver destroyed while awaited");
}

absl::Status oneshot_taken_status() {
  return absl::FailedPreconditionError("mpg: oneshot value already received");
}

void throw_empty_oneshot_receiver() {
  throw runtime_misuse_error("mpg: await of a moved-from (empty) oneshot_receiver");
}

}  // namespace mpg::detail
