// test/recv_ring_tests.cpp: tcp_stream::receive(), the multishot receive
// into each P's ring of provided buffers (lib/io/recv_queue.hpp,
// lib/io/buffer_ring.hpp): order and integrity across Ps, buffers consumed
// on another P, EOF and errors after held data, backpressure on a slow
// reader, an exhausted ring (-ENOBUFS), close with buffers held. How a
// receive ends (deadlines, contexts, cancel, shutdown, close) is
// recv_ring_end_tests.cpp.
#include <doctest/doctest.h>

#include <mpg/blocking.hpp>
#include <mpg/io_error.hpp>
#include <mpg/mpg.hpp>
#include <mpg/net.hpp>

#include <atomic>
#include <cerrno>
#include <thread>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io/buffer_ring.hpp"
#include "io/fault_injector.hpp"
#include "io/reactor.hpp"
#include "io/recv_queue.hpp"
#include "test_support.hpp"
#include "stream_pair.hpp"

namespace {

using namespace std::chrono_literals;
using mpg::task;
using mpg::net::recv_buffer;
using mpg::net::tcp_stream;

using mpg_test::connect_pair;
using mpg_test::echo_through;
using mpg_test::stream_pair;

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

// R6 (recv_queue.hpp): a multishot armed on one P moves to the P its
// reader is stolen to. Eight streams are armed on this P, then read by
// eight tasks that each work 100 us per message: the other P steals
// readers from this one, and a reader stolen twice in a row ends its
// multishot and re-arms it there, so some messages arrive in the other P's
// ring. Without R6 every message of every round came through this P's
// ring, whoever read it. The readers play at least kRounds rounds, then on
// until a message has come through another ring (up to kMaxRounds: a
// loaded machine may keep the other P's M off the CPUs for the first
// rounds). Each message is checked, so nothing is lost or reordered across
// the moves.
TEST_CASE("receive: a multishot moves to the P its reader was stolen to; nothing is lost") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    constexpr int kStreams = 8;
    constexpr int kRounds = 60;
    constexpr int kMaxRounds = 2000;
    std::vector<stream_pair> pairs;
    for (int i = 0; i < kStreams; ++i) pairs.push_back(co_await connect_pair());
    // Armed here: a receive whose deadline has passed arms the multishot
    // and returns at once, so this task does not leave its P between arms.
    mpg::detail::buffer_ring* home = this_ring();
    for (auto& p : pairs) {
      auto r = co_await p.client.receive(std::chrono::steady_clock::now() - 1s);
      CHECK(r.status().code() == absl::StatusCode::kDeadlineExceeded);
    }
    REQUIRE(this_ring() == home);
    struct shared {
      mpg::detail::buffer_ring* home;
      std::uint64_t home_before;
      // Messages the readers have taken, each counted after its buffers
      // went back to their ring.
      std::atomic<std::uint64_t> received{0};
      // moved(): some message came through another ring. Acquire: every
      // message counted in `received` had its buffers given back before
      // (release), so while all came through home, home's count is at least
      // `received` (a message split across buffers only adds to it).
      bool moved() const {
        const std::uint64_t n = received.load(std::memory_order_acquire);
        return n > home->given_back() - home_before;
      }
    } sh{home, home->given_back()};
    std::vector<mpg::join_handle<std::pair<int, int>>> readers;
    for (int i = 0; i < kStreams; ++i) {
      readers.push_back(mpg::spawn([](stream_pair& p, int i,
                                      shared& sh) -> task<std::pair<int, int>> {
        int in_order = 0, k = 0;
        for (; k < kRounds || (k < kMaxRounds && !sh.moved()); ++k) {
          const std::string msg = std::to_string(i) + ":" + std::to_string(k);
          const std::string got = co_await echo_through(p, msg);
          sh.received.fetch_add(1, std::memory_order_release);
          if (got == msg) ++in_order;
          const auto until = std::chrono::steady_clock::now() + 100us;  // work
          while (std::chrono::steady_clock::now() < until) {
          }
        }
        co_return std::pair{in_order, k};
      }(pairs[i], i, sh)));
    }
    std::uint64_t total = 0;
    for (auto& r : readers) {
      const auto [in_order, rounds] = co_await r;
      CHECK(in_order == rounds);
      total += static_cast<std::uint64_t>(rounds);
    }
    // Every buffer a reader took is back with its ring by now.
    const std::uint64_t via_home = home->given_back() - sh.home_before;
    INFO("messages through the arming P's ring: " << via_home << " of " << total);
    CHECK(via_home < total);
  }());
}

// The task form's wait (a receive with a deadline) woken on another M than
// the one it parked on: its readers hand their P away before each receive
// (mpg::blocking), so they wait on whichever M took them while their
// multishot stays on the ring it was armed on. A stress case for TSan: the
// wait used to store step()'s result in its frame after step() had
// published the waiter, when the waker's M may already have resumed the
// task and built its next wait in the same place. Under TSan this case
// reported that race in 2 of 33 runs (CI's TSan stage caught it in the
// case above that mixes read(buf)); it is not a deterministic reproducer.
TEST_CASE("receive: a waiting receive with a deadline leaves its frame alone once published") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    constexpr int kStreams = 8;
    constexpr int kRounds = 500;
    std::vector<stream_pair> pairs;
    for (int i = 0; i < kStreams; ++i) pairs.push_back(co_await connect_pair());
    std::vector<mpg::join_handle<int>> readers;
    std::vector<mpg::join_handle<void>> writers;
    for (int i = 0; i < kStreams; ++i) {
      readers.push_back(mpg::spawn([](tcp_stream& s, int n) -> task<int> {
        int got = 0;
        while (got < n) {
          // Hands the P away and back: the task goes on on whichever M
          // takes it, while its multishot stays on the ring it was armed on.
          co_await mpg::blocking([] {});
          auto b = co_await s.receive(std::chrono::steady_clock::now() + 1h);
          REQUIRE(b.ok());
          if (b->empty()) break;
          got += static_cast<int>(b->size());
          REQUIRE((co_await s.write(std::string_view("a"))).ok());
        }
        co_return got;
      }(pairs[i].client, kRounds)));
      writers.push_back(mpg::spawn([](tcp_stream& s, int n) -> task<void> {
        char ack[1];
        for (int r = 0; r < n; ++r) {
          REQUIRE((co_await s.write(std::string_view("x"))).ok());
          const absl::StatusOr<std::size_t> acked = co_await s.read(std::span<char>(ack));
          REQUIRE(acked.ok());
          REQUIRE(*acked == 1u);
        }
      }(pairs[i].server, kRounds)));
    }
    for (auto& w : writers) co_await w;
    for (auto& r : readers) CHECK(co_await r == kRounds);
  }());
}

TEST_CASE("receive: a buffer given back on another thread goes back to the ring it came from") {
  // One P: this_ring() is the ring the buffer came from.
  mpg::runtime rt({.procs = 1, .recv_buffers = 16});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    CHECK((co_await p.server.write(std::string_view("ping"))).ok());
    auto b = co_await p.client.receive();
    REQUIRE(b.ok());
    CHECK(b->view() == "ping");
    mpg::detail::buffer_ring* home = this_ring();
    const std::uint64_t before = home->given_back();
    // Given back by a task on a P of another runtime, on another thread,
    // the buffer goes back to the ring it came from.
    recv_buffer moved = std::move(*b);
    std::thread t([&moved] {
      mpg::runtime other({.procs = 1});
      other.block_on([](recv_buffer buf) -> task<void> {
        co_await mpg::yield();
        buf.reset();
      }(std::move(moved)));
    });
    t.join();
    CHECK(home->given_back() == before + 1);
    // And from a plain thread, no P at all.
    CHECK((co_await p.server.write(std::string_view("pong"))).ok());
    auto b2 = co_await p.client.receive();
    REQUIRE(b2.ok());
    CHECK(b2->view() == "pong");
    std::thread t2([&b2] { b2->reset(); });
    t2.join();
    CHECK(home->given_back() == before + 2);
    // The ring keeps working through many rounds (16 buffers: every one is
    // recycled many times, some given back by other tasks).
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

namespace {

struct flood_result {
  std::size_t most_held = 0;     // the slow stream's ring buffers, at most, during the flood
  bool multishot = true;         // the slow reader's receive was a multishot
  std::uint64_t pause_cancels = 0;  // backpressure cancels (R3) the P's reactor prepared in
                                    // the flood
  std::uint64_t copies = 0;      // buffers copied out over the limit in the flood (all still held)
  std::uint64_t nobufs = 0;      // multishots ended by an empty ring (R4) in the flood
  bool reader_ok = false;        // the slow reader got every byte, in order
  bool ring_back = false;        // every buffer came back to the ring at the end
};

// slow_reader_flood(): on a runtime of one P whose ring holds `buffers`
// buffers (a stream's limit is then buffers / 16, at most 8), a reader waits in
// receive(), takes one buffer and then stops reading, while its peer writes
// `total` bytes in writes of `chunk` and another stream on the same ring
// does round trips: 200, and with a multishot receive more until the flood
// is held off, by a backpressure cancel the P's reactor prepared or by an
// empty ring (at most 20,000; a loaded machine can run the 200 before the
// flood reaches the reader's limit); then the reader goes on and reads to
// the end.
task<flood_result> slow_reader_flood(unsigned buffers, std::size_t total, std::size_t chunk) {
  flood_result r;
  auto slow = co_await connect_pair();
  auto fast = co_await connect_pair();
  mpg::chan<int> go_on(1);
  auto reader = mpg::spawn([](tcp_stream& s, mpg::chan<int>& go, std::size_t total) -> task<bool> {
    auto first = co_await s.receive();
    REQUIRE(first.ok());
    std::size_t at = 0;
    bool ok = true;
    for (std::size_t i = 0; i < first->size(); ++i, ++at)
      ok = ok && first->data()[i] == pattern(7, at);
    first->reset();
    co_await go.recv();
    for (;;) {
      auto b = co_await s.receive();
      REQUIRE(b.ok());
      if (b->empty()) break;
      for (std::size_t i = 0; i < b->size(); ++i, ++at) ok = ok && b->data()[i] == pattern(7, at);
    }
    co_return ok && at == total;
  }(slow.client, go_on, total));
  co_await mpg::yield();  // the reader is waiting (one P: it ran until it parked)
  mpg::detail::reactor* const home = mpg::detail::current_reactor();
  const std::uint64_t cancels_before = home->pause_cancels();
  const mpg::detail::recv_stats stats_before = mpg::detail::recv_queue::stats();
  // The reader armed as it parked: a multishot, unless the faults refuse it
  // (recv_ring_tests_without_multishot: counted at the arm's CQE), and
  // then nothing pauses.
  auto multishot = [home] {
    return home->injected_faults()
               .by_kind[static_cast<unsigned>(mpg::detail::io_fault::no_multishot)] == 0;
  };
  // A large write lands at once, and the multishot takes a burst of
  // buffers before its pause can take effect; small ones come as the
  // multishot goes on.
  auto writer = mpg::spawn([](tcp_stream& s, std::size_t n, std::size_t chunk) -> task<void> {
    std::string all(n, '\0');
    for (std::size_t i = 0; i < n; ++i) all[i] = pattern(7, i);
    for (std::size_t at = 0; at < n; at += chunk) {
      REQUIRE((co_await s.write(std::string_view(all).substr(at, chunk))).ok());
    }
    s.close();
  }(slow.server, total, chunk));
  auto held_off = [&] {
    return home->pause_cancels() != cancels_before ||
           mpg::detail::recv_queue::stats().nobufs != stats_before.nobufs;
  };
  for (int i = 0; i < 20'000 && (i < 200 || (multishot() && !held_off())); ++i) {
    std::string msg = "message " + std::to_string(i);
    CHECK((co_await fast.server.write(msg)).ok());
    auto b = co_await fast.client.receive();
    REQUIRE(b.ok());
    CHECK(b->view() == msg);
    r.most_held = std::max(r.most_held, slow.client.held_buffers());
  }
  r.pause_cancels = home->pause_cancels() - cancels_before;
  r.multishot = multishot();
  r.copies = mpg::detail::recv_queue::stats().over_limit_copies - stats_before.over_limit_copies;
  r.nobufs = mpg::detail::recv_queue::stats().nobufs - stats_before.nobufs;
  CHECK(go_on.try_send(1));
  r.reader_ok = co_await reader;
  co_await writer;
  // Every buffer comes back to the ring once the streams are gone.
  slow.client.close();
  fast.client.close();
  mpg::detail::buffer_ring* ring = this_ring();
  for (int i = 0; i < 1000 && ring->in_kernel() != buffers; ++i) {
    (void)co_await mpg::net::dial("127.0.0.1:1");  // a completion: the reactor reaps and refills
  }
  r.ring_back = ring->in_kernel() == buffers;
  co_return r;
}

}  // namespace

TEST_CASE(
    "receive: a slow reader holds at most its share of the ring; others keep receiving; nothing is "
    "lost") {
  // 16 buffers: the stream's limit is 1. One write of 512 KiB.
  mpg::runtime rt({.procs = 1, .recv_buffers = 16});
  const flood_result r = rt.block_on(slow_reader_flood(16, 512 * 1024, 512 * 1024));
  if (r.multishot) CHECK(r.pause_cancels >= 1);  // the flood reached the limit in the round trips
  CHECK(r.most_held <= 1);
  CHECK(r.reader_ok);
  CHECK(r.ring_back);
}

TEST_CASE("receive: a pause that finds no SQE is asked again by the next CQE") {
  // nopause: the first backpressure cancel finds no SQE, as when the SQ is
  // full. The request must survive that: a cancel is prepared at a later
  // CQE of the op. Dropped (the one ask of an arm), no cancel followed, and
  // with a ring that has room for the data as it comes (512 buffers, a
  // limit of 8; 2 MiB in writes of 8 KiB) the multishot went on receiving
  // the flood into heap copies (359 to 1,015 of 2 KiB in 15 runs) while the
  // reader held off.
  mpg::runtime rt({.procs = 1, .recv_buffers = 512, .io_faults = "rate=1,kinds=nopause"});
  const flood_result r = rt.block_on(slow_reader_flood(512, 2 * 1024 * 1024, 8 * 1024));
  CHECK(rt.stats().io_faults_no_pause >= 1);
  CHECK(r.pause_cancels >= 1);
  // More than its share of the ring only once its copies are at their cap
  // (128 of 2 KiB): the kernel's cancel can still miss (R3).
  CHECK((r.most_held <= 8 || r.copies == 128));
  CHECK(r.reader_ok);
  // Not r.ring_back: a ring of 512 refills by batches of 16 at reaps, and
  // the last few buffers come back at the P's next sleep or arm, which the
  // scene does not wait for (the test above checks the return, refilled at
  // every reap).
}

TEST_CASE(
    "receive: a slow reader's copies are capped when its pauses miss; the ring runs dry; nothing "
    "is lost") {
  // misspause: every backpressure cancel misses the multishot, as the
  // kernel's misses one it keeps requeuing while the peer keeps the socket
  // supplied. 512 buffers of 2 KiB (a limit of 8); a 4 MiB flood. The
  // copies stop at their cap (256 KiB: 128 buffers), the stream keeps the
  // ring's buffers, the ring runs dry and the multishot ends (-ENOBUFS);
  // the other stream goes on by plain recvs. Uncapped, the copies took
  // the flood while the reader held off.
  mpg::runtime rt({.procs = 1, .recv_buffers = 512, .recv_buffer_size = 2048,
                   .io_faults = "rate=1,kinds=misspause"});
  const std::uint64_t over_cap_before = mpg::detail::recv_queue::stats().held_over_cap;
  const flood_result r = rt.block_on(slow_reader_flood(512, 4 * 1024 * 1024, 64 * 1024));
  CHECK(rt.stats().io_faults_miss_pause >= 1);
  CHECK(r.pause_cancels == 0);
  CHECK(r.copies == 128);
  CHECK(mpg::detail::recv_queue::stats().held_over_cap > over_cap_before);
  CHECK(r.nobufs >= 1);
  CHECK(r.reader_ok);
  // Not r.ring_back: see the test above.
}

TEST_CASE("receive: a reader that caught up with a missed pause is paused again at its limit") {
  // misspause: every pause misses, so the arm goes on. 512 buffers of 2 KiB:
  // a limit of 8. Nine buffers come while the reader holds off: the 8th asks
  // a pause (missed), the 9th is copied. The reader takes all nine. Then
  // eight more come: the 8th must ask again. Had the missed ask stayed on
  // the arm, the queue would ask only after 8 more buffers over its limit.
  mpg::runtime rt({.procs = 1, .recv_buffers = 512, .recv_buffer_size = 2048,
                   .io_faults = "rate=1,kinds=misspause"});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    auto other = co_await connect_pair();
    mpg::detail::reactor* const home = mpg::detail::current_reactor();
    auto misses = [home] {
      return home->injected_faults()
          .by_kind[static_cast<unsigned>(mpg::detail::io_fault::miss_pause)];
    };
    // Round trips on the other stream until the slow one holds `n` ring
    // buffers (the reactor reaps while this task waits).
    auto until_held = [](tcp_stream& slow, stream_pair& other, std::size_t n) -> task<bool> {
      for (int i = 0; i < 20'000; ++i) {
        if (slow.held_buffers() == n) co_return true;
        CHECK((co_await other.server.write(std::string_view("r"))).ok());
        auto b = co_await other.client.receive();
        REQUIRE(b.ok());
      }
      co_return false;
    };
    // Arm the multishot: the reader waits once.
    CHECK((co_await p.server.write(std::string_view("x"))).ok());
    auto first = co_await p.client.receive();
    REQUIRE(first.ok());
    CHECK(first->view() == "x");
    first->reset();

    const std::uint64_t misses_before = misses();
    const std::string nine(9 * 2048, 'a');
    CHECK((co_await p.server.write(nine)).ok());
    CHECK(co_await until_held(p.client, other, 8));
    CHECK(misses() == misses_before + 1);
    std::size_t got = 0;
    while (got < nine.size()) {
      auto b = co_await p.client.receive();
      REQUIRE(b.ok());
      got += b->size();
    }
    CHECK(got == nine.size());
    CHECK(p.client.held_buffers() == 0);

    const std::string eight(8 * 2048, 'b');
    CHECK((co_await p.server.write(eight)).ok());
    CHECK(co_await until_held(p.client, other, 8));
    CHECK(misses() == misses_before + 2);
  }());
}

TEST_CASE("receive: an empty ring (-ENOBUFS) falls back to plain recvs; nothing is lost") {
  mpg::runtime rt({.procs = 1, .recv_buffers = 16});
  rt.block_on([]() -> task<void> {
    std::vector<stream_pair> pairs;
    for (int i = 0; i < 17; ++i) pairs.push_back(co_await connect_pair());
    // Sixteen readers each keep one received buffer: the ring is empty.
    std::vector<recv_buffer> kept;
    for (int i = 0; i < 16; ++i) {
      CHECK((co_await pairs[i].server.write(std::string_view("k"))).ok());
      auto b = co_await pairs[i].client.receive();
      REQUIRE(b.ok());
      CHECK(b->view() == "k");
      kept.push_back(std::move(*b));
    }
    CHECK(this_ring()->in_kernel() == 0);
    const std::uint64_t nobufs = mpg::detail::recv_queue::stats().nobufs;
    auto writer = mpg::spawn([](tcp_stream& s) -> task<void> {
      co_await send_pattern(s, 3, 20'000);
      s.close();
    }(pairs[16].server));
    CHECK(co_await check_pattern(pairs[16].client, 3) == 20'000);
    co_await writer;
    CHECK(mpg::detail::recv_queue::stats().nobufs > nobufs);
    // Given back, the buffers serve the other streams again.
    kept.clear();
    for (int i = 0; i < 16; ++i) {
      CHECK((co_await pairs[i].server.write(std::string_view("again"))).ok());
      auto b = co_await pairs[i].client.receive();
      REQUIRE(b.ok());
      CHECK(b->view() == "again");
    }
  }());
}

TEST_CASE(
    "receive: close with buffers held gives them back; a borrowed buffer outlives its stream") {
  mpg::runtime rt({.procs = 1, .recv_buffers = 64});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    CHECK((co_await p.server.write(std::string_view("first"))).ok());
    auto b = co_await p.client.receive();
    REQUIRE(b.ok());
    CHECK(b->view() == "first");
    mpg::detail::buffer_ring* ring = this_ring();
    const std::uint64_t before = ring->given_back();
    CHECK((co_await p.server.write(std::string_view("second"))).ok());
    CHECK((co_await p.server.write(std::string_view("third"))).ok());
    for (int i = 0; i < 100000 && p.client.held_buffers() < 2; ++i) co_await mpg::yield();
    const std::size_t held = p.client.held_buffers();
    CHECK(held >= 1);
    p.client.close();
    CHECK(p.client.held_buffers() == 0);
    CHECK(ring->given_back() == before + held);
    {
      tcp_stream gone = std::move(p.client);
    }
    b->reset();  // after its stream is gone
    CHECK(ring->given_back() == before + held + 1);
  }());
}
