// test/net_awaiter_tests.cpp: tcp_stream::read(buf) and write(data), the
// read_op and write_op awaiters (mpg/net.hpp): their direct path (one op
// issued from the awaiting task's frame) and their hand-over to the task
// form of the loop when the op must be issued again (a kick from a deadline
// set while it is in flight; a short send).
#include <doctest/doctest.h>

#include <mpg/io_error.hpp>
#include <mpg/mpg.hpp>
#include <mpg/net.hpp>

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
task<absl::Status> write_from(tcp_stream& s, std::string_view data) { co_return co_await s.write(data); }

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

TEST_CASE("read_op: a deadline set while the recv is in flight ends it (issued again, then expired)") {
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

TEST_CASE("write_op: a write larger than the socket buffers arrives whole (short sends continued)") {
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
