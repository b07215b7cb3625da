// lib/io/buffered.cpp: the errors of mpg/buffered.hpp (the reader and the
// writer themselves are templates, in the header).
#include "mpg/buffered.hpp"

#include "absl/strings/str_cat.h"

namespace mpg {

namespace net {

bool is_eof(const absl::Status& s) noexcept { return s.code() == absl::StatusCode::kOutOfRange; }

bool is_unexpected_eof(const absl::Status& s) noexcept {
  return s.code() == absl::StatusCode::kDataLoss;
}

}  // namespace net

namespace detail {

absl::Status buffered_eof_error() { return absl::OutOfRangeError("EOF"); }

absl::Status buffered_unexpected_eof_error(std::size_t have, std::size_t want) {
  return absl::DataLossError(
      absl::StrCat("unexpected EOF: the stream ended after ", have, " of ", want, " bytes"));
}

absl::Status buffered_no_delimiter_error(std::size_t capacity) {
  return absl::ResourceExhaustedError(
      absl::StrCat("buffered_reader: no delimiter within the buffer's ", capacity, " bytes"));
}

absl::Status buffered_peek_too_large_error(std::size_t n, std::size_t capacity) {
  return absl::ResourceExhaustedError(
      absl::StrCat("buffered_reader: peek of ", n, " bytes exceeds the buffer's ", capacity));
}

absl::Status buffered_read_exact_too_large_error(std::size_t n, std::size_t max_size) {
  return absl::InvalidArgumentError(absl::StrCat(
      "buffered_reader: read_exact of ", n, " bytes exceeds std::string's max_size() ", max_size));
}

absl::Status buffered_moved_from_error(const char* what) {
  return absl::FailedPreconditionError(absl::StrCat(what, ": moved from"));
}

}  // namespace detail

}  // namespace mpg
