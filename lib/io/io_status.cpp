// lib/io/io_status.cpp: errno payloads and the closed mark (mpg/io_error.hpp,
// lib/io/io_status.hpp).
#include "io/io_status.hpp"

#include <cerrno>
#include <optional>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "io/reactor.hpp"

namespace mpg {

namespace {

// Debian's abseil has its own string_view type (not std::string_view's alias).
absl::string_view av(std::string_view s) noexcept { return {s.data(), s.size()}; }

absl::Status with_errno(absl::Status s, int err) {
  s.SetPayload(av(kErrnoPayload), absl::Cord(absl::StrCat(err)));
  return s;
}

}  // namespace

int errno_of(const absl::Status& s) noexcept {
  if (s.ok()) return 0;
  auto p = s.GetPayload(av(kErrnoPayload));
  if (!p) return 0;
  int err = 0;
  if (!absl::SimpleAtoi(std::string(*p), &err)) return 0;
  return err;
}

namespace net {
bool is_closed(const absl::Status& s) noexcept {
  return !s.ok() && s.GetPayload(av(kClosedPayload)).has_value();
}
}  // namespace net

namespace detail {

absl::Status errno_status(int err, absl::string_view what) {
  return with_errno(absl::ErrnoToStatus(err, what), err);
}

absl::Status io_result_status(int res, absl::string_view what) {
  switch (-res) {
    case ETIME:
      return with_errno(
          absl::DeadlineExceededError(absl::StrCat(what, ": i/o deadline exceeded")),
          ETIMEDOUT);
    case ECANCELED:
      return with_errno(absl::CancelledError(absl::StrCat(what, ": operation cancelled")),
                        ECANCELED);
    case ENXIO:
      if (current_reactor() == nullptr) {
        return with_errno(
            absl::FailedPreconditionError(absl::StrCat(
                what, ": no io_uring reactor here (not inside an mpg task, or io_uring is "
                          "unavailable: ", reactor::unavailable_reason(), ")")),
            ENXIO);
      }
      [[fallthrough]];
    default:
      return errno_status(-res, what);
  }
}

std::string quoted(absl::string_view text) {
  return absl::StrCat("\"", absl::CHexEscape(text), "\"");
}

absl::Status closed_status(absl::string_view what, absl::string_view object) {
  absl::Status s =
      absl::FailedPreconditionError(absl::StrCat(what, ": use of closed ", object));
  s.SetPayload(av(kClosedPayload), absl::Cord());
  return s;
}

absl::Status closed_cancelled_status(absl::string_view what, absl::string_view object) {
  absl::Status s = absl::CancelledError(absl::StrCat(what, ": use of closed ", object));
  s.SetPayload(av(kClosedPayload), absl::Cord());
  return s;
}

}  // namespace detail

}  // namespace mpg
