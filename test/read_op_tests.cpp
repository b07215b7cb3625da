// test/read_op_tests.cpp: tcp_stream::read(buf), the read_op awaiter
// (mpg/net.hpp): its direct path (one recv issued from the awaiting task's
// frame) and its hand-over to the task form of the loop when the recv must
// be issued again (a kick from a deadline set while it is in flight).
#include <doctest/doctest.h>

#include <mpg/io_error.hpp>
#include <mpg/mpg.hpp>
#include <mpg/net.hpp>

#include <chrono>
#include <string>
#include <string_view>

namespace {

using namespace std::chrono_literals;
using mpg::task;
using mpg::net::tcp_stream;
using read_result = absl::StatusOr<std::size_t>;

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

task<read_result> read_into(tcp_stream& s, std::span<char> buf) { co_return co_await s.read(buf); }

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
