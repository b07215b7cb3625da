// test/buffered_fuzz_tests.cpp: seeded, bounded fuzzing (fuzz_support.hpp)
// of net::buffered_reader and net::buffered_writer, checking that no byte
// is lost, doubled or reordered and that limits and the end of a stream are
// the documented errors (mpg/buffered.hpp):
//   - the reader over a fake stream with random chunks and transient
//     errors, and over a socketpair a thread feeds in random writes: what
//     the calls return plus what stays buffered is the stream's bytes, in
//     order; the stream is never asked for 0 bytes (a socket's answer, 0,
//     would read as its end);
//   - the writer over sinks that may fail part way: what reaches the sink
//     is a prefix of what was written (all of it after a flush), a payload
//     is never referenced after its call, errors are sticky.
// input_fuzz_tests.cpp does the same for the parsers of strings.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <mpg/buffered.hpp>
#include <mpg/mpg.hpp>
#include <mpg/net.hpp>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fuzz_support.hpp"

namespace {

using mpg_test::rng;

// ---------------------------------------------------------------------------
// buffered_reader

// script_stream: hands out `payload` in chunks of 1 to max_chunk bytes
// (drawn), failing a read now and then with a transient error that takes
// nothing; 0 at the end. A read of no bytes is a reader's bug (a socket
// would answer it 0, which reads as the end of the stream): it is counted.
struct script_stream {
  std::string_view payload;
  rng* r = nullptr;
  std::size_t max_chunk = 1;
  std::size_t fail_one_in = 0;  // 0: never
  std::size_t at = 0;           // bytes handed out
  int empty_reads = 0;
  mpg::task<absl::StatusOr<std::size_t>> read(std::span<char> buf) {
    if (buf.empty()) ++empty_reads;
    if (fail_one_in != 0 && r->one_in(fail_one_in)) co_return absl::UnavailableError("injected");
    const std::size_t n = std::min({1 + r->below(max_chunk), buf.size(), payload.size() - at});
    if (n > 0) std::memcpy(buf.data(), payload.data() + at, n);
    at += n;
    co_return n;
  }
};

bool injected(const absl::Status& s) { return s.message() == "injected"; }

// drive_reader(): up to `ops` random calls on a reader of `cap` bytes over
// `s`, each result checked against the payload: "" or what is wrong. pos
// is how much of the payload the calls consumed. With a script_stream the
// reader's position is also checked after every call: the bytes handed out
// are those consumed plus those buffered, which are the payload's next.
template <class Stream>
mpg::task<std::string> drive_reader(Stream& s, std::string_view payload, std::size_t cap, rng& r,
                                    int ops, std::string_view delims) {
  constexpr bool scripted = std::is_same_v<Stream, script_stream>;
  mpg::net::buffered_reader<Stream> in(s, cap);
  const std::size_t size = payload.size();
  std::size_t pos = 0;
  auto code_is = [](const absl::Status& st, absl::StatusCode c) { return st.code() == c; };
  for (int op = 0; op < ops; ++op) {
    const std::size_t before = pos;
    const unsigned kind = static_cast<unsigned>(r.below(7));
    std::string what = absl::StrCat("op ", op, " (kind ", kind, ") at ", pos, ": ");
    if (kind <= 1) {  // read_until, read_line
      const char delim = kind == 0 ? delims[r.below(delims.size())] : '\n';
      // Two statements: g++ 12 miscompiles a ?: between two co_awaits.
      absl::StatusOr<std::string_view> got;
      if (kind == 0) {
        got = co_await in.read_until(delim);
      } else {
        got = co_await in.read_line();
      }
      const std::size_t k = payload.find(delim, pos);
      const bool fits = k != std::string_view::npos && k - pos + 1 <= cap;
      if (got.ok()) {
        std::string_view want = payload.substr(pos, k - pos + 1);
        if (kind == 1) {
          want.remove_suffix(1);
          if (!want.empty() && want.back() == '\r') want.remove_suffix(1);
        }
        if (!fits || *got != want) co_return what + "a wrong line";
        pos = k + 1;
      } else if (code_is(got.status(), absl::StatusCode::kResourceExhausted)) {
        if (fits || in.buffered() != cap) co_return what + "no delimiter, wrongly";
      } else if (mpg::net::is_unexpected_eof(got.status())) {
        if (k != std::string_view::npos || in.buffered() != size - pos || pos == size) {
          co_return what + "a wrong kDataLoss";
        }
      } else if (mpg::net::is_eof(got.status())) {
        if (pos != size) co_return what + "a wrong EOF";
      } else if (!injected(got.status())) {
        co_return what + got.status().ToString();
      }
    } else if (kind == 2) {  // peek
      const std::size_t n = r.below(cap + 3);
      absl::StatusOr<std::string_view> got = co_await in.peek(n);
      if (got.ok()) {
        if (n > cap || *got != payload.substr(pos, n) || got->size() != n) {
          co_return what + "a wrong peek";
        }
      } else if (n > cap) {
        if (!code_is(got.status(), absl::StatusCode::kResourceExhausted)) {
          co_return what + "an oversized peek: " + got.status().ToString();
        }
      } else if (mpg::net::is_eof(got.status())) {
        if (pos != size) co_return what + "a wrong EOF";
      } else if (mpg::net::is_unexpected_eof(got.status())) {
        if (pos == size || pos + n <= size || in.buffered() != size - pos) {
          co_return what + "a wrong kDataLoss";
        }
      } else if (!injected(got.status())) {
        co_return what + got.status().ToString();
      }
    } else if (kind == 3) {  // read, zero bytes included
      std::string buf(r.below(2 * cap + 2), '\0');
      const std::span<char> span(buf);
      absl::StatusOr<std::size_t> got = co_await in.read(span);
      if (got.ok()) {
        if (*got > buf.size() || buf.compare(0, *got, payload.substr(pos, *got)) != 0) {
          co_return what + "a wrong read";
        }
        if (*got == 0 && !buf.empty() && pos != size) co_return what + "0 before the end";
        pos += *got;
      } else if (!injected(got.status())) {
        co_return what + got.status().ToString();
      }
    } else if (kind <= 5) {  // read_exact into a span, or as a string
      const std::size_t n = r.below(3 * cap + 1);
      std::string buf(n, '\0');
      absl::Status st;
      if (kind == 4) {
        const std::span<char> span(buf);
        st = co_await in.read_exact(span);
      } else {
        absl::StatusOr<std::string> got = co_await in.read_exact(n);
        st = got.status();
        if (got.ok()) buf = std::move(*got);
      }
      if (st.ok()) {
        if (buf.size() != n || buf != payload.substr(pos, n) || pos + n > size) {
          co_return what + "a wrong read_exact";
        }
        pos += n;
      } else if (mpg::net::is_eof(st)) {
        if (pos != size || n == 0) co_return what + "a wrong EOF";
      } else if (mpg::net::is_unexpected_eof(st)) {
        // The bytes that came are consumed, and (into a span) delivered.
        if (pos == size || pos + n <= size) co_return what + "a wrong kDataLoss";
        const std::string count = absl::StrCat("after ", size - pos, " of ", n, " bytes");
        if (st.message().find(count) == absl::string_view::npos) co_return what + "no count";
        if (kind == 4 && buf.compare(0, size - pos, payload.substr(pos)) != 0) {
          co_return what + "the bytes that came are not in the span";
        }
        pos = size;
      } else if (injected(st)) {
        // Part consumed, its bytes unspecified: the position is resynced
        // below, from the stream.
        if constexpr (!scripted) co_return what + "an injected error on a real stream";
      } else {
        co_return what + st.ToString();
      }
      if constexpr (scripted) {
        if (injected(st)) {
          pos = s.at - in.buffered();
          if (pos < before || pos > before + n) co_return what + "read_exact moved back or past n";
        }
      }
    } else {  // consume
      const std::size_t n = std::min(r.below(cap + 1), in.buffered());
      in.consume(n);
      pos += n;
    }
    if constexpr (scripted) {
      if (s.at - in.buffered() != pos || in.buffered_view() != payload.substr(pos, in.buffered())) {
        co_return what + "the buffered bytes are not the payload's next";
      }
      if (s.empty_reads != 0) co_return what + "a read of no bytes from the stream";
    }
    if (pos == size && r.one_in(4)) break;
  }
  // Drain: what the calls took plus the rest is the payload.
  std::string rest;
  std::string chunk(cap + 1, '\0');
  const std::span<char> span(chunk);
  for (;;) {
    absl::StatusOr<std::size_t> got = co_await in.read(span);
    if (!got.ok()) {
      if (injected(got.status())) continue;
      co_return "drain: " + got.status().ToString();
    }
    if (*got == 0) break;
    rest.append(chunk, 0, *got);
  }
  if (rest != payload.substr(pos))
    co_return absl::StrCat("drain at ", pos, ": bytes lost or added");
  co_return std::string();
}

// make_payload(): lines of random length over a small alphabet, some with
// "\r\n", some longer than a buffer, maybe a tail without a newline.
std::string make_payload(rng& r, std::size_t max_len, std::string_view alphabet) {
  std::string p;
  const std::size_t len = r.below(max_len + 1);
  while (p.size() < len) {
    const std::size_t line = r.one_in(8) ? r.below(400) : r.below(24);
    for (std::size_t i = 0; i < line; ++i) p.push_back(alphabet[r.below(alphabet.size())]);
    if (r.one_in(3)) p.push_back('\r');
    if (!r.one_in(10)) p.push_back('\n');
  }
  return p;
}

constexpr std::string_view kPayloadAlphabet{"abc;:\0\xff\r", 9};
constexpr std::string_view kDelims{"\n;:\0\xff\r", 6};

TEST_CASE("buffered_reader over random chunks and transient errors: no byte lost or doubled") {
  MPG_FUZZ_SEED_INFO;
  rng r(6);
  mpg::runtime rt({.procs = 1});
  const std::string why = rt.block_on([&r]() -> mpg::task<std::string> {
    for (int round = 0; round < 3000; ++round) {
      const std::string payload = make_payload(r, 600, kPayloadAlphabet);
      script_stream s;
      s.payload = payload;
      s.r = &r;
      s.max_chunk = 1 + r.below(r.one_in(2) ? 8 : 300);
      s.fail_one_in = r.one_in(3) ? 0 : 2 + r.below(20);
      const std::size_t cap = 1 + r.below(r.one_in(4) ? 200 : 40);
      std::string why = co_await drive_reader(s, payload, cap, r, 150, kDelims);
      if (!why.empty()) {
        co_return absl::StrCat("round ", round, ", capacity ", cap, ", chunks up to ", s.max_chunk,
                               ": ", why);
      }
    }
    co_return std::string();
  }());
  INFO(why);
  CHECK(why.empty());
}

TEST_CASE("buffered_reader over a socketpair fed in random writes: no byte lost or doubled") {
  MPG_FUZZ_SEED_INFO;
  rng r(7);
  mpg::runtime rt({.procs = 2});
  for (int round = 0; round < 40; ++round) {
    const std::string payload = make_payload(r, 20000, kPayloadAlphabet);
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    // A plain thread writes, so the reader sees the kernel's chunking. The
    // reader's end closes when its task ends, which stops a writer whose
    // reader gave up (EPIPE, not a signal: MSG_NOSIGNAL).
    std::thread writer([fd = sv[1], &payload, seed = r.next()] {
      rng w(seed);
      std::size_t at = 0;
      while (at < payload.size()) {
        const std::size_t n =
            std::min<std::size_t>(1 + w.below(w.one_in(4) ? 5000 : 50), payload.size() - at);
        const ssize_t sent = ::send(fd, payload.data() + at, n, MSG_NOSIGNAL);
        if (sent <= 0) break;
        at += static_cast<std::size_t>(sent);
      }
      ::close(fd);
    });
    const std::size_t cap = 1 + r.below(r.one_in(4) ? 2000 : 64);
    const std::uint64_t ops_seed = r.next();
    const std::string why = rt.block_on([](int fd, std::string_view p, std::size_t c,
                                           std::uint64_t seed) -> mpg::task<std::string> {
      mpg::net::tcp_stream conn(fd);
      rng ops(seed);
      co_return co_await drive_reader(conn, p, c, ops, 2000, kDelims);
    }(sv[0], payload, cap, ops_seed));
    writer.join();
    INFO("round " << round << ", capacity " << cap << ": " << why);
    REQUIRE(why.empty());
  }
}

// ---------------------------------------------------------------------------
// buffered_writer

// sink_stream: records what it is sent; may fail once (at a drawn write,
// after taking a drawn part of it) and then fails every write.
struct sink_stream {
  rng* r = nullptr;
  std::size_t fail_one_in = 0;  // 0: never
  std::string got;
  bool failed = false;
  absl::Status put(std::string_view d) {
    if (failed) return absl::UnavailableError("sink failed");
    if (fail_one_in != 0 && r->one_in(fail_one_in)) {
      failed = true;
      got.append(d.substr(0, r->below(d.size() + 1)));
      return absl::UnavailableError("sink failed");
    }
    got.append(d);
    return absl::OkStatus();
  }
  mpg::task<absl::Status> write(std::string_view d) { co_return put(d); }
};

// vectored_sink: the same, with write_vectored (the writer sends its
// buffer and large payloads in one call).
struct vectored_sink : sink_stream {
  mpg::task<absl::Status> write_vectored(std::span<const std::string_view> regions) {
    for (std::string_view d : regions) {
      if (absl::Status st = put(d); !st.ok()) co_return st;
    }
    co_return absl::OkStatus();
  }
};

// drive_writer(): random writes, vectored writes and flushes; "" or what
// is wrong. `all` is every byte handed to the writer, in order.
template <class Sink>
mpg::task<std::string> drive_writer(Sink& s, std::size_t cap, std::size_t large, rng& r, int ops) {
  mpg::net::buffered_writer<Sink> out(s, cap, large);
  std::string all;
  absl::Status sticky;
  for (int op = 0; op < ops; ++op) {
    const std::string what = absl::StrCat("op ", op, ": ");
    // Pieces in their own strings, overwritten after the call: a writer
    // that kept a view of one past its call would send the overwrite.
    std::vector<std::string> pieces(1 + r.below(4));
    for (std::string& p : pieces) {
      p.resize(r.one_in(4) ? large + r.below(2 * cap) : r.below(large));
      for (char& c : p) c = static_cast<char>('a' + r.below(26));
    }
    const bool was_failed = s.failed;
    absl::Status st;
    const unsigned kind = static_cast<unsigned>(r.below(3));
    if (kind == 0) {
      pieces.resize(1);
      const std::string_view one = pieces[0];
      st = co_await out.write(one);
    } else if (kind == 1) {
      std::vector<std::string_view> views(pieces.begin(), pieces.end());
      const std::span<const std::string_view> span(views);
      st = co_await out.write_vectored(span);
    } else {
      pieces.clear();
      st = co_await out.flush();
    }
    // The bytes up to the end of the call's last large piece are sent
    // before it returns (a small piece after it may stay buffered).
    std::size_t must_be_sent = 0;
    for (const std::string& p : pieces) {
      all += p;
      if (p.size() >= large) must_be_sent = all.size();
    }
    for (std::string& p : pieces) std::fill(p.begin(), p.end(), '#');
    if (!sticky.ok()) {
      if (st != sticky) co_return what + "the error is not sticky: " + st.ToString();
    } else if (!st.ok()) {
      if (!s.failed || was_failed) co_return what + "an error the sink did not give";
      sticky = st;
    } else if (s.failed && !was_failed) {
      co_return what + "the sink failed and the call said ok";
    }
    if (!all.starts_with(s.got)) co_return what + "the sink got bytes not written, or reordered";
    if (sticky.ok()) {
      if (s.got.size() + out.buffered() != all.size()) co_return what + "bytes lost or doubled";
      if (s.got.size() < must_be_sent) co_return what + "a large payload not sent in its call";
      if (kind == 2 && out.buffered() != 0) co_return what + "a flush left bytes buffered";
    }
  }
  absl::Status st = co_await out.flush();
  if (sticky.ok() && (!st.ok() || s.got != all) && !s.failed) co_return "the flush lost bytes";
  co_return std::string();
}

TEST_CASE("buffered_writer over sinks that fail part way: a prefix of the bytes, errors sticky") {
  MPG_FUZZ_SEED_INFO;
  rng r(8);
  mpg::runtime rt({.procs = 1});
  const std::string why = rt.block_on([&r]() -> mpg::task<std::string> {
    for (int round = 0; round < 2000; ++round) {
      const std::size_t cap = 1 + r.below(r.one_in(4) ? 300 : 32);
      const std::size_t large = 1 + r.below(cap + 8);  // clamped to cap by the writer
      const std::size_t fail = r.one_in(2) ? 0 : 2 + r.below(30);
      std::string why;
      if (r.one_in(2)) {
        sink_stream s;
        s.r = &r;
        s.fail_one_in = fail;
        why = co_await drive_writer(s, cap, std::min(large, cap), r, 40);
      } else {
        vectored_sink s;
        s.r = &r;
        s.fail_one_in = fail;
        why = co_await drive_writer(s, cap, std::min(large, cap), r, 40);
      }
      if (!why.empty()) co_return absl::StrCat("round ", round, ", capacity ", cap, ": ", why);
    }
    co_return std::string();
  }());
  INFO(why);
  CHECK(why.empty());
}

}  // namespace
