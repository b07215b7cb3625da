// test/recv_ring_tests.cpp: tcp_stream::receive(), the multishot receive
// into each P's ring of provided buffers (lib/io/recv_queue.hpp,
// lib/io/buffer_ring.hpp): order and integrity across Ps, buffers consumed
// on another P, EOF and errors after held data, backpressure on a slow
// reader, an exhausted ring (-ENOBUFS), close with buffers held, deadlines,
// contexts and cancel on a waiting receive, and read(buf) from held buffers.
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
using mpg_test::stream_pair;

// echo_through(): msg written at p's server end and received at its client
// end, buffer by buffer; returns what arrived. The buffers go to `keep`
// when it is given, else back to the ring as each is read.
task<std::string> echo_through(stream_pair& p, std::string_view msg,
                               std::vector<recv_buffer>* keep = nullptr) {
  REQUIRE((co_await p.server.write(msg)).ok());
  std::string got;
  while (got.size() < msg.size()) {
    auto b = co_await p.client.receive();
    REQUIRE(b.ok());
    REQUIRE(!b->empty());
    got.append(b->view());
    if (keep != nullptr) keep->push_back(std::move(*b));
  }
  co_return got;
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
      readers.push_back(mpg::spawn([](stream_pair& p, int i, shared& sh) -> task<std::pair<int, int>> {
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
  std::uint64_t pause_cancels = 0;  // backpressure cancels (R3) the P's reactor prepared in the flood
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
    for (std::size_t i = 0; i < first->size(); ++i, ++at) ok = ok && first->data()[i] == pattern(7, at);
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
    return home->injected_faults().by_kind[static_cast<unsigned>(mpg::detail::io_fault::no_multishot)] == 0;
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

TEST_CASE("receive: a slow reader holds at most its share of the ring; others keep receiving; nothing is lost") {
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

TEST_CASE("receive: a slow reader's copies are capped when its pauses miss; the ring runs dry; nothing is lost") {
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
      return home->injected_faults().by_kind[static_cast<unsigned>(mpg::detail::io_fault::miss_pause)];
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

TEST_CASE("receive: close with buffers held gives them back; a borrowed buffer outlives its stream") {
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

namespace {
struct wait_result {
  absl::StatusOr<recv_buffer> r = absl::UnknownError("not run");
};
task<void> receive_once(tcp_stream& s, wait_result* out) { out->r = co_await s.receive(); }
task<void> receive_ctx(tcp_stream& s, wait_result* out, const mpg::context* ctx) {
  out->r = co_await s.receive(*ctx);
}
}  // namespace

TEST_CASE("receive: deadlines end a waiting receive without ending the stream's multishot") {
  mpg::runtime rt({.procs = 1});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    auto late = co_await p.client.receive(std::chrono::steady_clock::now() + 30ms);
    CHECK(late.status().code() == absl::StatusCode::kDeadlineExceeded);
    // The frame-less form, waiting, then a read deadline in the past.
    wait_result w;
    auto reader = mpg::spawn(receive_once(p.client, &w));
    co_await mpg::yield();  // one P: the reader is waiting
    p.client.set_read_deadline(std::chrono::steady_clock::now() - 1ms);
    co_await reader;
    CHECK(w.r.status().code() == absl::StatusCode::kDeadlineExceeded);
    // A deadline set ahead while waiting ends it then.
    p.client.set_read_deadline(std::nullopt);
    wait_result w2;
    auto reader2 = mpg::spawn(receive_once(p.client, &w2));
    co_await mpg::yield();
    const auto t0 = std::chrono::steady_clock::now();
    p.client.set_read_deadline(t0 + 30ms);
    co_await reader2;
    CHECK(w2.r.status().code() == absl::StatusCode::kDeadlineExceeded);
    CHECK(std::chrono::steady_clock::now() - t0 >= 30ms);
    // Moved later and then removed: the receive goes on and gets the data.
    // (200 ms: the receive starts and the deadline is removed well before
    // it, on a loaded machine too.)
    p.client.set_read_deadline(std::chrono::steady_clock::now() + 200ms);
    wait_result w3;
    auto reader3 = mpg::spawn(receive_once(p.client, &w3));
    co_await mpg::yield();
    p.client.set_read_deadline(std::nullopt);
    co_await mpg::sleep_for(250ms);  // past the removed deadline: it must not fire
    CHECK(!w3.r.ok());  // still waiting: unknown, not run to the end
    CHECK((co_await p.server.write(std::string_view("data"))).ok());
    co_await reader3;
    REQUIRE(w3.r.ok());
    CHECK(w3.r->view() == "data");
    // Bytes that arrived meanwhile are not lost to any of the timeouts.
    CHECK((co_await p.server.write(std::string_view("more"))).ok());
    auto b = co_await p.client.receive(std::chrono::steady_clock::now() + 5s);
    REQUIRE(b.ok());
    CHECK(b->view() == "more");
  }());
}

// A deadline that passed comes first, as a plain read's (and Go's Read):
// held bytes do not go out past it, and they stay held for a later read.
// (Not run without multishot: a single recv holds nothing while no reader
// waits.)
TEST_CASE("receive: a read deadline that passed comes before held bytes, which stay held") {
  mpg::runtime rt({.procs = 1});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    CHECK((co_await p.server.write(std::string_view("a"))).ok());
    auto first = co_await p.client.receive();  // the stream now receives with the multishot
    REQUIRE(first.ok());
    CHECK(first->view() == "a");
    CHECK((co_await p.server.write(std::string_view("held"))).ok());
    // Bounded: the bytes come through the loopback within microseconds.
    for (int i = 0; i < 100000 && p.client.held_buffers() == 0; ++i) co_await mpg::yield();
    REQUIRE(p.client.held_buffers() > 0);
    const auto past = std::chrono::steady_clock::now() - 1ms;
    auto explicit_receive = co_await p.client.receive(past);
    CHECK(explicit_receive.status().code() == absl::StatusCode::kDeadlineExceeded);
    char buf[16];
    auto explicit_read = co_await p.client.read(std::span<char>(buf), past);
    CHECK(explicit_read.status().code() == absl::StatusCode::kDeadlineExceeded);
    p.client.set_read_deadline(past);
    auto frameless = co_await p.client.receive();
    CHECK(frameless.status().code() == absl::StatusCode::kDeadlineExceeded);
    auto plain = co_await p.client.read(std::span<char>(buf));
    CHECK(plain.status().code() == absl::StatusCode::kDeadlineExceeded);
    p.client.set_read_deadline(std::nullopt);
    // Bounded: bytes given out past a deadline would leave nothing to read.
    auto n = co_await p.client.read(std::span<char>(buf), std::chrono::steady_clock::now() + 2s);
    REQUIRE(n.ok());
    CHECK(std::string_view(buf, *n) == "held");
  }());
}

TEST_CASE("receive: a context or cancel() ends a waiting receive; data after it is kept") {
  mpg::runtime rt({.procs = 1});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    {
      auto [ctx, cancel] = mpg::with_cancel(mpg::background());
      wait_result w;
      auto reader = mpg::spawn(receive_ctx(p.client, &w, &ctx));
      co_await mpg::yield();
      cancel();
      co_await reader;
      CHECK(w.r.status().code() == absl::StatusCode::kCancelled);
      auto again = co_await p.client.receive(ctx);  // sticky
      CHECK(again.status().code() == absl::StatusCode::kCancelled);
    }
    {
      auto [ctx, cancel] = mpg::with_timeout(mpg::background(), 20ms);
      auto r = co_await p.client.receive(ctx);
      CHECK(r.status().code() == absl::StatusCode::kDeadlineExceeded);
    }
    {
      wait_result w;
      auto reader = mpg::spawn(receive_once(p.client, &w));
      co_await mpg::yield();
      p.client.cancel();
      co_await reader;
      CHECK(w.r.status().code() == absl::StatusCode::kCancelled);
    }
    CHECK((co_await p.server.write(std::string_view("after"))).ok());
    auto b = co_await p.client.receive();
    REQUIRE(b.ok());
    CHECK(b->view() == "after");
    // close() from another task: kCancelled, then the stream is closed.
    wait_result w;
    auto reader = mpg::spawn(receive_once(p.client, &w));
    co_await mpg::yield();
    p.client.close();
    co_await reader;
    CHECK(w.r.status().code() == absl::StatusCode::kCancelled);
    auto closed = co_await p.client.receive();
    CHECK(mpg::net::is_closed(closed.status()));
  }());
}

TEST_CASE("read(buf) after receive(): copies from the held buffers, in order, partial buffers kept") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    CHECK((co_await p.server.write(std::string_view("0123456789"))).ok());
    auto b = co_await p.client.receive();
    REQUIRE(b.ok());
    std::string got(b->view());
    while (got.size() < 10) {
      auto m = co_await p.client.receive();
      REQUIRE(m.ok());
      got += m->view();
    }
    CHECK(got == "0123456789");
    CHECK((co_await p.server.write(std::string_view("abcdefgh"))).ok());
    p.server.close();
    std::string rest;
    char small[3];
    for (;;) {
      auto n = co_await p.client.read(std::span<char>(small));
      REQUIRE(n.ok());
      if (*n == 0) break;
      rest.append(small, *n);
      auto more = co_await p.client.receive();  // what read() left of a buffer
      REQUIRE(more.ok());
      if (more->empty()) break;
      rest += more->view();
    }
    CHECK(rest == "abcdefgh");
  }());
}

TEST_CASE("receive: a runtime shut down under a waiting receive and held buffers leaks nothing") {
  {
    mpg::runtime rt({.procs = 2});
    rt.block_on([]() -> task<void> {
      auto p = co_await connect_pair();
      CHECK((co_await p.server.write(std::string_view("held"))).ok());
      // A reader that keeps the stream (and a borrowed buffer) in its frame
      // and waits forever: killed by the runtime's shutdown.
      mpg::go([](stream_pair q) -> task<void> {
        auto b = co_await q.client.receive();
        REQUIRE(b.ok());
        CHECK((co_await q.server.write(std::string_view("more"))).ok());
        for (;;) {
          auto again = co_await q.client.receive(std::chrono::steady_clock::now() + 1h);
          if (!again.ok()) co_return;
        }
      }(std::move(p)));
      co_await mpg::yield();
    }());
  }  // ~runtime: kills the reader; ASan reports any leak
}

TEST_CASE("receive: a context that outlives the runtime is cancelled after a receive waiting on it was killed") {
  // ~runtime kills a task parked in a receive bound to a context made
  // outside the runtime. The receive's watcher of the context leaves the
  // context with the killed frame; if it stayed linked, the cancel() below
  // would write into the freed frame and call through it (ASan:
  // heap-use-after-free in context_node::cancel).
  auto [ctx, cancel] = mpg::with_cancel(mpg::background());
  {
    mpg::runtime rt({.procs = 1});
    rt.block_on([](mpg::context c) -> task<void> {
      auto p = co_await connect_pair();
      // On one P the reader runs first (the newest spawn) and parks in the
      // receive, its watcher linked; then this task ends, and the runtime
      // with it.
      mpg::go([](stream_pair q, mpg::context rc) -> task<void> {
        auto b = co_await q.client.receive(rc);
        (void)b;
      }(std::move(p), c));
      co_await mpg::yield();
    }(ctx));
  }
  cancel();
  CHECK(ctx.err().code() == absl::StatusCode::kCancelled);
}

TEST_CASE("receive: buffers held past the runtime's end are given back after it; the ring goes with the last") {
  // The ring outlives its reactor while a buffer is held (buffer_ring.hpp,
  // "Lifetime"): the reactor's release() drops its own reference with
  // those of the buffers in the kernel and on the return stack (some given
  // back here are still there: the default ring refills by batches of 16),
  // and each buffer given back after it drops its own. A miscount is a
  // leak or a use after free, which ASan reports.
  std::vector<recv_buffer> kept;
  {
    mpg::runtime rt({.procs = 1});
    kept = rt.block_on([]() -> task<std::vector<recv_buffer>> {
      auto p = co_await connect_pair();
      std::vector<recv_buffer> out;
      for (int i = 0; i < 8; ++i) {
        const std::string msg = "message " + std::to_string(i);
        // Every other message's buffers are kept beyond the runtime, the
        // rest given back now (onto the return stack).
        const std::string got = co_await echo_through(p, msg, i % 2 == 1 ? &out : nullptr);
        CHECK(got == msg);
      }
      co_return out;
    }());
  }
  REQUIRE(!kept.empty());
  for (const recv_buffer& b : kept) CHECK(b.view().substr(0, 8) == "message ");
  kept.clear();  // the last references: the ring's memory goes with the last
}

TEST_CASE("receive: an arm refused for want of an SQE (-EBUSY) is reported, not retried forever") {
  // nosqe: reactor::start finds no SQE for any multishot arm, as when the
  // kernel refuses submissions through all of its attempts. receive()
  // reports EBUSY at once (recv_queue.cpp, step: an arm that ended before
  // it returned); the stream's sends are unaffected.
  mpg::runtime rt({.procs = 1, .io_faults = "rate=1,kinds=nosqe"});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    CHECK((co_await p.server.write(std::string_view("hello"))).ok());
    auto b = co_await p.client.receive();
    REQUIRE_FALSE(b.ok());
    CHECK(mpg::errno_of(b.status()) == EBUSY);
    auto again = co_await p.client.receive();  // a second arm is refused too, as promptly
    REQUIRE_FALSE(again.ok());
    CHECK(mpg::errno_of(again.status()) == EBUSY);
    CHECK((co_await p.client.write(std::string_view("back"))).ok());
    char buf[8];
    auto n = co_await p.server.read(std::span<char>(buf));
    REQUIRE(n.ok());
    CHECK(std::string_view(buf, *n) == "back");
  }());
  CHECK(rt.stats().io_faults_no_sqe >= 2);
}

// close() ends the stream's multishot. One that outlived close() would keep
// the socket open (the kernel's request holds the file, whatever becomes of
// the fd number), and the peer would never see the connection end: each case
// checks that it does, in bounded time. (With close()'s cancel of the slot
// left out, the idle case fails in every round.)
namespace {
// Refuses the reactors' flushes while set (reactor.hpp, g_flush_refuse_hook).
// Relaxed: set before the reader is spawned, cleared by the task that
// flushes next; a stale read elsewhere (sysmon) only puts a flush off.
std::atomic<bool> g_refuse_flush{false};
bool refuse_flush_while_set() { return g_refuse_flush.load(std::memory_order_relaxed); }

// peer_sees_end(): the peer's read ends (EOF, or a reset for unread bytes)
// within 10 s, rather than its deadline passing.
task<bool> peer_sees_end(tcp_stream& peer) {
  peer.set_read_deadline(std::chrono::steady_clock::now() + 10s);
  char buf[4096];
  for (;;) {
    auto n = co_await peer.read(std::span<char>(buf));
    if (!n.ok()) co_return n.status().code() != absl::StatusCode::kDeadlineExceeded;
    if (*n == 0) co_return true;
  }
}
}  // namespace

TEST_CASE("receive: close() of an idle multishot ends it; the peer sees the end") {
  // Two Ps, several rounds: the multishot waits for data on either P's
  // ring, and close() runs on either.
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    for (int round = 0; round < 10; ++round) {
      auto p = co_await connect_pair();
      CHECK((co_await p.server.write(std::string_view("armed"))).ok());
      auto b = co_await p.client.receive();
      REQUIRE(b.ok());
      CHECK(b->view() == "armed");
      // The multishot stays armed for the next receive (recv_queue.hpp, R1),
      // idle: nothing more comes.
      p.client.close();
      const bool ended = co_await peer_sees_end(p.server);
      INFO("round ", round);
      CHECK(ended);
    }
  }());
}

TEST_CASE("receive: close() with the multishot's SQE still in the SQ; the peer sees the end") {
  // The cancel's flush is refused too: the SQE, still in the SQ, gets fd -1
  // (reactor_cancel.cpp, "A close with the op's SQE still in the SQ").
  mpg::runtime rt({.procs = 1});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    g_refuse_flush.store(true, std::memory_order_relaxed);
    mpg::detail::g_flush_refuse_hook.store(&refuse_flush_while_set);
    wait_result got;
    auto reader = mpg::spawn(receive_once(p.client, &got));
    // One P: the reader runs, arms (its SQE stays in the SQ) and parks
    // while this task yields.
    mpg::detail::reactor* r = mpg::detail::current_reactor();
    for (int i = 0; i < 1000 && !r->has_unsubmitted(); ++i) co_await mpg::yield();
    const bool in_sq = r->has_unsubmitted();
    p.client.close();  // its cancel's flush is refused too
    g_refuse_flush.store(false, std::memory_order_relaxed);
    mpg::detail::g_flush_refuse_hook.store(nullptr);
    r->flush();
    co_await reader;
    CHECK(in_sq);
    CHECK(got.r.status().code() == absl::StatusCode::kCancelled);
    const bool ended = co_await peer_sees_end(p.server);
    CHECK(ended);
  }());
}
