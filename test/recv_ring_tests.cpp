// test/recv_ring_tests.cpp: tcp_stream::receive(), the multishot receive
// into each P's ring of provided buffers (lib/io/recv_queue.hpp,
// lib/io/buffer_ring.hpp): order and integrity across Ps, buffers consumed
// on another P, EOF and errors after held data, backpressure on a slow
// reader, an exhausted ring (-ENOBUFS), close with buffers held, deadlines,
// contexts and cancel on a waiting receive, and read(buf) from held buffers.
#include <doctest/doctest.h>

#include <mpg/io_error.hpp>
#include <mpg/mpg.hpp>
#include <mpg/net.hpp>

#include <atomic>
#include <thread>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io/buffer_ring.hpp"
#include "io/reactor.hpp"
#include "io/recv_queue.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using mpg::task;
using mpg::net::recv_buffer;
using mpg::net::tcp_stream;

struct stream_pair {
  tcp_stream client, server;
};
task<stream_pair> connect_pair() {
  auto ln = mpg::net::listen("127.0.0.1:0");
  REQUIRE(ln.ok());
  auto accepting = mpg::spawn(ln->accept());
  const std::string target = "127.0.0.1:" + std::to_string(ln->port());
  auto c = co_await mpg::net::dial(target);
  REQUIRE(c.ok());
  auto s = co_await accepting;
  REQUIRE(s.ok());
  co_return stream_pair{std::move(*c), std::move(*s)};
}

// The bytes of message i of a stream: a deterministic pattern.
char pattern(std::uint64_t seed, std::uint64_t at) {
  std::uint64_t x = (seed + 1) * 0x9e3779b97f4a7c15ull + at * 0xbf58476d1ce4e5b9ull;
  x ^= x >> 29;
  return static_cast<char>(x & 0xff);
}

// send_pattern(): `total` bytes of the stream's pattern in writes of varying
// sizes (1 .. 7000 bytes).
task<void> send_pattern(tcp_stream& s, std::uint64_t seed, std::size_t total) {
  std::vector<char> buf(7000);
  std::size_t at = 0, k = 0;
  while (at < total) {
    std::size_t n = std::min(total - at, 1 + (k++ * 977) % buf.size());
    for (std::size_t i = 0; i < n; ++i) buf[i] = pattern(seed, at + i);
    REQUIRE((co_await s.write(std::string_view(buf.data(), n))).ok());
    at += n;
  }
}

// check_pattern(): receives until EOF; how many bytes matched the pattern
// in order (stops at the first wrong byte). Every `mix`th read is a
// read(buf) of a few bytes instead of a receive().
task<std::size_t> check_pattern(tcp_stream& s, std::uint64_t seed, int mix = 0) {
  std::size_t at = 0;
  int k = 0;
  for (;;) {
    if (mix != 0 && ++k % mix == 0) {
      char small[3];
      auto n = co_await s.read(std::span<char>(small));
      REQUIRE(n.ok());
      if (*n == 0) co_return at;
      for (std::size_t i = 0; i < *n; ++i, ++at)
        if (small[i] != pattern(seed, at)) co_return at;
      continue;
    }
    absl::StatusOr<recv_buffer> b = co_await s.receive();
    REQUIRE(b.ok());
    if (b->empty()) co_return at;
    for (std::size_t i = 0; i < b->size(); ++i, ++at)
      if (b->data()[i] != pattern(seed, at)) co_return at;
  }
}

mpg::detail::buffer_ring* this_ring() { return mpg::detail::current_reactor()->buffers(); }

}  // namespace

TEST_CASE("receive: bytes, then end of stream after everything held") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    CHECK((co_await p.server.write(std::string_view("hello"))).ok());
    auto b = co_await p.client.receive();
    REQUIRE(b.ok());
    CHECK(b->view() == "hello");
    // Three messages and the close arrive before the reader looks again:
    // all held, then EOF, in order.
    CHECK((co_await p.server.write(std::string_view("one"))).ok());
    CHECK((co_await p.server.write(std::string_view("two"))).ok());
    CHECK((co_await p.server.write(std::string_view("three"))).ok());
    p.server.close();
    std::string got;
    for (;;) {
      auto m = co_await p.client.receive();
      REQUIRE(m.ok());
      if (m->empty()) break;
      got += m->view();
    }
    CHECK(got == "onetwothree");
    auto again = co_await p.client.receive();  // EOF is sticky
    REQUIRE(again.ok());
    CHECK(again->empty());
  }());
}

TEST_CASE("receive: many streams, many messages, checksummed, on 2 Ps, mixed with read(buf)") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    constexpr int kStreams = 8;
    const std::size_t total = mpg_test::kSanitized ? 200'000 : 2'000'000;
    std::vector<stream_pair> pairs;
    for (int i = 0; i < kStreams; ++i) pairs.push_back(co_await connect_pair());
    std::vector<mpg::join_handle<std::size_t>> readers;
    std::vector<mpg::join_handle<void>> writers;
    for (int i = 0; i < kStreams; ++i) {
      readers.push_back(mpg::spawn(check_pattern(pairs[i].client, i, i % 2 == 0 ? 0 : 5)));
      writers.push_back(mpg::spawn([](tcp_stream& s, int seed, std::size_t n) -> task<void> {
        co_await send_pattern(s, seed, n);
        s.close();
      }(pairs[i].server, i, total)));
    }
    for (auto& w : writers) co_await w;
    for (auto& r : readers) CHECK(co_await r == total);
  }());
}

TEST_CASE("receive: a buffer given back on another thread goes back to the ring it came from") {
  mpg::runtime rt({.procs = 2, .recv_buffers = 16});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    CHECK((co_await p.server.write(std::string_view("ping"))).ok());
    auto b = co_await p.client.receive();
    REQUIRE(b.ok());
    CHECK(b->view() == "ping");
    mpg::detail::buffer_ring* home = this_ring();
    const std::uint64_t before = home->given_back();
    // Returned from a thread that is no P at all (the hardest case: no
    // reactor lock, no task), the buffer goes back to its ring.
    recv_buffer moved = std::move(*b);
    std::thread t([&moved] { moved.reset(); });
    t.join();
    CHECK(home->given_back() == before + 1);
    // The ring keeps working through many rounds (16 buffers: every one is
    // recycled many times, some returned by tasks that migrated).
    for (int i = 0; i < 200; ++i) {
      CHECK((co_await p.server.write(std::string_view("x"))).ok());
      auto m = co_await p.client.receive();
      REQUIRE(m.ok());
      CHECK(m->view() == "x");
      if (i % 3 == 0) {
        auto later = mpg::spawn([](recv_buffer buf) -> task<void> {
          co_await mpg::yield();
          buf.reset();
        }(std::move(*m)));
        co_await later;
      }
    }
  }());
}
