// fuzz/fuzz_buffered_reader.cpp: libFuzzer target for
// mpg::net::buffered_reader (mpg/buffered.hpp), run inside one runtime.
//
// The input chooses the reader's capacity, a payload, the sizes of the
// chunks the fake stream hands out (random chunking), and a sequence of
// operations: read_until, read_line, read_exact (both forms), peek, read,
// consume. Checks, besides the sanitizers: the bytes every operation
// consumes are exactly the payload's next bytes, in order (nothing lost,
// duplicated or reordered); read_until's result ends at the first delimiter;
// read_exact gives exactly n bytes; peek consumes nothing; at the end of the
// payload a read reports the clean end (is_eof), and a line or read_exact cut
// by the end reports it (is_unexpected_eof) without consuming.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mpg/buffered.hpp"
#include "mpg/mpg.hpp"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

// chunked_stream: hands out the payload in chunks of the given sizes
// (cycled), then 0 (end of stream).
struct chunked_stream {
  std::string_view payload;
  std::vector<std::size_t> chunks;
  std::size_t at = 0, next = 0;
  mpg::task<absl::StatusOr<std::size_t>> read(std::span<char> buf) {
    std::size_t n = chunks.empty() ? buf.size() : chunks[next++ % chunks.size()];
    if (n == 0) n = 1;
    n = std::min({n, buf.size(), payload.size() - at});
    std::copy_n(payload.data() + at, n, buf.data());
    at += n;
    co_return n;
  }
};

mpg::task<> run(FuzzedDataProvider* fdp) {
  const std::size_t capacity = fdp->ConsumeIntegralInRange<std::size_t>(1, 64);
  chunked_stream stream;
  const std::size_t nchunks = fdp->ConsumeIntegralInRange<std::size_t>(0, 8);
  for (std::size_t i = 0; i < nchunks; ++i)
    stream.chunks.push_back(fdp->ConsumeIntegralInRange<std::size_t>(1, 80));
  const std::string ops =
      fdp->ConsumeBytesAsString(fdp->ConsumeIntegralInRange<std::size_t>(0, 64));
  const std::string payload = fdp->ConsumeRemainingBytesAsString();
  stream.payload = payload;
  mpg::net::buffered_reader<chunked_stream> in(stream, capacity);
  std::size_t pos = 0;  // payload bytes consumed through the reader
  auto consumed = [&](std::string_view got, std::size_t extra) {
    check(payload.compare(pos, got.size(), got) == 0);
    pos += got.size() + extra;
    check(pos <= payload.size());
  };
  for (std::size_t k = 0; k + 1 < ops.size(); k += 2) {
    const unsigned op = static_cast<unsigned char>(ops[k]) % 7;
    const auto arg = static_cast<unsigned char>(ops[k + 1]);
    if (op == 0 || op == 1) {  // read_until / read_line
      const char delim = op == 0 ? static_cast<char>(arg % 4 == 0 ? '\n' : arg) : '\n';
      // An if, not ?: (g++ 12 miscompiles co_await in a conditional
      // expression; this file builds with clang only, but keeps the rule).
      absl::StatusOr<std::string_view> got = absl::UnknownError("unset");
      if (op == 0)
        got = co_await in.read_until(delim);
      else
        got = co_await in.read_line();
      if (got.ok()) {
        if (op == 0) {
          check(!got->empty() && got->back() == delim && got->find(delim) == got->size() - 1);
          consumed(*got, 0);
        } else {
          check(got->find('\n') == std::string_view::npos);
          const bool crlf = payload.compare(pos + got->size(), 2, "\r\n") == 0;
          consumed(*got, crlf ? 2 : 1);
          check(payload[pos - 1] == '\n');
        }
      } else if (mpg::net::is_eof(got.status())) {
        check(pos == payload.size() && in.buffered() == 0);
      } else if (mpg::net::is_unexpected_eof(got.status())) {
        check(in.buffered() > 0 && pos + in.buffered() == payload.size());
        co_return;
      } else {
        check(got.status().code() == absl::StatusCode::kResourceExhausted &&
              in.buffered() == capacity);
        in.consume(1);  // skip a byte, as a caller resynchronising would
        pos += 1;
      }
    } else if (op == 2 || op == 3) {  // read_exact(n) / read_exact(span)
      const std::size_t n = arg % 100;
      std::string got;
      absl::Status s;
      if (op == 2) {
        absl::StatusOr<std::string> r = co_await in.read_exact(n);
        s = r.status();
        if (r.ok()) got = std::move(*r);
      } else {
        got.resize(n);
        s = co_await in.read_exact(std::span<char>(got));
      }
      if (s.ok()) {
        check(got.size() == n);
        consumed(got, 0);
      } else {
        check(mpg::net::is_eof(s) || mpg::net::is_unexpected_eof(s));
        check(pos + n > payload.size());
        co_return;
      }
    } else if (op == 4) {  // peek
      const std::size_t n = arg % 80;
      absl::StatusOr<std::string_view> got = co_await in.peek(n);
      if (got.ok()) {
        check(got->size() == n && payload.compare(pos, n, *got) == 0);
      } else if (n > capacity) {
        check(got.status().code() == absl::StatusCode::kResourceExhausted);
      } else {
        check(mpg::net::is_eof(got.status()) || mpg::net::is_unexpected_eof(got.status()));
        check(pos + n > payload.size());
      }
    } else if (op == 5) {  // read
      std::string buf(arg % 50 + 1, '\0');
      absl::StatusOr<std::size_t> n = co_await in.read(std::span<char>(buf));
      check(n.ok() && *n <= buf.size());
      if (*n == 0) check(pos == payload.size());
      consumed(std::string_view(buf.data(), *n), 0);
    } else {  // consume what is buffered, partly
      const std::size_t n = std::min<std::size_t>(arg % 16, in.buffered());
      consumed(in.buffered_view().substr(0, n), 0);
      in.consume(n);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static mpg::runtime* rt = new mpg::runtime({.procs = 1});  // one for the whole run
  FuzzedDataProvider fdp(data, size);
  rt->block_on(run(&fdp));
  return 0;
}
