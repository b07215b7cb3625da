// test/udp_tests.cpp: mpg::net UDP sockets on loopback: send_to/recv_from
// over IPv4 and IPv6 with the sender's address, truncation, connected
// sockets (dial_udp, ECONNREFUSED from a closed port), a dual-stack socket
// sending to IPv4, close and cancel of a blocked receive, deadlines, bad
// addresses (strict ports, NUL bytes, IPv6 zones), adopted negative fds,
// echo round trips from many tasks at once, and a second receive refused
// while one waits.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mpg/io_error.hpp>
#include <mpg/mpg.hpp>
#include <mpg/net.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "io/fd_close.hpp"
#include "watchdog.hpp"

namespace {

using namespace std::chrono_literals;
using mpg::task;
using mpg::net::udp_socket;

std::string port_str(const udp_socket& u) { return std::to_string(u.port()); }

// An IPv6 loopback socket, or nullopt when this host has no IPv6.
std::optional<udp_socket> ipv6_socket(const char* address) {
  auto u = mpg::net::listen_udp(address);
  if (!u.ok()) return std::nullopt;
  return std::move(*u);
}

// Echoes `n` datagrams back to their senders.
task<void> echo_server(udp_socket& s, int n) {
  std::vector<char> buf(2048);
  for (int i = 0; i < n; ++i) {
    auto g = co_await s.recv_from(std::span<char>(buf));
    REQUIRE(g.ok());
    const std::string to = g->from;
    auto st = co_await s.send_to(std::string_view(buf.data(), g->size), to);
    REQUIRE(st.ok());
  }
}

}  // namespace

TEST_CASE("send_to and recv_from over IPv4 carry the data and the sender") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto a = mpg::net::listen_udp("127.0.0.1:0");
    auto b = mpg::net::listen_udp("127.0.0.1:0");
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    CHECK(a->port() != 0);
    CHECK(a->local_address().value_or("") == "127.0.0.1:" + port_str(*a));
    const std::string to_b = "127.0.0.1:" + port_str(*b);
    REQUIRE((co_await a->send_to(std::string_view("ping"), to_b)).ok());
    char buf[64];
    auto g = co_await b->recv_from(std::span<char>(buf));
    REQUIRE(g.ok());
    CHECK(std::string(buf, g->size) == "ping");
    CHECK(g->from == "127.0.0.1:" + port_str(*a));
    CHECK(!g->truncated);
    const std::string back = g->from;
    REQUIRE((co_await b->send_to(std::string_view("pong"), back)).ok());
    auto r = co_await a->recv_from(std::span<char>(buf));
    REQUIRE(r.ok());
    CHECK(std::string(buf, r->size) == "pong");
    CHECK(r->from == to_b);
  }());
}

TEST_CASE("send_to and recv_from over IPv6") {
  auto probe = ipv6_socket("[::1]:0");
  if (!probe) {
    MESSAGE("no IPv6 loopback here; skipped");
    return;
  }
  probe->close();
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto a = mpg::net::listen_udp("[::1]:0");
    auto b = mpg::net::listen_udp("[::1]:0");
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    const std::string to_b = "[::1]:" + port_str(*b);
    REQUIRE((co_await a->send_to(std::string_view("six"), to_b)).ok());
    char buf[64];
    auto g = co_await b->recv_from(std::span<char>(buf));
    REQUIRE(g.ok());
    CHECK(std::string(buf, g->size) == "six");
    CHECK(g->from == "[::1]:" + port_str(*a));
    // An IPv4-only socket cannot send there.
    auto v4 = mpg::net::listen_udp("127.0.0.1:0");
    REQUIRE(v4.ok());
    auto st = co_await v4->send_to(std::string_view("x"), to_b);
    CHECK(mpg::errno_of(st) == EAFNOSUPPORT);
  }());
}

TEST_CASE("a dual-stack socket sends to an IPv4 address and receives from it") {
  auto probe = ipv6_socket(":0");
  if (!probe) {
    MESSAGE("no IPv6 here; skipped");
    return;
  }
  probe->close();
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto dual = mpg::net::listen_udp(":0");
    auto v4 = mpg::net::listen_udp("127.0.0.1:0");
    REQUIRE(dual.ok());
    REQUIRE(v4.ok());
    const std::string to_v4 = "127.0.0.1:" + port_str(*v4);
    REQUIRE((co_await dual->send_to(std::string_view("mapped"), to_v4)).ok());
    char buf[64];
    auto g = co_await v4->recv_from(std::span<char>(buf));
    REQUIRE(g.ok());
    CHECK(std::string(buf, g->size) == "mapped");
    CHECK(g->from == "127.0.0.1:" + port_str(*dual));
    const std::string back = g->from;
    REQUIRE((co_await v4->send_to(std::string_view("reply"), back)).ok());
    auto r = co_await dual->recv_from(std::span<char>(buf));
    REQUIRE(r.ok());
    CHECK(std::string(buf, r->size) == "reply");
    CHECK(r->from == "[::ffff:127.0.0.1]:" + port_str(*v4));
  }());
}

TEST_CASE("a datagram longer than the buffer is reported truncated; the next one is whole") {
  mpg::runtime rt({.procs = 1});
  rt.block_on([]() -> task<void> {
    auto a = mpg::net::listen_udp("127.0.0.1:0");
    auto b = mpg::net::listen_udp("127.0.0.1:0");
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    const std::string to_b = "127.0.0.1:" + port_str(*b);
    const std::string big(100, 'z');
    REQUIRE((co_await a->send_to(big, to_b)).ok());
    REQUIRE((co_await a->send_to(std::string_view("small"), to_b)).ok());
    char buf[10];
    auto g = co_await b->recv_from(std::span<char>(buf));
    REQUIRE(g.ok());
    CHECK(g->size == 10);
    CHECK(g->truncated);
    CHECK(std::string(buf, g->size) == std::string(10, 'z'));
    auto h = co_await b->recv_from(std::span<char>(buf));
    REQUIRE(h.ok());
    CHECK(h->size == 5);
    CHECK(!h->truncated);
    CHECK(std::string(buf, h->size) == "small");
  }());
}

TEST_CASE("dial_udp: a connected socket's send and recv, and its addresses") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto server = mpg::net::listen_udp("127.0.0.1:0");
    REQUIRE(server.ok());
    const std::string target = "127.0.0.1:" + port_str(*server);
    auto d = co_await mpg::net::dial_udp(target);
    REQUIRE(d.ok());
    CHECK(d->remote_address().value_or("") == target);
    REQUIRE((co_await d->send(std::string_view("hello"))).ok());
    char buf[64];
    auto g = co_await server->recv_from(std::span<char>(buf));
    REQUIRE(g.ok());
    CHECK(g->from == d->local_address().value_or("?"));
    const std::string back = g->from;
    REQUIRE((co_await server->send_to(std::string_view("world!"), back)).ok());
    auto n = co_await d->recv(std::span<char>(buf));
    REQUIRE(n.ok());
    CHECK(std::string(buf, *n) == "world!");
  }());
}

TEST_CASE("a connected socket reports ECONNREFUSED from a closed port") {
  mpg::runtime rt({.procs = 1});
  rt.block_on([]() -> task<void> {
    auto gone = mpg::net::listen_udp("127.0.0.1:0");
    REQUIRE(gone.ok());
    const std::string target = "127.0.0.1:" + port_str(*gone);
    gone->close();
    auto d = co_await mpg::net::dial_udp(target);
    REQUIRE(d.ok());
    REQUIRE((co_await d->send(std::string_view("anyone?"))).ok());
    d->set_read_deadline(std::chrono::steady_clock::now() + 20s);  // bound only
    char buf[16];
    auto n = co_await d->recv(std::span<char>(buf));
    CHECK(mpg::errno_of(n.status()) == ECONNREFUSED);
    CHECK(!mpg::net::is_closed(n.status()));
  }());
}

TEST_CASE("close from another task ends a blocked recv_from; later calls are 'closed'") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto u = mpg::net::listen_udp("127.0.0.1:0");
    REQUIRE(u.ok());
    char buf[16];
    auto waiting = mpg::spawn(u->recv_from(std::span<char>(buf)));
    while (!u->recv_pending()) co_await mpg::yield();
    u->cancel();
    auto cancelled = co_await waiting;
    CHECK(cancelled.status().code() == absl::StatusCode::kCancelled);
    CHECK(u->is_open());

    auto waiting2 = mpg::spawn(u->recv_from(std::span<char>(buf)));
    while (!u->recv_pending()) co_await mpg::yield();
    u->close();
    auto closed = co_await waiting2;
    CHECK(closed.status().code() == absl::StatusCode::kCancelled);
    auto after = co_await u->recv_from(std::span<char>(buf));
    CHECK(mpg::net::is_closed(after.status()));
    auto send_after = co_await u->send_to(std::string_view("x"), "127.0.0.1:9");
    CHECK(mpg::net::is_closed(send_after));
    u->close();  // idempotent
  }());
}

TEST_CASE("a second recv_from while one waits fails with EALREADY; close ends the first") {
  mpg::runtime rt({.procs = 2});
  mpg_test::watchdog dog(std::chrono::seconds(20), "one receive at a time", &rt);
  rt.block_on([]() -> task<void> {
    auto u = mpg::net::listen_udp("127.0.0.1:0");
    REQUIRE(u.ok());
    char buf[16];
    auto waiting = mpg::spawn(u->recv_from(std::span<char>(buf)));
    while (!u->recv_pending()) co_await mpg::yield();
    char buf2[16];
    auto second = co_await u->recv_from(std::span<char>(buf2));
    CHECK(second.status().code() == absl::StatusCode::kAlreadyExists);  // EALREADY
    CHECK(mpg::errno_of(second.status()) == EALREADY);
    u->close();  // reaches the first: it was not hidden by the second
    auto first = co_await waiting;
    CHECK(first.status().code() == absl::StatusCode::kCancelled);
  }());
}

TEST_CASE("a read deadline ends recv_from with kDeadlineExceeded") {
  mpg::runtime rt({.procs = 1});
  rt.block_on([]() -> task<void> {
    auto u = mpg::net::listen_udp("127.0.0.1:0");
    REQUIRE(u.ok());
    u->set_read_deadline(std::chrono::steady_clock::now() + 5ms);
    char buf[16];
    auto g = co_await u->recv_from(std::span<char>(buf));
    CHECK(g.status().code() == absl::StatusCode::kDeadlineExceeded);
    CHECK(mpg::errno_of(g.status()) == ETIMEDOUT);
  }());
}

TEST_CASE("bad UDP addresses are kInvalidArgument") {
  CHECK(mpg::net::listen_udp("unix:/tmp/x").status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(mpg::net::listen_udp("127.0.0.1").status().code() == absl::StatusCode::kInvalidArgument);
  mpg::runtime rt({.procs = 1});
  rt.block_on([]() -> task<void> {
    auto u = mpg::net::listen_udp("127.0.0.1:0");
    REQUIRE(u.ok());
    auto st = co_await u->send_to(std::string_view("x"), "no-port");
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
    auto st2 = co_await u->send_to(std::string_view("x"), "");
    CHECK(st2.code() == absl::StatusCode::kInvalidArgument);
    auto d = co_await mpg::net::dial_udp("unix:@x");
    CHECK(d.status().code() == absl::StatusCode::kInvalidArgument);
  }());
}

TEST_CASE("a UDP port with whitespace or a sign, or a host with a NUL, is kInvalidArgument") {
  for (std::string a : {std::string("127.0.0.1:0 "), std::string("127.0.0.1:+0"),
                        std::string("127.0.0.1:\t0\n"), std::string("127.0.0.1\0x:0", 13)}) {
    CHECK(mpg::net::listen_udp(a).status().code() == absl::StatusCode::kInvalidArgument);
  }
  mpg::runtime rt({.procs = 1});
  rt.block_on([]() -> task<void> {
    auto u = mpg::net::listen_udp("127.0.0.1:0");
    REQUIRE(u.ok());
    const std::string to = "127.0.0.1: " + port_str(*u);
    auto st = co_await u->send_to(std::string_view("x"), to);
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
    const std::string to2 = "127.0.0.1:+" + port_str(*u);
    auto d = co_await mpg::net::dial_udp(to2);
    CHECK(d.status().code() == absl::StatusCode::kInvalidArgument);
  }());
}

TEST_CASE("a UDP socket on an IPv6 zone keeps it (a link-local address, when the host has one)") {
  // Binding fe80::1%lo (lo has no fe80::1 here, as a rule) reaches the
  // kernel with the zone's scope id: EADDRNOTAVAIL, not EINVAL (the error
  // of a link-local address without one).
  auto lo = mpg::net::listen_udp("[fe80::1%lo]:0");
  if (!lo.ok()) {
    INFO(lo.status().ToString());
    CHECK(mpg::errno_of(lo.status()) != EINVAL);
  } else {
    CHECK(lo->local_address()->find("%lo]:") != std::string::npos);
  }
  // A link-local address of this host, from the kernel's list.
  FILE* f = std::fopen("/proc/net/if_inet6", "r");
  if (f == nullptr) return;
  char hex[33], name[IF_NAMESIZE + 1];
  unsigned index, prefix, scope, flags;
  std::string host;
  while (std::fscanf(f, "%32s %x %x %x %x %16s", hex, &index, &prefix, &scope, &flags, name) ==
         6) {
    if (scope != 0x20 || (flags & (0x40 | 0x08)) != 0) continue;  // link; not tentative/failed
    in6_addr a{};
    for (int i = 0; i < 16; ++i) std::sscanf(hex + 2 * i, "%2hhx", &a.s6_addr[i]);
    char buf[INET6_ADDRSTRLEN];
    ::inet_ntop(AF_INET6, &a, buf, sizeof buf);
    host = std::string(buf) + "%" + name;
    break;
  }
  std::fclose(f);
  if (host.empty()) {
    MESSAGE("no link-local IPv6 address here; skipped the round trip");
    return;
  }
  auto u = mpg::net::listen_udp("[" + host + "]:0");
  INFO(u.status().ToString());
  REQUIRE(u.ok());
  const std::string addr = "[" + host + "]:" + port_str(*u);
  CHECK(*u->local_address() == addr);
  mpg::runtime rt({.procs = 1});
  rt.block_on([&]() -> task<void> {
    auto d = co_await mpg::net::dial_udp(addr);
    INFO(d.status().ToString());
    REQUIRE(d.ok());
    CHECK((co_await d->send(std::string_view("ping"))).ok());
    char buf[8];
    auto g = co_await u->recv_from(std::span<char>(buf));
    REQUIRE(g.ok());
    CHECK(std::string_view(buf, g->size) == "ping");
    CHECK(g->from == *d->local_address());
    CHECK(g->from.find("%") != std::string::npos);
  }());
}

TEST_CASE("udp_socket adopting a negative fd is closed: destroy and move return") {
  // -2 is the close protocol's "closing" mark (fd_close.hpp); adopted, it
  // must not make the destructor wait for a close that never runs.
  mpg_test::watchdog dog(10s, "udp_socket(-2) destroy/move");
  for (int fd : {mpg::detail::kClosingFd, -1, -7}) {
    udp_socket a(fd);
    CHECK_FALSE(a.is_open());
    CHECK(a.native_handle() == -1);
    CHECK(a.port() == 0);
    udp_socket b(std::move(a));
    CHECK_FALSE(b.is_open());
    udp_socket c(fd);
    c = std::move(b);
    CHECK_FALSE(c.is_open());
    c.close();
  }
}

TEST_CASE("echo round trips from many tasks through one socket") {
  constexpr int kClients = 8;
  constexpr int kRounds = 20;
  mpg::runtime rt({.procs = 2});
  int ok = rt.block_on([]() -> task<int> {
    auto server = mpg::net::listen_udp("127.0.0.1:0");
    REQUIRE(server.ok());
    auto serving = mpg::spawn(echo_server(*server, kClients * kRounds));
    const std::string target = "127.0.0.1:" + port_str(*server);
    std::vector<mpg::join_handle<int>> clients;
    for (int c = 0; c < kClients; ++c) {
      clients.push_back(mpg::spawn([](std::string to, int id) -> task<int> {
        auto d = co_await mpg::net::dial_udp(to);
        REQUIRE(d.ok());
        d->set_read_deadline(std::chrono::steady_clock::now() + 30s);  // bound only
        int good = 0;
        char buf[64];
        for (int i = 0; i < kRounds; ++i) {
          const std::string msg = std::to_string(id) + "/" + std::to_string(i);
          REQUIRE((co_await d->send(msg)).ok());
          auto n = co_await d->recv(std::span<char>(buf));
          REQUIRE(n.ok());
          good += std::string(buf, *n) == msg ? 1 : 0;
        }
        co_return good;
      }(target, c)));
    }
    int total = 0;
    for (auto& c : clients) total += co_await c;
    co_await serving;
    co_return total;
  }());
  CHECK(ok == kClients * kRounds);
}

TEST_CASE(
    "a blocked recv_from is woken by a past deadline set from another task, and by its context") {
  mpg::runtime rt({.procs = 2});
  rt.block_on([]() -> task<void> {
    auto u = mpg::net::listen_udp("127.0.0.1:0");
    REQUIRE(u.ok());
    char buf[16];
    // The deadline applies to the receive already in flight.
    auto waiting = mpg::spawn(u->recv_from(std::span<char>(buf)));
    while (!u->recv_pending()) co_await mpg::yield();
    u->set_read_deadline(std::chrono::steady_clock::now() - 1ms);
    auto late = co_await waiting;
    CHECK(late.status().code() == absl::StatusCode::kDeadlineExceeded);
    u->set_read_deadline(std::nullopt);

    // A cancelled context ends it with kCancelled, and stays cancelled.
    auto [ctx, cancel] = mpg::with_cancel(mpg::background());
    auto waiting2 = mpg::spawn(u->recv_from(std::span<char>(buf), ctx));
    while (!u->recv_pending()) co_await mpg::yield();
    cancel();
    auto cancelled = co_await waiting2;
    CHECK(cancelled.status().code() == absl::StatusCode::kCancelled);
    auto again = co_await u->recv_from(std::span<char>(buf), ctx);
    CHECK(again.status().code() == absl::StatusCode::kCancelled);

    // A context with a deadline ends it with kDeadlineExceeded; the socket
    // still works afterwards.
    auto [tctx, tcancel] = mpg::with_timeout(mpg::background(), 5ms);
    auto timed = co_await u->recv_from(std::span<char>(buf), tctx);
    CHECK(timed.status().code() == absl::StatusCode::kDeadlineExceeded);
    tcancel();
    auto d = co_await mpg::net::dial_udp("127.0.0.1:" + std::to_string(u->port()));
    REQUIRE(d.ok());
    CHECK((co_await d->send(std::string_view("hi"), mpg::background())).ok());
    auto got = co_await u->recv_from(std::span<char>(buf), mpg::background());
    REQUIRE(got.ok());
    CHECK(std::string_view(buf, got->size) == "hi");
  }());
}

namespace {

struct recv_result {
  std::atomic<bool> done{false};
  absl::StatusOr<mpg::net::datagram> d = mpg::net::datagram{};
};

task<void> recv_once(udp_socket& s, recv_result* out) {
  char buf[16];
  out->d = co_await s.recv_from(std::span<char>(buf));
  out->done.store(true, std::memory_order_release);
}

}  // namespace

// As net_cancel_tests' read between two issues: on one P the intruder runs
// while the first receive's G waits to be issued again after a kick; the
// socket stays the first receive's (io_slot::holder).
TEST_CASE("a receive that starts between two issues of another (a kick) fails with EALREADY") {
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog dog(std::chrono::seconds(20), "a receive between two issues", &rt);
  rt.block_on([]() -> task<void> {
    auto a = mpg::net::listen_udp("127.0.0.1:0");
    auto b = mpg::net::listen_udp("127.0.0.1:0");
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    recv_result first;
    auto receiver = mpg::spawn(recv_once(*b, &first));
    for (int i = 0; i < 100'000 && !b->recv_pending(); ++i) co_await mpg::yield();
    REQUIRE(b->recv_pending());
    bool tried = false;
    absl::StatusOr<mpg::net::datagram> second = mpg::net::datagram{};
    char buf[16];
    const auto far = std::chrono::steady_clock::now() + 1h;
    for (int i = 0; i < 100'000 && !tried; ++i) {
      if (b->recv_pending()) {
        b->set_read_deadline(far - std::chrono::milliseconds(i));  // kicks the receive
      } else {
        auto [ctx, cancel] = mpg::with_timeout(mpg::background(), 2s);  // bounds an intruder let in
        second = co_await b->recv_from(std::span<char>(buf), ctx);
        tried = true;
      }
      co_await mpg::yield();
    }
    REQUIRE(tried);  // the first receive was seen between two issues
    CHECK(mpg::errno_of(second.status()) == EALREADY);
    const std::string to_b = "127.0.0.1:" + port_str(*b);
    REQUIRE((co_await a->send_to(std::string_view("hello"), to_b)).ok());
    for (int i = 0; i < 100'000 && !first.done.load(std::memory_order_acquire); ++i) {
      co_await mpg::yield();
    }
    if (!first.done.load(std::memory_order_acquire)) b->cancel();
    co_await receiver;
    REQUIRE(first.d.ok());
    CHECK(first.d->size == 5);
  }());
}

// recv(buf, ctx), like recv_from's and every other context overload, takes
// what it needs of ctx when called: the task may be awaited after the
// context handle passed is gone.
TEST_CASE("recv(buf, ctx) kept as a task outlives its context argument") {
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog wd(20s, "recv with a context", &rt);
  rt.block_on([]() -> task<void> {
    auto a = mpg::net::listen_udp("127.0.0.1:0");
    REQUIRE(a.ok());
    auto d = co_await mpg::net::dial_udp("127.0.0.1:" + std::to_string(a->port()));
    REQUIRE(d.ok());
    auto me = d->local_address();
    REQUIRE(me.ok());
    char buf[8];
    std::optional<task<absl::StatusOr<std::size_t>>> recv_task;
    {
      auto [ctx, cancel] = mpg::with_cancel(mpg::background());
      recv_task.emplace(d->recv(std::span<char>(buf), ctx));
    }
    const absl::Status sent = co_await a->send_to(std::string_view("two"), *me);
    CHECK(sent.ok());
    auto n = co_await std::move(*recv_task);
    REQUIRE(n.ok());
    CHECK(*n == 3);
  }());
}
