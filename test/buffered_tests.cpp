// test/buffered_tests.cpp: net::buffered_reader and net::buffered_writer.
// The reader over a stream that returns random-sized chunks (a fake stream,
// and a socketpair fed by a plain thread in random-sized writes): lines
// with "\n" and "\r\n", read_exact across chunks and larger than the
// buffer, peek, a line longer than the buffer (kResourceExhausted), the end
// of the stream mid-line (kDataLoss) and at a line boundary (kOutOfRange).
// The writer: small writes buffered until flush, large payloads sent in
// place (the regions handed to write_vectored point into the caller's
// payload), vectored writes over a socketpair with the bytes checked on the
// other side, empty pieces (a null string_view) skipped. read_exact(n) with
// an n the stream never delivers (up to SIZE_MAX): a Status, memory only for
// what came. A moved-from reader or writer fails every call with
// kFailedPrecondition. A call the buffer answers finishes in await_ready,
// without reading or sending; one that must declines there, changing nothing.
#include <doctest/doctest.h>

#include "test_support.hpp"

#include <mpg/mpg.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

// chunk_stream: reads give a random 1..max_chunk bytes of `data` (seeded,
// so deterministic), then 0.
struct chunk_stream {
  std::string data;
  std::size_t pos = 0;
  std::mt19937 rng{12345};
  std::size_t max_chunk = 7;
  int reads = 0;

  mpg::task<absl::StatusOr<std::size_t>> read(std::span<char> buf) {
    ++reads;
    std::size_t n = std::uniform_int_distribution<std::size_t>(1, max_chunk)(rng);
    n = std::min({n, buf.size(), data.size() - pos});
    std::memcpy(buf.data(), data.data() + pos, n);
    pos += n;
    co_return n;
  }
};

std::string make_lines(int count, std::vector<std::string>& want, bool crlf_some) {
  std::mt19937 rng(7);
  std::string all;
  for (int i = 0; i < count; ++i) {
    std::string line;
    const int len = std::uniform_int_distribution<int>(0, 40)(rng);
    for (int k = 0; k < len; ++k) line.push_back(static_cast<char>('a' + (i + k) % 26));
    want.push_back(line);
    all += line;
    all += (crlf_some && i % 3 == 0) ? "\r\n" : "\n";
  }
  return all;
}

mpg::task<std::string> lines_from_chunks() {
  std::vector<std::string> want;
  chunk_stream s;
  s.data = make_lines(500, want, true);
  mpg::net::buffered_reader<chunk_stream> in(s, 64);
  for (std::size_t i = 0; i < want.size(); ++i) {
    absl::StatusOr<std::string_view> l = co_await in.read_line();
    if (!l.ok()) co_return "line " + std::to_string(i) + ": " + std::string(l.status().message());
    if (*l != want[i]) co_return "line " + std::to_string(i) + " differs";
  }
  absl::StatusOr<std::string_view> end = co_await in.read_line();
  if (!mpg::net::is_eof(end.status())) co_return "no clean EOF after the last line";
  co_return "ok";
}

TEST_CASE("read_line over random chunks: every line, \\n and \\r\\n stripped, then EOF") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(lines_from_chunks()) == "ok");
}

mpg::task<std::string> errors() {
  {
    // A line longer than the buffer: kResourceExhausted, bytes kept.
    chunk_stream s;
    s.data = std::string(100, 'x') + "\nshort\n";
    mpg::net::buffered_reader<chunk_stream> in(s, 32);
    absl::StatusOr<std::string_view> l = co_await in.read_line();
    if (l.status().code() != absl::StatusCode::kResourceExhausted)
      co_return "long line not refused";
    if (in.buffered() != 32) co_return "the full buffer was not kept";
  }
  {
    // A line that fits exactly (delimiter at the last byte of the buffer).
    chunk_stream s;
    s.data = std::string(31, 'y') + "\n";
    mpg::net::buffered_reader<chunk_stream> in(s, 32);
    absl::StatusOr<std::string_view> l = co_await in.read_line();
    if (!l.ok() || l->size() != 31) co_return "a line of exactly the capacity failed";
  }
  {
    // EOF mid-line: kDataLoss, the partial line still buffered.
    chunk_stream s;
    s.data = "one\ntwo";
    mpg::net::buffered_reader<chunk_stream> in(s, 32);
    absl::StatusOr<std::string_view> a = co_await in.read_line();
    if (!a.ok() || *a != "one") co_return "first line";
    absl::StatusOr<std::string_view> b = co_await in.read_line();
    if (!mpg::net::is_unexpected_eof(b.status())) co_return "EOF mid-line not kDataLoss";
    if (in.buffered_view() != "two") co_return "partial line not left buffered";
  }
  {
    // read_exact and peek at the end of the stream.
    chunk_stream s;
    s.data = "abcdef";
    mpg::net::buffered_reader<chunk_stream> in(s, 4);
    absl::StatusOr<std::string_view> too_big = co_await in.peek(5);
    if (too_big.status().code() != absl::StatusCode::kResourceExhausted)
      co_return "peek above the capacity";
    absl::StatusOr<std::string_view> p = co_await in.peek(3);
    if (!p.ok() || *p != "abc") co_return "peek";
    absl::StatusOr<std::string> e = co_await in.read_exact(4);
    if (!e.ok() || *e != "abcd") co_return "read_exact after peek";
    absl::StatusOr<std::string> f = co_await in.read_exact(3);
    if (!mpg::net::is_unexpected_eof(f.status())) co_return "short read_exact not kDataLoss";
    absl::StatusOr<std::string> g = co_await in.read_exact(1);
    if (!mpg::net::is_eof(g.status())) co_return "read_exact at the end not kOutOfRange";
  }
  co_return "ok";
}

TEST_CASE("errors: a line past the capacity, EOF mid-line, short read_exact and peek") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(errors()) == "ok");
}

mpg::task<std::string> exact_and_mixed() {
  // Frames: a 4-byte decimal length, a payload, a newline-terminated
  // trailer; payloads larger and smaller than the buffer.
  std::mt19937 rng(99);
  std::string data;
  std::vector<std::string> payloads;
  for (int i = 0; i < 60; ++i) {
    const std::size_t len = std::uniform_int_distribution<std::size_t>(0, 300)(rng);
    std::string p;
    for (std::size_t k = 0; k < len; ++k) p.push_back(static_cast<char>(rng()));
    char head[5];
    std::snprintf(head, sizeof head, "%04zu", len);
    data += head;
    data += p;
    data += "end " + std::to_string(i) + "\r\n";
    payloads.push_back(std::move(p));
  }
  chunk_stream s;
  s.data = data;
  s.max_chunk = 50;
  mpg::net::buffered_reader<chunk_stream> in(s, 128);
  for (int i = 0; i < 60; ++i) {
    absl::StatusOr<std::string_view> h = co_await in.peek(4);
    if (!h.ok()) co_return "peek head";
    const std::size_t len = std::stoul(std::string(*h));
    in.consume(4);
    absl::StatusOr<std::string> p = co_await in.read_exact(len);
    if (!p.ok() || *p != payloads[i]) co_return "payload " + std::to_string(i);
    absl::StatusOr<std::string_view> t = co_await in.read_line();
    if (!t.ok() || *t != "end " + std::to_string(i)) co_return "trailer " + std::to_string(i);
  }
  co_return "ok";
}

TEST_CASE("read_exact across chunks and past the buffer, peek and consume, mixed with lines") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(exact_and_mixed()) == "ok");
}

// read_exact(n) with n from a peer's length prefix: the stream holds "abc".
mpg::task<std::string> exact_huge(std::size_t n) {
  chunk_stream s;
  s.data = "abc";
  mpg::net::buffered_reader<chunk_stream> in(s, 16);
  absl::StatusOr<std::string> e = co_await in.read_exact(n);
  if (e.ok()) co_return "ok for " + std::to_string(n) + " bytes of 3";
  co_return std::string(absl::StatusCodeToString(e.status().code()));
}

// read_exact(n) of a payload several times the buffer (and the string's
// first size), in chunks: the whole payload; one byte more: kDataLoss.
mpg::task<std::string> exact_growing(std::size_t extra) {
  std::mt19937 rng(11);
  chunk_stream s;
  for (int i = 0; i < 300000; ++i) s.data.push_back(static_cast<char>(rng()));
  s.max_chunk = 5000;
  mpg::net::buffered_reader<chunk_stream> in(s, 1024);
  absl::StatusOr<std::string> e = co_await in.read_exact(s.data.size() + extra);
  if (!e.ok()) co_return std::string(absl::StatusCodeToString(e.status().code()));
  if (*e != s.data) co_return "bytes differ";
  co_return "ok";
}

TEST_CASE("read_exact(n) past what the stream holds: kDataLoss with memory for what came") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(exact_growing(0)) == "ok");
  CHECK(rt.block_on(exact_growing(1)) == "DATA_LOSS");
  // Terabytes: a string of n bytes made up front would not fit in memory.
  CHECK(rt.block_on(exact_huge(std::size_t{1} << 40)) == "DATA_LOSS");
  CHECK(rt.block_on(exact_huge(SIZE_MAX / 4)) == "DATA_LOSS");
  // Above std::string's max_size(): refused before anything is read.
  CHECK(rt.block_on(exact_huge(SIZE_MAX)) == "INVALID_ARGUMENT");
  CHECK(rt.block_on(exact_huge(std::string().max_size() + 1)) == "INVALID_ARGUMENT");
}

// Over a real socket: a plain thread writes the text in random-sized
// writes; the reader reads lines over a tcp_stream.
mpg::task<std::string> lines_over_socket(int fd, std::vector<std::string> want) {
  mpg::net::tcp_stream conn(fd);
  mpg::net::buffered_reader in(conn, 256);
  for (std::size_t i = 0; i < want.size(); ++i) {
    absl::StatusOr<std::string_view> l = co_await in.read_line();
    if (!l.ok()) co_return "line " + std::to_string(i) + ": " + std::string(l.status().message());
    if (*l != want[i]) co_return "line " + std::to_string(i) + " differs";
  }
  absl::StatusOr<std::string_view> end = co_await in.read_line();
  if (!mpg::net::is_unexpected_eof(end.status()))
    co_return "the unterminated tail: " + end.status().ToString();
  if (in.buffered_view() != "tail") co_return "tail not buffered";
  co_return "ok";
}

TEST_CASE("read_line over a socketpair fed in random-sized writes; EOF mid-line") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  std::vector<std::string> want;
  std::string text = make_lines(2000, want, true) + "tail";
  std::thread writer([fd = sv[1], text] {
    std::mt19937 rng(3);
    std::size_t pos = 0;
    while (pos < text.size()) {
      std::size_t n = std::uniform_int_distribution<std::size_t>(1, 97)(rng);
      n = std::min(n, text.size() - pos);
      ssize_t w = ::write(fd, text.data() + pos, n);
      if (w <= 0) break;
      pos += static_cast<std::size_t>(w);
    }
    ::close(fd);
  });
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(lines_over_socket(sv[0], want)) == "ok");
  writer.join();
}

// recording_stream: records each region handed to write_vectored.
struct recording_stream {
  std::string bytes;
  std::vector<std::vector<std::string_view>> sends;
  mpg::task<absl::Status> write(std::string_view d) {
    bytes += d;
    sends.push_back({d});
    co_return absl::OkStatus();
  }
  mpg::task<absl::Status> write_vectored(std::span<const std::string_view> r) {
    sends.emplace_back(r.begin(), r.end());
    for (std::string_view v : r) bytes += v;
    co_return absl::OkStatus();
  }
};

mpg::task<std::string> writer_regions() {
  recording_stream s;
  mpg::net::buffered_writer<recording_stream> out(s, 64, 16);
  absl::Status st = co_await out.write("GET ");
  if (st.ok()) st = co_await out.write("/ HTTP/1.1\r\n");
  if (!st.ok()) co_return st.ToString();
  if (!s.sends.empty() || out.buffered() != 16) co_return "small writes not buffered";
  const std::string big(1000, 'B');
  const std::array<std::string_view, 3> parts{"head:", big, "tail"};
  st = co_await out.write_vectored(parts);
  if (!st.ok()) co_return st.ToString();
  // One send: the buffered bytes before, the payload in place, the tail.
  if (s.sends.size() != 1 || s.sends[0].size() != 3) co_return "not one send of three regions";
  if (s.sends[0][1].data() != big.data()) co_return "the large payload was copied";
  if (out.buffered() != 0) co_return "buffer not emptied by the send";
  // Overflow of small writes flushes first.
  for (int i = 0; i < 10 && st.ok(); ++i) st = co_await out.write("0123456789");
  if (!st.ok()) co_return st.ToString();
  if (s.sends.size() != 2) co_return "overflow did not flush once";
  st = co_await out.flush();
  if (!st.ok() || out.buffered() != 0) co_return "flush";
  std::string want = "GET / HTTP/1.1\r\nhead:" + big + "tail";
  for (int i = 0; i < 10; ++i) want += "0123456789";
  if (s.bytes != want) co_return "bytes differ";
  co_return "ok";
}

TEST_CASE(
    "buffered_writer: small writes buffered, large payloads sent in place, overflow flushes") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(writer_regions()) == "ok");
}

mpg::task<std::string> writer_empty_pieces() {
  recording_stream s;
  mpg::net::buffered_writer<recording_stream> out(s, 64, 16);
  // std::string_view{} has a null data(): never handed to memcpy.
  absl::Status st = co_await out.write(std::string_view{});
  const std::string big(32, 'B');
  const std::array<std::string_view, 5> parts{std::string_view{}, "a", std::string_view{}, big,
                                              std::string_view{}};
  if (st.ok()) st = co_await out.write_vectored(parts);
  if (st.ok()) st = co_await out.write(std::string_view{});
  if (st.ok()) st = co_await out.flush();
  if (!st.ok()) co_return st.ToString();
  if (s.bytes != "a" + big) co_return "bytes differ";
  co_return "ok";
}

TEST_CASE("buffered_writer: empty pieces (a null string_view) are skipped") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(writer_empty_pieces()) == "ok");
}

mpg::task<std::string> moved_from() {
  chunk_stream s;
  s.data = "one\ntwo\n";
  mpg::net::buffered_reader<chunk_stream> a(s, 16);
  absl::StatusOr<std::string_view> l = co_await a.read_line();
  if (!l.ok() || *l != "one") co_return "first line";
  mpg::net::buffered_reader<chunk_stream> b(std::move(a));
  l = co_await b.read_line();
  if (!l.ok() || *l != "two") co_return "the moved-to reader lost its buffer";
  // The moved-from reader: every call fails, nothing crashes.
  if ((co_await a.read_line()).status().code() != absl::StatusCode::kFailedPrecondition)
    co_return "read_line on a moved-from reader";
  if ((co_await a.read_until('x')).status().code() != absl::StatusCode::kFailedPrecondition)
    co_return "read_until on a moved-from reader";
  if ((co_await a.peek(1)).status().code() != absl::StatusCode::kFailedPrecondition)
    co_return "peek on a moved-from reader";
  if ((co_await a.read_exact(4)).status().code() != absl::StatusCode::kFailedPrecondition)
    co_return "read_exact(n) on a moved-from reader";
  char buf[64];
  if ((co_await a.read_exact(std::span<char>(buf))).code() != absl::StatusCode::kFailedPrecondition)
    co_return "read_exact(span) on a moved-from reader";
  if ((co_await a.read(std::span<char>(buf))).status().code() !=
      absl::StatusCode::kFailedPrecondition)
    co_return "read on a moved-from reader";
  a.consume(3);
  if (a.buffered() != 0 || a.capacity() != 0 || !a.buffered_view().empty())
    co_return "moved-from reader not empty";
  // Move assignment: a moved-to reader works again, the source is empty.
  a = std::move(b);
  if ((co_await b.read_line()).status().code() != absl::StatusCode::kFailedPrecondition)
    co_return "read_line on a reader moved from by assignment";
  if (!mpg::net::is_eof((co_await a.read_line()).status())) co_return "EOF after the move back";

  recording_stream w;
  mpg::net::buffered_writer<recording_stream> out(w, 64, 16);
  absl::Status st = co_await out.write("kept");
  if (!st.ok()) co_return st.ToString();
  mpg::net::buffered_writer<recording_stream> out2(std::move(out));
  if (out.buffered() != 0 || out.capacity() != 0) co_return "moved-from writer not empty";
  if ((co_await out.write("x")).code() != absl::StatusCode::kFailedPrecondition)
    co_return "write on a moved-from writer";
  if ((co_await out.write(std::string(100, 'L'))).code() != absl::StatusCode::kFailedPrecondition)
    co_return "large write on a moved-from writer";
  if ((co_await out.flush()).code() != absl::StatusCode::kFailedPrecondition)
    co_return "flush on a moved-from writer";
  st = co_await out2.flush();
  if (!st.ok() || w.bytes != "kept") co_return "the moved-to writer lost its bytes";
  out = std::move(out2);
  if ((co_await out2.write("y")).code() != absl::StatusCode::kFailedPrecondition)
    co_return "write on a writer moved from by assignment";
  st = co_await out.write("z");
  if (st.ok()) st = co_await out.flush();
  if (!st.ok() || w.bytes != "keptz") co_return "the writer moved back";
  co_return "ok";
}

TEST_CASE("a moved-from reader or writer fails every call with kFailedPrecondition") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(moved_from()) == "ok");
}

// The awaiters' two paths (mpg/detail/io/buffered_op.hpp), seen from
// outside a co_await: a call the buffer answers is done in await_ready,
// with no read and no send; one that must read or send declines there and
// leaves the reader or writer as it was, for its task form. Converted to a
// task, a call is that task form.
mpg::task<std::string> fast_and_slow_paths() {
  chunk_stream s;
  s.data = "one\r\ntwo\nthree";
  s.max_chunk = 100;  // one read brings everything
  mpg::net::buffered_reader<chunk_stream> in(s, 64);
  absl::StatusOr<std::string_view> l = co_await in.read_line();  // reads
  if (!l.ok() || *l != "one" || s.reads != 1) co_return "first line";
  {
    auto op = in.read_line();
    if (!op.await_ready()) co_return "a buffered line was not taken in await_ready";
    l = op.await_resume();
    if (!l.ok() || *l != "two" || s.reads != 1) co_return "the buffered line";
  }
  {
    auto op = in.peek(3);
    if (!op.await_ready()) co_return "a buffered peek declined";
    l = op.await_resume();
    if (!l.ok() || *l != "thr") co_return "the buffered peek";
    if (in.read_line().await_ready()) co_return "a partial line was taken";
    if (in.read_until('x').await_ready()) co_return "no delimiter, yet taken";
    if (in.peek(6).await_ready()) co_return "a peek past the buffered bytes was taken";
    if (in.buffered_view() != "three" || s.reads != 1) co_return "a decline changed the reader";
  }
  {
    std::array<char, 2> two{};
    auto op = in.read(std::span<char>(two));
    if (!op.await_ready()) co_return "a buffered read declined";
    absl::StatusOr<std::size_t> n = op.await_resume();
    if (!n.ok() || *n != 2 || std::string_view(two.data(), 2) != "th") co_return "buffered read";
  }
  // The rest through the task form, converted: it reads, finds the end.
  mpg::task<absl::StatusOr<std::string_view>> t = in.read_line();
  l = co_await std::move(t);
  if (!mpg::net::is_unexpected_eof(l.status()) || s.reads != 2) co_return "task form of read_line";

  recording_stream rs;
  mpg::net::buffered_writer<recording_stream> out(rs, 16, 12);
  {
    auto op = out.write("abc");
    if (!op.await_ready() || !op.await_resume().ok()) co_return "a small write was not buffered";
    const std::array<std::string_view, 2> parts{"de", "f"};
    auto v = out.write_vectored(parts);
    if (!v.await_ready() || !v.await_resume().ok()) co_return "small pieces were not buffered";
    if (out.buffered() != 6 || !rs.sends.empty()) co_return "buffered bytes";
    if (out.write("0123456789a").await_ready()) co_return "a write past the capacity was taken";
    if (out.write("0123456789ab").await_ready()) co_return "a large payload was taken";
    if (out.flush().await_ready()) co_return "a flush with bytes buffered was taken";
    if (out.buffered() != 6 || !rs.sends.empty()) co_return "a decline changed the writer";
  }
  // flush converted to a task and spawned: the task form sends.
  mpg::join_handle<absl::Status> h = mpg::spawn(mpg::task<absl::Status>(out.flush()));
  absl::Status st = co_await h;
  if (!st.ok() || rs.bytes != "abcdef" || out.buffered() != 0) co_return "spawned flush";
  {
    auto op = out.flush();
    if (!op.await_ready() || !op.await_resume().ok()) co_return "an empty flush declined";
  }
  co_return "ok";
}

TEST_CASE("calls the buffer answers finish in await_ready; the others decline and change nothing") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(fast_and_slow_paths()) == "ok");
}

// An op is awaited at most once, as a task is. A second await of one whose
// first went on in its task form (which the op owns until it is destroyed)
// is refused with runtime_misuse_error, and that frame is freed with the
// op (AddressSanitizer's leak check covers it in CI).
mpg::task<std::string> op_awaited_twice() {
  chunk_stream s;
  s.data = "ab\ncd\n";
  mpg::net::buffered_reader<chunk_stream> in(s, 16);
  auto op = in.read_line();  // nothing buffered yet: the task form reads
  absl::StatusOr<std::string_view> first = co_await op;
  if (!first.ok() || *first != "ab") co_return "the first await";
  bool refused = false;
  try {
    absl::StatusOr<std::string_view> again = co_await op;
    (void)again;
  } catch (const mpg::runtime_misuse_error&) {
    refused = true;
  }
  if (!refused) co_return "the second await was not refused";
  absl::StatusOr<std::string_view> next = co_await in.read_line();  // the reader goes on
  if (!next.ok() || *next != "cd") co_return "the next line";
  co_return "ok";
}

TEST_CASE("a buffered op awaited twice is refused, as a task is") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(op_awaited_twice()) == "ok");
}

// A stream whose first read throws, and whose later reads serve its data:
// the task form of a buffered call lets the exception out at the caller's
// co_await, and the reader goes on.
struct throwing_stream {
  std::string data;
  std::size_t pos = 0;
  int reads = 0;
  mpg::task<absl::StatusOr<std::size_t>> read(std::span<char> buf) {
    if (++reads == 1) throw std::runtime_error("read failed");
    const std::size_t n = std::min(buf.size(), data.size() - pos);
    std::memcpy(buf.data(), data.data() + pos, n);
    pos += n;
    co_return n;
  }
};

mpg::task<std::string> throwing_read() {
  throwing_stream s;
  s.data = "ab\ncd\n";
  mpg::net::buffered_reader<throwing_stream> in(s, 16);
  bool thrown = false;
  try {
    absl::StatusOr<std::string_view> line = co_await in.read_line();
    (void)line;
  } catch (const std::runtime_error&) {
    thrown = true;
  }
  if (!thrown) co_return "the stream's exception did not reach the caller";
  absl::StatusOr<std::string_view> a = co_await in.read_line();
  if (!a.ok() || *a != "ab") co_return "the first line after the exception";
  absl::StatusOr<std::string_view> b = co_await in.read_line();
  if (!b.ok() || *b != "cd") co_return "the second line after the exception";
  co_return "ok";
}

TEST_CASE("a stream's exception in a buffered call's task form reaches the caller's co_await") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(throwing_read()) == "ok");
}

// A stream whose read waits on a channel that nobody sends on: a task
// parked inside a buffered call's task form, inside the stream's read,
// when the runtime shuts down. The runtime destroys the chain of frames
// (AddressSanitizer checks the frees in CI); the reader, which lives in
// that task's frame, goes with it.
struct waiting_stream {
  mpg::chan<int> never;
  mpg::task<absl::StatusOr<std::size_t>> read(std::span<char>) {
    std::optional<int> v = co_await never.recv();  // never readied
    (void)v;
    co_return std::size_t{0};
  }
};

mpg::task<void> read_forever(std::atomic<int>* parked, std::atomic<int>* finished) {
  waiting_stream s;
  mpg::net::buffered_reader<waiting_stream> in(s, 16);
  parked->fetch_add(1);
  absl::StatusOr<std::string_view> line = co_await in.read_line();
  (void)line;
  finished->fetch_add(1);
}

mpg::task<int> park_readers(std::atomic<int>* parked, std::atomic<int>* finished) {
  for (int i = 0; i < 3; ++i) mpg::go(read_forever(parked, finished), "reader");
  while (parked->load() < 3) co_await mpg::yield();
  co_await mpg::yield();  // the last one reaches its read and parks
  co_return parked->load();
}

TEST_CASE("a runtime shut down with tasks parked inside buffered calls destroys their frames") {
  std::atomic<int> parked{0}, finished{0};
  {
    mpg::runtime rt({.procs = 1});
    CHECK(rt.block_on(park_readers(&parked, &finished)) == 3);
  }
  CHECK(finished.load() == 0);
}

// Streams whose sends fail after `ok_sends` of them: with write_vectored,
// and with write alone (the writer then sends each region by itself).
struct failing_vectored_stream {
  int ok_sends = 0;
  int sends = 0;
  mpg::task<absl::Status> write(std::string_view) { co_return absl::InternalError("no write"); }
  mpg::task<absl::Status> write_vectored(std::span<const std::string_view>) {
    if (++sends > ok_sends) co_return absl::UnavailableError("peer gone");
    co_return absl::OkStatus();
  }
};
struct failing_plain_stream {
  int ok_sends = 0;
  int sends = 0;
  mpg::task<absl::Status> write(std::string_view) {
    if (++sends > ok_sends) co_return absl::UnavailableError("peer gone");
    co_return absl::OkStatus();
  }
};

// The first failed send is the writer's error from then on: every later
// call returns it (a small write too, which the buffer could take) and
// sends nothing more.
template <class Stream>
mpg::task<std::string> sticky_error() {
  Stream s;
  s.ok_sends = 1;
  mpg::net::buffered_writer<Stream> out(s, 16, 8);
  absl::Status st = co_await out.write("abc");
  if (st.ok()) st = co_await out.flush();  // the one send that works
  if (!st.ok()) co_return "first flush: " + st.ToString();
  st = co_await out.write("def");
  if (st.ok()) st = co_await out.flush();
  if (st.code() != absl::StatusCode::kUnavailable) co_return "the failed flush: " + st.ToString();
  const int sends = s.sends;
  st = co_await out.write("g");
  if (st.code() != absl::StatusCode::kUnavailable) co_return "a write after the error";
  const std::string large(20, 'i');
  const std::array<std::string_view, 2> parts{"h", large};
  st = co_await out.write_vectored(parts);
  if (st.code() != absl::StatusCode::kUnavailable) co_return "a vectored write after the error";
  st = co_await out.flush();
  if (st.code() != absl::StatusCode::kUnavailable) co_return "a flush after the error";
  if (s.sends != sends) co_return "sent after the error";
  co_return "ok";
}

TEST_CASE("buffered_writer: the first failed send is returned by every later call") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(sticky_error<failing_vectored_stream>()) == "ok");
  CHECK(rt.block_on(sticky_error<failing_plain_stream>()) == "ok");
}

mpg::task<std::string> write_over_socket(int fd, const std::string* big, std::string* want) {
  mpg::net::tcp_stream conn(fd);
  mpg::net::buffered_writer out(conn, 4096, 1024);
  std::mt19937 rng(5);
  for (int i = 0; i < 300; ++i) {
    const std::size_t n = std::uniform_int_distribution<std::size_t>(0, 3000)(rng);
    std::string_view payload(big->data() + i, n);
    std::string head = "msg " + std::to_string(i) + " " + std::to_string(n) + "\n";
    const std::array<std::string_view, 3> parts{head, payload, "\n"};
    absl::Status st = co_await out.write_vectored(parts);
    if (!st.ok()) co_return st.ToString();
    *want += head;
    *want += payload;
    *want += "\n";
  }
  // A payload of several MB in one vectored write (short writes continue).
  std::string huge(4 << 20, 'h');
  for (std::size_t k = 0; k < huge.size(); k += 4093) huge[k] = static_cast<char>('a' + k % 26);
  const std::array<std::string_view, 2> parts{"huge\n", huge};
  absl::Status st = co_await out.write_vectored(parts);
  if (!st.ok()) co_return st.ToString();
  *want += "huge\n" + huge;
  st = co_await out.flush();
  if (!st.ok()) co_return st.ToString();
  co_return "ok";
}

TEST_CASE("buffered_writer over a socketpair: vectored writes with large payloads arrive intact") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  std::string got;
  std::thread reader([fd = sv[1], &got] {
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      got.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
  });
  std::string big(4000, '\0');
  for (std::size_t k = 0; k < big.size(); ++k) big[k] = static_cast<char>(k * 7 + 1);
  std::string want;
  {
    mpg::runtime rt({.procs = 2});
    CHECK(rt.block_on(write_over_socket(sv[0], &big, &want)) == "ok");
  }  // the stream closed: the reader sees EOF
  reader.join();
  CHECK(got.size() == want.size());
  CHECK(got == want);
}

}  // namespace
