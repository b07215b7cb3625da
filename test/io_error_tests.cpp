// test/io_error_tests.cpp: mpg::errno_of and mpg::net::is_closed
// (mpg/io_error.hpp): EPIPE, ECONNRESET and ECONNREFUSED keep their errno and
// are never "closed"; use after close() is "closed" and has no errno;
// deadlines, cancellation, address and file errors carry theirs.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>

#include <mpg/io_error.hpp>
#include <mpg/mpg.hpp>
#include <mpg/net.hpp>

#include <cerrno>
#include <chrono>
#include <string>
#include "stream_pair.hpp"

namespace {

using namespace std::chrono_literals;
using mpg::task;
using mpg::net::tcp_stream;

using mpg_test::connect_pair;
using mpg_test::stream_pair;

}  // namespace

TEST_CASE("errno_of is 0 for OK and for statuses without an errno") {
  CHECK(mpg::errno_of(absl::OkStatus()) == 0);
  CHECK(mpg::errno_of(absl::InvalidArgumentError("x")) == 0);
  CHECK(!mpg::net::is_closed(absl::OkStatus()));
  CHECK(!mpg::net::is_closed(absl::FailedPreconditionError("use of closed network connection")));
  auto bad = mpg::net::listen("no-port");
  CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(mpg::errno_of(bad.status()) == 0);
}

TEST_CASE("EPIPE is kept and is not 'closed'; use after close is 'closed' without errno") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    REQUIRE(p.client.shutdown(mpg::net::shutdown_how::write).ok());
    absl::Status w = co_await p.client.write(std::string_view("after shutdown"));
    CHECK(w.code() == absl::StatusCode::kFailedPrecondition);
    CHECK(mpg::errno_of(w) == EPIPE);
    CHECK(!mpg::net::is_closed(w));

    p.client.close();
    absl::Status w2 = co_await p.client.write(std::string_view("after close"));
    CHECK(w2.code() == absl::StatusCode::kFailedPrecondition);
    CHECK(mpg::net::is_closed(w2));
    CHECK(mpg::errno_of(w2) == 0);
    char buf[8];
    auto r = co_await p.client.read(std::span<char>(buf));
    CHECK(mpg::net::is_closed(r.status()));
    CHECK(mpg::net::is_closed(p.client.shutdown()));
    CHECK(mpg::net::is_closed(p.client.local_address().status()));
  }());
}

TEST_CASE("ECONNRESET is kept and is not 'closed'") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    // SO_LINGER 0: close() sends a reset instead of a FIN.
    linger lg{.l_onoff = 1, .l_linger = 0};
    REQUIRE(::setsockopt(p.server.native_handle(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
    p.server.close();
    char buf[8];
    auto r = co_await p.client.read(std::span<char>(buf));
    CHECK(r.status().code() == absl::StatusCode::kUnavailable);
    CHECK(mpg::errno_of(r.status()) == ECONNRESET);
    CHECK(!mpg::net::is_closed(r.status()));
  }());
}

TEST_CASE("dial, listen and accept errors carry their errno") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto ln = mpg::net::listen("127.0.0.1:0");
    REQUIRE(ln.ok());
    const std::uint16_t port = ln->port();
    auto taken = mpg::net::listen("127.0.0.1:" + std::to_string(port));
    CHECK(mpg::errno_of(taken.status()) == EADDRINUSE);
    ln->close();
    auto a = co_await ln->accept();
    CHECK(mpg::net::is_closed(a.status()));
    CHECK(mpg::errno_of(a.status()) == 0);
    const std::string target = "127.0.0.1:" + std::to_string(port);
    auto refused = co_await mpg::net::dial(target);
    CHECK(mpg::errno_of(refused.status()) == ECONNREFUSED);
    CHECK(!mpg::net::is_closed(refused.status()));
  }());
}

TEST_CASE("a missed deadline carries ETIMEDOUT, a cancel ECANCELED") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    char buf[8];
    auto late =
        co_await p.client.read(std::span<char>(buf), std::chrono::steady_clock::now() + 1ms);
    CHECK(late.status().code() == absl::StatusCode::kDeadlineExceeded);
    CHECK(mpg::errno_of(late.status()) == ETIMEDOUT);

    auto reading =
        mpg::spawn(task<absl::StatusOr<std::size_t>>(p.client.read(std::span<char>(buf))));
    while (!p.client.read_pending()) co_await mpg::yield();
    p.client.cancel();
    auto cancelled = co_await reading;
    CHECK(cancelled.status().code() == absl::StatusCode::kCancelled);
    CHECK(mpg::errno_of(cancelled.status()) == ECANCELED);
    CHECK(!mpg::net::is_closed(cancelled.status()));
  }());
}

TEST_CASE("file errors carry their errno; a closed file is 'closed'") {
  mpg::runtime rt({.procs = 1});
  rt.block_on([]() -> task<void> {
    auto missing = co_await mpg::fs::open("/nonexistent-mpg-dir/file", O_RDONLY);
    CHECK(missing.status().code() == absl::StatusCode::kNotFound);
    CHECK(mpg::errno_of(missing.status()) == ENOENT);
    auto f = co_await mpg::fs::open("/proc/self/status", O_RDONLY);
    REQUIRE(f.ok());
    CHECK(f->close().ok());
    char buf[8];
    auto r = co_await f->read_at(std::span<char>(buf), 0);
    CHECK(mpg::net::is_closed(r.status()));
    CHECK(mpg::errno_of(r.status()) == 0);
  }());
}
