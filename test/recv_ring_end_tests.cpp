// test/recv_ring_end_tests.cpp: how a tcp_stream::receive() ends, and what
// the multishot receive (lib/io/recv_queue.hpp) and the P's ring of provided
// buffers (lib/io/buffer_ring.hpp) keep when it does: deadlines, a context or
// cancel() on a waiting receive, read(buf) from held buffers, a runtime shut
// down under a waiting receive or with buffers held, an arm refused for want
// of an SQE, and close() of an idle multishot. The receive's order,
// integrity and backpressure are recv_ring_tests.cpp.
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

}  // namespace

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

TEST_CASE(
    "read(buf) after receive(): copies from the held buffers, in order, partial buffers kept") {
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

TEST_CASE(
    "receive: a context that outlives the runtime is cancelled after a receive waiting on it was "
    "killed") {
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

TEST_CASE(
    "receive: buffers held past the runtime's end are given back after it; the ring goes with the "
    "last") {
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
