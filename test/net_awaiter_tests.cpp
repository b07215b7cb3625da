// test/net_awaiter_tests.cpp: tcp_stream::read(buf), write(data) and
// write_vectored(bufs), the read_op, write_op and write_vectored_op awaiters
// (mpg/net.hpp): their direct path (one op issued from the awaiting task's
// frame) and their hand-over to the task form of the loop when the op must
// be issued again (a kick from a deadline set while it is in flight; a short
// send) or, for write_vectored, holds more buffers than the op takes.
#include <doctest/doctest.h>

#include <mpg/buffered.hpp>
#include <mpg/io_error.hpp>
#include <mpg/mpg.hpp>
#include <mpg/net.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
#include "stream_pair.hpp"

namespace {

using namespace std::chrono_literals;
using mpg::task;
using mpg::net::tcp_stream;
using read_result = absl::StatusOr<std::size_t>;

using mpg_test::connect_pair;
using mpg_test::stream_pair;

task<read_result> read_into(tcp_stream& s, std::span<char> buf) { co_return co_await s.read(buf); }
task<absl::Status> write_from(tcp_stream& s, std::string_view data) {
  co_return co_await s.write(data);
}
task<absl::Status> write_all_from(tcp_stream& s, std::span<const std::string_view> bufs) {
  co_return co_await s.write_vectored(bufs);
}

// read_exactly(): n bytes, as a string. The test fails at end of stream,
// or if the bytes stop coming (a write that lost some): a read deadline
// bounds the wait rather than the test's timeout.
task<std::string> read_exactly(tcp_stream& s, std::size_t n) {
  s.set_read_deadline(std::chrono::steady_clock::now() + 20s);
  std::string out;
  char buf[256];
  while (out.size() < n) {
    auto got = co_await s.read(std::span<char>(buf, std::min(sizeof buf, n - out.size())));
    REQUIRE(got.ok());
    REQUIRE(*got != 0);
    out.append(buf, *got);
  }
  s.set_read_deadline(std::nullopt);
  co_return out;
}

// read_all(): reads until end of stream; the bytes' sum and count.
task<std::pair<std::uint64_t, std::size_t>> read_all(tcp_stream& s) {
  std::vector<char> buf(64 * 1024);
  std::uint64_t sum = 0;
  std::size_t total = 0;
  for (;;) {
    auto n = co_await s.read(std::span<char>(buf));
    REQUIRE(n.ok());
    if (*n == 0) co_return std::pair{sum, total};
    for (std::size_t i = 0; i < *n; ++i) sum = sum * 31 + static_cast<unsigned char>(buf[i]);
    total += *n;
  }
}

}  // namespace

TEST_CASE("read_op: data, end of stream, an empty buffer and a closed stream") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    char buf[16];
    CHECK((co_await p.server.write(std::string_view("hello"))).ok());
    auto n = co_await p.client.read(std::span<char>(buf));
    REQUIRE(n.ok());
    CHECK(std::string_view(buf, *n) == "hello");

    auto none = co_await p.client.read(std::span<char>(buf, 0));
    REQUIRE(none.ok());
    CHECK(*none == 0);

    p.server.close();
    auto eof = co_await p.client.read(std::span<char>(buf));
    REQUIRE(eof.ok());
    CHECK(*eof == 0);

    p.client.close();
    auto closed = co_await p.client.read(std::span<char>(buf));
    CHECK(mpg::net::is_closed(closed.status()));
  }());
}

TEST_CASE(
    "read_op: a deadline set while the recv is in flight ends it (issued again, then expired)") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    char buf[16];
    auto reading = mpg::spawn(read_into(p.client, std::span<char>(buf)));
    while (!p.client.read_pending()) co_await mpg::yield();
    // Earlier than none: the recv in flight is kicked (-EINTR), and the
    // rest of the read runs in the task form with the deadline armed.
    p.client.set_read_deadline(std::chrono::steady_clock::now() + 5ms);
    auto late = co_await reading;
    CHECK(late.status().code() == absl::StatusCode::kDeadlineExceeded);

    // The stream goes on working once the deadline is cleared.
    p.client.set_read_deadline(std::nullopt);
    CHECK((co_await p.server.write(std::string_view("after"))).ok());
    auto n = co_await p.client.read(std::span<char>(buf));
    REQUIRE(n.ok());
    CHECK(std::string_view(buf, *n) == "after");
  }());
}

TEST_CASE("read_op converts to a task, which can be spawned and cancelled") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    char buf[8];
    auto reading = mpg::spawn(task<read_result>(p.client.read(std::span<char>(buf))));
    while (!p.client.read_pending()) co_await mpg::yield();
    p.client.cancel();
    auto cancelled = co_await reading;
    CHECK(cancelled.status().code() == absl::StatusCode::kCancelled);
  }());
}

// spawnable<A>: mpg::spawn takes an A (spawn.hpp: a task, or an rvalue op
// that has a task form).
template <class A>
concept spawnable = requires(A&& a) { mpg::spawn(static_cast<A&&>(a)); };
static_assert(spawnable<mpg::net::read_op>);
static_assert(spawnable<mpg::net::write_op>);
static_assert(spawnable<mpg::net::write_vectored_op>);
static_assert(spawnable<mpg::net::receive_op>);
static_assert(spawnable<mpg::net::buffered_reader<tcp_stream>::line_op>);
static_assert(spawnable<mpg::net::buffered_writer<tcp_stream>::flush_op>);
static_assert(!spawnable<mpg::net::write_op&>);  // a named op: awaited where it is
static_assert(!spawnable<mpg::recv_op<int>>);    // no task form
template <class A>
concept runtime_spawnable = requires(mpg::runtime& rt, A&& a) {
  rt.spawn(static_cast<A&&>(a));
  rt.block_on(static_cast<A&&>(a));
};
static_assert(runtime_spawnable<mpg::net::write_op>);
static_assert(runtime_spawnable<mpg::net::receive_op>);
static_assert(!runtime_spawnable<mpg::net::read_op&>);
static_assert(!runtime_spawnable<mpg::recv_op<int>>);

TEST_CASE("spawn() takes a stream op or a buffered call and runs its task form") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    char buf[16];
    mpg::join_handle<read_result> reading = mpg::spawn(p.server.read(std::span<char>(buf)));
    mpg::join_handle<absl::Status> writing = mpg::spawn(p.client.write(std::string_view("one")));
    CHECK((co_await writing).ok());
    auto n = co_await reading;
    REQUIRE(n.ok());
    CHECK(std::string_view(buf, *n) == "one");

    const std::array<std::string_view, 2> two{"tw", "o"};
    writing = mpg::spawn(p.client.write_vectored(two), "write_vectored");
    CHECK((co_await writing).ok());
    auto received = mpg::spawn(p.server.receive());
    auto b = co_await received;
    REQUIRE(b.ok());
    CHECK(b->view() == "two");

    mpg::net::buffered_writer<tcp_stream> out(p.client);
    mpg::net::buffered_reader<tcp_stream> in(p.server);
    auto line = mpg::spawn(in.read_line());
    writing = mpg::spawn(out.write(std::string_view("three\n")));
    CHECK((co_await writing).ok());
    CHECK(out.buffered() == 6);
    writing = mpg::spawn(out.flush());
    CHECK((co_await writing).ok());
    CHECK(out.buffered() == 0);
    auto got = co_await line;
    REQUIRE(got.ok());
    CHECK(*got == "three");
  }());
}

TEST_CASE("runtime::spawn and runtime::block_on take a stream op from a plain thread") {
  mpg::runtime rt({.procs = 2});
  stream_pair p = rt.block_on(connect_pair());
  mpg::join_handle<absl::Status> writing = rt.spawn(p.client.write(std::string_view("four")));
  char buf[16];
  std::size_t got = 0;
  while (got < 4) {  // a stream may deliver the bytes in more than one read
    read_result n = rt.block_on(p.server.read(std::span<char>(buf + got, sizeof buf - got)));
    REQUIRE(n.ok());
    REQUIRE(*n > 0);
    got += *n;
  }
  CHECK(std::string_view(buf, got) == "four");
  CHECK(rt.block_on(std::move(writing)).ok());
  CHECK(rt.block_on(p.client.write(std::string_view("five"))).ok());
  auto b = rt.block_on(p.server.receive());
  REQUIRE(b.ok());
  CHECK(b->view() == "five");
}

TEST_CASE(
    "write_op: a write larger than the socket buffers arrives whole (short sends continued)") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    std::string big(8 << 20, '\0');
    std::uint64_t want = 0;
    for (std::size_t i = 0; i < big.size(); ++i) {
      big[i] = static_cast<char>((i * 7919) >> 5);
      want = want * 31 + static_cast<unsigned char>(big[i]);
    }
    auto reader = mpg::spawn(read_all(p.server));
    CHECK((co_await p.client.write(big)).ok());
    p.client.close();
    auto [sum, total] = co_await reader;
    CHECK(total == big.size());
    CHECK(sum == want);
  }());
}

TEST_CASE("write_op: an empty write, a closed stream, and a deadline set while a send is blocked") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    CHECK((co_await p.client.write(std::string_view())).ok());

    // Nobody reads the server side: the write blocks once the socket
    // buffers are full, until the deadline set meanwhile ends it.
    std::string big(64 << 20, 'x');
    auto writing = mpg::spawn(write_from(p.client, big));
    while (!p.client.write_pending()) co_await mpg::yield();
    p.client.set_write_deadline(std::chrono::steady_clock::now() + 5ms);
    auto late = co_await writing;
    CHECK(late.code() == absl::StatusCode::kDeadlineExceeded);

    p.client.close();
    absl::Status closed = co_await p.client.write(std::string_view("x"));
    CHECK(mpg::net::is_closed(closed));
  }());
}

TEST_CASE("write_op converts to a task, which can be spawned") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    auto writing = mpg::spawn(task<absl::Status>(p.client.write(std::string_view("spawned"))));
    CHECK((co_await writing).ok());
    char buf[16];
    auto n = co_await p.server.read(std::span<char>(buf));
    REQUIRE(n.ok());
    CHECK(std::string_view(buf, *n) == "spawned");
  }());
}

TEST_CASE("write_vectored_op: buffers in order, empty ones skipped, more than the op holds, none") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    // Within the op's own iovecs (empty buffers take none).
    const std::array<std::string_view, 5> few{"ab", "", "cde", "", "f"};
    static_assert(few.size() - 2 <= mpg::net::write_vectored_op::kInlineIov);
    CHECK((co_await p.client.write_vectored(few)).ok());
    CHECK(co_await read_exactly(p.server, 6) == "abcdef");
    // More than it holds: the loop's task form from the start.
    const std::array<std::string_view, 7> many{"0", "12", "", "345", "6", "78", "9"};
    static_assert(many.size() - 1 > mpg::net::write_vectored_op::kInlineIov);
    CHECK((co_await p.client.write_vectored(many)).ok());
    CHECK(co_await read_exactly(p.server, 10) == "0123456789");
    // Nothing to send: no I/O.
    const std::array<std::string_view, 2> none{"", ""};
    CHECK((co_await p.client.write_vectored(none)).ok());
    CHECK((co_await p.client.write_vectored(std::span<const std::string_view>())).ok());
    p.client.close();
    absl::Status closed = co_await p.client.write_vectored(few);
    CHECK(mpg::net::is_closed(closed));
  }());
}

TEST_CASE("write_vectored_op: a write larger than the socket buffers arrives whole, in order") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    // Three buffers of unequal sizes: the first sendmsg is short, and the
    // task form resumes inside one of them.
    std::array<std::string, 3> parts{std::string(3 << 20, '\0'), std::string((5 << 20) + 7, '\0'),
                                     std::string((2 << 20) + 3, '\0')};
    std::uint64_t want = 0;
    std::size_t bytes = 0;
    for (std::size_t k = 0; k < parts.size(); ++k) {
      for (std::size_t i = 0; i < parts[k].size(); ++i) {
        parts[k][i] = static_cast<char>(((i + k * 131) * 7919) >> 5);
        want = want * 31 + static_cast<unsigned char>(parts[k][i]);
      }
      bytes += parts[k].size();
    }
    // Empty buffers among them (one with a null data()): the task form
    // skips them, before and after the bytes the first sendmsg sent.
    const std::array<std::string_view, 5> views{std::string_view(), parts[0], "", parts[1],
                                                parts[2]};
    auto reader = mpg::spawn(read_all(p.server));
    CHECK((co_await p.client.write_vectored(views)).ok());
    p.client.close();
    auto [sum, total] = co_await reader;
    CHECK(total == bytes);
    CHECK(sum == want);
  }());
}

TEST_CASE("write_vectored_op: a deadline set while a sendmsg is blocked ends it") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    // Nobody reads the server side: the write blocks once the socket
    // buffers are full, until the deadline set meanwhile ends it.
    const std::string big(64 << 20, 'x');
    const std::array<std::string_view, 2> views{std::string_view(big).substr(0, 1 << 20),
                                                std::string_view(big).substr(1 << 20)};
    auto writing = mpg::spawn(write_all_from(p.client, views));
    // Until the sendmsg waits for room (the socket buffers hold far less
    // than 64 MiB); a write that ended first fails the test, not hangs it.
    while (!p.client.write_pending() && !writing.done()) co_await mpg::yield();
    REQUIRE(p.client.write_pending());
    p.client.set_write_deadline(std::chrono::steady_clock::now() + 5ms);
    absl::Status late = co_await writing;
    CHECK(late.code() == absl::StatusCode::kDeadlineExceeded);
  }());
}

TEST_CASE("write_vectored_op converts to a task; awaited again after its task form, it throws") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    const std::array<std::string_view, 2> two{"spa", "wned"};
    auto writing = mpg::spawn(task<absl::Status>(p.client.write_vectored(two)));
    CHECK((co_await writing).ok());
    CHECK(co_await read_exactly(p.server, 7) == "spawned");

    const std::array<std::string_view, 6> six{"a", "b", "c", "d", "e", "f"};
    auto op = p.client.write_vectored(six);  // more than kInlineIov: the task form
    absl::Status first = co_await op;
    CHECK(first.ok());
    bool refused = false;
    try {
      absl::Status again = co_await op;
      (void)again;
    } catch (const mpg::runtime_misuse_error&) {
      refused = true;
    }
    CHECK(refused);
    CHECK(co_await read_exactly(p.server, 6) == "abcdef");
  }());
}

TEST_CASE(
    "write_vectored_op: a sendmsg that fails with EINTR or EAGAIN, or sends short, is continued") {
  // Injected faults (runtime_options::io_faults): about half the issues
  // fail the ways the kernel may, so the op's own first sendmsg does too,
  // and its completion hands the write to the task form with nothing sent
  // (EINTR, EAGAIN) or with part of it sent (a short count).
  mpg::runtime rt({.procs = 2, .io_faults = "rate=0.5,kinds=eintr+eagain+short,seed=7"});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    std::string want;
    for (int i = 0; i < 40; ++i) {
      std::string a = "w";  // (g++ 12 -O2 warns -Wrestrict, falsely, on "w" + to_string(i))
      a += std::to_string(i);
      a += ':';
      const std::string b(static_cast<std::size_t>(i % 7), static_cast<char>('a' + i % 26));
      const std::array<std::string_view, 4> pieces{a, "", b, "|"};
      absl::Status st = co_await p.client.write_vectored(pieces);
      REQUIRE(st.ok());
      want += a + b + "|";
    }
    CHECK(co_await read_exactly(p.server, want.size()) == want);
  }());
  CHECK(rt.stats().io_faults_injected > 0);
}
