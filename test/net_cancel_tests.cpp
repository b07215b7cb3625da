// test/net_cancel_tests.cpp: ending I/O from another task. A deadline set
// while a read is blocked applies to that read (Go's SetReadDeadline); an
// operation bound to a context (read, write, accept, dial, io::submit) ends
// with the context's code when it is cancelled or misses its deadline,
// whether it was in flight or not yet started; an accept on a closed
// listener is always kCancelled; a cancel that finds no SQE is owed, not
// dropped. A hang (a wake-up lost) fails through the watchdog instead of the
// meson timeout.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mpg/io.hpp>
#include <mpg/mpg.hpp>
#include <mpg/net.hpp>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "flush_split.hpp"
#include "io/reactor.hpp"
#include "test_support.hpp"
#include "watchdog.hpp"
#include "stream_pair.hpp"

namespace {

using namespace std::chrono_literals;
using mpg::task;
using mpg::net::tcp_stream;
using clock_type = std::chrono::steady_clock;
using code = absl::StatusCode;

constexpr auto kHang = std::chrono::milliseconds(20'000);

// Yields until pred() holds or 10 s pass; false if it never held.
template <class Pred>
task<bool> until(Pred pred) {
  auto give_up = clock_type::now() + 10s;
  while (!pred()) {
    if (clock_type::now() > give_up) co_return false;
    co_await mpg::yield();
  }
  co_return true;
}

using mpg_test::connect_pair;
using mpg_test::stream_pair;

struct read_result {
  std::atomic<bool> done{false};
  absl::StatusOr<std::size_t> n = std::size_t{0};
};

// A task that reads s once (with ctx if given) and records the result.
task<void> read_once(tcp_stream& s, read_result* out, const mpg::context* ctx) {
  char buf[16];
  if (ctx != nullptr) {
    out->n = co_await s.read(std::span<char>(buf), *ctx);
  } else {
    out->n = co_await s.read(std::span<char>(buf));
  }
  out->done.store(true, std::memory_order_release);
}

// The stream still carries data both ways.
task<bool> still_usable(stream_pair& p) {
  if (!(co_await p.server.write("ok")).ok()) co_return false;
  char buf[4];
  auto n = co_await p.client.read(std::span<char>(buf));
  co_return n.ok() && *n == 2 && std::string_view(buf, 2) == "ok";
}

}  // namespace

TEST_CASE("a past read deadline set by another task wakes a blocked read with kDeadlineExceeded") {
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog dog(kHang, "a blocked read woken by a past deadline", &rt);
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    read_result r;
    auto reader = mpg::spawn(read_once(p.client, &r, nullptr));
    REQUIRE(co_await until([&] { return p.client.read_pending(); }));
    p.client.set_read_deadline(clock_type::now() - 1s);  // from this task, maybe the other P
    const bool woke = co_await until([&] { return r.done.load(std::memory_order_acquire); });
    CHECK(woke);
    if (!woke) p.client.cancel();  // let the reader go so the test fails instead of hanging
    co_await reader;
    CHECK(r.n.status().code() == code::kDeadlineExceeded);
    // The deadline stays: the next read fails at once; cleared, reads work.
    char buf[4];
    auto again = co_await p.client.read(std::span<char>(buf));
    CHECK(again.status().code() == code::kDeadlineExceeded);
    p.client.set_read_deadline(std::nullopt);
    CHECK(co_await still_usable(p));
  }());
}

TEST_CASE("a future read deadline set by another task ends a blocked read when it passes") {
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog dog(kHang, "a blocked read ended by a later deadline", &rt);
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    read_result r;
    auto reader = mpg::spawn(read_once(p.client, &r, nullptr));
    REQUIRE(co_await until([&] { return p.client.read_pending(); }));
    const auto t0 = clock_type::now();
    p.client.set_deadline(t0 + 50ms);
    co_await reader;
    CHECK(r.n.status().code() == code::kDeadlineExceeded);
    CHECK(clock_type::now() - t0 >= 50ms);
    p.client.set_deadline(std::nullopt);
    CHECK(co_await still_usable(p));
  }());
}

TEST_CASE("moving a read deadline later, or removing it, lets the blocked read go on") {
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog dog(kHang, "a read whose deadline moved later", &rt);
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    for (bool remove : {false, true}) {
      p.client.set_read_deadline(clock_type::now() + 30ms);
      read_result r;
      auto reader = mpg::spawn(read_once(p.client, &r, nullptr));
      REQUIRE(co_await until([&] { return p.client.read_pending(); }));
      if (remove) {
        p.client.set_read_deadline(std::nullopt);
      } else {
        p.client.set_read_deadline(clock_type::now() + 1h);
      }
      // Let the first deadline pass (the read was armed with it), then send.
      co_await mpg::sleep_for(60ms);
      CHECK_FALSE(r.done.load(std::memory_order_acquire));
      CHECK((co_await p.server.write("x")).ok());
      co_await reader;
      REQUIRE(r.n.ok());
      CHECK(*r.n == 1);
    }
  }());
}

namespace {

// One flush splits an op from its link timeout (reactor.hpp,
// g_flush_split_hook): the kernel takes the op's SQE but not the next.
using mpg_test::split_hook_scope;
using mpg_test::split_next;

task<void> read_until(tcp_stream& s, read_result* out, clock_type::time_point deadline) {
  char buf[16];
  out->n = co_await s.read(std::span<char>(buf), deadline);
  out->done.store(true, std::memory_order_release);
}

}  // namespace

// The kernel may take part of a batch (it stops where it cannot allocate a
// request): an op taken without its link timeout ran with no deadline, and
// the timeout, submitted alone later, failed with EINVAL (reactor.cpp, "An
// op split from its link timeout"). (A recv that polls first, issued alone,
// reads -EAGAIN, and the poll that follows has its timeout: the read here
// does not poll first.)
TEST_CASE("a read taken by the kernel without its link timeout still ends at its deadline") {
  mpg::runtime rt({.procs = 1});
  split_hook_scope hook;  // reset by its destructor even when a REQUIRE fails
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    // A read that fills its buffer leaves the next recv to go in without
    // polling first: an idle socket's recv then waits in the kernel. (One
    // byte: injected faults shorten no recv of fewer than two.)
    REQUIRE((co_await p.server.write("a")).ok());
    char one[1];
    auto first = co_await p.client.read(std::span<char>(one));
    REQUIRE(first.ok());
    REQUIRE(*first == 1);
    read_result r;
    split_next.store(true);
    const auto t0 = clock_type::now();
    auto reader = mpg::spawn(read_until(p.client, &r, t0 + 50ms));
    const bool ended = co_await until([&] { return r.done.load(std::memory_order_acquire); });
    CHECK_FALSE(split_next.load());  // the read's flush was split
    CHECK(ended);
    if (!ended) p.client.cancel();  // let the reader go so the test fails instead of hanging
    co_await reader;
    CHECK(r.n.status().code() == code::kDeadlineExceeded);
    CHECK(clock_type::now() - t0 >= 50ms);
    CHECK(co_await still_usable(p));
  }());
}

TEST_CASE("a write deadline set by another task wakes a blocked write") {
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog dog(kHang, "a blocked write woken by a past deadline", &rt);
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    int small = 4096;
    ::setsockopt(p.client.native_handle(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    ::setsockopt(p.server.native_handle(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    const std::string big(8 << 20, 'w');  // more than the buffers hold: the write blocks
    std::atomic<bool> done{false};
    absl::Status st;
    auto writer = mpg::spawn([](tcp_stream& s, const std::string& d, absl::Status* out,
                                std::atomic<bool>* fin) -> task<void> {
      *out = co_await s.write(d);
      fin->store(true, std::memory_order_release);
    }(p.client, big, &st, &done));
    REQUIRE(co_await until([&] { return p.client.write_pending(); }));
    p.client.set_write_deadline(clock_type::now() - 1s);
    const bool woke = co_await until([&] { return done.load(std::memory_order_acquire); });
    CHECK(woke);
    if (!woke) p.client.cancel();
    co_await writer;
    CHECK(st.code() == code::kDeadlineExceeded);
  }());
}

TEST_CASE("a cancelled context ends a blocked read, and a read started after it, with kCancelled") {
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog dog(kHang, "a blocked read woken by its context", &rt);
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    auto [ctx, cancel] = mpg::with_cancel(mpg::background());
    read_result r;
    auto reader = mpg::spawn(read_once(p.client, &r, &ctx));
    REQUIRE(co_await until([&] { return p.client.read_pending(); }));
    cancel();
    const bool woke = co_await until([&] { return r.done.load(std::memory_order_acquire); });
    CHECK(woke);
    if (!woke) p.client.cancel();
    co_await reader;
    CHECK(r.n.status().code() == code::kCancelled);
    // Sticky: a read bound to the ended context fails at once, even with
    // data waiting, and leaves the data in place.
    CHECK((co_await p.server.write("ok")).ok());
    char buf[4];
    auto late = co_await p.client.read(std::span<char>(buf), ctx);
    CHECK(late.status().code() == code::kCancelled);
    auto n = co_await p.client.read(std::span<char>(buf));
    REQUIRE(n.ok());
    CHECK(std::string_view(buf, *n) == "ok");
  }());
}

TEST_CASE("a context that misses its deadline ends a blocked read with kDeadlineExceeded") {
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog dog(kHang, "a read bound to an expiring context", &rt);
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    auto [parent, cancel_parent] = mpg::with_cancel(mpg::background());
    const auto t0 = clock_type::now();  // before the deadline is taken from the clock
    auto [ctx, cancel] = mpg::with_timeout(parent, 40ms);
    char buf[4];
    auto n = co_await p.client.read(std::span<char>(buf), ctx);
    CHECK(n.status().code() == code::kDeadlineExceeded);
    CHECK(clock_type::now() - t0 >= 40ms);
    // A cancel of an ancestor reaches an op bound to a descendant.
    auto [child, cancel_child] = mpg::with_cancel(parent);
    read_result r;
    auto reader = mpg::spawn(read_once(p.client, &r, &child));
    REQUIRE(co_await until([&] { return p.client.read_pending(); }));
    cancel_parent();
    co_await reader;
    CHECK(r.n.status().code() == code::kCancelled);
    CHECK(co_await still_usable(p));
    cancel();
    cancel_child();
  }());
}

TEST_CASE("a context ends a blocked write with its code") {
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog dog(kHang, "a blocked write bound to a context", &rt);
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    int small = 4096;
    ::setsockopt(p.client.native_handle(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    ::setsockopt(p.server.native_handle(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    const std::string big(8 << 20, 'w');  // never fits: only the context can end it
    {
      auto [ctx, cancel] = mpg::with_cancel(mpg::background());
      auto writer = mpg::spawn(p.client.write(big, ctx));
      REQUIRE(co_await until([&] { return p.client.write_pending(); }));
      cancel();
      absl::Status st = co_await writer;
      CHECK(st.code() == code::kCancelled);
    }
    {
      auto [ctx, cancel] = mpg::with_timeout(mpg::background(), 40ms);
      absl::Status st = co_await p.client.write(big, ctx);
      CHECK(st.code() == code::kDeadlineExceeded);
      cancel();
    }
  }());
}

TEST_CASE("a context ends accept, blocked or not yet started") {
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog dog(kHang, "an accept bound to a context", &rt);
  rt.block_on([]() -> task<void> {
    auto ln = mpg::net::listen("127.0.0.1:0");
    REQUIRE(ln.ok());
    {
      auto [ctx, cancel] = mpg::with_cancel(mpg::background());
      cancel();
      auto a = co_await ln->accept(ctx);
      CHECK(a.status().code() == code::kCancelled);
    }
    {
      auto [ctx, cancel] = mpg::with_cancel(mpg::background());
      auto acceptor = mpg::spawn(ln->accept(ctx));
      co_await mpg_test::yield_some(8);  // in flight or not: either way it must end
      cancel();
      auto a = co_await acceptor;
      CHECK(a.status().code() == code::kCancelled);
    }
    {
      auto [ctx, cancel] = mpg::with_timeout(mpg::background(), 30ms);
      auto a = co_await ln->accept(ctx);
      CHECK(a.status().code() == code::kDeadlineExceeded);
      cancel();
    }
    // The listener is still good.
    auto acceptor = mpg::spawn(ln->accept());
    auto c = co_await mpg::net::dial("127.0.0.1:" + std::to_string(ln->port()));
    CHECK(c.ok());
    auto a = co_await acceptor;
    CHECK(a.ok());
  }());
}

TEST_CASE(
    "a second read, write or accept while one waits fails with EALREADY; close ends the first") {
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog dog(kHang, "one op at a time", &rt);
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    read_result first;
    mpg::go(read_once(p.client, &first, nullptr));
    REQUIRE(co_await until([&] { return p.client.read_pending(); }));
    char buf[4];
    auto second = co_await p.client.read(std::span<char>(buf));
    CHECK(second.status().code() == code::kAlreadyExists);  // absl's code for EALREADY
    CHECK(mpg::errno_of(second.status()) == EALREADY);
    // The first read is still the one in flight, and close() reaches it.
    p.client.close();
    REQUIRE(co_await until([&] { return first.done.load(std::memory_order_acquire); }));
    CHECK(first.n.status().code() == code::kCancelled);

    auto ln = mpg::net::listen("127.0.0.1:0");
    REQUIRE(ln.ok());
    auto acceptor = mpg::spawn(ln->accept());
    REQUIRE(co_await until([&] { return ln->accept_pending(); }));
    auto again = co_await ln->accept();
    CHECK(mpg::errno_of(again.status()) == EALREADY);
    ln->close();
    auto a = co_await acceptor;
    CHECK(a.status().code() == code::kCancelled);
  }());
}

TEST_CASE("a cancel that finds no SQE is owed, not dropped: a context, a deadline, close") {
  // nocancel: every cancel of an op in flight finds no SQE, as when the
  // kernel keeps refusing submissions. Each of these asks once: dropped,
  // the read would wait for ever (here: until the peer's byte ends it).
  mpg::runtime rt({.procs = 1, .io_faults = "rate=1,kinds=nocancel"});
  mpg_test::watchdog dog(kHang, "a cancel that found no SQE", &rt);
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    for (int how = 0; how < 3; ++how) {
      CAPTURE(how);  // 0: a context, 1: a read deadline moved earlier, 2: close()
      auto [ctx, cancel] = mpg::with_cancel(mpg::background());
      read_result r;
      auto reader = mpg::spawn(read_once(p.client, &r, how == 0 ? &ctx : nullptr));
      REQUIRE(co_await until([&] { return p.client.read_pending(); }));
      if (how == 0) cancel();
      if (how == 1) p.client.set_read_deadline(clock_type::now() - 1s);
      if (how == 2) p.client.close();
      const bool woke = co_await until([&] { return r.done.load(std::memory_order_acquire); });
      CHECK(woke);
      if (!woke) {
        absl::Status w = co_await p.server.write("x");  // ends the read with data
        CHECK(w.ok());
      }
      co_await reader;
      const code want[] = {code::kCancelled, code::kDeadlineExceeded, code::kCancelled};
      CHECK(r.n.status().code() == want[how]);
      p.client.set_read_deadline(std::nullopt);
    }
  }());
  CHECK(rt.stats().io_faults_no_cancel >= 3);
}

TEST_CASE("two receive()s at once: one fails with EALREADY, close ends the other") {
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog dog(kHang, "one receive at a time", &rt);
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    mpg::chan<absl::Status> ended(2);
    auto receiver = [](tcp_stream& s, mpg::chan<absl::Status> out) -> task<void> {
      auto b = co_await s.receive();
      co_await out.send(b.status());
    };
    mpg::go(receiver(p.client, ended));
    mpg::go(receiver(p.client, ended));
    // Whichever came second is refused at once; the other waits for data.
    auto refused = co_await ended.recv();
    REQUIRE(refused.has_value());
    CHECK(mpg::errno_of(*refused) == EALREADY);
    p.client.close();
    auto other = co_await ended.recv();
    REQUIRE(other.has_value());
    CHECK(other->code() == code::kCancelled);
  }());
}

TEST_CASE("a receive() while a plain read() waits fails with EALREADY; the read gets the data") {
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog dog(kHang, "a receive beside a read", &rt);
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    read_result first;
    auto reader = mpg::spawn(read_once(p.client, &first, nullptr));
    REQUIRE(co_await until([&] { return p.client.read_pending(); }));
    // Bounded: let in, the receive would wait beside the read.
    auto [ctx, cancel] = mpg::with_timeout(mpg::background(), 2s);
    absl::StatusOr<mpg::net::recv_buffer> second = co_await p.client.receive(ctx);
    CHECK(mpg::errno_of(second.status()) == EALREADY);
    // The task form too (a deadline of its own).
    second = co_await p.client.receive(clock_type::now() + 2s);
    CHECK(mpg::errno_of(second.status()) == EALREADY);
    // And the frame-less receive(), in a task of its own (let in, it would
    // wait for data).
    mpg::chan<absl::Status> ended(1);
    auto receiver = [](tcp_stream& s, mpg::chan<absl::Status> out) -> task<void> {
      auto b = co_await s.receive();
      co_await out.send(b.status());
    };
    mpg::go(receiver(p.client, ended));
    std::optional<absl::Status> third;
    const bool ended_alone = co_await until([&] {
      third = ended.try_recv();
      return third.has_value();
    });
    CHECK(ended_alone);
    if (ended_alone) CHECK(mpg::errno_of(*third) == EALREADY);
    absl::Status w = co_await p.server.write("hello");
    CHECK(w.ok());
    co_await reader;
    if (!ended_alone) p.client.close();  // the receiver ends
    REQUIRE(first.n.ok());
    CHECK(*first.n == 5);
  }());
}

TEST_CASE("a context ends a dial, blocked or not yet started") {
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog dog(kHang, "a dial bound to a context", &rt);
  rt.block_on([]() -> task<void> {
    // A listener that never accepts, with the smallest queue: once the queue
    // is full the kernel drops further SYNs, and a connect waits.
    auto ln = mpg::net::listen("127.0.0.1:0", {.backlog = 1});
    REQUIRE(ln.ok());
    const std::string addr = "127.0.0.1:" + std::to_string(ln->port());
    {
      auto [ctx, cancel] = mpg::with_cancel(mpg::background());
      cancel();
      auto c = co_await mpg::net::dial(addr, ctx);
      CHECK(c.status().code() == code::kCancelled);
    }
    std::vector<tcp_stream> queued;
    bool blocked = false;
    for (int i = 0; i < 16 && !blocked; ++i) {
      auto [ctx, cancel] = mpg::with_timeout(mpg::background(), 200ms);
      auto c = co_await mpg::net::dial(addr, ctx);
      if (c.ok()) {
        queued.push_back(std::move(*c));
      } else {
        CHECK(c.status().code() == code::kDeadlineExceeded);
        blocked = true;
      }
      cancel();
    }
    REQUIRE(blocked);
    auto [ctx, cancel] = mpg::with_cancel(mpg::background());
    auto dialer = mpg::spawn(mpg::net::dial(addr, ctx));
    co_await mpg_test::yield_some(8);
    cancel();
    auto c = co_await dialer;
    CHECK(c.status().code() == code::kCancelled);
  }());
}

TEST_CASE("io::submit bound to a context: cancelled in flight, before start, and by its deadline") {
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog dog(kHang, "io::submit bound to a context", &rt);
  rt.block_on([]() -> task<void> {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    char in[8];
    {
      auto [ctx, cancel] = mpg::with_cancel(mpg::background());
      auto reader = mpg::spawn([](int fd, char* buf, mpg::context c) -> task<int> {
        co_return co_await mpg::io::submit(
            [&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, fd, buf, 8, 0); }, c);
      }(fds[0], in, ctx));
      co_await mpg_test::yield_some(8);  // in flight or not: the pipe stays empty
      cancel();
      const int r = co_await reader;
      CHECK(r == -ECANCELED);
    }
    {
      // Cancelled before: the write never runs.
      auto [ctx, cancel] = mpg::with_cancel(mpg::background());
      cancel();
      char out[] = "data";
      int w = co_await mpg::io::submit(
          [&](io_uring_sqe* sqe) { io_uring_prep_write(sqe, fds[1], out, 4, 0); }, ctx);
      CHECK(w == -ECANCELED);
      int avail = 0;
      REQUIRE(::ioctl(fds[0], FIONREAD, &avail) == 0);
      CHECK(avail == 0);
    }
    {
      auto [ctx, cancel] = mpg::with_timeout(mpg::background(), 30ms);
      int r = co_await mpg::io::submit(
          [&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, fds[0], in, 8, 0); }, ctx);
      CHECK(r == -ETIME);
      cancel();
    }
    {
      // A live context: the op runs as usual.
      auto [ctx, cancel] = mpg::with_cancel(mpg::background());
      char out[] = "hi";
      int w = co_await mpg::io::submit(
          [&](io_uring_sqe* sqe) { io_uring_prep_write(sqe, fds[1], out, 2, 0); }, ctx);
      CHECK(w == 2);
      int r = co_await mpg::io::submit(
          [&](io_uring_sqe* sqe) { io_uring_prep_read(sqe, fds[0], in, 8, 0); }, ctx);
      CHECK(r == 2);
      cancel();
    }
    ::close(fds[0]);
    ::close(fds[1]);
  }());
}

TEST_CASE("an accept after close is kCancelled, 1000 times") {
  mpg::runtime rt({.procs = 2});
  int cancelled = 0, other = 0;
  rt.block_on([](int* ok, int* bad) -> task<void> {
    for (int i = 0; i < 1000; ++i) {
      auto ln = mpg::net::listen("127.0.0.1:0");
      REQUIRE(ln.ok());
      ln->close();
      auto a = co_await ln->accept();
      ++(a.status().code() == code::kCancelled ? *ok : *bad);
      if (i % 64 == 0) co_await mpg::yield();  // no I/O suspends: let sysmon see progress
    }
  }(&cancelled, &other));
  CHECK(cancelled == 1000);
  CHECK(other == 0);
}

TEST_CASE(
    "an accept racing close is kCancelled whichever comes first, 1000 times (300 sanitized)") {
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog dog(kHang, "accepts racing close", &rt);
  const int rounds = mpg_test::kSanitized ? 300 : 1000;
  int cancelled = 0, other = 0;
  rt.block_on([](int rounds, int* ok, int* bad) -> task<void> {
    for (int i = 0; i < rounds; ++i) {
      auto ln = mpg::net::listen("127.0.0.1:0");
      REQUIRE(ln.ok());
      auto acceptor = mpg::spawn(ln->accept());  // may run on the other P
      co_await mpg_test::yield_some(i % 4);
      ln->close();
      auto a = co_await acceptor;
      ++(a.status().code() == code::kCancelled ? *ok : *bad);
    }
  }(rounds, &cancelled, &other));
  CHECK(cancelled == rounds);
  CHECK(other == 0);
}

TEST_CASE(
    "contexts cancelled from a plain thread while reads complete: no read hangs or outlives its "
    "frame") {
  // Each round a reader binds a fresh context; a thread outside the runtime
  // cancels it while the peer's byte may be arriving. The reader ends with
  // the byte or kCancelled; its frame (and the binding in it) is freed at
  // once, while the canceller may still be running the binding's watcher:
  // ASan and TSan check that unbinding waits for it.
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog dog(kHang, "reads racing context cancels", &rt);
  const int rounds = mpg_test::kSanitized ? 300 : 2000;
  int got = 0, cancelled = 0, bad = 0;
  rt.block_on([](int n, int* got, int* cancelled, int* bad) -> task<void> {
    auto p = co_await connect_pair();
    for (int i = 0; i < n; ++i) {
      auto [ctx, cancel] = mpg::with_cancel(mpg::background());
      std::atomic<bool> go{false};
      std::thread canceller([&go, c = cancel] {
        while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
        c();
      });
      auto reader = mpg::spawn([](tcp_stream& s,
                                  mpg::context c) -> task<absl::StatusOr<std::size_t>> {
        char buf[4];
        co_return co_await s.read(std::span<char>(buf, 1), c);
      }(p.client, ctx));
      go.store(true, std::memory_order_release);
      co_await mpg_test::yield_some(i % 3);
      CHECK((co_await p.server.write("b")).ok());
      auto r = co_await reader;
      canceller.join();
      if (r.ok() && *r == 1) {
        ++*got;
      } else if (r.status().code() == code::kCancelled) {
        ++*cancelled;
        char buf[1];
        auto drain = co_await p.client.read(std::span<char>(buf));  // the byte is still there
        if (!drain.ok() || *drain != 1) ++*bad;
      } else {
        ++*bad;
      }
    }
  }(rounds, &got, &cancelled, &bad));
  CHECK(bad == 0);
  CHECK(got + cancelled == rounds);
  MESSAGE("reads that got the byte: " << got << ", cancelled: " << cancelled);
}

namespace {

// Writes data to s once and records the result.
task<void> write_once(tcp_stream& s, const std::string& data, absl::Status* out,
                      std::atomic<bool>* done) {
  *out = co_await s.write(data);
  done->store(true, std::memory_order_release);
}

// Reads s until `want` bytes came or the stream ends.
task<void> read_up_to(tcp_stream& s, std::size_t want, std::string* got) {
  std::vector<char> buf(64 << 10);
  while (got->size() < want) {
    auto n = co_await s.read(std::span<char>(buf));
    if (!n.ok() || *n == 0) co_return;
    got->append(buf.data(), *n);
  }
}

}  // namespace

// One P, so that the tasks take turns: the intruder runs while the first
// operation's G waits in the run queue between two of its issues (its
// completion readied it at the tail), when no op of the stream is in flight.
// The slot stays the first operation's (io_slot::holder): the intruder is
// refused, and the first operation goes on whole.
TEST_CASE("a write that starts between two issues of another (short sends) fails with EALREADY") {
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog dog(kHang, "a write between two issues of another", &rt);
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    const std::string big(16 << 20, 'a');  // past the socket buffers: short sends
    absl::Status first;
    std::atomic<bool> first_done{false};
    auto writer = mpg::spawn(write_once(p.client, big, &first, &first_done));
    REQUIRE(co_await until([&] { return p.client.write_pending(); }));
    std::string got;
    auto reader = mpg::spawn(read_up_to(p.server, big.size(), &got));
    bool tried = false;
    absl::Status second;
    while (!first_done.load(std::memory_order_acquire)) {
      if (!p.client.write_pending()) {  // between two issues of the first write
        second = co_await p.client.write("XXXX");
        tried = true;
        break;
      }
      co_await mpg::yield();
    }
    REQUIRE(tried);  // the first write was seen between two issues
    CHECK(mpg::errno_of(second) == EALREADY);
    co_await writer;
    CHECK(first.ok());
    p.client.close();  // the reader ends even if bytes went missing
    co_await reader;
    CHECK(got.size() == big.size());
    CHECK(got.find('X') == std::string::npos);
  }());
}

TEST_CASE("a read that starts between two issues of another (a kick) fails with EALREADY") {
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog dog(kHang, "a read between two issues of another", &rt);
  rt.block_on([]() -> task<void> {
    auto p = co_await connect_pair();
    read_result first;
    auto reader = mpg::spawn(read_once(p.client, &first, nullptr));
    REQUIRE(co_await until([&] { return p.client.read_pending(); }));
    bool tried = false;
    absl::StatusOr<std::size_t> second = std::size_t{0};
    char buf[16];
    const auto far = clock_type::now() + 1h;
    for (int i = 0; i < 100'000 && !tried; ++i) {
      if (p.client.read_pending()) {
        // An earlier deadline kicks the read in flight: its issue ends and
        // the read is issued again, armed with the new deadline.
        p.client.set_read_deadline(far - std::chrono::milliseconds(i));
      } else {
        // Bounded: where the intruder gets in, nothing else would end it.
        second = co_await p.client.read(std::span<char>(buf), clock_type::now() + 2s);
        tried = true;
      }
      co_await mpg::yield();
    }
    REQUIRE(tried);  // the first read was seen between two issues
    CHECK(mpg::errno_of(second.status()) == EALREADY);
    absl::Status w = co_await p.server.write("hello");
    CHECK(w.ok());
    const bool done = co_await until([&] { return first.done.load(std::memory_order_acquire); });
    CHECK(done);
    if (!done) p.client.cancel();
    co_await reader;
    REQUIRE(first.n.ok());
    CHECK(*first.n == 5);
  }());
}

// cancel() on a stream that used receive(): the stream keeps its multishot
// armed between receives, and cancel() with no read waiting must not end a
// receive (or a read(buf) served from it) started after it returned
// (net.hpp: later operations are not affected).
namespace {

task<bool> write_text(tcp_stream* s, std::string_view what) {
  const absl::Status st = co_await s->write(what);
  co_return st.ok();
}

task<std::string> receive_after_idle_cancel(bool by_read) {
  auto p = co_await connect_pair();
  if (!co_await write_text(&p.server, "a")) co_return "write a";
  auto a = co_await p.client.receive();
  if (!a.ok() || a->view() != "a") co_return "receive a";
  a->reset();
  p.client.cancel();  // no read in flight
  auto writer = mpg::spawn(write_text(&p.server, "b"));
  std::string got;
  if (by_read) {
    char buf[8];
    auto n = co_await p.client.read(std::span<char>(buf));
    got = n.ok() ? std::string(buf, *n) : n.status().ToString();
  } else {
    auto b = co_await p.client.receive();
    got = b.ok() ? std::string(b->view()) : b.status().ToString();
  }
  if (!co_await writer) co_return "write b";
  co_return got;
}

// Yields until the stream holds a received buffer (bounded: 10 s).
task<bool> until_held(tcp_stream* s) {
  const auto give_up = clock_type::now() + 10s;
  while (s->held_buffers() == 0) {
    if (clock_type::now() > give_up) co_return false;
    co_await mpg::yield();
  }
  co_return true;
}

// An ended context ends a read whether or not the stream holds bytes (a
// context is sticky, net.hpp): read(buf, ctx) too, on a stream that used
// receive(); the bytes stay for the next read.
task<std::string> read_held_with_ended_context() {
  auto p = co_await connect_pair();
  if (!co_await write_text(&p.server, "a")) co_return "write a";
  auto a = co_await p.client.receive();  // the multishot is armed from here
  if (!a.ok()) co_return "receive a";
  a->reset();
  if (!co_await write_text(&p.server, "held")) co_return "write held";
  if (!co_await until_held(&p.client)) co_return "nothing held after 10 s";
  auto [ctx, cancel] = mpg::with_cancel(mpg::background());
  cancel();
  auto r = co_await p.client.receive(ctx);
  if (r.status().code() != code::kCancelled) co_return "receive(ctx): " + r.status().ToString();
  char buf[16];
  auto n = co_await p.client.read(std::span<char>(buf), ctx);
  if (n.ok()) co_return "read(buf, ctx) took \"" + std::string(buf, *n) + "\"";
  if (n.status().code() != code::kCancelled) co_return "read(buf, ctx): " + n.status().ToString();
  auto m = co_await p.client.read(std::span<char>(buf), clock_type::now() + 10s);
  if (!m.ok()) co_return "read: " + m.status().ToString();
  co_return std::string(buf, *m);
}

}  // namespace

TEST_CASE("receive() and read() started after an idle cancel() are not cancelled by it") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(receive_after_idle_cancel(false)) == "b");
  CHECK(rt.block_on(receive_after_idle_cancel(true)) == "b");
}

TEST_CASE("read(buf, ctx) with an ended context is kCancelled though bytes are held") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(read_held_with_ended_context()) == "held");
}
